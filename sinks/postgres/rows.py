"""Pure: canonical records to the rows of the PostgreSQL tables (column order = COPY order).

Values PostgreSQL would refuse for reasons of encoding (NUL characters) are cleaned here;
values it refuses for their size (a token count past bigint, a cost past numeric(20, 9), a time
outside any partition) are left for the database to refuse, and the sink dead-letters them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import msgspec

from tokentide.records import (
    CopyRow,
    CopyRows,
    Event,
    EventBatch,
    Point,
    PointBatch,
    Rollup,
    SessionSignal,
    SessionState,
    replace,
    to_builtins,
)

_B = TypeVar("_B", EventBatch, PointBatch)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENT_COLUMNS = (
    "tenant_id",
    "session_id",
    "event_id",
    "ts",
    "agent",
    "name",
    "seq",
    "user_id",
    "model",
    "query_source",
    "request_id",
    "duration_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_source",
    "attributes",
    "kind",
    "main_context",
)
POINT_COLUMNS = (
    "tenant_id",
    "series_id",
    "ts",
    "start_ts",
    "value",
    "temporality",
    "histogram_count",
)
SERIES_COLUMNS = (
    "tenant_id",
    "series_id",
    "session_id",
    "agent",
    "name",
    "unit",
    "attributes",
    "first_seen",
)
#: Point attributes that belong to the point, not to its series (a histogram's count).
POINT_ATTRIBUTES = ("histogram.count",)
SESSION_COLUMNS = (
    "tenant_id",
    "session_id",
    "agent",
    "service_name",
    "user_id",
    "started_at",
    "last_seen_at",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_usd",
    "api_requests",
    "api_errors",
    "events",
    "models",
    "context_tokens",
    "context_window",
    "context_model",
    "state_version",
    "attributes",
    "totals_source",
    "retries_exhausted",
    "prompts",
    "tool_calls",
    "tool_failures",
    "lines_added",
    "lines_removed",
    "commits",
    "pull_requests",
    "active_time_s",
    "context_growth",
    "context_interval_s",
    "context_requests_left",
    "context_minutes_left",
    "compactions",
    "cost_source",
    "unpriced_requests",
    "cache_creation_1h_tokens",
    "context_window_source",
    "context_auto_compact_at",
    "by_source",
)
SIGNAL_COLUMNS = (
    "tenant_id",
    "session_id",
    "signal_id",
    "kind",
    "ts",
    "ratio",
    "tokens",
    "context_window",
    "requests_left",
    "minutes_left",
    "message",
)
ROLLUP_COLUMNS = (
    "tenant_id",
    "session_id",
    "model",
    "minute",
    "user_id",
    "agent",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "reasoning_tokens",
    "cost_usd",
    "requests",
    "errors",
)
#: What the sink COPYs into its rollup staging table: the table's columns, then whether the
#: row is an increment (added to the stored minute) or a full value (overwriting it).
ROLLUP_STAGING_COLUMNS = (*ROLLUP_COLUMNS, "increment")


def timestamp(ns: int) -> datetime:
    """Nanoseconds since the epoch to an exact (microsecond) UTC timestamp."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def usd(nanos: int | None) -> Decimal | None:
    return None if nanos is None else Decimal(nanos).scaleb(-9)


def text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL characters; agents' strings occasionally do."""
    return None if value is None else value.replace("\x00", "")


#: Anything JSON has no type for is written as its text; NaN and infinities as null (jsonb
#: has no such numbers).
_JSON = msgspec.json.Encoder(enc_hook=str)


def jsonb(value: dict[str, Any] | list[Any]) -> str:
    """JSON text for a jsonb column; NUL characters (which jsonb refuses) are removed."""
    encoded = _JSON.encode(value).decode()
    if "\\u0000" not in encoded:
        return encoded
    return _JSON.encode(_without_nul(value)).decode()


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_without_nul(v) for v in value]
    return value


