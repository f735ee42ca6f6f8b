"""A dashboard with tenants (not open mode): each read key sees its own tenant only, through the
API, the event stream and the web UI in a real headless Chromium; the web UI holds a server-side
session (never the key), signing out ends it, and an event stream ends with its credentials.

Two tenants' sessions are written to a fresh database; ``tokentide dashboard`` runs as a process
on it with an admin token; keys are made with the same functions as ``tokentide admin``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from playwright.async_api import async_playwright

from dashboard.web_sessions import COOKIE
from tests.e2e.test_web_ui import SCREENSHOTS, chromium_executable
from tests.support.services import admin_database_url, create_database, drop_database, free_port
from tokentide.admin import create_key, create_tenant, revoke_key

pytestmark = pytest.mark.e2e

ADMIN_TOKEN = "admin-token-for-tests-only"
TENANTS = ("acme", "globex")
_INSERT = """
INSERT INTO sessions (tenant_id, session_id, agent, user_id, started_at, last_seen_at,
                      input_tokens, cost_usd, api_requests, models, context_tokens,
                      context_window, context_model, state_version)
VALUES (%s, %s, 'claude_code', %s, now() - interval '10 minutes', now(), %s, %s, %s,
        ARRAY['claude-opus-4-8'], %s, 200000, 'claude-opus-4-8', %s)
ON CONFLICT (tenant_id, session_id) DO UPDATE SET
    last_seen_at = now(), context_tokens = EXCLUDED.context_tokens,
    state_version = EXCLUDED.state_version, updated_at = now()
