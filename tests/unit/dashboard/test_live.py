"""The event stream's positions, pages and frames (pure: dashboard/live.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.live import Position, Start, frame, merge


def row(xid: int, pos: int, **fields: Any) -> dict[str, Any]:
    return {"position_xid": str(xid), "position_pos": pos, **fields}


def test_a_position_round_trips_through_its_event_id() -> None:
    at = Position(2**40 + 7, 123_456_789)
    assert at.event_id() == f"{2**40 + 7}-123456789"
    assert Position.parse(at.event_id()) == at


@pytest.mark.parametrize(
    "last_event_id",
    [
        None,
        "",
        "garbage",
        "1.x",
        "-5.3",
        "1732428062000000.1732428061000000",  # the former <micros>.<micros> format
        "12-",
        "-12",
        "1-2-3",
        "1²-3",
    ],
)
def test_a_missing_former_or_foreign_last_event_id_means_from_now_on(last_event_id: str | None) -> None:
    assert Position.parse(last_event_id) is None


def test_positions_order_by_transaction_then_sequence() -> None:
    """A later transaction's rows come after an earlier one's, whatever their sequence numbers
    (a sequence number is taken at insert time, not at commit)."""
    assert Position(100, 900) < Position(101, 5) < Position(101, 6)


def test_a_stream_from_now_skips_what_had_committed_when_it_started() -> None:
    """Started at a snapshot where 12 and 15 were running and 20 was the next id: 13, 14 and
    16 to 19 had committed (skipped); 12 and 15 commit later, as does everything from 20 on
    (sent). Below 12 (the horizon) nothing is read at all."""
    begin = Start(Position(12, 0), next_xid=20, running=frozenset({12, 15}))
    sent = [x for x in range(12, 23) if not begin.committed_before(Position(x, 1))]
    assert sent == [12, 15, 20, 21, 22]
    assert not Start(Position(12, 5)).committed_before(Position(13, 1))  # resumed: nothing skipped


def test_a_page_merges_both_tables_in_position_order_and_moves_to_the_horizon() -> None:
    sessions = [row(10, 1, session_id="a"), row(12, 7, session_id="b")]
    signals = [row(10, 2, signal_id="x"), row(11, 3, signal_id="y")]
    page = merge(sessions, signals, after=Position(9, 0), horizon=20, limit=5)
    assert [(e, p) for e, p, _ in page.rows] == [
        ("session", Position(10, 1)),
        ("signal", Position(10, 2)),
        ("signal", Position(11, 3)),
        ("session", Position(12, 7)),
    ]
    # Nothing below the horizon is left unread: the next poll starts there.
    assert page.after == Position(20, 0)
    assert not page.full


def test_an_empty_page_still_moves_to_the_horizon_but_never_back() -> None:
    assert merge([], [], after=Position(9, 4), horizon=15).after == Position(15, 0)
    assert merge([], [], after=Position(15, 4), horizon=15).after == Position(15, 4)


def test_a_full_page_ends_at_the_last_row_it_is_sure_of() -> None:
    """Sessions filled their page at (12, 8): signals after it may be preceded by unread
    sessions, so they wait for the next poll, which starts at (12, 8)."""
    sessions = [row(10, 1), row(12, 8)]
    signals = [row(11, 5), row(13, 9)]
    page = merge(sessions, signals, after=Position(9, 0), horizon=30, limit=2)
    assert [p for _, p, _ in page.rows] == [Position(10, 1), Position(11, 5), Position(12, 8)]
    assert page.after == Position(12, 8)
    assert page.full


def test_two_full_pages_end_at_the_earlier_of_their_last_rows() -> None:
    page = merge([row(10, 1), row(14, 2)], [row(11, 3), row(12, 4)], Position(9, 0), horizon=30, limit=2)
    assert [p for _, p, _ in page.rows] == [Position(10, 1), Position(11, 3), Position(12, 4)]
    assert page.after == Position(12, 4)


@st.composite
def table_rows(draw: st.DrawFn) -> tuple[list[Position], list[Position]]:
    """Distinct positions split between the two tables, each table sorted."""
    positions = draw(
        st.lists(st.tuples(st.integers(1, 30), st.integers(1, 10_000)), unique_by=lambda p: p[1], max_size=40)
    )
    tables = draw(st.lists(st.booleans(), min_size=len(positions), max_size=len(positions)))
    sessions = sorted(Position(x, p) for (x, p), t in zip(positions, tables, strict=True) if t)
    signals = sorted(Position(x, p) for (x, p), t in zip(positions, tables, strict=True) if not t)
    return sessions, signals


@given(table_rows(), st.integers(1, 6))
def test_paging_reads_every_row_once_in_order(
    rows: tuple[list[Position], list[Position]], limit: int
) -> None:
    """Polling page by page, as live.events does, yields every row of both tables exactly once,
    in position order, whatever the page size."""
    sessions, signals = rows
    horizon = 31  # every drawn transaction has ended
    after = Position(0, 0)
    seen: list[Position] = []
    for _ in range(len(sessions) + len(signals) + 2):
        page = merge(
            [row(p.xid, p.pos) for p in sessions if p > after][:limit],
            [row(p.xid, p.pos) for p in signals if p > after][:limit],
            after,
            horizon,
            limit,
        )
        seen += [p for _, p, _ in page.rows]
        after = page.after
        if not page.full:
            break
    assert seen == sorted(sessions + signals)


def test_a_frame_is_one_sse_event() -> None:
    text = frame("signal", {"kind": "context_warning", "ratio": 0.81}, "12-34")
    lines = text.split("\n")
    assert lines[:2] == ["id: 12-34", "event: signal"]
    assert json.loads(lines[2].removeprefix("data: ")) == {"kind": "context_warning", "ratio": 0.81}
    assert text.endswith("\n\n")
    assert text.count("\n\n") == 1
