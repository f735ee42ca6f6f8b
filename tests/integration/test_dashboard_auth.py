"""The dashboard's credentials on the real app over a real, migrated PostgreSQL (closed mode):
web UI sessions (the cookie, sign-out, expiry, revocation), who may scrape ``/metrics/usage``,
and the checkpoint routes' bounds (the session must exist, the agent must prove the session,
every field and the body are capped).

The app runs with its lifespan (its own pool) through httpx's ASGI transport; keys and tenants
are made with the functions of ``tokentide admin``. Times are moved in the database, never
waited for.
"""

from __future__ import annotations

import base64
import gzip
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql as psql

from dashboard.app import create_app
from dashboard.checkpoints import PROOF_HEADER
from dashboard.web_sessions import COOKIE, session_digest
from tests.support.services import create_database, drop_database, unique
from tokentide.admin import ApiKey, create_key, create_tenant, revoke_key, set_budget, set_tenant_disabled
from tokentide.hook import session_proof
from tokentide.settings import DashboardSettings

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "admin-token-for-tests-only"
METRICS_TOKEN = "scrape-token-for-tests-only"
TENANTS = ("acme", "globex")
SECRET = b"this developer's own hook secret"


@dataclass
class World:
    dsn: str
    read: dict[str, ApiKey]
    ingest: dict[str, ApiKey]


