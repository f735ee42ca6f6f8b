"""Ingest's Prometheus metrics, on an injectable registry (tests use a fresh one)."""

from __future__ import annotations

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
            registry=registry,
        )
        self.kafka_ready = Gauge(
            "tokentide_ingest_kafka_ready",
            "1 when the Kafka producer is connected.",
            registry=registry,
        )
