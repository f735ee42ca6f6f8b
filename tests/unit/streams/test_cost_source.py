"""A price is unknown, never zero: the session says where its cost comes from and what it lacks.

``cost_source`` over a session's requests: ``agent``, ``price_table``, ``unknown`` or ``mixed``
(None before the first); ``unpriced_requests`` counts the requests nobody priced; the cost is
the sum of the known ones, and the rollup increments still sum to it. Rates are those
streams/prices.json documents (LiteLLM 1.110.2), in the comments.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from streams.normalise import SessionRecords
from streams.state import StoredSession, apply
from tests.unit.conftest import CAPTURES
from tokentide.records import Event, EventKind, Measure, Point, Tokens

T0 = 1_795_485_058_104_000_000
#: The OpenAI stub's request (tests/fixtures/README.md), canonical.
CODEX_CALL = {
    "input_token_count": "1500",
    "cached_token_count": 1024,
    "cache_write_token_count": 0,
    "output_token_count": "42",
    "reasoning_token_count": 10,
}
#: gpt-6.1-sol (2e-06 / 1e-07 / 1e-05 per token): 476 x 2000 + 1024 x 100 + 42 x 10_000.
SOL_COST = 952_000 + 102_400 + 420_000


def _codex(models: list[str], otlp_build: SimpleNamespace) -> ExportLogsServiceRequest:
    request = otlp_build.logs([])
    resource_logs = request.resource_logs[0]
    del resource_logs.resource.attributes[:]
    resource_logs.resource.attributes.extend(otlp_build.key_values({"service.name": "codex_exec"}))
    scope = resource_logs.scope_logs[0]
    scope.scope.name = "codex_otel.log_only"
    for i, model in enumerate(models):
        attributes = {
            "event.name": "codex.sse_event",
            "event.kind": "response.completed",
            "conversation.id": "c-1",
            "model": model,
            **CODEX_CALL,
        }
        record = LogRecord(observed_time_unix_nano=T0 + i)
        record.attributes.extend(otlp_build.key_values(attributes))
        scope.log_records.append(record)
    return request


def test_no_request_yet_has_no_source(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    prompt = {"session.id": "s-1", "event.name": "user_prompt", "event.sequence": 0, "prompt_length": 5}
    (out,) = pipeline.send_logs(otlp_build.logs([(T0, prompt)]))
    assert (out.state.cost_source, out.state.unpriced_requests, out.state.cost_nanos) == (None, 0, 0)


def test_the_agents_own_cost(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    records = [(T0 + i, otlp_build.api_request(i)) for i in range(3)]
    (out,) = pipeline.send_logs(otlp_build.logs(records))
    assert (out.state.cost_source, out.state.unpriced_requests, out.state.cost_nanos) == (
        "agent",
        0,
        3 * 11_175_000,
    )


def test_priced_by_the_table(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    (out,) = pipeline.send_logs(_codex(["gpt-6.1-sol", "gpt-6.1-sol"], otlp_build))
    assert (out.state.cost_source, out.state.unpriced_requests, out.state.cost_nanos) == (
        "price_table",
        0,
        2 * SOL_COST,
    )


def test_a_model_without_a_price_is_unknown_not_free(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    # gpt-6.2-sol (Codex CLI 0.171's default) is not in LiteLLM 1.110.2 nor in prices.local.json.
    (out,) = pipeline.send_logs(_codex(["gpt-6.2-sol"], otlp_build))
    (event,) = [e for e in out.events.events if e.kind is EventKind.USAGE]
    assert (event.cost_nanos, event.cost_source) == (None, None)
    state = out.state
    assert (state.cost_source, state.unpriced_requests, state.api_requests) == ("unknown", 1, 1)
    assert state.cost_nanos == 0  # nothing known to add; the API shows null (cost_source unknown)
    assert state.tokens == Tokens(input=476, output=42, cache_read=1024, reasoning=10)
    # Its source too: unknown, not free (the API's by_source shows null).
    [(source, requests, unpriced, cost)] = [
        (s.query_source, s.requests, s.unpriced_requests, s.cost_nanos) for s in state.by_source
    ]
    assert (source, requests, unpriced, cost) == ("main", 1, 1, 0)


def test_known_and_unknown_prices_are_mixed(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    (first,) = pipeline.send_logs(_codex(["gpt-6.1-sol"], otlp_build))
    assert first.state.cost_source == "price_table"
    request = _codex(["gpt-6.1-sol", "gpt-6.2-sol", "gpt-6.2-sol"], otlp_build)
    del request.resource_logs[0].scope_logs[0].log_records[0]  # already sent
    (out,) = pipeline.send_logs(request)
    state = out.state
    assert (state.cost_source, state.unpriced_requests, state.api_requests) == ("mixed", 2, 3)
    assert state.cost_nanos == SOL_COST  # the sum of what is known
    assert [(s.requests, s.unpriced_requests, s.cost_nanos) for s in state.by_source] == [(3, 2, SOL_COST)]
    assert sum(r.cost_nanos for o in (first, out) for r in o.rollups.rollups) == SOL_COST
    assert sum(r.requests for o in (first, out) for r in o.rollups.rollups) == 3


def test_agent_and_table_are_mixed(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    records = [
        (T0, otlp_build.api_request(0)),
        # No cost_usd: priced by the table (claude-opus-4-8, as the stub's 0.011175 says).
        (T0 + 1, otlp_build.api_request(1, cost_usd=None)),
    ]
    (out,) = pipeline.send_logs(otlp_build.logs(records))
    assert (out.state.cost_source, out.state.unpriced_requests, out.state.cost_nanos) == (
        "mixed",
        0,
        2 * 11_175_000,
    )


def _usage(n: int, cost: int | None, source: str | None, model: str = "m") -> Event:
    return Event(
        tenant="t",
        session_id="s",
        event_id=f"u{n}",
        agent="codex",
        name="codex.sse_event",
        kind=EventKind.USAGE,
        time_ns=T0 + n * 61 * 10**9,  # each in a minute of its own
        model=model,
        tokens=Tokens(input=10, output=1),
        cost_nanos=cost,
        cost_source=source,
    )


@pytest.mark.parametrize(
    ("events", "source", "unpriced", "cost"),
    [
        ([(None, None)], "unknown", 1, 0),
        ([(None, None), (None, None)], "unknown", 2, 0),
        ([(5, "price_table"), (7, "price_table")], "price_table", 0, 12),
        ([(5, "agent"), (None, None), (7, "agent")], "mixed", 1, 12),
        ([(None, None), (5, "agent")], "mixed", 1, 5),
        ([(5, "agent"), (7, "price_table")], "mixed", 0, 12),
    ],
)
def test_source_whatever_the_order(
    events: list[tuple[int | None, str | None]], source: str, unpriced: int, cost: int
) -> None:
    for order in (events, events[::-1]):
        stored: StoredSession | None = None
        rolled = 0
        for n, (nanos, src) in enumerate(order):
            applied = apply(
                stored,
                SessionRecords("s", "codex", events=[_usage(n, nanos, src)]),
                tenant="t",
                dedup_window=9,
            )
            stored = applied.stored
            rolled += sum(r.cost_nanos for r in applied.rollups)
        assert stored is not None
        state = stored.state
        assert (state.cost_source, state.unpriced_requests, state.cost_nanos) == (source, unpriced, cost)
        assert rolled == cost  # the rollup increments sum to the known cost


def _token_point(model: str | None, kind: str, value: float, n: int) -> Point:
    measure = {"input": Measure.TOKENS_INPUT, "output": Measure.TOKENS_OUTPUT}[kind]
    return Point(
        tenant="t",
        session_id="s",
        agent="gemini_cli",
        name="gemini_cli.token.usage",
        series_id=f"{model}/{kind}",
        time_ns=T0 + n,
        start_time_ns=T0 - 10**9,
        value=value,
        temporality=2,
        monotonic=True,
        measure=measure,
        model=model,
    )


@pytest.mark.parametrize(
    ("models", "source", "cost"),
    [
        # gemini-3.8-flash 7.5e-07 / 3.75e-06: 1500 x 750 + 52 x 3750.
        (["gemini-3.8-flash"], "price_table", 1_125_000 + 195_000),
        (["gemini-99-ultra"], "unknown", 0),
        (["gemini-3.8-flash", "gemini-99-ultra"], "mixed", 1_125_000 + 195_000),
        ([None], "unknown", 0),  # points that name no model cannot be priced
        (["gemini-3.8-flash", None], "mixed", 1_125_000 + 195_000),
    ],
)
def test_a_metrics_only_session_says_the_same(models: list[str | None], source: str, cost: int) -> None:
    points = [
        p
        for i, model in enumerate(models)
        for p in (_token_point(model, "input", 1500, 2 * i), _token_point(model, "output", 52, 2 * i + 1))
    ]
    applied = apply(None, SessionRecords("s", "gemini_cli", points=points), tenant="t", dedup_window=9)
    state = applied.stored.state
    assert state.totals_source == "metrics"
    assert (state.cost_source, state.unpriced_requests, state.cost_nanos) == (source, 0, cost)
    assert sum(r.cost_nanos for r in applied.rollups) == cost


def test_a_metrics_only_claude_session_with_its_cost_metric_is_the_agents(
    pipeline: Any, capture: Any
) -> None:
    # stub-text-protobuf/0002_v1_metrics.pb: claude_code.token.usage and claude_code.cost.usage
    # of the one request, without its logs.
    (cap,) = [capture(p) for p in sorted((CAPTURES / "stub-text-protobuf").glob("*_v1_metrics.pb"))]
    states = [out.state for out in pipeline.send(cap.signal, cap.raw) if out.state is not None]
    priced = [s for s in states if s.tokens != Tokens()]
    assert priced
    for state in priced:
        assert (state.totals_source, state.cost_source, state.unpriced_requests) == ("metrics", "agent", 0)
        assert state.cost_nanos == 11_175_000  # the cost metric: 0.011175
