"""Gemini CLI, Codex CLI and OpenTelemetry GenAI clients: captured sessions -> canonical records -> totals.

The expected numbers are literals derived by hand from the capture payloads (each comment says
how), never computed by the code under test. The model stubs report fixed usage per call
(tests/fixtures/README.md):
- Gemini stub: promptTokenCount 1500, candidatesTokenCount 42, thoughtsTokenCount 10,
  cachedContentTokenCount 0 -> per call input 1500 - 0 = 1500, output 42 + 10 = 52,
  reasoning 10, cache read 0 (agent-telemetry.md section 6);
- OpenAI stub (Codex): input 1500 of which cached 1024, output 42 of which reasoning 10 ->
  input 1500 - 1024 = 476, cache read 1024, output 42, reasoning 10.
Costs use streams/prices.json, generated from LiteLLM 1.110.2 (each comment names LiteLLM's
per-token rates): USD/MTok x 1000 = nano-USD per token.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ingest.decode import decode
from ingest.errors import JSON
from streams.normalise import (
    ClaudeCodeNormaliser,
    CodexNormaliser,
    GeminiCliNormaliser,
    GenericNormaliser,
    Origin,
    default_registry,
)
from streams.normalise.generic import DERIVED
from tokentide.records import Event, EventKind, Measure, Point, Tokens
from tokentide.topics import HEADER_SIGNAL, HEADER_TENANT, Signal

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
_BODY = re.compile(r"\d{4}_v1_(?P<signal>logs|metrics)\.(pb|json)")
T0 = 1_795_485_058_104_000_000
RECEIVED_NS = 1_795_485_000_000_000_000  # what the conftest Pipeline puts in the header

GEMINI_STUB = "13d622f0-5e61-4b5c-b76b-38d196594a05"
GEMINI_OFFLINE = "1d10c364-68ea-494f-8a92-3e1b684f5825"
CODEX_STUB = "01a20b48-f967-7f32-8d59-1a1075fb417a"
CODEX_OFFLINE = "01a20b4a-bd65-7333-9d66-123a42a1aa11"

# One Gemini stub call, canonical (see the module docstring).
GEMINI_CALL = Tokens(input=1500, output=52, cache_read=0, cache_creation=0, reasoning=10)
# The Codex stub's one request, canonical.
CODEX_CALL = Tokens(input=476, output=42, cache_read=1024, cache_creation=0, reasoning=10)


def _captures(capture: Any, client: str, case: str, signal: Signal | None = None) -> list[Any]:
    """Logs and metrics bodies of a case in arrival order (traces are not streamed)."""
    paths = sorted(p for p in (FIXTURES / client / case).iterdir() if _BODY.fullmatch(p.name))
    caps = [capture(p) for p in paths]
    return [c for c in caps if signal is None or c.signal is signal]


def _feed(pipeline: Any, caps: list[Any]) -> list[Any]:
    return [out for cap in caps for out in pipeline.send(cap.signal, cap.raw)]


def _events(outputs: list[Any]) -> list[Event]:
    return [e for out in outputs if out.events for e in out.events.events]


def _points(outputs: list[Any]) -> list[Point]:
    return [p for out in outputs if out.points for p in out.points.points]


def _measured(points: list[Point]) -> dict[Measure, float]:
    """What a reader summing canonical measures gets (each capture exports every series once)."""
    totals: dict[Measure, float] = defaultdict(float)
    for point in points:
        if point.measure is not None:
            totals[point.measure] += point.value
    return dict(totals)


def _totals(state: Any) -> dict[str, Any]:
    return {k: v for k, v in msgspec.structs.asdict(state).items() if k != "version"}


# --- Gemini CLI: whole captured sessions ------------------------------------------------------


def test_gemini_stub_session_totals(pipeline: Any, capture: Any) -> None:
    outputs = _feed(pipeline, _captures(capture, "gemini-cli", "stub-text-http-json"))
    assert {out.key for out in outputs} == {f"default/{GEMINI_STUB}".encode()}
    state = pipeline.state(GEMINI_STUB)
    assert state.agent == "gemini_cli"
    # Two gemini_cli.api_response records in 0002_v1_logs.json: the router call
    # (role=utility_router, gemini-3.5-flash-lite) and the main call (gemini-3.8-flash).
    assert state.api_requests == 2
    assert state.tokens == Tokens(input=3000, output=104, cache_read=0, cache_creation=0, reasoning=20)
    # gemini/gemini-3.5-flash-lite input 3e-07, output 2.5e-06 ($0.30/$2.50):
    # 1500 x 300 + 52 x 2500 = 580_000; gemini/gemini-3.8-flash 7.5e-07, 3.75e-06
    # ($0.75/$3.75): 1500 x 750 + 52 x 3750 = 1_320_000.
    assert state.cost_nanos == 580_000 + 1_320_000
    assert (state.cost_source, state.unpriced_requests) == ("price_table", 0)
    # 14 records: config, ripgrep_fallback, startup_stats, user_prompt, 2 api_request,
    # 4 gen_ai...operation.details, 2 api_response, model_routing, plan.approval_mode_duration.
    assert (state.events, state.prompts, state.api_errors) == (14, 1, 0)
    assert state.models == ["gemini-3.5-flash-lite", "gemini-3.8-flash"]  # not "auto" (config)
    # Context: the main call only, input_token_count 1500 (cache included, 0 here).
    assert (state.context.tokens, state.context.model) == (1500, "gemini-3.8-flash")


def test_gemini_offline_session_counts_errors_and_no_usage(pipeline: Any, capture: Any) -> None:
    _feed(pipeline, _captures(capture, "gemini-cli", "offline-http-json"))
    state = pipeline.state(GEMINI_OFFLINE)
    # 5 router attempts (gemini-3.5-flash-lite) + 4 main attempts (gemini-3.1-pro-preview),
    # each one gemini_cli.api_error with an empty status_code; no api_response at all.
    assert (state.api_errors, state.api_requests) == (9, 0)
    assert state.tokens == Tokens()
    assert (state.cost_nanos, state.cost_source) == (0, None)  # no request: nothing to price
    # config, ripgrep_fallback, startup_stats, user_prompt, 9 api_request, 18 operation.details,
    # 9 api_error, 4 network_retry_attempt, model_routing.
    assert (state.events, state.prompts) == (45, 1)
    assert state.models == ["gemini-3.5-flash-lite", "gemini-3.1-pro-preview"]
    assert state.context.tokens == 0


def test_gemini_operation_details_never_count_as_usage(pipeline: Any, capture: Any) -> None:
    (logs,) = _captures(capture, "gemini-cli", "stub-text-http-json", Signal.LOGS)
    events = _events(pipeline.send(logs.signal, logs.raw))
    details = [e for e in events if e.name == "gen_ai.client.inference.operation.details"]
    assert len(details) == 4
    # Two of them carry gen_ai.usage.* for the very requests api_response reports.
    assert sum("gen_ai.usage.input_tokens" in e.attributes for e in details) == 2
    assert all(e.kind is EventKind.OTHER and e.tokens is None for e in details)
    assert [e.name for e in events if e.kind is EventKind.USAGE] == ["gemini_cli.api_response"] * 2


def test_gemini_router_call_is_usage_but_not_the_sessions_context(pipeline: Any, capture: Any) -> None:
    (logs,) = _captures(capture, "gemini-cli", "stub-text-http-json", Signal.LOGS)
    request = logs.request
    records = request.resource_logs[0].scope_logs[0].log_records
    # Records 0-7: config .. the router's api_response (before the main api_request).
    del records[8:]
    pipeline.send_logs(request)
    state = pipeline.state(GEMINI_STUB)
    assert state.api_requests == 1
    assert state.tokens == GEMINI_CALL
    assert (state.context.tokens, state.context.model) == (0, None)


@pytest.mark.parametrize("metrics_first", [False, True])
def test_gemini_metrics_and_events_together_count_each_request_once(
    metrics_first: bool, pipeline: Any, capture: Any
) -> None:
    logs = _captures(capture, "gemini-cli", "stub-text-http-json", Signal.LOGS)
    metrics = _captures(capture, "gemini-cli", "stub-text-http-json", Signal.METRICS)
    _feed(pipeline, metrics + logs if metrics_first else logs + metrics)
    state = pipeline.state(GEMINI_STUB)
    assert state.tokens == Tokens(input=3000, output=104, reasoning=20)
    assert state.api_requests == 2


def test_gemini_token_metric_measures_add_up_to_the_events(pipeline: Any, capture: Any) -> None:
    (metrics,) = _captures(capture, "gemini-cli", "stub-text-http-json", Signal.METRICS)
    points = _points(pipeline.send(metrics.signal, metrics.raw))
    # gemini_cli.token.usage per model: input 1500, output 42, cache 0, thought 10, tool 0
    # (cumulative, one call each). Canonical: input 1500 - 0, output 42 + 10, cache 0,
    # reasoning 10; two models.
    assert _measured(points) == {
        Measure.TOKENS_INPUT: 3000,
        Measure.TOKENS_OUTPUT: 104,
        Measure.TOKENS_CACHE_READ: 0,
        Measure.TOKENS_REASONING: 20,
    }
    # The GenAI histogram counts the same tokens again: kept, but without a measure.
    semconv = [p for p in points if p.name == "gen_ai.client.token.usage"]
    assert len(semconv) == 4
    assert all(p.measure is None for p in semconv)
    derived = [p for p in points if DERIVED in p.attributes]
    assert sorted((p.model, p.attributes["type"], p.value) for p in derived) == [
        ("gemini-3.5-flash-lite", "input_uncached", 1500),
        ("gemini-3.5-flash-lite", "output_with_thoughts", 52),
        ("gemini-3.8-flash", "input_uncached", 1500),
        ("gemini-3.8-flash", "output_with_thoughts", 52),
    ]
    assert len({p.series_id for p in points}) == len(points)
    raw = {p.attributes["type"]: p.measure for p in points if p.name == "gemini_cli.token.usage"}
    assert raw["input"] is None
    assert raw["output"] is None
    assert raw["tool"] is None


def test_gemini_metrics_only_session_gets_canonical_tokens(pipeline: Any, capture: Any) -> None:
    """Without logs, the session state's metrics fallback reads the measures above."""
    _feed(pipeline, _captures(capture, "gemini-cli", "stub-text-http-json", Signal.METRICS))
    state = pipeline.state(GEMINI_STUB)
    assert state.totals_source == "metrics"
    # Same canonical totals as the events: 2 calls x (1500 input, 52 output, 10 reasoning).
    assert state.tokens == Tokens(input=3000, output=104, cache_read=0, cache_creation=0, reasoning=20)


