"""Ingest against the real Kafka: what is accepted lands there whole; what is refused, nowhere."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.app import create_app
from tests.support.captures import FIXTURES, cases, exports
from tests.support.records import json_records, kafka_records
from tests.support.services import end_offsets, free_port, read_all
from tokentide import identity
from tokentide.settings import IngestSettings
from tokentide.topics import HEADER_SESSION, HEADER_SIGNAL, HEADER_TENANT, Signal, Topics

pytestmark = pytest.mark.integration

PB = "application/x-protobuf"
JSON = "application/json"
TEXT_LOGS = FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb"
TEXT_LOGS_JSON = FIXTURES / "claude-code" / "stub-text-json" / "0001_v1_logs.json"
ERROR_LOGS = FIXTURES / "claude-code" / "stub-error500-protobuf" / "0001_v1_logs.pb"


def settings(bootstrap: str, prefix: str, **overrides: object) -> IngestSettings:
    return IngestSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        open_mode=True,
        kafka_ack_timeout_s=5,
        max_body_bytes=1024 * 1024,
        grpc_port=0,
        **overrides,
    )


@asynccontextmanager
async def running(app: FastAPI, ready: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (real Kafka producer), once ``/readyz`` says ``ready``."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            for _ in range(100):
                if ((await client.get("/readyz")).status_code == 200) == ready:
                    break
                await asyncio.sleep(0.1)
            yield client


@pytest.fixture
async def client(bootstrap: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings(bootstrap, prefix))) as c:
        yield c


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
    """The Kafka keys of a request: one ``tenant/<session>`` per session of its records, the
    session being what :func:`tokentide.identity.session_of` (the shared rule) says for each
    record read with plain json."""
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


def session_ids(path: Path) -> set[str]:
    """Session ids in an OTLP/JSON logs body, read with plain json."""
    document = json.loads(path.read_text())
    return {
        a["value"]["stringValue"]
        for r in document["resourceLogs"]
        for s in r["scopeLogs"]
        for rec in s["logRecords"]
        for a in rec["attributes"]
        if a["key"] == "session.id"
    }


async def test_protobuf_export_lands_in_kafka_unchanged(
    client: httpx.AsyncClient, bootstrap: str, prefix: str
) -> None:
    body = TEXT_LOGS.read_bytes()
    response = await client.post("/v1/logs", content=body, headers={"Content-Type": PB})
    assert response.status_code == 200
    assert response.headers["content-type"] == PB
    assert response.content == b""  # an empty ExportLogsServiceResponse

    [message] = await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))
    [sid] = session_ids(TEXT_LOGS.with_suffix(".pb.json"))
    assert message.key == f"default/{sid}".encode()  # type: ignore[attr-defined]
    headers = dict(message.headers)  # type: ignore[attr-defined]
    assert headers[HEADER_TENANT] == b"default"
    assert headers[HEADER_SIGNAL] == b"logs"
    assert headers[HEADER_SESSION] == sid.encode()
    assert message.value == body  # type: ignore[attr-defined]


async def test_json_export_lands_as_the_same_records(
    client: httpx.AsyncClient, bootstrap: str, prefix: str
) -> None:
    response = await client.post(
        "/v1/logs",
        content=TEXT_LOGS_JSON.read_bytes(),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.json() == {}

    [message] = await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))
    request = ExportLogsServiceRequest.FromString(message.value)  # type: ignore[attr-defined]
    document = json.loads(TEXT_LOGS_JSON.read_text())
    want = [
        r["timeUnixNano"]
        for rl in document["resourceLogs"]
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
    ]
    got = [r.time_unix_nano for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert got == [int(t) for t in want]
    [sid] = session_ids(TEXT_LOGS_JSON)
    assert message.key == f"default/{sid}".encode()  # type: ignore[attr-defined]


async def test_gzip_export_is_accepted(client: httpx.AsyncClient, bootstrap: str, prefix: str) -> None:
    body = TEXT_LOGS.read_bytes()
    response = await client.post(
        "/v1/logs", content=gzip.compress(body), headers={"Content-Type": PB, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 200
    [message] = await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))
    assert message.value == body  # type: ignore[attr-defined]


async def test_two_sessions_in_one_request_are_split(
    client: httpx.AsyncClient, bootstrap: str, prefix: str
) -> None:
    merged = ExportLogsServiceRequest.FromString(TEXT_LOGS.read_bytes())
    merged.MergeFrom(ExportLogsServiceRequest.FromString(ERROR_LOGS.read_bytes()))
    response = await client.post("/v1/logs", content=merged.SerializeToString(), headers={"Content-Type": PB})
    assert response.status_code == 200

    messages = await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))
    sids = session_ids(TEXT_LOGS.with_suffix(".pb.json")) | session_ids(ERROR_LOGS.with_suffix(".pb.json"))
    assert {m.key for m in messages} == {f"default/{s}".encode() for s in sids}  # type: ignore[attr-defined]
    records = sum(
        len(sl.log_records)
        for m in messages
        for rl in ExportLogsServiceRequest.FromString(m.value).resource_logs  # type: ignore[attr-defined]
        for sl in rl.scope_logs
    )
    assert records == sum(len(sl.log_records) for rl in merged.resource_logs for sl in rl.scope_logs)


def identity_request() -> tuple[ExportLogsServiceRequest, dict[int, str]]:
    """Two records: one naming its session twice (``gen_ai.conversation.id`` first on the
    wire, then ``session.id``), one naming none; and the session of each (by record time),
    as :func:`tokentide.identity.session_of` says from plain dicts."""
    resource = {"service.name": "genai-agent", "host.name": "box-1"}
    records = {
        1: [("gen_ai.conversation.id", "conv-7"), ("session.id", "sess-7"), ("user.id", "u-7")],
        2: [("user.id", "u-7"), ("event.name", "no_session")],
    }
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in resource.items():
        resource_logs.resource.attributes.add(key=key).value.string_value = value
    scope = resource_logs.scope_logs.add()
    for time_ns, pairs in records.items():
        record = scope.log_records.add(time_unix_nano=time_ns)
        for key, value in pairs:
            record.attributes.add(key=key).value.string_value = value
    sessions = {t: identity.session_of("default", dict(pairs), resource) for t, pairs in records.items()}
    assert sessions[1] == "sess-7"
    assert sessions[2].startswith(identity.SYNTHETIC_PREFIX)
    return request, sessions


@pytest.mark.parametrize("media", [PB, JSON])
async def test_key_and_session_header_follow_the_shared_identity_rule(
    client: httpx.AsyncClient, bootstrap: str, prefix: str, media: str
) -> None:
    request, sessions = identity_request()
    body = (
        request.SerializeToString()
        if media == PB
        else json_format.MessageToJson(request, indent=None).encode()  # no ids: no hex to mind
    )
    response = await client.post("/v1/logs", content=body, headers={"Content-Type": media})
    assert response.status_code == 200, response.text

    messages = await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))
    published = {
        int(t): (m.key.decode(), dict(m.headers)[HEADER_SESSION].decode())  # type: ignore[attr-defined]
        for m in messages
        for t in kafka_records(Signal.LOGS, m.value)  # type: ignore[attr-defined]
    }
    assert published == {t: (f"default/{sid}", sid) for t, sid in sessions.items()}
    assert len(messages) == 2  # one message per session


BOMB = gzip.compress(b"\0" * (8 * 1024 * 1024))

BAD_INPUT = [
    pytest.param(
        "/v1/logs", {"Content-Type": PB}, TEXT_LOGS.read_bytes()[:-7], 400, PB, id="truncated-protobuf"
    ),
    pytest.param(
        "/v1/logs", {"Content-Type": PB}, TEXT_LOGS_JSON.read_bytes(), 400, PB, id="json-sent-as-protobuf"
    ),
    pytest.param("/v1/logs", {"Content-Type": JSON}, b'{"resourceLogs": [', 400, JSON, id="invalid-json"),
    pytest.param(
        "/v1/logs", {"Content-Type": JSON}, b'{"resourceLogs": 7}', 400, JSON, id="json-wrong-shape"
    ),
    pytest.param("/v1/metrics", {"Content-Type": JSON}, b"[1, 2]", 400, JSON, id="json-not-an-object"),
    pytest.param("/v1/logs", {"Content-Type": "text/plain"}, b"hello", 415, JSON, id="wrong-content-type"),
    pytest.param("/v1/logs", {}, TEXT_LOGS.read_bytes(), 415, JSON, id="no-content-type"),
    pytest.param(
        "/v1/logs",
        {"Content-Type": PB, "Content-Encoding": "br"},
        TEXT_LOGS.read_bytes(),
        415,
        PB,
        id="unknown-encoding",
    ),
    pytest.param(
        "/v1/logs",
        {"Content-Type": PB, "Content-Encoding": "gzip"},
        b"not gzip at all",
        400,
        PB,
        id="bad-gzip",
    ),
    pytest.param("/v1/logs", {"Content-Type": PB, "Content-Encoding": "gzip"}, BOMB, 413, PB, id="gzip-bomb"),
    pytest.param("/v1/logs", {"Content-Type": PB}, b"\0" * (1024 * 1024 + 1), 413, PB, id="too-large"),
]


@pytest.mark.parametrize(("path", "headers", "body", "status", "media"), BAD_INPUT)
async def test_bad_input_is_refused_and_written_nowhere(
    client: httpx.AsyncClient,
    bootstrap: str,
    prefix: str,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    media: str,
) -> None:
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(media)
    error = status_pb2.Status()
    if media == PB:
        error.ParseFromString(response.content)
    else:
        json_format.Parse(response.text, error)
    assert error.message  # says what is wrong
    offsets = await end_offsets(bootstrap, Topics(prefix).all_raw())
    assert offsets, "the raw topics must exist (created at start-up)"
    assert sum(offsets.values()) == 0


async def test_kafka_unreachable_means_503_with_retry_after(prefix: str) -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    app = create_app(settings(dead, prefix, retry_after_s=7))
    async with running(app, ready=False) as client:
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/v1/logs", content=TEXT_LOGS.read_bytes(), headers={"Content-Type": PB})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
        assert status_pb2.Status.FromString(response.content).message


@pytest.mark.parametrize("accept_traces", [False, True], ids=["traces-refused", "traces-accepted"])
@pytest.mark.parametrize("agent", ["claude-code", "gemini-cli", "codex"])
async def test_every_capture_over_http_lands_in_kafka_whole(
    bootstrap: str, prefix: str, agent: str, accept_traces: bool
) -> None:
    """Each capture exactly as the agent sent it (path, content type, encoding, body). Trace
    exports are refused with 404 (a Status saying what to do, in the request's encoding) unless
    ``TOKENTIDE_ACCEPT_TRACES`` is on; then they land like the others."""
    config = settings(bootstrap, prefix, accept_traces=accept_traces)
    sent: list[tuple[Signal, dict[str, object]]] = []
    refused = 0
    async with running(create_app(config)) as client:
        for case_dir in cases(agent):
            for export in exports(case_dir):
                headers = {"Content-Type": export.content_type}
                if export.content_encoding:
                    headers["Content-Encoding"] = export.content_encoding
                response = await client.post(export.path, content=export.body, headers=headers)
                assert response.headers["content-type"].startswith(export.content_type)
                if Signal(export.signal) not in config.signals:
                    assert response.status_code == 404, (case_dir.name, export.path, response.text)
                    error = status_pb2.Status()
                    if export.content_type == PB:
                        error.ParseFromString(response.content)
                    else:
                        json_format.Parse(response.text, error)
                    assert "OTEL_TRACES_EXPORTER=none" in error.message
                    assert "retry-after" not in response.headers
                    refused += 1
                    continue
                assert response.status_code == 200, (case_dir.name, export.path, response.text)
                assert response.content in (b"", b"{}")  # no partial success: every record taken
                sent.append((Signal(export.signal), json.loads(export.json_form.read_text())))
    assert sent
    traces = sum(1 for case_dir in cases(agent) for e in exports(case_dir) if e.signal == Signal.TRACES)
    assert traces, f"the {agent} captures hold trace exports"
    assert refused == (0 if accept_traces else traces)
    if not accept_traces:
        assert not await read_all(bootstrap, Topics(prefix).raw(Signal.TRACES))

    for signal in config.signals:
        documents = [document for s, document in sent if s is signal]
        messages = await read_all(bootstrap, Topics(prefix).raw(signal))
        want = sorted((fp for d in documents for fp, _ in json_records(signal, d)), key=repr)
        got = sorted((fp for m in messages for fp in kafka_records(signal, m.value)), key=repr)  # type: ignore[attr-defined]
        assert got == want, signal
        keys = Counter(m.key.decode() for m in messages)  # type: ignore[attr-defined]
        assert keys == Counter(k for d in documents for k in identity_keys(signal, d)), signal
        for message in messages:
            _, session = message.key.decode().split("/", 1)  # type: ignore[attr-defined]
            assert dict(message.headers)[HEADER_SESSION] == session.encode()  # type: ignore[attr-defined]


async def test_unknown_path_and_wrong_method(client: httpx.AsyncClient, bootstrap: str, prefix: str) -> None:
    body = TEXT_LOGS.read_bytes()
    assert (await client.post("/v1/profiles", content=body, headers={"Content-Type": PB})).status_code == 404
    assert (await client.post("/v2/logs", content=body, headers={"Content-Type": PB})).status_code == 404
    assert (await client.get("/v1/logs")).status_code == 405
    assert sum((await end_offsets(bootstrap, Topics(prefix).all_raw())).values()) == 0
