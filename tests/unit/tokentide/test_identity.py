"""One rule for a record's session (tokentide.identity), used by ingest and the stream stage."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tokentide import identity


def kv(key: str, value: str | int) -> KeyValue:
    any_value = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
    return KeyValue(key=key, value=any_value)


def test_preference_order_not_wire_order() -> None:
    record = {"gen_ai.conversation.id": "conv", "session.id": "sess"}
    assert identity.session_of("t", record, {}) == "sess"
    codex = {"gen_ai.conversation.id": "conv", "conversation.id": "codex"}
    assert identity.session_of("t", codex, {}) == "codex"


def test_record_before_resource() -> None:
    assert identity.session_of("t", {"conversation.id": "rec"}, {"session.id": "res"}) == "rec"
    assert identity.session_of("t", {}, {"session.id": "res"}) == "res"


def test_empty_and_non_string_values_are_no_identity() -> None:
    record = {"session.id": "", "conversation.id": 42}
    sid = identity.session_of("t", record, {"service.name": "svc"})
    assert sid.startswith(identity.SYNTHETIC_PREFIX)


def test_synthetic_session_per_tenant_service_and_user() -> None:
    a = identity.session_of("t", {"user.id": "u1"}, {"service.name": "svc", "host.name": "h"})
    assert a == identity.session_of("t", {"user.id": "u1"}, {"service.name": "svc", "host.name": "other"})
    assert a != identity.session_of("t", {"user.id": "u2"}, {"service.name": "svc"})
    assert a != identity.session_of("t2", {"user.id": "u1"}, {"service.name": "svc"})
    # no user: the host names the source
    b = identity.session_of("t", {}, {"service.name": "svc", "host.name": "h"})
    assert b == identity.synthetic_session("t", "svc", "h") != a


def test_strings_reads_only_the_wanted_keys_from_protobuf() -> None:
    kvs = [kv("gen_ai.conversation.id", "conv"), kv("session.id", "sess"), kv("other", "x"), kv("user.id", 7)]
    found = identity.strings(kvs, identity.RECORD_KEYS)
    assert found == {"gen_ai.conversation.id": "conv", "session.id": "sess"}
    assert identity.session_of("t", found, {}) == "sess"


def test_strings_stops_at_session_id_and_keeps_the_first_of_a_repeated_key() -> None:
    kvs = [kv("conversation.id", "a"), kv("conversation.id", "b"), kv("session.id", "s"), kv("user.id", "u")]
    assert identity.strings(kvs, identity.RECORD_KEYS) == {"conversation.id": "a", "session.id": "s"}
