"""Several ingest worker processes behind one port (ingest/workers.py), real processes, real Kafka.

What must hold: a request acknowledged by any worker is in Kafka exactly once; a worker killed
mid-load loses nothing it acknowledged and is replaced; limits (open-mode rates, the in-flight
budget, the port itself) hold for the whole process, not per worker; ``/metrics`` counts every
worker; SIGTERM drains every worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.common import cpu_seconds
from tests.support.captures import FIXTURES, export_for
from tests.support.processes import TOKENTIDE, ServiceProcess, clean_env
from tests.support.services import free_port, read_all, unique
from tokentide.topics import HEADER_SESSION, Signal, Topics

pytestmark = pytest.mark.integration

TEMPLATE = ExportLogsServiceRequest.FromString(
    (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
)
PB = {"Content-Type": "application/x-protobuf"}


def ingest(bootstrap: str, tmp_path: Path, workers: int = 2, **env: str) -> ServiceProcess:
    port = free_port()
    service = ServiceProcess(
        "ingest",
        port,
        clean_env(
            KAFKA_BOOTSTRAP=bootstrap,
            TOKENTIDE_OPEN_MODE="1",
            TOKENTIDE_TOPIC_PREFIX=unique("workers") + ".",
            TOKENTIDE_INGEST_PORT=str(port),
            TOKENTIDE_GRPC_PORT="0",
            TOKENTIDE_INGEST_WORKERS=str(workers),
            **env,
        ),
        tmp_path / f"ingest-{port}.log",
    ).start()
    service.wait_ready()
    return service


def worker_pids(service: ServiceProcess, want: int, timeout_s: float = 30.0) -> list[int]:
    """The supervisor's worker processes, once there are ``want`` of them."""
    assert service.process is not None
    pid = service.process.pid
    deadline = time.monotonic() + timeout_s
    while True:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) == want:
            return [int(c) for c in children]
        assert time.monotonic() < deadline, f"{children} workers, want {want}\n{service.tail()}"
        time.sleep(0.1)


def post(url: str, body: bytes) -> int:
    """One export on a fresh connection (so the kernel picks a worker anew); 0 if it failed."""
    try:
        return httpx.post(url + "/v1/logs", content=body, headers=PB, timeout=30).status_code
    except httpx.HTTPError:
        return 0


def sessions_in_kafka(bootstrap: str, service: ServiceProcess) -> Counter[str]:
    prefix = service.env["TOKENTIDE_TOPIC_PREFIX"]
    messages = asyncio.run(read_all(bootstrap, Topics(prefix).raw(Signal.LOGS), timeout_s=30))
    return Counter(dict(m.headers)[HEADER_SESSION].decode() for m in messages)  # type: ignore[attr-defined]


def test_a_request_acknowledged_by_any_worker_is_in_kafka_exactly_once(
    bootstrap: str, tmp_path: Path
) -> None:
    service = ingest(bootstrap, tmp_path)
    try:
        workers = worker_pids(service, 2)
        before = {pid: cpu_seconds(pid) for pid in workers}
        sessions = [f"w-{unique('s')}" for _ in range(120)]
        codes = [post(service.url, export_for(TEMPLATE, s, 0)) for s in sessions]
        assert codes == [200] * len(sessions)
        used = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
        # Both workers took connections (the kernel spreads them by hash: each gets a share).
        assert min(used.values()) > 0.15 * sum(used.values()), used
        assert sessions_in_kafka(bootstrap, service) == Counter(sessions)
    finally:
        service.stop()


def test_a_worker_killed_mid_load_loses_nothing_acknowledged(bootstrap: str, tmp_path: Path) -> None:
    service = ingest(bootstrap, tmp_path)
    try:
        victim = worker_pids(service, 2)[0]
        acknowledged: list[str] = []
        failed: list[str] = []
        stop = threading.Event()

        def client(n: int) -> None:
            i = 0
            while not stop.is_set() and i < 400:
                session = f"k{n}-{i}-{unique('s')}"
                (
                    acknowledged if post(service.url, export_for(TEMPLATE, session, 0)) == 200 else failed
                ).append(session)
                i += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(victim, signal.SIGKILL)
        # The supervisor starts a new worker; the clients keep going meanwhile.
        deadline = time.monotonic() + 30
        while victim in (pids := worker_pids(service, 2)) or len(pids) != 2:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(60)
        assert len(acknowledged) > 50, (len(acknowledged), len(failed))
        in_kafka = sessions_in_kafka(bootstrap, service)
        missing = [s for s in acknowledged if s not in in_kafka]
        assert not missing, f"{len(missing)} acknowledged requests not in Kafka"
        # Nothing was retried here, so nothing may appear twice.
        assert all(count == 1 for count in in_kafka.values())
        assert "died" in service.log.read_text()
        # The new worker serves.
        after = [post(service.url, export_for(TEMPLATE, unique("after"), 0)) for _ in range(10)]
        assert after == [200] * 10, (after, service.tail())
    finally:
        service.stop()


