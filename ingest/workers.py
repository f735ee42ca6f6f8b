"""One ingest process per core: a supervisor and ``TOKENTIDE_INGEST_WORKERS`` worker processes.

Python runs one request at a time per process, so a single ingest process uses one core. With
``N > 1`` workers, ``tokentide ingest`` becomes a small supervisor that forks ``N`` workers,
each a complete ingest (HTTP and gRPC server, Kafka producer, rate-limit leases), and keeps
them running. What holds across the workers:

- **Ports**: every worker binds the HTTP (and gRPC) port itself with ``SO_REUSEPORT``; the
  kernel spreads new connections over them by hash. Before forking, the supervisor binds each
  port *without* it and lets go: an address in use (another ingest included, whose sockets
  carry ``SO_REUSEPORT``) fails the start as a single process would, instead of silently
  sharing its traffic.
- **Acknowledged means in Kafka**: each worker answers only after Kafka acknowledged its own
  writes, so a worker that dies (even by SIGKILL) loses only requests it had not answered;
  their clients see the connection fail and retry. The supervisor starts a new worker in its
  place, which listens only once it is ready (ingest.runtime.Runtime.start), so the others take
  every connection meanwhile. One that exits with an error within 5 s of its start failed to
  start: then the whole process stops, exit status 1.
- **Limits**: the body size and header bounds are per request and connection, the same in
  every worker. The in-flight byte budget (``TOKENTIDE_MAX_INFLIGHT_BYTES``, the memory the
  whole process may hold) is split evenly, ``max_inflight_bytes // N`` per worker, which must
  leave room for one largest request (checked when the settings are read). Tenant rates
  outside open mode are leased from the shared buckets by each worker as a replica of its own
  (:mod:`ingest.leases`); in open mode the workers share one set of buckets in a file-backed
  shared memory (:class:`ingest.limits.SharedTokenBuckets`).
- **Metrics**: prometheus_client's multiprocess mode. Each worker writes its samples to
  memory-mapped files in a directory the supervisor owns (``PROMETHEUS_MULTIPROC_DIR``), and
  ``/metrics`` of any worker answers for all of them: counters and histograms summed over every
  worker that ever ran (a dead worker's counts stay, so rates do not jump back), gauges over
  the live ones (in-flight bytes summed, Kafka readiness the minimum). One scrape target, as
  before.
- **Health**: ``/healthz`` and ``/readyz`` are answered by whichever worker takes the
  connection; ``/readyz`` is 200 only while every worker is ready (:class:`Readiness`).
- **Shutdown**: SIGTERM (or SIGINT) to the supervisor goes to every worker; each stops
  accepting, finishes its requests within ``TOKENTIDE_SHUTDOWN_GRACE_S`` and flushes its
  producer; the supervisor exits when all have, killing any still there 10 s after the grace.
  A worker whose supervisor dies is sent SIGTERM by the kernel (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

from tokentide.settings import IngestSettings

log = logging.getLogger("tokentide.ingest.workers")

#: A worker that exits with an error this soon after it was started failed to start (bad
#: settings, a port it cannot bind): the supervisor stops. One killed by a signal is replaced.
STARTUP_S = 5.0
#: Extra time past the grace before a worker still running at shutdown is killed.
KILL_AFTER_S = 10.0
_PR_SET_PDEATHSIG = 1
#: The file of the open-mode rate buckets the workers share (ingest.limits.SharedTokenBuckets).
SHARED_BUCKETS_ENV = "TOKENTIDE_INGEST_SHARED_BUCKETS"
#: Where each worker says whether it is ready (a file per worker index), and how many there are.
READY_DIR_ENV = "TOKENTIDE_INGEST_READY_DIR"
WORKER_COUNT_ENV = "TOKENTIDE_INGEST_WORKER_COUNT"
WORKER_INDEX_ENV = "TOKENTIDE_INGEST_WORKER_INDEX"


class Readiness:
    """Ready only when every worker is: each worker writes its own state to a file of its
    index (when it changes) and ``/readyz``, answered by any worker, reads all of them. So a
    pod is not sent traffic while one of its workers still connects to Kafka (that worker would
    answer 503), and turns not ready while a replaced worker starts."""

    def __init__(self) -> None:
        self._dir = Path(os.environ[READY_DIR_ENV])
        self._count = int(os.environ[WORKER_COUNT_ENV])
        self._index = int(os.environ[WORKER_INDEX_ENV])
        self._last: bool | None = None

    @staticmethod
    def configured() -> bool:
        return READY_DIR_ENV in os.environ and WORKER_INDEX_ENV in os.environ

    def report(self, ready: bool) -> None:
        if ready == self._last:
            return
        tmp = self._dir / f".{self._index}.tmp"
        tmp.write_text("1" if ready else "0")
        tmp.replace(self._dir / str(self._index))
        self._last = ready

    def all_ready(self) -> bool:
        try:
            return all((self._dir / str(i)).read_text() == "1" for i in range(self._count))
        except OSError:
            return False

    def others_ready(self) -> bool:
        """Whether any other worker is ready now (so this one is replacing a worker)."""
        return any(self._reads_ready(i) for i in range(self._count) if i != self._index)

    def _reads_ready(self, index: int) -> bool:
        try:
            return (self._dir / str(index)).read_text() == "1"
        except OSError:
            return False


def usable_cpus() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, int(quota + 0.5)))
    return max(1, cpus)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def check_free(host: str, port: int) -> None:
    """Exit (address in use) unless ``host:port`` can be bound without SO_REUSEPORT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"tokentide ingest: cannot listen on {host}:{port}: {exc.strerror}") from exc


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with SO_REUSEPORT, shared with the other workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def supervise(settings: IngestSettings, workers: int, serve: Callable[[IngestSettings, int], None]) -> int:
    """Run ``workers`` processes of ``serve(settings, index)`` until SIGTERM; the exit status.

    ``serve`` runs in each forked worker (nothing of asyncio, grpc or Kafka exists in the
    supervisor, so none is inherited) and binds its ports with :func:`reuseport_socket`.
    """
    check_free(settings.host, settings.ingest_port)
    if settings.grpc_port:
        check_free(settings.host, settings.grpc_port)
    run_dir = tempfile.mkdtemp(prefix="tokentide-ingest-")
    metrics_dir = os.path.join(run_dir, "metrics")
    os.mkdir(metrics_dir)
    # Read by prometheus_client when the workers import it, and by ingest.runtime.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    os.environ[SHARED_BUCKETS_ENV] = os.path.join(run_dir, "rate-buckets")
    ready_dir = os.path.join(run_dir, "ready")
    os.mkdir(ready_dir)
    os.environ[READY_DIR_ENV] = ready_dir
    os.environ[WORKER_COUNT_ENV] = str(workers)
    supervisor = _Supervisor(settings, serve)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    try:
        for index in range(workers):
            supervisor.start(index)
        log.info("ingest supervisor: %d workers on port %d", workers, settings.ingest_port)
        supervisor.watch()
        supervisor.drain()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return supervisor.status


