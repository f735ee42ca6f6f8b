"""Ingest errors as gRPC statuses (otlp-http.md, OTLP/gRPC): code, message, and the
``google.rpc.Status`` details in ``grpc-status-details-bin``; and the receiver's error path,
without a network (a runtime that was never started, a recording servicer context)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from ingest.errors import (
    BadRequest,
    Forbidden,
    IngestError,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ingest.grpc import SERVICES, OtlpReceiver, grpc_status, metadata_value
from ingest.runtime import Runtime
from tokentide.settings import IngestSettings
from tokentide.tenancy import Tenant
from tokentide.topics import Signal

DETAILS_KEY = "grpc-status-details-bin"
TEXT_LOGS = Path(__file__).resolve().parents[2] / "fixtures/claude-code/stub-text-protobuf/0001_v1_logs.pb"

#: (error, gRPC code, RetryInfo seconds or None). Only RetryInfo makes RESOURCE_EXHAUSTED retryable.
ERRORS: list[tuple[IngestError, grpc.StatusCode, int | None]] = [
    (BadRequest("cannot decode body"), grpc.StatusCode.INVALID_ARGUMENT, None),
    (PayloadTooLarge("request exceeds 65536 bytes"), grpc.StatusCode.RESOURCE_EXHAUSTED, None),
    (UnsupportedMediaType("x"), grpc.StatusCode.INVALID_ARGUMENT, None),
    (Unauthorized("missing API key"), grpc.StatusCode.UNAUTHENTICATED, None),
    (Forbidden("key of another tenant"), grpc.StatusCode.PERMISSION_DENIED, None),
    (TooManyRequests("over rate", retry_after=2), grpc.StatusCode.RESOURCE_EXHAUSTED, 2),
    (Unavailable("kafka down", retry_after=5), grpc.StatusCode.UNAVAILABLE, 5),
    (IngestError("unexpected"), grpc.StatusCode.INTERNAL, None),
]
IDS = [type(e).__name__ for e, *_ in ERRORS]


def details_of(status: Any) -> status_pb2.Status:
    [(key, value)] = status.trailing_metadata
    assert key == DETAILS_KEY
    return status_pb2.Status.FromString(value)


@pytest.mark.parametrize(("error", "code", "retry_s"), ERRORS, ids=IDS)
def test_error_to_grpc_status(error: IngestError, code: grpc.StatusCode, retry_s: int | None) -> None:
    status = grpc_status(error)
    assert status.code == code
    assert status.details == error.message
    rich = details_of(status)
    assert rich.code == code.value[0]
    assert rich.message == error.message
    infos = []
    for detail in rich.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            infos.append(info.retry_delay.seconds)
    assert infos == ([] if retry_s is None else [retry_s])


def test_bad_request_carries_its_field_violation() -> None:
    [detail] = details_of(grpc_status(BadRequest("truncated message"))).details
    bad_request = error_details_pb2.BadRequest()
    assert detail.Unpack(bad_request)
    assert bad_request.field_violations[0].description == "truncated message"


def test_services_are_the_otlp_collector_services() -> None:
    assert SERVICES == {
        Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
        Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
        Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
    }


class Aborted(Exception):
    """What ``abort_with_status`` raises here (grpc raises its own ``AbortError``)."""


class Context:
    """The part of ``grpc.aio.ServicerContext`` the receiver uses; records the abort."""

    def __init__(self, metadata: Sequence[tuple[str, str | bytes]] | None = None) -> None:
        self._metadata = metadata
        self.status: Any = None

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]] | None:
        return self._metadata

    async def abort_with_status(self, status: Any) -> NoReturn:
        self.status = status
        raise Aborted


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(None, None, id="no-metadata"),
        pytest.param([("user-agent", "x")], None, id="absent"),
        pytest.param(
            [("authorization", "Bearer k1"), ("authorization", "Bearer k2")], "Bearer k1", id="first"
        ),
        pytest.param([("authorization", b"\0"), ("authorization", "Bearer k")], "Bearer k", id="text-only"),
    ],
)
def test_metadata_value(metadata: Sequence[tuple[str, str | bytes]] | None, expected: str | None) -> None:
    assert metadata_value(Context(metadata), "authorization") == expected


class BrokenAuthenticator:
    """An authenticator with a bug: every call raises something no error table knows."""

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def authenticate(self, authorization: str | None, tenant_hint: str | None) -> Tenant:
        raise RuntimeError("bug")

    @property
    def ready(self) -> bool:
        return True


def unstarted_runtime(**overrides: Any) -> Runtime:
    """A runtime that was never started: no Kafka producer, so every publish is refused."""
    return Runtime.create(IngestSettings(open_mode=True, retry_after_s=3), **overrides)


def requests(state: Runtime, status: str) -> float | None:
    labels = {"signal": "logs", "status": status}
    return state.metrics.registry.get_sample_value("tokentide_ingest_requests_total", labels)


@pytest.mark.usefixtures("clean_env")
async def test_unexpected_error_is_logged_and_internal(caplog: pytest.LogCaptureFixture) -> None:
    state = unstarted_runtime(authenticator=BrokenAuthenticator())
    context = Context()
    with caplog.at_level(logging.ERROR, logger="ingest.grpc"), pytest.raises(Aborted):
        await OtlpReceiver(state).export(Signal.LOGS, b"", context)
    assert context.status.code == grpc.StatusCode.INTERNAL
    [record] = caplog.records
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert requests(state, "500") == 1


@pytest.mark.usefixtures("clean_env")
async def test_kafka_not_started_is_unavailable_and_releases_the_budget() -> None:
    state = unstarted_runtime()
    context = Context()
    with pytest.raises(Aborted):
        await OtlpReceiver(state).export(Signal.LOGS, TEXT_LOGS.read_bytes(), context)
    assert context.status.code == grpc.StatusCode.UNAVAILABLE
    [detail] = details_of(context.status).details
    info = error_details_pb2.RetryInfo()
    assert detail.Unpack(info)
    assert info.retry_delay.seconds == 3
    assert state.budget.used == 0
    assert requests(state, "503") == 1
