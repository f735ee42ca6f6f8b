"""Values out of tokentide.bounds, against the real Kafka: refused as OTLP partial success
(HTTP protobuf and JSON, gRPC), counted by reason, and never published; the rest of the
request is.

The requests are real Claude Code captures (OTLP/JSON as the agent sent them) with refused
copies of their own records slipped in: ``cost_usd = 1e300``, ``input_tokens = -5``,
``output_tokens = 3.5``, and a record dated two days ahead. Expected records are the
capture's own, parsed with ``json_format`` (not ingest's decoder).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from ingest.app import create_app
from ingest.runtime import Runtime
from tests.support.captures import FIXTURES
from tests.support.services import free_port, read_all
from tokentide.settings import IngestSettings
from tokentide.topics import HEADER_SESSION, Signal, Topics

pytestmark = pytest.mark.integration

PB = "application/x-protobuf"
JSON = "application/json"
CASE = FIXTURES / "claude-code" / "stub-tool-traces-json"
LOGS = CASE / "0002_v1_logs.json"
METRICS = CASE / "0003_v1_metrics.json"
DAY_NS = 86_400 * 10**9
REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
}
RESPONSE_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceResponse,
    Signal.METRICS: ExportMetricsServiceResponse,
}
SERVICES = {
    Signal.LOGS: "opentelemetry.proto.collector.logs.v1.LogsService",
    Signal.METRICS: "opentelemetry.proto.collector.metrics.v1.MetricsService",
}
#: What each refused copy is refused for (its reason label), in the order they are slipped in.
REASONS = ["cost_too_large", "tokens_negative", "tokens_not_integer", "time_in_future"]


def _set(attributes: list[dict[str, Any]], key: str, value: dict[str, Any]) -> None:
    (attribute,) = [a for a in attributes if a["key"] == key]
    attribute["value"] = value


def _two_days_ahead() -> str:
    return str(time.time_ns() + 2 * DAY_NS)


def mixed_logs() -> tuple[dict[str, Any], dict[str, Any], str]:
    """(the capture, the capture with 4 refused api_request copies, the first refusal's text)."""
    original = json.loads(LOGS.read_text())
    mixed = copy.deepcopy(original)
    records = mixed["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    api = next(
        r
        for r in records
        if {"key": "event.name", "value": {"stringValue": "api_request"}} in r["attributes"]
    )
    bad = [copy.deepcopy(api) for _ in REASONS]
    _set(bad[0]["attributes"], "cost_usd", {"doubleValue": 1e300})
    _set(bad[1]["attributes"], "input_tokens", {"intValue": "-5"})
    _set(bad[2]["attributes"], "output_tokens", {"doubleValue": 3.5})
    bad[3]["timeUnixNano"] = _two_days_ahead()
    for index, record in enumerate(bad):  # interleaved: after the 1st, 3rd, 5th, 7th record
        records.insert(1 + 2 * index, record)
    return original, mixed, "cost_usd 1e+300 is above 1,000,000 USD"


def mixed_metrics() -> tuple[dict[str, Any], dict[str, Any], str]:
    original = json.loads(METRICS.read_text())
    mixed = copy.deepcopy(original)
    metrics = {m["name"]: m for m in mixed["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]}

    def bad_copy(name: str, **fields: Any) -> None:
        points = metrics[name]["sum"]["dataPoints"]
        points.insert(1, {**copy.deepcopy(points[0]), **fields})

    bad_copy("claude_code.cost.usage", asDouble=1e300)
    bad_copy("claude_code.token.usage", asDouble=-5)
    bad_copy("claude_code.token.usage", asDouble=3.5)
    bad_copy("claude_code.session.count", timeUnixNano=_two_days_ahead())
    # The first refused point in wire order is session.count's (it comes first in the capture).
    return original, mixed, "h after it was received"


def _hex_to_b64(node: Any) -> Any:
    """OTLP/JSON ids are hex; json_format reads bytes as base64."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str)
            else _hex_to_b64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_to_b64(v) for v in node]
    return node


def to_protobuf(signal: Signal, document: dict[str, Any]) -> Message:
    return json_format.ParseDict(_hex_to_b64(document), REQUEST_TYPES[signal]())


def records_of(signal: Signal, request: Any) -> list[bytes]:
    """Each log record or data point (with its metric's name), serialized."""
    if signal is Signal.LOGS:
        return [
            r.SerializeToString()
            for rl in request.resource_logs
            for sl in rl.scope_logs
            for r in sl.log_records
        ]
    return [
        metric.name.encode() + b"\0" + point.SerializeToString()
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in getattr(metric, metric.WhichOneof("data")).data_points
    ]


@dataclass(frozen=True)
class Answer:
    rejected: int
    message: str


async def send_http(client: httpx.AsyncClient, signal: Signal, body: bytes, media: str) -> Answer:
    response = await client.post(f"/v1/{signal.value}", content=body, headers={"Content-Type": media})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media)
    if media == JSON:
        partial = response.json()["partialSuccess"]  # the wire shape, read with plain json
        field = "rejectedLogRecords" if signal is Signal.LOGS else "rejectedDataPoints"
        return Answer(int(partial[field]), partial["errorMessage"])
    reply: Any = RESPONSE_TYPES[signal].FromString(response.content)
    return _answer(signal, reply)


async def send_grpc(channel: grpc.aio.Channel, signal: Signal, body: bytes) -> Answer:
    call = channel.unary_unary(f"/{SERVICES[signal]}/Export")
    reply: Any = RESPONSE_TYPES[signal].FromString(await call(body, timeout=30))  # OK, or it raises
    return _answer(signal, reply)


def _answer(signal: Signal, reply: Any) -> Answer:
    partial = reply.partial_success
    rejected = partial.rejected_log_records if signal is Signal.LOGS else partial.rejected_data_points
    return Answer(rejected, partial.error_message)


@asynccontextmanager
async def ingest(
    bootstrap: str, prefix: str
) -> AsyncIterator[tuple[httpx.AsyncClient, grpc.aio.Channel, Runtime]]:
    """The ingest app's lifespan (real Kafka producer, gRPC server), an HTTP client and a channel."""
    config = IngestSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        open_mode=True,
        kafka_ack_timeout_s=5,
        max_body_bytes=1024 * 1024,
        grpc_port=free_port(),
    )
    app = create_app(config)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        for _ in range(100):  # bounded: at most ~10 s
            if runtime.ready:
                break
            await asyncio.sleep(0.1)
        assert runtime.ready
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=30) as client,
            grpc.aio.insecure_channel(f"{config.host}:{config.grpc_port}") as channel,
        ):
            yield client, channel, runtime


