"""The offset gate: raw messages applied strictly in offset order, and a ledger that never runs ahead."""

from __future__ import annotations

import pytest

from streams.ledger import LEDGER_KEY_PREFIX, OffsetGate, decode_offset, encode_offset, ledger_key
from tokentide.topics import session_key

TP = ("otlp.raw.logs", 3)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def gate_at(ledger: int | None, first_offset: int = 0) -> tuple[OffsetGate, Clock]:
    clock = Clock()
    gate = OffsetGate(write_every_s=1.0, clock=clock)
    gate.start(TP, ledger, first_offset)
    return gate, clock


def test_in_order_delivery_misses_nothing() -> None:
    gate, _ = gate_at(10)
    for offset in range(10, 20):
        assert not gate.missing(TP, offset)
        gate.processed(TP, offset)
    assert gate.cursor(TP) == 20


def test_a_jump_ahead_names_exactly_the_skipped_offsets() -> None:
    gate, _ = gate_at(10)
    gate.processed(TP, 10)
    assert gate.missing(TP, 15) == range(11, 15)


def test_the_consumer_starting_past_the_ledger_is_a_jump_too() -> None:
    """A committed offset ahead of the ledger (the ledger lags, or faust committed past a gap)."""
    gate, _ = gate_at(10)
    assert list(gate.missing(TP, 13)) == [10, 11, 12]


def test_redeliveries_below_the_cursor_are_processed_without_moving_it() -> None:
    """They are replays: the sessions' applied offsets stop them from counting twice."""
    gate, _ = gate_at(10)
    for offset in (10, 11, 12):
        gate.processed(TP, offset)
    assert not gate.missing(TP, 5)
    gate.processed(TP, 5)
    assert gate.cursor(TP) == 13


def test_no_ledger_starts_at_the_partitions_first_offset() -> None:
    gate, _ = gate_at(None, first_offset=7)
    assert gate.cursor(TP) == 7
    assert gate.missing(TP, 9) == range(7, 9)


def test_a_ledger_behind_retention_starts_at_the_first_offset_that_exists() -> None:
    gate, _ = gate_at(3, first_offset=7)
    assert gate.cursor(TP) == 7


def test_move_to_skips_what_retention_deleted_but_never_goes_back() -> None:
    gate, _ = gate_at(10)
    gate.move_to(TP, 14)
    assert gate.cursor(TP) == 14
    gate.move_to(TP, 12)
    assert gate.cursor(TP) == 14


def test_the_first_applied_message_writes_a_missing_ledger_at_once() -> None:
    gate, _ = gate_at(None)
    assert gate.processed(TP, 0) == 1


def test_the_ledger_is_written_at_most_every_interval_and_never_ahead_of_the_cursor() -> None:
    gate, clock = gate_at(10)
    assert gate.processed(TP, 10) is None  # read just now: not due
    clock.now += 0.5
    assert gate.processed(TP, 11) is None
    clock.now += 0.5
    assert gate.processed(TP, 12) == 13
    clock.now += 5
    assert gate.processed(TP, 4) is None  # a replay moves nothing: nothing new to write
    assert gate.processed(TP, 13) == 14


def test_an_out_of_order_processed_offset_does_not_move_the_cursor() -> None:
    """Only the cursor's own offset advances it: the ledger can only cover applied offsets."""
    gate, clock = gate_at(10)
    clock.now += 5
    assert gate.processed(TP, 12) is None
    assert gate.cursor(TP) == 10


def test_reset_forgets_every_partition() -> None:
    gate, _ = gate_at(10)
    assert gate.started(TP)
    gate.reset()
    assert not gate.started(TP)
    with pytest.raises(KeyError):
        gate.missing(TP, 10)


def test_ledger_keys_cannot_collide_with_session_keys() -> None:
    key = ledger_key("otlp.raw.logs", 3)
    assert key.startswith(LEDGER_KEY_PREFIX)
    assert not session_key("default", "\x00ledger").encode().startswith(LEDGER_KEY_PREFIX[:1])
    assert ledger_key("otlp.raw.logs", 3) != ledger_key("otlp.raw.metrics", 3)
    assert ledger_key("otlp.raw.logs", 1) != ledger_key("otlp.raw.logs", 13)


@pytest.mark.parametrize("offset", [0, 1, 2**40])
def test_offsets_round_trip(offset: int) -> None:
    assert decode_offset(encode_offset(offset)) == offset


def test_no_stored_ledger_decodes_to_none() -> None:
    assert decode_offset(None) is None
