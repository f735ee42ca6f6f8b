"""Property tests through the whole pipeline (ingest, streams, sink, dashboard as processes).

1. Random OTLP records (real attribute names, random values and types, random times) posted
   to ingest never stop the pipeline: after each example, a normal session on every
   partition still arrives in the API within 10 s, with its exact totals.
2. Rollups always sum to the totals: one session's requests with timestamps jumping days
   forward and back, split into exports posted in a random order (some twice): the session's
   totals in the API equal what was sent, and ``rollups_minute`` and ``rollups_hour`` of the
   session sum to exactly those totals.

Expected numbers come from the generated data, never from the code under test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import psycopg
import pytest
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.support.captures import FIXTURES, export_for
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.e2e

PARTITIONS = 4  # the pipeline's TOKENTIDE_PARTITIONS (its default)
TEMPLATE = ExportLogsServiceRequest.FromString(
    (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
)
PROTOBUF = {"Content-Type": "application/x-protobuf"}
NOW = time.time_ns()
SECOND = 10**9


#: API requests in one template export, read from the capture.
TEMPLATE_REQUESTS = sum(
    1
    for rl in TEMPLATE.resource_logs
    for sl in rl.scope_logs
    for record in sl.log_records
    if any(kv.key == "event.name" and kv.value.string_value == "api_request" for kv in record.attributes)
)


def sessions_per_partition(tag: str) -> list[str]:
    """One fresh session id in each partition (ingest keys ``default/<session>``, murmur2)."""
    partitioner = DefaultPartitioner()
    found: dict[int, str] = {}
    while len(found) < PARTITIONS:
        sid = f"{tag}-{uuid.uuid4()}"
        found.setdefault(partitioner(f"default/{sid}".encode(), list(range(PARTITIONS)), []), sid)
    return [found[p] for p in range(PARTITIONS)]


def wait_sessions(client: httpx.Client, pipeline: Pipeline, want: dict[str, int], timeout_s: float) -> None:
    """Wait until each session shows ``want[session]`` API requests."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = {}
        for sid, requests in want.items():
            response = client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}")
            got = response.json().get("api_requests") if response.status_code == 200 else None
            if got != requests:
                missing[sid] = got
        if not missing:
            return
        if time.monotonic() > deadline:
            pipeline.fail(f"sessions not there after {timeout_s}s (api_requests seen): {missing}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as c:
        yield c


# --- 1. random records never stop anything ------------------------------------------------------

ATTRIBUTE_NAMES = (
    "session.id",
    "conversation.id",
    "gen_ai.conversation.id",
    "event.name",
    "event.sequence",
    "user.id",
    "model",
    "query_source",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "cost_usd_micros",
    "duration_ms",
    "success",
    "post_tokens",
    "input_token_count",
    "output_token_count",
    "cached_token_count",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.response.model",
    "prompt_length",
)
EVENT_NAMES = ("api_request", "api_error", "user_prompt", "tool_result", "compaction", "codex.sse_event", "x")
SERVICES = ("claude-code", "gemini-cli", "codex_exec", "some-otel-client")

scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda v: AnyValue(int_value=v)),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: AnyValue(double_value=v)),
    st.text(max_size=20).map(lambda v: AnyValue(string_value=v)),
    st.sampled_from(EVENT_NAMES).map(lambda v: AnyValue(string_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
    st.binary(max_size=8).map(lambda v: AnyValue(bytes_value=v)),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3).map(lambda vs: AnyValue(array_value=ArrayValue(values=vs))),
    st.lists(st.tuples(st.sampled_from(ATTRIBUTE_NAMES), scalars), max_size=2).map(
        lambda kvs: AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in kvs]))
    ),
)
attribute_lists = st.lists(st.tuples(st.sampled_from(ATTRIBUTE_NAMES), values), max_size=8)
times = st.one_of(
    st.just(0),
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=-30 * 86_400, max_value=3 * 86_400).map(lambda s: NOW + s * SECOND),
)


@st.composite
def random_logs(draw: st.DrawFn) -> bytes:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_logs = request.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = draw(
            st.sampled_from(SERVICES)
        )
        scope = resource_logs.scope_logs.add()
        scope.scope.name = draw(
            st.sampled_from(["com.anthropic.claude_code.events", "gemini-cli", "codex", ""])
        )
        for _ in range(draw(st.integers(1, 6))):
            t = draw(times)
            record = LogRecord(time_unix_nano=t, observed_time_unix_nano=draw(st.sampled_from([0, t])))
            record.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attribute_lists))
            record.body.string_value = draw(st.sampled_from(["claude_code.api_request", "", "x"]))
            scope.log_records.append(record)
    return request.SerializeToString()


@st.composite
def random_metrics(draw: st.DrawFn) -> bytes:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = draw(
        st.sampled_from(SERVICES)
    )
    scope = resource_metrics.scope_metrics.add()
    for _ in range(draw(st.integers(1, 4))):
        metric = scope.metrics.add()
        metric.name = draw(
            st.sampled_from(
                ["claude_code.token.usage", "claude_code.cost.usage", "gemini_cli.token.usage", "x"]
            )
        )
        kind = draw(st.sampled_from(["sum", "gauge", "histogram"]))
        for _ in range(draw(st.integers(1, 4))):
            start = draw(times)
            if kind == "histogram":
                point = metric.histogram.data_points.add(
                    sum=draw(st.floats()), count=draw(st.integers(0, 10))
                )
                metric.histogram.aggregation_temporality = draw(st.integers(0, 3))
            else:
                data = metric.sum if kind == "sum" else metric.gauge
                point = data.data_points.add()
                point.as_double = draw(st.floats(allow_nan=True, allow_infinity=True))
                if kind == "sum":
                    metric.sum.aggregation_temporality = draw(st.integers(0, 3))
                    metric.sum.is_monotonic = draw(st.booleans())
            point.start_time_unix_nano = start
            point.time_unix_nano = draw(times)
            point.attributes.extend(KeyValue(key=k, value=v) for k, v in draw(attribute_lists))
    return request.SerializeToString()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(logs=st.lists(random_logs(), min_size=1, max_size=3), metrics=st.lists(random_metrics(), max_size=2))
