"""Ingest benchmark: requests/s, records/s and latency of one ingest (not a test).

Starts ``tokentide ingest`` (``TOKENTIDE_INGEST_WORKERS`` worker processes, taken from the
environment; unset: its own default, one per core) on the Kafka given by KAFKA_BOOTSTRAP
(``make bench-ingest`` provides one) and drives it with wrk (Debian package ``wrk``; a C load
generator, so the client does not steal the CPU it measures as a Python client would) using
real Claude Code exports: each payload at several connection counts, reporting requests/s,
records/s, p50/p99 latency and the CPU ingest used (the supervisor and all its workers; 100% is
one core). The run at the fewest connections that still reaches the plateau shows latency
below saturation.

With ``BENCH_PYSPY=<path of py-spy>`` each run also samples one worker (the only process when
``TOKENTIDE_INGEST_WORKERS=1``) into ``ingest-profile-<payload>-<connections>.txt`` in the
current directory, py-spy's raw format.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import children, start_profiler, tree_cpu_seconds  # noqa: E402
from tests.support.services import free_port, kafka_bootstrap, unique  # noqa: E402

CAPTURES = ROOT / "tests" / "fixtures" / "claude-code"
LUA = ROOT / "bench" / "post.lua"
RESULT = re.compile(r"RESULT (.*)")


@dataclass(frozen=True)
class Payload:
    name: str
    path: str
    file: Path
    content_type: str
    records: int


def payloads() -> list[Payload]:
    logs_pb = CAPTURES / "stub-tool-traces-protobuf" / "0002_v1_logs.pb"
    metrics_pb = CAPTURES / "stub-tool-traces-protobuf" / "0003_v1_metrics.pb"
    logs_json = CAPTURES / "stub-tool-traces-json" / "0002_v1_logs.json"
    logs = ExportLogsServiceRequest.FromString(logs_pb.read_bytes())
    metrics = ExportMetricsServiceRequest.FromString(metrics_pb.read_bytes())
    n_logs = sum(len(s.log_records) for r in logs.resource_logs for s in r.scope_logs)
    n_points = sum(
        len(m.sum.data_points) for r in metrics.resource_metrics for s in r.scope_metrics for m in s.metrics
    )
    return [
        Payload("logs protobuf", "/v1/logs", logs_pb, "application/x-protobuf", n_logs),
        Payload("metrics protobuf", "/v1/metrics", metrics_pb, "application/x-protobuf", n_points),
        Payload("logs JSON", "/v1/logs", logs_json, "application/json", n_logs),
    ]


def start_ingest(bootstrap: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    if "TOKENTIDE_INGEST_WORKERS" in os.environ:
        env["TOKENTIDE_INGEST_WORKERS"] = os.environ["TOKENTIDE_INGEST_WORKERS"]
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_TOPIC_PREFIX=unique("bench") + ".",
        TOKENTIDE_INGEST_PORT=str(port),
        TOKENTIDE_GRPC_PORT="0",
        TOKENTIDE_LOG_LEVEL="WARNING",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tokentide")), "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"ingest did not become ready:\n{log.read_text()}")


def run_wrk(url: str, payload: Payload, connections: int, seconds: int) -> dict[str, int]:
    env = {**os.environ, "BODY_FILE": str(payload.file), "CONTENT_TYPE": payload.content_type}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(LUA), url + payload.path],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = RESULT.search(out)
    if match is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", default="4,16,32,64", help="comma-separated wrk connection counts")
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tokentide-bench-") as workdir:
        process = start_ingest(kafka_bootstrap(), port, Path(workdir) / "ingest.log")
        try:
            url = f"http://127.0.0.1:{port}"
            print(
                f"{'payload':17s} {'conns':>5s} {'req/s':>8s} {'records/s':>10s} {'p50 ms':>7s} "
                f"{'p99 ms':>7s} {'ingest CPU':>10s} {'errors':>6s}"
            )
            for payload in payloads():
                run_wrk(url, payload, 4, 2)  # warm-up
                for connections in (int(c) for c in args.connections.split(",")):
                    profile = f"ingest-profile-{payload.name.replace(' ', '-')}-{connections}.txt"
                    # One worker: the first child, or the process itself when it has none.
                    worker = next(iter(children(process.pid)), process.pid)
                    profiler = start_profiler(worker, profile, max(1, args.seconds - 1))
                    before, started = tree_cpu_seconds(process.pid), time.monotonic()
                    r = run_wrk(url, payload, connections, args.seconds)
                    cpu = (tree_cpu_seconds(process.pid) - before) / (time.monotonic() - started)
                    rate = r["requests"] / (r["duration_us"] / 1e6)
                    errors = r["non2xx"] + r["connect_errors"] + r["timeouts"]
                    print(
                        f"{payload.name:17s} {connections:5d} {rate:8.0f} {rate * payload.records:10.0f} "
                        f"{r['p50_us'] / 1000:7.1f} {r['p99_us'] / 1000:7.1f} {100 * cpu:9.0f}% {errors:6d}"
                    )
                    if profiler is not None:
                        profiler.wait(30)
                        print(f"  profile: {profile}")
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(30)


if __name__ == "__main__":
    main()
