"""`tokentide admin topics` against the real Kafka of the local stack (unique topic prefix).

The command runs as the compose and Helm jobs run it: a process, configured by environment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support.services import free_port, kafka_bootstrap, unique
from tokentide.kafka import RAW_RETENTION_MS

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture
def bootstrap() -> str:
    return kafka_bootstrap()


@pytest.fixture
def prefix(bootstrap: str) -> Iterator[str]:
    """A topic prefix of this test's own; its topics are deleted afterwards."""
    prefix = unique("deploy") + "."
    yield prefix
    asyncio.run(_delete_prefixed(bootstrap, prefix))


def topics(
    tmp_path: Path, bootstrap: str, prefix: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``tokentide admin topics <args>`` in a fresh directory (no .env), settings from ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENTIDE_", "KAFKA_", "DATABASE_"))}
    settings = {
        "KAFKA_BOOTSTRAP": bootstrap,
        "TOKENTIDE_TOPIC_PREFIX": prefix,
        "TOKENTIDE_PARTITIONS": str(PARTITIONS),
        "TOKENTIDE_STREAMS_APP_ID": f"{prefix}app",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "tokentide.cli", "admin", "topics", *args],
        cwd=tmp_path,
        env={**clean, **settings},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def rows(output: str) -> dict[str, list[str]]:
    """The command's table: topic -> [partitions, result, details...]."""
    lines = output.strip().splitlines()
    assert lines[0].split()[:3] == ["TOPIC", "PARTITIONS", "RESULT"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


async def _admin(bootstrap: str) -> Any:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


async def _describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    admin = await _admin(bootstrap)
    try:
        described = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        configs: dict[str, dict[str, str]] = {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        for response in await admin.describe_configs(resources):
            for resource in response.to_object()["resources"]:
                configs[resource["resource_name"]] = {
                    e["config_names"]: e["config_value"] for e in resource["config_entries"]
                }
        return {name: (described[name], configs[name]) for name in names}
    finally:
        await admin.close()


async def _alter(bootstrap: str, name: str, configs: dict[str, str]) -> None:
    admin = await _admin(bootstrap)
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)])
    finally:
        await admin.close()


async def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = await _admin(bootstrap)
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _delete_prefixed(bootstrap: str, prefix: str) -> None:
    admin = await _admin(bootstrap)
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def test_creates_checks_and_repairs_topics(tmp_path: Path, bootstrap: str, prefix: str) -> None:
    names = [f"{prefix}{n}" for n in ("otlp.raw.logs", "otlp.raw.metrics", "otlp.raw.traces")]
    names += [f"{prefix}{n}" for n in ("events", "points", "session.state", "session.signals", "rollups")]
    # The stream stage's own: its state changelog (named by the app id) and its dead letters.
    changelog, letters = f"{prefix}app-state-changelog", f"{prefix}streams.dead-letters"
    names += [changelog, letters]

    # --check on an empty prefix: everything missing, nothing created.
    done = topics(tmp_path, bootstrap, prefix, "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert {name: r[1] for name, r in rows(done.stdout).items()} == dict.fromkeys(names, "missing")
    assert "to create or update" in done.stderr

    # Create.
    done = topics(tmp_path, bootstrap, prefix)
    assert done.returncode == 0, done.stderr
    assert {name: r[1] for name, r in rows(done.stdout).items()} == dict.fromkeys(names, "created")
    described = asyncio.run(_describe(bootstrap, names))
    assert {name: count for name, (count, _) in described.items()} == dict.fromkeys(names, PARTITIONS)
    raw_logs, state, events = names[0], names[5], names[3]
    assert described[raw_logs][1]["retention.ms"] == str(RAW_RETENTION_MS)
    assert described[state][1]["cleanup.policy"] == "compact"
    assert described[events][1]["cleanup.policy"] == "delete"
    assert described[changelog][1]["cleanup.policy"] == "compact"
    assert described[letters][1]["cleanup.policy"] == "delete"
    assert described[letters][1]["max.message.bytes"] == "16777216"

    # Idempotent: a second run and a check change nothing.
    for args in ((), ("--check",)):
        done = topics(tmp_path, bootstrap, prefix, *args)
        assert done.returncode == 0, done.stderr
        assert {name: r[1] for name, r in rows(done.stdout).items()} == dict.fromkeys(names, "ok")

    # Drift: retention changed by hand (and another override an operator set) is reported by
    # --check, then repaired; the operator's other override survives.
    asyncio.run(_alter(bootstrap, raw_logs, {"retention.ms": "3600000", "segment.ms": "7200000"}))
    done = topics(tmp_path, bootstrap, prefix, "--check")
    assert done.returncode == 1
    assert rows(done.stdout)[raw_logs][1] == "differs"
    assert f"retention.ms: 3600000 -> {RAW_RETENTION_MS}" in done.stdout
    done = topics(tmp_path, bootstrap, prefix)
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout)[raw_logs][1] == "updated"
    config = asyncio.run(_describe(bootstrap, [raw_logs]))[raw_logs][1]
    assert config["retention.ms"] == str(RAW_RETENTION_MS)
    assert config["segment.ms"] == "7200000"
    assert config["max.message.bytes"] == "16777216"