# --- Codex CLI: whole captured sessions -------------------------------------------------------


def test_codex_stub_session_totals(pipeline: Any, capture: Any) -> None:
    outputs = _feed(pipeline, _captures(capture, "codex", "stub-text-protobuf"))
    state = pipeline.state(CODEX_STUB)
    assert state.agent == "codex"
    # One codex.sse_event carries tokens (input 1500, cached 1024, cache write 0, output 42,
    # reasoning 10) in 0007_v1_logs.pb.
    assert state.api_requests == 1
    assert state.tokens == CODEX_CALL
    # gpt-6.1-sol input 2e-06, cache read 1e-07, output 1e-05 ($2/$0.10/$10):
    # 476 x 2000 + 1024 x 100 + 42 x 10_000.
    assert state.cost_nanos == 952_000 + 102_400 + 420_000
    assert (state.cost_source, state.unpriced_requests) == ("price_table", 0)
    # Records with conversation.id: 12 (0001) + 1 (0002) + 1 (0003) + 13 (0007, log_only scope).
    assert (state.events, state.prompts, state.api_errors) == (27, 1, 0)
    assert state.models == ["gpt-6.1-sol"]
    assert (state.context.tokens, state.context.model) == (476 + 1024, "gpt-6.1-sol")
    # Everything else is in synthetic sessions (metrics; the metrics client's DEBUG record),
    # none of which gains usage.
    others = {out.key for out in outputs} - {f"default/{CODEX_STUB}".encode()}
    assert others
    assert all(key.startswith(b"default/synthetic-") for key in others)
    for key in others:
        other = pipeline.state(key.decode().removeprefix("default/"))
        assert (other.tokens, other.cost_nanos, other.api_requests) == (Tokens(), 0, 0)


