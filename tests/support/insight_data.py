"""Synthetic Claude Code sessions made to trigger every recommendation rule, and one captured
session, as real OTLP logs exports (issue 17 items 5 and 6).

Each session is a list of :class:`Item` (``api_request``, ``api_error``, ``compaction``) at
offsets from a start time; :func:`exports` turns them into protobuf export bodies with the
session's ``team`` and ``project`` resource attributes (as ``OTEL_RESOURCE_ATTRIBUTES`` would
put them). The tests state the expected numbers from these items with the formulas of
README "Recommendations", never from the code under test. :func:`seed` writes them through
the real stream-stage and sink code (for the integration tests); the e2e tests post the same
bodies to ingest.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from math import floor
from typing import Any

import psycopg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from sinks.postgres.writer import PostgresWriter
from tests.support.captures import FIXTURES, export_for
from tests.support.usage_data import StreamStage, batch_of

SECOND_NS = 1_000_000_000
OPUS = "claude-opus-4-8"
HAIKU = "claude-haiku-4-5"
#: USD per million tokens of the two models, as streams/prices.json states them (a test checks
#: the file says so): input, output, cache read, cache write (5 min), cache write (1 h).
RATES = {
    OPUS: (5, 25, Decimal("0.5"), Decimal("6.25"), 10),
    HAIKU: (1, 5, Decimal("0.1"), Decimal("1.25"), 2),
}
CAPTURE = FIXTURES / "claude-code" / "stub-tool-traces-protobuf" / "0002_v1_logs.pb"
ERROR_CAPTURE = FIXTURES / "claude-code" / "stub-error500-protobuf" / "0001_v1_logs.pb"


@dataclass(frozen=True)
class Item:
    name: str
    at_s: float
    model: str = OPUS
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cache_creation_1h: int = 0
    query_source: str = "repl_main_thread"
    pre_tokens: int | None = None
    post_tokens: int | None = None

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_creation

    @property
    def cost_usd(self) -> Decimal:
        """What the agent reports: the request priced at RATES (exact decimal)."""
        i, o, cr, cc, cc1h = RATES[self.model]
        five = self.cache_creation - self.cache_creation_1h
        return (
            self.input * i
            + self.output * o
            + self.cache_read * cr
            + five * cc
            + self.cache_creation_1h * cc1h
        ) / Decimal(1_000_000)


def request(at_s: float, model: str = OPUS, **tokens: Any) -> Item:
    return Item("api_request", at_s, model, **tokens)


@dataclass
class Session:
    session_id: str
    user: str
    team: str | None
    project: str | None
    items: list[Item]
    tenant: str = "default"

    @property
    def requests(self) -> list[Item]:
        return [i for i in self.items if i.name == "api_request"]


@dataclass
class Dataset:
    start_ns: int
    sessions: list[Session] = field(default_factory=list)

    def of(self, tenant: str) -> list[Session]:
        return [s for s in self.sessions if s.tenant == tenant]

    def session(self, suffix: str, tenant: str = "default") -> Session:
        return next(s for s in self.of(tenant) if s.session_id.endswith(suffix))


def plan(prefix: str, start_ns: int, tenant: str = "default") -> list[Session]:
    """The synthetic sessions of one tenant (``prefix`` keeps their ids apart)."""
    ann_opus = Session(
        f"{prefix}-ann-opus",
        "ann",
        "platform",
        "web",
        [
            *(request(60 * k, input=40_000, cache_read=10_000, output=1_000) for k in range(4)),
            Item("compaction", 300, pre_tokens=150_000, post_tokens=20_000),
            Item("compaction", 400, pre_tokens=160_000, post_tokens=25_000),
            Item("compaction", 500, pre_tokens=170_000, post_tokens=30_000),
        ],
        tenant,
    )
    ann_mixed = Session(
        f"{prefix}-ann-mixed",
        "ann",
        "platform",
        "web",
        [
            *(request(10 * k, HAIKU, input=2_000 - 100 * k, output=500 - 50 * k) for k in range(6)),
            request(100, input=1_500, output=400),
            request(110, input=1_000, cache_creation=500, cache_creation_1h=200, output=300),
            request(120, input=1_800, output=600),  # more output than haiku gave: stays
        ],
        tenant,
    )
    bob = Session(
        f"{prefix}-bob",
        "bob",
        "platform",
        "web",
        [
            request(0, input=5_000, cache_read=95_000, output=100),
            request(30, input=5_000, cache_read=95_000, output=100),
            # back after 40 minutes, the cache gone: 120k tokens written again
            request(30 + 40 * 60, input=1_000, cache_creation=120_000, cache_creation_1h=20_000, output=200),
        ],
        tenant,
    )
    cat = Session(
        f"{prefix}-cat",
        "cat",
        "platform",
        "api",
        [
            Item("api_error", 0),
            request(45, input=3_000, output=100),
            Item("api_error", 30),
            Item("api_error", 90),
            request(200, input=4_000, output=200),
            request(500, input=5_000, output=300),  # after the storm (last error + 300 s)
        ],
        tenant,
    )
    return [ann_opus, ann_mixed, bob, cat]


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def _tags(team: str | None, project: str | None) -> list[KeyValue]:
    return [
        KeyValue(key=k, value=_value(v)) for k, v in (("team", team), ("project", project)) if v is not None
    ]


def _resource(team: str | None, project: str | None) -> list[KeyValue]:
    agent = [("service.name", "claude-code"), ("service.version", "2.1.332")]
    return [KeyValue(key=k, value=_value(v)) for k, v in agent] + _tags(team, project)


def export(session: Session, start_ns: int) -> bytes:
    """The session's items as one Claude Code logs export."""
    body = ExportLogsServiceRequest()
    resource_logs = body.resource_logs.add()
    resource_logs.resource.attributes.extend(_resource(session.team, session.project))
    scope = resource_logs.scope_logs.add()
    scope.scope.name = "com.anthropic.claude_code.events"
    for seq, item in enumerate(sorted(session.items, key=lambda i: i.at_s)):
        time_ns = start_ns + int(item.at_s * SECOND_NS)
        attrs: dict[str, Any] = {
            "event.name": item.name,
            "session.id": session.session_id,
            "user.id": session.user,
            "event.sequence": seq,
        }
        if item.name == "api_request":
            attrs |= {
                "model": item.model,
                "input_tokens": item.input,
                "output_tokens": item.output,
                "cache_read_tokens": item.cache_read,
                "cache_creation_tokens": item.cache_creation,
                "cache_creation_1h_tokens": item.cache_creation_1h,
                "cost_usd": float(item.cost_usd),
                "query_source": item.query_source,
            }
        elif item.name == "api_error":
            attrs |= {"model": item.model, "error": "Overloaded", "status_code": "529", "attempt": 1}
        else:
            attrs |= {"trigger": "auto", "pre_tokens": item.pre_tokens, "post_tokens": item.post_tokens}
        record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
        record.body.string_value = f"claude_code.{item.name}"
        record.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items() if v is not None)
        scope.log_records.append(record)
    return body.SerializeToString()


