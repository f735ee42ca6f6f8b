"""Raw messages -> per-session state: totals from events, exactly once, context from the main thread.

Expected numbers come from the captures' JSON (``expected`` in conftest), not from the code.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.decode import decode
from ingest.errors import JSON
from streams.normalise import SessionRecords
from streams.state import StoredSession, apply, seen_key
from tokentide.records import Event, EventKind, Tokens, replace
from tokentide.topics import HEADER_SIGNAL, HEADER_TENANT, Signal

T0 = 1_795_485_058_104_000_000
SECOND = 1_000_000_000
STUB_CONTEXT = 1200 + 4500 + 300  # the stub's input + cache read + cache write


def _feed(pipeline: Any, captures: list[Any]) -> None:
    for cap in captures:
        pipeline.send(cap.signal, cap.raw)


def _totals(state: Any) -> dict[str, Any]:
    """Everything in a session state except its version counter."""
    return {k: v for k, v in msgspec.structs.asdict(state).items() if k != "version"}


# --- whole captured sessions ------------------------------------------------------------------


def test_session_totals_equal_the_events(
    capture_case: str, pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    captures = streamed_of(capture_case)
    exp = expected(captures)
    outputs = [pipeline.send(cap.signal, cap.raw) for cap in captures]

    assert all(len(out) == 1 for out in outputs)
    assert {out[0].key for out in outputs} == {f"default/{exp.session_id}".encode()}
    state = pipeline.state(exp.session_id)
    assert state.tokens == Tokens(**exp.tokens)
    assert state.cost_nanos == exp.cost_nanos
    assert (state.api_requests, state.api_errors, state.events) == (
        exp.api_requests,
        exp.api_errors,
        exp.events,
    )
    assert set(state.models) == exp.models
    assert len(state.models) == len(exp.models)
    assert (state.context.tokens, state.context.model) == (exp.context_tokens, exp.context_model)
    assert state.context.window == exp.window
    assert (state.agent, state.service_name) == ("claude_code", "claude-code")
    assert outputs[-1][0].state == state


def test_stub_numbers_are_what_the_model_stub_reported(
    pipeline: Any, streamed_of: Callable[[str], list[Any]]
) -> None:
    """One anchored case, numbers from the stub's documentation (fixtures README)."""
    _feed(pipeline, streamed_of("stub-tool-traces-protobuf"))
    state = pipeline.state("f91221a8-0311-4362-9fe6-0628c6b87e21")
    assert state.tokens == Tokens(input=3 * 1200, output=3 * 42, cache_read=3 * 4500, cache_creation=3 * 300)
    # Two Opus calls and one Haiku title call, as the agent priced them.
    assert state.cost_nanos == 2 * 11_175_000 + 2_235_000
    assert state.api_requests == 3
    assert state.context.tokens == STUB_CONTEXT
    assert state.context.window == 1_000_000
    assert state.models == ["claude-haiku-4-5-20251001", "claude-opus-4-8"]


def test_json_and_protobuf_twins_give_the_same_totals(
    make_pipeline: Callable[[], Any], streamed_of: Callable[[str], list[Any]]
) -> None:
    def totals(case: str) -> dict[str, Any]:
        pipeline = make_pipeline()
        captures = streamed_of(case)
        _feed(pipeline, captures)
        (state_bytes,) = pipeline.table.values()
        state = StoredSession.from_bytes(state_bytes).state
        keep = {"tokens", "cost_nanos", "api_requests", "api_errors", "events", "models"}
        return {k: v for k, v in msgspec.structs.asdict(state).items() if k in keep}

    assert totals("stub-tool-traces-json") == totals("stub-tool-traces-protobuf")
    assert totals("stub-text-json") == totals("stub-text-protobuf")


# --- exactly once -----------------------------------------------------------------------------


