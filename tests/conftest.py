"""Session-wide housekeeping for every tier."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import containers
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


#: What touches the database layout (decision 14): storage, sink, dashboard, Grafana, the usage
#: exporter, and every end-to-end test (the pipeline always ends in the database). `make test`
#: runs these again on TimescaleDB (scripts/pytest_legs.py selects them by the ``db_layout``
#: marker added here). Left out: ingest, the stream stage, the notifier and the deploy checks,
#: which read or write no layout-dependent relation; and test_layouts_agree.py, which holds a
#: database of each layout itself.
DB_LAYOUT = (
    "e2e/",
    "integration/test_grafana_dashboards.py",
    "integration/test_live_stream_behind.py",
    "integration/test_migrate.py",
    "integration/test_query_plans.py",
    "integration/test_sink_database_outage.py",
    "integration/test_sink_exactly_once.py",
    "integration/test_sink_faults.py",
    "integration/test_sink_postgres.py",
    "integration/test_storage_layout.py",
    "integration/test_stream_positions.py",
    "integration/test_tenancy.py",
    "integration/test_tenant_isolation.py",
    "integration/test_timeline.py",
    "integration/test_usage_exporter.py",
)
TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`DB_LAYOUT` ``db_layout``."""
    for item in items:
        relative = item.path.resolve().relative_to(TESTS).as_posix()
        if any(
            relative == entry or (entry.endswith("/") and relative.startswith(entry)) for entry in DB_LAYOUT
        ):
            item.add_marker(pytest.mark.db_layout)


_containers: list[Callable[[], None]] = []


def pytest_configure(config: pytest.Config) -> None:
    """Where a Docker engine exists, run on Kafka and TimescaleDB containers (tests/support/containers.py)."""
    if not containers.wanted():
        return
    services = containers.start()
    _containers.append(services.stop)
    os.environ["KAFKA_BOOTSTRAP"] = services.kafka_bootstrap
    os.environ["DATABASE_URL"] = services.database_url


def pytest_unconfigure(config: pytest.Config) -> None:
    while _containers:
        _containers.pop()()