def test_a_replacement_worker_takes_connections_only_once_it_is_ready(bootstrap: str, tmp_path: Path) -> None:
    """While its producer still connects, a replaced worker would answer 503; it listens only
    once ready, so the kernel sends every connection to the worker that serves meanwhile."""
    service = ingest(bootstrap, tmp_path)
    try:
        for _ in range(3):
            victim = worker_pids(service, 2)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while victim in (pids := worker_pids(service, 2)) or len(pids) != 2:
                assert time.monotonic() < deadline, service.tail()
                time.sleep(0.01)
            # From the moment the new worker exists, on a fresh connection each time.
            codes: Counter[int] = Counter()
            until = time.monotonic() + 3
            while time.monotonic() < until:
                codes[post(service.url, export_for(TEMPLATE, unique("r"), 0))] += 1
            assert set(codes) == {200}, (codes, service.tail())
        assert service.log.read_text().count("waits until it is ready") == 3, service.tail()
    finally:
        service.stop()


def test_open_mode_rates_hold_for_all_workers_together(bootstrap: str, tmp_path: Path) -> None:
    rate = 10.0
    service = ingest(bootstrap, tmp_path, TOKENTIDE_REQUESTS_PER_S=str(rate))
    try:
        body = export_for(TEMPLATE, unique("rate"), 0)
        started = time.monotonic()
        codes = Counter(post(service.url, body) for _ in range(120))
        elapsed = time.monotonic() - started
        # One bucket for the process (burst: 2 s of the rate), not one per worker.
        assert codes[200] <= 2 * rate + rate * elapsed + 1, (codes, elapsed)
        assert codes[200] >= rate, codes
        assert codes[200] + codes[429] == 120, codes
    finally:
        service.stop()


def test_metrics_count_every_worker(bootstrap: str, tmp_path: Path) -> None:
    service = ingest(bootstrap, tmp_path)
    try:
        worker_pids(service, 2)
        for _ in range(40):
            assert post(service.url, export_for(TEMPLATE, unique("m"), 0)) == 200
        # Whichever worker answers the scrape, it answers for both.
        for _ in range(10):
            text = httpx.get(service.url + "/metrics", timeout=10).text
            line = next(x for x in text.splitlines() if x.startswith("tokentide_ingest_requests_total{"))
            assert 'signal="logs"' in line
            assert 'status="200"' in line
            assert float(line.rsplit(" ", 1)[1]) == 40.0, line
            assert "tokentide_ingest_kafka_ready 1.0" in text
            assert "tokentide_ingest_inflight_bytes " in text
        # Each worker samples its in-flight bytes twice a second: idle, their sum comes to 0.
        deadline = time.monotonic() + 10
        while (
            "tokentide_ingest_inflight_bytes 0.0" not in httpx.get(service.url + "/metrics", timeout=10).text
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        service.stop()


def test_the_in_flight_budget_is_split_and_must_hold_a_largest_request(
    bootstrap: str, tmp_path: Path
) -> None:
    port = free_port()
    env = clean_env(
        KAFKA_BOOTSTRAP=bootstrap,
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_INGEST_PORT=str(port),
        TOKENTIDE_GRPC_PORT="0",
        TOKENTIDE_INGEST_WORKERS="4",
        TOKENTIDE_MAX_BODY_BYTES=str(1024 * 1024),
        TOKENTIDE_MAX_INFLIGHT_BYTES=str(2 * 1024 * 1024),
    )
    result = subprocess.run(
        [TOKENTIDE, "ingest"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "TOKENTIDE_MAX_INFLIGHT_BYTES" in result.stderr, result.stderr
    assert "4 workers" in result.stderr, result.stderr


def test_a_port_in_use_fails_the_start(bootstrap: str, tmp_path: Path) -> None:
    first = ingest(bootstrap, tmp_path)
    try:
        env = dict(first.env, TOKENTIDE_TOPIC_PREFIX=unique("second") + ".")
        result = subprocess.run(
            [TOKENTIDE, "ingest"], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode != 0
        assert "in use" in result.stderr, result.stderr
    finally:
        first.stop()


def test_sigterm_drains_every_worker(bootstrap: str, tmp_path: Path) -> None:
    service = ingest(bootstrap, tmp_path, TOKENTIDE_SHUTDOWN_GRACE_S="20")
    assert service.process is not None
    try:
        workers = worker_pids(service, 2)
        session = unique("drain")
        body = export_for(TEMPLATE, session, 0)
        # Half a chunked export on many connections, so that both workers hold one.
        conns = []
        for _ in range(12):
            conn = socket.create_connection(("127.0.0.1", service.port), timeout=30)
            conn.sendall(
                b"POST /v1/logs HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/x-protobuf\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            conn.sendall(b"%x\r\n%s\r\n" % (len(body) // 2, body[: len(body) // 2]))
            conns.append(conn)
        time.sleep(0.5)
        service.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", service.port), timeout=2).close()
        rest = body[len(body) // 2 :]
        for conn in conns:
            conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        answers = [conn.recv(65536) for conn in conns]
        for conn in conns:
            conn.close()
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), answers
        assert service.process.wait(30) == 0, service.tail()
        assert service.log.read_text().count("Application shutdown complete") == 2, service.tail()
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)
        assert sessions_in_kafka(bootstrap, service)[session] == 12
    finally:
        service.stop()
