"""Tenants (teams) and their per-tenant policy, shared by ingest, the admin CLI and the dashboard.

A tenant's limits and privacy mode live in the ``tenants`` table; ``None`` means "use the
service's configured default".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class Redaction(enum.StrEnum):
    """What ingest does with content attributes (prompts, responses, tool input, e-mail)."""

    HASH = "hash"  # replace by a keyed hash: equal values stay comparable, text is gone
    DROP = "drop"  # remove the attribute
    OFF = "off"  # keep as sent


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    requests_per_s: float | None = None
    bytes_per_s: float | None = None
    max_body_bytes: int | None = None
    redaction: Redaction = Redaction.HASH


class SignalThresholds(BaseModel):
    """Signal thresholds (ratios of the window); configurable per tenant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warning: float = Field(default=0.80, gt=0, le=1)
    checkpoint: float = Field(default=0.90, gt=0, le=1)
    critical: float = Field(default=0.95, gt=0, le=1)
    hysteresis: float = Field(default=0.05, ge=0, lt=1)
    checkpoint_requests_left: float = Field(default=3.0, ge=0)


#: Tenant names are used in Kafka keys (``tenant/session``) and database rows.
TENANT_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
