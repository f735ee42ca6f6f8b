"""The OTLP/gRPC receiver: ``Export`` of the logs, metrics and trace collector services.

The trace service is served only to refuse: unless ``TOKENTIDE_ACCEPT_TRACES`` is on, its
``Export`` answers OK with every span rejected (``partial_success``, a message naming the fix),
before any authentication; nothing is published (decision 34).

Per call, exactly as OTLP/HTTP (:func:`ingest.app.handle_export`): authenticate -> admit
(tenant rate, size limit, in-flight memory) -> decode -> :class:`ingest.service.Ingestor` ->
``Export*ServiceResponse`` (``partial_success`` when records were refused). Every
:class:`~ingest.errors.IngestError` ends the call with the code and ``google.rpc.Status``
details of :func:`ingest.errors.rpc_status` (``grpc-status-details-bin``), so the client sees
``RetryInfo`` exactly where HTTP sends ``Retry-After``.

Two things grpc does before a handler runs:

- it applies ``grpc.max_receive_message_length`` (``max_body_bytes``) to the message *after*
  decompression (gzip included), answering ``RESOURCE_EXHAUSTED`` itself; such calls never
  reach the handler, so they are not in this service's request metrics;
- it would deserialize the request, and a corrupt body would then end as ``UNKNOWN``. The
  handlers therefore take the bytes as received and decode them with :func:`ingest.decode.decode`:
  a corrupt body is ``INVALID_ARGUMENT`` with ``BadRequest`` details, as HTTP's 400, and Kafka
  receives the very bytes the client sent when nothing had to change.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf.message import Message
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from ingest import errors
from ingest.auth import TENANT_HEADER
from ingest.decode import decode
from ingest.errors import PROTOBUF, IngestError, PayloadTooLarge, SignalNotAccepted
from ingest.runtime import Runtime
from ingest.service import ExportOutcome, export_response, require_accepted
from tokentide.topics import Signal

log = logging.getLogger(__name__)

#: Full gRPC service name of each signal, from the generated descriptors.
SERVICES: dict[Signal, str] = {
    Signal.LOGS: logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name,
    Signal.METRICS: metrics_service_pb2.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    Signal.TRACES: trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name,
}
METHOD = "Export"


class ServicerContext(Protocol):
    """What the handlers use of ``grpc.aio.ServicerContext``."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None: ...

    async def abort_with_status(self, status: Any) -> NoReturn: ...


def grpc_status(error: IngestError) -> Any:
    """The ``grpc.Status`` that ends a call failed with ``error`` (code, message, details)."""
    return rpc_status.to_status(errors.rpc_status(error))


def metadata_value(context: ServicerContext, key: str) -> str | None:
    """The first text value of metadata ``key`` (keys arrive lower-case, as HTTP/2 requires)."""
    for name, value in context.invocation_metadata() or ():
        if name == key and isinstance(value, str):
            return value
    return None


def _serialize(response: Message) -> bytes:
    encoded: bytes = response.SerializeToString()
    return encoded


class OtlpReceiver:
    """The ``Export`` handler of every signal, sharing the HTTP receiver's :class:`Runtime`."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def handlers(self) -> tuple[Any, ...]:
        """One generic handler per collector service, each serving ``Export`` on raw bytes."""
        return tuple(
            grpc.method_handlers_generic_handler(
                SERVICES[signal],
                {
                    METHOD: grpc.unary_unary_rpc_method_handler(
                        self._handler(signal),
                        request_deserializer=None,  # the bytes as received; see the module doc
                        response_serializer=_serialize,
                    )
                },
            )
            for signal in Signal
        )

    def _handler(self, signal: Signal) -> Callable[[bytes, ServicerContext], Awaitable[Message]]:
        async def export(body: bytes, context: ServicerContext) -> Message:
            return await self.export(signal, body, context)

        return export

    async def export(self, signal: Signal, body: bytes, context: ServicerContext) -> Message:
        """One OTLP/gRPC export; ends the call with the error's status on failure."""
        metrics = self._runtime.metrics
        try:
            response = await self._export(signal, body, context)
        except IngestError as exc:
            error = exc
        except Exception:
            # Not an answer of the error table: a bug. Log it, and answer INTERNAL (HTTP's
            # 500) rather than grpc's bare UNKNOWN.
            log.exception("OTLP/gRPC %s export failed unexpectedly", signal.value)
            error = IngestError("internal error in the OTLP receiver")
        else:
            metrics.answered(signal.value, "200")
            return response
        metrics.rejects.labels(error.reason).inc()
        metrics.answered(signal.value, str(error.status))
        return await context.abort_with_status(grpc_status(error))  # raises: the call ends here

    async def _export(self, signal: Signal, body: bytes, context: ServicerContext) -> Message:
        runtime = self._runtime
        settings, metrics = runtime.settings, runtime.metrics
        if signal is Signal.TRACES and signal not in settings.signals:
            return self._refuse_spans(body)
        require_accepted(signal, settings.signals)
        tenant = await runtime.authenticator.authenticate(
            metadata_value(context, "authorization"), metadata_value(context, TENANT_HEADER)
        )
        await runtime.limiter.admit_request(tenant)
        # grpc refused anything above settings.max_body_bytes; a tenant may have less.
        limit = min(settings.max_body_bytes, tenant.max_body_bytes or settings.max_body_bytes)
        size = len(body)
        if size > limit:
            raise PayloadTooLarge(f"request of {size} bytes exceeds the limit of {limit} bytes")
        runtime.budget.acquire(size)
        try:
            metrics.received(signal.value, size)
            await runtime.limiter.admit_bytes(tenant, size)
            request = decode(signal, body, PROTOBUF)
            outcome = await runtime.ingestor.export(signal, tenant, request, body, max_bytes=limit)
        finally:
            runtime.budget.release(size)
        return export_response(signal, outcome)

    def _refuse_spans(self, body: bytes) -> Message:
        """Spans refused as OTLP partial success: every span rejected, with why, and nothing
        kept. Not ``UNIMPLEMENTED``: a client that cannot turn its trace export off (Gemini
        CLI 0.61) fails its SDK's shutdown on that error and loses the logs and metrics it
        had not sent yet (decision 34). Before authentication, like the refusal over HTTP."""
        try:
            request = decode(Signal.TRACES, body, PROTOBUF)
        except IngestError:
            request = None  # not even spans: refused all the same
        spans = 0
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            spans = sum(
                len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
            )
        message = str(SignalNotAccepted.for_signal(Signal.TRACES))
        self._runtime.metrics.refused_records.labels(Signal.TRACES.value, "signal_not_accepted").inc(spans)
        return export_response(Signal.TRACES, ExportOutcome(accepted=0, rejected=spans, message=message))


async def serve_grpc(runtime: Runtime, reuse_port: bool = False) -> grpc.aio.Server:
    """Create, bind and start the OTLP/gRPC server on ``settings.host:settings.grpc_port``.

    ``reuse_port``: one of several worker processes sharing the port (ingest/workers.py,
    whose supervisor has checked that no one else holds it).

    The caller stops it (``await server.stop(grace=...)``) before stopping ``runtime``.
    Raises ``RuntimeError`` when the address cannot be bound.
    """
    settings = runtime.settings
    server = grpc.aio.server(
        options=[
            # Checked by grpc on the decompressed message (see the module docstring).
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            # grpc sets SO_REUSEPORT by default: a second process on the same port would then
            # silently share its traffic instead of failing to start.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    server.add_generic_rpc_handlers(OtlpReceiver(runtime).handlers())
    server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    await server.start()
    return server
