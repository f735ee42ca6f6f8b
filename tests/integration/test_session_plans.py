"""The plan route (``PUT /api/v1/hook/sessions/{id}/plan``) and the project routes over a real,
migrated PostgreSQL: privacy modes, caps, the session proof, tenant isolation, an unchanged plan
writing no version, and the sessions' ``plan``/``project`` in the session API.

Sessions rows are written as the sink writes them (their columns); the numbers of the project
routes are checked against sums stated here. The whole pipeline: tests/e2e/test_projects.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from dashboard.app import _add_session_routes, create_app
from dashboard.checkpoints import PROOF_HEADER
from dashboard.context_routes import add_context_routes
from dashboard.limits import DEFAULT_MAX_BODY_BYTES
from dashboard.plans import ITEM_TEXT_MAX, MAX_ITEMS, PLAN_MAX_BODY_BYTES
from dashboard.timeline import add_timeline_route
from ingest.redact import Redactor
from tokentide.hook import session_proof
from tokentide.settings import DashboardSettings

pytestmark = pytest.mark.integration

KEY = b"integration-redaction-key"
SECRET = b"the developer's own hook secret!"
TODOS = [
    {"content": "Read the code", "status": "completed", "activeForm": "Reading the code"},
    {"content": "Write the tests", "status": "in_progress", "activeForm": "Writing the tests"},
    {"content": "Ship it", "status": "pending", "activeForm": "Shipping it"},
]


@pytest.fixture
async def pool(database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database, min_size=1, max_size=4, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    async with pool.connection() as conn:
        for tenant, mode in (("t_off", "off"), ("t_hash", "hash"), ("t_drop", "drop"), ("t_unset", None)):
            await conn.execute("INSERT INTO tenants (tenant_id, redaction) VALUES (%s, %s)", (tenant, mode))
    yield pool
    await pool.close()


def client(
    pool: AsyncConnectionPool[Any], tenant: str, redactor: Redactor | None = None
) -> httpx.AsyncClient:
    app = FastAPI()
    settings = DashboardSettings(database_url="postgresql://unused", open_mode=True, _env_file=None)
    _add_session_routes(app, pool, settings, lambda: tenant)
    add_timeline_route(app, pool, lambda: tenant)
    add_context_routes(app, pool, lambda: tenant, redactor or Redactor(KEY))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dashboard")


async def put(
    c: httpx.AsyncClient, session: str, body: dict[str, Any], secret: bytes = SECRET
) -> httpx.Response:
    return await c.put(
        f"/api/v1/hook/sessions/{session}/plan",
        json=body,
        headers={PROOF_HEADER: session_proof(secret, session)},
    )


async def add_session(
    pool: AsyncConnectionPool[Any],
    tenant: str,
    session: str,
    *,
    quiet: timedelta = timedelta(0),
    tokens: tuple[int, int, int, int] = (100, 10, 1000, 50),
    cost: str = "0.5",
    attributes: dict[str, str] | None = None,
) -> None:
    now = datetime.now(UTC)
    async with pool.connection() as conn:
        await conn.execute(
            """INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at, input_tokens,
                   output_tokens, cache_read_tokens, cache_creation_tokens, cost_usd, cost_source,
                   api_requests, context_window, state_version, attributes)
               VALUES (%s, %s, 'claude_code', %s, %s, %s, %s, %s, %s, %s, 'price_table', 2, 200000, 1, %s)""",
            (
                tenant,
                session,
                now - quiet - timedelta(minutes=1),
                now - quiet,
                *tokens,
                cost,
                Jsonb(attributes or {}),
            ),
        )


async def versions(pool: AsyncConnectionPool[Any], tenant: str, session: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        rows = await conn.execute(
            "SELECT version, items, total, done, in_progress, text_mode FROM session_plans "
            "WHERE tenant_id = %s AND session_id = %s ORDER BY version",
            (tenant, session),
        )
        return await rows.fetchall()


async def test_a_plan_is_stored_once_per_change_and_shown_with_the_session(
    pool: AsyncConnectionPool[Any],
) -> None:
    await add_session(pool, "t_off", "s1")
    async with client(pool, "t_off") as c:
        body = {
            "todos": TODOS,
            "cwd": "/home/dev/api",
            "git_repository": "https://tok@github.com/acme/api.git",
        }
        first = await put(c, "s1", body | {"git_branch": "main"})
        assert first.status_code == 200, first.text
        assert first.json()["changed"] is True
        assert first.json()["project"] == "api"
        again = await put(c, "s1", body)  # the same plan (and no branch: the stored one stays)
        assert again.json()["changed"] is False
        assert again.json()["plan"]["version"] == 1
        moved = [TODOS[0], dict(TODOS[1], status="completed"), dict(TODOS[2], status="in_progress")]
        third = await put(c, "s1", {"todos": moved})
        assert third.json()["changed"] is True
        assert third.json()["plan"]["version"] == 2

        stored = await versions(pool, "t_off", "s1")
        assert [(v["version"], v["total"], v["done"], v["in_progress"]) for v in stored] == [
            (1, 3, 1, 1),
            (2, 3, 2, 1),
        ]
        assert stored[0]["items"][1] == {
            "content": "Write the tests",
            "active_form": "Writing the tests",
            "status": "in_progress",
        }

        session = (await c.get("/api/v1/sessions/s1")).json()
        assert session["project"] == "api"
        assert session["workspace"] == {
            "cwd": "/home/dev/api",
            "git_repository": "https://github.com/acme/api.git",  # no credentials
            "git_branch": "main",
        }
        plan = session["plan"]
        assert (plan["version"], plan["total"], plan["done"], plan["in_progress"]) == (2, 3, 2, 1)
        assert plan["current"]["content"] == "Ship it"
        assert plan["text_mode"] == "kept"
        listed = (await c.get("/api/v1/sessions")).json()["sessions"]
        assert [(s["session_id"], s["plan"]["version"], s["project"]) for s in listed] == [("s1", 2, "api")]

        timeline = (await c.get("/api/v1/sessions/s1/timeline")).json()["items"]
        assert [(i["summary"], i["plan"]["done"]) for i in timeline if i["kind"] == "plan"] == [
            ("plan v1: 1 of 3 done · in progress: Writing the tests", 1),
            ("plan v2: 2 of 3 done · in progress: Shipping it", 2),
        ]


@pytest.mark.parametrize("tenant", ["t_hash", "t_unset"])
async def test_hash_mode_stores_the_keyed_hash_ingest_uses(
    pool: AsyncConnectionPool[Any], tenant: str
) -> None:
    async with client(pool, tenant) as c:
        response = await put(c, "s1", {"todos": TODOS})
        assert response.status_code == 200, response.text
        again = await put(c, "s1", {"todos": TODOS})
        assert again.json()["changed"] is False  # equal texts, equal hashes
    redactor = Redactor(KEY)
    [stored] = await versions(pool, tenant, "s1")
    assert stored["text_mode"] == "hashed"
    assert stored["items"] == [
        {
            "content": redactor.digest(t["content"].encode()),
            "active_form": redactor.digest(t["activeForm"].encode()),
            "status": t["status"],
        }
        for t in TODOS
    ]
    assert (stored["total"], stored["done"], stored["in_progress"]) == (3, 1, 1)
    assert "Write the tests" not in str(stored)


async def test_drop_mode_and_a_missing_key_store_no_text(pool: AsyncConnectionPool[Any]) -> None:
    async with client(pool, "t_drop") as c:
        assert (await put(c, "s1", {"todos": TODOS})).status_code == 200
    app = FastAPI()
    add_context_routes(app, pool, lambda: "t_hash", None)  # hash mode, no redaction key of its own
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://d") as c:
        assert (await put(c, "s2", {"todos": TODOS})).status_code == 200
    for tenant, session in (("t_drop", "s1"), ("t_hash", "s2")):
        [stored] = await versions(pool, tenant, session)
        assert stored["text_mode"] == "dropped"
        assert stored["items"] == [
            {"content": None, "active_form": None, "status": t["status"]} for t in TODOS
        ]
        assert (stored["total"], stored["done"], stored["in_progress"]) == (3, 1, 1)


@pytest.mark.parametrize(
    "body",
    [
        {"todos": [{"content": "x", "status": "blocked"}]},
        {"todos": [{"content": "x" * (ITEM_TEXT_MAX + 1), "status": "pending"}]},
        {"todos": [{"content": "x", "status": "pending"}] * (MAX_ITEMS + 1)},
        {"todos": TODOS, "cwd": "/ok", "git_branch": "b" * 256},
        {"todos": TODOS, "surprise": 1},
    ],
)
async def test_a_bad_plan_is_422_and_writes_nothing(
    pool: AsyncConnectionPool[Any], body: dict[str, Any]
) -> None:
    async with client(pool, "t_off") as c:
        response = await put(c, "s1", body)
        assert response.status_code == 422, response.text
    async with pool.connection() as conn:
        for table in ("session_plans", "session_context", "agent_session_bindings"):
            count = await (await conn.execute(f"SELECT count(*) AS n FROM {table}")).fetchone()  # noqa: S608 (fixed names)
            assert count is not None
            assert count["n"] == 0, table


async def test_the_largest_plan_is_accepted(pool: AsyncConnectionPool[Any]) -> None:
    largest = [
        {"content": "é" * ITEM_TEXT_MAX, "activeForm": "ü" * ITEM_TEXT_MAX, "status": "pending"}
    ] * MAX_ITEMS
    async with client(pool, "t_off") as c:
        response = await put(c, "s1", {"todos": largest})
        assert response.status_code == 200, response.text
        assert response.json()["plan"]["total"] == MAX_ITEMS


async def test_another_agents_proof_and_another_tenant_are_kept_out(pool: AsyncConnectionPool[Any]) -> None:
    await add_session(pool, "t_off", "s1")
    await add_session(pool, "t_hash", "s1")
    async with client(pool, "t_off") as c:
        assert (await put(c, "s1", {"todos": TODOS, "cwd": "/home/a/alpha"})).status_code == 200
        other = await put(
            c, "s1", {"todos": [], "cwd": "/home/b/evil"}, secret=b"another developer's secret!!"
        )
        assert other.status_code == 403
    async with client(pool, "t_hash") as c:
        # The same session id in another tenant: its own binding, its own rows.
        assert (
            await put(c, "s1", {"cwd": "/home/b/beta"}, secret=b"another developer's secret!!")
        ).status_code == 200
        mine = (await c.get("/api/v1/sessions/s1")).json()
        assert mine["project"] == "beta"
        assert mine["plan"] is None
        assert (await c.get("/api/v1/projects/alpha")).status_code == 404
        assert [p["project"] for p in (await c.get("/api/v1/projects")).json()["projects"]] == ["beta"]
    async with client(pool, "t_off") as c:
        theirs = (await c.get("/api/v1/sessions/s1")).json()
        assert theirs["project"] == "alpha"
        assert theirs["plan"]["total"] == 3
        assert [p["project"] for p in (await c.get("/api/v1/projects")).json()["projects"]] == ["alpha"]


async def test_projects_sum_their_sessions_and_flag_parallel_work(pool: AsyncConnectionPool[Any]) -> None:
    # api: two active sessions (one by the hook, one by its resource attribute) and an ended one;
    # web: one active session (service.namespace); loose: no project.
    await add_session(pool, "t_off", "a1", tokens=(100, 10, 1000, 50), cost="0.25")
    await add_session(
        pool, "t_off", "a2", tokens=(200, 20, 2000, 60), cost="0.5", attributes={"project": "api"}
    )
    await add_session(pool, "t_off", "a3", quiet=timedelta(hours=2), tokens=(1, 2, 3, 4), cost="1.125")
    await add_session(
        pool, "t_off", "w1", tokens=(7, 8, 9, 10), cost="2", attributes={"service.namespace": "web"}
    )
    await add_session(pool, "t_off", "loose")
    await add_session(pool, "t_off", "slash", cost="3", attributes={"project": "payments/api"})
    async with client(pool, "t_off") as c:
        for session in ("a1", "a3"):
            assert (await put(c, session, {"cwd": "/home/dev/api"})).status_code == 200
        projects = {p["project"]: p for p in (await c.get("/api/v1/projects")).json()["projects"]}
        assert set(projects) == {"api", "web", "payments/api"}
        api = projects["api"]
        assert (api["sessions"], api["active_sessions"], api["parallel"]) == (3, 2, True)
        assert api["tokens"] == {
            "input": 100 + 200 + 1,
            "output": 10 + 20 + 2,
            "cache_read": 1000 + 2000 + 3,
            "cache_creation": 50 + 60 + 4,
            "reasoning": 0,
            "cache_creation_1h": 0,
        }
        assert api["cost_usd"] == 0.25 + 0.5 + 1.125
        assert (projects["web"]["sessions"], projects["web"]["parallel"], projects["web"]["cost_usd"]) == (
            1,
            False,
            2.0,
        )

        detail = (await c.get("/api/v1/projects/api")).json()
        assert detail["project"] == api
        assert sorted(s["session_id"] for s in detail["active"]) == ["a1", "a2"]
        assert [s["session_id"] for s in detail["inactive"]] == ["a3"]
        assert (await c.get("/api/v1/projects/nope")).status_code == 404
        # A name with a "/" (from a resource attribute), as the UI links to it (encoded) or not.
        for path in ("/api/v1/projects/payments%2Fapi", "/api/v1/projects/payments/api"):
            slashed = (await c.get(path)).json()
            assert (slashed["project"]["project"], slashed["project"]["cost_usd"]) == ("payments/api", 3.0)
            assert [s["session_id"] for s in slashed["inactive"] + slashed["active"]] == ["slash"]

        listed = (await c.get("/api/v1/sessions", params={"project": "api"})).json()
        assert listed["total"] == 3
        assert sorted(s["session_id"] for s in listed["sessions"]) == ["a1", "a2", "a3"]
        assert (await c.get("/api/v1/sessions", params={"project": ""})).status_code == 422


async def test_concurrent_reports_of_one_session_number_their_versions_in_order(
    pool: AsyncConnectionPool[Any],
) -> None:
    async with client(pool, "t_off") as c:
        plans = [[dict(TODOS[0], content=f"step {i}")] for i in range(8)]
        answers = await asyncio.gather(*(put(c, "s1", {"todos": p}) for p in plans))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    stored = await versions(pool, "t_off", "s1")
    assert [v["version"] for v in stored] == list(range(1, 9))
    assert sorted(v["items"][0]["content"] for v in stored) == sorted(p[0]["content"] for p in plans)


async def test_the_largest_plan_fits_the_body_limit_and_more_is_413(database: str) -> None:
    app = create_app(DashboardSettings(database_url=database, open_mode=True, _env_file=None))
    largest = [
        {"content": "\u00e9" * ITEM_TEXT_MAX, "activeForm": "\u00fc" * ITEM_TEXT_MAX, "status": "pending"}
    ]
    body = json.dumps({"todos": largest * MAX_ITEMS}).encode()  # JSON-escaped: 6 bytes a character
    assert DEFAULT_MAX_BODY_BYTES < len(body) <= PLAN_MAX_BODY_BYTES
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as c:
            headers = {"Content-Type": "application/json"}
            fits = await c.put("/api/v1/hook/sessions/s1/plan", content=body, headers=headers)
            assert fits.status_code == 200, fits.text
            assert fits.json()["plan"]["total"] == MAX_ITEMS
            over = b" " * (PLAN_MAX_BODY_BYTES + 1 - len(body)) + body
            too_big = await c.put("/api/v1/hook/sessions/s2/plan", content=over, headers=headers)
            assert too_big.status_code == 413
    with psycopg.connect(database) as conn:
        stored = conn.execute("SELECT session_id FROM session_context ORDER BY 1").fetchall()
    assert stored == [("s1",)]  # nothing of the refused body
