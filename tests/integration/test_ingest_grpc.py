"""OTLP/gRPC ingest against the real Kafka: every agent capture lands whole; refusals carry
the OTLP status (code, message, ``RetryInfo``) and write nothing.

The server is the one ``ingest.app``'s lifespan starts when ``grpc_port`` is set; clients are
real ``grpc.aio`` channels. Expected records are derived with plain ``json`` from the OTLP/JSON
form of each capture, independently of the code under test.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from ingest.app import create_app
from ingest.auth import TENANT_HEADER
from ingest.decode import decode
from ingest.errors import JSON
from ingest.runtime import Runtime
from tests.support.captures import FIXTURES, cases
from tests.support.records import json_records, kafka_records
from tests.support.services import end_offsets, free_port, read_all
from tokentide import identity
from tokentide.admin import Policy, create_key, create_tenant
from tokentide.settings import IngestSettings
from tokentide.topics import HEADER_SESSION, HEADER_SIGNAL, HEADER_TENANT, Signal, Topics

pytestmark = pytest.mark.integration

KiB = 1024
TEXT_LOGS = FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb"
LARGE_METRICS = FIXTURES / "codex" / "offline-protobuf" / "0004_v1_metrics.pb"  # ~94 KiB
REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
}
RESPONSE_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
    Signal.TRACES: ExportTraceServiceResponse,
}
SERVICE_NAMES = {
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
    Signal.TRACES: "opentelemetry.proto.collector.trace.v1.TraceService",
}


def settings(bootstrap: str, prefix: str, **overrides: Any) -> IngestSettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": prefix,
        "open_mode": True,
        "kafka_ack_timeout_s": 5,
        "max_body_bytes": 1024 * KiB,
        "grpc_port": free_port(),
        "ingest_port": free_port(),
    }
    values.update(overrides)
    return IngestSettings(**values)


@asynccontextmanager
async def serving(
    config: IngestSettings, *, runtime: Runtime | None = None, ready: bool = True
) -> AsyncIterator[tuple[grpc.aio.Channel, Runtime]]:
    """The ingest app's lifespan (real Kafka producer, gRPC server) and a channel to it."""
    app = create_app(config, runtime=runtime)
    async with app.router.lifespan_context(app):
        state: Runtime = app.state.runtime
        for _ in range(100):
            if state.ready == ready:
                break
            await asyncio.sleep(0.1)
        assert state.ready == ready
        async with grpc.aio.insecure_channel(f"{config.host}:{config.grpc_port}") as channel:
            yield channel, state


