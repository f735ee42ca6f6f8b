"""Tenants, API keys and Kafka topics: the key format, the admin operations, ``tokentide admin ...``.

An API key is ``tt_<key_id>_<secret>``: ``key_id`` (12 lowercase hex digits) is public and
names the key in listings, logs and error messages; ``secret`` is shown once, at creation, and
only its SHA-256 is stored. Ingest (:class:`ingest.auth.KeyStore`) parses keys with
:func:`parse_key` and compares :func:`secret_digest` values.

The operations are plain functions over a psycopg connection; each leaves the transaction to
its caller (``with psycopg.connect(dsn) as conn`` commits on success). Expected refusals
(unknown or duplicate tenant, bad name or policy, unknown key) raise an :class:`AdminError`
subclass, which the CLI prints and turns into exit code 1.

``tokentide admin topics`` makes Kafka's topics match the stream stage's declaration,
:func:`streams.app.stage_topics` (the pipeline's topics, the stage's state changelog and its
dead-letter topic; see :func:`plan_topics` for the rules); it needs Kafka only, no database.

This module imports no psycopg or aiokafka at import time: ``tokentide.cli`` builds its parser
from here for every command, and psycopg alone takes ~0.2 s to import.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import hashlib
import math
import re
import secrets
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict, cast

from tokentide import budgets
from tokentide.tenancy import TENANT_NAME_PATTERN, Redaction

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    from tokentide.kafka import TopicSpec
    from tokentide.settings import StreamsSettings

    Connection = psycopg.Connection[TupleRow]

# --- the key format (pure) --------------------------------------------------------------------

KEY_PREFIX = "tt_"
KEY_ID_PATTERN = r"[0-9a-f]{12}"
#: The secret is ``secrets.token_urlsafe(32)``: 32 random bytes in base64url without padding,
#: 43 characters (``_`` among them, so a key is split by position, not at its last ``_``).
_KEY = re.compile(rf"{KEY_PREFIX}(?P<key_id>{KEY_ID_PATTERN})_(?P<secret>[A-Za-z0-9_-]{{43}})")


class MalformedKey(ValueError):
    """A string that is not an API key of this format. The message never contains the input."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key split in its public id and its secret (kept out of ``repr``)."""

    key_id: str
    secret: str = field(repr=False)

    @property
    def token(self) -> str:
        """The key as clients send it: ``tt_<key_id>_<secret>``."""
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"


def new_key() -> ApiKey:
    """A fresh random key: 48-bit id, 256-bit secret."""
    return ApiKey(secrets.token_hex(6), secrets.token_urlsafe(32))


def parse_key(token: str) -> ApiKey:
    """Split ``tt_<key_id>_<secret>``; raises :class:`MalformedKey` for anything else."""
    match = _KEY.fullmatch(token)
    if match is None:
        raise MalformedKey(f"not an API key: expected {KEY_PREFIX}<12 hex digits>_<43-character secret>")
    return ApiKey(match["key_id"], match["secret"])


def secret_digest(secret: str) -> bytes:
    """What is stored of a secret: its SHA-256 (32 bytes).

    A fast hash is the right choice here, unlike for passwords: the secret is 256 random bits,
    so a stolen digest cannot be brute-forced however fast the hash, and a slow KDF (bcrypt,
    argon2) would only cost CPU on every authenticated request.
    """
    return hashlib.sha256(secret.encode()).digest()


# --- errors and records -----------------------------------------------------------------------


class AdminError(Exception):
    """An admin operation refused; the message tells the operator why. Root of this module's errors."""


class InvalidTenantName(AdminError):
    """The name does not match :data:`tokentide.tenancy.TENANT_NAME_PATTERN`."""


class DuplicateTenant(AdminError):
    """A tenant of that name exists already."""


class UnknownTenant(AdminError):
    """No tenant of that name."""


class InvalidPolicy(AdminError):
    """A limit that is not a positive finite number."""


class UnknownKey(AdminError):
    """No API key with that id (or the argument is not a key id at all)."""


class Policy(TypedDict, total=False):
    """A tenant's own limits and privacy mode. ``None`` = the service default; absent = unchanged."""

    requests_per_s: float | None
    bytes_per_s: float | None
    max_body_bytes: int | None
    redaction: Redaction | None


#: The policy fields, in the order of the ``tenants`` columns and of ``tenant list``.
POLICY_FIELDS = ("requests_per_s", "bytes_per_s", "max_body_bytes", "redaction")


