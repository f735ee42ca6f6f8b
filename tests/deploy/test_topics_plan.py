"""`tokentide admin topics`' decisions (tokentide.admin.plan_topics), without Kafka."""

from __future__ import annotations

import pytest

from streams.app import stage_topics
from tests.deploy.conftest import build_settings
from tokentide.admin import (
    FAUST_CHANGELOG,
    ExistingTopic,
    TopicPlan,
    TopicStatus,
    plan_topics,
    retired_topics,
)
from tokentide.kafka import TopicSpec, pipeline_topics
from tokentide.settings import StreamsSettings

pytestmark = pytest.mark.deploy

RAW = TopicSpec("otlp.raw.logs", 4, {"retention.ms": "604800000", "max.message.bytes": "16777216"})
STATE = TopicSpec("session.state", 4, {"cleanup.policy": "compact"})
APP = "tokentide-streams"
CHANGELOG = TopicSpec(f"{APP}-state-changelog", 4, {"cleanup.policy": "compact"})


def existing(name: str, partitions: int, rf: int = 1, **config: str) -> ExistingTopic:
    return ExistingTopic(name, partitions, rf, config, {})


def plan(*topics: ExistingTopic, rf: int = 1) -> dict[str, TopicPlan]:
    plans = plan_topics(
        [RAW, STATE, CHANGELOG],
        {t.name: t for t in topics},
        replication_factor=rf,
        state_topics={CHANGELOG.name},
        retired=retired_topics(APP),
    )
    return {p.name: p for p in plans}


def test_missing_topics_are_created() -> None:
    plans = plan()
    assert {name: p.status for name, p in plans.items()} == {
        "otlp.raw.logs": TopicStatus.CREATE,
        "session.state": TopicStatus.CREATE,
        CHANGELOG.name: TopicStatus.CREATE,
    }


def test_matching_topics_are_ok() -> None:
    plans = plan(
        existing("otlp.raw.logs", 4, **{"retention.ms": "604800000", "max.message.bytes": "16777216"}),
        existing("session.state", 4, **{"cleanup.policy": "compact"}),
        existing(CHANGELOG.name, 4, **{"cleanup.policy": "compact"}),
    )
    assert len(plans) == 3
    assert all(p.status is TopicStatus.OK for p in plans.values())


def test_differing_configs_are_updated() -> None:
    plans = plan(
        existing("otlp.raw.logs", 4, **{"retention.ms": "86400000", "max.message.bytes": "16777216"}),
        existing("session.state", 4, **{"cleanup.policy": "delete"}),
    )
    raw, state = plans["otlp.raw.logs"], plans["session.state"]
    assert raw.status is TopicStatus.UPDATE
    assert raw.changes == {"retention.ms": ("86400000", "604800000")}
    assert state.changes == {"cleanup.policy": ("delete", "compact")}


def test_another_partition_count_is_an_error_never_a_change() -> None:
    plans = plan(existing("otlp.raw.logs", 8, **{"retention.ms": "1"}), existing("session.state", 4))
    raw = plans["otlp.raw.logs"]
    assert raw.status is TopicStatus.WRONG_PARTITIONS
    assert raw.failed
    assert raw.actual_partitions == 8
    assert not raw.changes
    assert "TOKENTIDE_PARTITIONS=4" in raw.notes[0]


def test_replication_factor_is_a_note_only() -> None:
    plans = plan(existing("session.state", 4, rf=1, **{"cleanup.policy": "compact"}), rf=3)
    state = plans["session.state"]
    assert state.status is TopicStatus.OK
    assert "replication factor 1" in state.notes[0]


def test_the_stage_changelog_must_match_the_partition_count() -> None:
    plans = plan(existing(CHANGELOG.name, 2, **{"cleanup.policy": "compact"}))
    changelog = plans[CHANGELOG.name]
    assert changelog.status is TopicStatus.WRONG_PARTITIONS
    assert changelog.failed
    assert "state cannot be re-partitioned" in changelog.notes[0]
    assert "TOKENTIDE_STREAMS_APP_ID" in changelog.notes[0]


def test_the_faust_changelog_under_the_same_app_id_is_an_error() -> None:
    """The faust-based stage's state under the current id: an in-place upgrade, refused."""
    faust = FAUST_CHANGELOG.format(app_id=APP)
    plans = plan(existing(faust, 4), existing("someone-else-sessions-changelog", 2))
    assert plans[faust].status is TopicStatus.RETIRED
    assert plans[faust].failed
    assert "new TOKENTIDE_STREAMS_APP_ID" in plans[faust].notes[0]
    assert "someone-else-sessions-changelog" not in plans
    # Under a new id (the upgrade's way), the old stage's changelog is none of its business.
    fresh = plan_topics(
        [RAW], {faust: existing(faust, 4)}, replication_factor=1, retired=retired_topics(f"{APP}-v2")
    )
    assert [p.name for p in fresh] == ["otlp.raw.logs"]


def test_the_command_declares_every_topic_the_stage_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """`tokentide admin topics` plans exactly the stream stage's start-up declaration: the
    pipeline's topics, the compacted changelog and the dead-letter topic, co-partitioned."""
    settings = build_settings(
        StreamsSettings,
        {"TOKENTIDE_TOPIC_PREFIX": "p.", "TOKENTIDE_PARTITIONS": "6", "TOKENTIDE_STREAMS_APP_ID": "app"},
        monkeypatch,
    )
    assert isinstance(settings, StreamsSettings)
    specs = {s.name: s for s in stage_topics(settings)}
    assert set(specs) == {s.name for s in pipeline_topics(settings)} | {
        "app-state-changelog",
        "p.streams.dead-letters",
    }
    assert specs["app-state-changelog"].config["cleanup.policy"] == "compact"
    assert "cleanup.policy" not in specs["p.streams.dead-letters"].config
    assert {s.partitions for s in specs.values()} == {6}
    plans = plan_topics(
        list(specs.values()),
        {},
        replication_factor=1,
        state_topics={settings.changelog_topic},
        retired=retired_topics(settings.streams_app_id),
    )
    assert {p.name for p in plans} == set(specs)