def test_resent_exports_at_new_offsets_change_no_totals(
    capture_case: str, pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    captures = streamed_of(capture_case)
    session_id = expected(captures).session_id
    _feed(pipeline, captures)
    before = pipeline.state(session_id)

    _feed(pipeline, captures)  # the exporter re-sent everything: new offsets, same events

    after = pipeline.state(session_id)
    assert _totals(after) == _totals(before)
    assert after.version > before.version


# --- one source of truth per quantity ---------------------------------------------------------


def _split(captures: list[Any]) -> tuple[list[Any], list[Any]]:
    return [c for c in captures if c.signal is Signal.LOGS], [
        c for c in captures if c.signal is Signal.METRICS
    ]


@pytest.mark.parametrize("case", ["stub-text-protobuf", "stub-text-json", "stub-tool-traces-protobuf"])
def test_a_metrics_only_session_takes_its_totals_from_the_metrics(
    case: str, pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    """Without any usage event, the token and cost metrics are the one source (never both)."""
    logs, metrics = _split(streamed_of(case))
    from_events = expected(logs)
    exp = expected(metrics)
    names = {r["_metric"] for cap in metrics for r in cap.records()}
    assert {"claude_code.token.usage", "claude_code.cost.usage"} <= names

    outputs = [out for cap in metrics for out in pipeline.send(cap.signal, cap.raw)]

    state = pipeline.state(exp.session_id)
    assert state.totals_source == "metrics"
    # The captured metrics describe the same requests as the captured events.
    assert state.tokens == Tokens(**from_events.tokens)
    assert state.cost_nanos == from_events.cost_nanos
    assert (state.api_requests, state.events) == (0, 0)
    assert sum(len(out.points.points) for out in outputs if out.points) == exp.points

    _feed(pipeline, metrics)  # the same metrics again: nothing changes
    assert pipeline.state(exp.session_id).tokens == Tokens(**from_events.tokens)


@pytest.mark.parametrize("metrics_first", [False, True])
@pytest.mark.parametrize("case", ["stub-text-protobuf", "stub-tool-traces-json"])
def test_metrics_and_events_together_count_the_events_once(
    case: str,
    metrics_first: bool,
    pipeline: Any,
    streamed_of: Callable[[str], list[Any]],
    expected: Callable[..., Any],
) -> None:
    logs, metrics = _split(streamed_of(case))
    exp = expected(logs)
    _feed(pipeline, metrics + logs if metrics_first else logs + metrics)
    state = pipeline.state(exp.session_id)
    assert state.totals_source == "events"
    assert state.tokens == Tokens(**exp.tokens)
    assert state.cost_nanos == exp.cost_nanos
    assert state.api_requests == exp.api_requests


# --- context window ---------------------------------------------------------------------------


def test_title_generation_does_not_set_the_context(
    pipeline: Any, streamed_of: Callable[[str], list[Any]]
) -> None:
    logs, _ = _split(streamed_of("stub-tool-traces-protobuf"))
    request = logs[0].request
    records = request.resource_logs[0].scope_logs[0].log_records
    title_only = ExportLogsServiceRequest()
    title_only.CopyFrom(request)
    del title_only.resource_logs[0].scope_logs[0].log_records[3:]  # user_prompt, Haiku api_request, response
    session_id = next(kv.value.string_value for kv in records[0].attributes if kv.key == "session.id")

    pipeline.send_logs(title_only)
    state = pipeline.state(session_id)
    assert state.api_requests == 1
    assert state.tokens.input == 1200  # the Haiku call is counted ...
    assert (state.context.tokens, state.context.model) == (0, None)  # ... but has a window of its own

    pipeline.send_logs(request)
    state = pipeline.state(session_id)
    assert (state.context.tokens, state.context.model) == (STUB_CONTEXT, "claude-opus-4-8")


@pytest.mark.parametrize(
    ("query_source", "main_thread"),
    [
        ("sdk", True),
        ("repl_main_thread", True),
        (None, True),
        ("generate_session_title", False),
        ("compact", False),
        ("general-purpose", False),  # a subagent
    ],
)
def test_only_main_thread_requests_set_the_context(
    query_source: str | None, main_thread: bool, pipeline: Any, otlp_build: SimpleNamespace
) -> None:
    attrs = otlp_build.api_request(
        0, query_source=query_source, input_tokens=1000, cache_read_tokens=20_000, cache_creation_tokens=700
    )
    pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    state = pipeline.state("s-1")
    assert state.api_requests == 1
    assert state.context.tokens == (1000 + 20_000 + 700 if main_thread else 0)


def test_context_is_input_plus_cache_without_output(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    attrs = otlp_build.api_request(
        0, input_tokens=11, cache_read_tokens=70_000, cache_creation_tokens=900, output_tokens=5000
    )
    pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    assert pipeline.state("s-1").context.tokens == 11 + 70_000 + 900


def test_context_follows_the_latest_request_not_the_sum(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    pipeline.send_logs(
        otlp_build.logs(
            [
                (
                    T0,
                    otlp_build.api_request(0, input_tokens=100, cache_read_tokens=0, cache_creation_tokens=0),
                ),
                (
                    T0 + SECOND,
                    otlp_build.api_request(1, input_tokens=50, cache_read_tokens=0, cache_creation_tokens=0),
                ),
            ]
        )
    )
    assert pipeline.state("s-1").context.tokens == 50


def test_an_older_event_does_not_move_the_context_back(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    newer = otlp_build.api_request(5, input_tokens=9000, cache_read_tokens=0, cache_creation_tokens=0)
    older = otlp_build.api_request(2, input_tokens=10, cache_read_tokens=0, cache_creation_tokens=0)
    pipeline.send_logs(otlp_build.logs([(T0 + 10 * SECOND, newer)]))
    pipeline.send_logs(otlp_build.logs([(T0, older)]))  # delivered late
    state = pipeline.state("s-1")
    assert state.context.tokens == 9000
    assert state.tokens.input == 9010  # the late request still counts


def test_window_is_200k_without_the_long_context_hint(
    pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    logs, _ = _split(streamed_of("stub-text-protobuf"))
    exp = expected(logs)
    assert not exp.long_context  # api_request drops the [1m] suffix
    _feed(pipeline, logs)
    assert pipeline.state(exp.session_id).context.window == 200_000


def test_window_is_1m_once_a_metric_model_has_the_suffix(
    pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    logs, metrics = _split(streamed_of("stub-text-protobuf"))
    exp = expected(logs + metrics)
    assert exp.long_context
    _feed(pipeline, logs)
    _feed(pipeline, metrics)
    state = pipeline.state(exp.session_id)
    assert state.context.window == 1_000_000
    assert state.context.ratio == pytest.approx(STUB_CONTEXT / 1_000_000)


def test_window_is_1m_when_an_api_error_model_has_the_suffix(
    pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    logs, _ = _split(streamed_of("offline-protobuf"))
    exp = expected(logs)
    assert exp.api_errors == 1
    _feed(pipeline, logs)
    state = pipeline.state(exp.session_id)
    assert state.context.window == 1_000_000
    assert state.models == ["claude-opus-4-8"]  # stored without the suffix


def test_window_stays_200k_for_other_suffix_free_models(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    haiku = otlp_build.api_request(0, model="claude-haiku-4-5-20251001")
    pipeline.send_logs(otlp_build.logs([(T0, haiku)]))
    assert pipeline.state("s-1").context.window == 200_000


# --- identity ---------------------------------------------------------------------------------


def _event_ids(pipeline: Any, raw: bytes) -> list[str]:
    headers = {HEADER_TENANT: "default", HEADER_SIGNAL: "logs"}
    _, normalised = pipeline.processor.normalise(headers, raw)
    return [e.event_id for records in normalised.sessions.values() for e in records.events]


@pytest.mark.parametrize("case", ["stub-tool-traces-protobuf", "stub-error500-protobuf", "offline-protobuf"])
def test_event_ids_are_stable_and_distinct(
    case: str, pipeline: Any, captures_of: Callable[[str], list[Any]]
) -> None:
    for cap in captures_of(case):
        if cap.signal is not Signal.LOGS:
            continue
        ids = _event_ids(pipeline, cap.raw)
        assert ids == _event_ids(pipeline, cap.raw)
        # The JSON rendering of the same export, decoded like ingest does, gives the same ids.
        rendering = cap.path.with_name(cap.path.name + ".json").read_bytes()
        assert _event_ids(pipeline, decode(Signal.LOGS, rendering, JSON).SerializeToString()) == ids
        assert len(set(ids)) == len(ids) == len(cap.records())


def test_records_without_session_go_to_a_synthetic_session(
    pipeline: Any, streamed_of: Callable[[str], list[Any]], expected: Callable[..., Any]
) -> None:
    logs, _ = _split(streamed_of("stub-tool-traces-protobuf"))
    exp = expected(logs)
    request = logs[0].request
    for record in request.resource_logs[0].scope_logs[0].log_records:
        kept = [kv for kv in record.attributes if kv.key != "session.id"]
        del record.attributes[:]
        record.attributes.extend(kept)

    (out,) = pipeline.send_logs(request)
    (again,) = pipeline.send_logs(request)

    assert out.key.startswith(b"default/synthetic-")
    assert again.key == out.key  # one synthetic session per (tenant, service, user)
    assert out.state.session_id.startswith("synthetic-")
    assert (out.state.events, out.state.api_requests) == (exp.events, exp.api_requests)
    assert out.state.tokens == Tokens(**exp.tokens)


# --- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "costs",
    [
        [0.011175, 0.0022349999999999996, 0.011175],
        [0.1, 0.2, 0.3],
        [1.000000001, 2e-9, 123.456789012],
    ],
)
def test_cost_sums_are_exact(costs: list[float], pipeline: Any, otlp_build: SimpleNamespace) -> None:
    records = [(T0 + i, otlp_build.api_request(i, cost_usd=cost)) for i, cost in enumerate(costs)]
    pipeline.send_logs(otlp_build.logs(records))
    exact = sum(Decimal(str(c)) for c in costs)
    assert pipeline.state("s-1").cost_nanos == round(exact * 10**9)


def test_numbers_sent_as_strings_are_read(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    attrs = otlp_build.api_request(
        0,
        input_tokens="1200",
        output_tokens="42",
        cache_read_tokens="4500",
        cache_creation_tokens="300",
        cost_usd="0.011175",
    )
    pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    state = pipeline.state("s-1")
    assert state.tokens == Tokens(input=1200, output=42, cache_read=4500, cache_creation=300)
    assert state.cost_nanos == 11_175_000
    assert state.context.tokens == STUB_CONTEXT


def test_cost_falls_back_to_micros(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    attrs = {**otlp_build.api_request(0, cost_usd=None), "cost_usd_micros": 11175}
    (out,) = pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    assert out.state.cost_nanos == 11_175_000
    assert out.events is not None
    assert out.events.events[0].cost_source == "agent"


@pytest.mark.parametrize(
    ("split", "expected"),
    [
        # (attributes added to the stub's cache_creation_tokens 300) -> (cache_creation, 1h part)
        ({}, (300, 0)),  # before Claude Code split them: all five-minute writes
        ({"cache_creation_5m_tokens": 200, "cache_creation_1h_tokens": 100}, (300, 100)),
        ({"cache_creation_1h_tokens": "300"}, (300, 300)),
        ({"cache_creation_5m_tokens": 120}, (300, 180)),  # the rest of the total is 1h
        (
            {"cache_creation_tokens": None, "cache_creation_5m_tokens": 20, "cache_creation_1h_tokens": 30},
            (50, 30),
        ),
        ({"cache_creation_1h_tokens": 900}, (300, 300)),  # never more than the agent's total
    ],
)
def test_cache_writes_by_lifetime(
    split: dict[str, Any], expected: tuple[int, int], pipeline: Any, otlp_build: SimpleNamespace
) -> None:
    attrs = {**otlp_build.api_request(0), **split}
    (out,) = pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    tokens = out.state.tokens
    assert (tokens.cache_creation, tokens.cache_creation_1h) == expected
    # A breakdown, like reasoning: the context and the token totals count writes once.
    assert out.state.context.tokens == 1200 + 4500 + expected[0]
    assert out.state.cost_nanos == 11_175_000  # the agent's cost_usd wins


def test_a_request_without_the_agents_cost_is_priced_by_lifetime(
    pipeline: Any, otlp_build: SimpleNamespace
) -> None:
    attrs = {
        **otlp_build.api_request(0, cost_usd=None),
        "cache_creation_5m_tokens": 200,
        "cache_creation_1h_tokens": 100,
    }
    (out,) = pipeline.send_logs(otlp_build.logs([(T0, attrs)]))
    assert out.events is not None
    (event,) = out.events.events
    # claude-opus-4-8 in prices.json (LiteLLM): $5 input, $25 output, $0.50 read, $6.25
    # 5-minute write, $10 1-hour write (cache_creation_input_token_cost_above_1hr 1e-05):
    # 1200 x 5000 + 42 x 25_000 + 4500 x 500 + 200 x 6250 + 100 x 10_000.
    assert (event.cost_nanos, event.cost_source) == (
        6_000_000 + 1_050_000 + 2_250_000 + 1_250_000 + 1_000_000,
        "price_table",
    )


def test_lifetime_counts_out_of_range_are_refused(pipeline: Any, otlp_build: SimpleNamespace) -> None:
    attrs = {**otlp_build.api_request(0), "cache_creation_1h_tokens": -5}
    assert pipeline.send_logs(otlp_build.logs([(T0, attrs)])) == []
    assert [r.reason for r in pipeline.rejected] == ["tokens_negative"]


# --- bounded memory ---------------------------------------------------------------------------


def _prompts(count: int) -> list[Event]:
    return [
        Event(
            tenant="t",
            session_id="s",
            event_id=f"e{i}",
            agent="claude_code",
            name="user_prompt",
            time_ns=T0 + i,
        )
        for i in range(count)
    ]


def test_apply_skips_events_seen_before() -> None:
    events = _prompts(4)
    usage = replace(
        events[1], name="api_request", kind=EventKind.USAGE, tokens=Tokens(input=10), cost_nanos=5
    )
    first = SessionRecords(session_id="s", agent="claude_code", events=[events[0], usage, events[2]])
    again = SessionRecords(
        session_id="s", agent="claude_code", events=[usage, events[2], events[3], events[3]]
    )
    stored = apply(None, first, tenant="t", dedup_window=16).stored
    stored = apply(stored, again, tenant="t", dedup_window=16).stored
    assert stored.state.events == 4
    assert (stored.state.api_requests, stored.state.tokens.input, stored.state.cost_nanos) == (1, 10, 5)
    assert len(stored.recent) == 4
    assert all(seen_key(i) in stored.recent for i in ("e0", "e1", "e2", "e3"))


def test_dedup_window_is_bounded() -> None:
    window = 16
    events = _prompts(3 * window)
    stored = None
    for chunk in [events[:5], events[5:]]:
        records = SessionRecords(session_id="s", agent="claude_code", events=chunk)
        stored = apply(stored, records, tenant="t", dedup_window=window).stored
    assert stored is not None
    assert len(stored.recent) == window
    assert all(seen_key(e.event_id) in stored.recent for e in events[-window:])
    assert not any(seen_key(e.event_id) in stored.recent for e in events[:-window])
    assert stored.state.events == 3 * window


def test_dedup_window_bounds_the_stored_state(
    make_pipeline: Callable[..., Any], otlp_build: SimpleNamespace
) -> None:
    """The state does not grow with the session: a re-send within the window changes nothing."""
    pipeline = make_pipeline(dedup_window=16)
    prompts = [
        (T0 + i, {"session.id": "s-1", "event.name": "user_prompt", "event.sequence": i}) for i in range(400)
    ]
    sizes = []
    for start in range(0, 400, 8):
        pipeline.send_logs(otlp_build.logs(prompts[start : start + 8]))
        sizes.append(len(pipeline.stored("s-1").to_bytes()))
    pipeline.send_logs(otlp_build.logs(prompts[-16:]))  # re-sent
    stored = pipeline.stored("s-1")
    assert len(stored.recent) == 16
    assert stored.state.events == stored.state.prompts == 400
    assert max(sizes[2:]) - min(sizes[2:]) < 16  # only counters' digits grow


# --- undecodable input ------------------------------------------------------------------------


@pytest.mark.parametrize("signal", ["logs", "metrics"])
def test_garbage_bytes_are_undecodable(signal: str, pipeline: Any) -> None:
    _, normalised = pipeline.processor.normalise({HEADER_SIGNAL: signal}, b"\xff\xff\xff\xff not protobuf")
    assert normalised.sessions == {}
    (rejected,) = normalised.rejected
    assert (rejected.reason, rejected.kind) == ("undecodable", "message")


@pytest.mark.parametrize("signal", [None, "", "traces", "profiles", "LOGS"])
def test_unknown_signal_header_is_undecodable(signal: str | None, pipeline: Any) -> None:
    headers = {} if signal is None else {HEADER_SIGNAL: signal}
    _, normalised = pipeline.processor.normalise(headers, ExportLogsServiceRequest().SerializeToString())
    assert normalised.sessions == {}
    (rejected,) = normalised.rejected
    assert rejected.reason == "undecodable"
    assert "signal" in rejected.message
