"""Pure: which session a record belongs to, decided in one place for every stage.

Ingest keys each raw Kafka message by ``tenant/<session>`` with this rule, and splits a
request that mixes sessions, so every message carries exactly one session (also in its
``tt-session`` header). The stream stage trusts that key: it never derives a session again
(only messages written before the header existed are read with this same rule). One rule
means one partition per session, so one worker owns each session's state.

The rule, for one log record or metric data point:

1. the record's own attributes, then its resource's, each looked up in the order of
   :data:`SESSION_ATTRIBUTES` (preference, never wire order): the first non-empty string;
2. otherwise a synthetic session per (tenant, ``service.name``, the record's ``user.id`` or
   else the resource's ``host.name``): records without any identity are kept together
   and counted, never dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

#: Attributes that name a session, in order of preference: Claude Code and Gemini CLI
#: ``session.id``, Codex CLI ``conversation.id``, the GenAI conventions ``gen_ai.conversation.id``.
SESSION_ATTRIBUTES = ("session.id", "conversation.id", "gen_ai.conversation.id")
#: The attributes the rule reads from a record and from a resource.
RECORD_KEYS = frozenset((*SESSION_ATTRIBUTES, "user.id"))
RESOURCE_KEYS = frozenset((*SESSION_ATTRIBUTES, "service.name", "host.name"))
SYNTHETIC_PREFIX = "synthetic-"


class _AnyValue(Protocol):
    string_value: str


class _KeyValue(Protocol):
    """An OTLP ``KeyValue`` (protobuf), as far as this module reads it."""

    key: str
    value: _AnyValue


def strings(kvs: Iterable[_KeyValue], keys: frozenset[str]) -> dict[str, str]:
    """The non-empty string values of ``keys`` among OTLP attributes, as :func:`session_of`
    needs them: the first value of a repeated key wins (OTLP forbids repeats), and the scan
    stops at a non-empty ``session.id``, which decides the session alone (it is the first
    preference, and a record's own attributes come before its resource's)."""
    out: dict[str, str] = {}
    first = SESSION_ATTRIBUTES[0]
    for kv in kvs:
        key = kv.key
        if key in keys and key not in out:
            value = kv.value.string_value
            if value:
                out[key] = value
                if key == first:
                    break
    return out


def declared_session(record: Mapping[str, Any], resource: Mapping[str, Any]) -> str | None:
    """Step 1 of the rule: the session the record or its resource names, else None."""
    for source in (record, resource):
        for key in SESSION_ATTRIBUTES:
            value = source.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def synthetic_session(tenant: str, service_name: str | None, user: str | None) -> str:
    """Step 2: the session of records that name none."""
    digest = hashlib.blake2b(digest_size=16)
    for part in (tenant, service_name, user or ""):
        digest.update(repr(part).encode())
        digest.update(b"\x1f")
    return SYNTHETIC_PREFIX + digest.hexdigest()[:20]


def session_of(tenant: str, record: Mapping[str, Any], resource: Mapping[str, Any]) -> str:
    """The session of a record with attributes ``record`` under a resource ``resource``."""
    declared = declared_session(record, resource)
    if declared is not None:
        return declared
    service = resource.get("service.name")
    user = record.get("user.id") or resource.get("host.name")
    return synthetic_session(
        tenant,
        service if isinstance(service, str) else None,
        user if isinstance(user, str) else None,
    )


__all__ = [
    "RECORD_KEYS",
    "RESOURCE_KEYS",
    "SESSION_ATTRIBUTES",
    "declared_session",
    "session_of",
    "strings",
    "synthetic_session",
]