def counted(runtime: Runtime, name: str, labels: dict[str, str]) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("signal", [Signal.LOGS, Signal.METRICS], ids=["logs", "metrics"])
@pytest.mark.parametrize("transport", ["http-protobuf", "http-json", "grpc"])
async def test_out_of_range_records_are_partial_success_and_never_published(
    bootstrap: str, prefix: str, signal: Signal, transport: str
) -> None:
    original, mixed, first_reason = (mixed_logs if signal is Signal.LOGS else mixed_metrics)()
    valid = records_of(signal, to_protobuf(signal, original))
    assert len(records_of(signal, to_protobuf(signal, mixed))) == len(valid) + len(REASONS)

    async with ingest(bootstrap, prefix) as (client, channel, runtime):
        if transport == "grpc":
            answer = await send_grpc(channel, signal, to_protobuf(signal, mixed).SerializeToString())
        elif transport == "http-protobuf":
            answer = await send_http(client, signal, to_protobuf(signal, mixed).SerializeToString(), PB)
        else:
            answer = await send_http(client, signal, json.dumps(mixed).encode(), JSON)

        noun = "log records" if signal is Signal.LOGS else "data points"
        assert answer.rejected == len(REASONS)
        assert answer.message.startswith(f"{len(REASONS)} {noun} refused: ")
        assert first_reason in answer.message
        for reason in REASONS:
            labels = {"signal": signal.value, "reason": reason}
            assert counted(runtime, "tokentide_ingest_refused_records_total", labels) == 1, reason
        assert counted(runtime, "tokentide_ingest_rejects_total", {"reason": "invalid_records"}) == len(
            REASONS
        )
        assert counted(runtime, "tokentide_ingest_records_total", {"signal": signal.value}) == len(valid)
        assert (
            counted(runtime, "tokentide_ingest_requests_total", {"signal": signal.value, "status": "200"})
            == 1
        )

    messages: list[Any] = await read_all(bootstrap, Topics(prefix).raw(signal))
    published = [r for m in messages for r in records_of(signal, REQUEST_TYPES[signal].FromString(m.value))]
    assert published == valid  # exactly the capture's records, whole, in order; no refused one
    (message,) = messages  # one session
    session = message.key.decode().split("/", 1)[1]
    assert dict(message.headers)[HEADER_SESSION] == session.encode()
