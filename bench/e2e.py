"""End-to-end benchmark: OTLP POST -> Kafka -> streams -> sink -> PostgreSQL -> API.

Not a test. Runs the four services as processes (like the e2e tests) on the Kafka and
PostgreSQL given by KAFKA_BOOTSTRAP / DATABASE_URL (``make bench`` provides them), then:

1. throughput: posts ``--sessions`` x ``--requests`` real-shaped Claude Code log exports
   (the captured ``stub-text-protobuf`` export, re-numbered per session) with
   ``--concurrency`` clients, and measures how fast ingest answers and how long until the API
   shows every session with every request counted;
2. latency: ``--probes`` single exports of fresh sessions, one at a time, each timed from the
   POST until the API shows it.

Numbers vary with the machine's load: compare runs made back to back, not across days.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_seconds
from tests.support.captures import FIXTURES, export_for
from tests.support.pipeline import Pipeline
from tests.support.services import admin_database_url, create_database, drop_database, kafka_bootstrap

TEMPLATE = FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb"
PB = {"Content-Type": "application/x-protobuf"}


def measured_pids(pipeline: Pipeline) -> dict[str, int]:
    """The four services, plus Kafka, PostgreSQL's postmaster and this client."""
    pids = {name: proc.pid for name, proc in pipeline.processes.items()}
    run = Path(__file__).resolve().parents[1] / ".local" / "run"
    for name in ("kafka", "postgres"):
        pid_file = run / f"{name}.pid"
        if pid_file.exists():
            pids[name] = int(pid_file.read_text().split()[0])
    pids["bench client"] = os.getpid()
    return pids


def events_per_export(template: ExportLogsServiceRequest) -> int:
    return sum(len(sl.log_records) for rl in template.resource_logs for sl in rl.scope_logs)


async def api_totals(client: httpx.AsyncClient, pipeline: Pipeline, prefix: str) -> tuple[int, int]:
    """(sessions, api requests) the API shows for sessions whose id starts with ``prefix``."""
    sessions = requests = offset = 0
    while True:
        page = (
            await client.get(
                f"{pipeline.url('dashboard')}/api/v1/sessions", params={"limit": 1000, "offset": offset}
            )
        ).json()
        for s in page["sessions"]:
            if s["session_id"].startswith(prefix):
                sessions += 1
                requests += s["api_requests"]
        offset += len(page["sessions"])
        if offset >= page["total"] or not page["sessions"]:
            return sessions, requests


async def throughput(
    pipeline: Pipeline, args: argparse.Namespace, template: ExportLogsServiceRequest
) -> None:
    run = uuid.uuid4().hex[:8]
    bodies = [
        export_for(template, f"bench-{run}-{s}", i)
        for i in range(args.requests)
        for s in range(args.sessions)
    ]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []

    async def client_loop(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(pipeline.url("ingest") + "/v1/logs", content=body, headers=PB)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"ingest answered {response.status_code}: {response.text}")

    limits = httpx.Limits(max_connections=args.concurrency)
    pids = measured_pids(pipeline)
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(args.concurrency)))
        posted = time.perf_counter() - started
        want = (args.sessions, args.sessions * args.requests)
        while (got := await api_totals(client, pipeline, f"bench-{run}-")) != want:
            if time.perf_counter() - started > args.timeout:
                raise RuntimeError(f"API shows {got} after {args.timeout}s, want {want}\n{pipeline.logs()}")
            await asyncio.sleep(0.25)
        visible = time.perf_counter() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}

    events = len(bodies) * events_per_export(template)
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"throughput: {len(bodies)} exports ({events} events, {args.sessions} sessions), "
        f"{args.concurrency} concurrent clients"
    )
    print(
        f"  ingest:     {len(bodies) / posted:8.0f} requests/s  {events / posted:8.0f} events/s  "
        f"p50 {1000 * p50:.1f} ms  p99 {1000 * p99:.1f} ms"
    )
    print(
        f"  end to end: {len(bodies) / visible:8.0f} requests/s  {events / visible:8.0f} events/s  "
        f"(all visible in the API after {visible:.2f} s)"
    )
    print("  CPU while it ran (PostgreSQL: postmaster only, not its backends):")
    for name, seconds in cpu.items():
        print(
            f"    {name:13s} {seconds:6.2f} s  {100 * seconds / visible:5.0f}% of a core  "
            f"{1e6 * seconds / events:7.0f} us/event"
        )


async def latency(pipeline: Pipeline, args: argparse.Namespace, template: ExportLogsServiceRequest) -> None:
    samples: list[float] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for n in range(args.probes):
            session_id = f"probe-{uuid.uuid4().hex[:12]}"
            body = export_for(template, session_id, 0)
            url = f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}"
            started = time.perf_counter()
            response = await client.post(pipeline.url("ingest") + "/v1/logs", content=body, headers=PB)
            response.raise_for_status()
            while (await client.get(url)).status_code != 200:
                if time.perf_counter() - started > 30:
                    raise RuntimeError(f"probe {n} not visible after 30 s\n{pipeline.logs()}")
                await asyncio.sleep(0.01)
            samples.append(time.perf_counter() - started)
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    print(
        f"latency POST -> visible in API ({args.probes} probes, one at a time): "
        f"p50 {1000 * q[49]:.0f} ms  p95 {1000 * q[94]:.0f} ms  p99 {1000 * q[98]:.0f} ms  "
        f"max {1000 * samples[-1]:.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--requests", type=int, default=20, help="exports per session")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    template = ExportLogsServiceRequest.FromString(TEMPLATE.read_bytes())
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    with tempfile.TemporaryDirectory(prefix="tokentide-bench-") as workdir:
        pipeline = Pipeline(kafka_bootstrap(), dsn, Path(workdir))
        try:
            pipeline.start()
            await throughput(pipeline, args, template)
            await latency(pipeline, args, template)
        finally:
            pipeline.stop()
            drop_database(admin_url, dsn)


if __name__ == "__main__":
    asyncio.run(main())
