"""Ingest's Prometheus metrics, on an injectable registry (tests use a fresh one).

With several worker processes (ingest/workers.py) prometheus_client runs in its multiprocess
mode: every worker's samples are summed at scrape time; each gauge says how (``livesum``: over
the live workers; ``livemin``/``livemax``: their minimum or maximum). Outside it, the mode is
ignored.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "tokentide_ingest_requests",
            "OTLP export requests answered, by signal and HTTP status.",
            ["signal", "status"],
            registry=registry,
        )
        self.bytes = Counter(
            "tokentide_ingest_received_bytes",
            "Request bytes received (HTTP: the body before decompression; gRPC: the decoded message).",
            ["signal"],
            registry=registry,
        )
        self.records = Counter(
            "tokentide_ingest_records",
            "Records (log records, data points, spans) accepted.",
            ["signal"],
            registry=registry,
        )
        self.rejects = Counter(
            "tokentide_ingest_rejects",
            "Requests (or, for invalid_records, records) refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.refused_records = Counter(
            "tokentide_ingest_refused_records",
            "Records (log records, data points, spans) refused inside accepted requests (OTLP "
            "partial success), by signal and reason: bounds' reasons (tokens_negative, "
            "cost_too_large, time_in_future, ...) or a malformed record's (bad_trace_id, ...). "
            'Their sum is tokentide_ingest_rejects{reason="invalid_records"}.',
            ["signal", "reason"],
            registry=registry,
        )
        self.redacted = Counter(
            "tokentide_ingest_redacted_attributes",
            "Content attributes redacted before Kafka.",
            ["signal"],
            registry=registry,
        )
        self.kafka_latency = Histogram(
            "tokentide_ingest_kafka_ack_seconds",
            "Time from produce to Kafka acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.inflight_bytes = Gauge(
            "tokentide_ingest_inflight_bytes",
            "Decoded request bytes currently held.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.limit_exchanges = Counter(
            "tokentide_ingest_limit_exchanges",
            "Exchanges of rate-limit leases with the shared buckets (PostgreSQL), by result.",
            ["result"],
            registry=registry,
        )
        self.limit_exchange_seconds = Histogram(
            "tokentide_ingest_limit_exchange_seconds",
            "Duration of one exchange of rate-limit leases (one database call).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=registry,
        )
        self.limit_waits = Counter(
            "tokentide_ingest_limit_waits",
            "Requests that waited for an exchange of rate-limit leases (no lease yet, or the "
            "lease ran out while the shared bucket had tokens).",
            registry=registry,
        )
        self.limit_degraded = Gauge(
            "tokentide_ingest_limit_degraded",
            "1 while the shared buckets cannot be reached and this replica limits at rate / replicas.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.limit_replicas = Gauge(
            "tokentide_ingest_limit_replicas",
            "Ingest replicas that exchanged leases in the last 10 s, as the last exchange saw.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.limit_leases = Gauge(
            "tokentide_ingest_limit_leases",
            "Rate-limit leases (tenant, kind) this replica holds.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.kafka_ready = Gauge(
            "tokentide_ingest_kafka_ready",
            "1 when the Kafka producer is connected.",
            multiprocess_mode="livemin",
            registry=registry,
        )

        # Labelled children by signal, made on first use (``labels()`` per request costs a lock
        # and a tuple lookup; made lazily so that no signal shows before it is seen).
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def answered(self, signal: str, status: str) -> None:
        """One request answered with ``status``."""
        self._child(self.requests, signal, status).inc()

    def received(self, signal: str, size: int) -> None:
        self._child(self.bytes, signal).inc(size)

    def accepted(self, signal: str, records: int) -> None:
        self._child(self.records, signal).inc(records)

    # --- ingest.leases.LeaseMetrics -----------------------------------------------------------

    def exchanged(self, seconds: float, ok: bool) -> None:
        self.limit_exchanges.labels("ok" if ok else "failed").inc()
        self.limit_exchange_seconds.observe(seconds)

    def waited(self) -> None:
        self.limit_waits.inc()

    def state(self, degraded: bool, replicas: int, leases: int) -> None:
        self.limit_degraded.set(1 if degraded else 0)
        self.limit_replicas.set(replicas)
        self.limit_leases.set(leases)