def captured(session_id: str, team: str, project: str) -> bytes:
    """The ``stub-tool-traces`` Claude Code capture (a title request on Haiku and two requests on
    Opus), re-timed to now as session ``session_id``, with team and project attributes."""
    template = ExportLogsServiceRequest.FromString(CAPTURE.read_bytes())
    body = ExportLogsServiceRequest.FromString(export_for(template, session_id, 0))
    for resource_logs in body.resource_logs:
        resource_logs.resource.attributes.extend(_tags(team, project))
    return body.SerializeToString()


def captured_errors(session_id: str, start_ns: int, times: int = 3) -> list[tuple[str, bytes]]:
    """The ``stub-error500`` capture (a prompt, then an ``api_error`` 500 and exhausted retries)
    as ``times`` exports of session ``session_id`` one second apart from ``start_ns``: a retry
    storm of real Claude Code error events (``times`` errors, no request billed)."""
    template = ExportLogsServiceRequest.FromString(ERROR_CAPTURE.read_bytes())
    out = []
    for k in range(times):
        body = ExportLogsServiceRequest.FromString(export_for(template, session_id, k))
        records = [r for rl in body.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        for j, record in enumerate(records):
            record.time_unix_nano = record.observed_time_unix_nano = start_ns + k * SECOND_NS + j * 1_000_000
        out.append(("default", body.SerializeToString()))
    return out


def captured_requests() -> list[dict[str, Any]]:
    """The capture's ``api_request`` attributes, read from its OTLP/JSON rendering with json."""
    document = json.loads(CAPTURE.with_suffix(".pb.json").read_text())
    out = []
    for rl in document["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for record in sl["logRecords"]:
                attrs = {a["key"]: next(iter(a["value"].values()), None) for a in record["attributes"]}
                if attrs.get("event.name") == "api_request":
                    out.append(attrs)
    return out


def bodies(dataset: Dataset) -> Iterable[tuple[str, bytes]]:
    """(tenant, export body) of every session."""
    for s in dataset.sessions:
        yield s.tenant, export(s, dataset.start_ns)


async def seed(dsn: str, dataset: Dataset, extra: Iterable[tuple[str, bytes]] = ()) -> None:
    """Write the dataset (and ``extra`` logs bodies) through the stream stage and the sink."""
    stage = StreamStage()
    outputs = []
    for tenant, body in [*bodies(dataset), *extra]:
        outputs += stage.send(tenant, "logs", body, time.time_ns())
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant in sorted({s.tenant for s in dataset.sessions}):
            conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
    writer = PostgresWriter(dsn)
    try:
        result = await writer.write(batch_of(outputs))
    finally:
        await writer.close()
    assert not result.rejected, f"the sink refused rows: {result.rejected[:3]}"


# --- what the API must answer, from the items and README's formulas ------------------------

#: USD per million tokens of the models the comparison tests price on (input, output, cache
#: read, cache write 5 min, cache write 1 h), as streams/prices.json states them (checked).
COMPARE_RATES = {
    **RATES,
    "gpt-5": (Decimal("1.25"), 10, Decimal("0.125"), Decimal("1.25"), Decimal("1.25")),
    "gemini-2.5-pro": (Decimal("1.25"), 10, Decimal("0.125"), Decimal("1.25"), Decimal("1.25")),
}


def nanos_per_token(model: str) -> tuple[int, ...]:
    return tuple(int(Decimal(r) * 1000) for r in COMPARE_RATES[model])


def cost_nanos(
    model: str, input_: int, output: int, cache_read: int, cache_creation: int, one_hour: int
) -> int:
    """input*in + output*out + cache_read*cr + (cache_creation - one_hour)*cw + one_hour*cw1h."""
    i, o, cr, cw, cw1h = nanos_per_token(model)
    return input_ * i + output * o + cache_read * cr + (cache_creation - one_hour) * cw + one_hour * cw1h


def item_cost(model: str, item: Item) -> int:
    return cost_nanos(
        model, item.input, item.output, item.cache_read, item.cache_creation, item.cache_creation_1h
    )


def expected_recommendations(sessions: list[Session]) -> dict[tuple[str, str], int]:
    """(kind, the subject's session id / user / project) -> savings in nano-USD, by README's rules
    written out again here over the items (only what this dataset triggers)."""
    out: dict[tuple[str, str], int] = {}
    # cache: per user, against the rest of the team
    users: dict[tuple[str | None, str], dict[str, list[int]]] = {}
    for s in sessions:
        for r in s.requests:
            m = users.setdefault((s.team, s.user), {}).setdefault(r.model, [0, 0])
            m[0] += r.input
            m[1] += r.cache_read
    for (team, user), models in users.items():
        prompt = sum(i + c for i, c in models.values())
        cached = sum(c for _, c in models.values())
        rest = [(i, c) for (t, u), ms in users.items() if t == team and u != user for i, c in ms.values()]
        rest_prompt = sum(i + c for i, c in rest)
        if prompt < 100_000 or not rest_prompt:
            continue
        ratio = Fraction(sum(c for _, c in rest), rest_prompt)
        if ratio - Fraction(cached, prompt) > Fraction(1, 5):
            i_cr = {m: nanos_per_token(m)[0] - nanos_per_token(m)[2] for m in models}
            out[("cache", user)] = sum(
                max(0, floor(ratio * (i + c)) - c) * i_cr[m] for m, (i, c) in models.items()
            )
    for s in sessions:
        compactions = sorted((i for i in s.items if i.name == "compaction"), key=lambda i: i.at_s)
        if len(compactions) >= 3:
            _, _, cr, cw, _ = nanos_per_token(OPUS)  # the sessions' context model
            out[("compaction", s.session_id)] = sum(
                (c.pre_tokens or 0) * cr + (c.post_tokens or 0) * cw for c in compactions[1:]
            )
        errors = sorted(i.at_s for i in s.items if i.name == "api_error")
        if len(errors) >= 3 and all(b - a <= 300 for a, b in itertools.pairwise(errors)):
            out[("retry_storm", s.session_id)] = sum(
                item_cost(r.model, r) for r in s.requests if errors[0] <= r.at_s <= errors[-1] + 300
            )
        ordered = sorted(s.requests, key=lambda r: r.at_s)
        idle = [b for a, b in itertools.pairwise(ordered) if b.at_s - a.at_s > 1800 and b.prompt > 100_000]
        if idle:
            _, _, cr, cw, cw1h = nanos_per_token(OPUS)
            out[("idle_context", s.session_id)] = sum(
                (b.cache_creation - b.cache_creation_1h) * cw
                + b.cache_creation_1h * cw1h
                - b.cache_creation * cr
                for b in idle
            )
    # smaller model: project web's main requests on Opus no larger than what Haiku served there
    web = [r for s in sessions if s.project == "web" for r in s.requests]
    haiku = [r for r in web if r.model == HAIKU]
    if len(haiku) >= 5:
        max_prompt, max_output = max(r.prompt for r in haiku), max(r.output for r in haiku)
        out[("smaller_model", "web")] = sum(
            item_cost(OPUS, r) - item_cost(HAIKU, r)
            for r in web
            if r.model == OPUS and r.prompt <= max_prompt and r.output <= max_output
        )
    return out


# --- how the tests read the API's answers ---------------------------------------------------


def subject_key(rec: dict[str, Any]) -> tuple[str, str]:
    """(kind, what it is about): the user of ``cache``, the project of ``smaller_model``, else
    the session."""
    subject, kind = rec["subject"], rec["kind"]
    name = subject["user"] if kind == "cache" else subject["project"] if kind == "smaller_model" else None
    return kind, name or subject["session_id"]


def expected_group(requests: list[Item], models: list[str]) -> dict[str, Any]:
    """A comparison group of ``requests`` as :func:`shape` gives it: tokens summed, the cost on
    each of ``models`` by :func:`cost_nanos`, cheapest first (then by name)."""
    return {
        "requests": len(requests),
        "tokens": {
            "input": sum(r.input for r in requests),
            "output": sum(r.output for r in requests),
            "cache_read": sum(r.cache_read for r in requests),
            "cache_creation": sum(r.cache_creation for r in requests),
            "cache_creation_1h": sum(r.cache_creation_1h for r in requests),
            "reasoning": 0,
        },
        "cost_nanos": sum(item_cost(r.model, r) for r in requests),
        "models": sorted(
            ((m, sum(item_cost(m, r) for r in requests)) for m in models), key=lambda mc: (mc[1], mc[0])
        ),
    }


def captured_items() -> tuple[list[Item], int]:
    """The capture's requests as items (no 1-hour writes in it) and its agent-reported cost."""
    records = captured_requests()
    items = [
        Item(
            "api_request",
            0,
            # the title request's model is a Haiku snapshot, priced as Haiku
            HAIKU if r["model"].startswith(HAIKU) else r["model"],
            input=int(r["input_tokens"]),
            output=int(r["output_tokens"]),
            cache_read=int(r["cache_read_tokens"]),
            cache_creation=int(r["cache_creation_tokens"]),
        )
        for r in records
    ]
    cost = sum(round(Decimal(str(r["cost_usd"])) * 10**9) for r in records)
    return items, cost


def shape(group: dict[str, Any]) -> dict[str, Any]:
    """The exact parts of one ``/api/v1/compare`` group."""
    return {
        "requests": group["requests"],
        "tokens": group["tokens"],
        "cost_nanos": group["cost_nanos"],
        "models": [(m["model"], m["cost_nanos"]) for m in group["models"]],
    }
