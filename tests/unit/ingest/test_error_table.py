"""The ingest error -> OTLP answer table (otlp-http.md: status, gRPC code, retry, body)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2

from ingest.errors import (
    JSON,
    PROTOBUF,
    BadRequest,
    Forbidden,
    IngestError,
    PayloadTooLarge,
    SignalNotAccepted,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    response_headers,
    status_body,
)

#: OTLP exporters retry only these HTTP statuses; every other 4xx/5xx is dropped.
RETRYABLE_HTTP = {429, 502, 503, 504}

ERRORS: list[tuple[IngestError, int, int, bool]] = [
    (BadRequest("cannot decode body"), 400, code_pb2.INVALID_ARGUMENT, False),
    (PayloadTooLarge("body exceeds 16777216 bytes"), 413, code_pb2.RESOURCE_EXHAUSTED, False),
    (UnsupportedMediaType("unsupported Content-Type 'text/plain'"), 415, code_pb2.INVALID_ARGUMENT, False),
    (Unauthorized("missing API key"), 401, code_pb2.UNAUTHENTICATED, False),
    (Forbidden("key of another tenant"), 403, code_pb2.PERMISSION_DENIED, False),
    # The Collector's answer for a signal without a pipeline (mux 404, unregistered service).
    (SignalNotAccepted("traces are not accepted"), 404, code_pb2.UNIMPLEMENTED, False),
    (TooManyRequests("over rate", retry_after=2), 429, code_pb2.RESOURCE_EXHAUSTED, True),
    (Unavailable("kafka down", retry_after=5), 503, code_pb2.UNAVAILABLE, True),
    (IngestError("unexpected"), 500, code_pb2.INTERNAL, False),
]
IDS = [type(e).__name__ for e, *_ in ERRORS]


@pytest.mark.parametrize(("error", "status", "grpc_code", "retriable"), ERRORS, ids=IDS)
def test_error_table(error: IngestError, status: int, grpc_code: int, retriable: bool) -> None:
    assert (error.status, error.grpc_code, error.retriable) == (status, grpc_code, retriable)
    # Whether a client retries is decided by the status alone: the flag must agree with it.
    assert error.retriable == (error.status in RETRYABLE_HTTP)


@pytest.mark.parametrize(("error", "status", "grpc_code", "retriable"), ERRORS, ids=IDS)
def test_protobuf_status_body(error: IngestError, status: int, grpc_code: int, retriable: bool) -> None:
    decoded = status_pb2.Status.FromString(status_body(error, PROTOBUF))
    assert decoded.code == grpc_code
    assert decoded.message == error.message


@pytest.mark.parametrize(("error", "status", "grpc_code", "retriable"), ERRORS, ids=IDS)
def test_json_status_body(error: IngestError, status: int, grpc_code: int, retriable: bool) -> None:
    body = status_body(error, JSON)
    document = json.loads(body)
    assert document["code"] == grpc_code
    assert document["message"] == error.message
    decoded = json_format.Parse(body, status_pb2.Status())
    assert decoded.code == grpc_code


@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_bad_request_carries_a_bad_request_detail(media: str) -> None:
    error = BadRequest("traceId must be a hex string")
    body = status_body(error, media)
    status = (
        status_pb2.Status.FromString(body)
        if media == PROTOBUF
        else json_format.Parse(body, status_pb2.Status())
    )
    (detail,) = status.details
    assert detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
    bad_request = error_details_pb2.BadRequest()
    detail.Unpack(bad_request)
    (violation,) = bad_request.field_violations
    assert violation.description == "traceId must be a hex string"


@pytest.mark.parametrize("error", [PayloadTooLarge("x"), UnsupportedMediaType("x"), Forbidden("x")])
def test_permanent_errors_other_than_bad_request_have_no_details(error: IngestError) -> None:
    assert not status_pb2.Status.FromString(status_body(error, PROTOBUF)).details


@pytest.mark.parametrize("error", [Unavailable("kafka down", 7), TooManyRequests("over rate", 7)])
@pytest.mark.parametrize("media", [PROTOBUF, JSON])
def test_retriable_errors_carry_retry_info(error: IngestError, media: str) -> None:
    body = status_body(error, media)
    status = (
        status_pb2.Status.FromString(body)
        if media == PROTOBUF
        else json_format.Parse(body, status_pb2.Status())
    )
    (detail,) = status.details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert info.retry_delay.seconds == 7


@pytest.mark.parametrize("error", [Unavailable("kafka down", 7), TooManyRequests("over rate", 7)])
def test_retriable_errors_send_retry_after(error: IngestError) -> None:
    assert response_headers(error) == {"Retry-After": "7"}


def test_unauthorized_names_the_scheme() -> None:
    assert response_headers(Unauthorized("no key")) == {"WWW-Authenticate": 'Bearer realm="tokentide"'}


@pytest.mark.parametrize("error", [BadRequest("x"), PayloadTooLarge("x"), UnsupportedMediaType("x")])
def test_permanent_errors_send_no_retry_after(error: IngestError) -> None:
    assert response_headers(error) == {}