def test_codex_offline_session_counts_failed_attempts(pipeline: Any, capture: Any) -> None:
    _feed(pipeline, _captures(capture, "codex", "offline-protobuf"))
    state = pipeline.state(CODEX_OFFLINE)
    # Three codex.api_request records (attempt 0, 1, 2): no status, "error sending request".
    assert (state.api_errors, state.api_requests) == (3, 0)
    assert state.tokens == Tokens()
    # 5 (0001) + 4 (0003) + 6 x 1 websocket_connect (0006 .. 0023) + 3 api_request.
    assert (state.events, state.prompts) == (18, 1)


def test_codex_only_the_token_sse_event_is_usage(pipeline: Any, capture: Any) -> None:
    logs = _captures(capture, "codex", "stub-text-protobuf", Signal.LOGS)
    events = _events(pipeline.send(logs[-1].signal, logs[-1].raw))
    completed = [e for e in events if e.attributes.get("event.kind") == "response.completed"]
    assert len(completed) == 2
    assert [e.kind for e in completed].count(EventKind.USAGE) == 1
    (usage,) = [e for e in events if e.kind is EventKind.USAGE]
    assert usage.tokens == CODEX_CALL
    assert (usage.cost_source, usage.main_context) == ("price_table", None)


def test_codex_times_come_from_the_observed_time(pipeline: Any, capture: Any) -> None:
    for cap in _captures(capture, "codex", "stub-text-protobuf", Signal.LOGS):
        observed = [int(r["observedTimeUnixNano"]) for r in cap.records()]
        assert all(int(r.get("timeUnixNano", 0)) == 0 for r in cap.records())
        events = _events(pipeline.send(cap.signal, cap.raw))
        assert sorted(e.time_ns for e in events) == sorted(observed)


