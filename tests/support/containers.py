"""Kafka and TimescaleDB in containers, where a Docker engine exists (a laptop, a CI runner
elsewhere): the same integration and end-to-end tests then run against the real
``timescale/timescaledb`` image instead of the local servers that ``make test`` starts. The one
container serves both legs of ``make test`` (scripts/pytest_legs.py) as DATABASE_URL and
TIMESCALE_DATABASE_URL: each database's layout is the leg's ``TOKENTIDE_DB_LAYOUT`` (plain is
forced in the plain leg, so its tables are native partitions even on TimescaleDB's server).

Selected automatically at the start of the test session (``tests/conftest.py``) when the Docker
engine answers; ``TOKENTIDE_TESTCONTAINERS=0`` turns it off, ``=1`` makes a missing engine an
error. This machine has no Docker engine: here the suite runs on the local services.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

TIMESCALEDB_IMAGE = "timescale/timescaledb:2.17.2-pg17"  # as docker-compose.yml
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"  # testcontainers' KRaft support targets this image


@dataclass(frozen=True)
class Services:
    kafka_bootstrap: str
    database_url: str
    stop: Callable[[], None]


def wanted() -> bool:
    """Whether to use containers: ``TOKENTIDE_TESTCONTAINERS`` (auto by default) and the engine."""
    setting = os.environ.get("TOKENTIDE_TESTCONTAINERS", "auto").lower()
    if setting in ("0", "false", "no", "off"):
        return False
    available = docker_available()
    if setting in ("1", "true", "yes", "on") and not available:
        raise RuntimeError("TOKENTIDE_TESTCONTAINERS=1 but no Docker engine answers")
    return available


def docker_available() -> bool:
    try:
        import docker  # noqa: PLC0415 (only where containers are considered)

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 (no engine, no socket, no permission: all mean "not here")
        return False


def start() -> Services:
    """Start Kafka (KRaft) and TimescaleDB; the database URL is the superuser's (tests create
    a database of their own per module, as on the local server)."""
    from testcontainers.community.kafka import KafkaContainer  # noqa: PLC0415
    from testcontainers.community.postgres import PostgresContainer  # noqa: PLC0415

    kafka = KafkaContainer(KAFKA_IMAGE).with_kraft()
    database = PostgresContainer(
        TIMESCALEDB_IMAGE,
        username="tokentide",
        password="tokentide",  # noqa: S106 (a throw-away test container)
        dbname="tokentide",
        driver=None,
    )
    kafka.start()
    try:
        database.start()
    except Exception:
        kafka.stop()
        raise

    def stop() -> None:
        database.stop()
        kafka.stop()

    return Services(kafka.get_bootstrap_server(), database.get_connection_url(), stop)
