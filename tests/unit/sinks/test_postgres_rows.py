"""Canonical records -> PostgreSQL rows: exact times and money, text PostgreSQL accepts."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sinks.postgres.rows import (
    EVENT_COLUMNS,
    EVENTS_LAYOUT,
    POINT_COLUMNS,
    POINTS_LAYOUT,
    ROLLUP_COLUMNS,
    ROLLUP_STAGING_COLUMNS,
    SERIES_COLUMNS,
    SESSION_COLUMNS,
    days,
    event_rows,
    event_text,
    first_points,
    jsonb,
    latest_states,
    layout,
    merge_rollups,
    point_rows,
    point_text,
    rollup_row,
    series_text,
    session_row,
    text,
    timestamp,
    usd,
    with_rows,
)
from tokentide.records import (
    ContextState,
    Event,
    EventBatch,
    EventKind,
    Point,
    PointBatch,
    Rollup,
    SessionState,
    Tokens,
    replace,
)

NS = 1_795_485_058_104_123_456

EVENT = Event(
    tenant="default",
    session_id="s-1",
    event_id="e-1",
    agent="claude_code",
    name="api_request",
    kind=EventKind.USAGE,
    time_ns=NS,
    sequence=3,
    user_id="u-1",
    model="claude-opus-4-8",
    query_source="sdk",
    main_context=True,
    request_id="req_1",
    duration_ms=812.0,
    tokens=Tokens(input=1200, output=42, cache_read=4500, cache_creation=300),
    cost_nanos=11_175_000,
    cost_source="agent",
    attributes={"tool_parameters": '{"cmd": "printf \\x00"}', "k\x00ey": "v\x00al"},
)
POINT = Point(
    tenant="default",
    session_id="s-1",
    agent="claude_code",
    name="claude_code.token.usage",
    series_id="series-1",
    time_ns=NS,
    start_time_ns=NS - 50_000_000,
    value=4500.0,
    temporality=1,
    unit="tokens",
    attributes={"type": "cacheRead", "model": "claude-opus-4-8[1m]"},
)


def _state(session_id: str = "s-1", version: int = 1, tenant: str = "default") -> SessionState:
    return SessionState(
        tenant=tenant,
        session_id=session_id,
        agent="claude_code",
        service_name="claude-code",
        user_id="u-1",
        started_at_ns=NS - 10**9,
        last_seen_at_ns=NS,
        tokens=Tokens(input=3600, output=126, cache_read=13_500, cache_creation=900),
        cost_nanos=24_585_000,
        api_requests=3,
        api_errors=0,
        events=9,
        models=["claude-haiku-4-5-20251001", "claude-opus-4-8"],
        context=ContextState(tokens=6000, window=1_000_000, model="claude-opus-4-8"),
        version=version,
    )


# --- values -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "expected"),
    [
        (NS, datetime(2026, 11, 24, 1, 50, 58, 104_123, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (1_795_485_058_999_999_999, datetime(2026, 11, 24, 1, 50, 58, 999_999, tzinfo=UTC)),
    ],
)
def test_timestamp_is_exact_to_the_microsecond(ns: int, expected: datetime) -> None:
    # Independent reading: whole seconds, then the microseconds of the remainder.
    assert expected == datetime.fromtimestamp(ns // 10**9, UTC) + timedelta(microseconds=ns % 10**9 // 1000)
    result = timestamp(ns)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("nanos", "expected"),
    [
        (11_175_000, Decimal("0.011175")),
        (2_235_000, Decimal("0.002235")),
        (1, Decimal("0.000000001")),
        (0, Decimal(0)),
        (123_456_789_012, Decimal("123.456789012")),
        (None, None),
    ],
)
def test_usd_is_an_exact_decimal(nanos: int | None, expected: Decimal | None) -> None:
    assert usd(nanos) == expected


def test_usd_sums_exactly() -> None:
    parts = [11_175_000, 2_235_000, 11_175_000]
    assert sum(Decimal(usd(n) or 0) for n in parts) == usd(sum(parts)) == Decimal("0.024585")


@pytest.mark.parametrize(
    ("value", "expected"), [("a\x00b\x00", "ab"), ("\x00", ""), ("plain", "plain"), (None, None)]
)
def test_text_drops_nul(value: str | None, expected: str | None) -> None:
    assert text(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"a": "x\x00y", "n\x00": ["\x00", {"deep": "\x00z"}]},
        {"path": "C:\\Users\\u0000"},  # a literal backslash-u-0000 in text (Windows path)
        {"source": 'print("\\u0000")'},  # source code in tool parameters, not a NUL
        {"mixed": "a\\\x00b"},  # a backslash right before a real NUL
        {"unicode": "héllo ✓", "float": 0.0022349999999999996, "int": 2**63 - 1, "none": None},
    ],
    ids=["nul-everywhere", "windows-path", "source-code", "backslash-then-nul", "plain"],
)
def test_jsonb_is_valid_json_without_nul(value: dict[str, Any]) -> None:
    encoded = jsonb(value)
    decoded = json.loads(encoded)  # PostgreSQL refuses invalid JSON: the whole batch would fail
    assert decoded == _without_nul(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


# --- rows -------------------------------------------------------------------------------------


def _line(line: str, columns: tuple[str, ...]) -> dict[str, str | None]:
    """A COPY text line read back as PostgreSQL reads it: tab-separated, ``\\N`` null, escapes."""
    assert line.endswith("\n"), "a line"
    assert line.count("\n") == 1, "one line per row"
    fields = line[:-1].split("\t")
    assert len(fields) == len(columns), "one field per column"
    unescape = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
    out: dict[str, str | None] = {}
    for column, field in zip(columns, fields, strict=True):
        out[column] = None if field == "\\N" else re.sub(r"\\[\\tnr]", lambda m: unescape[m.group()], field)
    return out


def test_event_text_puts_each_value_in_its_column() -> None:
    row = _line(event_text(EVENT), EVENT_COLUMNS)
    assert row["tenant_id"] == "default"
    assert row["event_id"] == "e-1"
    assert row["ts"] == "2026-11-24 01:50:58.104123+00"
    assert row["seq"] == "3"
    assert (row["input_tokens"], row["output_tokens"]) == ("1200", "42")
    assert (row["cache_read_tokens"], row["cache_creation_tokens"], row["reasoning_tokens"]) == (
        "4500",
        "300",
        "0",
    )
    assert Decimal(row["cost_usd"] or "") == Decimal("0.011175")
    assert row["cost_source"] == "agent"
    assert json.loads(row["attributes"] or "") == {"tool_parameters": '{"cmd": "printf \\x00"}', "key": "val"}
    assert (row["kind"], row["main_context"]) == ("usage", "t")
    assert float(row["duration_ms"] or "") == 812.0


@pytest.mark.parametrize("kind", list(EventKind))
def test_event_text_carries_the_canonical_kind_as_text(kind: EventKind) -> None:
    assert _line(event_text(replace(EVENT, kind=kind)), EVENT_COLUMNS)["kind"] == kind.value


def test_event_text_keeps_an_unknown_main_context_unknown() -> None:
    event = replace(EVENT, kind=EventKind.TOOL_RESULT, main_context=None, tokens=None)
    row = _line(event_text(event), EVENT_COLUMNS)
    assert (row["kind"], row["main_context"]) == ("tool_result", None)


def test_event_text_without_usage_has_null_usage_columns() -> None:
    row = _line(event_text(replace(EVENT, tokens=None, cost_nanos=None)), EVENT_COLUMNS)
    usage = ["input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "cost_usd"]
    assert [row[c] for c in usage] == [None] * len(usage)


def test_no_nul_reaches_any_text_column() -> None:
    dirty = replace(EVENT, model="claude\x00", name="api\x00_request", request_id="\x00r")
    row = _line(event_text(dirty), EVENT_COLUMNS)
    assert (row["model"], row["name"], row["request_id"]) == ("claude", "api_request", "r")
    assert not any(v is not None and "\x00" in v for v in row.values())


@given(st.text())
def test_any_text_reads_back_as_itself_without_nul(value: str) -> None:
    row = _line(
        event_text(replace(EVENT, model=value, user_id=value, attributes={value: value})), EVENT_COLUMNS
    )
    assert row["model"] == row["user_id"] == value.replace("\x00", "")
    assert json.loads(row["attributes"] or "") == {value.replace("\x00", ""): value.replace("\x00", "")}


@pytest.mark.parametrize(
    ("nanos", "expected"),
    [
        (11_175_000, "0.011175000"),
        (1, "0.000000001"),
        (0, "0.000000000"),
        (-1, "-0.000000001"),
        (123_456_789_012, "123.456789012"),
        (-2_500_000_000, "-2.500000000"),
    ],
)
def test_costs_are_exact_numeric_literals(nanos: int, expected: str) -> None:
    assert _line(event_text(replace(EVENT, cost_nanos=nanos)), EVENT_COLUMNS)["cost_usd"] == expected
    assert Decimal(expected) == usd(nanos)


@pytest.mark.parametrize("ns", [NS, 0, -1, -1_500, 1_795_485_058_999_999_999, 253_402_300_799_999_999_999])
def test_times_are_the_exact_timestamps(ns: int) -> None:
    row = _line(event_text(replace(EVENT, time_ns=ns)), EVENT_COLUMNS)
    assert datetime.fromisoformat(row["ts"] or "") == timestamp(ns)


def test_a_time_no_timestamp_holds_builds_no_row() -> None:
    with pytest.raises(OverflowError):
        event_text(replace(EVENT, time_ns=10**21))


def test_point_text_puts_each_value_in_its_column() -> None:
    row = _line(point_text(POINT), POINT_COLUMNS)
    assert (row["tenant_id"], row["series_id"], row["value"], row["temporality"]) == (
        "default",
        "series-1",
        "4500.0",
        "1",
    )
    ts, start = (datetime.fromisoformat(row[c] or "") for c in ("ts", "start_ts"))
    assert ts - start == timedelta(milliseconds=50)
    assert row["histogram_count"] is None


@pytest.mark.parametrize(("value", "expected"), [(float("inf"), "inf"), (float("nan"), "nan"), (7, "7.0")])
def test_special_and_integer_values_are_what_postgresql_reads_as_double(value: float, expected: str) -> None:
    assert _line(point_text(replace(POINT, value=value)), POINT_COLUMNS)["value"] == expected


def test_series_text_holds_what_the_points_of_a_series_share() -> None:
    row = _line(series_text(POINT), SERIES_COLUMNS)
    assert (row["series_id"], row["session_id"], row["name"], row["unit"]) == (
        "series-1",
        "s-1",
        "claude_code.token.usage",
        "tokens",
    )
    assert json.loads(row["attributes"] or "") == POINT.attributes
    assert datetime.fromisoformat(row["first_seen"] or "") == timestamp(NS)
    later = _line(series_text(replace(POINT, time_ns=NS + 10**9)), SERIES_COLUMNS)
    assert datetime.fromisoformat(later["first_seen"] or "") == timestamp(NS + 10**9)


def test_a_histogram_count_stays_with_its_point_not_its_series() -> None:
    histogram = replace(POINT, series_id="series-h", attributes={**POINT.attributes, "histogram.count": 3})
    assert _line(point_text(histogram), POINT_COLUMNS)["histogram_count"] == "3"
    assert json.loads(_line(series_text(histogram), SERIES_COLUMNS)["attributes"] or "") == POINT.attributes


def test_prepared_points_carry_each_series_once_with_its_earliest_point() -> None:
    later = replace(POINT, time_ns=NS + 10)
    other = replace(POINT, series_id="series-2")
    copy = point_rows([later, POINT, other])
    assert copy.layout == POINTS_LAYOUT
    assert [r.text for r in copy.rows] == [point_text(p) for p in (later, POINT, other)]
    assert [r.series for r in copy.rows] == [None, series_text(POINT), series_text(other)]


def test_prepared_events_are_their_text_rows() -> None:
    events = [EVENT, replace(EVENT, event_id="e-2", time_ns=NS + 1)]
    copy = event_rows(events)
    assert copy.layout == EVENTS_LAYOUT
    assert [(r.time_ns, r.text, r.series) for r in copy.rows] == [
        (e.time_ns, event_text(e), None) for e in events
    ]


def test_a_batch_with_a_record_no_row_holds_goes_without_prepared_rows() -> None:
    batch = EventBatch(events=[EVENT, replace(EVENT, event_id="e-2", time_ns=10**21)])
    assert with_rows(batch).copy is None
    assert with_rows(EventBatch(events=[EVENT])).copy == event_rows([EVENT])
    assert with_rows(PointBatch(points=[POINT])).copy == point_rows([POINT])


def test_the_layout_changes_with_the_columns() -> None:
    assert layout(EVENT_COLUMNS) == EVENTS_LAYOUT
    assert layout((*EVENT_COLUMNS, "new_column")) != EVENTS_LAYOUT
    assert layout(EVENT_COLUMNS[::-1]) != EVENTS_LAYOUT
    assert EVENTS_LAYOUT != POINTS_LAYOUT


def test_first_points_gives_each_series_once_with_its_earliest_point() -> None:
    later = replace(POINT, time_ns=NS + 10)
    other = replace(POINT, series_id="series-2")
    other_tenant = replace(POINT, tenant="acme")
    firsts = first_points([later, POINT, other, other_tenant])
    assert sorted((p.tenant, p.series_id, p.time_ns) for p in firsts) == [
        ("acme", "series-1", NS),
        ("default", "series-1", NS),
        ("default", "series-2", NS),
    ]


def test_days_are_utc_days() -> None:
    midnight = int(datetime(2026, 11, 24, tzinfo=UTC).timestamp()) * 10**9
    assert days([midnight - 1, midnight, midnight + 86_399 * 10**9]) == {
        date(2026, 11, 23),
        date(2026, 11, 24),
    }
    # a time no timestamp holds names no day (its row is refused when built)
    assert days([midnight, 10**21, -(10**21)]) == {date(2026, 11, 24)}
    assert days([-1]) == {date(1969, 12, 31)}


def test_session_row_puts_each_value_in_its_column() -> None:
    row = dict(zip(SESSION_COLUMNS, session_row(_state(version=7)), strict=True))
    assert row["cost_usd"] == Decimal("0.024585")
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_creation_tokens"]) == (
        3600,
        13_500,
        900,
    )
    assert (row["context_tokens"], row["context_window"], row["context_model"]) == (
        6000,
        1_000_000,
        "claude-opus-4-8",
    )
    assert row["models"] == ["claude-haiku-4-5-20251001", "claude-opus-4-8"]
    assert row["state_version"] == 7
    assert row["last_seen_at"] - row["started_at"] == timedelta(seconds=1)
    assert (row["cost_source"], row["unpriced_requests"], row["cache_creation_1h_tokens"]) == (None, 0, 0)


def test_session_row_says_where_the_cost_comes_from() -> None:
    state = _state()
    state.cost_source, state.unpriced_requests = "mixed", 2
    state.tokens.cache_creation_1h = 400
    row = dict(zip(SESSION_COLUMNS, session_row(state), strict=True))
    assert (row["cost_source"], row["unpriced_requests"], row["cache_creation_1h_tokens"]) == (
        "mixed",
        2,
        400,
    )
    assert row["cache_creation_tokens"] == 900  # the 1-hour part is inside it


# --- latest state per session -----------------------------------------------------------------


@pytest.mark.parametrize("order", [[3, 1, 5, 2], [5, 3, 2, 1], [1, 2, 3, 5]])
def test_latest_states_keeps_the_highest_version(order: list[int]) -> None:
    states = [_state("a", v) for v in order] + [_state("b", 1), _state("a", 4, tenant="other")]
    latest = {(s.tenant, s.session_id): s.version for s in latest_states(states)}
    assert latest == {("default", "a"): 5, ("default", "b"): 1, ("other", "a"): 4}


def test_latest_states_of_nothing() -> None:
    assert latest_states([]) == []


# --- rollups: increments merged by minute, full values overwrite ------------------------------

MINUTE = NS - NS % 60_000_000_000


def _rollup(
    n: int,
    *,
    increment: bool = True,
    session_id: str = "s-1",
    model: str = "claude-opus-4-8",
    minute_ns: int = MINUTE,
    user_id: str | None = "u-1",
) -> Rollup:
    return Rollup(
        tenant="default",
        session_id=session_id,
        user_id=user_id,
        agent="claude_code",
        model=model,
        minute_ns=minute_ns,
        tokens=Tokens(input=n, output=2 * n, cache_read=3 * n, cache_creation=4 * n, reasoning=n // 2),
        cost_nanos=1000 * n,
        requests=n,
        errors=n % 2,
        increment=increment,
    )


def _values(r: Rollup) -> tuple[int, ...]:
    t = r.tokens
    return (
        t.input,
        t.output,
        t.cache_read,
        t.cache_creation,
        t.reasoning,
        r.cost_nanos,
        r.requests,
        r.errors,
    )


def _stored_after(stored: tuple[int, ...] | None, rollups: list[Rollup]) -> tuple[int, ...] | None:
    """What the database's upserts make of a minute holding ``stored``: a full value
    overwrites, an increment adds (to nothing: is the minute)."""
    for r in rollups:
        if r.increment and stored is not None:
            stored = tuple(a + b for a, b in zip(stored, _values(r), strict=True))
        else:
            stored = _values(r)
    return stored


def test_rollup_row_carries_whether_it_is_an_increment() -> None:
    assert (*ROLLUP_COLUMNS, "increment") == ROLLUP_STAGING_COLUMNS
    for increment in (True, False):
        row = dict(zip(ROLLUP_STAGING_COLUMNS, rollup_row(_rollup(3, increment=increment)), strict=True))
        assert row["increment"] is increment
        assert row["minute"] == timestamp(MINUTE)
        assert (row["input_tokens"], row["cost_usd"], row["requests"]) == (3, Decimal("0.000003"), 3)


def test_increments_of_one_minute_are_summed() -> None:
    first, second, third = _rollup(1), _rollup(10), _rollup(100, user_id=None)
    (merged,) = merge_rollups([first, second, third])
    assert merged.increment
    assert _values(merged) == (111, 222, 333, 444, 0 + 5 + 50, 111_000, 111, 1 + 0 + 0)
    assert merged.user_id == "u-1"  # a rollup without a user does not erase the one known
    # The inputs are left as they were.
    assert (_values(first), _values(second), _values(third)) == (
        _values(_rollup(1)),
        _values(_rollup(10)),
        _values(_rollup(100)),
    )


def test_increments_of_other_minutes_sessions_and_models_stay_apart() -> None:
    rollups = [
        _rollup(1),
        _rollup(2, minute_ns=MINUTE + 60_000_000_000),
        _rollup(4, session_id="s-2"),
        _rollup(8, model="claude-haiku-4-5"),
        _rollup(16),
    ]
    merged = {(r.session_id, r.model, r.minute_ns): r.requests for r in merge_rollups(rollups)}
    assert merged == {
        ("s-1", "claude-opus-4-8", MINUTE): 17,
        ("s-1", "claude-opus-4-8", MINUTE + 60_000_000_000): 2,
        ("s-2", "claude-opus-4-8", MINUTE): 4,
        ("s-1", "claude-haiku-4-5", MINUTE): 8,
    }


def test_legacy_full_values_overwrite_the_last_one_wins() -> None:
    # increment=False: each carries the minute's full value so far (rollups written before
    # increments existed); the last one is the minute.
    rollups = [_rollup(5, increment=False), _rollup(9, increment=False), _rollup(7, increment=False)]
    (merged,) = merge_rollups(rollups)
    assert merged is rollups[-1]
    assert not merged.increment


def test_increments_after_a_full_value_add_to_it_and_before_it_are_overwritten() -> None:
    (merged,) = merge_rollups([_rollup(1), _rollup(50, increment=False), _rollup(2), _rollup(3)])
    assert not merged.increment  # it overwrites what the minute held
    assert merged.requests == 55


def test_a_lone_rollup_is_returned_as_it_is() -> None:
    rollup = _rollup(3)
    assert merge_rollups([rollup]) == [rollup]
    assert merge_rollups([rollup])[0] is rollup  # its origin (for dead letters) stays known
    assert merge_rollups([]) == []


_ROLLUPS = st.lists(
    st.builds(
        _rollup,
        st.integers(min_value=0, max_value=10**6),
        increment=st.booleans(),
        session_id=st.sampled_from(["s-1", "s-2"]),
        minute_ns=st.sampled_from([MINUTE, MINUTE + 60_000_000_000]),
    ),
    max_size=12,
)


@given(stored=st.none() | st.tuples(*[st.integers(0, 10**6)] * 8), rollups=_ROLLUPS)
def test_merging_first_stores_what_applying_one_by_one_would(
    stored: tuple[int, ...] | None, rollups: list[Rollup]
) -> None:
    """One upsert of the merged rollup per minute == one upsert per rollup, in order."""
    merged = {(r.session_id, r.minute_ns): r for r in merge_rollups(rollups)}
    assert len(merged) == len(merge_rollups(rollups))
    for key in {(r.session_id, r.minute_ns) for r in rollups}:
        of_key = [r for r in rollups if (r.session_id, r.minute_ns) == key]
        assert _stored_after(stored, [merged[key]]) == _stored_after(stored, of_key)