def test_codex_metrics_client_debug_record_is_kept_as_other(pipeline: Any, capture: Any) -> None:
    logs = _captures(capture, "codex", "stub-text-protobuf", Signal.LOGS)
    events = _events(pipeline.send(logs[-1].signal, logs[-1].raw))
    (debug,) = [e for e in events if "event.name" not in e.attributes]
    assert debug.kind is EventKind.OTHER
    assert debug.attributes["body"] == "flushing OTEL metrics"
    assert debug.session_id.startswith("synthetic-")


def test_codex_metric_points_without_a_conversation_add_no_usage(pipeline: Any, capture: Any) -> None:
    metrics = _captures(capture, "codex", "stub-text-protobuf", Signal.METRICS)
    points = _points(_feed(pipeline, metrics))
    # No conversation id on Codex metrics: one synthetic session for all of them ...
    assert {p.session_id for p in points} == {points[0].session_id}
    assert points[0].session_id.startswith("synthetic-")
    # ... whose token points are kept as sent but measure nothing, so the metrics fallback
    # cannot count the conversations' usage a second time there.
    usage = {p.attributes["token_type"]: p for p in points if p.name == "codex.turn.token_usage"}
    assert sorted(usage) == [
        "cache_write_input",
        "cached_input",
        "input",
        "output",
        "reasoning_output",
        "total",
    ]
    assert _measured(points) == {}
    state = pipeline.state(points[0].session_id)
    assert (state.tokens, state.cost_nanos, state.api_requests, state.events) == (Tokens(), 0, 0, 0)


def _with_conversation(
    request: ExportMetricsServiceRequest, conversation: str
) -> ExportMetricsServiceRequest:
    """The export as a Codex that put ``conversation.id`` on its metrics would send it."""
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("sum", "gauge", "histogram"):
                    for point in getattr(metric, kind).data_points:
                        point.attributes.append(_kv("conversation.id", conversation))
    return request


def test_codex_metric_points_with_a_conversation_measure_canonical_tokens(
    pipeline: Any, capture: Any
) -> None:
    (metrics,) = _captures(capture, "codex", "stub-text-protobuf", Signal.METRICS)
    request = _with_conversation(metrics.request, CODEX_STUB)
    points = _points(pipeline.send(Signal.METRICS, request.SerializeToString()))
    assert {p.session_id for p in points} == {CODEX_STUB}
    # codex.turn.token_usage (delta histograms, one turn): input 1500, cached_input 1024,
    # cache_write_input 0, output 42, reasoning_output 10, total 1542; derived input 1500 - 1024.
    assert _measured(points) == {
        Measure.TOKENS_INPUT: 476,
        Measure.TOKENS_CACHE_READ: 1024,
        Measure.TOKENS_CACHE_CREATION: 0,
        Measure.TOKENS_OUTPUT: 42,
        Measure.TOKENS_REASONING: 10,
    }
    usage = {p.attributes["token_type"]: p for p in points if p.name == "codex.turn.token_usage"}
    assert usage["input"].measure is None
    assert usage["total"].measure is None
    assert usage["input_uncached"].attributes[DERIVED] == "input - cached_input"
    assert usage["input_uncached"].attributes["histogram.count"] == 1
    assert all(p.model == "gpt-6.1-sol" for p in usage.values())
    # Then the logs arrive: the usage event is the one source, the metrics are not added.
    for cap in _captures(capture, "codex", "stub-text-protobuf", Signal.LOGS):
        pipeline.send(cap.signal, cap.raw)
    state = pipeline.state(CODEX_STUB)
    assert (state.tokens, state.api_requests, state.totals_source) == (CODEX_CALL, 1, "events")


# --- identity and re-sent exports -------------------------------------------------------------


