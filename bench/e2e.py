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
import contextlib
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

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
    """The four services, Kafka, PostgreSQL (the postmaster, whose children are the backends)
    and this client. Kafka and PostgreSQL are found by the port they listen on: shared ones
    (KAFKA_BOOTSTRAP / DATABASE_URL set) work for others too, which their CPU then includes."""
    pids = {name: proc.pid for name, proc in pipeline.processes.items()}
    kafka_port = int(pipeline.kafka_bootstrap.split(",")[0].rpartition(":")[2])
    pg_port = urlsplit(pipeline.database_url).port or 5432
    for name, port in (("kafka", kafka_port), ("postgres", pg_port)):
        pid = listening_pid(port)
        if pid is not None:
            pids[name] = pid
    pids["bench (polls API)"] = os.getpid()
    return pids


def listening_pid(port: int) -> int | None:
    """The process holding a TCP socket that listens on ``port`` (Linux /proc), if visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (/proc/stat), every process's."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


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


def run_wrk(url: str, bodies_file: Path, connections: int, timeout_s: float) -> tuple[dict[str, int], float]:
    """wrk posting every body once; (its RESULT, seconds until the last answer)."""
    done = bodies_file.with_suffix(".done")
    env = {**os.environ, "BODIES_FILE": str(bodies_file), "PATH_OTLP": "/v1/logs", "DONE_FILE": str(done)}
    started = time.perf_counter()
    wrk = subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(timeout_s)}s", "-s", str(LUA), url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not done.exists() and wrk.poll() is None:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    wrk.send_signal(signal.SIGINT)  # wrk runs for its -d otherwise; it prints its summary now
    out, _ = wrk.communicate(timeout=30)
    match = re.search(r"RESULT (.*)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    return {k: int(v) for k, v in (pair.split("=") for pair in match.group(1).split())}, elapsed


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
    machine_before = machine_busy()
    started = time.perf_counter()
    result, posted = await asyncio.to_thread(
        run_wrk, pipeline.url("ingest"), bodies_file, args.concurrency, args.timeout
    )
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
    machine = machine_busy()
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
    cores = os.cpu_count() or 1
    print(f"    {'all':13s} {total:6.2f} s  {100 * total / visible / cores:5.0f}% of the {cores} cores")
    busy = (machine[0] - machine_before[0]) / (machine[1] - machine_before[1])
    print(f"  the whole machine (other users included) was {100 * busy:.0f}% busy")
    tail = {k: (cpu[k] - cpu_posted.get(k, 0.0)) / max(1e-3, visible - posted) for k in cpu}
    print(
        "  after the last POST was answered, until all was visible: "
        + ", ".join(f"{k} {100 * v:.0f}%" for k, v in sorted(tail.items(), key=lambda kv: -kv[1])[:4])
        + " of a core"
    )
    print(f"  bottleneck: {bottleneck(posted, cpu_posted, busy, tail)}")


def process_cpu(name: str, pid: int) -> float:
    """A service with its children (ingest's workers, PostgreSQL's backends); this process alone
    (the services are its children too)."""
    return cpu_seconds(pid) if pid == os.getpid() else tree_cpu_seconds(pid)


def ended_children_cpu() -> float:
    """CPU of this process's children that have ended and were waited for: wrk, once it is done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bottleneck(posted: float, cpu_posted: dict[str, float], busy: float, tail: dict[str, float]) -> str:
    """Which process bounds the run: the stage still busiest once ingest is done (what the API
    waits for), unless the machine was full."""
    cores = os.cpu_count() or 1
    stages = {k: v for k, v in tail.items() if k in ("streams", "sink")}
    busiest, share = max(stages.items(), key=lambda item: item[1])
    ingest_share = cpu_posted.get("ingest", 0.0) / posted
    note = f"ingest used {100 * ingest_share:.0f}% of a core ({cores} cores) while posting"
    if busy > 0.9:
        return (
            f"the machine ({100 * busy:.0f}% of {cores} cores busy, others' work included); of ours, "
            f"{busiest} was busiest after the POSTs ({100 * share:.0f}% of its one core); {note}"
        )
    if share > 0.8:
        return f"{busiest}, at {100 * share:.0f}% of its one core after the POSTs; {note}"
    return f"none saturated; busiest after the POSTs {busiest} at {100 * share:.0f}% of a core; {note}"


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
