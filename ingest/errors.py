"""Ingest errors and the one table that maps them to OTLP/HTTP answers.

Each error says how the client should react (OTLP spec, "Failures"): only 429, 502, 503 and
504 are retried by exporters, so a transient fault must never surface as 500, and bad data
must never surface as a retryable code. Bodies are ``google.rpc.Status`` encoded like the
request (protobuf or JSON).
"""

from __future__ import annotations

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from tokentide.topics import Signal

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class IngestError(Exception):
    """Root of every error ingest answers with. Never raised itself."""

    status: int = 500
    grpc_code: int = code_pb2.INTERNAL
    retriable: bool = False
    reason: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(IngestError):
    """The body cannot be decoded as the OTLP request of its signal. Not retried."""

    status = 400
    grpc_code = code_pb2.INVALID_ARGUMENT
    reason = "bad_request"


class PayloadTooLarge(IngestError):
    """The body, after decompression, is larger than the configured limit. Not retried."""

    status = 413
    grpc_code = code_pb2.RESOURCE_EXHAUSTED
    reason = "too_large"


class UnsupportedMediaType(IngestError):
    """Content-Type or Content-Encoding that OTLP/HTTP does not define. Not retried."""

    status = 415
    grpc_code = code_pb2.INVALID_ARGUMENT
    reason = "unsupported_media_type"


class SignalNotAccepted(IngestError):
    """A signal this deployment does not take (traces, unless ``TOKENTIDE_ACCEPT_TRACES``).

    Over HTTP answered as the Collector answers a signal without a pipeline: 404 (the path is
    not served), not retried, so the exporter drops the batch and tries again with the next
    one only. Over gRPC the trace service answers OK with every span rejected instead
    (``ingest.grpc``, decision 34); ``UNIMPLEMENTED`` remains this error's gRPC code.
    """

    status = 404
    grpc_code = code_pb2.UNIMPLEMENTED
    reason = "signal_not_accepted"

    @classmethod
    def for_signal(cls, signal: Signal) -> SignalNotAccepted:
        name = signal.value
        return cls(
            f"OTLP {name} are not accepted here: tokentide consumes logs and metrics only. "
            f"Turn the agent's {name} export off (OTEL_{name.upper()}_EXPORTER=none); "
            f"an operator whose own consumer reads otlp.raw.{name} sets "
            f"TOKENTIDE_ACCEPT_{name.upper()}=1"
        )


class Unauthorized(IngestError):
    """No valid API key: missing, unknown or revoked. Not retried."""

    status = 401
    grpc_code = code_pb2.UNAUTHENTICATED
    reason = "unauthorized"


class Forbidden(IngestError):
    """A valid key that may not write here (another tenant's, or a disabled tenant). Not retried."""

    status = 403
    grpc_code = code_pb2.PERMISSION_DENIED
    reason = "forbidden"


class TooManyRequests(IngestError):
    """The tenant is over its request or byte rate; retried after ``retry_after`` seconds."""

    status = 429
    grpc_code = code_pb2.RESOURCE_EXHAUSTED
    retriable = True
    reason = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(IngestError):
    """The write cannot be taken now (Kafka down, memory limit, key store not loaded); the
    exporter retries after ``retry_after`` seconds."""

    status = 503
    grpc_code = code_pb2.UNAVAILABLE
    retriable = True
    reason = "unavailable"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def rpc_status(error: IngestError) -> status_pb2.Status:
    """The ``google.rpc.Status`` of ``error``: code, message, and details (BadRequest, RetryInfo)."""
    status = status_pb2.Status(code=error.grpc_code, message=error.message)
    if isinstance(error, BadRequest):
        details = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="body", description=error.message)
            ]
        )
        status.details.add().Pack(details)
    seconds = retry_after(error)
    if seconds is not None:
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds)))
    return status


def status_body(error: IngestError, media_type: str) -> bytes:
    """Encode ``error`` as a ``google.rpc.Status`` in the request's encoding."""
    status = rpc_status(error)
    if media_type == PROTOBUF:
        encoded: bytes = status.SerializeToString()
        return encoded
    return str(json_format.MessageToJson(status, indent=None)).encode()


def retry_after(error: IngestError) -> int | None:
    """Seconds the client should wait before retrying, for the retriable errors."""
    return error.retry_after if isinstance(error, (Unavailable, TooManyRequests)) else None


def response_headers(error: IngestError) -> dict[str, str]:
    seconds = retry_after(error)
    headers = {} if seconds is None else {"Retry-After": str(seconds)}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="tokentide"'
    return headers
