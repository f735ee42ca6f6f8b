"""Kafka topic names and message keys: declared here once, imported by every stage.

Every topic name can carry a deployment-wide prefix (``TOKENTIDE_TOPIC_PREFIX``) so that
several pipelines (or a test run) can share one Kafka cluster without seeing each other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Signal(enum.StrEnum):
    """The three OTLP signals tokentide receives."""

    METRICS = "metrics"
    LOGS = "logs"
    TRACES = "traces"


#: Kafka header names carried by every raw message (values are UTF-8 bytes).
HEADER_TENANT = "tt-tenant"
HEADER_SIGNAL = "tt-signal"
HEADER_RECEIVED_AT = "tt-received-at-ns"
HEADER_SESSION = "tt-session"


@dataclass(frozen=True, slots=True)
class Topics:
    """The names of every topic of one pipeline, with its prefix applied."""

    prefix: str = ""

    def raw(self, signal: Signal) -> str:
        """Raw OTLP requests (protobuf) as accepted by ingest: the source of truth."""
        return f"{self.prefix}otlp.raw.{signal.value}"

    @property
    def points(self) -> str:
        """Normalised metric points, one batch per message."""
        return f"{self.prefix}points"

    @property
    def events(self) -> str:
        """Normalised events, one batch per message."""
        return f"{self.prefix}events"

    @property
    def session_state(self) -> str:
        """Latest summary of each session (compacted; overwrite semantics)."""
        return f"{self.prefix}session.state"

    @property
    def session_signals(self) -> str:
        """Context warnings, checkpoint requests, compactions; once per crossing."""
        return f"{self.prefix}session.signals"

    @property
    def rollups(self) -> str:
        """Per-minute usage per session and model (overwrite semantics)."""
        return f"{self.prefix}rollups"

    def all_raw(self) -> list[str]:
        return [self.raw(signal) for signal in Signal]

    def all_derived(self) -> list[str]:
        return [self.points, self.events, self.session_state, self.session_signals, self.rollups]


def session_key(tenant: str, session_id: str | None) -> str:
    """The Kafka key of a session: ``tenant/session``, or ``tenant`` alone when unknown.

    One key per session means one partition per session, so every stage sees a session's
    records in order and a single worker owns its state.
    """
    return f"{tenant}/{session_id}" if session_id else tenant


def split_session_key(key: str) -> tuple[str, str | None]:
    """Inverse of :func:`session_key`. Tenant names never contain ``/``."""
    tenant, sep, session_id = key.partition("/")
    return tenant, (session_id if sep else None)
