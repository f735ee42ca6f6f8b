"""Webhook delivery on the real Kafka and PostgreSQL, to HTTP receivers inside the test.

Signals are produced to a ``session.signals`` topic of the test's own; the notifier (run in
process, as ``tokentide notify`` would) records and delivers them to aiohttp receivers on
loopback ports, which verify the signature the way the docs tell users to. Back-off is tiny
so that retries and dead letters take milliseconds; every wait is a bounded loop on the
delivery log, never a timing assertion.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard.webhooks import add_webhook_routes
from notify.app import create_app
from notify.core import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from notify.service import Notifier, NotifyMetrics
from tests.support.services import unique, wait_caught_up
from tokentide import admin
from tokentide.kafka import TopicSpec, ensure_topics
from tokentide.records import SessionSignal, SignalBatch, SignalKind
from tokentide.settings import NotifySettings
from tokentide.topics import Topics, session_key

pytestmark = pytest.mark.integration

SECRET = "whsec_integration-test-secret-0123"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP endpoint on a free loopback port; ``answer(n)`` is the status of the n-th POST
    (1-based). Every request is kept, its signature checked with ``secret``."""

    secret: str = SECRET
    answer: Callable[[int], int] = lambda _: 200
    slack: bool = False
    requests: list[Received] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body))
        if not verify_signature(
            self.secret,
            body,
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            time.time(),
        ):
            return web.Response(status=401, text="bad signature")
        if self.slack:  # what Slack's incoming webhooks do: a `text` string, or 400 no_text
            text = json.loads(body).get("text")
            return (
                web.Response(text="ok")
                if isinstance(text, str) and text
                else web.Response(status=400, text="no_text")
            )
        return web.Response(status=self.answer(len(self.requests)), text="thanks")

    def verified(self) -> list[Received]:
        return [
            r
            for r in self.requests
            if verify_signature(
                self.secret,
                r.body,
                r.headers.get(TIMESTAMP_HEADER),
                r.headers.get(SIGNATURE_HEADER),
                time.time(),
            )
        ]


@asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    receiver.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def topics(bootstrap: str, prefix: str) -> Topics:
    """The test's own ``session.signals`` (two partitions), created up front."""
    topics = Topics(prefix)
    await ensure_topics(bootstrap, [TopicSpec(topics.session_signals, 2)])
    return topics


def settings_for(bootstrap: str, database: str, topics: Topics, **changes: Any) -> NotifySettings:
    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "database_url": database,
        "topic_prefix": topics.prefix,
        "notify_group_id": unique("notify-"),
        "notify_timeout_s": 5,
        "notify_max_attempts": 4,
        "notify_backoff_base_s": 0.05,
        "notify_backoff_factor": 1.5,
        "notify_poll_s": 0.05,
    }
    return NotifySettings(**(values | changes))


def add_webhook(database: str, tenant: str, url: str, **options: Any) -> str:
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING", (tenant,))
        info, _ = admin.add_webhook(conn, tenant, url, **({"secret": SECRET} | options))
    return info.webhook_id


def make_signal(
    tenant: str = "acme", kind: SignalKind = SignalKind.CONTEXT_WARNING, **changes: Any
) -> SessionSignal:
    fields: dict[str, Any] = {
        "tenant": tenant,
        "session_id": unique("session-"),
        "signal_id": unique("signal-"),
        "kind": kind,
        "time_ns": time.time_ns(),
        "ratio": 0.83,
        "tokens": 166_000,
        "window": 200_000,
        "requests_left": 6.0,
        "minutes_left": 14.0,
        "message": "context 83% full",
    }
    return SessionSignal(**(fields | changes))


async def produce(bootstrap: str, topics: Topics, *signals: SessionSignal) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for signal in signals:
            await producer.send_and_wait(
                topics.session_signals,
                SignalBatch(signals=[signal]).to_bytes(),
                key=session_key(signal.tenant, signal.session_id).encode(),
            )
    finally:
        await producer.stop()


