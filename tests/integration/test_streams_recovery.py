"""Fault tests of the stream stage: ``tokentide streams`` processes fed poison, killed at every
point of a batch, restarted, rebalanced (tests/support/stream_stage.py says what is checked).

After each: every normal session exact (tokens, cost, requests, context, one state version per
raw message), every expected signal exactly once, each event emitted once, rollups summing to
every session's totals, a dead letter per poison message with its reason, and the group's
committed offset at the end of every raw partition.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.services import unique
from tests.support.stream_stage import Stage, start, wait_for
from tokentide.kafka import TopicSpec, ensure_topics
from tokentide.settings import PAUSE_POINTS

pytestmark = pytest.mark.integration

_DEAD = re.compile(
    r'^tokentide_streams_dead_letters_total\{partition="\d+",reason="([^"]+)",topic="[^"]+"\} ([0-9.e+]+)$',
    re.M,
)


@pytest.fixture
def stage(bootstrap: str, tmp_path: Path) -> Iterator[Stage]:
    stage = Stage(bootstrap, tmp_path, unique("srec") + ".")
    yield stage
    for worker in stage.workers:
        worker.kill()


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(url)


async def dead_letter_metrics(url: str) -> dict[str, int]:
    text = (await get(url + "/metrics")).text
    out: dict[str, int] = {}
    for reason, value in _DEAD.findall(text):
        out[reason] = out.get(reason, 0) + int(float(value))
    return out


async def test_poison_records_never_stop_anything(stage: Stage) -> None:
    """Bad input of every kind, mixed into normal traffic on every partition: each bad record is
    dead-lettered with its reason and counted in /metrics, everything else counts exactly,
    /readyz stays 200 and every partition's committed offset reaches its end."""
    feed = await stage.feed("poison")
    worker = stage.worker("w1")
    await start(worker)
    await feed.send(8, with_poison=True)
    await stage.check(feed, "after poison mixed into the traffic")
    assert worker.ready(), worker.logs()
    assert await dead_letter_metrics(worker.url) == dict(feed.poison_sent)
    readiness = (await get(worker.url + "/readyz")).json()
    assert readiness["stalled"] == [] and readiness["restoring"] == []  # noqa: PT018
    # The stage goes on: more traffic after the poison counts too.
    await feed.send(2)
    await stage.check(feed, "after more traffic")


@pytest.mark.parametrize("point", PAUSE_POINTS)
async def test_kill_9_at_every_point_of_a_batch(stage: Stage, point: str) -> None:
    """A worker stopped at ``point`` of its third batch (a test-only pause) is SIGKILLed there,
    restarted on the same data directory, and the result is what a run without a crash gives."""
    feed = await stage.feed(f"kill-{point}")
    await feed.send(6, with_poison=True)
    worker = stage.worker(
        "w1", TOKENTIDE_STREAMS_TEST_PAUSE_AT=f"{point}:3", TOKENTIDE_BATCH_MAX_MESSAGES="20"
    )
    await start(worker)
    marker = worker.data_dir / "paused-at"
    await wait_for(marker.exists, f"w1 paused at {point}", 60, stage)
    worker.kill()
    stage.note(f"w1 killed at {point} of its third batch")
    marker.unlink()
    await feed.send(4)  # more arrives while it is dead
    restarted = stage.worker("w1-again")
    restarted.data_dir = worker.data_dir  # the same local state
    took = await start(restarted)
    stage.note(f"w1 ready again {took:.1f}s after its restart")
    await stage.check(feed, f"after kill -9 at {point} and a restart on the same data dir")


async def test_handover_to_a_fresh_data_dir_continues_from_the_changelog(stage: Stage) -> None:
    """A worker with only the changelog (a lost disk, or the partitions moving to another host)."""
    feed = await stage.feed("handover")
    first = stage.worker("w1")
    await start(first)
    await feed.send(5, with_poison=True)
    await stage.check(feed, "before the handover")
    assert first.terminate() in (0, -signal.SIGTERM), first.logs()
    fresh = stage.worker("w2")
    await start(fresh)
    await feed.send(3, with_poison=True)
    await stage.check(feed, "after a handover to a worker with a fresh data dir")


async def test_double_rebalance_with_two_workers_commits_everything(stage: Stage) -> None:
    """b joins under load (half the partitions move), a leaves (all move to b), a joins again
    (half move back), with traffic flowing throughout: exact results and full commits."""
    feed = await stage.feed("rebalance")
    a, b = stage.worker("a"), stage.worker("b")
    await start(a)
    await feed.send(3, with_poison=True)
    live = asyncio.create_task(feed.send(12, per_second=80))
    try:
        await start(b)
        assert a.terminate() in (0, -signal.SIGTERM), a.logs()
        again = stage.worker("a-again")
        again.data_dir = a.data_dir
        await start(again)
        await live
    finally:
        live.cancel()
    await feed.send(2)
    await stage.check(feed, "after a worker joined, the first left and came back")


async def test_a_partition_that_stops_advancing_turns_readyz_to_503(stage: Stage) -> None:
    """Health tells the truth: stuck (here: a test pause before a transaction) while its
    partitions have lag, the worker answers 503 and names the stalled partitions."""
    feed = await stage.feed("stall")
    worker = stage.worker(
        "w1", TOKENTIDE_STREAMS_TEST_PAUSE_AT="before_transaction:2", TOKENTIDE_STALL_AFTER_S="2"
    )
    await start(worker)
    await feed.send(3)
    await wait_for((worker.data_dir / "paused-at").exists, "w1 paused", 60, stage)
    await feed.send(1)  # lag behind the stuck batch

    def not_ready() -> bool:
        return httpx.get(worker.url + "/readyz", timeout=5).status_code == 503

    await wait_for(not_ready, "/readyz 503", 30, stage)
    body = (await get(worker.url + "/readyz")).json()
    assert body["stalled"], body
    assert (await get(worker.url + "/healthz")).status_code == 200  # alive, just stuck


async def test_a_changelog_with_another_partition_count_is_refused_at_start(stage: Stage) -> None:
    """A session's state must live in one partition: a changelog made for another partition
    count (TOKENTIDE_PARTITIONS changed) stops the worker at start with a clear error."""
    await stage.feed("topology")
    await ensure_topics(
        stage.bootstrap, [TopicSpec(f"{stage.app_id}-state-changelog", 2, {"cleanup.policy": "compact"})]
    )
    worker = stage.worker("w1")
    await asyncio.to_thread(worker.start)
    assert worker.process is not None
    code = await asyncio.to_thread(worker.process.wait, 60)
    assert code != 0
    log = worker.log_path.read_text()
    assert "TopologyError" in log
    assert "TOKENTIDE_PARTITIONS=4" in log
