"""One typed settings object per service, read from the environment and validated at start-up.

Variable names are the same everywhere (``.env``, the local stack, docker-compose, Helm):
``KAFKA_BOOTSTRAP`` and ``DATABASE_URL`` for the two backing services, ``TOKENTIDE_*`` for
everything else. Settings are built once in the CLI and passed into each service's factory,
never at import time.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tokentide.tenancy import Redaction, SignalThresholds
from tokentide.topics import Signal, Topics

#: The DSN of the local development stack (``make up``). Refused outside open mode.
DEV_DATABASE_URL = "postgresql://tokentide:tokentide@127.0.0.1:5432/tokentide"
#: Redaction key of local development. Refused outside open mode.
DEV_REDACTION_KEY = "tokentide-development-only"
MiB = 1024 * 1024


class _Base(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOKENTIDE_",
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Single-tenant, unauthenticated local use: every export goes to tenant ``default``.
    open_mode: bool = False


class KafkaSettings(_Base):
    kafka_bootstrap: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "TOKENTIDE_KAFKA_BOOTSTRAP"),
    )
    topic_prefix: str = ""
    #: Partitions of every topic; bounds the parallelism of the stateful stage and cannot
    #: change later without a new streams application id.
    partitions: int = Field(default=4, ge=1, le=1024)
    topic_replication_factor: int = Field(default=1, ge=1)
    #: Largest Kafka message: one raw OTLP request travels as one message (Codex JSON
    #: exports reach ~1.3 MB, above Kafka's 1 MB default).
    kafka_max_message_bytes: int = Field(default=16 * MiB, ge=MiB)

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)


class DatabaseSettings(_Base):
    database_url: SecretStr = Field(
        default=SecretStr(DEV_DATABASE_URL),
        validation_alias=AliasChoices("DATABASE_URL", "TOKENTIDE_DATABASE_URL"),
    )

    @model_validator(mode="after")
    def _no_dev_secret_in_production(self) -> DatabaseSettings:
        if not self.open_mode and self.database_url.get_secret_value() == DEV_DATABASE_URL:
            raise ValueError(
                "DATABASE_URL is unset and the built-in development DSN is only allowed in "
                "open mode: set DATABASE_URL (or TOKENTIDE_OPEN_MODE=1 for local use)"
            )
        return self


class IngestSettings(KafkaSettings, DatabaseSettings):
    host: str = "127.0.0.1"
    ingest_port: int = Field(default=4318, ge=1, le=65535)
    #: OTLP/gRPC port, served by the same process; 0 turns gRPC off.
    grpc_port: int = Field(default=4317, ge=0, le=65535)
    #: Largest accepted request body, after decompression (413 above it; gRPC:
    #: RESOURCE_EXHAUSTED). A tenant may have a smaller limit of its own.
    max_body_bytes: int = Field(default=16 * MiB, ge=1024)
    #: Bytes all requests in progress may hold together; past it, 503 + Retry-After.
    max_inflight_bytes: int = Field(default=256 * MiB, ge=MiB)
    #: Default per-tenant rates (a tenant's own setting wins); unset = unlimited. Outside open
    #: mode they hold for all replicas together (one bucket per tenant, leased through the
    #: database: ingest/leases.py); in open mode, per process.
    requests_per_s: float | None = Field(default=None, gt=0)
    bytes_per_s: float | None = Field(default=None, gt=0)
    #: How often a replica exchanges its rate-limit leases with the shared buckets (one
    #: database call for all its tenants); requests never wait for it but in the two cases
    #: ingest/leases.py names.
    limit_exchange_s: float = Field(default=0.25, ge=0.02, le=5)
    #: How long a request may wait for Kafka's acknowledgement before answering 503.
    kafka_ack_timeout_s: float = Field(default=10.0, gt=0)
    #: How long the producer holds a partition's batch for more requests before sending it.
    #: 0: send as soon as the broker has no produce request of ours in flight; the requests
    #: that arrive meanwhile go together in the next one, so batches grow with load and a
    #: lone request waits for nothing (each request still waits for its own ack).
    kafka_linger_ms: int = Field(default=0, ge=0, le=1000)
    #: Largest batch per partition (bytes before compression) in one produce request; a
    #: request larger than this travels alone. Small batches cap throughput (16 KiB, 3 Claude
    #: Code exports: ~5,500 messages/s); at most ``kafka_max_message_bytes``.
    kafka_batch_bytes: int = Field(default=MiB, ge=16 * 1024)
    #: ``Retry-After`` seconds sent with 503 when Kafka cannot take the write.
    retry_after_s: int = Field(default=5, ge=1)
    #: Default privacy mode for content attributes (a tenant's own setting wins).
    redaction: Redaction = Redaction.HASH
    #: Key of the keyed hash that replaces redacted values. Refused at its default outside
    #: open mode: with a known key, short prompts could be recovered by guessing.
    redaction_key: SecretStr = SecretStr(DEV_REDACTION_KEY)
    #: On SIGTERM: how long in-flight requests may take to finish before the process exits.
    shutdown_grace_s: float = Field(default=15.0, ge=0)
    #: How often every replica reloads API keys (a revoked key is refused within this).
    key_refresh_s: float = Field(default=5.0, gt=0, le=10)
    #: Ingest processes (workers) behind the one port, each using a core (ingest/workers.py);
    #: 0: one per usable core (CPU affinity and the container's CPU quota), at most as many as
    #: the in-flight budget has room for one largest request each. 1: a single process.
    ingest_workers: int = Field(default=0, ge=0, le=256)
    #: Publish OTLP traces to ``otlp.raw.traces``. Off by default: tokentide itself consumes no
    #: spans, so ``/v1/traces`` answers 404 (gRPC: UNIMPLEMENTED) rather than accepting spans
    #: that nothing reads. Turn on only when a consumer of your own reads that topic.
    accept_traces: bool = False

    @cached_property
    def signals(self) -> frozenset[Signal]:
        """The signals this ingest accepts (publishes); the others are refused."""
        return frozenset(s for s in Signal if s is not Signal.TRACES or self.accept_traces)

    def worker_count(self, cpus: int) -> int:
        """How many worker processes to run on ``cpus`` usable cores."""
        if self.ingest_workers:
            return self.ingest_workers
        return max(1, min(cpus, self.max_inflight_bytes // self.max_body_bytes))

    @model_validator(mode="after")
    def _budget_per_worker(self) -> IngestSettings:
        if self.ingest_workers > 1 and self.max_inflight_bytes // self.ingest_workers < self.max_body_bytes:
            raise ValueError(
                f"TOKENTIDE_MAX_INFLIGHT_BYTES ({self.max_inflight_bytes}) split over "
                f"{self.ingest_workers} workers leaves less than TOKENTIDE_MAX_BODY_BYTES "
                f"({self.max_body_bytes}) per worker: raise it, or run fewer workers"
            )
        return self

    @model_validator(mode="after")
    def _no_dev_redaction_key(self) -> IngestSettings:
        if not self.open_mode and self.redaction_key.get_secret_value() == DEV_REDACTION_KEY:
            raise ValueError(
                "TOKENTIDE_REDACTION_KEY is unset: set a random secret (e.g. `openssl rand -hex 32`), "
                "the same on every ingest replica"
            )
        return self


#: Where a test may pause the stream stage (``TOKENTIDE_STREAMS_TEST_PAUSE_AT``), in the order a
#: batch reaches them (streams.worker): applied in memory; state sent to the changelog;
#: outputs sent; transaction committed; local store written.
PAUSE_POINTS = ("before_transaction", "after_changelog", "after_outputs", "after_commit", "after_store")


class StreamsSettings(KafkaSettings):
    #: The consumer group, the prefix of the transactional ids (one per input partition) and
    #: the name of the state changelog (``<id>-state-changelog``).
    streams_app_id: str = "tokentide-streams"
    #: Local state (RocksDB, one database per input partition), rebuilt from the changelog
    #: when lost; one directory per worker.
    data_dir: Path = Path(".local/streams")
    #: ``rocksdb`` (production) or ``memory`` (tests: state only in the changelog).
    store: Literal["rocksdb", "memory"] = "rocksdb"
    host: str = "127.0.0.1"
    streams_port: int = Field(default=6066, ge=1, le=65535)
    #: Unnumbered events (no ``event.sequence``) remembered per session to drop re-sent exports.
    dedup_window: int = Field(default=128, ge=16, le=100_000)
    #: Sessions whose decoded state a worker keeps in memory, shared by its partitions (0:
    #: decode every message from the local store).
    state_cache_sessions: int = Field(default=10_000, ge=0)
    #: Raw messages read at once: each input partition's share is applied, then committed in
    #: one Kafka transaction (state, outputs and input offsets together).
    batch_max_messages: int = Field(default=500, ge=1)
    #: How long a read waits for more messages (adds at most this to a signal's latency).
    batch_linger_s: float = Field(default=0.05, gt=0)
    #: ``/readyz`` turns 503 when a partition with lag has not advanced for this long.
    stall_after_s: float = Field(default=60.0, gt=0)
    #: Consumer group session timeout and heartbeat: how soon a dead worker's partitions move.
    session_timeout_s: float = Field(default=10.0, ge=1)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    #: An open transaction of a worker that died is aborted after this (or at once, when its
    #: partition's next owner starts).
    transaction_timeout_s: float = Field(default=60.0, ge=1)
    #: What the worker writes to the derived topics and its changelog: 2 (the versioned
    #: MessagePack contract, decision 33) or 1 (the previous version's JSON, which that
    #: version's sink, notifier and worker read: set it while an upgrade from it must stay
    #: reversible, then 2). Every consumer of this version reads both.
    wire_schema: int = Field(default=2, ge=1, le=2)
    #: Test only: pause (forever) at this point of the N-th batch, ``<point>`` or ``<point>:<N>``
    #: (one of PAUSE_POINTS), so that a fault test can kill -9 the worker exactly there.
    streams_test_pause_at: str | None = None
    #: Context signal thresholds (JSON, e.g. ``{"warning": 0.7}``), and per-tenant overrides
    #: (``{"acme": {"checkpoint": 0.85}}``).
    signal_thresholds: SignalThresholds = SignalThresholds()
    tenant_signal_thresholds: dict[str, SignalThresholds] = Field(default_factory=dict)

    @field_validator("store", mode="before")
    @classmethod
    def _store_scheme(cls, value: object) -> object:
        # faust-era values (``rocksdb://``, ``memory://``) still mean the same store.
        return value.removesuffix("://") if isinstance(value, str) else value

    @field_validator("streams_test_pause_at")
    @classmethod
    def _pause_point(cls, value: str | None) -> str | None:
        if value is not None:
            point, _, nth = value.partition(":")
            if point not in PAUSE_POINTS or (nth and not nth.isdigit()):
                points = ", ".join(PAUSE_POINTS)
                raise ValueError(f"want <point>[:<n>] with a point of {points}, not {value!r}")
        return value

    @property
    def changelog_topic(self) -> str:
        """The compacted changelog of the stage's state, co-partitioned with the raw topics."""
        return f"{self.streams_app_id}-state-changelog"

    @property
    def dead_letter_topic(self) -> str:
        """Records and messages the stage could not count, with the reason and their origin."""
        return f"{self.topic_prefix}streams.dead-letters"


