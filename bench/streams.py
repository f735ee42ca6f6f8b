"""Stream-stage benchmark: events + data points per second of one worker, and the latency
from a raw message to the signal it raises (not a test).

On the Kafka given by KAFKA_BOOTSTRAP (``make bench-streams`` provides one):

1. throughput: a backlog of real-shaped Claude Code exports (the captured
   ``stub-tool-traces-protobuf`` logs export, 9 events, and metrics export, 15 points,
   renumbered per session) is produced to the raw topics of a fresh prefix; one
   ``tokentide streams`` worker is started and timed from ready until its consumer group has
   committed the end of every partition;
2. latency: with the worker idle, sessions whose context grows past 80% are fed live, one
   export at a time at a steady rate; each ``context_warning`` is matched with the raw message
   that caused it (by event time), and the latency is the signal record's Kafka timestamp minus
   the raw record's.

``--workers N`` starts N workers in one consumer group, sharing the raw topics' partitions (4
by default, ``TOKENTIDE_PARTITIONS`` when set), timed from the moment all are ready; what the
first ones applied before that is left out of the rate.

With ``BENCH_PYSPY=<path of py-spy>`` the (first) worker is also sampled for the first 20 s of the
backlog into ``streams-profile.txt`` in the current directory, py-spy's raw format.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, start_profiler  # noqa: E402
from tests.support.captures import FIXTURES, export_for  # noqa: E402
from tests.support.services import free_port, kafka_bootstrap, unique, wait_caught_up  # noqa: E402
from tokentide.kafka import ensure_topics, pipeline_topics  # noqa: E402
from tokentide.records import SignalBatch  # noqa: E402
from tokentide.settings import KafkaSettings  # noqa: E402
from tokentide.topics import Signal, Topics  # noqa: E402

CASE = FIXTURES / "claude-code" / "stub-tool-traces-protobuf"
LOGS = ExportLogsServiceRequest.FromString((CASE / "0002_v1_logs.pb").read_bytes())
METRICS = ExportMetricsServiceRequest.FromString((CASE / "0003_v1_metrics.pb").read_bytes())
EVENTS_PER_EXPORT = sum(len(s.log_records) for r in LOGS.resource_logs for s in r.scope_logs)
POINTS_PER_EXPORT = sum(
    len(m.sum.data_points) for r in METRICS.resource_metrics for s in r.scope_metrics for m in s.metrics
)


def metrics_for(session_id: str, n: int) -> bytes:
    request = ExportMetricsServiceRequest()
    request.CopyFrom(METRICS)
    now = time.time_ns()
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.sum.data_points:
                    point.start_time_unix_nano = now + n * 1_000_000_000
                    point.time_unix_nano = now + (n + 1) * 1_000_000_000
                    for kv in point.attributes:
                        if kv.key == "session.id":
                            kv.value.string_value = session_id
    return request.SerializeToString()


def logs_with_context(session_id: str, n: int, context_tokens: int, time_ns: int) -> bytes:
    """A logs export whose main api_request puts ``context_tokens`` in the context at ``time_ns``."""
    request = ExportLogsServiceRequest.FromString(export_for(LOGS, session_id, n))
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for j, record in enumerate(sl.log_records):
                record.time_unix_nano = record.observed_time_unix_nano = time_ns + j
                attrs = {kv.key: kv for kv in record.attributes}
                if (
                    "input_tokens" in attrs
                    and attrs["query_source"].value.string_value != "generate_session_title"
                ):
                    attrs["input_tokens"].value.int_value = context_tokens - 4800
    return request.SerializeToString()


def headers(signal_name: str, session_id: str) -> list[tuple[str, bytes]]:
    return [
        ("tt-tenant", b"default"),
        ("tt-signal", signal_name.encode()),
        ("tt-received-at-ns", str(time.time_ns()).encode()),
        ("tt-session", session_id.encode()),
    ]


def start_worker(
    bootstrap: str, prefix: str, workdir: Path, index: int = 0
) -> tuple[subprocess.Popen[bytes], str]:
    """Worker ``index`` of the stage (its own data directory, port and log, one consumer group)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_TOPIC_PREFIX=prefix,
        TOKENTIDE_STREAMS_APP_ID=prefix + "streams",
        TOKENTIDE_DATA_DIR=str(workdir / f"data{index}"),
        TOKENTIDE_STREAMS_PORT=str(port),
        TOKENTIDE_LOG_LEVEL="WARNING",
    )
    with (workdir / f"streams{index}.log").open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tokentide")), "streams"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, f"http://127.0.0.1:{port}"


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"worker exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"worker not ready:\n{log.read_text()[-3000:]}")


async def applied(client: httpx.AsyncClient, urls: list[str]) -> float:
    """Raw messages the workers at ``urls`` have applied and committed, all together (each
    counts a batch after its transaction committed, so a partition that moved is not counted
    twice)."""
    done = 0.0
    for url in urls:
        text = (await client.get(url + "/metrics")).text
        done += sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tokentide_streams_messages_total{")
        )
    return done


