"""Topic names (declared once, prefixed everywhere) and session keys."""

from __future__ import annotations

import pytest

from tokentide.topics import Signal, Topics, session_key, split_session_key


@pytest.mark.parametrize(
    ("tenant", "session_id", "key"),
    [
        ("default", "0c716b3c-889b-4332-bfef-0f80d74182cb", "default/0c716b3c-889b-4332-bfef-0f80d74182cb"),
        ("team-a", "synthetic-1f2e", "team-a/synthetic-1f2e"),
        ("team-a", "a/b", "team-a/a/b"),  # session ids come from clients and may hold '/'
        ("team-a", None, "team-a"),
    ],
)
def test_session_key_round_trip(tenant: str, session_id: str | None, key: str) -> None:
    assert session_key(tenant, session_id) == key
    assert split_session_key(key) == (tenant, session_id)


def test_empty_session_id_means_no_session() -> None:
    assert session_key("team-a", "") == "team-a"


def test_unprefixed_names_are_those_of_the_architecture() -> None:
    topics = Topics()
    assert topics.all_raw() == ["otlp.raw.metrics", "otlp.raw.logs", "otlp.raw.traces"]
    assert topics.all_derived() == ["points", "events", "session.state", "session.signals", "rollups"]


@pytest.mark.parametrize("prefix", ["it-1234.", "tenant_x-"])
def test_prefix_is_applied_to_every_topic(prefix: str) -> None:
    plain, prefixed = Topics(), Topics(prefix)
    names = prefixed.all_raw() + prefixed.all_derived()
    assert names == [prefix + name for name in plain.all_raw() + plain.all_derived()]
    assert len(set(names)) == len(names)
    for signal in Signal:
        assert prefixed.raw(signal) == prefix + plain.raw(signal)
    assert prefixed.points == prefix + "points"
    assert prefixed.events == prefix + "events"
    assert prefixed.session_state == prefix + "session.state"
