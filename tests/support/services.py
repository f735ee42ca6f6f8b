"""Access to the real Kafka and PostgreSQL that ``make test`` starts (scripts/stack.py).

A missing service is a test failure, never a skip: the suite is meant to run through
``make test``, which starts both, or with ``KAFKA_BOOTSTRAP`` / ``DATABASE_URL`` pointing at
existing ones.

Two storage layouts (decision 14): ``make test`` runs the suite on plain PostgreSQL, then the
tests marked ``db_layout`` again with ``DATABASE_URL`` on a server with TimescaleDB
(scripts/pytest_legs.py); ``TOKENTIDE_DB_LAYOUT`` says which layout every database a test
migrates gets (:func:`layout_of` reads what one got). Tests comparing the two layouts reach the
TimescaleDB server as ``TIMESCALE_DATABASE_URL`` (:func:`timescale_admin_url`): missing, it is a
failure like any missing service, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterable
from typing import Any, NoReturn

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg import sql

from tokentide.kafka import ensure_topics, pipeline_topics
from tokentide.migrate import Layout, database_layout, migrate
from tokentide.settings import SinkSettings

#: The admin URL of a PostgreSQL server with TimescaleDB, for tests of both layouts at once.
TIMESCALE_URL_ENV = "TIMESCALE_DATABASE_URL"


def require_env(name: str, what: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: {what} is required. Run the suite with `make test` "
            f"(it starts Kafka and PostgreSQL), or set {name} to an existing service."
        )
    return value


def missing_tool(message: str) -> NoReturn:
    """A tool the suite needs is not installed: a failure, never a skip, like a missing service
    (``make install`` installs every one of them)."""
    pytest.fail(message)


def kafka_bootstrap() -> str:
    bootstrap = require_env("KAFKA_BOOTSTRAP", "a real Kafka broker")
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=3).close()
    except OSError as exc:
        pytest.fail(f"Kafka at {bootstrap} is not reachable ({exc}); start it with `make test`/`make up`")
    return bootstrap


def admin_database_url() -> str:
    url = require_env("DATABASE_URL", "a real PostgreSQL server")
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at DATABASE_URL is not reachable ({exc}); start it with `make test`")
    return url


def timescale_admin_url() -> str:
    """``TIMESCALE_DATABASE_URL``, checked: reachable, with the timescaledb extension available.

    Unset: a failure, like any missing service (never a skip: a test that did not run must not
    look passed).
    """
    url = os.environ.get(TIMESCALE_URL_ENV, "").strip()
    if not url:
        why = (
            f"{TIMESCALE_URL_ENV} is not set: a PostgreSQL server with TimescaleDB is needed. "
            "`make test` starts one when TIMESCALEDB_SOURCE names a TimescaleDB source tarball "
            "(.ci/run sets it) or TimescaleDB is installed."
        )
        pytest.fail(why)
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            found = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
            available = found.fetchone() is not None
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL at {TIMESCALE_URL_ENV} is not reachable ({exc})")
    if not available:
        pytest.fail(f"the server at {TIMESCALE_URL_ENV} has no timescaledb extension")
    return url


def layout_of(dsn: str) -> Layout:
    """The storage layout the (migrated) database ``dsn`` was given."""
    with psycopg.connect(dsn) as conn:
        return database_layout(conn)


#: Marks every name this test process makes unique (``x`` is not a hex digit, so no other
#: run's names contain it): its Kafka topics are deleted at the end of the session.
RUN_MARK = f"{uuid.uuid4().hex[:4]}x"


def unique(prefix: str) -> str:
    return f"{prefix}{RUN_MARK}{uuid.uuid4().hex[:8]}"


async def delete_run_topics(bootstrap: str) -> int:
    """Delete the topics this test process created (their names hold :data:`RUN_MARK`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if RUN_MARK in t]
        if mine:
            await admin.delete_topics(mine, timeout_ms=30_000)
        return len(mine)
    finally:
        await admin.close()


def create_database(admin_url: str, *, migrated: bool = True, layout: str | None = None) -> str:
    """Create a database of its own (migrated unless told otherwise, in ``layout``, by default
    ``TOKENTIDE_DB_LAYOUT``'s); returns its DSN."""
    name = unique("tokentide_test_")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    if migrated:
        migrate(dsn, layout=layout)
    return dsn


def drop_database(admin_url: str, dsn: str) -> None:
    """Drop a test database. A backend of another role (a tenant role a test logged in as) may
    still be exiting after its client closed; FORCE may not terminate it, so wait for it."""
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name)))
    deadline = time.monotonic() + 30
    with psycopg.connect(admin_url, autocommit=True) as conn:
        while True:
            try:
                conn.execute(drop)
                return
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def end_offsets(
    bootstrap: str, topics: Iterable[str], *, isolation_level: str = "read_uncommitted"
) -> dict[TopicPartition, int]:
    """End offset of every partition of ``topics`` (topics that do not exist are left out): the
    high watermark, or with ``isolation_level="read_committed"`` the last stable offset (what a
    read-committed consumer can reach while a transaction is open)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    partitions = [
        TopicPartition(topic["topic"], partition["partition"])
        for topic in described
        if topic["error_code"] == 0
        for partition in topic["partitions"]
    ]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def read_all(
    bootstrap: str, topic: str, timeout_s: float = 10.0, *, isolation_level: str = "read_committed"
) -> list[object]:
    """Every message currently in ``topic`` (up to its end offsets at call time). Read committed
    by default, as every consumer of derived topics reads: records of aborted transactions are
    left out (on topics written without transactions it makes no difference)."""
    ends = await end_offsets(bootstrap, [topic], isolation_level=isolation_level)
    wanted = {tp: end for tp, end in ends.items() if end > 0}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation_level
    )
    await consumer.start()
    out: list[object] = []
    try:
        consumer.assign(list(wanted))
        await consumer.seek_to_beginning(*wanted)
        deadline = time.monotonic() + timeout_s
        while wanted and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
            # The position, not the last record: it steps over transaction markers and aborted
            # records, which are never handed out.
            for tp in list(wanted):
                if await consumer.position(tp) >= wanted[tp]:
                    wanted.pop(tp)
    finally:
        await consumer.stop()
    return out


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """Consumer group ``group``'s committed offsets, by (topic, partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in offsets.items()}


async def wait_caught_up(bootstrap: str, group: str, topics: list[str], timeout_s: float = 60.0) -> None:
    """Wait until consumer group ``group`` committed offsets at the end of every partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            ends = await end_offsets(bootstrap, topics)
            committed = await admin.list_consumer_group_offsets(group)
            behind = {
                tp: end - (committed[tp].offset if tp in committed else 0)
                for tp, end in ends.items()
                if end > (committed[tp].offset if tp in committed else 0)
            }
            if not behind:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"consumer group {group} still behind after {timeout_s}s: {behind}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def sink_settings(bootstrap: str, prefix: str, database_url: str, **overrides: Any) -> SinkSettings:
    """A test sink's settings (open mode, its own group, a 50 ms linger, ``overrides``), with
    the pipeline's topics made."""
    fields: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": prefix,
        "database_url": database_url,
        "open_mode": True,
        "sink_group_id": prefix + "sink",
        "batch_linger_ms": 50,
        **overrides,
    }
    settings = SinkSettings(**fields)
    await ensure_topics(bootstrap, pipeline_topics(settings))
    return settings
