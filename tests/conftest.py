"""Session-wide housekeeping for every tier."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import containers
from tests.support.layouts import touches_layout
from tests.support.services import RUN_MARK, delete_run_topics


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Delete the Kafka topics this run created (names holding ``RUN_MARK``): a broker that
    keeps every test run's topics ends up with tens of thousands of partition directories
    and dies of too many open files."""
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        return
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=2).close()
    except (OSError, ValueError):
        return  # nothing to clean on a broker that is not there
    try:
        deleted = asyncio.run(asyncio.wait_for(delete_run_topics(bootstrap), timeout=60))
    except Exception as exc:  # noqa: BLE001 (housekeeping must not change the run's outcome)
        session.config.get_terminal_writer().line(f"could not delete run {RUN_MARK}'s topics: {exc}")
        return
    if deleted:
        session.config.get_terminal_writer().line(f"deleted {deleted} Kafka topics of run {RUN_MARK}")


TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``db_layout`` what touches the database layout (tests/support/layouts.py): `make test`
    runs it again on TimescaleDB."""
    for item in items:
        if touches_layout(item.path.resolve().relative_to(TESTS).as_posix()):
            item.add_marker(pytest.mark.db_layout)


_containers: list[Callable[[], None]] = []


def pytest_configure(config: pytest.Config) -> None:
    """Where a Docker engine exists, run on Kafka and TimescaleDB containers (tests/support/containers.py)."""
    if not containers.wanted():
        return
    services = containers.start()
    _containers.append(services.stop)
    os.environ["KAFKA_BOOTSTRAP"] = services.kafka_bootstrap
    # One TimescaleDB server for both layouts: TOKENTIDE_DB_LAYOUT decides each database's.
    os.environ["DATABASE_URL"] = services.database_url
    os.environ["TIMESCALE_DATABASE_URL"] = services.database_url


def pytest_unconfigure(config: pytest.Config) -> None:
    while _containers:
        _containers.pop()()