# --- COPY text: the events, points and series rows, built once (decision 44) -----------------
#
# PostgreSQL's COPY text format: columns separated by tabs, ``\\N`` for null, and in a value a
# backslash, tab, newline or carriage return escaped by a backslash. The stream stage builds
# these lines for the messages it writes (``CopyRows``); the sink forwards them, and builds the
# same lines itself only for messages without them (an older producer, another layout).

#: Bump when a column's text form changes; a change of the columns changes the layout by itself.
_TEXT_FORM = 1


def layout(columns: tuple[str, ...]) -> int:
    """The layout of a table's prepared rows: its columns and their text forms."""
    return zlib.crc32(f"{_TEXT_FORM}:{','.join(columns)}".encode())


_NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": None})


def _t(value: str | None) -> str:
    """A text value (NUL characters dropped, as :func:`text`)."""
    if value is None:
        return _NULL
    # Tab, newline, carriage return and NUL are not printable: the common case is two scans.
    if "\\" not in value and value.isprintable():
        return value
    return value.translate(_ESCAPES)


def _n(value: float | None) -> str:
    """A number: ``repr`` is exact for floats (PostgreSQL reads ``inf`` and ``nan`` too)."""
    return _NULL if value is None else repr(value)


def _b(value: bool | None) -> str:
    return _NULL if value is None else ("t" if value else "f")


def _j(value: dict[str, Any] | list[Any]) -> str:
    """jsonb: JSON escapes every control character, so only its backslashes need escaping."""
    encoded = jsonb(value)
    return encoded.replace("\\", "\\\\") if "\\" in encoded else encoded


def _usd(nanos: int | None) -> str:
    """Nano-USD as an exact numeric literal (what :func:`usd` gives, as text)."""
    if nanos is None:
        return _NULL
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    return f"{'-' if nanos < 0 else ''}{whole}.{frac:09d}"


#: Seconds since the epoch -> ``YYYY-MM-DD HH:MM:SS`` (a batch's records share a few seconds).
_SECONDS: dict[int, str] = {}