def test_random_records_never_stop_the_pipeline(
    pipeline: Pipeline, client: httpx.Client, logs: list[bytes], metrics: list[bytes]
) -> None:
    for path, bodies in (("/v1/logs", logs), ("/v1/metrics", metrics)):
        for body in bodies:
            response = client.post(pipeline.url("ingest") + path, content=body, headers=PROTOBUF)
            assert response.status_code in (200, 400), (response.status_code, response.text)
    normal = sessions_per_partition("normal")
    for sid in normal:
        response = client.post(
            pipeline.url("ingest") + "/v1/logs", content=export_for(TEMPLATE, sid, 0), headers=PROTOBUF
        )
        assert response.status_code == 200, response.text
    wait_sessions(client, pipeline, dict.fromkeys(normal, TEMPLATE_REQUESTS), timeout_s=10)


# --- 2. rollups always sum to the totals ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    offset_s: int  # event time relative to now
    input_tokens: int
    cost_usd: float


def logs_of(session_id: str, requests: list[tuple[int, Request]]) -> bytes:
    """A Claude Code logs export holding the given (sequence, request) api_request events."""
    out = ExportLogsServiceRequest()
    out.CopyFrom(TEMPLATE)
    scope = out.resource_logs[0].scope_logs[0]
    template = next(
        r for r in scope.log_records if any(kv.value.string_value == "api_request" for kv in r.attributes)
    )
    del scope.log_records[:]
    for sequence, request in requests:
        record = LogRecord()
        record.CopyFrom(template)
        record.time_unix_nano = record.observed_time_unix_nano = NOW + request.offset_s * SECOND
        for kv in record.attributes:
            if kv.key == "session.id":
                kv.value.string_value = session_id
            elif kv.key == "event.sequence":
                kv.value.ClearField("string_value")
                kv.value.int_value = sequence
            elif kv.key == "input_tokens":
                kv.value.ClearField("string_value")
                kv.value.int_value = request.input_tokens
            elif kv.key == "cost_usd":
                kv.value.double_value = request.cost_usd
        scope.log_records.append(record)
    return out.SerializeToString()


SUMS = (
    "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(cost_usd), 0), coalesce(sum(requests), 0) "
    "FROM {table} WHERE session_id = %s"
)
offsets = st.one_of(
    st.integers(min_value=-5 * 86_400, max_value=-3 * 3600),  # far in the past (older than any window)
    st.integers(min_value=-600, max_value=0),
    st.integers(min_value=3600, max_value=20 * 3600),  # hours ahead (still under the 1-day bound)
)
requests = st.builds(
    Request,
    offset_s=offsets,
    input_tokens=st.integers(min_value=0, max_value=200_000),
    cost_usd=st.decimals(min_value=0, max_value=5, places=6).map(float),
)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data(), batch=st.lists(requests, min_size=2, max_size=12))
def test_rollups_sum_to_the_totals_whatever_the_order_and_times(
    pipeline: Pipeline, client: httpx.Client, data: st.DataObject, batch: list[Request]
) -> None:
    sid = f"rollups-{uuid.uuid4()}"
    numbered = list(enumerate(batch))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(numbered) - 1), max_size=4)))
    exports = [numbered[a:b] for a, b in zip([0, *cuts], [*cuts, len(numbered)], strict=True)]
    order = data.draw(st.permutations(range(len(exports))))
    again = data.draw(st.lists(st.sampled_from(range(len(exports))), max_size=2))
    for index in [*order, *again]:
        response = client.post(
            pipeline.url("ingest") + "/v1/logs", content=logs_of(sid, exports[index]), headers=PROTOBUF
        )
        assert response.status_code == 200, response.text
        refused = ExportLogsServiceResponse.FromString(response.content).partial_success
        assert refused.rejected_log_records == 0, refused.error_message  # every record is valid
    wait_sessions(client, pipeline, {sid: len(batch)}, timeout_s=30)

    want_input = sum(r.input_tokens for r in batch)
    want_cost = sum(Decimal(f"{r.cost_usd:.6f}") for r in batch)
    body = client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}").json()
    assert body["tokens"]["input"] == want_input
    assert Decimal(str(body["cost_usd"])) == want_cost
    with psycopg.connect(pipeline.database_url) as conn:
        deadline = time.monotonic() + 30
        while True:
            minute = conn.execute(SUMS.format(table="rollups_minute"), (sid,)).fetchone()
            hour = conn.execute(SUMS.format(table="rollups_hour"), (sid,)).fetchone()
            conn.commit()
            if minute == hour == (want_input, want_cost, len(batch)) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    assert minute == (want_input, want_cost, len(batch)), f"minutes {minute}"
    assert hour == (want_input, want_cost, len(batch)), f"hours {hour}"
