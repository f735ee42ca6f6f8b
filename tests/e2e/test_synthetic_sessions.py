"""A long synthetic Claude Code session through the real pipeline, read back from the API.

300 requests, two compactions, cumulative metrics with two agent restarts and two drop resets
(``tests/support/scenarios.py``), posted as OTLP/HTTP protobuf to ingest. The expected totals
and signals are the generator's own, computed from what it generated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support.pipeline import Pipeline
from tests.support.scenarios import MS, Generated, Scenario, Temporality, generate
from tests.support.services import read_all
from tokentide.records import SessionSignal, SignalBatch

pytestmark = pytest.mark.e2e

PROTOBUF = "application/x-protobuf"


def scenario() -> Scenario:
    """The medium session, ending about now (it lasts about two hours)."""
    start_ms = time.time_ns() // MS - 150 * 60 * 1000
    return Scenario(
        seed=4,
        requests=300,
        growth=1_500,
        growth_jitter=600,
        temporality=Temporality.CUMULATIVE,
        restarts=2,
        drop_resets=2,
        start_ns=start_ms * MS,
    )


def expected_totals(gen: Generated) -> dict[str, Any]:
    totals = gen.totals
    return {
        "tokens": {
            "input": totals.input,
            "output": totals.output,
            "cache_read": totals.cache_read,
            "cache_creation": totals.cache_creation,
        },
        "cost_usd": (Decimal(totals.cost_nanos) / 10**9).quantize(Decimal("1e-9")),
        "api_requests": totals.api_requests,
        "prompts": totals.prompts,
        "tool_calls": totals.tool_calls,
        "tool_failures": totals.tool_failures,
        "lines_added": totals.lines_added,
        "lines_removed": totals.lines_removed,
        "commits": totals.commits,
        "compactions": totals.compactions,
        "events": totals.events,
    }


def observed_totals(body: dict[str, Any]) -> dict[str, Any]:
    tokens = body["tokens"]
    return {
        "tokens": {k: tokens[k] for k in ("input", "output", "cache_read", "cache_creation")},
        "cost_usd": Decimal(str(body["cost_usd"])).quantize(Decimal("1e-9")),
        "api_requests": body["api_requests"],
        "prompts": body["prompts"],
        "tool_calls": body["tool_calls"],
        "tool_failures": body["tool_failures"],
        "lines_added": body["lines_added"],
        "lines_removed": body["lines_removed"],
        "commits": body["commits"],
        "compactions": body["context"]["compactions"],
        "events": body["events"],
    }


def signal_kinds(body: dict[str, Any]) -> Counter[str]:
    return Counter(s["kind"] for s in body.get("signals") or [])


async def wait_for_session(
    client: httpx.AsyncClient,
    pipeline: Pipeline,
    gen: Generated,
    done: Callable[[dict[str, Any]], bool],
    what: Callable[[dict[str, Any]], object],
    timeout_s: float,
) -> dict[str, Any]:
    """The session's API body once ``done`` says so; else fail showing ``what`` of the last body."""
    url = f"{pipeline.url('dashboard')}/api/v1/sessions/{gen.session_id}"
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        response = await client.get(url)
        if response.status_code == 200:
            last = response.json()
            if done(last):
                return last
        if time.monotonic() > deadline:
            seen = what(last) if last else None
            pipeline.fail(f"session {gen.session_id} not as expected after {timeout_s}s: {seen}")
        await asyncio.sleep(0.5)


async def published_signals(pipeline: Pipeline, at_least: int, timeout_s: float = 10) -> list[SessionSignal]:
    """What the streams process published on ``session.signals`` (waiting for ``at_least``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = await read_all(pipeline.kafka_bootstrap, pipeline.topics.session_signals)
        signals = [s for r in records for s in SignalBatch.from_bytes(getattr(r, "value", b"")).signals]
        if len(signals) >= at_least or time.monotonic() > deadline:
            return signals
        await asyncio.sleep(0.5)


def placed(gen: Generated, kind: str, time_ns: int, tokens: int) -> tuple[str, str, int]:
    return kind, gen.label(time_ns), tokens


async def test_long_session_gives_the_generated_totals_and_signals(pipeline: Pipeline) -> None:
    gen = generate(scenario())
    assert gen.totals.compactions == 2
    assert gen.drops > 0
    assert all(len(at) == 2 for at in gen.fires().values()), gen.fires()
    want_totals = expected_totals(gen)
    want_signals = sorted(placed(gen, s.kind, s.time_ns, s.tokens) for s in gen.signals)

    async with httpx.AsyncClient(timeout=10) as client:
        for export in gen.exports:
            response = await client.post(
                pipeline.url("ingest") + export.path, content=export.body, headers={"Content-Type": PROTOBUF}
            )
            assert response.status_code == 200, (export.path, response.text)
        body = await wait_for_session(
            client, pipeline, gen, lambda b: observed_totals(b) == want_totals, observed_totals, 40
        )
        assert body["agent"] == "claude_code"
        assert body["totals_source"] == "events"
        assert body["active_time_s"] == pytest.approx(gen.totals.active_time_s, abs=1e-3)
        assert set(body["models"]) == set(gen.totals.models)

        # The streams process raised each signal where the rules put it (kind, request or
        # compaction, context tokens), once.
        published = await published_signals(pipeline, len(want_signals))
        assert sorted(placed(gen, str(s.kind), s.time_ns, s.tokens) for s in published) == want_signals

        # ... and the API shows them.
        want_kinds = Counter(s.kind for s in gen.signals)
        body = await wait_for_session(
            client, pipeline, gen, lambda b: signal_kinds(b) == want_kinds, signal_kinds, 10
        )
    shown = sorted(
        placed(gen, s["kind"], round(datetime.fromisoformat(s["at"]).timestamp() * 1000) * MS, s["tokens"])
        for s in body["signals"]
    )
    assert shown == want_signals