def test_another_partition_count_fails_and_changes_nothing(
    tmp_path: Path, bootstrap: str, prefix: str
) -> None:
    assert topics(tmp_path, bootstrap, prefix).returncode == 0
    done = topics(tmp_path, bootstrap, prefix, TOKENTIDE_PARTITIONS=str(PARTITIONS + 2))
    assert done.returncode == 1
    assert f"TOKENTIDE_PARTITIONS={PARTITIONS + 2}" in done.stderr
    table = rows(done.stdout)
    assert table[f"{prefix}otlp.raw.logs"][:2] == [str(PARTITIONS), "ERROR"]
    described = asyncio.run(_describe(bootstrap, [f"{prefix}otlp.raw.logs"]))
    assert described[f"{prefix}otlp.raw.logs"][0] == PARTITIONS


def test_a_streams_changelog_with_other_partitions_fails(tmp_path: Path, bootstrap: str, prefix: str) -> None:
    changelog = f"{prefix}app-state-changelog"
    asyncio.run(_create(bootstrap, changelog, PARTITIONS - 1))
    done = topics(tmp_path, bootstrap, prefix)
    assert done.returncode == 1
    assert rows(done.stdout)[changelog][:2] == [str(PARTITIONS - 1), "ERROR"]
    assert "state cannot be re-partitioned" in done.stdout
    assert "TOKENTIDE_STREAMS_APP_ID" in done.stdout
    # The pipeline's own topics were still created.
    assert rows(done.stdout)[f"{prefix}events"][1] == "created"
    described = asyncio.run(_describe(bootstrap, [changelog]))
    assert described[changelog][0] == PARTITIONS - 1, "never changed"


def test_the_faust_stage_changelog_under_the_same_app_id_fails(
    tmp_path: Path, bootstrap: str, prefix: str
) -> None:
    """An upgrade from the faust-based stage that keeps TOKENTIDE_STREAMS_APP_ID is refused (the
    compose and Helm topics jobs then stop the release); a new id goes through."""
    faust = f"{prefix}app-sessions-changelog"
    asyncio.run(_create(bootstrap, faust, PARTITIONS))
    done = topics(tmp_path, bootstrap, prefix)
    assert done.returncode == 1
    assert rows(done.stdout)[faust][:2] == [str(PARTITIONS), "ERROR"]
    assert "new TOKENTIDE_STREAMS_APP_ID" in done.stdout
    assert f"TOKENTIDE_STREAMS_APP_ID={prefix}app" in done.stderr
    assert rows(done.stdout)[f"{prefix}app-state-changelog"][1] == "created"

    done = topics(tmp_path, bootstrap, prefix, TOKENTIDE_STREAMS_APP_ID=f"{prefix}app-v2")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert faust not in table
    assert table[f"{prefix}app-v2-state-changelog"][1] == "created"
    assert asyncio.run(_describe(bootstrap, [faust]))[faust][0] == PARTITIONS, "left as it was"


def test_unreachable_kafka_fails_with_a_clear_message(tmp_path: Path) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    done = topics(tmp_path, nowhere, unique("deploy") + ".", "--wait-s", "0", "--timeout-s", "3")
    assert done.returncode == 1
    assert f"cannot reach Kafka at {nowhere}" in done.stderr
    assert "Traceback" not in done.stderr


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    done = topics(tmp_path, "127.0.0.1:9", unique("deploy") + ".", TOKENTIDE_PARTITIONS="0")
    assert done.returncode == 2
    assert "invalid configuration" in done.stderr
