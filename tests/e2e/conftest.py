from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import Pipeline
from tests.support.services import admin_database_url, create_database, drop_database, kafka_bootstrap


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """The four tokentide services as processes, on a database and topics of their own."""
    bootstrap = kafka_bootstrap()
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    workdir: Path = tmp_path_factory.mktemp("pipeline")
    pipe = Pipeline(bootstrap, dsn, workdir)
    try:
        pipe.start()
        yield pipe
    finally:
        pipe.stop()
        pipe.cleanup()
        drop_database(admin_url, dsn)
