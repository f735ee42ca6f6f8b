"""A batch's outputs merged per session: the same records, in order, and the session's last state."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from streams.processor import Output, OutputMerger
from tokentide.records import Rollup, RollupBatch


def _per_message(pipeline: Any, captures: list[Any]) -> list[Output]:
    outputs: list[Output] = []
    for cap in captures:
        outputs.extend(pipeline.send(cap.signal, cap.raw))
    return outputs


def _records(outputs: list[Output]) -> dict[bytes, dict[str, list[Any]]]:
    by_key: dict[bytes, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for out in outputs:
        records = by_key[out.key]
        records["events"] += out.events.events if out.events else []
        records["points"] += out.points.points if out.points else []
        records["signals"] += out.signals.signals if out.signals else []
    return by_key


def test_merged_outputs_carry_every_record_in_order_and_the_last_state(
    capture_case: str, make_pipeline: Callable[..., Any], streamed_of: Callable[[str], list[Any]]
) -> None:
    captures = streamed_of(capture_case)
    separate = _per_message(make_pipeline(), captures)
    merger = OutputMerger()
    for out in _per_message(make_pipeline(), captures):
        merger.add(out)
    merged = merger.drain()

    assert len(merged) == len({out.key for out in separate})  # one output per session
    assert _records(merged) == _records(separate)
    last_state = {out.key: out.state for out in separate}
    assert {out.key: out.state for out in merged} == last_state
    assert len(merger) == 0
    assert merger.drain() == []


def _rollup(minute: int, requests: int) -> Rollup:
    return Rollup(
        tenant="t",
        session_id="s",
        agent="claude_code",
        model="m",
        minute_ns=minute,
        requests=requests,
        cost_nanos=10 * requests,
        increment=True,
    )


def test_rollup_increments_of_each_minute_are_summed(
    make_pipeline: Callable[..., Any], streamed_of: Callable[[str], list[Any]], capture_case: str
) -> None:
    """Rollups carry what each message added to a minute: a batch's are summed per minute."""
    outputs = _per_message(make_pipeline(), streamed_of(capture_case))
    key, state = outputs[-1].key, outputs[-1].state

    merger = OutputMerger()
    for rollups in ([_rollup(1, 1)], [_rollup(1, 2), _rollup(2, 1)], [_rollup(1, 3)]):
        merger.add(
            Output(key=key, events=None, points=None, state=state, rollups=RollupBatch(rollups=rollups))
        )
    (out,) = merger.drain()
    assert out.rollups is not None
    assert sorted((r.minute_ns, r.requests, r.cost_nanos) for r in out.rollups.rollups) == [
        (1, 6, 60),
        (2, 1, 10),
    ]
    assert all(r.increment for r in out.rollups.rollups)


def test_long_batches_are_cut_each_piece_with_the_last_state(
    make_pipeline: Callable[..., Any], streamed_of: Callable[[str], list[Any]], capture_case: str
) -> None:
    captures = streamed_of(capture_case)
    separate = _per_message(make_pipeline(), captures)
    merger = OutputMerger(max_records=2)
    for out in separate:
        merger.add(out)
    merged = merger.drain()

    assert all(len(o.events.events) <= 2 for o in merged if o.events)
    assert all(len(o.points.points) <= 2 for o in merged if o.points)
    assert _records(merged) == _records(separate)
    last_state = {out.key: out.state for out in separate}
    assert all(o.state == last_state[o.key] for o in merged)
    # signals and rollups ride on the last piece only, once
    assert sum(len(o.signals.signals) for o in merged if o.signals) == sum(
        len(o.signals.signals) for o in separate if o.signals
    )