async def processed(urls: list[str], messages: int, timeout_s: float) -> None:
    """Poll the workers' message counters (every 20 ms) until they have applied ``messages``."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            if await applied(client, urls) >= messages:
                return
            await asyncio.sleep(0.02)
    raise TimeoutError(f"the workers did not apply {messages} messages in {timeout_s}s")


async def backlog(
    bootstrap: str, topics: Topics, sessions: int, logs_per: int, metrics_every: int
) -> tuple[int, int, int]:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        compression_type="lz4",
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    messages = records_events = records_points = 0
    try:
        for n in range(logs_per):
            futures = []
            for s in range(sessions):
                sid = f"bench-{s}"
                key = f"default/{sid}".encode()
                futures.append(
                    await producer.send(
                        topics.raw(Signal.LOGS),
                        export_for(LOGS, sid, n),
                        key=key,
                        headers=headers("logs", sid),
                    )
                )
                records_events += EVENTS_PER_EXPORT
                if n % metrics_every == 0:
                    futures.append(
                        await producer.send(
                            topics.raw(Signal.METRICS),
                            metrics_for(sid, n),
                            key=key,
                            headers=headers("metrics", sid),
                        )
                    )
                    records_points += POINTS_PER_EXPORT
            await asyncio.gather(*futures)
            messages += len(futures)
    finally:
        await producer.stop()
    return messages, records_events, records_points


async def live_latency(bootstrap: str, topics: Topics, sessions: int, rate: float) -> list[float]:
    """Feed sessions whose context crosses 80% on their 9th export; latencies in seconds."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        topics.session_signals,
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        isolation_level="read_committed",  # as the sink and the notifier read: after the commit
    )
    await producer.start()
    await consumer.start()
    await consumer.getmany(timeout_ms=1000)  # joins and positions at the end
    sent_at: dict[int, int] = {}  # event time of the crossing request -> raw record timestamp (ms)
    latencies: list[float] = []
    try:
        base = time.time_ns()
        for n in range(10):  # context 20k, 40k, ... 200k of a 200k window: 80% at n = 7
            for s in range(sessions):
                sid = f"live-{s}"
                event_ns = base + (n * sessions + s) * 1_000_000
                body = logs_with_context(sid, n, 20_000 * (n + 1), event_ns)
                md = await producer.send_and_wait(
                    topics.raw(Signal.LOGS), body, key=f"default/{sid}".encode(), headers=headers("logs", sid)
                )
                sent_at[event_ns] = md.timestamp
                await asyncio.sleep(1 / rate)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(latencies) < sessions:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    for sig in SignalBatch.from_bytes(record.value).signals:
                        if sig.kind == "context_warning":
                            raw_ms = next(
                                (t for ns, t in sent_at.items() if abs(ns - sig.time_ns) < 1_000_000), None
                            )
                            if raw_ms is not None:
                                latencies.append((record.timestamp - raw_ms) / 1000)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--exports", type=int, default=40, help="logs exports per session")
    parser.add_argument("--metrics-every", type=int, default=4, help="one metrics export per N logs exports")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="stream workers in one group (the raw topics' partitions are shared among them)",
    )
    parser.add_argument("--live-sessions", type=int, default=50)
    parser.add_argument(
        "--live-rate", type=float, default=200.0, help="raw messages per second in the latency run"
    )
    args = parser.parse_args()
    bootstrap = kafka_bootstrap()
    prefix = unique("sbench") + "."
    topics = Topics(prefix)
    await ensure_topics(
        bootstrap, pipeline_topics(KafkaSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix))
    )
    messages, events, points = await backlog(
        bootstrap, topics, args.sessions, args.exports, args.metrics_every
    )
    print(
        f"backlog: {messages} raw messages = {events} events + {points} data points, {args.sessions} sessions"
    )
    with tempfile.TemporaryDirectory(prefix="tokentide-bench-") as tmp:
        workdir = Path(tmp)
        workers = [start_worker(bootstrap, prefix, workdir, i) for i in range(args.workers)]
        urls = [url for _, url in workers]
        try:
            for i, (process, url) in enumerate(workers):
                wait_ready(url, process, workdir / f"streams{i}.log")
            profiler = start_profiler(workers[0][0].pid, "streams-profile.txt", 20)
            async with httpx.AsyncClient(timeout=5) as client:
                # With several workers, the first ready may have begun before the last was:
                # what it applied by now is left out of the rate.
                before = await applied(client, urls)
            started = time.monotonic()
            cpu0 = [cpu_seconds(process.pid) for process, _ in workers]
            await processed(urls, messages, timeout_s=600)
            elapsed = time.monotonic() - started
            cpus = [cpu_seconds(process.pid) - c for (process, _), c in zip(workers, cpu0, strict=True)]
            cpu = sum(cpus)
            await wait_caught_up(
                bootstrap,
                prefix + "streams",
                [topics.raw(Signal.LOGS), topics.raw(Signal.METRICS)],
                timeout_s=600,
            )
            # The events and points of the messages applied in the timed span, in proportion.
            share = (messages - before) / messages
            records = (events + points) * share
            print(
                f"throughput: {(messages - before) / elapsed:.0f} messages/s, {records / elapsed:.0f} "
                f"events+points/s ({elapsed:.1f} s from ready to the last message applied; worker CPU "
                f"{100 * cpu / elapsed:.0f}% of a core, {1e6 * cpu / records:.0f} us per record)"
            )
            if len(workers) > 1:
                print(
                    f"  {len(workers)} workers, {before:.0f} messages applied before the last was ready; "
                    "CPU per worker: " + ", ".join(f"{100 * c / elapsed:.0f}%" for c in cpus)
                )
            if profiler is not None:
                await asyncio.to_thread(profiler.wait)
            latencies = sorted(await live_latency(bootstrap, topics, args.live_sessions, args.live_rate))
            if len(latencies) >= 2:
                q = statistics.quantiles(latencies, n=100)
                print(
                    f"latency raw -> context_warning ({len(latencies)} signals, {args.live_rate:.0f} msg/s): "
                    f"p50 {1000 * q[49]:.0f} ms  p99 {1000 * q[98]:.0f} ms  max {1000 * latencies[-1]:.0f} ms"
                )
            else:
                print(f"latency: only {len(latencies)} signals seen")
        finally:
            for process, _ in workers:
                os.killpg(process.pid, signal.SIGTERM)
            for process, _ in workers:
                process.wait(60)


if __name__ == "__main__":
    asyncio.run(main())
