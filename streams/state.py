"""Pure per-session accounting: apply one message's records to a session's stored state.

The rules written in code (ARCHITECTURE.md, "One source of truth per quantity"):

- Tokens, cost and API request counts come from per-request events only (Claude Code
  ``api_request``). The agent's token and cost *metrics* aggregate the same requests; they
  are stored as points but never added to the totals, so nothing is counted twice.
- An event is applied once: its natural ``event_id`` is remembered in a bounded window per
  session, so a re-sent export changes nothing.
- A raw message is applied once: the highest applied offset per input topic is stored with
  the state, so a message Kafka redelivers after a crash or rebalance changes nothing.
- Context: the session's main conversation only (not title generation, compaction or
  subagent calls); the window is 1M once the long-context variant was seen, else 200k.
"""

from __future__ import annotations

from pydantic import Field

from streams.normalise.base import SessionRecords
from tokentide.records import (
    LONG_CONTEXT_WINDOW,
    EventKind,
    Record,
    SessionState,
)


class StoredSession(Record):
    """What the streams stage keeps per session (its Faust table value)."""

    state: SessionState
    #: Recent event ids, oldest first, at most ``dedup_window`` of them.
    seen: list[str] = Field(default_factory=list)
    #: Highest applied offset per input topic (a session lives in one partition of each).
    offsets: dict[str, int] = Field(default_factory=dict)
    #: Event time of the request that set the current context position.
    context_time_ns: int = 0


def already_applied(stored: StoredSession, topic: str, offset: int) -> bool:
    """Whether the message at ``offset`` of ``topic`` was applied to ``stored`` before."""
    return offset <= stored.offsets.get(topic, -1)


def apply(
    stored: StoredSession | None,
    records: SessionRecords,
    *,
    tenant: str,
    topic: str,
    offset: int,
    dedup_window: int,
) -> StoredSession:
    """Return the session's state after ``records`` (read from ``topic`` at ``offset``).

    The caller must first check :func:`already_applied`. ``stored`` is updated in place.
    """
    times = [e.time_ns for e in records.events] + [p.time_ns for p in records.points]
    first, last = (min(times), max(times)) if times else (0, 0)
    if stored is None:
        stored = StoredSession(
            state=SessionState(
                tenant=tenant,
                session_id=records.session_id,
                agent=records.agent,
                service_name=records.service_name,
                user_id=records.user_id,
                started_at_ns=first,
                last_seen_at_ns=last,
            )
        )
    state = stored.state
    if times:
        state.started_at_ns = min(state.started_at_ns, first) if state.started_at_ns else first
        state.last_seen_at_ns = max(state.last_seen_at_ns, last)
    state.user_id = state.user_id or records.user_id
    state.service_name = state.service_name or records.service_name
    if records.long_context:
        state.context.window = LONG_CONTEXT_WINDOW

    seen = set(stored.seen)
    fresh: list[str] = []
    for event in records.events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        fresh.append(event.event_id)
        state.events += 1
        if event.model and event.model not in state.models:
            state.models.append(event.model)
        if event.kind is EventKind.API_ERROR:
            state.api_errors += 1
        if event.kind is not EventKind.USAGE or event.tokens is None:
            continue
        state.api_requests += 1
        state.tokens.add(event.tokens)
        state.cost_nanos += event.cost_nanos or 0
        if event.main_context is not False and event.time_ns >= stored.context_time_ns:
            stored.context_time_ns = event.time_ns
            state.context.tokens = event.tokens.context
            state.context.model = event.model

    stored.seen = (stored.seen + fresh)[-dedup_window:]
    stored.offsets[topic] = offset
    state.version += 1
    return stored