def deliveries(database: str) -> list[dict[str, Any]]:
    with psycopg.connect(database, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM webhook_deliveries ORDER BY created_at, webhook_id").fetchall()


async def until(what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.05)


def settled(database: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        rows = deliveries(database)
        return len(rows) >= count and all(r["status"] in ("delivered", "dead") for r in rows)

    return check


@asynccontextmanager
async def running(
    settings: NotifySettings, registry: CollectorRegistry | None = None
) -> AsyncIterator[Notifier]:
    notifier = Notifier(settings, NotifyMetrics(registry or CollectorRegistry()))
    await notifier.start()
    try:
        yield notifier
    finally:
        await notifier.stop()


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    return registry.get_sample_value(name, labels or {}) or 0.0


async def test_a_signed_payload_reaches_the_receiver_through_the_service(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """(a) The service as deployed: /readyz, the signed POST, its payload, /metrics."""
    async with serving(Receiver()) as receiver:
        webhook = add_webhook(database, "acme", receiver.url)
        registry = CollectorRegistry()
        app = create_app(settings_for(bootstrap, database, topics), registry)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://notify") as client,
        ):
            assert (await client.get("/healthz")).status_code == 200
            await until_ready(client)
            signal = make_signal()
            await produce(bootstrap, topics, signal)
            await until("delivered", settled(database, 1))
            metrics = (await client.get("/metrics")).text
        assert 'tokentide_notify_deliveries_total{status="delivered"} 1.0' in metrics
        assert "tokentide_notify_attempt_seconds_count 1.0" in metrics

    [request] = receiver.requests
    assert receiver.verified() == [request]
    assert request.headers[DELIVERY_HEADER] == f"{webhook}:{signal.signal_id}"
    assert request.headers["Content-Type"] == "application/json"
    payload = json.loads(request.body)
    assert {k: payload[k] for k in ("tenant", "session_id", "signal_id", "kind", "tokens", "limit")} == {
        "tenant": "acme",
        "session_id": signal.session_id,
        "signal_id": signal.signal_id,
        "kind": "context_warning",
        "tokens": 166_000,
        "limit": 200_000,
    }
    assert payload["ratio"] == 0.83
    assert payload["requests_left"] == 6.0
    assert payload["minutes_left"] == 14.0
    assert payload["message"] == "context 83% full"
    assert payload["at"].endswith("Z")
    [row] = deliveries(database)
    assert (row["status"], row["attempts"], row["last_http_status"]) == ("delivered", 1, 200)
    assert (row["tenant_id"], row["webhook_id"], row["kind"]) == ("acme", webhook, "context_warning")
    assert (row["signal_id"], row["session_id"]) == (signal.signal_id, signal.session_id)
    assert row["delivered_at"] is not None


async def until_ready(client: httpx.AsyncClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (response := await client.get("/readyz")).status_code != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"notify not ready within {timeout_s}s: {response.json()}")
        await asyncio.sleep(0.1)


async def test_failed_attempts_are_retried_until_delivered(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """(b) 500 twice, then 200: delivered at the third attempt, every attempt signed alike."""
    registry = CollectorRegistry()
    async with serving(Receiver(answer=lambda n: 500 if n <= 2 else 200)) as receiver:
        webhook = add_webhook(database, "acme", receiver.url)
        async with running(settings_for(bootstrap, database, topics), registry):
            signal = make_signal()
            await produce(bootstrap, topics, signal)
            await until("delivered after retries", settled(database, 1))

    [row] = deliveries(database)
    assert (row["status"], row["attempts"], row["last_http_status"]) == ("delivered", 3, 200)
    assert len(receiver.requests) == 3
    assert receiver.verified() == receiver.requests
    assert {r.headers[DELIVERY_HEADER] for r in receiver.requests} == {f"{webhook}:{signal.signal_id}"}
    assert sample(registry, "tokentide_notify_deliveries_total", {"status": "failed"}) == 2
    assert sample(registry, "tokentide_notify_deliveries_total", {"status": "delivered"}) == 1
    assert sample(registry, "tokentide_notify_attempts_total", {"result": "5xx"}) == 2


async def test_a_retry_pending_at_a_restart_is_resumed_from_the_database(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """The first notifier fails once and stops before the retry is due; the next one (same
    group, so it reads no signal again) finds the retry in the delivery log."""
    settings = settings_for(bootstrap, database, topics, notify_backoff_base_s=2.0)
    async with serving(Receiver(answer=lambda n: 500 if n == 1 else 200)) as receiver:
        add_webhook(database, "acme", receiver.url)
        async with running(settings):
            await produce(bootstrap, topics, make_signal())
            await until(
                "first attempt failed", lambda: [r["status"] for r in deliveries(database)] == ["failed"]
            )
            await wait_caught_up(bootstrap, settings.notify_group_id, [topics.session_signals])
        async with running(settings):
            await until("delivered by the second notifier", settled(database, 1))

    [row] = deliveries(database)
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    assert len(receiver.requests) == 2


async def test_a_delivery_that_always_fails_is_dead_after_the_last_attempt(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """(c) 500 every time: dead after notify_max_attempts (4), counted, never tried again."""
    registry = CollectorRegistry()
    async with serving(Receiver(answer=lambda _: 500)) as receiver:
        add_webhook(database, "acme", receiver.url)
        async with running(settings_for(bootstrap, database, topics), registry):
            await produce(bootstrap, topics, make_signal())
            await until("dead", settled(database, 1))
            # A few more delivery rounds: a dead row is not claimed again.
            rounds = sample(registry, "tokentide_notify_signals_total")
            await produce(bootstrap, topics, make_signal(tenant="nobody"))
            await until(
                "the next signal consumed",
                lambda: sample(registry, "tokentide_notify_signals_total") > rounds,
            )

    [row] = deliveries(database)
    assert (row["status"], row["attempts"], row["last_http_status"]) == ("dead", 4, 500)
    assert row["last_error"].startswith("HTTP 500")
    assert row["next_attempt_at"] is None
    assert len(receiver.requests) == 4
    assert sample(registry, "tokentide_notify_deliveries_total", {"status": "dead"}) == 1
    assert sample(registry, "tokentide_notify_deliveries_total", {"status": "failed"}) == 3


async def test_a_redelivered_signal_is_not_posted_twice(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """(d) The same signal twice on the topic, then the whole topic read again by a new
    consumer group: one POST. Kind filters and tenants narrow who gets it."""
    async with (
        serving(Receiver()) as receiver,
        serving(Receiver()) as critical_only,
        serving(Receiver()) as other_tenant,
    ):
        add_webhook(database, "acme", receiver.url)
        add_webhook(database, "acme", critical_only.url, kinds=["context_critical"])
        add_webhook(database, "globex", other_tenant.url)
        signal = make_signal()
        await produce(bootstrap, topics, signal, signal)
        first = settings_for(bootstrap, database, topics)
        async with running(first):
            await until("delivered", settled(database, 1))
            await wait_caught_up(bootstrap, first.notify_group_id, [topics.session_signals])
        again = settings_for(bootstrap, database, topics)  # a new group: reads it all again
        async with running(again):
            await wait_caught_up(bootstrap, again.notify_group_id, [topics.session_signals])

    assert len(receiver.requests) == 1
    assert critical_only.requests == []
    assert other_tenant.requests == []
    [row] = deliveries(database)
    assert (row["status"], row["attempts"]) == ("delivered", 1)


async def test_a_slack_style_receiver_gets_the_text_field(
    bootstrap: str, database: str, topics: Topics
) -> None:
    """(e) An endpoint that, like Slack's incoming webhooks, wants a non-empty ``text``."""
    async with serving(Receiver(slack=True)) as slack:
        add_webhook(database, "acme", slack.url)
        signal = make_signal(kind=SignalKind.CONTEXT_CRITICAL, ratio=0.96, tokens=192_000)
        async with running(settings_for(bootstrap, database, topics)):
            await produce(bootstrap, topics, signal)
            await until("delivered", settled(database, 1))

    [row] = deliveries(database)
    assert (row["status"], row["last_http_status"]) == ("delivered", 200)
    text = json.loads(slack.requests[0].body)["text"]
    assert text.startswith(f"[acme] context critical: session {signal.session_id} context 96% full")


async def test_the_admin_commands_add_list_test_and_remove(
    database: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``tokentide admin webhook ...`` as an operator runs it (in a thread: the receiver runs
    on this event loop)."""
    from tokentide import cli  # noqa: PLC0415

    monkeypatch.setenv("DATABASE_URL", database)
    with psycopg.connect(database) as conn:
        conn.execute("INSERT INTO tenants (tenant_id) VALUES ('acme')")

    async def tokentide(*argv: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(cli.main, ["admin", "webhook", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    async with serving(Receiver(secret="")) as receiver:
        code, secret, err = await tokentide("add", "--tenant", "acme", "--url", receiver.url)
        assert code == 0, err
        receiver.secret = secret.strip()
        assert receiver.secret.startswith("whsec_")
        code, listing, _ = await tokentide("list", "--tenant", "acme")
        [header, line] = listing.splitlines()
        assert header.split() == ["WEBHOOK_ID", "TENANT", "KINDS", "ENABLED", "CREATED", "URL"]
        webhook = line.split()[0]
        assert line.split()[1:4] == ["acme", "all", "yes"]
        assert receiver.secret not in listing
        code, out, err = await tokentide("test", webhook)
        assert (code, out.strip()) == (0, f"webhook {webhook} at {receiver.url} answered HTTP 200"), err
        assert len(receiver.verified()) == 1
        receiver.secret = "whsec_not-the-right-one-000000"  # the receiver now refuses: 401
        code, _, err = await tokentide("test", webhook)
        assert code == 1
        assert "answered HTTP 401" in err
        code, _, err = await tokentide("add", "--tenant", "acme", "--url", "ftp://example.com/x")
        assert code == 1
        assert "invalid webhook URL" in err
        code, out, _ = await tokentide("remove", webhook)
        assert code == 0
        code, listing, _ = await tokentide("list")
        assert listing.splitlines()[1:] == []


async def test_the_dashboard_lists_the_tenants_deliveries_newest_first(database: str) -> None:
    with psycopg.connect(database) as conn:
        for tenant in ("acme", "globex"):
            conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s)", (tenant,))
            info, _ = admin.add_webhook(conn, tenant, f"https://hooks.example/{tenant}")
            for n, status in enumerate(("delivered", "dead", "failed")):
                conn.execute(
                    "INSERT INTO webhook_deliveries (tenant_id, webhook_id, signal_id, session_id, kind,"
                    " payload, status, attempts, created_at, next_attempt_at)"
                    " VALUES (%s, %s, %s, 's-1', 'context_warning', '{}', %s, %s,"
                    " now() - make_interval(mins => %s), now())",
                    (tenant, info.webhook_id, f"g-{n}", status, n + 1, 10 - n),
                )
    pool: AsyncConnectionPool[psycopg.AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
        database, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open()
    app = FastAPI()
    add_webhook_routes(app, pool, lambda: "acme")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://dash"
        ) as client:
            page = (await client.get("/api/v1/webhooks/deliveries")).json()
            assert [d["signal_id"] for d in page["deliveries"]] == ["g-2", "g-1", "g-0"]
            assert {d["url"] for d in page["deliveries"]} == {"https://hooks.example/acme"}
            assert "secret" not in json.dumps(page)
            assert [d["next_attempt_at"] is None for d in page["deliveries"]] == [False, True, True]
            second = (
                await client.get("/api/v1/webhooks/deliveries", params={"limit": 1, "offset": 1})
            ).json()
            assert [d["signal_id"] for d in second["deliveries"]] == ["g-1"]
            dead = (await client.get("/api/v1/webhooks/deliveries", params={"status": "dead"})).json()
            assert [d["attempts"] for d in dead["deliveries"]] == [2]
            assert (
                await client.get("/api/v1/webhooks/deliveries", params={"status": "nope"})
            ).status_code == 422
    finally:
        await pool.close()


def test_tenant_roles_read_their_own_deliveries_and_no_webhook_secret(database: str) -> None:
    password = unique("pw")
    role = unique("tt_acme_")
    with psycopg.connect(database, autocommit=True) as conn:
        for tenant in ("acme", "globex"):
            conn.execute("INSERT INTO tenants (tenant_id) VALUES (%s)", (tenant,))
            info, _ = admin.add_webhook(conn, tenant, f"https://hooks.example/{tenant}")
            conn.execute(
                "INSERT INTO webhook_deliveries (tenant_id, webhook_id, signal_id, session_id, kind, payload)"
                " VALUES (%s, %s, 'g-1', 's-1', 'context_warning', '{}')",
                (tenant, info.webhook_id),
            )
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
        conn.execute("SELECT tokentide_bind_tenant_role(%s, 'acme')", (role,))
    try:
        dsn = psycopg.conninfo.make_conninfo(database, user=role, password=password)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT tenant_id FROM webhook_deliveries").fetchall()
            assert rows == [("acme",)]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT secret FROM webhooks")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE webhook_deliveries SET status = 'dead'")
    finally:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("SELECT tokentide_unbind_tenant_role(%s)", (role,))
            conn.execute(sql.SQL("REVOKE ALL ON webhook_deliveries FROM {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