class SinkSettings(KafkaSettings, DatabaseSettings):
    sink_group_id: str = "tokentide-sink"
    host: str = "127.0.0.1"
    sink_port: int = Field(default=9464, ge=1, le=65535)
    #: Most Kafka messages written in one database transaction.
    batch_max_messages: int = Field(default=2000, ge=1)
    #: How long to wait for more messages before writing a partial batch.
    batch_linger_ms: int = Field(default=200, ge=0)
    #: Back-off ceiling between database retries.
    retry_max_backoff_s: float = Field(default=30.0, gt=0)
    #: A statement running longer is cancelled and its batch retried (a stuck database).
    statement_timeout_s: float = Field(default=60.0, gt=0)
    #: Raw events and metric points older than this many days are dropped (whole daily
    #: partitions, or TimescaleDB chunks by its retention policy) and not written; rollups,
    #: sessions and signals are kept. Unset: kept forever.
    raw_retention_days: float | None = Field(default=None, gt=0)
    #: Daily partitions created ahead (plain PostgreSQL layout); a row further in the future
    #: than this has no partition and is dead-lettered.
    partitions_ahead_days: int = Field(default=7, ge=1, le=366)
    #: How often partitions ahead and retention are maintained.
    maintenance_interval_s: float = Field(default=3600.0, gt=0)
    #: How often the broker is asked for the assignment's end offsets (``/readyz``'s ``kafka``
    #: and the lag gauge), and how long an answer may take before Kafka counts as unreachable.
    kafka_probe_interval_s: float = Field(default=5.0, gt=0, le=300)
    kafka_probe_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: How long a batch's transaction waits for the dead-letter topic to acknowledge its
    #: refused records before it is rolled back and retried.
    dead_letter_timeout_s: float = Field(default=15.0, gt=0, le=300)
    #: TEST ONLY, never set in a deployment: stop the consume loop for good at this point (the
    #: fault tests SIGKILL the process there). ``after_database_commit``: after the first
    #: batch's database commit, before its Kafka offsets are committed.
    sink_test_pause: Literal["after_database_commit"] | None = None

    @property
    def dead_letter_topic(self) -> str:
        """Where rows the database refuses, and undecodable messages, go with the reason."""
        return f"{self.topic_prefix}sink.dead-letters"


