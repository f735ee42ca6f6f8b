"""Peer benchmark: tokentide ingest against the OpenTelemetry Collector (not a test).

Both answer an OTLP/HTTP export only after Kafka acknowledged it (``acks=all``), on the same
broker, with the same real Claude Code exports:

* the Collector, built by the Collector Builder (ocb) from ``bench/peer/builder.yaml``
  (otlpreceiver + kafkaexporter, versions pinned there; the binary is cached under
  ``.local/peer/``), configured by ``bench/peer/collector.yaml``: the sending queue and retries
  off, so the exporter answers after the produce returned, lz4 like tokentide, the record key
  from the resource attributes (tokentide keys by session);
* ``tokentide ingest`` with its settings (``TOKENTIDE_INGEST_WORKERS`` processes; default: its
  own default, one per core).

wrk (a C load generator) drives each in turn, A B A B, ``--rounds`` times per payload and
connection count; each pair prints both sides' requests/s, the ratio tokentide / Collector and
the CPU seconds per 1,000 requests of each server (``/proc/<pid>/stat``, the process and all its
children summed: every ingest worker counts). The machine's load average is printed with each
pair: read ratios, not absolute numbers, on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import tree_cpu_seconds  # noqa: E402
from bench.ingest import Payload, payloads, run_wrk  # noqa: E402
from tests.support.services import free_port, kafka_bootstrap, unique  # noqa: E402
from tokentide.kafka import TopicSpec, ensure_topics  # noqa: E402
from tokentide.settings import IngestSettings  # noqa: E402

PEER = ROOT / "bench" / "peer"
BUILDER_CONFIG = PEER / "builder.yaml"
COLLECTOR_CONFIG = PEER / "collector.yaml"
#: The Collector Builder's module and version: the same release as the components it builds.
BUILDER = "go.opentelemetry.io/collector/cmd/builder"
BUILDER_VERSION = "v0.165.0"
CACHE = ROOT / ".local" / "peer"


def collector_binary() -> Path:
    """The Collector of ``builder.yaml``, built once (cached by the config's content)."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256(BUILDER_CONFIG.read_bytes() + BUILDER_VERSION.encode()).hexdigest()[:12]
    build = CACHE / f"otelcol-{digest}"
    binary = build / "otelcol-peer"
    if binary.exists():
        return binary
    if shutil.which("go") is None:
        raise SystemExit("go is not installed: the Collector Builder needs the Go toolchain")
    gobin = CACHE / "bin"
    print(
        f"building the Collector: {BUILDER}@{BUILDER_VERSION}, {BUILDER_CONFIG.relative_to(ROOT)}", flush=True
    )
    subprocess.run(
        ["go", "install", f"{BUILDER}@{BUILDER_VERSION}"], env={**os.environ, "GOBIN": str(gobin)}, check=True
    )
    build.mkdir(parents=True, exist_ok=True)
    config = build / "builder.yaml"
    config.write_text(BUILDER_CONFIG.read_text().replace("output_path: ./build", f"output_path: {build}"))
    subprocess.run([str(gobin / "builder"), "--config", str(config)], cwd=build, check=True)
    return binary


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str

    def cpu(self) -> float:
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def wait_ready(name: str, process: subprocess.Popen[bytes], probe: str, log: Path) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"{name} exited during start:\n{log.read_text()}")
        try:
            if httpx.get(probe, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} did not become ready:\n{log.read_text()}")


def start_collector(binary: Path, bootstrap: str, prefix: str, workdir: Path) -> Server:
    port, metrics_port = free_port(), free_port()
    log = workdir / "collector.log"
    env = {
        **os.environ,
        "PEER_HTTP_ENDPOINT": f"127.0.0.1:{port}",
        "PEER_METRICS_PORT": str(metrics_port),
        "PEER_BROKERS": bootstrap,
        "PEER_LOGS_TOPIC": f"{prefix}logs",
        "PEER_METRICS_TOPIC": f"{prefix}metrics",
        "GOMAXPROCS": str(os.cpu_count() or 1),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--config", str(COLLECTOR_CONFIG)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # The receiver answers once the pipeline is up: an empty export is a valid request.
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"the Collector exited during start:\n{log.read_text()}")
        try:
            response = httpx.post(
                url + "/v1/logs", content=b"", headers={"Content-Type": "application/x-protobuf"}, timeout=2
            )
            if response.status_code == 200:
                return Server("Collector", process, url)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the Collector did not become ready:\n{log.read_text()}")


def start_tokentide(bootstrap: str, prefix: str, workdir: Path, src: Path | None) -> Server:
    port = free_port()
    log = workdir / "ingest.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    if "TOKENTIDE_INGEST_WORKERS" in os.environ:
        env["TOKENTIDE_INGEST_WORKERS"] = os.environ["TOKENTIDE_INGEST_WORKERS"]
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_TOPIC_PREFIX=prefix,
        TOKENTIDE_INGEST_PORT=str(port),
        TOKENTIDE_GRPC_PORT="0",
        TOKENTIDE_LOG_LEVEL="WARNING",
    )
    if src is not None:  # another version's code, with this environment's packages
        env["PYTHONPATH"] = str(src)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tokentide")), "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    wait_ready("tokentide ingest", process, url + "/readyz", log)
    return Server("tokentide", process, url)


