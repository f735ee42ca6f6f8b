"""How ingest workers tell each other they are ready (ingest.workers.Readiness), and when a
starting worker waits to be ready before it listens (ingest.runtime.Runtime.start)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ingest import runtime as runtime_module
from ingest.workers import READY_DIR_ENV, WORKER_COUNT_ENV, WORKER_INDEX_ENV, Readiness


def worker(monkeypatch: pytest.MonkeyPatch, ready_dir: Path, index: int, count: int = 3) -> Readiness:
    monkeypatch.setenv(READY_DIR_ENV, str(ready_dir))
    monkeypatch.setenv(WORKER_COUNT_ENV, str(count))
    monkeypatch.setenv(WORKER_INDEX_ENV, str(index))
    return Readiness()


def test_all_ready_only_when_every_worker_said_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for index in range(3):
        assert not worker(monkeypatch, tmp_path, 0).all_ready()
        worker(monkeypatch, tmp_path, index).report(True)
    assert worker(monkeypatch, tmp_path, 0).all_ready()
    worker(monkeypatch, tmp_path, 1).report(False)
    assert not worker(monkeypatch, tmp_path, 2).all_ready()


def test_others_ready_ignores_the_worker_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = worker(monkeypatch, tmp_path, 0)
    assert not first.others_ready()  # the first start: nobody serves yet
    first.report(True)
    assert not worker(monkeypatch, tmp_path, 0).others_ready()
    assert worker(monkeypatch, tmp_path, 1).others_ready()
    first.report(False)
    assert not worker(monkeypatch, tmp_path, 1).others_ready()
    # A dead worker's file is removed by the supervisor: not ready.
    worker(monkeypatch, tmp_path, 2).report(True)
    (tmp_path / "2").unlink()
    assert not worker(monkeypatch, tmp_path, 1).others_ready()


class _Part:
    def __init__(self, ready_after: int | None) -> None:
        self.calls = 0
        self._ready_after = ready_after

    async def start(self) -> None:
        return None

    @property
    def ready(self) -> bool:
        self.calls += 1
        return self._ready_after is not None and self.calls > self._ready_after


def _runtime(publisher: _Part, grace_s: float = 15.0) -> runtime_module.Runtime:
    rt = runtime_module.Runtime.__new__(runtime_module.Runtime)
    rt.settings = SimpleNamespace(shutdown_grace_s=grace_s)  # type: ignore[assignment]
    rt.publisher = publisher  # type: ignore[assignment]
    rt.authenticator = _Part(0)  # type: ignore[assignment]
    rt.limiter = _Part(0)  # type: ignore[assignment]
    rt._sampler = None
    return rt


def _second_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, other_ready: bool) -> None:
    """This process as worker 1 of 2 (multiprocess mode), worker 0 ready or not."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(runtime_module.Runtime, "_sample_inflight", lambda self: asyncio.sleep(0))
    monkeypatch.setattr(runtime_module, "_READY_POLL_S", 0.001)
    (tmp_path / "ready").mkdir()
    worker(monkeypatch, tmp_path / "ready", 1, count=2)
    if other_ready:
        (tmp_path / "ready" / "0").write_text("1")


def _start_s(rt: runtime_module.Runtime) -> float:
    """How long ``rt.start()`` took, its sampler awaited too."""

    async def start() -> None:
        await rt.start()
        assert rt._sampler is not None
        await rt._sampler

    started = time.monotonic()
    asyncio.run(start())
    return time.monotonic() - started


@pytest.mark.parametrize(("others", "waits"), [(False, False), (True, True)])
def test_a_worker_waits_for_readiness_only_while_another_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, others: bool, waits: bool
) -> None:
    _second_worker(monkeypatch, tmp_path, other_ready=others)
    publisher = _Part(ready_after=5)
    _start_s(_runtime(publisher))
    assert (publisher.calls > 5) is waits, publisher.calls


@pytest.mark.parametrize(("wait_s", "grace_s", "before_kill_s"), [(0.05, 15.0, 5.0), (30.0, 0.0, 0.05)])
def test_the_wait_is_bounded_by_its_limit_and_by_the_grace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, wait_s: float, grace_s: float, before_kill_s: float
) -> None:
    """Never ready: the worker listens anyway after REPLACEMENT_READY_WAIT_S, or sooner after
    the grace plus part of KILL_AFTER_S (a SIGTERM during the wait takes effect only once it
    listens, and the supervisor kills a worker still there KILL_AFTER_S past the grace)."""
    _second_worker(monkeypatch, tmp_path, other_ready=True)
    monkeypatch.setattr(runtime_module, "REPLACEMENT_READY_WAIT_S", wait_s)
    monkeypatch.setattr(runtime_module, "_BEFORE_KILL_S", before_kill_s)
    publisher = _Part(ready_after=None)
    took = _start_s(_runtime(publisher, grace_s=grace_s))
    assert publisher.calls > 1  # it waited
    assert 0.04 <= took < 2.0, took  # about 0.05 s either way, not 30 s or 20 s
