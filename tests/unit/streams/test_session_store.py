"""The session store: a batch's changed states are read back from memory and written once, each
with its own partition's event current (faust's table picks the partition by it)."""

from __future__ import annotations

from typing import Any, cast

from faust.streams import current_event
from faust.types import EventT

from streams.app import SessionStore
from streams.state import StoredSession
from tokentide.records import SessionState


class RecordingTable(dict[bytes, bytes]):
    """A dict that remembers which event was current at each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[bytes, Any]] = []

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.writes.append((key, current_event()))
        super().__setitem__(key, value)


class _Event:
    def __init__(self, partition: int) -> None:
        self.partition = partition


def FakeEvent(partition: int) -> EventT[bytes]:  # noqa: N802 (stands in for a class)
    """Only its identity matters here: the store hands it back as the current event."""
    return cast("EventT[bytes]", _Event(partition))


def stored(session_id: str, version: int) -> StoredSession:
    state = SessionState(
        tenant="default", session_id=session_id, agent="claude_code", started_at_ns=0, last_seen_at_ns=0
    )
    state.version = version
    return StoredSession(state=state)


def test_changed_states_are_read_back_before_the_flush_and_written_once_at_it() -> None:
    table = RecordingTable()
    store = SessionStore(table, max_cached=0)
    p0, p1 = FakeEvent(0), FakeEvent(1)
    store.put(b"default/a", stored("a", 1), p0)
    store.put(b"default/a", stored("a", 2), p0)
    store.put(b"default/b", stored("b", 1), p1)

    assert table == {}  # nothing written before the batch ends
    got = store.get(b"default/a")
    assert got is not None
    assert got.state.version == 2

    store.flush()
    assert table.writes == [(b"default/a", p0), (b"default/b", p1)]
    assert StoredSession.from_bytes(table[b"default/a"]).state.version == 2
    store.flush()
    assert len(table.writes) == 2  # a flush writes only what changed since the last one


def test_forget_drops_unflushed_states_so_a_failed_batch_stores_nothing() -> None:
    table = RecordingTable()
    store = SessionStore(table, max_cached=10)
    store.put(b"default/a", stored("a", 1), FakeEvent(0))
    store.forget()
    store.flush()
    assert table == {}
    assert store.get(b"default/a") is None


def test_reads_outside_a_batch_come_from_the_table() -> None:
    table = RecordingTable()
    table[b"default/a"] = stored("a", 7).to_bytes()
    store = SessionStore(table, max_cached=10)
    got = store.get(b"default/a")
    assert got is not None
    assert got.state.version == 7
