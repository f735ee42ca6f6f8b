"""The stream stage's Prometheus metrics, on an injectable registry (tests use a fresh one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class StreamsMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "tokentide_streams_messages",
            "Raw messages applied, by signal.",
            ["signal"],
            registry=registry,
        )
        self.events = Counter("tokentide_streams_events", "Normalised events emitted.", registry=registry)
        self.points = Counter(
            "tokentide_streams_points", "Normalised metric points emitted.", registry=registry
        )
        self.signals = Counter(
            "tokentide_streams_signals",
            "Context signals emitted (each once per crossing).",
            registry=registry,
        )
        self.dead_letters = Counter(
            "tokentide_streams_dead_letters",
            "Records or messages dead-lettered instead of counted, by raw topic, partition and "
            "reason (a value out of range, undecodable, normalise_error, apply_error).",
            ["topic", "partition", "reason"],
            registry=registry,
        )
        self.applied_offset = Gauge(
            "tokentide_streams_applied_offset",
            "Last raw offset applied (committed with its state and outputs), per raw partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.lag = Gauge(
            "tokentide_streams_lag",
            "Raw messages not applied yet (high watermark - next offset), per raw partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.skipped = Counter(
            "tokentide_streams_skipped_offsets",
            "Raw offsets missing when their partition was read (deleted by retention before "
            "they were applied).",
            ["topic", "partition"],
            registry=registry,
        )
        self.transactions = Counter(
            "tokentide_streams_transactions",
            "Kafka transactions of the stage, by outcome (committed, aborted, fenced).",
            ["outcome"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "tokentide_streams_batch_seconds",
            "Time to apply and commit one partition's share of a batch.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.state_bytes = Histogram(
            "tokentide_streams_state_bytes",
            "Size of a session's stored state, per write.",
            buckets=(512, 1024, 2048, 4096, 8192, 16384, 65536, 262144),
            registry=registry,
        )
        self.restored = Counter(
            "tokentide_streams_restored_records",
            "Changelog records read into the local state on assignment.",
            registry=registry,
        )
        self.tasks = Gauge(
            "tokentide_streams_tasks",
            "Input partition numbers owned by this worker, by status (ready, restoring, fenced).",
            ["status"],
            registry=registry,
        )
