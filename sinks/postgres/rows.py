"""Pure: canonical records to the rows of the PostgreSQL tables (column order = COPY order).

Values PostgreSQL would refuse for reasons of encoding (NUL characters) are cleaned here;
values it refuses for their size (a token count past bigint, a cost past numeric(20, 9), a time
outside any partition) are left for the database to refuse, and the sink dead-letters them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from tokentide.records import Event, Point, Rollup, SessionSignal, SessionState, replace, to_builtins

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


def event_row(e: Event) -> tuple[Any, ...]:
    t = e.tokens
    return (
        e.tenant,
        text(e.session_id),
        text(e.event_id),
        timestamp(e.time_ns),
        e.agent,
        text(e.name),
        e.sequence,
        text(e.user_id),
        text(e.model),
        text(e.query_source),
        text(e.request_id),
        e.duration_ms,
        t.input if t else None,
        t.output if t else None,
        t.cache_read if t else None,
        t.cache_creation if t else None,
        t.reasoning if t else None,
        usd(e.cost_nanos),
        e.cost_source,
        jsonb(e.attributes),
        str(e.kind),
        e.main_context,
    )


def point_row(p: Point) -> tuple[Any, ...]:
    count = p.attributes.get("histogram.count")
    return (
        p.tenant,
        text(p.series_id),
        timestamp(p.time_ns),
        timestamp(p.start_time_ns),
        p.value,
        p.temporality,
        None if count is None else int(count),
    )


def series_row(p: Point) -> tuple[Any, ...]:
    """The catalog row of ``p``'s series (what every point of the series shares)."""
    attributes = {k: v for k, v in p.attributes.items() if k not in POINT_ATTRIBUTES}
    return (
        p.tenant,
        text(p.series_id),
        text(p.session_id),
        p.agent,
        text(p.name),
        text(p.unit),
        jsonb(attributes),
        timestamp(p.time_ns),
    )


def first_points(points: list[Point]) -> list[Point]:
    """One point per series (the earliest): the catalog needs each series once per batch."""
    first: dict[tuple[str, str], Point] = {}
    for point in points:
        key = (point.tenant, point.series_id)
        seen = first.get(key)
        if seen is None or point.time_ns < seen.time_ns:
            first[key] = point
    return list(first.values())


def days(times_ns: Iterable[int]) -> set[date]:
    """The UTC days of ``times_ns``: the daily partitions a batch writes into."""
    return {timestamp(ns).date() for ns in times_ns}


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