@dataclass(frozen=True)
class Run:
    rate: float
    cpu_per_1k: float
    p99_ms: float
    errors: int


def measure(server: Server, payload: Payload, connections: int, seconds: int) -> Run:
    before = server.cpu()
    r = run_wrk(server.url, payload, connections, seconds)
    used = server.cpu() - before
    errors = r["non2xx"] + r["connect_errors"] + r["timeouts"]
    return Run(
        rate=r["requests"] / (r["duration_us"] / 1e6),
        cpu_per_1k=1000 * used / max(1, r["requests"]),
        p99_ms=r["p99_us"] / 1000,
        errors=errors,
    )


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", default="4,16,64", help="comma-separated wrk connection counts")
    parser.add_argument("--rounds", type=int, default=3, help="A B pairs per payload and connection count")
    parser.add_argument("--seconds", type=int, default=8, help="length of one wrk run")
    parser.add_argument("--payloads", default="logs protobuf,metrics protobuf")
    parser.add_argument(
        "--tokentide-src",
        type=Path,
        help="run tokentide ingest from this source tree instead (before/after: `git archive <commit>`)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    binary = collector_binary()
    bootstrap = kafka_bootstrap()
    chosen = [p for p in payloads() if p.name in args.payloads.split(",")]
    prefix = unique("peer") + "."
    settings = IngestSettings(kafka_bootstrap=bootstrap, open_mode=True)
    asyncio.run(
        ensure_topics(
            bootstrap, [TopicSpec(f"{prefix}{s}", settings.partitions, {}) for s in ("logs", "metrics")]
        )
    )
    with tempfile.TemporaryDirectory(prefix="tokentide-peer-") as tmp:
        workdir = Path(tmp)
        servers = [
            start_collector(binary, bootstrap, prefix, workdir),
            start_tokentide(bootstrap, prefix, workdir, args.tokentide_src),
        ]
        collector, tokentide = servers
        try:
            print(
                f"Collector: {binary.relative_to(ROOT)}; "
                f"tokentide ingest: {tokentide_workers(tokentide)} worker process(es)"
            )
            print(
                f"{os.cpu_count()} cores; wrk -t1, {args.seconds} s per run; "
                "CPU s per 1,000 requests (C: Collector, t: tokentide); load = loadavg"
            )
            print(
                f"{'payload':17s} {'conns':>5s} {'round':>5s} {'Collector/s':>11s} {'tokentide/s':>11s} "
                f"{'ratio':>6s} {'CPU C':>6s} {'CPU t':>6s} {'p99 C':>7s} {'p99 t':>7s} {'errors':>6s}  load"
            )
            summary: list[tuple[str, int, list[float], list[float], list[float]]] = []
            for payload in chosen:
                for server in servers:  # warm-up
                    run_wrk(server.url, payload, 4, 2)
                for connections in (int(c) for c in args.connections.split(",")):
                    ratios, cpu_c, cpu_t = [], [], []
                    for n in range(1, args.rounds + 1):
                        a = measure(collector, payload, connections, args.seconds)
                        b = measure(tokentide, payload, connections, args.seconds)
                        ratio = b.rate / a.rate
                        ratios.append(ratio)
                        cpu_c.append(a.cpu_per_1k)
                        cpu_t.append(b.cpu_per_1k)
                        print(
                            f"{payload.name:17s} {connections:5d} {n:5d} {a.rate:11.0f} {b.rate:11.0f} "
                            f"{ratio:6.2f} {a.cpu_per_1k:6.3f} {b.cpu_per_1k:6.3f} {a.p99_ms:7.1f} "
                            f"{b.p99_ms:7.1f} {a.errors + b.errors:6d}  {load()}",
                            flush=True,
                        )
                    summary.append((payload.name, connections, ratios, cpu_c, cpu_t))
            print("\nsummary (median of the rounds; ratio = tokentide / Collector)")
            print(
                f"{'payload':17s} {'conns':>5s} {'ratio':>6s} {'range':>11s} "
                f"{'CPU/1k C':>9s} {'CPU/1k t':>9s} {'CPU x':>6s}"
            )
            for name, connections, ratios, cpu_c, cpu_t in summary:
                mc, mt = statistics.median(cpu_c), statistics.median(cpu_t)
                print(
                    f"{name:17s} {connections:5d} {statistics.median(ratios):6.2f} "
                    f"{min(ratios):5.2f}-{max(ratios):4.2f} {mc:9.3f} {mt:9.3f} {mt / mc:6.2f}"
                )
        finally:
            for server in servers:
                server.stop()


def tokentide_workers(server: Server) -> int:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    try:
        return max(1, len(children.read_text().split()))
    except OSError:
        return 1


if __name__ == "__main__":
    main()