"""


@dataclass
class Dashboard:
    url: str
    dsn: str
    read_keys: dict[str, str]
    ingest_key: str

    def upsert(self, tenant: str, session_id: str, context_tokens: int, version: int = 1) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                _INSERT, (tenant, session_id, f"{tenant}-dev", 1000, 0.5, 3, context_tokens, version)
            )


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    log = tmp_path_factory.mktemp("tenancy") / "dashboard.log"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant in TENANTS:
            create_tenant(conn, tenant)
        read_keys = {t: create_key(conn, t, "dashboard test", scope="read").token for t in TENANTS}
        ingest_key = create_key(conn, "acme", "an agent's key", scope="ingest").token
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    env.update(
        DATABASE_URL=dsn,
        TOKENTIDE_DASHBOARD_PORT=str(port),
        TOKENTIDE_DASHBOARD_ADMIN_TOKEN=ADMIN_TOKEN,
        TOKENTIDE_STREAM_POLL_S="0.2",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tokentide")), "dashboard"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        board = Dashboard(url, dsn, read_keys, ingest_key)
        for tenant in TENANTS:
            board.upsert(tenant, f"{tenant}-session", 50_000)
        yield board
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        drop_database(admin_url, dsn)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _ids(client: httpx.AsyncClient, url: str, **kwargs: object) -> set[str]:
    response = await client.get(url + "/api/v1/sessions", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    return {s["session_id"] for s in response.json()["sessions"]}


async def test_each_read_key_sees_its_own_tenant_only(dashboard: Dashboard) -> None:
    url = dashboard.url
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.get(url + "/api/v1/sessions")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        for tenant, other in (TENANTS, TENANTS[::-1]):
            key = dashboard.read_keys[tenant]
            assert await _ids(client, url, headers=auth(key)) == {f"{tenant}-session"}
            foreign = await client.get(f"{url}/api/v1/sessions/{other}-session", headers=auth(key))
            assert foreign.status_code == 404
            asked = await client.get(url + "/api/v1/sessions", params={"tenant": other}, headers=auth(key))
            assert asked.status_code == 403
            usage = await client.get(url + "/api/v1/usage?group_by=model", headers=auth(key))
            assert usage.status_code == 200

        # An agent's ingest key cannot read; a wrong secret cannot either.
        assert (
            await client.get(url + "/api/v1/sessions", headers=auth(dashboard.ingest_key))
        ).status_code == 401
        forged = dashboard.read_keys["acme"][:-4] + "AAAA"
        assert (await client.get(url + "/api/v1/sessions", headers=auth(forged))).status_code == 401

        # The admin token reads whichever tenant it names, with a Bearer header only: it never
        # signs in, and in a cookie it is nobody.
        for tenant in TENANTS:
            got = await _ids(client, url, params={"tenant": tenant}, headers=auth(ADMIN_TOKEN))
            assert got == {f"{tenant}-session"}
        admin_login = await client.post(url + "/api/v1/login", json={"key": ADMIN_TOKEN})
        assert admin_login.status_code == 401
        assert "set-cookie" not in admin_login.headers
        as_cookie = await client.get(url + "/api/v1/sessions", headers={"Cookie": f"{COOKIE}={ADMIN_TOKEN}"})
        assert as_cookie.status_code == 401

        # Nothing of any tenant without credentials, usage metrics included.
        assert (await client.get(url + "/metrics/usage")).status_code == 401


async def test_a_revoked_key_is_refused(dashboard: Dashboard) -> None:
    with psycopg.connect(dashboard.dsn, autocommit=True) as conn:
        key = create_key(conn, "acme", "to be revoked", scope="read")
        revoke_key(conn, key.key_id)
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.get(dashboard.url + "/api/v1/sessions", headers=auth(key.token))
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]


async def _stream_events(
    client: httpx.AsyncClient, url: str, key: str, act: asyncio.Future[None], seconds: float
) -> AsyncIterator[dict[str, object]]:
    async with client.stream("GET", url + "/api/v1/stream", headers=auth(key)) as response:
        assert response.status_code == 200
        act.set_result(None)
        lines = response.aiter_lines()
        deadline = time.monotonic() + seconds
        event: dict[str, object] = {}
        while time.monotonic() < deadline:
            try:
                line = await asyncio.wait_for(anext(lines), timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                return
            if not line:
                if "data" in event:
                    yield event
                event = {}
            elif line.startswith("data: "):
                event["data"] = json.loads(line.removeprefix("data: "))
            elif line.startswith("event: "):
                event["event"] = line.removeprefix("event: ")


async def test_the_event_stream_carries_the_callers_tenant_only(dashboard: Dashboard) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        seen: list[str] = []

        async def listen() -> None:
            async for event in _stream_events(client, dashboard.url, dashboard.read_keys["acme"], started, 8):
                data = event["data"]
                assert isinstance(data, dict)
                seen.append(str(data["session_id"]))
                if data["session_id"] == "acme-live":
                    return

        listener = asyncio.create_task(listen())
        await started
        await asyncio.to_thread(dashboard.upsert, "globex", "globex-live", 60_000)
        await asyncio.to_thread(dashboard.upsert, "acme", "acme-live", 60_000)
        await listener
    assert "acme-live" in seen
    assert not [s for s in seen if s.startswith("globex")], seen


async def _stream_ends(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], end: Callable[[], None]
) -> None:
    """Open the event stream, call ``end()`` (sign out, revoke...), and read until the server
    closes the stream. Bounded: the server checks the caller's credentials every 10 s, and a
    key's verdict is cached 10 s; a stream still open after 60 s fails the test."""
    async with client.stream("GET", url + "/api/v1/stream", headers=headers) as response:
        assert response.status_code == 200
        await asyncio.to_thread(end)
        async with asyncio.timeout(60):
            async for _ in response.aiter_lines():
                pass


async def test_the_event_stream_ends_when_its_session_is_signed_out_or_its_key_revoked(
    dashboard: Dashboard,
) -> None:
    url = dashboard.url
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        login = await client.post(url + "/api/v1/login", json={"key": dashboard.read_keys["acme"]})
        cookie = {"Cookie": f"{COOKIE}={login.cookies[COOKIE]}"}
        client.cookies.clear()

        def sign_out() -> None:
            assert httpx.post(url + "/api/v1/logout", headers=cookie, timeout=10).status_code == 200

        await _stream_ends(client, url, cookie, sign_out)
        assert (await client.get(url + "/api/v1/stream", headers=cookie)).status_code == 401

        with psycopg.connect(dashboard.dsn, autocommit=True) as conn:
            key = create_key(conn, "acme", "revoked while streaming", scope="read")

        def revoke() -> None:
            with psycopg.connect(dashboard.dsn, autocommit=True) as conn:
                revoke_key(conn, key.key_id)

        await _stream_ends(client, url, auth(key.token), revoke)