@pytest.fixture(scope="module")
def world(admin_url: str) -> Iterator[World]:
    dsn = create_database(admin_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant in TENANTS:
            create_tenant(conn, tenant)
            conn.execute(
                "INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at,"
                " context_tokens, context_window, state_version)"
                " VALUES (%s, %s, 'claude_code', now(), now(), 1000, 200000, 1)",
                (tenant, f"{tenant}-session"),
            )
        read = {t: create_key(conn, t, "web", scope="read") for t in TENANTS}
        ingest = {t: create_key(conn, t, "agents", scope="ingest") for t in TENANTS}
    try:
        yield World(dsn, read, ingest)
    finally:
        drop_database(admin_url, dsn)


def settings(dsn: str, **overrides: Any) -> DashboardSettings:
    values: dict[str, Any] = {
        "database_url": dsn,
        "open_mode": False,
        "dashboard_admin_token": ADMIN_TOKEN,
        "metrics_token": METRICS_TOKEN,
        "usage_cache_s": 0,
        "checkpoint_max_body_bytes": 64 * 1024,
    }
    return DashboardSettings(_env_file=None, **(values | overrides))  # type: ignore[call-arg]


async def serve(
    config: DashboardSettings, base_url: str = "http://dashboard"
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=30) as client:
            yield client


@pytest.fixture
async def client(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async for c in serve(settings(world.dsn)):
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def set_cookie(response: httpx.Response) -> SimpleCookie:
    (header,) = response.headers.get_list("set-cookie")
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie


async def login(client: httpx.AsyncClient, key: str) -> str:
    response = await client.post("/api/v1/login", json={"key": key})
    assert response.status_code == 200, response.text
    return set_cookie(response)[COOKIE].value


def sql(dsn: str, query: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return cur.fetchall() if cur.description else []


# --- web sessions ---------------------------------------------------------------------------


async def test_login_gives_a_server_side_session_in_a_strict_httponly_cookie(
    client: httpx.AsyncClient, world: World
) -> None:
    key = world.read["acme"]
    response = await client.post("/api/v1/login", json={"key": key.token})
    assert response.status_code == 200, response.text
    assert response.json()["tenant"] == "acme"
    morsel = set_cookie(response)[COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "strict"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == 7 * 24 * 3600
    assert not morsel["secure"]  # plain http
    session_id = morsel.value
    assert session_id.startswith("tts_")
    assert key.secret not in session_id
    assert key.token not in response.headers["set-cookie"]
    # Only the session id's hash is stored, with the key it came from.
    stored = sql(world.dsn, "SELECT session_sha256, key_id, tenant_id FROM web_sessions")
    assert (session_digest(session_id), key.key_id, "acme") in [(bytes(r[0]), r[1], r[2]) for r in stored]
    assert not [r for r in stored if session_id.encode() in bytes(r[0])]

    client.cookies.set(COOKIE, session_id)
    try:
        page = await client.get("/api/v1/sessions")
        assert page.status_code == 200
        assert [s["session_id"] for s in page.json()["sessions"]] == ["acme-session"]
        assert (await client.get("/api/v1/me")).json() == {"tenant": "acme", "via": "web_session"}
        assert (await client.get("/api/v1/sessions", params={"tenant": "globex"})).status_code == 403
        assert (await client.get("/api/v1/sessions/globex-session")).status_code == 404
        assert (await client.get("/api/v1/hook/sessions/acme-session")).status_code == 401
    finally:
        client.cookies.clear()


@pytest.mark.parametrize(
    ("who", "says"),
    [
        ("admin", "the admin token does not sign in"),
        ("metrics", "malformed key"),
        ("ingest", "ingest keys cannot read"),
        ("forged", "wrong secret"),
        ("garbage", "malformed key"),
    ],
)
async def test_login_takes_read_keys_only(
    client: httpx.AsyncClient, world: World, who: str, says: str
) -> None:
    key = {
        "admin": ADMIN_TOKEN,
        "metrics": METRICS_TOKEN,
        "ingest": world.ingest["acme"].token,
        "forged": world.read["acme"].token[:-4] + "AAAA",
        "garbage": "hello",
    }[who]
    response = await client.post("/api/v1/login", json={"key": key})
    assert response.status_code == 401
    assert says in response.json()["detail"]
    assert "set-cookie" not in response.headers
    # The admin token reads with a Bearer header; in a cookie it is nobody.
    client.cookies.set(COOKIE, ADMIN_TOKEN)
    try:
        assert (await client.get("/api/v1/sessions")).status_code == 401
    finally:
        client.cookies.clear()


async def test_the_cookie_is_secure_over_https_and_behind_a_trusted_proxy(world: World) -> None:
    key = world.read["acme"].token
    async for https in serve(settings(world.dsn), base_url="https://dashboard"):
        assert set_cookie(await https.post("/api/v1/login", json={"key": key}))[COOKIE]["secure"] is True
    forwarded = {"X-Forwarded-Proto": "https"}
    async for untrusting in serve(settings(world.dsn)):
        response = await untrusting.post("/api/v1/login", json={"key": key}, headers=forwarded)
        assert not set_cookie(response)[COOKIE]["secure"]
    async for trusting in serve(settings(world.dsn, trust_forwarded_proto=True)):
        response = await trusting.post("/api/v1/login", json={"key": key}, headers=forwarded)
        assert set_cookie(response)[COOKIE]["secure"] is True
        plain = await trusting.post("/api/v1/login", json={"key": key}, headers={"X-Forwarded-Proto": "http"})
        assert not set_cookie(plain)[COOKIE]["secure"]


async def test_logout_ends_the_session_on_the_server(client: httpx.AsyncClient, world: World) -> None:
    session_id = await login(client, world.read["acme"].token)
    copied = {"Cookie": f"{COOKIE}={session_id}"}
    assert (await client.get("/api/v1/sessions", headers=copied)).status_code == 200
    out = await client.post("/api/v1/logout", headers=copied)
    assert out.status_code == 200
    cleared = set_cookie(out)[COOKIE]
    assert cleared.value == ""
    assert int(cleared["max-age"]) == 0
    # A copy of the cookie made before signing out is refused from now on.
    refused = await client.get("/api/v1/sessions", headers=copied)
    assert refused.status_code == 401
    assert "signed out or session expired" in refused.json()["detail"]
    revoked = sql(
        world.dsn, "SELECT revoked_at FROM web_sessions WHERE session_sha256 = %s", session_digest(session_id)
    )
    assert revoked[0][0] is not None
    assert (await client.post("/api/v1/logout")).status_code == 200  # without a cookie: nothing to end


async def test_sessions_expire_when_idle_and_at_their_absolute_limit(
    client: httpx.AsyncClient, world: World
) -> None:
    idle, old = await login(client, world.read["acme"].token), await login(client, world.read["acme"].token)
    for session_id in (idle, old):
        assert (
            await client.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={session_id}"})
        ).status_code == 200
    sql(
        world.dsn,
        "UPDATE web_sessions SET last_seen_at = now() - interval '12 hours 1 minute'"
        " WHERE session_sha256 = %s",
        session_digest(idle),
    )
    sql(
        world.dsn,
        "UPDATE web_sessions SET expires_at = now() - interval '1 second', last_seen_at = now()"
        " WHERE session_sha256 = %s",
        session_digest(old),
    )
    for session_id in (idle, old):
        assert (
            await client.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={session_id}"})
        ).status_code == 401


async def test_use_moves_the_idle_clock(client: httpx.AsyncClient, world: World) -> None:
    session_id = await login(client, world.read["acme"].token)
    sql(
        world.dsn,
        "UPDATE web_sessions SET last_seen_at = now() - interval '11 hours' WHERE session_sha256 = %s",
        session_digest(session_id),
    )
    assert (await client.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={session_id}"})).status_code == 200
    ((idle,),) = sql(
        world.dsn,
        "SELECT now() - last_seen_at < interval '1 minute' FROM web_sessions WHERE session_sha256 = %s",
        session_digest(session_id),
    )
    assert idle is True


async def test_revoking_the_read_key_or_disabling_the_tenant_ends_its_sessions(
    client: httpx.AsyncClient, world: World
) -> None:
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        key = create_key(conn, "globex", "to be revoked", scope="read")
    session_id = await login(client, key.token)
    cookie = {"Cookie": f"{COOKIE}={session_id}"}
    assert (await client.get("/api/v1/me", headers=cookie)).status_code == 200
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        revoke_key(conn, key.key_id)
    assert (await client.get("/api/v1/me", headers=cookie)).status_code == 401  # at once: no cache

    other = await login(client, world.read["globex"].token)
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        set_tenant_disabled(conn, "globex", True)
    try:
        assert (await client.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={other}"})).status_code == 401
    finally:
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            set_tenant_disabled(conn, "globex", False)


async def test_idle_and_absolute_limits_come_from_the_settings(world: World) -> None:
    async for client in serve(settings(world.dsn, web_session_idle_s=600, web_session_max_s=3600)):
        response = await client.post("/api/v1/login", json={"key": world.read["acme"].token})
        assert int(set_cookie(response)[COOKIE]["max-age"]) == 3600
        session_id = set_cookie(response)[COOKIE].value
        ((lifetime,),) = sql(
            world.dsn,
            "SELECT extract(epoch FROM expires_at - created_at) FROM web_sessions WHERE session_sha256 = %s",
            session_digest(session_id),
        )
        assert round(float(lifetime)) == 3600
        sql(
            world.dsn,
            "UPDATE web_sessions SET last_seen_at = now() - interval '11 minutes' WHERE session_sha256 = %s",
            session_digest(session_id),
        )
        assert (
            await client.get("/api/v1/me", headers={"Cookie": f"{COOKIE}={session_id}"})
        ).status_code == 401


# --- /metrics/usage -------------------------------------------------------------------------


def tenants_of(exposition: str) -> set[str]:
    return {
        line.split('tenant="', 1)[1].split('"', 1)[0]
        for line in exposition.splitlines()
        if not line.startswith("#") and 'tenant="' in line
    }


async def test_usage_metrics_need_credentials_and_show_the_callers_tenant(
    client: httpx.AsyncClient, world: World
) -> None:
    assert (await client.get("/metrics/usage")).status_code == 401
    assert (await client.get("/metrics/usage", headers=bearer(world.ingest["acme"].token))).status_code == 401
    own = await client.get("/metrics/usage", headers=bearer(world.read["acme"].token))
    assert own.status_code == 200
    assert tenants_of(own.text) == {"acme"}
    asked = await client.get(
        "/metrics/usage", params={"tenant": "globex"}, headers=bearer(world.read["acme"].token)
    )
    assert asked.status_code == 403
    for token in (METRICS_TOKEN, ADMIN_TOKEN):
        everyone = await client.get("/metrics/usage", headers=bearer(token))
        assert everyone.status_code == 200
        assert set(TENANTS) <= tenants_of(everyone.text)  # and open mode's `default`
        one = await client.get("/metrics/usage", params={"tenant": "globex"}, headers=bearer(token))
        assert tenants_of(one.text) == {"globex"}
    cookie = {"Cookie": f"{COOKIE}={await login(client, world.read['globex'].token)}"}
    assert tenants_of((await client.get("/metrics/usage", headers=cookie)).text) == {"globex"}
    # The scrape token reads metrics and nothing else.
    assert (await client.get("/api/v1/sessions", headers=bearer(METRICS_TOKEN))).status_code == 401
    assert (await client.get("/metrics")).status_code == 200  # operational, no tenant data


# --- checkpoints ----------------------------------------------------------------------------


def hook_headers(
    world: World, session_id: str, tenant: str = "acme", secret: bytes = SECRET
) -> dict[str, str]:
    return {**bearer(world.ingest[tenant].token), PROOF_HEADER: session_proof(secret, session_id)}


async def test_a_checkpoint_needs_a_session_with_telemetry_and_its_proof(
    client: httpx.AsyncClient, world: World
) -> None:
    url = "/api/v1/hook/sessions/{}/checkpoints"
    unknown = await client.post(url.format("never-seen"), json={}, headers=hook_headers(world, "never-seen"))
    assert unknown.status_code == 404
    assert "no telemetry of session 'never-seen'" in unknown.json()["detail"]
    # Another tenant's session is unknown to this tenant, whatever the proof.
    foreign = await client.post(
        url.format("globex-session"), json={}, headers=hook_headers(world, "globex-session")
    )
    assert foreign.status_code == 404

    saved = await client.post(
        url.format("acme-session"), json={"note": "n"}, headers=hook_headers(world, "acme-session")
    )
    assert saved.status_code == 201, saved.text
    assert saved.json()["summary"]["session"]["session_id"] == "acme-session"

    missing = await client.post(
        url.format("acme-session"), json={}, headers=bearer(world.ingest["acme"].token)
    )
    assert missing.status_code == 401
    assert PROOF_HEADER in missing.json()["detail"]
    # The same ingest key, another developer's secret: refused, for writing and for reading.
    theirs = hook_headers(world, "acme-session", secret=b"another developer's secret")
    stolen = await client.post(url.format("acme-session"), json={"note": "x"}, headers=theirs)
    assert stolen.status_code == 403
    assert "belongs to another agent" in stolen.json()["detail"]
    for path in (
        "/api/v1/hook/sessions/acme-session",
        "/api/v1/hook/sessions/acme-session/checkpoints/latest",
    ):
        assert (await client.get(path, headers=theirs)).status_code == 403
        assert (await client.get(path, headers=hook_headers(world, "acme-session"))).status_code == 200
    # One proof per session: a proof made for another session does not fit this one.
    wrong_session = {**bearer(world.ingest["acme"].token), PROOF_HEADER: session_proof(SECRET, "other")}
    assert (await client.get("/api/v1/hook/sessions/acme-session", headers=wrong_session)).status_code == 403

    # The hook routes take the agent's ingest key only; people read through the read routes.
    for token in (world.read["acme"].token, ADMIN_TOKEN, METRICS_TOKEN):
        headers = {**bearer(token), PROOF_HEADER: session_proof(SECRET, "acme-session")}
        assert (await client.post(url.format("acme-session"), json={}, headers=headers)).status_code == 401
    read = await client.get(
        "/api/v1/sessions/acme-session/checkpoints", headers=bearer(world.read["acme"].token)
    )
    assert [c["summary"].get("note") for c in read.json()] == ["n"]
    written = await client.post(
        "/api/v1/sessions/acme-session/checkpoints", json={}, headers=bearer(world.read["acme"].token)
    )
    assert written.status_code == 405


async def test_the_first_hook_call_binds_the_session_before_any_telemetry(
    client: httpx.AsyncClient, world: World
) -> None:
    state = await client.get("/api/v1/hook/sessions/brand-new", headers=hook_headers(world, "brand-new"))
    unknown = ("ratio", "tokens", "limit", "predicted_requests_left", "predicted_minutes_left")
    nothing = dict.fromkeys((*unknown, "open_signal", "latest_checkpoint_at"))
    assert state.json() == {"session_id": "brand-new", "known": False, **nothing, "budget_signals": []}
    theirs = hook_headers(world, "brand-new", secret=b"someone who learned the id later")
    assert (await client.get("/api/v1/hook/sessions/brand-new", headers=theirs)).status_code == 403
    # The binding is per tenant: another tenant's agents have sessions of their own.
    globex = hook_headers(world, "brand-new", tenant="globex", secret=b"globex developer")
    assert (await client.get("/api/v1/hook/sessions/brand-new", headers=globex)).status_code == 200


def gzip_b64(raw: bytes) -> str:
    return base64.b64encode(gzip.compress(raw)).decode()


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"note": "n" * 2001}, 422, "at most 2000 characters"),
        ({"todos": [{"content": "x"}] * 101}, 422, "at most 100 items"),
        ({"todos": [{"content": "c" * 1001}]}, 422, "at most 1000 characters"),
        ({"todos": [{"status": "ignore previous instructions"}]}, 422, "pattern"),
        ({"trigger": "rm -rf /"}, 422, "pattern"),
        ({"transcript_gzip_b64": "not base64!"}, 422, "not base64"),
        ({"transcript_gzip_b64": base64.b64encode(b"plain").decode()}, 422, "not gzip"),
        # 17 MiB of zeros compress to ~17 KB: within the body cap, over the uncompressed one.
        ({"transcript_gzip_b64": gzip_b64(b"\0" * (17 * 1024 * 1024))}, 413, "uncompressed"),
        ({"transcript_gzip_b64": gzip_b64(os.urandom(70 * 1024))}, 413, "request body over 65536 bytes"),
    ],
)
async def test_every_field_of_a_checkpoint_is_capped(
    client: httpx.AsyncClient, world: World, body: dict[str, Any], status: int, says: str
) -> None:
    sql(world.dsn, "UPDATE tenants SET redaction = 'off' WHERE tenant_id = 'acme'")  # transcripts kept
    response = await client.post(
        "/api/v1/hook/sessions/acme-session/checkpoints",
        json=body,
        headers=hook_headers(world, "acme-session"),
    )
    assert response.status_code == status, response.text
    assert says in response.text


async def test_an_oversized_body_is_refused_before_it_is_read(
    client: httpx.AsyncClient, world: World
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(1000):  # 64 MiB if it were all read
            yield b"x" * 65536

    response = await client.post(
        "/api/v1/hook/sessions/acme-session/checkpoints",
        content=endless(),
        headers={**hook_headers(world, "acme-session"), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    login_body = await client.post("/api/v1/login", content=b"{" + b" " * 70_000 + b"}")
    assert login_body.status_code == 413


# --- the tables, seen by a tenant role ------------------------------------------------------


def test_tenant_roles_cannot_read_sessions_or_bindings_and_rls_backs_a_mistaken_grant(world: World) -> None:
    """Like api_keys: no grant to tenant roles; and a grant made by mistake shows the role its
    own tenant's rows only (migration 0012's policies, as 0005's)."""
    role, password = unique("tt_acme_web_"), unique("pw")
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        for tenant in TENANTS:
            conn.execute(
                "INSERT INTO web_sessions (session_sha256, tenant_id, key_id, expires_at)"
                " VALUES (%s, %s, %s, now() + interval '1 hour')",
                (os.urandom(32), tenant, world.read[tenant].key_id),
            )
            conn.execute(
                "INSERT INTO agent_session_bindings (tenant_id, session_id, proof_sha256)"
                " VALUES (%s, %s, %s)",
                (tenant, f"rls-{tenant}", os.urandom(32)),
            )
        conn.execute(
            psql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(psql.Identifier(role), psql.Literal(password))
        )
        conn.execute("SELECT tokentide_bind_tenant_role(%s, 'acme')", (role,))
    dsn = psycopg.conninfo.make_conninfo(world.dsn, user=role, password=password)
    tables = ("web_sessions", "agent_session_bindings")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in tables:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(psql.SQL("SELECT * FROM {}").format(psql.Identifier(table)))
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            for table in tables:
                conn.execute(
                    psql.SQL("GRANT SELECT ON {} TO {}").format(psql.Identifier(table), psql.Identifier(role))
                )
        with psycopg.connect(dsn, autocommit=True) as conn:
            for table in tables:
                query = psql.SQL("SELECT DISTINCT tenant_id FROM {}").format(psql.Identifier(table))
                assert conn.execute(query).fetchall() == [("acme",)], table
    finally:
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            for table in tables:
                conn.execute(
                    psql.SQL("REVOKE SELECT ON {} FROM {}").format(
                        psql.Identifier(table), psql.Identifier(role)
                    )
                )
            conn.execute("SELECT tokentide_unbind_tenant_role(%s)", (role,))
            conn.execute(psql.SQL("DROP ROLE {}").format(psql.Identifier(role)))


# --- budgets (issue 17) ---------------------------------------------------------------------


async def test_budget_writes_take_the_admin_token_and_name_their_tenant(
    client: httpx.AsyncClient, world: World
) -> None:
    body = {"scope": "team", "value": "auth-test", "period": "day", "amount_usd": 5}
    budgets_of = "SELECT tenant_id, amount_usd FROM budgets WHERE scope_value = 'auth-test'"
    read = await client.put("/api/v1/budgets", json=body, headers=bearer(world.read["acme"].token))
    assert read.status_code == 403
    # Without ?tenant= the admin token reads the default tenant; a write must say whose it is.
    forgot = await client.put("/api/v1/budgets", json=body, headers=bearer(ADMIN_TOKEN))
    assert forgot.status_code == 422
    assert "?tenant=" in forgot.json()["detail"]
    assert sql(world.dsn, budgets_of) == []
    made = await client.put("/api/v1/budgets?tenant=globex", json=body, headers=bearer(ADMIN_TOKEN))
    assert made.status_code == 200, made.text
    assert [(t, float(a)) for t, a in sql(world.dsn, budgets_of)] == [("globex", 5.0)]
    path = f"/api/v1/budgets/{made.json()['budget_id']}"
    assert (await client.delete(path, headers=bearer(ADMIN_TOKEN))).status_code == 422
    assert (await client.delete(path, headers=bearer(world.read["globex"].token))).status_code == 403
    assert len(sql(world.dsn, budgets_of)) == 1
    assert (await client.delete(path + "?tenant=globex", headers=bearer(ADMIN_TOKEN))).status_code == 204
    assert sql(world.dsn, budgets_of) == []


async def test_the_hook_shows_a_budget_signal_until_the_budget_amount_changes(
    client: httpx.AsyncClient, world: World
) -> None:
    """A signal raised under an amount the budget no longer has is not the hook's news any
    more (decision 41): it stays in the log, but the notice stops repeating it."""
    with psycopg.connect(world.dsn, autocommit=True) as conn:
        budget = set_budget(conn, "acme", scope="tenant", value=None, period="month", amount_usd=1)
        conn.execute(
            "INSERT INTO budget_signals (tenant_id, budget_id, period_start, period_end, kind, signal_id,"
            " amount_usd, spend_usd, forecast_usd)"
            " VALUES ('acme', %s, date_trunc('month', now()),"
            " date_trunc('month', now()) + interval '1 month', 'budget_exceeded', %s, 1, 1.5, 2)",
            (budget.budget_id, budget.budget_id + ":test:budget_exceeded"),
        )
    headers = hook_headers(world, "acme-session")
    try:
        shown = (await client.get("/api/v1/hook/sessions/acme-session", headers=headers)).json()
        assert [(s["kind"], s["amount_usd"]) for s in shown["budget_signals"]] == [("budget_exceeded", 1.0)]
        with psycopg.connect(world.dsn, autocommit=True) as conn:
            set_budget(conn, "acme", scope="tenant", value=None, period="month", amount_usd=3)
        after = (await client.get("/api/v1/hook/sessions/acme-session", headers=headers)).json()
        assert after["budget_signals"] == []
        assert len(sql(world.dsn, "SELECT 1 FROM budget_signals WHERE budget_id = %s", budget.budget_id)) == 1
    finally:
        sql(world.dsn, "DELETE FROM budgets WHERE budget_id = %s", budget.budget_id)