@dataclass(frozen=True, slots=True)
class TenantInfo:
    name: str
    requests_per_s: float | None
    bytes_per_s: float | None
    max_body_bytes: int | None
    redaction: Redaction | None
    created_at: datetime
    disabled_at: datetime | None

    @property
    def policy(self) -> Policy:
        return Policy(
            requests_per_s=self.requests_per_s,
            bytes_per_s=self.bytes_per_s,
            max_body_bytes=self.max_body_bytes,
            redaction=self.redaction,
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as listed: never its secret (which is not stored anyway)."""

    key_id: str
    tenant: str
    description: str | None
    created_at: datetime
    revoked_at: datetime | None
    scope: str = "ingest"


# --- operations -------------------------------------------------------------------------------


def _tenant(row: TupleRow) -> TenantInfo:
    name, rps, bps, max_body, redaction, created_at, disabled_at = row
    return TenantInfo(
        name, rps, bps, max_body, None if redaction is None else Redaction(redaction), created_at, disabled_at
    )


def _key(row: TupleRow) -> KeyInfo:
    return KeyInfo(*row)


def _check_name(name: str) -> None:
    if re.fullmatch(TENANT_NAME_PATTERN, name) is None:
        raise InvalidTenantName(
            f"invalid tenant name {name!r}: use 1 to 63 lowercase letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )


def _check_policy(policy: Policy) -> None:
    limits = {
        "requests_per_s": policy.get("requests_per_s"),
        "bytes_per_s": policy.get("bytes_per_s"),
        "max_body_bytes": policy.get("max_body_bytes"),
    }
    for name, value in limits.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InvalidPolicy(f"{name} must be a positive number (or unset for the default), not {value}")


def _policy_values(policy: Policy) -> tuple[float | None, float | None, int | None, str | None]:
    redaction = policy.get("redaction")
    return (
        policy.get("requests_per_s"),
        policy.get("bytes_per_s"),
        policy.get("max_body_bytes"),
        None if redaction is None else redaction.value,
    )


def create_tenant(conn: Connection, name: str, policy: Policy | None = None) -> TenantInfo:
    """Create tenant ``name`` with ``policy`` (absent fields = service default)."""
    _check_name(name)
    policy = policy or Policy()
    _check_policy(policy)
    row = conn.execute(
        "INSERT INTO tenants (tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id) DO NOTHING"
        " RETURNING tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction,"
        " created_at, disabled_at",
        (name, *_policy_values(policy)),
    ).fetchone()
    if row is None:
        raise DuplicateTenant(f"tenant {name!r} exists already")
    return _tenant(row)


def list_tenants(conn: Connection) -> list[TenantInfo]:
    """Every tenant, by name."""
    rows = conn.execute(
        "SELECT tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction, created_at, disabled_at"
        " FROM tenants ORDER BY tenant_id"
    ).fetchall()
    return [_tenant(row) for row in rows]


def update_tenant(conn: Connection, name: str, changes: Policy) -> TenantInfo:
    """Change the fields present in ``changes`` (``None`` = back to the service default)."""
    _check_policy(changes)
    row = conn.execute(
        "SELECT tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction, created_at, disabled_at"
        " FROM tenants WHERE tenant_id = %s FOR UPDATE",
        (name,),
    ).fetchone()
    if row is None:
        raise UnknownTenant(f"no tenant {name!r}")
    policy = _tenant(row).policy
    policy.update(changes)
    row = conn.execute(
        "UPDATE tenants SET requests_per_s = %s, bytes_per_s = %s, max_body_bytes = %s, redaction = %s"
        " WHERE tenant_id = %s"
        " RETURNING tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction,"
        " created_at, disabled_at",
        (*_policy_values(policy), name),
    ).fetchone()
    if row is None:  # cannot happen (locked above, tenants are never deleted); no assert under -O
        raise UnknownTenant(f"no tenant {name!r}")
    return _tenant(row)


def set_tenant_disabled(conn: Connection, name: str, disabled: bool) -> TenantInfo:
    """Disable (ingest then refuses its keys with 403) or enable tenant ``name``; idempotent."""
    row = conn.execute(
        "UPDATE tenants SET disabled_at = CASE WHEN %s THEN coalesce(disabled_at, now()) END"
        " WHERE tenant_id = %s"
        " RETURNING tenant_id, requests_per_s, bytes_per_s, max_body_bytes, redaction,"
        " created_at, disabled_at",
        (disabled, name),
    ).fetchone()
    if row is None:
        raise UnknownTenant(f"no tenant {name!r}")
    return _tenant(row)


def _require_tenant(conn: Connection, name: str) -> None:
    if conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (name,)).fetchone() is None:
        raise UnknownTenant(f"no tenant {name!r}: create it with `tokentide admin tenant create {name}`")


#: What a key may do: ``ingest`` (export telemetry to ingest) or ``read`` (the dashboard API).
KEY_SCOPES = ("ingest", "read")


def create_key(
    conn: Connection, tenant: str, description: str | None = None, scope: str = "ingest"
) -> ApiKey:
    """A new key of ``tenant``. The returned secret exists nowhere else: show it once."""
    _require_tenant(conn, tenant)
    if scope not in KEY_SCOPES:
        raise ValueError(f"scope must be one of {', '.join(KEY_SCOPES)}")
    while True:  # a 48-bit id collides only among millions of keys: then draw another one
        key = new_key()
        row = conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256, description, scope)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key_id) DO NOTHING RETURNING key_id",
            (key.key_id, tenant, secret_digest(key.secret), description or None, scope),
        ).fetchone()
        if row is not None:
            return key


def list_keys(conn: Connection, tenant: str | None = None) -> list[KeyInfo]:
    """Every key (of ``tenant`` if given), revoked ones included, oldest first."""
    if tenant is not None:
        _require_tenant(conn, tenant)
    rows = conn.execute(
        "SELECT key_id, tenant_id, description, created_at, revoked_at, scope FROM api_keys"
        " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s"
        " ORDER BY tenant_id, created_at, key_id",
        {"tenant": tenant},
    ).fetchall()
    return [_key(row) for row in rows]


def revoke_key(conn: Connection, key_id: str) -> KeyInfo:
    """Revoke ``key_id``; idempotent (a revoked key keeps its first revocation time).

    Every ingest replica refuses the key within its ``TOKENTIDE_KEY_REFRESH_S`` (at most 10 s).
    """
    if re.fullmatch(KEY_ID_PATTERN, key_id) is None:
        # Not echoed: an operator may have pasted a whole key, secret included.
        raise UnknownKey("not an API key id: expected 12 hex digits, as `tokentide admin key list` shows")
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s"
        " RETURNING key_id, tenant_id, description, created_at, revoked_at, scope",
        (key_id,),
    ).fetchone()
    if row is None:
        raise UnknownKey(f"no API key with id {key_id}")
    return _key(row)


# --- webhooks (issue 8: notifications) ---------------------------------------------------------

#: The signal kinds a webhook may filter on (``tokentide.records.SignalKind``'s values, kept
#: here as strings so that this module does not import the records at start-up, and the
#: budget kinds, ``tokentide.budgets.BudgetKind``).
WEBHOOK_KINDS = (
    "context_warning",
    "checkpoint_requested",
    "context_critical",
    "compaction_observed",
    *(str(k) for k in budgets.BudgetKind),
)
WEBHOOK_ID_PATTERN = r"wh_[0-9a-f]{12}"
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


class InvalidWebhook(AdminError):
    """A URL that is not http(s), an unknown signal kind, an empty secret."""


class UnknownWebhook(AdminError):
    """No webhook with that id."""


@dataclass(frozen=True, slots=True)
class WebhookInfo:
    """A webhook as listed: never its secret."""

    webhook_id: str
    tenant: str
    url: str
    kinds: tuple[str, ...] | None
    enabled: bool
    description: str | None
    created_at: datetime


def new_webhook_secret() -> str:
    """A fresh signing secret: ``whsec_`` + 256 random bits (base64url)."""
    return WEBHOOK_SECRET_PREFIX + secrets.token_urlsafe(32)


def _check_webhook(url: str, kinds: Sequence[str] | None, secret: str | None) -> None:
    if re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url) is None:
        raise InvalidWebhook(f"invalid webhook URL {url!r}: expected http:// or https:// and a host")
    unknown = sorted(set(kinds or ()) - set(WEBHOOK_KINDS))
    if unknown:
        raise InvalidWebhook(f"unknown signal kind(s) {', '.join(unknown)}: use {', '.join(WEBHOOK_KINDS)}")
    if secret is not None and len(secret) < 16:
        raise InvalidWebhook("a webhook secret must have at least 16 characters")


def _webhook(row: TupleRow) -> WebhookInfo:
    webhook_id, tenant, url, kinds, enabled, description, created_at = row
    return WebhookInfo(
        webhook_id, tenant, url, None if kinds is None else tuple(kinds), enabled, description, created_at
    )


def add_webhook(
    conn: Connection,
    tenant: str,
    url: str,
    *,
    kinds: Sequence[str] | None = None,
    secret: str | None = None,
    description: str | None = None,
) -> tuple[WebhookInfo, str]:
    """A new webhook of ``tenant`` for signals of ``kinds`` (``None``: every kind); returns it and
    its signing secret (``secret``, or a new random one: show it once)."""
    _check_webhook(url, kinds, secret)
    _require_tenant(conn, tenant)
    secret = secret or new_webhook_secret()
    while True:  # a 48-bit id collides only among millions of webhooks: then draw another one
        row = conn.execute(
            "INSERT INTO webhooks (webhook_id, tenant_id, url, secret, kinds, description)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (webhook_id) DO NOTHING"
            " RETURNING webhook_id, tenant_id, url, kinds, enabled, description, created_at",
            (f"wh_{secrets.token_hex(6)}", tenant, url, secret, list(kinds) if kinds else None, description),
        ).fetchone()
        if row is not None:
            return _webhook(row), secret


def list_webhooks(conn: Connection, tenant: str | None = None) -> list[WebhookInfo]:
    """Every webhook (of ``tenant`` if given), oldest first; never their secrets."""
    if tenant is not None:
        _require_tenant(conn, tenant)
    rows = conn.execute(
        "SELECT webhook_id, tenant_id, url, kinds, enabled, description, created_at FROM webhooks"
        " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s"
        " ORDER BY tenant_id, created_at, webhook_id",
        {"tenant": tenant},
    ).fetchall()
    return [_webhook(row) for row in rows]


def remove_webhook(conn: Connection, webhook_id: str) -> WebhookInfo:
    """Delete ``webhook_id`` and its delivery log (pending retries included)."""
    row = conn.execute(
        "DELETE FROM webhooks WHERE webhook_id = %s"
        " RETURNING webhook_id, tenant_id, url, kinds, enabled, description, created_at",
        (webhook_id,),
    ).fetchone()
    if row is None:
        raise UnknownWebhook(f"no webhook with id {webhook_id!r} (see `tokentide admin webhook list`)")
    return _webhook(row)


def send_webhook_test(conn: Connection, webhook_id: str, timeout_s: float = 5.0) -> tuple[WebhookInfo, int]:
    """POST a synthetic ``context_warning`` to ``webhook_id``, signed like a real delivery, once
    (no retry, nothing recorded); returns the HTTP status. Raises :class:`AdminError` when the
    endpoint cannot be reached or answers other than 2xx."""
    import httpx  # noqa: PLC0415 - see the module docstring

    from notify.core import build_payload, delivery_headers, encode_body  # noqa: PLC0415
    from tokentide.records import SessionSignal, SignalKind  # noqa: PLC0415

    row = conn.execute(
        "SELECT webhook_id, tenant_id, url, kinds, enabled, description, created_at, secret"
        " FROM webhooks WHERE webhook_id = %s",
        (webhook_id,),
    ).fetchone()
    if row is None:
        raise UnknownWebhook(f"no webhook with id {webhook_id!r} (see `tokentide admin webhook list`)")
    info, secret = _webhook(row[:-1]), str(row[-1])
    signal = SessionSignal(
        tenant=info.tenant,
        session_id="tokentide-webhook-test",
        signal_id=f"test-{secrets.token_hex(8)}",
        kind=SignalKind.CONTEXT_WARNING,
        time_ns=time.time_ns(),
        ratio=0.8,
        tokens=160_000,
        window=200_000,
        requests_left=5,
        minutes_left=12,
        message="test notification from `tokentide admin webhook test`",
    )
    body = encode_body(build_payload(signal))
    headers = delivery_headers(secret, body, time.time(), f"{info.webhook_id}:{signal.signal_id}")
    try:
        response = httpx.post(info.url, content=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise AdminError(f"webhook {webhook_id} at {info.url} not reachable: {exc!r}") from exc
    if not 200 <= response.status_code < 300:
        raise AdminError(
            f"webhook {webhook_id} at {info.url} answered HTTP {response.status_code}: {response.text[:200]}"
        )
    return info, response.status_code


# --- Kafka topics -----------------------------------------------------------------------------

#: Kafka's ``ConfigSource`` of a per-topic override (DescribeConfigs v1+).
_DYNAMIC_TOPIC_CONFIG = 1


class TopicError(AdminError):
    """Kafka's topics cannot be read or made to match the declared ones; the message says why."""


@dataclass(frozen=True, slots=True)
class ExistingTopic:
    """One topic as Kafka describes it."""

    name: str
    partitions: int
    replication_factor: int
    #: The value in force of every config key the broker reported (defaults included).
    config: Mapping[str, str | None] = field(default_factory=dict)
    #: The per-topic overrides only: what a (non-incremental) AlterConfigs replaces as a whole.
    overrides: Mapping[str, str | None] = field(default_factory=dict)


class TopicStatus(enum.StrEnum):
    """What ``tokentide admin topics`` finds (and, unless ``--check``, does) for one topic."""

    OK = "ok"
    #: Missing: created with the declared partitions and configs.
    CREATE = "create"
    #: Exists with other values for declared configs (retention, compaction, size): altered.
    UPDATE = "update"
    #: Exists with another partition count: never changed (state is co-partitioned), an error.
    WRONG_PARTITIONS = "wrong-partitions"
    #: State of a former stream stage under the current application id: an error (no in-place
    #: upgrade exists; a new ``TOKENTIDE_STREAMS_APP_ID`` is the way), never deleted.
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """The verdict on one topic; ``changes`` maps a config key to (value in force, declared)."""

    name: str
    status: TopicStatus
    partitions: int
    actual_partitions: int | None = None
    changes: Mapping[str, tuple[str | None, str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: The declaration behind the plan; None for a retired topic.
    spec: TopicSpec | None = None

    @property
    def failed(self) -> bool:
        return self.status in (TopicStatus.WRONG_PARTITIONS, TopicStatus.RETIRED)


#: The state changelog of the faust-based stream stage (before issue 12; its one table was
#: ``sessions``), by application id. The current stage neither reads nor migrates it.
FAUST_CHANGELOG = "{app_id}-sessions-changelog"


def retired_topics(streams_app_id: str) -> dict[str, str]:
    """Topics that must not exist under ``streams_app_id``, each with what to do about it."""
    return {
        FAUST_CHANGELOG.format(app_id=streams_app_id): (
            "state of the faust-based stream stage under this TOKENTIDE_STREAMS_APP_ID: the current "
            "stage neither reads nor migrates it, and reusing the id would count the raw topics' "
            "retention again on top of the database's totals; upgrade under a new "
            "TOKENTIDE_STREAMS_APP_ID (docs/operations.md, 'Upgrading from the faust-based stream "
            "stage'); delete this topic only once the new stage runs"
        )
    }


def plan_topics(
    specs: Sequence[TopicSpec],
    existing: Mapping[str, ExistingTopic],
    *,
    replication_factor: int,
    state_topics: Collection[str] = (),
    retired: Mapping[str, str] | None = None,
) -> list[TopicPlan]:
    """Compare the declared topics with those in Kafka (pure: no I/O).

    - a declared topic that is missing is to be created;
    - one with another partition count is an error, never changed: the streams stage's state
      and its changelog are co-partitioned with the raw topics, and Kafka can only add
      partitions, which would move sessions to other partitions. For the ``state_topics``
      (the stage's changelog) the note says that the state cannot be re-partitioned;
    - one whose declared configs (retention, compaction, message size) differ from the values
      in force is to be updated;
    - a replication factor other than ``replication_factor`` is a note only (changing it is a
      partition reassignment, an operator's job);
    - a ``retired`` topic (name -> what to do) that exists is an error, never deleted.
    """
    plans: list[TopicPlan] = []
    for spec in specs:
        topic = existing.get(spec.name)
        if topic is None:
            plans.append(TopicPlan(spec.name, TopicStatus.CREATE, spec.partitions, spec=spec))
            continue
        notes: list[str] = []
        if topic.replication_factor != replication_factor:
            notes.append(
                f"replication factor {topic.replication_factor}, "
                f"TOKENTIDE_TOPIC_REPLICATION_FACTOR={replication_factor} (not changed: reassign partitions)"
            )
        if topic.partitions != spec.partitions:
            if spec.name in state_topics:
                note = (
                    f"streams state changelog has {topic.partitions} partitions, "
                    f"TOKENTIDE_PARTITIONS={spec.partitions}: the state cannot be re-partitioned; "
                    "set TOKENTIDE_PARTITIONS back, or start from the raw topics under a new "
                    "TOKENTIDE_STREAMS_APP_ID (docs/operations.md, 'Changing the partition count')"
                )
            else:
                note = (
                    f"has {topic.partitions} partitions, TOKENTIDE_PARTITIONS={spec.partitions}: "
                    "partitions are never changed in place; set TOKENTIDE_PARTITIONS back, or move "
                    "to new topics (docs/operations.md, 'Changing the partition count')"
                )
            notes.insert(0, note)
            plans.append(
                TopicPlan(
                    spec.name,
                    TopicStatus.WRONG_PARTITIONS,
                    spec.partitions,
                    topic.partitions,
                    notes=tuple(notes),
                    spec=spec,
                )
            )
            continue
        changes = {
            key: (topic.config.get(key), value)
            for key, value in spec.config.items()
            if topic.config.get(key) != value
        }
        status = TopicStatus.UPDATE if changes else TopicStatus.OK
        plans.append(
            TopicPlan(spec.name, status, spec.partitions, topic.partitions, changes, tuple(notes), spec)
        )
    for name, note in sorted((retired or {}).items()):
        topic = existing.get(name)
        if topic is not None:
            plans.append(
                TopicPlan(name, TopicStatus.RETIRED, topic.partitions, topic.partitions, notes=(note,))
            )
    return plans


def _config_maps(entries: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(value in force of every key, per-topic overrides) of DescribeConfigs' config entries."""
    config: dict[str, str | None] = {}
    overrides: dict[str, str | None] = {}
    for entry in entries:
        name, value = entry["config_names"], entry["config_value"]
        config[name] = value
        # v0 has no config_source, only is_default (a non-default topic value is an override).
        source = entry.get("config_source")
        if source == _DYNAMIC_TOPIC_CONFIG or (source is None and not entry.get("is_default", True)):
            overrides[name] = value
    return config, overrides


async def _describe_topics(admin: Any, names: Sequence[str]) -> dict[str, ExistingTopic]:
    """Partitions, replication factor and configs of the topics among ``names`` that exist."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: PLC0415
    from aiokafka.errors import for_code  # noqa: PLC0415

    if not names:
        return {}
    described = [t for t in await admin.describe_topics(list(names)) if t["error_code"] == 0]
    shapes = {
        t["topic"]: (len(t["partitions"]), max((len(p["replicas"]) for p in t["partitions"]), default=0))
        for t in described
    }
    if not shapes:
        return {}
    responses = await admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in shapes]
    )
    configs: dict[str, tuple[dict[str, str | None], dict[str, str | None]]] = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise for_code(resource["error_code"])(
                    f"cannot read the configs of topic {resource['resource_name']}: "
                    f"{resource['error_message']}"
                )
            configs[resource["resource_name"]] = _config_maps(resource["config_entries"])
    return {
        name: ExistingTopic(name, count, replicas, *configs.get(name, ({}, {})))
        for name, (count, replicas) in shapes.items()
    }


async def _alter_topic_configs(
    admin: Any, plans: Sequence[TopicPlan], existing: Mapping[str, ExistingTopic]
) -> None:
    """Set the declared configs of ``plans``' topics, keeping every other per-topic override.

    AlterConfigs (the request aiokafka speaks) replaces a topic's overrides as a whole, so the
    request carries the overrides in force plus the declared values.
    """
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType  # noqa: PLC0415
    from aiokafka.errors import for_code  # noqa: PLC0415

    resources = []
    for plan in plans:
        current = existing[plan.name].overrides
        hidden = sorted(key for key, value in current.items() if value is None)
        if hidden:
            raise TopicError(
                f"topic {plan.name}: cannot update its configs without losing the sensitive "
                f"overrides {', '.join(hidden)} (Kafka does not return their values); change "
                f"{', '.join(plan.changes)} by hand"
            )
        wanted = {key: value for key, value in current.items() if value is not None}
        wanted.update({key: value for key, (_, value) in plan.changes.items()})
        resources.append(ConfigResource(ConfigResourceType.TOPIC, plan.name, configs=wanted))
    if not resources:
        return
    for response in await admin.alter_configs(resources):
        for resource in response.to_object()["resources"]:
            if resource["error_code"] != 0:
                raise for_code(resource["error_code"])(
                    f"cannot update the configs of topic {resource['resource_name']}: "
                    f"{resource['error_message']}"
                )


async def _admin_client(bootstrap: str, timeout_s: float, wait_s: float) -> Any:
    """A started AIOKafkaAdminClient; retries for ``wait_s`` while Kafka cannot be reached."""
    from aiokafka.admin import AIOKafkaAdminClient  # noqa: PLC0415
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    deadline = time.monotonic() + wait_s
    delay = 0.5
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
        except (KafkaError, OSError, TimeoutError) as exc:
            await admin.close()
            if time.monotonic() + delay > deadline:
                raise TopicError(
                    f"cannot reach Kafka at {bootstrap} ({exc!r}) within {wait_s:.0f} s: "
                    "check KAFKA_BOOTSTRAP and that the brokers run"
                ) from exc
            _err(f"tokentide admin topics: Kafka at {bootstrap} not reachable yet ({exc!r}); retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        return admin


async def reconcile_topics(
    settings: StreamsSettings, *, apply: bool = True, timeout_s: float = 30.0, wait_s: float = 60.0
) -> list[TopicPlan]:
    """Compare Kafka with :func:`streams.app.stage_topics` (every topic of the pipeline and of
    the stream stage) and, if ``apply``, create the missing topics and update differing configs;
    returns the plans (see :func:`plan_topics`).

    Topics with a wrong partition count, and retired ones, are reported, never changed.
    Idempotent; safe to run from several jobs at once (a topic created by another one in
    between counts as created). Raises :class:`TopicError` when Kafka cannot be reached within
    ``wait_s`` or refuses a change.
    """
    from aiokafka.errors import KafkaError  # noqa: PLC0415

    # The stage's own declaration, so that this command and the stage's start-up create the
    # same topics (streams.app is heavy: imported here, not for every `tokentide` command).
    from streams.app import stage_topics  # noqa: PLC0415
    from tokentide.kafka import ensure_topics  # noqa: PLC0415

    specs = stage_topics(settings)
    retired = retired_topics(settings.streams_app_id)
    admin = await _admin_client(settings.kafka_bootstrap, timeout_s, wait_s)
    try:
        names = set(await admin.list_topics())
        wanted = [name for name in [*(s.name for s in specs), *retired] if name in names]
        existing = await _describe_topics(admin, wanted)
        plans = plan_topics(
            specs,
            existing,
            replication_factor=settings.topic_replication_factor,
            state_topics={settings.changelog_topic},
            retired=retired,
        )
        if apply:
            missing = [p.spec for p in plans if p.status is TopicStatus.CREATE and p.spec is not None]
            if missing:
                await ensure_topics(
                    settings.kafka_bootstrap, missing, settings.topic_replication_factor, timeout_s
                )
            await _alter_topic_configs(admin, [p for p in plans if p.status is TopicStatus.UPDATE], existing)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise TopicError(f"Kafka at {settings.kafka_bootstrap} failed or refused: {exc!r}") from exc
    finally:
        await admin.close()
    return plans


def _print_topics(plans: Sequence[TopicPlan], *, applied: bool) -> None:
    done = {
        TopicStatus.OK: "ok",
        TopicStatus.CREATE: "created" if applied else "missing",
        TopicStatus.UPDATE: "updated" if applied else "differs",
        TopicStatus.WRONG_PARTITIONS: "ERROR",
        TopicStatus.RETIRED: "ERROR",
    }
    rows = []
    for plan in plans:
        details = [f"{key}: {old} -> {new}" for key, (old, new) in plan.changes.items()]
        rows.append(
            (
                plan.name,
                str(plan.partitions if plan.actual_partitions is None else plan.actual_partitions),
                done[plan.status],
                "; ".join([*plan.notes, *details]),
            )
        )
    _table(("TOPIC", "PARTITIONS", "RESULT", "DETAILS"), rows)


def run_topics(args: argparse.Namespace, settings: StreamsSettings) -> int:
    """``tokentide admin topics [--check]``: 0 when every topic matches (after the changes made),
    1 when one has a wrong partition count, Kafka is unreachable or refuses, or, with
    ``--check``, anything would change."""
    check: bool = args.check
    try:
        plans = asyncio.run(
            reconcile_topics(settings, apply=not check, timeout_s=args.timeout_s, wait_s=args.wait_s)
        )
    except TopicError as exc:
        _err(f"tokentide admin topics: {exc}")
        return 1
    _print_topics(plans, applied=not check)
    wrong = [p.name for p in plans if p.status is TopicStatus.WRONG_PARTITIONS]
    if wrong:
        _err(
            f"tokentide admin topics: {len(wrong)} topic(s) with a partition count other than "
            f"TOKENTIDE_PARTITIONS={settings.partitions}: {', '.join(wrong)} (see DETAILS)"
        )
    retired = [p.name for p in plans if p.status is TopicStatus.RETIRED]
    if retired:
        _err(
            f"tokentide admin topics: state of a former stream stage under "
            f"TOKENTIDE_STREAMS_APP_ID={settings.streams_app_id}: {', '.join(retired)} (see DETAILS)"
        )
    if wrong or retired:
        return 1
    pending = [p.name for p in plans if p.status in (TopicStatus.CREATE, TopicStatus.UPDATE)]
    if check and pending:
        _err(f"tokentide admin topics --check: to create or update: {', '.join(pending)}")
        return 1
    return 0


# --- the command line -------------------------------------------------------------------------

Handler = Callable[["Connection", argparse.Namespace], None]
DEFAULT = "default"


def _out(line: str) -> None:
    sys.stdout.write(line + "\n")


def _err(line: str) -> None:
    sys.stderr.write(line + "\n")


def _time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns aligned by two spaces; the last column (free text) is not padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        _out("  ".join([*cells, row[-1]]).rstrip())


def _number(value: float | None) -> str:
    return DEFAULT if value is None else f"{value:.15g}"  # 1000000, not 1e+06


def _print_tenants(tenants: Sequence[TenantInfo]) -> None:
    _table(
        ("TENANT", "REQUESTS/S", "BYTES/S", "MAX_BODY_BYTES", "REDACTION", "CREATED", "DISABLED"),
        [
            (
                t.name,
                _number(t.requests_per_s),
                _number(t.bytes_per_s),
                DEFAULT if t.max_body_bytes is None else str(t.max_body_bytes),
                DEFAULT if t.redaction is None else t.redaction.value,
                _time(t.created_at),
                _time(t.disabled_at),
            )
            for t in tenants
        ],
    )


def _print_keys(keys: Sequence[KeyInfo]) -> None:
    _table(
        ("KEY_ID", "TENANT", "SCOPE", "CREATED", "REVOKED", "DESCRIPTION"),
        [
            (k.key_id, k.tenant, k.scope, _time(k.created_at), _time(k.revoked_at), k.description or "")
            for k in keys
        ],
    )


def _policy(args: argparse.Namespace) -> Policy:
    # The options are declared with default=SUPPRESS: only those given are in ``args``, already
    # converted to their field's type (or None for "default") by their argparse ``type``.
    return cast("Policy", {name: getattr(args, name) for name in POLICY_FIELDS if hasattr(args, name)})


def _tenant_create(conn: Connection, args: argparse.Namespace) -> None:
    _print_tenants([create_tenant(conn, args.name, _policy(args))])


def _tenant_list(conn: Connection, _: argparse.Namespace) -> None:
    _print_tenants(list_tenants(conn))


def _tenant_set(conn: Connection, args: argparse.Namespace) -> None:
    changes = _policy(args)
    if not changes:
        raise AdminError(
            "nothing to change: give at least one of --requests-per-s, --bytes-per-s, "
            "--max-body-bytes, --redaction"
        )
    _print_tenants([update_tenant(conn, args.name, changes)])


def _tenant_disable(conn: Connection, args: argparse.Namespace) -> None:
    _print_tenants([set_tenant_disabled(conn, args.name, disabled=True)])


def _tenant_enable(conn: Connection, args: argparse.Namespace) -> None:
    _print_tenants([set_tenant_disabled(conn, args.name, disabled=False)])


def _key_create(conn: Connection, args: argparse.Namespace) -> None:
    key = create_key(conn, args.tenant, args.description, args.scope)
    _out(key.token)
    _err(
        f"created {args.scope} API key {key.key_id} for tenant {args.tenant!r}; "
        "the key (stdout) is shown only once"
    )


def _key_list(conn: Connection, args: argparse.Namespace) -> None:
    _print_keys(list_keys(conn, args.tenant))


def _key_revoke(conn: Connection, args: argparse.Namespace) -> None:
    key = revoke_key(conn, args.key_id)
    _out(
        f"revoked API key {key.key_id} of tenant {key.tenant!r} at {_time(key.revoked_at)}; "
        "ingest refuses it within TOKENTIDE_KEY_REFRESH_S (at most 10 s)"
    )


def _print_webhooks(hooks: Sequence[WebhookInfo]) -> None:
    _table(
        ("WEBHOOK_ID", "TENANT", "KINDS", "ENABLED", "CREATED", "URL"),
        [
            (
                w.webhook_id,
                w.tenant,
                "all" if w.kinds is None else ",".join(w.kinds),
                "yes" if w.enabled else "no",
                _time(w.created_at),
                w.url,
            )
            for w in hooks
        ],
    )


def _webhook_add(conn: Connection, args: argparse.Namespace) -> None:
    info, secret = add_webhook(
        conn, args.tenant, args.url, kinds=args.kinds, secret=args.secret, description=args.description
    )
    if args.secret is None:
        _out(secret)
        _err(
            f"created webhook {info.webhook_id} for tenant {args.tenant!r}; its signing secret "
            "(stdout) is shown only once"
        )
    else:
        _out(info.webhook_id)
        _err(f"created webhook {info.webhook_id} for tenant {args.tenant!r} with the given secret")


def _webhook_list(conn: Connection, args: argparse.Namespace) -> None:
    _print_webhooks(list_webhooks(conn, args.tenant))


def _webhook_remove(conn: Connection, args: argparse.Namespace) -> None:
    info = remove_webhook(conn, args.webhook_id)
    _out(f"removed webhook {info.webhook_id} of tenant {info.tenant!r} and its delivery log")


def _webhook_test(conn: Connection, args: argparse.Namespace) -> None:
    info, status = send_webhook_test(conn, args.webhook_id, args.timeout_s)
    _out(f"webhook {info.webhook_id} at {info.url} answered HTTP {status}")


def _kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(WEBHOOK_KINDS))
    if not kinds or unknown:
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of {', '.join(WEBHOOK_KINDS)}, not {text!r}"
        )
    return kinds


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type that also accepts ``default`` (-> ``None``: the service default)."""

    def parse(text: str) -> Any:
        return None if text == DEFAULT else convert(text)

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number or {DEFAULT!r}, not {text!r}")
    return value


def _size(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) == 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer or {DEFAULT!r}, not {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _redaction(text: str) -> Redaction:
    try:
        return Redaction(text)
    except ValueError:
        modes = ", ".join(mode.value for mode in Redaction)
        raise argparse.ArgumentTypeError(f"must be one of {modes} or {DEFAULT!r}, not {text!r}") from None


def _policy_options(parser: argparse.ArgumentParser) -> None:
    options = (
        ("--requests-per-s", _rate, "N", "request rate limit"),
        ("--bytes-per-s", _rate, "N", "byte rate limit (bytes as received)"),
        (
            "--max-body-bytes",
            _size,
            "N",
            "largest body after decompression (the service's limit still applies)",
        ),
        ("--redaction", _redaction, "{hash,drop,off}", "what ingest does with prompts, tool input, e-mail"),
    )
    for flag, convert, metavar, help_text in options:
        parser.add_argument(
            flag,
            type=_optional(convert),
            default=argparse.SUPPRESS,
            metavar=metavar,
            help=f"{help_text}; {DEFAULT!r} = the service's default",
        )


def _webhook_commands(objects: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``tokentide admin webhook add|list|remove|test``."""
    webhook = objects.add_parser("webhook", help="add, list, remove or test a tenant's signal webhooks")
    webhook_actions = webhook.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    add = webhook_actions.add_parser(
        "add",
        help="add a webhook: prints its generated signing secret alone on stdout, once "
        "(with --secret: prints its id)",
    )
    add.add_argument("--tenant", required=True, metavar="NAME")
    add.add_argument(
        "--url", required=True, metavar="URL", help="http(s) endpoint; a Slack incoming webhook works"
    )
    add.add_argument(
        "--kinds",
        type=_kinds,
        metavar="KIND[,KIND...]",
        help=f"signal kinds to send (default: all): {', '.join(WEBHOOK_KINDS)}",
    )
    add.add_argument("--secret", metavar="SECRET", help="signing secret to use instead of a generated one")
    add.add_argument("--description", metavar="TEXT", help="where it goes, who reads it")
    add.set_defaults(handler=_webhook_add)
    listing = webhook_actions.add_parser("list", help="list webhooks (never their secrets)")
    listing.add_argument("--tenant", metavar="NAME", help="only this tenant's webhooks")
    listing.set_defaults(handler=_webhook_list)
    remove = webhook_actions.add_parser("remove", help="delete a webhook and its delivery log")
    remove.add_argument("webhook_id", metavar="WEBHOOK_ID")
    remove.set_defaults(handler=_webhook_remove)
    test = webhook_actions.add_parser(
        "test", help="POST a signed test signal to a webhook once; exit 1 unless it answers 2xx"
    )
    test.add_argument("webhook_id", metavar="WEBHOOK_ID")
    test.add_argument(
        "--timeout-s", type=_seconds, default=5.0, metavar="S", help="request timeout (default 5)"
    )
    test.set_defaults(handler=_webhook_test)


# --- budgets (issue 17) -------------------------------------------------------------------------


class UnknownBudget(AdminError):
    """No budget with that id (of that tenant)."""


class BadBudget(AdminError):
    """A budget that cannot be set (:class:`tokentide.budgets.InvalidBudget`)."""


@dataclass(frozen=True, slots=True)
class BudgetInfo:
    budget_id: str
    tenant: str
    scope: str
    value: str
    period: str
    amount_usd: float
    created_at: datetime
    updated_at: datetime


def _budget(row: TupleRow) -> BudgetInfo:
    budget_id, tenant, scope, value, period, amount, created_at, updated_at = row
    return BudgetInfo(budget_id, tenant, scope, value, period, float(amount), created_at, updated_at)


def set_budget(
    conn: Connection, tenant: str, *, scope: str, value: str | None, period: str, amount_usd: float
) -> BudgetInfo:
    """Set ``tenant``'s ``period`` budget of ``scope`` ``value`` to ``amount_usd`` (a new one, or
    the existing one's amount changed; its id and signals stay)."""
    try:
        known = budgets.checked(scope, value, period, amount_usd)
    except budgets.InvalidBudget as exc:
        raise BadBudget(str(exc)) from None
    _require_tenant(conn, tenant)
    known_scope, known_value, known_period, amount = known
    row = conn.execute(
        budgets.UPSERT_BUDGET,
        {
            "budget_id": budgets.new_budget_id(secrets.token_hex(6)),
            "tenant": tenant,
            "scope": str(known_scope),
            "value": known_value,
            "period": str(known_period),
            "amount": amount,
        },
    ).fetchone()
    if row is None:  # INSERT ... RETURNING always returns its row
        raise AdminError("budget not set")
    return _budget(row)


def list_budgets(conn: Connection, tenant: str | None = None) -> list[BudgetInfo]:
    """Every budget (of ``tenant`` if given)."""
    if tenant is not None:
        _require_tenant(conn, tenant)
    rows = conn.execute(
        "SELECT budget_id, tenant_id, scope, scope_value, period, amount_usd, created_at, updated_at"
        " FROM budgets WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s"
        " ORDER BY tenant_id, scope, scope_value, period",
        {"tenant": tenant},
    ).fetchall()
    return [_budget(r) for r in rows]


def delete_budget(conn: Connection, tenant: str, budget_id: str) -> BudgetInfo:
    """Delete ``tenant``'s budget ``budget_id`` and its signals."""
    row = conn.execute(budgets.DELETE_BUDGET, {"tenant": tenant, "budget_id": budget_id}).fetchone()
    if row is None:
        raise UnknownBudget(
            f"no budget {budget_id!r} of tenant {tenant!r} (see `tokentide admin budget list`)"
        )
    return _budget(row)


def _budget_set(conn: Connection, args: argparse.Namespace) -> None:
    info = set_budget(
        conn, args.tenant, scope=args.scope, value=args.value, period=args.period, amount_usd=args.amount_usd
    )
    _out(info.budget_id)
    _err(
        f"budget {info.budget_id}: {budgets.scope_label(budgets.Scope(info.scope), info.value)} of "
        f"tenant {info.tenant!r}, {info.amount_usd:,.2f} USD per {info.period}"
    )


def _budget_list(conn: Connection, args: argparse.Namespace) -> None:
    _table(
        ("BUDGET_ID", "TENANT", "SCOPE", "VALUE", "PERIOD", "AMOUNT_USD", "UPDATED"),
        [
            (
                b.budget_id,
                b.tenant,
                b.scope,
                b.value or "-",
                b.period,
                f"{b.amount_usd:.2f}",
                _time(b.updated_at),
            )
            for b in list_budgets(conn, args.tenant)
        ],
    )


def _budget_delete(conn: Connection, args: argparse.Namespace) -> None:
    info = delete_budget(conn, args.tenant, args.budget_id)
    _out(f"deleted budget {info.budget_id} of tenant {info.tenant!r} and its signals")


def _amount(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"an amount in USD, not {text!r}") from None
    if not (math.isfinite(value) and 0 < round(value, 4) <= budgets.MAX_AMOUNT_USD):
        raise argparse.ArgumentTypeError(f"at least 0.0001 and at most {budgets.MAX_AMOUNT_USD:,.0f} USD")
    return value


def _budget_commands(objects: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``tokentide admin budget set|list|delete``."""
    budget = objects.add_parser(
        "budget", help="set, list or delete USD budgets per tenant, team, user, project"
    )
    actions = budget.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    setting = actions.add_parser(
        "set",
        help="set a daily, weekly or monthly budget (prints its id); setting it again changes the amount",
    )
    setting.add_argument("--tenant", required=True, metavar="NAME")
    setting.add_argument("--scope", required=True, choices=[str(s) for s in budgets.Scope])
    setting.add_argument(
        "--value", metavar="TEXT", help="the team, user or project (none for --scope tenant)"
    )
    setting.add_argument("--period", required=True, choices=[str(p) for p in budgets.Period])
    setting.add_argument("--amount-usd", required=True, type=_amount, metavar="USD")
    setting.set_defaults(handler=_budget_set)
    listing = actions.add_parser("list", help="list budgets")
    listing.add_argument("--tenant", metavar="NAME", help="only this tenant's budgets")
    listing.set_defaults(handler=_budget_list)
    delete = actions.add_parser("delete", help="delete a budget and its signals")
    delete.add_argument("--tenant", required=True, metavar="NAME")
    delete.add_argument("budget_id", metavar="BUDGET_ID")
    delete.set_defaults(handler=_budget_delete)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Declare ``tokentide admin ...`` on ``parser``; every leaf sets the ``handler`` :func:`run` calls."""
    objects = parser.add_subparsers(dest="admin_object", required=True, metavar="OBJECT")

    tenant = objects.add_parser("tenant", help="create, list, change, disable or enable tenants")
    tenant_actions = tenant.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    create = tenant_actions.add_parser("create", help="create a tenant (a team)")
    create.add_argument("name", metavar="NAME")
    _policy_options(create)
    create.set_defaults(handler=_tenant_create)
    tenant_actions.add_parser("list", help="list tenants and their policies").set_defaults(
        handler=_tenant_list
    )
    change = tenant_actions.add_parser("set", help="change a tenant's limits or privacy mode")
    change.add_argument("name", metavar="NAME")
    _policy_options(change)
    change.set_defaults(handler=_tenant_set)
    for action, handler, help_text in (
        ("disable", _tenant_disable, "refuse the tenant's keys (403) until enabled again"),
        ("enable", _tenant_enable, "accept the tenant's keys again"),
    ):
        sub = tenant_actions.add_parser(action, help=help_text)
        sub.add_argument("name", metavar="NAME")
        sub.set_defaults(handler=handler)

    key = objects.add_parser("key", help="create, list or revoke API keys")
    key_actions = key.add_subparsers(dest="admin_action", required=True, metavar="ACTION")
    create = key_actions.add_parser(
        "create", help="create a key: prints the key alone on stdout, once (its id goes to stderr)"
    )
    create.add_argument("--tenant", required=True, metavar="NAME")
    create.add_argument("--description", metavar="TEXT", help="who or what uses the key")
    create.add_argument(
        "--scope",
        choices=KEY_SCOPES,
        default="ingest",
        help="ingest: agents export telemetry with it (default); read: the dashboard API and web UI",
    )
    create.set_defaults(handler=_key_create)
    listing = key_actions.add_parser("list", help="list keys (ids only, never secrets)")
    listing.add_argument("--tenant", metavar="NAME", help="only this tenant's keys")
    listing.set_defaults(handler=_key_list)
    revoke = key_actions.add_parser("revoke", help="revoke a key; ingest refuses it within 10 s")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(handler=_key_revoke)

    _webhook_commands(objects)
    _budget_commands(objects)

    topics_help = (
        "create the pipeline's Kafka topics, the stream stage's changelog and dead-letter topic, or "
        "check them (KAFKA_BOOTSTRAP, TOKENTIDE_PARTITIONS, TOKENTIDE_TOPIC_PREFIX, "
        "TOKENTIDE_TOPIC_REPLICATION_FACTOR, TOKENTIDE_STREAMS_APP_ID); no database needed"
    )
    topics = objects.add_parser(
        "topics",
        help=topics_help,
        description=f"{topics_help}. Missing topics are created and differing configs (retention, "
        "compaction, message size) updated; a topic, the stream stage's changelog included, with "
        "another partition count is an error (exit 1) and is never changed, and so is the "
        "faust-based stage's changelog under the same TOKENTIDE_STREAMS_APP_ID. Idempotent.",
    )
    topics.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a topic is missing or differs"
    )
    topics.add_argument(
        "--wait-s",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="how long to retry while Kafka is unreachable (default 60)",
    )
    topics.add_argument(
        "--timeout-s",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="timeout of each Kafka request (default 30)",
    )


def run(args: argparse.Namespace, dsn: str) -> int:
    """Run the parsed admin command in one transaction on ``dsn``: 0 done, 1 refused or failed.

    Refusals and database errors are printed on stderr without a traceback.
    """
    import psycopg  # noqa: PLC0415 - see the module docstring: not for every `tokentide` command

    handler: Handler = args.handler
    try:
        with psycopg.connect(dsn, connect_timeout=10, application_name="tokentide-admin") as conn:
            handler(conn, args)
    except AdminError as exc:
        _err(f"tokentide admin: {exc}")
        return 1
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
        _err(f"tokentide admin: the database is not migrated ({exc}): run `tokentide migrate` first")
        return 1
    except psycopg.Error as exc:
        _err(f"tokentide admin: database error: {exc}")
        return 1
    return 0
