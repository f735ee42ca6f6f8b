"""Shared helpers of the deployment checks: the tools (helm, docker-compose) and settings names.

The tools are built into ``.local/bin`` by ``scripts/install-helm.sh`` and
``scripts/install-compose.sh`` (``make install`` runs both). Missing, a check that needs one
fails under CI (``CI=true``) and is skipped elsewhere, saying how to install it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from tests.support.services import missing_tool
from tokentide.settings import (
    DashboardSettings,
    IngestSettings,
    MigrateSettings,
    NotifySettings,
    SinkSettings,
    StreamsSettings,
)

REPO = Path(__file__).resolve().parents[2]
LOCAL_BIN = REPO / ".local" / "bin"
CHART = REPO / "k8s" / "tokentide"
COMPOSE_FILE = REPO / "docker-compose.yml"

#: The settings class each `tokentide` command reads, by its first arguments.
SETTINGS_BY_COMMAND: dict[tuple[str, ...], type[BaseSettings]] = {
    ("ingest",): IngestSettings,
    ("streams",): StreamsSettings,
    ("sink",): SinkSettings,
    ("dashboard",): DashboardSettings,
    ("notify",): NotifySettings,
    ("migrate",): MigrateSettings,
    ("admin", "topics"): StreamsSettings,
}

#: Variables every tokentide setting ignores but a deployment may set for another reason:
#: the bundled database's password, which the chart splices into DATABASE_URL.
HELPER_VARIABLES = frozenset({"POSTGRES_PASSWORD"})


def local_tool(name: str, installer: str) -> Path:
    """``.local/bin/<name>``; the test fails when it is missing."""
    path = LOCAL_BIN / name
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return missing_tool(f"{path} is missing: run `bash scripts/{installer}` (`make install` does)")


def settings_for(args: list[str]) -> type[BaseSettings]:
    """The settings class of ``tokentide <args>``."""
    for prefix, cls in SETTINGS_BY_COMMAND.items():
        if tuple(args[: len(prefix)]) == prefix:
            return cls
    raise AssertionError(f"`tokentide {' '.join(args)}` is not a command with settings")


def variable_names(cls: type[BaseSettings]) -> set[str]:
    """Every environment variable ``cls`` reads (pydantic-settings' env_prefix or aliases)."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice).upper() for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


SETTINGS_VARIABLES = frozenset().union(*(variable_names(cls) for cls in SETTINGS_BY_COMMAND.values()))
#: Test hooks that stop a service for good at a named point (the fault tests kill it there):
#: never in a deployment file.
TEST_ONLY_VARIABLES = frozenset(name for name in SETTINGS_VARIABLES if "_TEST_" in name)
#: On SIGTERM the stream stage gets 30 s to commit its batch, then leaves the group.
STREAMS_MIN_GRACE_S = 35


def build_settings(
    cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> BaseSettings:
    """``cls`` built from exactly ``env`` (none of the test process' settings, no .env file)."""
    for name in list(os.environ):
        if name.upper() in SETTINGS_VARIABLES:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cls(_env_file=None)  # type: ignore[call-arg]
