"""Fault test: the Kafka broker dies under steady load and comes back.

Every request that got 200 must be in Kafka exactly once; every other one must have been
answered 503 (or 429), never 500 or a dropped connection; ingest must recover by itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.app import create_app
from tests.support.broker import Broker
from tests.support.captures import FIXTURES, export_for
from tests.support.services import read_all, unique
from tokentide.settings import IngestSettings
from tokentide.topics import Signal, Topics

pytestmark = pytest.mark.integration

TEMPLATE = ExportLogsServiceRequest.FromString(
    (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
)
PB = {"Content-Type": "application/x-protobuf"}
CLIENTS = 4
OUTAGE_AT_S, DOWN_FOR_S = 6.0, 8.0
AFTER_RESTART_S = 8.0  # load goes on this long once the broker is back (its start takes 5-20 s)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.kill()


async def test_acknowledged_exports_survive_a_broker_outage(broker: Broker) -> None:
    prefix = unique("outage") + "."
    settings = IngestSettings(
        kafka_bootstrap=broker.bootstrap,
        topic_prefix=prefix,
        open_mode=True,
        grpc_port=0,
        kafka_ack_timeout_s=3,
        retry_after_s=1,
    )
    app = create_app(settings)
    outcomes: dict[str, int] = {}  # session id (one per request) -> HTTP status
    ok_times: list[float] = []
    ready_seen: list[tuple[float, int]] = []
    done = asyncio.Event()
    restarted_at: list[float] = []

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=30) as client:
            for _ in range(100):
                if (await client.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            started = time.monotonic()

            async def load(client_no: int) -> None:
                n = 0
                while not done.is_set():
                    session_id = f"{client_no}-{n}-{uuid.uuid4().hex[:8]}"
                    response = await client.post(
                        "/v1/logs", content=export_for(TEMPLATE, session_id, 0), headers=PB
                    )
                    outcomes[session_id] = response.status_code
                    if response.status_code == 200:
                        ok_times.append(time.monotonic() - started)
                    if response.status_code != 200:
                        assert response.headers.get("retry-after"), response.text
                        await asyncio.sleep(0.2)  # what an exporter does, shortened
                    n += 1
                    await asyncio.sleep(0.02)

            async def chaos() -> None:
                await asyncio.sleep(OUTAGE_AT_S)
                await asyncio.to_thread(broker.kill)
                await asyncio.sleep(DOWN_FOR_S)
                await asyncio.to_thread(broker.start)
                restarted_at.append(time.monotonic() - started)
                await asyncio.sleep(AFTER_RESTART_S)
                done.set()

            async def watch_readiness() -> None:
                while not done.is_set():
                    status = (await client.get("/readyz")).status_code
                    ready_seen.append((time.monotonic() - started, status))
                    await asyncio.sleep(0.25)

            await asyncio.gather(*(load(i) for i in range(CLIENTS)), chaos(), watch_readiness())

    statuses = Counter(outcomes.values())
    assert set(statuses) <= {200, 503, 429}, statuses
    assert statuses[503] > 0, "the outage must have been seen by clients"
    acked = {sid for sid, status in outcomes.items() if status == 200}
    before = [t for t, s in ready_seen if t < OUTAGE_AT_S]
    during = [s for t, s in ready_seen if OUTAGE_AT_S + 3 < t < OUTAGE_AT_S + DOWN_FOR_S]
    assert before
    assert during
    assert 503 in during, "readiness must turn not-ready while Kafka is gone"
    assert ready_seen[-1][1] == 200, "ingest must recover by itself once Kafka is back"
    assert any(t > restarted_at[0] for t in ok_times), "exports must succeed again after the restart"

    messages = await read_all(broker.bootstrap, Topics(prefix).raw(Signal.LOGS), timeout_s=30)
    in_kafka = Counter(m.key.decode().removeprefix("default/") for m in messages)  # type: ignore[attr-defined]
    lost = acked - set(in_kafka)
    assert not lost, f"{len(lost)} acknowledged exports lost, e.g. {sorted(lost)[:5]}"
    duplicated = {sid: n for sid, n in in_kafka.items() if n > 1}
    assert not {sid for sid in duplicated if sid in acked}, (
        f"acknowledged exports written twice: {duplicated}"
    )
    assert len(acked) > 50, statuses  # the load was real before and after the outage
