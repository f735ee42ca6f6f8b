"""Long synthetic Claude Code sessions through the pure streams stage (``Processor``).

The sessions and what they must add up to come from ``tests/support/scenarios.py``: totals
from the generated requests, signals replayed from the documented rules over the delivery
order. Nothing here derives an expectation from the code under test.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from streams.normalise import default_registry
from streams.processor import Processor
from streams.state import StoredSession
from tests.support.scenarios import (
    CHECKPOINT_REQUESTED,
    COMPACTION_OBSERVED,
    CONTEXT_CRITICAL,
    CONTEXT_WARNING,
    HAIKU,
    LONG_WINDOW,
    OPUS,
    TITLE_SOURCE,
    WINDOW,
    ExpectedSignal,
    Generated,
    Scenario,
    Temporality,
    Totals,
    generate,
    in_order,
    shuffled,
    twice,
)
from tokentide.records import SessionSignal, SessionState, Tokens
from tokentide.topics import Signal, session_key

TENANT = "default"
DELTA, CUMULATIVE = Temporality.DELTA, Temporality.CUMULATIVE
TEMPORALITIES = pytest.mark.parametrize("temporality", [DELTA, CUMULATIVE], ids=["delta", "cumulative"])


@functools.cache
def generated(scenario: Scenario) -> Generated:
    return generate(scenario)


def medium(temporality: Temporality, **changes: Any) -> Scenario:
    """500 requests, ~5 compactions, two agent restarts; cumulative adds two drop resets."""
    cumulative = temporality is CUMULATIVE
    base = Scenario(seed=7, requests=500, temporality=temporality, restarts=2, drop_resets=2 * cumulative)
    return replace(base, **changes)


@dataclass
class Run:
    state: SessionState
    stored: StoredSession
    signals: list[SessionSignal]


def feed(gen: Generated, order: Iterable[int]) -> Run:
    """Each export of ``order`` as one raw Kafka message."""
    processor = Processor(default_registry(), dedup_window=256)
    table: dict[bytes, StoredSession] = {}
    signals: list[SessionSignal] = []
    for index in order:
        export = gen.exports[index]
        signal = Signal(export.signal)
        processed = processor.process(
            headers={"tt-tenant": TENANT, "tt-signal": signal.value, "tt-session": gen.session_id},
            value=export.body,
            get_state=table.get,
            put_state=table.__setitem__,
        )
        assert processed.rejected == []
        outputs = processed.outputs
        assert [o.key for o in outputs] == [session_key(TENANT, gen.session_id).encode()]
        signals += [s for o in outputs if o.signals for s in o.signals.signals]
    stored = table[session_key(TENANT, gen.session_id).encode()]
    return Run(stored.state, stored, signals)


def totals_of(state: SessionState) -> dict[str, Any]:
    return {
        "tokens": state.tokens,
        "cost_nanos": state.cost_nanos,
        "api_requests": state.api_requests,
        "prompts": state.prompts,
        "tool_calls": state.tool_calls,
        "tool_failures": state.tool_failures,
        "lines_added": state.lines_added,
        "lines_removed": state.lines_removed,
        "commits": state.commits,
        "compactions": state.context.compactions,
        "events": state.events,
        "models": set(state.models),
    }


def expected_totals(totals: Totals) -> dict[str, Any]:
    return {
        "tokens": Tokens(
            input=totals.input,
            output=totals.output,
            cache_read=totals.cache_read,
            cache_creation=totals.cache_creation,
        ),
        "cost_nanos": totals.cost_nanos,
        "api_requests": totals.api_requests,
        "prompts": totals.prompts,
        "tool_calls": totals.tool_calls,
        "tool_failures": totals.tool_failures,
        "lines_added": totals.lines_added,
        "lines_removed": totals.lines_removed,
        "commits": totals.commits,
        "compactions": totals.compactions,
        "events": totals.events,
        "models": set(totals.models),
    }


def fired(gen: Generated, signals: Iterable[SessionSignal]) -> list[tuple[str, str, int, int]]:
    """(kind, where, context tokens, window) of each signal, in the order they fired."""
    return [(s.kind.value, gen.label(s.time_ns), s.tokens, s.window) for s in signals]


def expected_fired(signals: Iterable[ExpectedSignal]) -> list[tuple[str, str, int, int]]:
    return [(s.kind, s.at, s.tokens, s.window) for s in signals]


def check(gen: Generated, run: Run, expected_signals: list[ExpectedSignal]) -> None:
    """Totals exact; signals where and as often as the rules say, each crossing once."""
    assert totals_of(run.state) == expected_totals(gen.totals)
    assert run.state.totals_source == "events"
    assert run.state.active_time_s == pytest.approx(gen.totals.active_time_s, abs=1e-3)
    assert fired(gen, run.signals) == expected_fired(expected_signals)
    assert len({s.signal_id for s in run.signals}) == len(run.signals), "a crossing fired twice"


# --- the generator's own claims (no code under test) ------------------------------------------


def test_scenarios_cover_what_the_tests_rely_on() -> None:
    for temporality in (DELTA, CUMULATIVE):
        gen = generated(medium(temporality))
        fires = gen.fires()
        assert gen.totals.compactions >= 4
        assert all(len(fires[kind]) >= 4 for kind in fires), fires
        assert any(not r.main and r.query_source == TITLE_SOURCE for r in gen.requests)
        assert {r.model for r in gen.requests} == {OPUS, HAIKU}
        assert gen.totals.tool_failures > 0
        assert gen.totals.commits > 0
    assert generated(medium(CUMULATIVE)).drops > 0


def test_bodies_have_claude_codes_shape() -> None:
    gen = generated(medium(CUMULATIVE))
    names: Counter[str] = Counter()
    sequences: list[int] = []
    temporalities: set[int] = set()
    for export in gen.exports:
        if export.signal == "logs":
            logs = ExportLogsServiceRequest.FromString(export.body)
            (resource_logs,) = logs.resource_logs
            (scope_logs,) = resource_logs.scope_logs
            assert scope_logs.scope.name == "com.anthropic.claude_code.events"
            for record in scope_logs.log_records:
                attrs = {kv.key: kv.value for kv in record.attributes}
                assert {"session.id", "event.sequence", "event.timestamp", "user.id"} <= set(attrs)
                assert attrs["session.id"].string_value == gen.session_id
                assert record.body.string_value == "claude_code." + attrs["event.name"].string_value
                assert record.time_unix_nano == record.observed_time_unix_nano
                names[attrs["event.name"].string_value] += 1
                sequences.append(attrs["event.sequence"].int_value)
        else:
            metrics = ExportMetricsServiceRequest.FromString(export.body)
            for metric in metrics.resource_metrics[0].scope_metrics[0].metrics:
                assert metric.WhichOneof("data") == "sum"
                assert metric.sum.is_monotonic
                temporalities.add(metric.sum.aggregation_temporality)
                for point in metric.sum.data_points:
                    assert point.WhichOneof("value") == "as_double"
                    assert point.start_time_unix_nano < point.time_unix_nano
                    assert "session.id" in {kv.key for kv in point.attributes}
    assert names["api_request"] == gen.totals.api_requests
    assert names["compaction"] == gen.totals.compactions
    assert names["tool_result"] == gen.totals.tool_calls
    assert temporalities == {2}
    # Two restarts: the event sequence starts again from 0 twice.
    assert sequences.count(0) == 3


def test_cumulative_resets_are_in_the_bodies() -> None:
    """Restarts give the series new start times; drop resets lower a value under the same start."""
    gen = generated(medium(CUMULATIVE))
    starts: dict[tuple[str, tuple[tuple[str, str], ...]], set[int]] = defaultdict(set)
    last: dict[tuple[str, tuple[tuple[str, str], ...], int], float] = {}
    drops = 0
    for export in gen.exports:
        if export.signal != "metrics":
            continue
        request = ExportMetricsServiceRequest.FromString(export.body)
        for metric in request.resource_metrics[0].scope_metrics[0].metrics:
            for point in metric.sum.data_points:
                attrs = tuple(sorted((kv.key, str(kv.value)) for kv in point.attributes))
                starts[(metric.name, attrs)].add(point.start_time_unix_nano)
                key = (metric.name, attrs, point.start_time_unix_nano)
                drops += key in last and point.as_double < last[key]
                last[key] = point.as_double
    token_series = [s for (name, _), s in starts.items() if name == "claude_code.token.usage"]
    assert max(len(s) for s in token_series) == 3  # two restarts
    assert drops == gen.drops > 0


def test_cost_is_the_price_of_the_tokens() -> None:
    gen = generated(medium(DELTA))
    for request in gen.requests[:50]:
        rates = (5_000, 25_000, 500, 6_250) if request.model == OPUS else (1_000, 5_000, 100, 1_250)
        counts = (request.input, request.output, request.cache_read, request.cache_creation)
        assert request.cost_nanos == sum(r * c for r, c in zip(rates, counts, strict=True))


def test_generation_is_deterministic() -> None:
    scenario = Scenario(seed=11, requests=80, temporality=CUMULATIVE, restarts=1, drop_resets=1)
    first, second = generate(scenario), generate(scenario)
    assert [e.body for e in first.exports] == [e.body for e in second.exports]
    assert first.signals == second.signals


# --- through the streams stage ----------------------------------------------------------------


@TEMPORALITIES
def test_in_order_totals_and_signals_are_exact(temporality: Temporality) -> None:
    gen = generated(medium(temporality))
    check(gen, feed(gen, in_order(gen)), gen.signals)


@TEMPORALITIES
def test_every_export_posted_twice_changes_nothing(temporality: Temporality) -> None:
    """The agent re-sends each export (a lost response): new offsets, same records."""
    gen = generated(medium(temporality))
    order = twice(gen)
    assert gen.signals_for(order) == gen.signals
    check(gen, feed(gen, order), gen.signals)


@TEMPORALITIES
def test_exports_shuffled_within_small_windows(temporality: Temporality) -> None:
    """Out-of-order delivery (blocks of 3 exports shuffled). Totals stay exact; the signals are
    what the rules give for that order (a request older than the context's newest one does not
    move it). Restarts only: a drop reset inside one start time cannot be read out of order
    (a late pre-reset point is indistinguishable from lost counts), so none here. The session's
    very first exports swapped: ``test_first_logs_export_arriving_second_loses_nothing``."""
    gen = generated(medium(temporality, drop_resets=0))
    order = shuffled(gen, window=3, seed=5)
    assert order != in_order(gen)
    expected = gen.signals_for(order)
    assert Counter(s.kind for s in expected)[COMPACTION_OBSERVED] == gen.totals.compactions
    check(gen, feed(gen, order), expected)


@TEMPORALITIES
def test_first_logs_export_arriving_second_loses_nothing(temporality: Temporality) -> None:
    """The session's first logs export arrives after its second (the exporter retried it), both
    before the first metrics export. Every cumulative series of that metrics export started
    after the session's first event, which the stage has seen by then: all of it counts."""
    gen = generated(medium(temporality, drop_resets=0))
    logs = [i for i, e in enumerate(gen.exports) if e.signal == "logs"]
    first_metrics = next(i for i, e in enumerate(gen.exports) if e.signal == "metrics")
    assert logs[1] < first_metrics
    order = [logs[1], logs[0], *(i for i in in_order(gen) if i not in logs[:2])]
    check(gen, feed(gen, order), gen.signals_for(order))


