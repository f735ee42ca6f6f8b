"""The stream stage's health routes tell the truth about its processing loop (streams.app)."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

from streams.app import StreamsService, create_app
from streams.metrics import StreamsMetrics
from tokentide.settings import StreamsSettings

SETTINGS = StreamsSettings(kafka_bootstrap="127.0.0.1:1", topic_prefix="t.", store="memory")


class _Worker:
    """Just what readiness reads of a worker."""

    joined = True
    tasks: ClassVar[dict[int, object]] = {0: object()}

    async def run(self) -> None:
        raise RuntimeError("a bug")

    def not_ready(self) -> list[int]:
        return []

    def stalled(self) -> list[str]:
        return []


async def test_a_dead_processing_loop_is_neither_healthy_nor_ready() -> None:
    service = StreamsService(SETTINGS, StreamsMetrics(CollectorRegistry()))
    service.worker = _Worker()  # type: ignore[assignment]

    async def running() -> None:
        await asyncio.Event().wait()

    service.loop_task = asyncio.create_task(running())
    await asyncio.sleep(0)
    assert service.health()[0]
    assert service.readiness()[0]

    service.loop_task.cancel()
    service.loop_task = asyncio.create_task(service._run(service.worker))  # run() raises
    await asyncio.gather(service.loop_task, return_exceptions=True)
    alive, details = service.health()
    ready, _ = service.readiness()
    assert (alive, ready) == (False, False)
    assert details["loop"] == "RuntimeError: a bug"


async def test_the_routes_answer_503_with_the_reason() -> None:
    app = create_app(SETTINGS, CollectorRegistry())
    service: StreamsService = app.state.service
    service.worker = _Worker()  # type: ignore[assignment]
    transport = httpx.ASGITransport(app=app)  # no lifespan: nothing connects to Kafka
    async with httpx.AsyncClient(transport=transport, base_url="http://streams") as client:
        assert (await client.get("/healthz")).status_code == 503  # no loop yet
        body = (await client.get("/readyz")).json()
        assert body["status"] == "not ready"
        assert "tokentide_streams_dead_letters" in (await client.get("/metrics")).text


async def test_the_process_exits_some_seconds_after_the_loop_died(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.app.FATAL_EXIT_AFTER_S", 0.0)
    exited = asyncio.Event()
    service = StreamsService(SETTINGS, StreamsMetrics(CollectorRegistry()), on_fatal=exited.set)
    service.worker = _Worker()  # type: ignore[assignment]
    service.loop_task = asyncio.create_task(service._run(service.worker))
    await asyncio.gather(service.loop_task, return_exceptions=True)
    await asyncio.wait_for(exited.wait(), 5)