def _event_ids(pipeline: Any, raw: bytes) -> list[str]:
    headers = {HEADER_TENANT: "default", HEADER_SIGNAL: "logs"}
    _, normalised = pipeline.processor.normalise(headers, raw)
    return [e.event_id for records in normalised.sessions.values() for e in records.events]


@pytest.mark.parametrize(
    ("client", "case"),
    [
        ("gemini-cli", "stub-text-http-json"),
        ("gemini-cli", "offline-http-json"),
        ("codex", "stub-text-protobuf"),
        ("codex", "offline-protobuf"),
    ],
)
def test_event_ids_are_stable_and_distinct(client: str, case: str, pipeline: Any, capture: Any) -> None:
    for cap in _captures(capture, client, case, Signal.LOGS):
        ids = _event_ids(pipeline, cap.raw)
        assert ids == _event_ids(pipeline, cap.raw)
        assert len(set(ids)) == len(ids) == len(cap.records())
        if cap.path.suffix == ".pb":
            # The JSON rendering of the same export, decoded like ingest does, gives the same ids.
            rendering = cap.path.with_name(cap.path.name + ".json").read_bytes()
            assert _event_ids(pipeline, decode(Signal.LOGS, rendering, JSON).SerializeToString()) == ids


@pytest.mark.parametrize(
    ("client", "case", "session_id"),
    [
        ("gemini-cli", "stub-text-http-json", GEMINI_STUB),
        ("gemini-cli", "offline-http-json", GEMINI_OFFLINE),
        ("codex", "stub-text-protobuf", CODEX_STUB),
        ("codex", "offline-protobuf", CODEX_OFFLINE),
    ],
)
def test_resent_exports_change_no_totals(
    client: str, case: str, session_id: str, pipeline: Any, capture: Any
) -> None:
    caps = _captures(capture, client, case)
    _feed(pipeline, caps)
    before = pipeline.state(session_id)
    _feed(pipeline, caps)  # the exporter re-sent everything: new offsets, same records
    after = pipeline.state(session_id)
    assert _totals(after) == _totals(before)
    assert after.version > before.version


def test_capture_usage_records_match_the_documented_stub_usage() -> None:
    """The literals above rest on these payload values; read them with plain json."""

    def plain(value: dict[str, Any]) -> Any:
        ((kind, inner),) = value.items()
        return int(inner) if kind == "intValue" else inner

    def attrs(path: Path) -> list[dict[str, Any]]:
        doc = json.loads(path.read_text())
        return [
            {kv["key"]: plain(kv["value"]) for kv in r.get("attributes", []) if kv.get("value")}
            for rl in doc["resourceLogs"]
            for sl in rl["scopeLogs"]
            for r in sl["logRecords"]
        ]

    gemini = attrs(FIXTURES / "gemini-cli/stub-text-http-json/0002_v1_logs.json")
    responses = [a for a in gemini if a["event.name"] == "gemini_cli.api_response"]
    assert [
        (
            a["role"],
            a["input_token_count"],
            a["cached_content_token_count"],
            a["output_token_count"],
            a["thoughts_token_count"],
        )
        for a in responses
    ] == [("utility_router", 1500, 0, 42, 10), ("main", 1500, 0, 42, 10)]
    codex = attrs(FIXTURES / "codex/stub-text-protobuf/0007_v1_logs.pb.json")
    (tokens,) = [a for a in codex if "input_token_count" in a]
    assert [
        int(tokens[k])
        for k in (
            "input_token_count",
            "cached_token_count",
            "cache_write_token_count",
            "output_token_count",
            "reasoning_token_count",
        )
    ] == [1500, 1024, 0, 42, 10]


