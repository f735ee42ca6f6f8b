from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.services import admin_database_url, create_database, drop_database, kafka_bootstrap, unique


@pytest.fixture(scope="session")
def bootstrap() -> str:
    return kafka_bootstrap()


@pytest.fixture(scope="session")
def admin_url() -> str:
    return admin_database_url()


@pytest.fixture
def database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    dsn = create_database(admin_url)
    yield dsn
    drop_database(admin_url, dsn)


@pytest.fixture
def prefix() -> str:
    """A topic prefix of this test's own."""
    return unique("it") + "."
