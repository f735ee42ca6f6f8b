"""The transport-independent core of ingest: from a decoded request to Kafka.

HTTP (``ingest.app``) and gRPC (``ingest.grpc``) authenticate, admit and decode in their own
way, then hand the request to :meth:`Ingestor.export`, which drops the records tokentide refuses
(:mod:`ingest.validate`: malformed ids, points without a value, token counts, costs and dates
out of :mod:`tokentide.bounds`; answered as OTLP partial success), redacts content per the
tenant's policy, splits by session (:mod:`ingest.partition`, the rule of
:mod:`tokentide.identity`) and publishes one message per session, keyed ``tenant/<session>``
with the session in ``tt-session``. It returns only after Kafka acknowledged everything it
accepted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from ingest.errors import SignalNotAccepted
from ingest.metrics import IngestMetrics
from ingest.onepass import prepare_logs
from ingest.partition import split_by_session
from ingest.producer import RawMessage, RawPublisher
from ingest.redact import Redactor
from ingest.validate import drop_invalid
from tokentide.tenancy import Tenant
from tokentide.topics import (
    HEADER_RECEIVED_AT,
    HEADER_SESSION,
    HEADER_SIGNAL,
    HEADER_TENANT,
    Signal,
    Topics,
    session_key,
)


def require_accepted(signal: Signal, accepted: frozenset[Signal]) -> None:
    """Raise :class:`SignalNotAccepted` (404 / UNIMPLEMENTED) unless ``signal`` is accepted.

    Checked before anything else (credentials included), as the Collector's mux answers a
    path it does not serve: the answer does not depend on who asks.
    """
    if signal not in accepted:
        raise SignalNotAccepted.for_signal(signal)


@dataclass(frozen=True, slots=True)
class ExportOutcome:
    """What happened to a request's records. ``rejected`` > 0 means partial success."""

    accepted: int
    rejected: int = 0
    message: str = ""


def export_response(signal: Signal, outcome: ExportOutcome) -> Message:
    """The ``Export*ServiceResponse``; ``partial_success`` only when records were refused."""
    if signal is Signal.LOGS:
        logs = ExportLogsServiceResponse()
        if outcome.rejected:
            logs.partial_success.rejected_log_records = outcome.rejected
            logs.partial_success.error_message = outcome.message
        return logs
    if signal is Signal.METRICS:
        metrics = ExportMetricsServiceResponse()
        if outcome.rejected:
            metrics.partial_success.rejected_data_points = outcome.rejected
            metrics.partial_success.error_message = outcome.message
        return metrics
    traces = ExportTraceServiceResponse()
    if outcome.rejected:
        traces.partial_success.rejected_spans = outcome.rejected
        traces.partial_success.error_message = outcome.message
    return traces


class Ingestor:
    def __init__(
        self, topics: Topics, publisher: RawPublisher, redactor: Redactor, metrics: IngestMetrics
    ) -> None:
        self._topics = topics
        self._publisher = publisher
        self._redactor = redactor
        self._metrics = metrics

    async def export(
        self,
        signal: Signal,
        tenant: Tenant,
        request: Message,
        wire: bytes | None = None,
        *,
        max_bytes: int | None = None,
    ) -> ExportOutcome:
        """Publish ``request`` for ``tenant``; ``wire`` is its protobuf encoding if at hand.

        ``max_bytes`` (the request's size limit) also bounds what a request split by session
        may publish in total: past it, ``PayloadTooLarge`` (413) and nothing is published.

        Raises ``Unavailable`` when Kafka does not acknowledge; then nothing of this request
        may be assumed written (a part may have been: the client's retry is deduplicated
        downstream).
        """
        received_ns = time.time_ns()
        if signal is Signal.LOGS:  # the same three steps, in one pass over the attributes
            refused, redacted, located = prepare_logs(
                request, tenant.name, received_ns, self._redactor, tenant.redaction
            )
            parts = split_by_session(signal, tenant.name, request, max_bytes, located)
        else:
            refused = drop_invalid(signal, request, received_ns)
            redacted = self._redactor.apply(signal, request, tenant.redaction)
            parts = split_by_session(signal, tenant.name, request, max_bytes)
        reuse_wire = wire is not None and not refused.count and not redacted and len(parts) == 1
        received = str(received_ns).encode()
        tenant_bytes = tenant.name.encode()
        batch = [
            RawMessage(
                topic=self._topics.raw(signal),
                key=session_key(tenant.name, part.session_id).encode(),
                value=wire if reuse_wire and wire is not None else part.request.SerializeToString(),
                headers=[
                    (HEADER_TENANT, tenant_bytes),
                    (HEADER_SIGNAL, signal.value.encode()),
                    (HEADER_RECEIVED_AT, received),
                    (HEADER_SESSION, part.session_id.encode()),
                ],
            )
            for part in parts
        ]
        if batch:
            await self._publisher.publish(batch)
        accepted = sum(p.records for p in parts)
        self._metrics.accepted(signal.value, accepted)
        if redacted:
            self._metrics.redacted.labels(signal.value).inc(redacted)
        if refused.count:
            self._metrics.rejects.labels("invalid_records").inc(refused.count)
            for reason, count in refused.reasons.items():
                self._metrics.refused_records.labels(signal.value, reason).inc(count)
        return ExportOutcome(accepted, refused.count, refused.message)
