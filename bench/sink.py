"""Sink benchmark: rows/s one sink process writes into PostgreSQL, against a bare COPY of the
same rows with psql, in the same run (not a test).

On the Kafka and PostgreSQL given by KAFKA_BOOTSTRAP and DATABASE_URL (``make bench-sink``
provides both):

1. a backlog of real-shaped messages is produced to the derived topics of a fresh prefix:
   per message one session's batch of ``api_request``-like events (typed columns plus a
   dozen attributes, as Claude Code sends) or of metric points, as the stream stage writes
   them (the records and their prepared COPY lines, decision 44);
2. one sink (the SinkRunner with the PostgreSQL writer, in this process) is started on a
   fresh migrated database and timed until its consumer group committed the end of every
   partition (Kafka fetch, decoding the lines, COPY into the tables, series catalog,
   positions, commits);
3. the rows it wrote are dumped (COPY TO) and loaded into a second fresh migrated database
   with ``psql \\copy`` straight into the same tables (same partitions and indexes), timed.

Goal (issue 5): the sink at >= 80% of the bare COPY's rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sinks.base import SinkMetrics, SinkRunner  # noqa: E402
from sinks.postgres.writer import PostgresWriter  # noqa: E402
from tests.support.services import (  # noqa: E402
    admin_database_url,
    create_database,
    drop_database,
    kafka_bootstrap,
    unique,
    wait_caught_up,
)
from tokentide.kafka import ensure_topics, pipeline_topics  # noqa: E402
from tokentide.records import Event, EventBatch, Point, PointBatch, Tokens  # noqa: E402
from tokentide.settings import SinkSettings  # noqa: E402

try:  # the sink's rows, built by the stream stage (decision 44; older versions have none)
    from sinks.postgres.rows import with_rows as prepared
except ImportError:

    def prepared(batch: Any) -> Any:
        return batch


TABLES = ("events", "metric_series", "metric_points")
ATTRIBUTES = {
    "event.name": "api_request",
    "event.timestamp": "2026-11-24T01:50:57.909Z",
    "session.id": "",
    "user.id": "dbcf3b6c9d2b4f0e8e2c2a0f5c1d7e9a3b4c5d6e7f8091a2b3c4d5e6f7081920",
    "organization.id": "8a7b6c5d-4e3f-2a1b-0c9d-8e7f6a5b4c3d",
    "user.account_uuid": "0c716b3c-2f4e-4a5b-9c8d-7e6f5a4b3c2d",
    "terminal.type": "xterm-256color",
    "app.version": "2.1.3",
    "query_source": "repl_main_thread",
    "speed": "normal",
    "duration_ms": "812",
    "cost_usd": "0.011175",
}


def event_message(session: str, n: int, per_message: int) -> bytes:
    now = time.time_ns()
    events = [
        Event(
            tenant="default",
            session_id=session,
            event_id=f"{session}-{n}-{i}",
            agent="claude_code",
            name="api_request",
            time_ns=now + i,
            sequence=n * per_message + i,
            user_id=ATTRIBUTES["user.id"],
            model="claude-opus-4-8",
            query_source="repl_main_thread",
            request_id=f"req_{session}_{n}_{i}",
            duration_ms=812.0,
            tokens=Tokens(input=1200 + i, output=42, cache_read=4500, cache_creation=300),
            cost_nanos=11_175_000,
            cost_source="agent",
            attributes={**ATTRIBUTES, "session.id": session},
        )
        for i in range(per_message)
    ]
    return prepared(EventBatch(events=events)).to_bytes()


def point_message(session: str, n: int, per_message: int) -> bytes:
    now = time.time_ns()
    points = [
        Point(
            tenant="default",
            session_id=session,
            agent="claude_code",
            name="claude_code.token.usage",
            series_id=f"{session}-series-{i % 5}",
            time_ns=now + i * 1000,  # PostgreSQL keeps microseconds
            start_time_ns=now - 10**9,
            value=float(n + i),
            temporality=1,
            unit="tokens",
            attributes={"session.id": session, "type": ("input", "output", "cacheRead")[i % 3], "model": "m"},
        )
        for i in range(per_message)
    ]
    return prepared(PointBatch(points=points)).to_bytes()


async def produce(bootstrap: str, settings: SinkSettings, messages: int, per_message: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        pending = []
        for n in range(messages):
            session = f"s-{n % 500}"
            key = f"default/{session}".encode()
            if n % 2:
                value, topic = point_message(session, n, per_message), settings.topics.points
            else:
                value, topic = event_message(session, n, per_message), settings.topics.events
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def counts(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}  # type: ignore[index]  # noqa: S608


def psql() -> str:
    found = shutil.which("psql") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/psql"))), None)
    if found is None:
        raise SystemExit("psql not found: run `bash scripts/install-system-deps.sh`")
    return str(found)


def bare_copy(source: str, target: str, workdir: Path) -> float:
    """Dump the sink's rows, load them into ``target`` with psql \\copy; seconds of the load."""
    with psycopg.connect(source) as conn:
        days = [r[0] for r in conn.execute("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM events")]
        for table in TABLES:
            with (
                (workdir / f"{table}.copy").open("wb") as out,
                conn.cursor().copy(f"COPY (SELECT * FROM {table}) TO STDOUT") as copy,  # noqa: S608
            ):
                for chunk in copy:
                    out.write(chunk)
    with psycopg.connect(target, autocommit=True) as conn:
        for day in days:
            for parent in ("events", "metric_points"):
                conn.execute("SELECT tokentide_create_partitions(%s, %s, %s)", (parent, day, day))
    script = "\n".join(f"\\copy {t} FROM '{workdir / (t + '.copy')}'" for t in TABLES)
    started = time.perf_counter()
    subprocess.run(
        [psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", "-"],
        input=script.encode(),
        check=True,
    )
    # One psql, one connection: the three COPYs back to back, as the sink's batch would be.
    return time.perf_counter() - started


async def first_commit(registry: CollectorRegistry) -> float:
    """When the sink committed its first batch (its consumer joined and was assigned)."""
    while not registry.get_sample_value("tokentide_sink_batches_total"):  # noqa: ASYNC110 - a counter, no event to wait on
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--messages", type=int, default=8000, help="Kafka messages (half events, half points)"
    )
    parser.add_argument("--per-message", type=int, default=25, help="records per message")
    parser.add_argument("--batch-max-messages", type=int, default=2000)
    args = parser.parse_args()

    bootstrap = kafka_bootstrap()
    admin = admin_database_url()
    sink_db, copy_db = create_database(admin), create_database(admin)
    prefix = unique("bench-sink-") + "."
    settings = SinkSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        database_url=sink_db,
        open_mode=True,
        sink_group_id=prefix + "sink",
        batch_max_messages=args.batch_max_messages,
        batch_linger_ms=50,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-sink-"))
    try:
        await ensure_topics(bootstrap, pipeline_topics(settings))
        print(f"producing {args.messages} messages x {args.per_message} records ...", flush=True)
        await produce(bootstrap, settings, args.messages, args.per_message)

        writer = PostgresWriter(sink_db, retention=None, days_ahead=7)
        registry = CollectorRegistry()
        runner = SinkRunner(settings, writer, SinkMetrics(registry))
        cpu0, started = os.times(), time.perf_counter()
        await runner.start()
        first_batch = asyncio.create_task(first_commit(registry))
        topics = [settings.topics.events, settings.topics.points]
        await wait_caught_up(bootstrap, settings.sink_group_id, topics, 600)
        sink_s = time.perf_counter() - started
        steady_s = time.perf_counter() - await first_batch
        cpu1 = os.times()
        await runner.stop()
        rows = counts(sink_db)
        total = sum(rows.values())
        dead = sum(
            m.value
            for f in registry.collect()
            for m in f.samples
            if m.name == "tokentide_sink_dead_letters_total"
        )
        if dead:
            raise SystemExit(f"{dead:.0f} rows were dead-lettered: the benchmark's rows should all be valid")

        copy_s = await asyncio.to_thread(bare_copy, sink_db, copy_db, workdir)
        if counts(copy_db) != rows:
            raise SystemExit("the bare COPY loaded other rows than the sink wrote")
        sink_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        print(f"\nrows: {rows} (total {total:,})")
        print("| path | seconds | rows/s |")
        print("|---|---|---|")
        print(f"| sink, from start (consumer group join included) | {sink_s:.2f} | {total / sink_s:,.0f} |")
        print(f"| sink, from its first committed batch | {steady_s:.2f} | {total / steady_s:,.0f} |")
        print(f"| bare COPY (psql \\copy, same rows and tables) | {copy_s:.2f} | {total / copy_s:,.0f} |")
        print(
            f"\nsink / bare COPY: {copy_s / sink_s:.0%} from start, {copy_s / steady_s:.0%} steady;"
            f" sink process CPU {sink_cpu:.2f} s ({sink_cpu / sink_s:.0%} of a core)"
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        drop_database(admin, sink_db)
        drop_database(admin, copy_db)


if __name__ == "__main__":
    asyncio.run(main())