async def export(
    channel: grpc.aio.Channel,
    signal: Signal,
    body: bytes,
    *,
    compression: grpc.Compression | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> Message:
    """Call ``Export`` of ``signal``'s service with ``body`` as the serialized request."""
    call = channel.unary_unary(f"/{SERVICE_NAMES[signal]}/Export")
    reply = await call(body, compression=compression, metadata=metadata, timeout=30)
    return RESPONSE_TYPES[signal].FromString(reply)


async def refused(
    channel: grpc.aio.Channel,
    signal: Signal,
    body: bytes,
    *,
    compression: grpc.Compression | None = None,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> tuple[grpc.StatusCode, status_pb2.Status | None]:
    """Call ``Export`` expecting a failure: its code and ``google.rpc.Status`` (if sent)."""
    call = channel.unary_unary(f"/{SERVICE_NAMES[signal]}/Export")(
        body, compression=compression, metadata=metadata, timeout=30
    )
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    status = await rpc_status.aio.from_call(call)
    if status is not None:
        assert status.message == failure.value.details()
    return failure.value.code(), status


def retry_info(status: status_pb2.Status | None) -> error_details_pb2.RetryInfo | None:
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info
    return None


async def raw_messages(bootstrap: str, prefix: str, signal: Signal) -> list[Any]:
    return await read_all(bootstrap, Topics(prefix).raw(signal))


async def nothing_written(bootstrap: str, prefix: str) -> bool:
    offsets = await end_offsets(bootstrap, Topics(prefix).all_raw())
    assert offsets, "the raw topics must exist (created at start-up)"
    return sum(offsets.values()) == 0


def requests_counted(state: Runtime, signal: Signal, status: str) -> float:
    value = state.metrics.registry.get_sample_value(
        "tokentide_ingest_requests_total", {"signal": signal.value, "status": status}
    )
    return value or 0.0


@dataclass(frozen=True)
class Capture:
    signal: Signal
    body: bytes  # the serialized Export*ServiceRequest
    gzip: bool  # the agent sent it gzip-encoded
    document: dict[str, Any]  # its OTLP/JSON form

    def expected_keys(self) -> set[str]:
        return identity_keys(self.signal, self.document)


_JSON_LAYOUT = {
    Signal.LOGS: ("resourceLogs", "scopeLogs", "logRecords"),
    Signal.TRACES: ("resourceSpans", "scopeSpans", "spans"),
    Signal.METRICS: ("resourceMetrics", "scopeMetrics", "metrics"),
}
_POINT_KINDS = ("sum", "gauge", "histogram", "exponentialHistogram", "summary")


def _strings(attributes: list[dict[str, Any]], keys: frozenset[str]) -> dict[str, str]:
    """The non-empty string attributes named in ``keys``, from OTLP/JSON (plain json)."""
    out = {}
    for attribute in attributes:
        value = (attribute.get("value") or {}).get("stringValue")
        if attribute["key"] in keys and value:
            out[attribute["key"]] = str(value)
    return out


def identity_keys(signal: Signal, document: dict[str, Any], tenant: str = "default") -> set[str]:
    """One ``tenant/<session>`` per session of the request's records, each record's session
    being what :func:`tokentide.identity.session_of` says of it read with plain json."""
    resources, scopes, records = _JSON_LAYOUT[signal]
    keys = set()
    for resource in document.get(resources, []):
        resource_ids = _strings(resource.get("resource", {}).get("attributes", []), identity.RESOURCE_KEYS)
        for scope in resource.get(scopes, []):
            for record in scope.get(records, []):
                items = (
                    [p for kind in _POINT_KINDS for p in record.get(kind, {}).get("dataPoints", [])]
                    if signal is Signal.METRICS
                    else [record]
                )
                for item in items:
                    own = _strings(item.get("attributes", []), identity.RECORD_KEYS)
                    keys.add(f"{tenant}/{identity.session_of(tenant, own, resource_ids)}")
    return keys


def captures(agent: str) -> list[Capture]:
    """Every capture of ``agent``: the protobuf bodies, and (for an agent that sent none,
    i.e. Gemini CLI, whose gRPC exporter sends protobuf) its OTLP/JSON bodies in protobuf."""
    out = []
    for case in cases(agent):
        for path in sorted(case.glob("[0-9]*_v1_*.pb")):
            signal = Signal(path.stem.rsplit("_", 1)[-1])
            document = json.loads(path.with_suffix(".pb.json").read_text())
            compressed = path.with_name(path.name + ".gz")
            if compressed.exists():
                assert gzip.decompress(compressed.read_bytes()) == path.read_bytes()
            out.append(Capture(signal, path.read_bytes(), compressed.exists(), document))
    if not out:
        for case in cases(agent):
            for path in sorted(case.glob("[0-9]*_v1_*.json")):
                if path.name.endswith((".meta.json", ".pb.json")):
                    continue
                signal = Signal(path.stem.rsplit("_", 1)[-1])
                body = path.read_bytes()
                request = decode(signal, body, JSON).SerializeToString()
                out.append(Capture(signal, request, False, json.loads(body)))
    return out


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("accept_traces", [False, True], ids=["traces-refused", "traces-accepted"])
@pytest.mark.parametrize("agent", ["claude-code", "gemini-cli", "codex"])
async def test_every_capture_lands_in_kafka_whole(
    bootstrap: str, prefix: str, agent: str, accept_traces: bool
) -> None:
    """Every capture lands whole; traces only with ``TOKENTIDE_ACCEPT_TRACES`` (else each trace
    export is OK with every span rejected and the fix named, which exporters do not retry, and
    nothing reaches otlp.raw.traces; decision 34)."""
    sent = captures(agent)
    assert sent, f"no captures of {agent}"
    assert any(c.signal is Signal.TRACES for c in sent), agent
    config = settings(bootstrap, prefix, accept_traces=accept_traces)
    async with serving(config) as (channel, state):
        for capture in sent:
            compression = grpc.Compression.Gzip if capture.gzip else None
            if capture.signal in config.signals:
                response = await export(channel, capture.signal, capture.body, compression=compression)
                assert not response.HasField("partial_success"), response
                continue
            response = await export(channel, capture.signal, capture.body, compression=compression)
            spans = sum(
                len(ss.get("spans", []))
                for rs in capture.document["resourceSpans"]
                for ss in rs.get("scopeSpans", [])
            )
            assert response.partial_success.rejected_spans == spans, capture.document
            assert response.partial_success.rejected_spans > 0
            assert "OTEL_TRACES_EXPORTER=none" in response.partial_success.error_message

    if not accept_traces:
        assert not await raw_messages(bootstrap, prefix, Signal.TRACES)
        assert requests_counted(state, Signal.TRACES, "200") == sum(c.signal is Signal.TRACES for c in sent)
    for signal in config.signals:
        of_signal = [c for c in sent if c.signal is signal]
        messages = await raw_messages(bootstrap, prefix, signal)
        want = sorted((fp for c in of_signal for fp, _ in json_records(signal, c.document)), key=repr)
        got = sorted((fp for m in messages for fp in kafka_records(signal, m.value)), key=repr)
        assert len(got) == len(want), signal
        assert got == want, signal
        assert Counter(m.key.decode() for m in messages) == Counter(
            key for c in of_signal for key in c.expected_keys()
        )
        for message in messages:
            headers = dict(message.headers)
            assert headers[HEADER_TENANT] == b"default"
            assert headers[HEADER_SIGNAL] == signal.value.encode()
            assert b"default/" + headers[HEADER_SESSION] == message.key
        assert requests_counted(state, signal, "200") == len(of_signal)


async def test_gzip_call_is_accepted(bootstrap: str, prefix: str) -> None:
    request = ExportLogsServiceRequest.FromString(TEXT_LOGS.read_bytes())
    async with serving(settings(bootstrap, prefix)) as (channel, _):
        stub = LogsServiceStub(channel)
        response = await stub.Export(request, compression=grpc.Compression.Gzip, timeout=30)
    assert response == ExportLogsServiceResponse()
    [message] = await raw_messages(bootstrap, prefix, Signal.LOGS)
    assert message.value == request.SerializeToString()  # the bytes the stub sent, decompressed


def inflated_logs(size: int) -> bytes:
    """A logs request of more than ``size`` bytes that gzip shrinks to almost nothing."""
    request = ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = "a" * size
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("body", "compression"),
    [
        pytest.param(LARGE_METRICS.read_bytes(), None, id="plain"),
        pytest.param(inflated_logs(256 * KiB), grpc.Compression.Gzip, id="gzip-small-on-the-wire"),
    ],
)
async def test_message_above_the_limit_is_resource_exhausted(
    bootstrap: str, prefix: str, body: bytes, compression: grpc.Compression | None
) -> None:
    assert len(body) > 64 * KiB
    if compression is not None:
        assert len(gzip.compress(body)) < 4 * KiB
    signal = Signal.METRICS if compression is None else Signal.LOGS
    async with serving(settings(bootstrap, prefix, max_body_bytes=64 * KiB)) as (channel, state):
        code, status = await refused(channel, signal, body, compression=compression)
        # A message just below the limit still passes.
        assert await export(channel, Signal.LOGS, inflated_logs(60 * KiB)) == ExportLogsServiceResponse()
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status is None  # grpc's own answer: no details, so no RetryInfo (not retryable)
    [message] = await raw_messages(bootstrap, prefix, Signal.LOGS)
    assert len(message.value) < 64 * KiB
    assert not await raw_messages(bootstrap, prefix, Signal.METRICS)
    assert requests_counted(state, signal, "413") == 0  # refused by grpc before the handler


async def test_corrupt_message_is_invalid_argument(bootstrap: str, prefix: str) -> None:
    async with serving(settings(bootstrap, prefix)) as (channel, state):
        code, status = await refused(channel, Signal.LOGS, TEXT_LOGS.read_bytes()[:-7])
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert status is not None
    assert status.code == code_pb2.INVALID_ARGUMENT
    [detail] = status.details
    assert detail.Is(error_details_pb2.BadRequest.DESCRIPTOR)
    assert await nothing_written(bootstrap, prefix)
    assert requests_counted(state, Signal.LOGS, "400") == 1


async def test_invalid_record_is_a_partial_success(bootstrap: str, prefix: str) -> None:
    request = ExportLogsServiceRequest.FromString(TEXT_LOGS.read_bytes())
    records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert len(records) > 1
    records[0].trace_id = b"\x01\x02\x03"
    valid = sorted(r.time_unix_nano for r in records[1:])
    async with serving(settings(bootstrap, prefix)) as (channel, _):
        response: Any = await export(channel, Signal.LOGS, request.SerializeToString())
    assert response.partial_success.rejected_log_records == 1
    assert response.partial_success.error_message
    messages = await raw_messages(bootstrap, prefix, Signal.LOGS)
    assert sorted(t for m in messages for t in kafka_records(Signal.LOGS, m.value)) == valid


async def test_key_and_session_header_follow_the_shared_identity_rule(bootstrap: str, prefix: str) -> None:
    # gen_ai.conversation.id before session.id on the wire: keyed (and stored) by session.id.
    pairs = [("gen_ai.conversation.id", "conv-9"), ("session.id", "sess-9"), ("user.id", "u-9")]
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "genai-agent"
    record = resource_logs.scope_logs.add().log_records.add(time_unix_nano=1)
    for key, value in pairs:
        record.attributes.add(key=key).value.string_value = value
    session = identity.session_of("default", dict(pairs), {"service.name": "genai-agent"})
    assert session == "sess-9"
    async with serving(settings(bootstrap, prefix)) as (channel, _):
        response = await export(channel, Signal.LOGS, request.SerializeToString())
    assert response == ExportLogsServiceResponse()
    [message] = await raw_messages(bootstrap, prefix, Signal.LOGS)
    assert message.key == f"default/{session}".encode()
    assert dict(message.headers)[HEADER_SESSION] == session.encode()
    assert message.value == request.SerializeToString()  # one session: the bytes as sent


async def test_kafka_unreachable_is_unavailable_with_retry_info(prefix: str) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    config = settings(dead, prefix, retry_after_s=7)
    async with serving(config, ready=False) as (channel, state):
        code, status = await refused(channel, Signal.LOGS, TEXT_LOGS.read_bytes())
    assert code == grpc.StatusCode.UNAVAILABLE
    assert status is not None
    assert status.code == code_pb2.UNAVAILABLE
    assert status.message
    info = retry_info(status)
    assert info is not None
    assert info.retry_delay.seconds == config.retry_after_s
    assert requests_counted(state, Signal.LOGS, "503") == 1


async def test_rate_limited_tenant_is_resource_exhausted_with_retry_info(bootstrap: str, prefix: str) -> None:
    body = TEXT_LOGS.read_bytes()
    async with serving(settings(bootstrap, prefix, requests_per_s=1)) as (channel, state):
        accepted = 0
        for _ in range(10):
            try:
                await export(channel, Signal.LOGS, body)
            except grpc.aio.AioRpcError:
                break
            accepted += 1
        code, status = await refused(channel, Signal.LOGS, body)
    assert accepted >= 1  # the burst passes
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = retry_info(status)
    assert info is not None  # retryable, unlike RESOURCE_EXHAUSTED for size
    assert info.retry_delay.seconds >= 1
    assert len(await raw_messages(bootstrap, prefix, Signal.LOGS)) == accepted
    assert requests_counted(state, Signal.LOGS, "200") == accepted
    assert requests_counted(state, Signal.LOGS, "429") >= 1


async def test_metadata_authenticates_and_the_tenant_limit_applies(
    bootstrap: str, prefix: str, database: str
) -> None:
    """Real API keys (PostgreSQL): tenant team-a has a body limit (4 KiB) below the service's."""
    with psycopg.connect(database, autocommit=True) as conn:
        create_tenant(conn, "team-a", Policy(max_body_bytes=4 * KiB))
        create_tenant(conn, "team-b")
        token = create_key(conn, "team-a").token
    config = settings(bootstrap, prefix, open_mode=False, database_url=database, redaction_key="test-key")
    runtime = Runtime.create(config)
    key = ("authorization", f"Bearer {token}")
    small = inflated_logs(1 * KiB)
    async with serving(config, runtime=runtime) as (channel, state):
        assert (await refused(channel, Signal.LOGS, small))[0] == grpc.StatusCode.UNAUTHENTICATED
        wrong_tenant = (key, (TENANT_HEADER, "team-b"))
        code, _ = await refused(channel, Signal.LOGS, small, metadata=wrong_tenant)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, status = await refused(channel, Signal.LOGS, inflated_logs(8 * KiB), metadata=(key,))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert retry_info(status) is None  # too large is not retryable
        own_tenant = (key, (TENANT_HEADER, "team-a"))
        assert await export(channel, Signal.LOGS, small, metadata=own_tenant) == ExportLogsServiceResponse()
    [message] = await raw_messages(bootstrap, prefix, Signal.LOGS)
    # No session attribute, no service: the synthetic session of team-a.
    assert message.key == f"team-a/{identity.synthetic_session('team-a', None, None)}".encode()
    assert dict(message.headers)[HEADER_TENANT] == b"team-a"
    assert [requests_counted(state, Signal.LOGS, s) for s in ("401", "403", "413", "200")] == [1, 1, 1, 1]