class DashboardSettings(DatabaseSettings):
    host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8000, ge=1, le=65535)
    pool_max_size: int = Field(default=10, ge=1)
    #: The resource attribute (from ``OTEL_RESOURCE_ATTRIBUTES``) that names a developer's team.
    team_attribute: str = Field(default="team", min_length=1)
    #: How often the event stream (``/api/v1/stream``) looks for changes.
    stream_poll_s: float = Field(default=0.5, gt=0, le=10)
    #: ``/metrics/usage``: the fullest active sessions per tenant given their own context-ratio
    #: gauge (the rest are summarised), what "active" means, how long a scrape's answer is
    #: reused, and the bound on its queries.
    usage_top_sessions: int = Field(default=10, ge=0, le=1000)
    usage_active_within_s: float = Field(default=300, gt=0)
    usage_cache_s: float = Field(default=5, ge=0)
    usage_query_timeout_s: float = Field(default=8, gt=0, le=300)

    #: A token that reads every tenant through the API (``?tenant=`` names which), sent as
    #: ``Authorization: Bearer``; it cannot sign in to the web UI. Unset: none does.
    dashboard_admin_token: SecretStr | None = None
    #: Prometheus' credential for ``/metrics/usage`` (every tenant's usage metrics, nothing
    #: else: not the API). Unset: only read keys (their own tenant) and the admin token scrape.
    metrics_token: SecretStr | None = None
    #: Ingest's key of the keyed hash of redacted values (the same secret on every service):
    #: plan texts of tenants in privacy mode ``hash`` get the hash prompts get. Unset outside
    #: open mode: those texts are dropped instead (decision 38).
    redaction_key: SecretStr | None = None
    #: Ingest's default privacy mode (``TOKENTIDE_REDACTION``), for tenants without their own.
    redaction: Redaction = Redaction.HASH
    #: Largest transcript snapshot a checkpoint keeps, gzip-compressed (its tail beyond).
    checkpoint_transcript_max_bytes: int = Field(default=1024 * 1024, ge=0)
    #: Largest body of a checkpoint POST (the hook's transcript tail, base64); 413 above it.
    checkpoint_max_body_bytes: int = Field(default=8 * MiB, ge=64 * 1024)
    #: A web UI session ends after this long without a request, and this long after sign-in
    #: whatever its use (``POST /api/v1/login``; signing out, or revoking the read key, ends
    #: it at once).
    web_session_idle_s: float = Field(default=12 * 3600, gt=0)
    web_session_max_s: float = Field(default=7 * 24 * 3600, gt=0)
    #: Behind a TLS-terminating proxy: believe its ``X-Forwarded-Proto`` when deciding whether
    #: the session cookie gets ``Secure``. Only when every request comes through that proxy.
    trust_forwarded_proto: bool = False

    @model_validator(mode="after")
    def _distinct_tokens(self) -> DashboardSettings:
        if self.web_session_idle_s > self.web_session_max_s:
            raise ValueError("TOKENTIDE_WEB_SESSION_IDLE_S must not exceed TOKENTIDE_WEB_SESSION_MAX_S")
        scrape = self.metrics_token.get_secret_value() if self.metrics_token else None
        if scrape is not None and len(scrape) < 16:
            raise ValueError("TOKENTIDE_METRICS_TOKEN is too short: use 16+ random characters")
        admin = self.dashboard_admin_token.get_secret_value() if self.dashboard_admin_token else None
        if scrape is not None and scrape == admin:
            raise ValueError(
                "TOKENTIDE_METRICS_TOKEN must differ from TOKENTIDE_DASHBOARD_ADMIN_TOKEN: Prometheus "
                "holds it, and it must not read the API"
            )
        return self