@TEMPORALITIES
def test_shuffled_and_twice(temporality: Temporality) -> None:
    gen = generated(medium(temporality, drop_resets=0, seed=8))
    order = [i for i in shuffled(gen, window=4, seed=9) for _ in range(2)]
    check(gen, feed(gen, order), gen.signals_for(order))


def test_long_session_with_several_compactions() -> None:
    """2,000+ requests, cumulative, three restarts and three drop resets, every export twice."""
    scenario = Scenario(
        seed=21, requests=2_200, growth=2_500, temporality=CUMULATIVE, restarts=3, drop_resets=3
    )
    gen = generated(scenario)
    assert gen.totals.api_requests > 2_000
    assert gen.totals.compactions >= 10
    run = feed(gen, twice(gen))
    check(gen, run, gen.signals)
    assert Counter(s.kind.value for s in run.signals)[COMPACTION_OBSERVED] == gen.totals.compactions


def test_compacting_before_95_percent_raises_no_critical() -> None:
    scenario = Scenario(seed=3, requests=400, compact_at=0.92, growth=1_800, growth_jitter=500)
    gen = generated(scenario)
    fires = gen.fires()
    assert not fires[CONTEXT_CRITICAL]
    assert len(fires[CONTEXT_WARNING]) == len(fires[CHECKPOINT_REQUESTED]) >= 3
    check(gen, feed(gen, in_order(gen)), gen.signals)


