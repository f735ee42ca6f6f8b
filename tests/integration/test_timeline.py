"""``GET /api/v1/sessions/{session_id}/timeline`` over a real, migrated PostgreSQL holding
sessions written by the real stream-stage and sink code (tests/support/usage_data.py): real
Claude Code captures and synthetic sessions with compactions and signals.

Expected values come from the captures' JSON and the scenarios' own requests, never from the
code under test.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard.timeline import add_timeline_route
from tests.support.captures import FIXTURES, exports
from tests.support.services import create_database, drop_database
from tests.support.usage_data import Dataset, seed

pytestmark = pytest.mark.integration

TOOL_TRACES = FIXTURES / "claude-code" / "stub-tool-traces-protobuf"


@pytest.fixture(scope="module")
def seeded(admin_url: str) -> Iterator[tuple[str, Dataset]]:
    """A database of this module's own, seeded once (the tests only read it)."""
    dsn = create_database(admin_url)
    try:
        yield dsn, asyncio.run(seed(dsn))
    finally:
        drop_database(admin_url, dsn)


@pytest.fixture
async def pool(seeded: tuple[str, Dataset]) -> AsyncIterator[AsyncConnectionPool[Any]]:
    # As the dashboard opens it: dict rows, autocommit.
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        seeded[0], min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


def client_for(pool: AsyncConnectionPool[Any], tenant: str) -> httpx.AsyncClient:
    app = FastAPI()
    add_timeline_route(app, pool, lambda: tenant)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")


def times(items: list[dict[str, Any]]) -> list[datetime]:
    """The items' times as instants (their ISO text does not sort: ``...:17Z`` > ``...:17.5Z``)."""
    return [datetime.fromisoformat(i["at"]) for i in items]


async def timeline(client: httpx.AsyncClient, session_id: str, **params: int) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/sessions/{session_id}/timeline", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["session_id"] == session_id
    items: list[dict[str, Any]] = body["items"]
    return items


def capture_records(case_dir: Any) -> list[dict[str, Any]]:
    """The case's log records' attributes, in the order the agent numbered them."""
    records = []
    for export in exports(case_dir):
        if export.signal != "logs":
            continue
        document = json.loads(export.json_form.read_text())
        for resource in document["resourceLogs"]:
            for scope in resource["scopeLogs"]:
                for record in scope["logRecords"]:
                    attrs = {a["key"]: next(iter(a["value"].values()), None) for a in record["attributes"]}
                    records.append(attrs)
    return sorted(records, key=lambda a: int(a["event.sequence"]))


async def test_a_captured_sessions_timeline_is_its_events_in_order(
    pool: AsyncConnectionPool[Any],
) -> None:
    records = capture_records(TOOL_TRACES)
    session_id = records[0]["session.id"]
    async with client_for(pool, "default") as client:
        items = await timeline(client, session_id)

    assert [i["name"] for i in items] == [r["event.name"] for r in records]
    assert times(items) == sorted(times(items))
    kinds = [i["kind"] for i in items]
    assert kinds[0] == "prompt"
    assert kinds.count("api_request") == sum(r["event.name"] == "api_request" for r in records)
    assert {"tool_decision", "tool_result"} <= set(kinds)
    # Main-conversation requests carry input + cache read + cache write; the title request none.
    main = [
        int(r["input_tokens"]) + int(r["cache_read_tokens"]) + int(r["cache_creation_tokens"])
        for r in records
        if r["event.name"] == "api_request" and r["query_source"] != "generate_session_title"
    ]
    assert [i["context_tokens"] for i in items if i["context_tokens"] is not None] == main == [6000, 6000]
    requests = [i for i in items if i["kind"] == "api_request"]
    want = [r for r in records if r["event.name"] == "api_request"]
    assert [i["model"] for i in requests] == [r["model"] for r in want]
    assert [i["cost_usd"] for i in requests] == pytest.approx([float(r["cost_usd"]) for r in want])
    assert all(i["model"] in i["summary"] and "$" in i["summary"] for i in requests)
    tool = next(r for r in records if r["event.name"] == "tool_result")
    tool_item = next(i for i in items if i["kind"] == "tool_result")
    assert tool_item["summary"].startswith(f"{tool['tool_name']} succeeded")


async def test_a_sessions_timeline_merges_its_requests_compactions_and_signals(
    seeded: tuple[str, Dataset], pool: AsyncConnectionPool[Any]
) -> None:
    session = seeded[1].session("data-compacted")
    generated = session.generated
    assert generated.signals, "the scenario raises signals"
    assert generated.compactions, "the scenario compacts"
    async with client_for(pool, session.tenant) as client:
        items = await timeline(client, session.session_id, limit=5000)
        last = await timeline(client, session.session_id, limit=10)

    assert times(items) == sorted(times(items))
    requests = [i for i in items if i["kind"] == "api_request"]
    assert len(requests) == len(generated.requests)
    assert [i["context_tokens"] for i in requests] == [
        r.context if r.main else None for r in generated.requests
    ]
    assert [i["model"] for i in requests] == [r.model for r in generated.requests]
    assert sum(i["kind"] == "compaction" for i in items) == len(generated.compactions)
    signals = [i for i in items if i["kind"] == "signal"]
    assert [s["name"] for s in signals] == [g.kind for g in generated.signals]
    assert all(s["summary"] for s in signals)
    with psycopg.connect(seeded[0]) as conn:
        row = conn.execute(
            "SELECT count(*) FROM events WHERE session_id = %s AND kind IS NOT NULL", (session.session_id,)
        ).fetchone()
    assert row is not None
    assert len(items) == row[0] + len(generated.signals)  # every event has its kind, all are listed
    # limit: the most recent N, still oldest first.
    assert last == items[-10:]


async def test_the_sink_stores_each_events_kind_and_main_context(seeded: tuple[str, Dataset]) -> None:
    session = seeded[1].session("data-compacted")
    with psycopg.connect(seeded[0]) as conn:
        rows = conn.execute(
            "SELECT kind, main_context, input_tokens + cache_read_tokens + cache_creation_tokens"
            "  FROM events WHERE session_id = %s AND name = 'api_request' ORDER BY ts, seq",
            (session.session_id,),
        ).fetchall()
        kinds = {r[0] for r in conn.execute("SELECT DISTINCT kind FROM events")}
    assert rows == [("usage", r.main, r.context) for r in session.generated.requests]
    assert {"usage", "prompt", "tool_result", "compaction"} <= kinds
    assert None not in kinds


async def test_unknown_sessions_and_other_tenants_sessions_are_not_found(
    seeded: tuple[str, Dataset], pool: AsyncConnectionPool[Any]
) -> None:
    theirs = seeded[1].session("acme-active")
    ours = seeded[1].session("data-active")
    async with client_for(pool, "default") as client:
        missing = await client.get("/api/v1/sessions/no-such-session/timeline")
        other_tenant = await client.get(f"/api/v1/sessions/{theirs.session_id}/timeline")
        too_many = await client.get(f"/api/v1/sessions/{ours.session_id}/timeline", params={"limit": 5001})
        too_few = await client.get(f"/api/v1/sessions/{ours.session_id}/timeline", params={"limit": 0})
        default = await timeline(client, ours.session_id)
    assert (missing.status_code, other_tenant.status_code) == (404, 404)
    assert (too_many.status_code, too_few.status_code) == (422, 422)
    assert 0 < len(default) <= 500
    async with client_for(pool, theirs.tenant) as client:
        assert await timeline(client, theirs.session_id)