class MigrateSettings(DatabaseSettings):
    pass


class NotifySettings(KafkaSettings, DatabaseSettings):
    """The notifier (``notify/``): webhooks for the signals on ``session.signals``."""

    notify_group_id: str = "tokentide-notify"
    host: str = "127.0.0.1"
    notify_port: int = Field(default=9465, ge=1, le=65535)
    #: Timeout of one webhook POST (connect, write, read), in seconds.
    notify_timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: Attempts per delivery before it is dead (the first one included).
    notify_max_attempts: int = Field(default=6, ge=1, le=50)
    #: Delay before the second attempt; each later one waits ``notify_backoff_factor`` times
    #: longer, at most ``notify_backoff_max_s``. Defaults: 10, 20, 40, 80, 160 s (~5 min).
    notify_backoff_base_s: float = Field(default=10.0, gt=0)
    notify_backoff_factor: float = Field(default=2.0, ge=1)
    notify_backoff_max_s: float = Field(default=600.0, gt=0)
    #: Deliveries attempted at once (and claimed from the database per round).
    notify_concurrency: int = Field(default=16, ge=1, le=1000)
    #: How often the database is looked at for retries that fell due (new signals wake the
    #: delivery loop at once).
    notify_poll_s: float = Field(default=1.0, gt=0, le=60)
    #: Most Kafka messages handled per round.
    notify_batch_max_messages: int = Field(default=200, ge=1)
    #: How often budgets are evaluated (spend, forecast) and budget signals raised (issue 17).
    notify_budget_interval_s: float = Field(default=60.0, gt=0, le=3600)
    #: The team resource attribute, as the dashboard's ``TOKENTIDE_TEAM_ATTRIBUTE``: team
    #: budgets read the same attribute.
    team_attribute: str = Field(default="team", min_length=1)


#: The tenant every export belongs to in open mode.
OPEN_MODE_TENANT = "default"
