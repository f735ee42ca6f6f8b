"""Raw offsets applied strictly in order, whatever the consumer delivers (decision 13).

faust 0.15.3 can hand the agent a raw partition from the wrong position after a rebalance or
a restart (its recovery resumes fetching before it seeks to the committed offsets, faust#596)
and can then commit past offsets it never delivered (``Consumer._add_gap``). Counting on its
committed offsets would lose those messages. So the stage keeps its own truth, in the
changelogged ``sessions`` table next to the states it describes:

- per raw partition, the *ledger*: the next offset to apply (every offset below it has been
  applied). It is written after the session states of the message it follows, into the same
  changelog partition, so a recovered ledger never runs ahead of the recovered states; it may
  lag behind them (it is written at most every ``write_every_s``), which only means replays.
- per partition in this assignment, a *cursor*: the next offset to apply. It starts at the
  ledger (or the partition's first offset when there is none). A message at or below the
  cursor is processed: the sessions' own applied offsets (:mod:`streams.state`) turn one that
  was applied before into a replay. A message above it means the consumer skipped the offsets
  in between: the agent reads those itself, straight from Kafka, and applies them first.

Seeking faust's consumer back does not work: its fetch loop drops every message at or below
the highest offset it handed out, and keeps handing out the batch it holds after the seek.

Everything here is pure; ``streams.app`` does the reads, writes and fetches it asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

#: Table keys of the ledger start with a byte no session key (``tenant/session``) starts with.
LEDGER_KEY_PREFIX = b"\x00ledger/"


def ledger_key(topic: str, partition: int) -> bytes:
    return LEDGER_KEY_PREFIX + f"{topic}/{partition}".encode()


def encode_offset(offset: int) -> bytes:
    return str(offset).encode()


def decode_offset(value: bytes | None) -> int | None:
    return None if value is None else int(value)


TP = tuple[str, int]


@dataclass(slots=True)
class _Partition:
    cursor: int  # next offset to apply; every one below it was applied
    ledger: int  # the ledger as last written (or read)
    written_at: float  # when the ledger was last written (monotonic seconds)


class OffsetGate:
    """Admits raw messages partition by partition in offset order, and says when to write the ledger.

    ``start`` must be called for a partition before its first ``missing`` in an assignment;
    ``reset`` forgets every partition (call it whenever partitions are assigned or revoked).
    """

    def __init__(self, write_every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.write_every_s = write_every_s
        self._clock = clock
        self._partitions: dict[TP, _Partition] = {}

    def reset(self) -> None:
        self._partitions.clear()

    def started(self, tp: TP) -> bool:
        return tp in self._partitions

    def start(self, tp: TP, ledger: int | None, first_offset: int) -> None:
        """Begin accepting ``tp`` at its ledger, or at ``first_offset`` (the partition's oldest
        offset) when there is no ledger yet or retention deleted what the ledger points to."""
        cursor = first_offset if ledger is None else max(ledger, first_offset)
        # A never-written ledger is written at the first applied message.
        written_at = self._clock() - self.write_every_s if ledger is None else self._clock()
        self._partitions[tp] = _Partition(cursor=cursor, ledger=cursor, written_at=written_at)

    def cursor(self, tp: TP) -> int:
        return self._partitions[tp].cursor

    def cursors(self) -> dict[TP, int]:
        """Every started partition's cursor: all offsets below it are applied."""
        return {tp: part.cursor for tp, part in self._partitions.items()}

    def missing(self, tp: TP, offset: int) -> range:
        """The offsets of ``tp`` to apply before the message at ``offset``: those the consumer
        skipped (empty when it delivered in order, or redelivered something already applied)."""
        return range(self._partitions[tp].cursor, offset)

    def move_to(self, tp: TP, offset: int) -> None:
        """``offset`` is the oldest there is: what lay before it was deleted unapplied."""
        part = self._partitions[tp]
        part.cursor = max(part.cursor, offset)

    def processed(self, tp: TP, offset: int) -> int | None:
        """Record that ``offset`` was applied or replayed; returns the ledger value to write
        now (after the message's session states), or None when it is not yet due."""
        part = self._partitions[tp]
        if offset == part.cursor:
            part.cursor = offset + 1
        now = self._clock()
        if part.cursor > part.ledger and now - part.written_at >= self.write_every_s:
            part.ledger = part.cursor
            part.written_at = now
            return part.ledger
        return None