def _ts(ns: int) -> str:
    """An exact (microsecond) UTC timestamp, as :func:`timestamp` gives; OverflowError for a
    time no timestamp holds."""
    seconds, micros = divmod(ns // 1000, 1_000_000)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat(" ")[:19]
    return f"{prefix}.{micros:06d}+00"


def event_text(e: Event) -> str:
    """The ``events`` row of ``e`` (:data:`EVENT_COLUMNS`) as a COPY text line."""
    t = e.tokens
    if t is None:
        usage = "\\N\t\\N\t\\N\t\\N\t\\N"
    else:
        usage = f"{t.input}\t{t.output}\t{t.cache_read}\t{t.cache_creation}\t{t.reasoning}"
    return (
        f"{_t(e.tenant)}\t{_t(e.session_id)}\t{_t(e.event_id)}\t{_ts(e.time_ns)}\t{_t(e.agent)}\t"
        f"{_t(e.name)}\t{_NULL if e.sequence is None else int(e.sequence)}\t{_t(e.user_id)}\t"
        f"{_t(e.model)}\t{_t(e.query_source)}\t{_t(e.request_id)}\t{_n(e.duration_ms)}\t{usage}\t"
        f"{_usd(e.cost_nanos)}\t{_t(e.cost_source)}\t{_j(e.attributes)}\t{_t(str(e.kind))}\t"
        f"{_b(e.main_context)}\n"
    )


def point_text(p: Point) -> str:
    """The ``metric_points`` row of ``p`` (:data:`POINT_COLUMNS`) as a COPY text line."""
    count = p.attributes.get("histogram.count")
    return (
        f"{_t(p.tenant)}\t{_t(p.series_id)}\t{_ts(p.time_ns)}\t{_ts(p.start_time_ns)}\t"
        f"{_n(float(p.value))}\t{int(p.temporality)}\t{_NULL if count is None else int(count)}\n"
    )


#: A series -> its catalog row up to ``first_seen``: the id stands for the metric's name,
#: attributes and resource identity, so the rest of the row is the same for every point.
_SERIES: dict[tuple[str, str, str, str, str, str], str] = {}


def series_text(p: Point) -> str:
    """The ``metric_series`` catalog row of ``p``'s series (what every point of the series
    shares; :data:`SERIES_COLUMNS`) as a COPY text line, ``first_seen`` ``p``'s time."""
    key = (p.tenant, p.series_id, p.session_id, p.agent, p.name, p.unit)
    prefix = _SERIES.get(key)
    if prefix is None:
        attributes = {k: v for k, v in p.attributes.items() if k not in POINT_ATTRIBUTES}
        prefix = (
            f"{_t(p.tenant)}\t{_t(p.series_id)}\t{_t(p.session_id)}\t{_t(p.agent)}\t{_t(p.name)}\t"
            f"{_t(p.unit)}\t{_j(attributes)}\t"
        )
        if len(_SERIES) >= 16_384:  # ~1 KB each
            _SERIES.clear()
        _SERIES[key] = prefix
    return f"{prefix}{_ts(p.time_ns)}\n"


def first_seen_at(line: str, ns: int) -> str:
    """A series line (:func:`series_text`) with ``first_seen`` (its last column) at ``ns``."""
    return line[: line.rindex("\t") + 1] + _ts(ns) + "\n"


def series_key(line: str) -> str:
    """The key of a series row (tenant and series id: the line up to its second tab)."""
    return line[: line.index("\t", line.index("\t") + 1)]


EVENTS_LAYOUT = layout(EVENT_COLUMNS)
POINTS_LAYOUT = layout((*POINT_COLUMNS, "|", *SERIES_COLUMNS))


def event_rows(events: list[Event]) -> CopyRows:
    """``events`` as prepared ``events`` rows (ValueError, OverflowError, TypeError for a
    record no row can be built for)."""
    return CopyRows(layout=EVENTS_LAYOUT, rows=[CopyRow(e.time_ns, event_text(e)) for e in events])


def point_rows(points: list[Point]) -> CopyRows:
    """``points`` as prepared ``metric_points`` rows, each series' first point (the earliest)
    with its ``metric_series`` row."""
    first: dict[tuple[str, str], int] = {}
    rows = []
    for i, p in enumerate(points):
        rows.append(CopyRow(p.time_ns, point_text(p)))
        key = (p.tenant, p.series_id)
        seen = first.get(key)
        if seen is None or p.time_ns < points[seen].time_ns:
            first[key] = i
    for i in first.values():
        rows[i].series = series_text(points[i])
    return CopyRows(layout=POINTS_LAYOUT, rows=rows)


def with_rows(batch: _B) -> _B:
    """``batch`` with its records prepared as rows (what the stream stage writes); as it is
    when a record has values no row can be built for (the sink then reads the records and
    refuses that one)."""
    try:
        if isinstance(batch, EventBatch):
            return replace(batch, copy=event_rows(batch.events))
        if isinstance(batch, PointBatch):
            return replace(batch, copy=point_rows(batch.points))
    except (ValueError, OverflowError, TypeError):
        pass
    return batch


def first_points(points: list[Point]) -> list[Point]:
    """One point per series (the earliest): the catalog needs each series once per batch."""
    first: dict[tuple[str, str], Point] = {}
    for point in points:
        key = (point.tenant, point.series_id)
        seen = first.get(key)
        if seen is None or point.time_ns < seen.time_ns:
            first[key] = point
    return list(first.values())


_NS_PER_DAY = 86_400 * 10**9
#: Days since the epoch -> the date (a batch's records share a day or two).
_DAYS: dict[int, date] = {}


def day_of(ns: int) -> date:
    """The UTC day of ``ns`` (OverflowError for a time no timestamp holds)."""
    number = ns // _NS_PER_DAY
    day = _DAYS.get(number)
    if day is None:
        if len(_DAYS) >= 4096:
            _DAYS.clear()
        day = _DAYS[number] = (_EPOCH + timedelta(days=number)).date()
    return day


def days(times_ns: Iterable[int]) -> set[date]:
    """The UTC days of ``times_ns``: the daily partitions a batch writes into (times no
    timestamp holds are left out: their rows are refused)."""
    out = set()
    for number in {ns // _NS_PER_DAY for ns in times_ns}:
        try:
            out.add(day_of(number * _NS_PER_DAY))
        except (OverflowError, ValueError):
            continue
    return out


def session_row(s: SessionState) -> tuple[Any, ...]:
    t = s.tokens
    return (
        s.tenant,
        text(s.session_id),
        s.agent,
        text(s.service_name),
        text(s.user_id),
        timestamp(s.started_at_ns),
        timestamp(s.last_seen_at_ns),
        t.input,
        t.output,
        t.cache_read,
        t.cache_creation,
        t.reasoning,
        usd(s.cost_nanos),
        s.api_requests,
        s.api_errors,
        s.events,
        [text(m) for m in s.models],
        s.context.tokens,
        s.context.window,
        text(s.context.model),
        s.version,
        jsonb(s.attributes),
        s.totals_source,
        s.retries_exhausted,
        s.prompts,
        s.tool_calls,
        s.tool_failures,
        s.lines_added,
        s.lines_removed,
        s.commits,
        s.pull_requests,
        s.active_time_s,
        s.context.growth,
        s.context.interval_s,
        s.context.requests_left,
        s.context.minutes_left,
        s.context.compactions,
        s.cost_source,
        s.unpriced_requests,
        t.cache_creation_1h,
        s.context.window_source,
        s.context.auto_compact_at,
        jsonb([to_builtins(source) for source in s.by_source]),
    )


def signal_row(g: SessionSignal) -> tuple[Any, ...]:
    return (
        g.tenant,
        text(g.session_id),
        g.signal_id,
        str(g.kind),
        timestamp(g.time_ns),
        g.ratio,
        g.tokens,
        g.window,
        g.requests_left,
        g.minutes_left,
        text(g.message),
    )


def rollup_row(r: Rollup) -> tuple[Any, ...]:
    """The staging row of ``r`` (:data:`ROLLUP_STAGING_COLUMNS`)."""
    t = r.tokens
    return (
        r.tenant,
        text(r.session_id),
        text(r.model),
        timestamp(r.minute_ns),
        text(r.user_id),
        r.agent,
        t.input,
        t.output,
        t.cache_read,
        t.cache_creation,
        t.reasoning,
        usd(r.cost_nanos),
        r.requests,
        r.errors,
        r.increment,
    )


def rollup_key(r: Rollup) -> tuple[str, str, str, int]:
    """The natural key of a rollup's row: (tenant, session, model, minute)."""
    return (r.tenant, r.session_id, r.model, r.minute_ns)


def merge_rollups(rollups: list[Rollup]) -> list[Rollup]:
    """One rollup per (tenant, session, model, minute), what applying ``rollups`` in order to
    that minute amounts to (an upsert may touch a row only once per statement):

    - increments of a key are summed (each is what one message added);
    - a full value (``increment=False``) replaces whatever came before it in the batch, and
      increments after it are added to it: the result is a full value.

    A key's only rollup is returned as it is (the same object); merged ones are new objects,
    the inputs are never changed. ``user_id`` and ``agent`` are the last known ones.
    """
    merged: dict[tuple[str, str, str, int], Rollup] = {}
    for rollup in rollups:
        key = rollup_key(rollup)
        before = merged.get(key)
        if before is None or not rollup.increment:
            merged[key] = rollup
            continue
        tokens = replace(before.tokens)
        tokens.add(rollup.tokens)
        merged[key] = replace(
            before,
            tokens=tokens,
            cost_nanos=before.cost_nanos + rollup.cost_nanos,
            requests=before.requests + rollup.requests,
            errors=before.errors + rollup.errors,
            user_id=rollup.user_id if rollup.user_id is not None else before.user_id,
            agent=rollup.agent,
        )
    return list(merged.values())


def latest_states(states: list[SessionState]) -> list[SessionState]:
    """One state per session, the highest version (an upsert may touch a row only once)."""
    best: dict[tuple[str, str], SessionState] = {}
    for state in states:
        key = (state.tenant, state.session_id)
        current = best.get(key)
        if current is None or state.version > current.version:
            best[key] = state
    return list(best.values())