def test_fast_growth_requests_a_checkpoint_before_90_percent() -> None:
    """12k tokens per request: the prediction (window full within 3 requests) comes first."""
    scenario = Scenario(seed=4, requests=200, growth=12_000, growth_jitter=300, side_share=0.0)
    gen = generated(scenario)
    checkpoints = [s for s in gen.signals if s.kind == CHECKPOINT_REQUESTED]
    assert len(checkpoints) >= 3
    assert all(s.tokens < 0.9 * WINDOW for s in checkpoints)
    check(gen, feed(gen, in_order(gen)), gen.signals)


def test_long_context_variant_has_a_1m_window() -> None:
    """Metric model names with ``[1m]``: the window is 1M from the first metrics export on."""
    scenario = Scenario(seed=6, requests=250, growth=14_000, growth_jitter=2_000, long_context=True)
    gen = generated(scenario)
    assert gen.totals.compactions >= 2
    assert {s.window for s in gen.signals} == {LONG_WINDOW}
    run = feed(gen, in_order(gen))
    check(gen, run, gen.signals)
    assert run.state.context.window == LONG_WINDOW


@TEMPORALITIES
def test_metrics_only_session_counts_from_the_metrics(temporality: Temporality) -> None:
    """No logs at all: tokens, lines and commits come from the metrics, across resets."""
    gen = generated(medium(temporality))
    run = feed(gen, [i for i, e in enumerate(gen.exports) if e.signal == "metrics"])
    totals = gen.totals
    state = run.state
    assert state.totals_source == "metrics"
    assert state.tokens == Tokens(
        input=totals.input,
        output=totals.output,
        cache_read=totals.cache_read,
        cache_creation=totals.cache_creation,
    )
    assert (state.lines_added, state.lines_removed, state.commits) == (
        totals.lines_added,
        totals.lines_removed,
        totals.commits,
    )
    # The cost metric is a double summed by the agent's SDK: equal to within float error.
    assert state.cost_nanos == pytest.approx(totals.cost_nanos, abs=1_000)
    assert state.active_time_s == pytest.approx(totals.active_time_s, abs=1e-3)
    assert state.api_requests == 0
    assert not run.signals
