"""Every answer of the OTLP/HTTP receiver in one table, with real API keys and real Kafka.

One ingest app (authenticated mode, keys in PostgreSQL) and one request per row. After the
table, Kafka holds exactly the records of the rows answered 200: refused requests are written
nowhere.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import psycopg
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from ingest.app import create_app
from ingest.auth import TENANT_HEADER
from tests.support.captures import FIXTURES
from tests.support.records import kafka_records
from tests.support.services import read_all
from tokentide.admin import Policy, create_key, create_tenant, revoke_key, set_tenant_disabled
from tokentide.settings import IngestSettings
from tokentide.topics import Signal, Topics

pytestmark = pytest.mark.integration

PB, JSON = "application/x-protobuf", "application/json"
MiB = 1024 * 1024
LOGS = (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
LOGS_JSON = (FIXTURES / "claude-code" / "stub-text-json" / "0001_v1_logs.json").read_bytes()


def with_bad_trace_id() -> bytes:
    request = ExportLogsServiceRequest.FromString(LOGS)
    request.resource_logs[0].scope_logs[0].log_records[0].trace_id = b"abc"
    return request.SerializeToString()


def big_valid_logs(size: int) -> bytes:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "x" * size
    return request.SerializeToString()


@dataclass
class Row:
    id: str
    status: int
    body: bytes = LOGS
    key: str | None = "acme"  # whose key, or None for none
    content_type: str | None = PB
    path: str = "/v1/logs"
    method: str = "POST"
    extra: dict[str, str] = field(default_factory=dict)
    stored: int = 0  # log records this row must leave in Kafka


TABLE = [
    Row("ok-protobuf", 200, stored=3),
    Row("ok-json", 200, body=LOGS_JSON, content_type=JSON, stored=3),
    Row("ok-gzip", 200, body=gzip.compress(LOGS), extra={"Content-Encoding": "gzip"}, stored=3),
    Row("partial-success", 200, body=with_bad_trace_id(), stored=2),
    Row("truncated-protobuf", 400, body=LOGS[:-9]),
    Row("json-sent-as-protobuf", 400, body=LOGS_JSON),
    Row("invalid-json", 400, body=b"{", content_type=JSON),
    Row("missing-key", 401, key=None),
    Row("unknown-key", 401, key="unknown"),
    Row("revoked-key", 401, key="revoked"),
    Row("other-tenant", 403, extra={TENANT_HEADER: "globex"}),
    Row("disabled-tenant", 403, key="disabled"),
    Row("wrong-path", 404, path="/v1/logz"),
    Row("wrong-method", 405, method="GET"),
    Row("too-large", 413, body=big_valid_logs(2 * MiB)),
    Row("gzip-bomb", 413, body=gzip.compress(b"\0" * (8 * MiB)), extra={"Content-Encoding": "gzip"}),
    Row("unsupported-content-type", 415, content_type="text/plain"),
    Row("unsupported-encoding", 415, extra={"Content-Encoding": "br"}),
    Row("over-rate", 429, key="slow"),
    Row("over-memory", 503, key="roomy", body=big_valid_logs(int(1.5 * MiB))),
]


@dataclass
class Server:
    client: httpx.AsyncClient
    keys: dict[str, str]
    prefix: str


@pytest.fixture
async def server(bootstrap: str, prefix: str, database: str) -> AsyncIterator[Server]:
    with psycopg.connect(database, autocommit=True) as conn:
        for name, policy in {
            "acme": Policy(max_body_bytes=MiB),
            "globex": Policy(),
            "slow": Policy(requests_per_s=0.01),  # a burst of one request, then 429
            "disabled": Policy(),
            "roomy": Policy(),  # the service's 16 MiB body limit, so the memory cap hits first
        }.items():
            create_tenant(conn, name, policy)
        keys = {name: create_key(conn, name).token for name in ("acme", "slow", "disabled", "roomy")}
        revoked = create_key(conn, "acme")
        revoke_key(conn, revoked.key_id)
        keys["revoked"] = revoked.token
        keys["unknown"] = "tt_0123456789ab_" + "x" * 43
        set_tenant_disabled(conn, "disabled", disabled=True)
    settings = IngestSettings(
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        database_url=database,
        redaction_key="k",
        grpc_port=0,
        max_inflight_bytes=MiB,
        redaction="off",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=30) as client:
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            # Spend the slow tenant's only token.
            spend = {"Authorization": f"Bearer {keys['slow']}", "Content-Type": PB}
            assert (await client.post("/v1/logs", content=LOGS, headers=spend)).status_code == 200
            yield Server(client, keys, prefix)


async def test_every_status_code(server: Server, bootstrap: str) -> None:
    for row in TABLE:
        headers = dict(row.extra)
        if row.content_type:
            headers["Content-Type"] = row.content_type
        if row.key:
            headers["Authorization"] = f"Bearer {server.keys[row.key]}"
        response = await server.client.request(row.method, row.path, content=row.body, headers=headers)
        assert response.status_code == row.status, (row.id, response.text[:300])
        if row.status in (404, 405):
            continue  # HTTP-level answers of the router, not OTLP responses
        media = row.content_type if row.content_type in (PB, JSON) else JSON
        assert response.headers["content-type"].startswith(media), row.id
        if row.status == 200:
            reply = (
                ExportLogsServiceResponse.FromString(response.content)
                if media == PB
                else json_format.Parse(response.text, ExportLogsServiceResponse())
            )
            assert reply.partial_success.rejected_log_records == 3 - row.stored, row.id
            continue
        status = (
            status_pb2.Status.FromString(response.content)
            if media == PB
            else json_format.Parse(response.text, status_pb2.Status())
        )
        assert status.message, row.id
        if row.status in (429, 503):
            assert int(response.headers["retry-after"]) >= 1, row.id
        if row.status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer"), row.id

    messages = await read_all(bootstrap, Topics(server.prefix).raw(Signal.LOGS))
    records = sum(len(kafka_records(Signal.LOGS, m.value)) for m in messages)  # type: ignore[attr-defined]
    assert records == 3 + sum(row.stored for row in TABLE)  # + the request that spent "slow"'s token
    tenants = {dict(m.headers)["tt-tenant"] for m in messages}  # type: ignore[attr-defined]
    assert tenants == {b"acme", b"slow"}