# --- hand-made records: tolerance and rules ---------------------------------------------------


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, AnyValue):
        return KeyValue(key=key, value=value)
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _logs(
    resource: dict[str, Any], scope: str, records: list[dict[str, Any]], *, with_time: bool = True
) -> ExportLogsServiceRequest:
    """Records observed at T0, T0 + 1, ...; ``with_time=False``: ``timeUnixNano`` 0, as Codex sends."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(_kv(k, v) for k, v in resource.items())
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = scope
    for i, attrs in enumerate(records):
        record = LogRecord(time_unix_nano=T0 + i if with_time else 0, observed_time_unix_nano=T0 + i)
        record.attributes.extend(_kv(k, v) for k, v in attrs.items())
        scope_logs.log_records.append(record)
    return request


def _gemini(records: list[dict[str, Any]]) -> ExportLogsServiceRequest:
    return _logs({"service.name": "gemini-cli", "session.id": "g-1"}, "gemini-cli", records)


def _codex(records: list[dict[str, Any]]) -> ExportLogsServiceRequest:
    return _logs({"service.name": "codex_tui"}, "codex_otel.log_only", records, with_time=False)


def _api_response(**overrides: Any) -> dict[str, Any]:
    return {
        "session.id": "g-1",
        "event.name": "gemini_cli.api_response",
        "model": "gemini-2.5-pro",
        "role": "main",
        "status_code": 200,
        "input_token_count": 250_000,
        "cached_content_token_count": 200_000,
        "output_token_count": 1000,
        "thoughts_token_count": 500,
        **overrides,
    }


def test_gemini_numbers_sent_as_strings_and_empty_values_are_read(pipeline: Any) -> None:
    attrs = {
        **_api_response(),
        "input_token_count": "1500",
        "cached_content_token_count": "1000",
        "output_token_count": "42",
        "thoughts_token_count": "10",
        "status_code": AnyValue(),  # empty AnyValue, as on Gemini's api_error
    }
    (out,) = pipeline.send_logs(_gemini([attrs]))
    assert out.state.tokens == Tokens(input=500, output=52, cache_read=1000, reasoning=10)
    assert out.state.context.tokens == 1500


def test_gemini_cost_uses_the_long_prompt_tier(pipeline: Any) -> None:
    # Prompt 250_000 tokens > 200k: Gemini 2.5 Pro's higher tier for the whole request
    # (gemini/gemini-2.5-pro *_above_200k_tokens: input 2.5e-06, cache read 2.5e-07, output
    # 1.5e-05) -> 50_000 x 2500 + 200_000 x 250 + 1500 x 15_000.
    (out,) = pipeline.send_logs(_gemini([_api_response()]))
    (event,) = out.events.events
    assert event.tokens == Tokens(input=50_000, output=1500, cache_read=200_000, reasoning=500)
    assert (event.cost_nanos, event.cost_source) == (125_000_000 + 50_000_000 + 22_500_000, "price_table")


def test_unknown_model_has_no_cost(pipeline: Any) -> None:
    (out,) = pipeline.send_logs(_gemini([_api_response(model="gemini-99-ultra")]))
    (event,) = out.events.events
    assert event.kind is EventKind.USAGE
    assert (event.cost_nanos, event.cost_source) == (None, None)
    assert out.state.cost_nanos == 0
    assert (out.state.cost_source, out.state.unpriced_requests) == ("unknown", 1)
    assert out.state.tokens.input == 50_000


@pytest.mark.parametrize(("role", "main_context"), [("main", True), ("utility_router", False), (None, None)])
def test_gemini_main_context_follows_the_role(role: str | None, main_context: bool | None) -> None:
    attrs = _api_response(role=role) if role else {**_api_response(), "role": AnyValue()}
    origin = Origin("t", T0, {"service.name": "gemini-cli"}, "gemini-cli")
    record = _gemini([attrs]).resource_logs[0].scope_logs[0].log_records[0]
    assert GeminiCliNormaliser().event(origin, record).main_context is main_context


def test_gemini_tool_call_is_a_tool_result_with_its_success(pipeline: Any) -> None:
    records = [
        {"session.id": "g-1", "event.name": "gemini_cli.tool_call", "function_name": "write", "success": ok}
        for ok in (True, False, True)
    ]
    (out,) = pipeline.send_logs(_gemini(records))
    assert [e.kind for e in out.events.events] == [EventKind.TOOL_RESULT] * 3
    assert [e.success for e in out.events.events] == [True, False, True]
    assert (out.state.tool_calls, out.state.tool_failures) == (3, 1)


def test_gemini_chat_compression_moves_the_context_down(pipeline: Any) -> None:
    compression = {
        "session.id": "g-1",
        "event.name": "gemini_cli.chat_compression",
        "tokens_before": 180_000,
        "tokens_after": 12_000,
    }
    (out,) = pipeline.send_logs(_gemini([_api_response(), compression]))
    assert [e.kind for e in out.events.events] == [EventKind.USAGE, EventKind.COMPACTION]
    assert out.events.events[1].context_after == 12_000
    assert out.state.context.tokens == 12_000  # was 250_000 after the request
    assert out.state.context.compactions == 1


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (200, None, EventKind.OTHER),
        ("200", None, EventKind.OTHER),
        (500, "http 500", EventKind.API_ERROR),
        ("503", None, EventKind.API_ERROR),
        ("429", "rate limited", EventKind.API_ERROR),
        (None, "error sending request", EventKind.API_ERROR),
        ("error", None, EventKind.API_ERROR),
        ("ok", None, EventKind.OTHER),
        (None, None, EventKind.OTHER),
    ],
)
def test_codex_api_request_status_int_or_string(status: Any, error: str | None, kind: EventKind) -> None:
    attrs: dict[str, Any] = {"event.name": "codex.api_request", "conversation.id": "c-1", "attempt": "0"}
    if status is not None:
        attrs["http.response.status_code"] = status
    if error is not None:
        attrs["error.message"] = error
    origin = Origin("t", T0, {"service.name": "codex_exec"}, "codex_otel.log_only")
    record = _codex([attrs]).resource_logs[0].scope_logs[0].log_records[0]
    assert CodexNormaliser().event(origin, record).kind is kind


def test_codex_tool_events_and_string_numbers(pipeline: Any) -> None:
    records = [
        {"event.name": "codex.tool_decision", "conversation.id": "c-1", "decision": "approved"},
        {"event.name": "codex.tool_result", "conversation.id": "c-1", "success": "false"},
        {
            "event.name": "codex.sse_event",
            "conversation.id": "c-1",
            "model": "gpt-5-codex",
            "event.kind": "response.completed",
            "input_token_count": "20000",
            "cached_token_count": "18000",
            "cache_write_token_count": 0,
            "output_token_count": "300",
            "reasoning_token_count": 120,
        },
    ]
    (out,) = pipeline.send_logs(_codex(records))
    kinds = [e.kind for e in out.events.events]
    assert kinds == [EventKind.TOOL_DECISION, EventKind.TOOL_RESULT, EventKind.USAGE]
    assert out.events.events[1].success is False
    assert [e.time_ns for e in out.events.events] == [T0, T0 + 1, T0 + 2]  # observed: time is 0
    # gpt-5-codex (1.25e-06 / 1.25e-07 / 1e-05): 2000 x 1250 + 18_000 x 125 + 300 x 10_000.
    assert out.state.tokens == Tokens(input=2000, output=300, cache_read=18_000, reasoning=120)
    assert out.state.cost_nanos == 2_500_000 + 2_250_000 + 3_000_000
    assert (out.state.tool_calls, out.state.tool_failures) == (1, 1)


def test_codex_record_without_any_time_uses_the_receive_time(pipeline: Any) -> None:
    request = _codex([{"event.name": "codex.user_prompt", "conversation.id": "c-1"}])
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    record.time_unix_nano = 0
    record.observed_time_unix_nano = 0
    (out,) = pipeline.send_logs(request)
    (event,) = out.events.events
    assert event.kind is EventKind.PROMPT
    assert event.time_ns == RECEIVED_NS


# --- OpenTelemetry GenAI semantic conventions (any other client) ------------------------------


def _semconv(records: list[dict[str, Any]]) -> ExportLogsServiceRequest:
    return _logs({"service.name": "my-agent"}, "my.instrumentation", records)


def test_semconv_usage_event_excludes_cache_from_input(pipeline: Any) -> None:
    attrs = {
        "session.id": "s-9",
        "event.name": "gen_ai.client.inference.operation.details",
        "gen_ai.request.model": "gpt-5",
        "gen_ai.response.model": "gpt-5-2025-08-07",
        "gen_ai.usage.input_tokens": 1000,  # all input, cached included (semconv)
        "gen_ai.usage.cache_read.input_tokens": 600,
        "gen_ai.usage.cache_creation.input_tokens": 100,
        "gen_ai.usage.output_tokens": 50,  # reasoning included
        "gen_ai.usage.reasoning.output_tokens": 20,
    }
    (out,) = pipeline.send_logs(_semconv([attrs]))
    (event,) = out.events.events
    assert (event.agent, event.kind, event.model) == ("my-agent", EventKind.USAGE, "gpt-5-2025-08-07")
    assert event.tokens == Tokens(input=300, output=50, cache_read=600, cache_creation=100, reasoning=20)
    # gpt-5-2025-08-07 (1.25e-06 / 1.25e-07 / 1e-05, no write rate): 300 x 1250 + 600 x 125
    # + 100 x 1250 (cache writes at the input rate) + 50 x 10_000.
    assert (event.cost_nanos, event.cost_source) == (375_000 + 75_000 + 125_000 + 500_000, "price_table")
    assert out.state.context.tokens == 1000


def test_semconv_older_attribute_names_and_errors(pipeline: Any) -> None:
    records = [
        {
            "session.id": "s-9",
            "event.name": "gen_ai.client.inference.operation.details",
            "gen_ai.request.model": "some-local-model",
            "gen_ai.usage.prompt_tokens": "700",
            "gen_ai.usage.completion_tokens": "70",
        },
        {
            "session.id": "s-9",
            "event.name": "gen_ai.client.inference.operation.details",
            "gen_ai.request.model": "some-local-model",
            "error.type": "timeout",
        },
        {"session.id": "s-9", "event.name": "something.else"},
    ]
    (out,) = pipeline.send_logs(_semconv(records))
    kinds = [e.kind for e in out.events.events]
    assert kinds == [EventKind.USAGE, EventKind.API_ERROR, EventKind.OTHER]
    assert out.state.tokens == Tokens(input=700, output=70)
    assert (out.state.cost_nanos, out.events.events[0].cost_source) == (0, None)  # unknown model
    assert (out.state.api_requests, out.state.api_errors) == (1, 1)


def test_semconv_token_histogram_measures_its_sums() -> None:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(_kv("service.name", "my-agent"))
    metric = resource_metrics.scope_metrics.add().metrics.add()
    metric.name = "gen_ai.client.token.usage"
    metric.histogram.aggregation_temporality = 2
    for kind, total, count in (("input", 4500.0, 3), ("output", 126.0, 3), ("other", 7.0, 1)):
        point = metric.histogram.data_points.add(sum=total, count=count, time_unix_nano=T0)
        point.attributes.extend(
            [
                _kv("gen_ai.token.type", kind),
                _kv("gen_ai.request.model", "gpt-5"),
                _kv("gen_ai.response.model", "gpt-5-2025-08-07"),
            ]
        )
    origin = Origin("t", T0, {"service.name": "my-agent"}, "")
    points = GenericNormaliser().points(origin, metric)
    assert [(p.measure, p.value, p.attributes["histogram.count"], p.model) for p in points] == [
        (Measure.TOKENS_INPUT, 4500.0, 3, "gpt-5-2025-08-07"),
        (Measure.TOKENS_OUTPUT, 126.0, 3, "gpt-5-2025-08-07"),
        (None, 7.0, 1, "gpt-5-2025-08-07"),
    ]


# --- registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "scope", "expected"),
    [
        ("claude-code", "com.anthropic.claude_code.events", ClaudeCodeNormaliser),
        ("gemini-cli", "gemini-cli", GeminiCliNormaliser),
        (None, "gemini-cli", GeminiCliNormaliser),
        ("codex_exec", "codex", CodexNormaliser),
        ("codex_tui", "codex_otel.log_only", CodexNormaliser),
        (None, "codex_otel::metrics::client", CodexNormaliser),
        ("my-agent", "openlit", GenericNormaliser),
        (None, "", GenericNormaliser),
    ],
)
def test_registry_picks_the_most_specific_normaliser(
    service: str | None, scope: str, expected: type[Any]
) -> None:
    resource = {} if service is None else {"service.name": service}
    picked = default_registry().pick(Origin("t", T0, resource, scope))
    assert type(picked) is expected


def test_every_capture_record_is_kept(pipeline: Any, capture: Any) -> None:
    """Nothing is dropped: one event per log record, one point per data point (+ derived ones)."""
    for client, case, agent in (
        ("gemini-cli", "stub-text-http-json", "gemini_cli"),
        ("codex", "stub-text-protobuf", "codex"),
    ):
        for cap in _captures(capture, client, case):
            outputs = pipeline.send(cap.signal, cap.raw)
            records = _events(outputs) if cap.signal is Signal.LOGS else _points(outputs)
            kept = [r for r in records if DERIVED not in r.attributes]
            assert len(kept) == len(cap.records())
            assert {r.agent for r in records} == {agent}


def test_a_metrics_only_gemini_session_is_priced_like_its_events(make_pipeline: Any, capture: Any) -> None:
    """No cost metric: the price table prices the token metrics per model, to the same figure
    as the usage events of the same calls (their prompts are below every price tier). (Codex
    CLI's metrics name no conversation, so a Codex session always has its events.)"""
    agent, case, session = "gemini-cli", "stub-text-http-json", GEMINI_STUB
    by_events, by_metrics = make_pipeline(), make_pipeline()
    _feed(by_events, _captures(capture, agent, case, Signal.LOGS))
    _feed(by_metrics, _captures(capture, agent, case, Signal.METRICS))
    events_state, metrics_state = by_events.state(session), by_metrics.state(session)
    assert metrics_state.totals_source == "metrics"
    assert events_state.cost_nanos > 0
    assert metrics_state.cost_nanos == events_state.cost_nanos
