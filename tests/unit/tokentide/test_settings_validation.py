"""Settings are read from the environment and refuse unsafe defaults at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tokentide.settings import (
    DEV_DATABASE_URL,
    DashboardSettings,
    DatabaseSettings,
    IngestSettings,
    KafkaSettings,
    MigrateSettings,
    SinkSettings,
    StreamsSettings,
)
from tokentide.topics import Signal

pytestmark = pytest.mark.usefixtures("clean_env")


def test_ingest_outside_open_mode_needs_a_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_REDACTION_KEY", "a-real-secret")
    with pytest.raises(ValidationError, match="DATABASE_URL is unset"):
        IngestSettings()


def test_ingest_outside_open_mode_needs_a_redaction_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ingest@db.example/tokentide")
    with pytest.raises(ValidationError, match="TOKENTIDE_REDACTION_KEY is unset"):
        IngestSettings()


def test_ingest_outside_open_mode_starts_with_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://ingest@db.example/tokentide")
    monkeypatch.setenv("TOKENTIDE_REDACTION_KEY", "a-real-secret")
    settings = IngestSettings()
    assert settings.open_mode is False
    assert settings.redaction_key.get_secret_value() == "a-real-secret"


def test_ingest_refuses_traces_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_OPEN_MODE", "1")
    assert IngestSettings().signals == {Signal.LOGS, Signal.METRICS}
    monkeypatch.setenv("TOKENTIDE_ACCEPT_TRACES", "1")
    assert IngestSettings().signals == set(Signal)


def test_ingest_starts_in_open_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_OPEN_MODE", "1")
    settings = IngestSettings()
    assert settings.open_mode is True
    assert settings.ingest_port == 4318


def test_ingest_reads_the_env_file_of_the_working_directory(tmp_path: Path) -> None:
    # clean_env made tmp_path the working directory.
    (tmp_path / ".env").write_text("TOKENTIDE_OPEN_MODE=1\nKAFKA_BOOTSTRAP=broker:19092\n")
    settings = IngestSettings()
    assert settings.open_mode is True
    assert settings.kafka_bootstrap == "broker:19092"


@pytest.mark.parametrize("settings_type", [DatabaseSettings, MigrateSettings, SinkSettings])
def test_dev_dsn_is_refused_outside_open_mode(settings_type: type[DatabaseSettings]) -> None:
    with pytest.raises(ValidationError, match="set DATABASE_URL"):
        settings_type()


def test_dev_dsn_is_refused_even_when_set_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DEV_DATABASE_URL)
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        DatabaseSettings()


def test_dev_dsn_is_accepted_in_open_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_OPEN_MODE", "true")
    assert DatabaseSettings().database_url.get_secret_value() == DEV_DATABASE_URL


@pytest.mark.parametrize("variable", ["DATABASE_URL", "TOKENTIDE_DATABASE_URL"])
def test_explicit_database_url_is_accepted_outside_open_mode(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    dsn = "postgresql://pipeline:s3cret@db.internal:5432/tokentide"
    monkeypatch.setenv(variable, dsn)
    settings = DatabaseSettings()
    assert settings.open_mode is False
    assert settings.database_url.get_secret_value() == dsn
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


@pytest.mark.parametrize("variable", ["KAFKA_BOOTSTRAP", "TOKENTIDE_KAFKA_BOOTSTRAP"])
def test_kafka_bootstrap_alias(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "kafka-0.kafka:9092,kafka-1.kafka:9092")
    assert KafkaSettings().kafka_bootstrap == "kafka-0.kafka:9092,kafka-1.kafka:9092"
    assert StreamsSettings().kafka_bootstrap == "kafka-0.kafka:9092,kafka-1.kafka:9092"


def test_kafka_bootstrap_default() -> None:
    assert KafkaSettings().kafka_bootstrap == "127.0.0.1:9092"


def test_topic_prefix_reaches_the_topic_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_TOPIC_PREFIX", "staging.")
    topics = StreamsSettings().topics
    assert all(name.startswith("staging.") for name in topics.all_raw() + topics.all_derived())


def test_the_dashboard_runs_with_read_keys_and_an_optional_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db/tokentide")
    settings = DashboardSettings()
    assert not settings.open_mode
    assert settings.dashboard_admin_token is None
    monkeypatch.setenv("TOKENTIDE_DASHBOARD_ADMIN_TOKEN", "s3cret")
    token = DashboardSettings().dashboard_admin_token
    assert token is not None
    assert token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(DashboardSettings())


def test_streams_dedup_window_has_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENTIDE_DEDUP_WINDOW", "3")
    with pytest.raises(ValidationError, match="dedup_window"):
        StreamsSettings()


def test_ingest_workers_default_to_the_usable_cores_within_the_budget() -> None:
    settings = IngestSettings(open_mode=True)
    assert settings.worker_count(cpus=2) == 2
    assert settings.worker_count(cpus=64) == 16  # 256 MiB of in-flight budget, 16 MiB requests
    assert IngestSettings(open_mode=True, ingest_workers=3).worker_count(cpus=64) == 3
    assert IngestSettings(open_mode=True, ingest_workers=1).worker_count(cpus=8) == 1


def test_ingest_workers_must_each_have_room_for_a_largest_request() -> None:
    with pytest.raises(ValidationError, match="4 workers"):
        IngestSettings(open_mode=True, ingest_workers=4, max_body_bytes=2**20, max_inflight_bytes=2 * 2**20)
