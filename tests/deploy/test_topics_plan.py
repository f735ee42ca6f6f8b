"""`tokentide admin topics`' decisions (tokentide.admin.plan_topics), without Kafka."""

from __future__ import annotations

import pytest

from tokentide.admin import ExistingTopic, TopicPlan, TopicStatus, plan_topics
from tokentide.kafka import TopicSpec

pytestmark = pytest.mark.deploy

RAW = TopicSpec("otlp.raw.logs", 4, {"retention.ms": "604800000", "max.message.bytes": "16777216"})
STATE = TopicSpec("session.state", 4, {"cleanup.policy": "compact"})
APP = "tokentide-streams"


def existing(name: str, partitions: int, rf: int = 1, **config: str) -> ExistingTopic:
    return ExistingTopic(name, partitions, rf, config, {})


def plan(*topics: ExistingTopic, partitions: int = 4, rf: int = 1) -> dict[str, TopicPlan]:
    plans = plan_topics(
        [RAW, STATE],
        {t.name: t for t in topics},
        replication_factor=rf,
        streams_app_id=APP,
        partitions=partitions,
    )
    return {p.name: p for p in plans}


def test_missing_topics_are_created() -> None:
    plans = plan()
    assert {name: p.status for name, p in plans.items()} == {
        "otlp.raw.logs": TopicStatus.CREATE,
        "session.state": TopicStatus.CREATE,
    }


def test_matching_topics_are_ok() -> None:
    plans = plan(
        existing("otlp.raw.logs", 4, **{"retention.ms": "604800000", "max.message.bytes": "16777216"}),
        existing("session.state", 4, **{"cleanup.policy": "compact"}),
    )
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


def test_streams_changelogs_must_match_the_partition_count() -> None:
    plans = plan(
        existing(f"{APP}-sessions-changelog", 2),
        existing(f"{APP}-other-changelog", 4),
        existing("someone-else-sessions-changelog", 2),
    )
    assert plans[f"{APP}-sessions-changelog"].status is TopicStatus.WRONG_PARTITIONS
    assert plans[f"{APP}-other-changelog"].status is TopicStatus.OK
    assert "someone-else-sessions-changelog" not in plans