def add_deliveries(dsn: str) -> None:
    """One webhook per tenant, with a delivered and a dead delivery each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tenant in TENANTS:
            conn.execute(
                "INSERT INTO webhooks (tenant_id, webhook_id, url, secret) VALUES (%s, %s, %s, 's')"
                " ON CONFLICT DO NOTHING",
                (tenant, f"wh-{tenant}", f"https://hooks.example/{tenant}"),
            )
            for status, http in (("delivered", 200), ("dead", 500)):
                conn.execute(
                    "INSERT INTO webhook_deliveries (tenant_id, webhook_id, signal_id, session_id, kind,"
                    " payload, status, attempts, last_http_status) VALUES (%s, %s, %s, %s, 'context_warning',"
                    " '{}', %s, 1, %s) ON CONFLICT DO NOTHING",
                    (tenant, f"wh-{tenant}", f"sig-{status}", f"{tenant}-session", status, http),
                )


async def test_the_web_ui_asks_for_a_key_and_shows_that_tenants_sessions_only(dashboard: Dashboard) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(add_deliveries, dashboard.dsn)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_executable(), headless=True)
        try:
            for tenant, other in (TENANTS, TENANTS[::-1]):
                context = await browser.new_context(viewport={"width": 1200, "height": 700})
                page = await context.new_page()
                await page.goto(dashboard.url + "/")
                await page.wait_for_selector("#login input#key", timeout=15_000)
                if tenant == TENANTS[0]:
                    await page.screenshot(path=SCREENSHOTS / "login.png")
                if tenant == TENANTS[0]:  # the admin token is refused, and the form says why
                    await page.fill("#key", ADMIN_TOKEN)
                    await page.click("#login button")
                    await page.wait_for_selector(
                        "#login-message:has-text('does not sign in')", timeout=15_000
                    )
                    assert await context.cookies() == []
                await page.fill("#key", dashboard.read_keys[tenant])
                await page.click("#login button")
                await page.wait_for_selector(
                    f'article.card[data-session-id="{tenant}-session"]', timeout=15_000
                )
                # The browser holds a session id, never the key: HttpOnly, SameSite=Strict,
                # not Secure over plain http.
                (cookie,) = await context.cookies()
                assert cookie["name"] == COOKIE
                assert cookie["value"].startswith("tts_")
                assert dashboard.read_keys[tenant] not in cookie["value"]
                assert (cookie["httpOnly"], cookie["sameSite"], cookie["secure"]) == (True, "Strict", False)
                assert await page.evaluate("document.cookie") == ""  # no script reads it
                await page.wait_for_selector(f'#account[data-via="web_session"]:has-text("{tenant}")')
                cards = await page.eval_on_selector_all(
                    "article.card", "cards => cards.map(c => c.dataset.sessionId)"
                )
                assert cards, "no session card"
                assert all(c.startswith(tenant) for c in cards), cards
                assert not [c for c in cards if c.startswith(other)]

                # The webhook delivery log: this tenant's deliveries, how each went.
                await page.goto(dashboard.url + "/webhooks")
                await page.wait_for_selector("#deliveries tr.delivery", timeout=15_000)
                rows = await page.eval_on_selector_all(
                    "#deliveries tr.delivery",
                    "rows => rows.map(r => [r.dataset.sessionId, r.dataset.status])",
                )
                assert sorted(rows) == [[f"{tenant}-session", "dead"], [f"{tenant}-session", "delivered"]]
                if tenant == TENANTS[0]:
                    await page.screenshot(path=SCREENSHOTS / "webhooks.png", full_page=True)

                # Signing out ends the session on the server: the login form comes back, and a
                # copy of the cookie taken before is refused.
                await page.click("#logout")
                await page.wait_for_selector("#login input#key", timeout=15_000)
                assert await context.cookies() == []
                async with httpx.AsyncClient(timeout=10) as client:
                    copied = {"Cookie": f"{COOKIE}={cookie['value']}"}
                    assert (
                        await client.get(dashboard.url + "/api/v1/sessions", headers=copied)
                    ).status_code == 401
                await context.close()
        finally:
            await browser.close()