class _Supervisor:
    def __init__(self, settings: IngestSettings, serve: Callable[[IngestSettings, int], None]) -> None:
        self._settings = settings
        self._serve = serve
        self._context = multiprocessing.get_context("fork")
        self._running: dict[int, tuple[BaseProcess, float]] = {}
        self.stopping = False
        self.status = 0

    def start(self, index: int) -> None:
        process = self._context.Process(
            target=_worker, args=(self._serve, self._settings, index), name=f"ingest-worker-{index}"
        )
        process.start()
        self._running[index] = (process, time.monotonic())

    def on_signal(self, signum: int, _: FrameType | None) -> None:
        if not self.stopping:
            log.info("ingest supervisor: %s, stopping the workers", signal.Signals(signum).name)
        self.stopping = True
        for process, _started in self._running.values():
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def watch(self) -> None:
        """Until asked to stop: replace a worker that died; stop all if one died starting."""
        while not self.stopping:
            time.sleep(0.2)
            for index, (process, started) in list(self._running.items()):
                if self.stopping or process.is_alive():
                    continue
                process.join()
                _mark_dead(process)
                with contextlib.suppress(OSError):  # not ready until its successor is
                    os.unlink(os.path.join(os.environ[READY_DIR_ENV], str(index)))
                del self._running[index]
                code = process.exitcode or 0
                if code > 0 and time.monotonic() - started < STARTUP_S:  # not killed: it failed
                    log.error("ingest worker %d exited during start (code %s)", index, process.exitcode)
                    self.status = 1
                    self.on_signal(signal.SIGTERM, None)
                    break
                log.warning(
                    "ingest worker %d (pid %s) died (code %s): starting a new one",
                    index,
                    process.pid,
                    process.exitcode,
                )
                self.start(index)

    def drain(self) -> None:
        """Wait for every worker to finish; kill those still there after the grace."""
        deadline = time.monotonic() + self._settings.shutdown_grace_s + KILL_AFTER_S
        for process, _started in list(self._running.values()):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("ingest worker pid %s did not stop in time: killed", process.pid)
                process.kill()
                process.join()
            if process.exitcode not in (0, -signal.SIGTERM):
                self.status = self.status or 1
            _mark_dead(process)
        self._running.clear()


def _mark_dead(process: BaseProcess) -> None:
    if process.pid is not None:
        from prometheus_client import multiprocess  # noqa: PLC0415 - after PROMETHEUS_MULTIPROC_DIR

        multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]


def _worker(serve: Callable[[IngestSettings, int], None], settings: IngestSettings, index: int) -> None:
    parent = os.getppid()
    os.environ[WORKER_INDEX_ENV] = str(index)
    _die_with_parent()
    if os.getppid() != parent:  # the supervisor died before the kernel was told
        sys.exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        serve(settings, index)
    except SystemExit as exc:
        sys.exit(exc.code)
