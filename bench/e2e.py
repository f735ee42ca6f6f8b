"""End-to-end benchmark: OTLP POST -> Kafka -> streams -> sink -> PostgreSQL -> API.

Not a test. Runs the four services as processes (like the e2e tests) on the Kafka and
PostgreSQL given by KAFKA_BOOTSTRAP / DATABASE_URL (``make bench`` provides them), then:

1. throughput: wrk (a C load generator, bench/bodies.lua) posts each of ``--sessions`` x
   ``--requests`` real-shaped Claude Code log exports (the captured ``stub-text-protobuf``
   export, re-numbered per session) once, on ``--concurrency`` connections, and the run measures
   how fast ingest answers, how long until the API shows every session with every request
   counted, and the CPU of every process meanwhile (each service with its children: ingest's
   workers, PostgreSQL's backends), naming the bottleneck;
2. latency: ``--probes`` single exports of fresh sessions, one at a time, each timed from the
   POST until the API shows it.

Numbers vary with the machine's load: compare runs made back to back, not across days.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import cpu_seconds, tree_cpu_seconds
from tests.support.captures import FIXTURES, export_for
from tests.support.pipeline import Pipeline
from tests.support.services import admin_database_url, create_database, drop_database, kafka_bootstrap

LUA = Path(__file__).resolve().parent / "bodies.lua"
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
    pids["bench (polls API)"] = os.getpid()
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


def write_bodies(bodies: list[bytes], path: Path) -> None:
    """The bodies as bench/bodies.lua reads them: each after its length in 10 digits."""
    with path.open("wb") as out:
        for body in bodies:
            out.write(b"%010d" % len(body) + body)


def run_wrk(url: str, bodies_file: Path, connections: int, timeout_s: float) -> dict[str, int]:
    env = {**os.environ, "BODIES_FILE": str(bodies_file), "PATH_OTLP": "/v1/logs"}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(timeout_s)}s", "-s", str(LUA), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (.*)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}


async def throughput(
    pipeline: Pipeline, args: argparse.Namespace, template: ExportLogsServiceRequest, workdir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    bodies = [
        export_for(template, f"bench-{run}-{s}", i)
        for i in range(args.requests)
        for s in range(args.sessions)
    ]
    bodies_file = workdir / "bodies.bin"
    write_bodies(bodies, bodies_file)
    pids = measured_pids(pipeline)
    cpu_before = {name: process_cpu(name, pid) for name, pid in pids.items()}
    wrk_before = ended_children_cpu()
    started = time.perf_counter()
    result = await asyncio.to_thread(
        run_wrk, pipeline.url("ingest"), bodies_file, args.concurrency, args.timeout
    )
    posted = time.perf_counter() - started
    cpu_posted = {name: process_cpu(name, pid) - cpu_before[name] for name, pid in pids.items()}
    cpu_posted["wrk"] = ended_children_cpu() - wrk_before
    if result["non2xx"] or result["connect_errors"] or result["timeouts"]:
        raise RuntimeError(f"ingest refused requests: {result}\n{pipeline.logs()}")
    async with httpx.AsyncClient(timeout=30) as client:
        want = (args.sessions, args.sessions * args.requests)
        while (got := await api_totals(client, pipeline, f"bench-{run}-")) != want:
            if time.perf_counter() - started > args.timeout:
                raise RuntimeError(f"API shows {got} after {args.timeout}s, want {want}\n{pipeline.logs()}")
            await asyncio.sleep(0.25)
        visible = time.perf_counter() - started
    cpu = {name: process_cpu(name, pid) - cpu_before[name] for name, pid in pids.items()}
    cpu["wrk"] = cpu_posted["wrk"]

    events = len(bodies) * events_per_export(template)
    print(
        f"throughput: {len(bodies)} exports ({events} events, {args.sessions} sessions) posted by wrk "
        f"with {args.concurrency} connections; {os.cpu_count()} cores, load {load()}"
    )
    print(
        f"  ingest:     {len(bodies) / posted:8.0f} requests/s  {events / posted:8.0f} events/s  "
        f"(all answered after {posted:.2f} s)"
    )
    print(
        f"  end to end: {len(bodies) / visible:8.0f} requests/s  {events / visible:8.0f} events/s  "
        f"(all visible in the API after {visible:.2f} s)"
    )
    print("  CPU from the first POST until all was visible (each process with its children):")
    ranked = sorted(cpu.items(), key=lambda item: -item[1])
    for name, seconds in ranked:
        print(
            f"    {name:13s} {seconds:6.2f} s  {100 * seconds / visible:5.0f}% of a core  "
            f"{1e6 * seconds / events:7.0f} us/event"
        )
    total = sum(cpu.values())
    print(f"    {'all':13s} {total:6.2f} s  {100 * total / visible:5.0f}% of {os.cpu_count()} cores")
    print(f"  bottleneck: {bottleneck(cpu, visible, posted, cpu_posted)}")


def process_cpu(name: str, pid: int) -> float:
    """A service with its children (ingest's workers, PostgreSQL's backends); this process alone
    (the services are its children too)."""
    return cpu_seconds(pid) if pid == os.getpid() else tree_cpu_seconds(pid)


def ended_children_cpu() -> float:
    """CPU of this process's children that have ended and were waited for: wrk, once it is done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bottleneck(cpu: dict[str, float], visible: float, posted: float, cpu_posted: dict[str, float]) -> str:
    """Which process bounds the run: the busiest one-core stage, unless the machine is full."""
    cores = os.cpu_count() or 1
    total = sum(cpu.values()) / visible
    stages = {k: v / visible for k, v in cpu.items() if k in ("streams", "sink", "dashboard")}
    busiest, share = max(stages.items(), key=lambda item: item[1])
    ingest_share = cpu_posted.get("ingest", 0.0) / posted
    if share > 0.85:
        return f"{busiest} ({100 * share:.0f}% of its one core after the POSTs: it is the slowest stage)"
    if total > 0.85 * cores:
        return (
            f"the machine: {100 * total:.0f}% of {cores} cores busy, {busiest} the busiest one-core stage "
            f"({100 * share:.0f}%); ingest used {100 * ingest_share:.0f}% of a core while posting"
        )
    return (
        f"none saturated ({100 * total:.0f}% of {cores} cores); busiest stage {busiest} at {100 * share:.0f}%"
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--requests", type=int, default=25, help="exports per session")
    parser.add_argument("--concurrency", type=int, default=32, help="wrk connections")
    parser.add_argument("--probes", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    template = ExportLogsServiceRequest.FromString(TEMPLATE.read_bytes())
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    with tempfile.TemporaryDirectory(prefix="tokentide-bench-") as workdir:
        pipeline = Pipeline(kafka_bootstrap(), dsn, Path(workdir))
        try:
            pipeline.start()
            await throughput(pipeline, args, template, Path(workdir))
            await latency(pipeline, args, template)
        finally:
            pipeline.stop()
            drop_database(admin_url, dsn)


if __name__ == "__main__":
    asyncio.run(main())
