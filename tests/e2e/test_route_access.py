"""Every HTTP route of every service, with who may use it, against the real processes in closed
mode (``tests/support/closed_pipeline.py``: ingest, streams, sink, notify and dashboard; two
tenants, each with a read key and the fleet's ingest key).

:data:`ROUTES` is the table. Its rows are checked against the route tables of the services'
own FastAPI apps (``create_app``, built here without starting them), so a route added without
a row fails :func:`test_the_table_lists_every_route_of_every_service`. Then each route is called
with each credential: the ones listed must be let in (and, on the dashboard's data routes, see
tenant ``acme``'s data only); every other one must be refused with 401 or 403.

Every probe asks for tenant ``acme``'s data (``?tenant=acme``, its session in path parameters,
``x-tokentide-tenant: acme`` on ingest), so "another tenant's read key" is globex's key asking
for acme's data.
"""

from __future__ import annotations

import asyncio
import enum
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount, Route

import dashboard.app
import ingest.app
import notify.app
import sinks.app
import streams.app
from dashboard.checkpoints import PROOF_HEADER
from dashboard.web_sessions import COOKIE
from tests.support.captures import claude_logs_with_context
from tests.support.closed_pipeline import ADMIN_TOKEN, METRICS_TOKEN, REDACTION_KEY, ClosedPipeline
from tests.support.services import (
    admin_database_url,
    create_database,
    drop_database,
    free_port,
    kafka_bootstrap,
    missing_tool,
)
from tokentide import admin
from tokentide.hook import session_proof
from tokentide.settings import (
    DashboardSettings,
    IngestSettings,
    NotifySettings,
    SinkSettings,
    StreamsSettings,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]

SESSION = "acme-session"
OTHER_SESSION = "globex-session"
#: The acme developer's hook secret (the proof of acme-session is made from it).
SECRET = b"the acme developer's own hook secret"


class Cred(enum.Enum):
    NONE = "no credentials"
    INGEST = "acme's ingest key"
    INGEST_OTHER = "globex's ingest key"
    READ = "acme's read key"
    READ_OTHER = "globex's read key"
    ADMIN = "the admin token"
    METRICS = "the scrape token"
    COOKIE = "an acme web session"


ALL = frozenset(Cred)
#: Who reads a tenant's data through the API: its read key, its web session, the admin token.
READERS = frozenset({Cred.READ, Cred.ADMIN, Cred.COOKIE})


@dataclass(frozen=True)
class Row:
    allowed: frozenset[Cred]
    #: What an allowed caller's answer must contain (tenant acme's data) and must not.
    shows: str | None = None
    hides: str | None = None
    #: How a caller not in ``allowed`` is refused.
    refused_with: tuple[int, ...] = (401, 403)


HEALTH = {("GET", p): Row(ALL) for p in ("/healthz", "/readyz", "/metrics", "/openapi.json")}
#: Ingest serves no API description (the fuzz suite's finding: nothing there for anyone).
INGEST_HEALTH = {k: v for k, v in HEALTH.items() if k[1] != "/openapi.json"}
UNIT = "{session_id}"
PROJECT_UNIT = "{project:path}"
#: The projects the two tenants' sessions belong to (their hooks report them).
PROJECT, OTHER_PROJECT = "acme-app", "globex-app"

#: (service, method, path) -> who may call it.
ROUTES: dict[tuple[str, str, str], Row] = {
    **{("ingest", "POST", f"/v1/{s}"): Row(frozenset({Cred.INGEST})) for s in ("logs", "metrics")},
    # Traces are refused by default, before authentication, as the Collector refuses a signal
    # without a pipeline (decision 28): nobody is let in.
    ("ingest", "POST", "/v1/traces"): Row(frozenset(), refused_with=(404,)),
    **{("ingest", *k): v for k, v in INGEST_HEALTH.items()},
    **{(service, *k): v for service in ("streams", "sink", "notify") for k, v in HEALTH.items()},
    **{("dashboard", *k): v for k, v in HEALTH.items()},
    # The web UI's pages and files, the API's description: no data in them.
    **{
        ("dashboard", "GET", p): Row(ALL)
        for p in (
            "/",
            f"/sessions/{UNIT}",
            "/usage",
            "/webhooks",
            "/budgets",
            "/recommendations",
            "/compare",
            "/projects",
            f"/projects/{PROJECT_UNIT}",
            "/static",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
        )
    },
    # Login checks the key in its body: any tenant's read key signs in (to its own tenant).
    ("dashboard", "POST", "/api/v1/login"): Row(frozenset({Cred.READ, Cred.READ_OTHER})),
    ("dashboard", "POST", "/api/v1/logout"): Row(ALL),
    ("dashboard", "GET", "/api/v1/me"): Row(READERS, shows='"acme"'),
    ("dashboard", "GET", "/api/v1/sessions"): Row(READERS, shows=SESSION, hides=OTHER_SESSION),
    ("dashboard", "GET", f"/api/v1/sessions/{UNIT}"): Row(READERS, shows=SESSION),
    ("dashboard", "GET", f"/api/v1/sessions/{UNIT}/timeline"): Row(READERS, shows=SESSION),
    ("dashboard", "GET", f"/api/v1/sessions/{UNIT}/checkpoints"): Row(READERS, shows=SESSION),
    ("dashboard", "GET", f"/api/v1/sessions/{UNIT}/checkpoints/latest"): Row(READERS, shows=SESSION),
    ("dashboard", "GET", "/api/v1/usage"): Row(READERS),
    ("dashboard", "GET", "/api/v1/stream"): Row(READERS),
    ("dashboard", "GET", "/api/v1/webhooks/deliveries"): Row(READERS),
    # Budgets: read by readers, set and deleted with the admin token only (issue 17).
    ("dashboard", "GET", "/api/v1/budgets"): Row(READERS, shows="bg_", hides="globex-team"),
    ("dashboard", "PUT", "/api/v1/budgets"): Row(frozenset({Cred.ADMIN})),
    ("dashboard", "DELETE", "/api/v1/budgets/{budget_id}"): Row(frozenset({Cred.ADMIN})),
    ("dashboard", "GET", "/api/v1/recommendations"): Row(READERS, shows='"recommendations"'),
    ("dashboard", "GET", "/api/v1/compare"): Row(READERS, shows='"groups"'),
    ("dashboard", "GET", "/api/v1/projects"): Row(READERS, shows=PROJECT, hides=OTHER_PROJECT),
    ("dashboard", "GET", f"/api/v1/projects/{PROJECT_UNIT}"): Row(
        READERS, shows=SESSION, hides=OTHER_SESSION
    ),
    ("dashboard", "GET", "/metrics/usage"): Row(
        READERS | {Cred.METRICS}, shows='tenant="acme"', hides='tenant="globex"'
    ),
    # The agent's own routes: the fleet's ingest key, with the session's proof.
    ("dashboard", "GET", f"/api/v1/hook/sessions/{UNIT}"): Row(frozenset({Cred.INGEST}), shows=SESSION),
    ("dashboard", "POST", f"/api/v1/hook/sessions/{UNIT}/checkpoints"): Row(
        frozenset({Cred.INGEST}), shows=SESSION
    ),
    ("dashboard", "GET", f"/api/v1/hook/sessions/{UNIT}/checkpoints/latest"): Row(
        frozenset({Cred.INGEST}), shows=SESSION
    ),
    ("dashboard", "PUT", f"/api/v1/hook/sessions/{UNIT}/plan"): Row(frozenset({Cred.INGEST}), shows=SESSION),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of ``app`` (HEAD, which Starlette adds to GET, left out)."""

    def pairs(route: BaseRoute) -> Iterator[tuple[str, str]]:
        if isinstance(route, Mount):
            yield "GET", route.path
        elif isinstance(route, Route):
            yield from ((m, route.path) for m in route.methods or () if m != "HEAD")
        else:
            raise AssertionError(f"a route of a kind this table does not know: {route!r}")

    return {pair for route in app.routes for pair in pairs(route)}


def service_apps() -> dict[str, FastAPI]:
    """Each service's app, built as its process builds it (closed mode), never started."""
    dsn = "postgresql://u:p@127.0.0.1:1/never-connected"
    closed: dict[str, Any] = {"open_mode": False, "_env_file": None}
    return {
        "ingest": ingest.app.create_app(
            IngestSettings(database_url=dsn, redaction_key=REDACTION_KEY, **closed)
        ),
        "streams": streams.app.create_app(StreamsSettings(**closed)),
        "sink": sinks.app.create_app(SinkSettings(database_url=dsn, **closed)),
        "notify": notify.app.create_app(NotifySettings(database_url=dsn, **closed)),
        "dashboard": dashboard.app.create_app(
            DashboardSettings(
                database_url=dsn, dashboard_admin_token=ADMIN_TOKEN, metrics_token=METRICS_TOKEN, **closed
            )
        ),
    }


def test_the_table_lists_every_route_of_every_service() -> None:
    for service, app in service_apps().items():
        listed = {(m, p) for s, m, p in ROUTES if s == service}
        served = app_routes(app)
        assert served - listed == set(), f"{service}: routes without a row in ROUTES"
        assert listed - served == set(), f"{service}: rows of routes that no longer exist"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClosedPipeline]:
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    pipe = ClosedPipeline(kafka_bootstrap(), dsn, tmp_path_factory.mktemp("closed"))
    try:
        pipe.add_tenants()
        pipe.start()
        yield pipe
    finally:
        pipe.stop()
        pipe.cleanup()
        drop_database(admin_url, dsn)


@dataclass
class Credentials:
    tokens: dict[Cred, str]
    cookie: str
    #: A budget of acme's, for the DELETE probe (the admin's deletes it).
    budget_id: str = ""


async def telemetry(client: httpx.AsyncClient, stack: ClosedPipeline, tenant: str, session_id: str) -> None:
    """One Claude Code logs export of ``session_id`` through ingest, the stream stage and the
    sink, with the tenant's ingest key; returns once the dashboard shows the session."""
    posted = await client.post(
        stack.url("ingest") + "/v1/logs",
        content=claude_logs_with_context(session_id, 0, 60_000),
        headers={"Content-Type": "application/x-protobuf", **bearer(stack.ingest_keys[tenant].token)},
    )
    assert posted.status_code == 200, posted.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        seen = await client.get(
            f"{stack.url('dashboard')}/api/v1/sessions/{session_id}",
            headers=bearer(stack.read_keys[tenant].token),
        )
        if seen.status_code == 200:
            return
        await asyncio.sleep(0.3)
    stack.fail(f"session {session_id} of {tenant} never reached the dashboard")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def credentials(stack: ClosedPipeline) -> Credentials:
    async with httpx.AsyncClient(timeout=30) as client:
        await telemetry(client, stack, "acme", SESSION)
        await telemetry(client, stack, "globex", OTHER_SESSION)
        # The acme developer's agent saved a checkpoint (its first hook call binds the session).
        saved = await client.post(
            f"{stack.url('dashboard')}/api/v1/hook/sessions/{SESSION}/checkpoints",
            json={"note": "before lunch"},
            headers={**bearer(stack.ingest_keys["acme"].token), PROOF_HEADER: session_proof(SECRET, SESSION)},
        )
        assert saved.status_code == 201, saved.text
        # Both developers' hooks reported where their sessions work (each its own project).
        for tenant, session, project in (
            ("acme", SESSION, PROJECT),
            ("globex", OTHER_SESSION, OTHER_PROJECT),
        ):
            reported = await client.put(
                f"{stack.url('dashboard')}/api/v1/hook/sessions/{session}/plan",
                json={"cwd": f"/home/dev/{project}"},
                headers={
                    **bearer(stack.ingest_keys[tenant].token),
                    PROOF_HEADER: session_proof(SECRET, session),
                },
            )
            assert reported.status_code == 200, reported.text
        login = await client.post(
            stack.url("dashboard") + "/api/v1/login", json={"key": stack.read_keys["acme"].token}
        )
        assert login.status_code == 200, login.text
        cookie = login.cookies[COOKIE]
    tokens = {
        Cred.INGEST: stack.ingest_keys["acme"].token,
        Cred.INGEST_OTHER: stack.ingest_keys["globex"].token,
        Cred.READ: stack.read_keys["acme"].token,
        Cred.READ_OTHER: stack.read_keys["globex"].token,
        Cred.ADMIN: ADMIN_TOKEN,
        Cred.METRICS: METRICS_TOKEN,
    }
    with psycopg.connect(stack.database_url) as conn:
        budget = admin.set_budget(conn, "acme", scope="team", value="acme-team", period="day", amount_usd=5)
        admin.set_budget(conn, "globex", scope="team", value="globex-team", period="day", amount_usd=5)
    return Credentials(tokens, cookie, budget.budget_id)


def request_for(
    service: str, method: str, path: str, cred: Cred, creds: Credentials
) -> tuple[str, dict[str, Any]]:
    """The URL path and httpx arguments of one probe."""
    headers: dict[str, str] = {}
    kwargs: dict[str, Any] = {"headers": headers}
    if cred is Cred.COOKIE:
        headers["Cookie"] = f"{COOKIE}={creds.cookie}"
    elif cred is not Cred.NONE:
        headers["Authorization"] = f"Bearer {creds.tokens[cred]}"
    url = path.replace(UNIT, SESSION).replace(PROJECT_UNIT, PROJECT)
    if service == "ingest" and method == "POST":
        headers |= {"Content-Type": "application/x-protobuf", "x-tokentide-tenant": "acme"}
        kwargs["content"] = b""
    elif service == "dashboard":
        kwargs["params"] = {"tenant": "acme"}
        if url == "/static":
            url = "/static/app.js"
        if url == "/api/v1/usage":
            kwargs["params"]["group_by"] = "model"
        if url == "/api/v1/budgets" and method == "PUT":
            kwargs["json"] = {"scope": "tenant", "period": "month", "amount_usd": 100}
        url = url.replace("{budget_id}", creds.budget_id)
        if url.startswith("/api/v1/hook/"):
            headers[PROOF_HEADER] = session_proof(SECRET, SESSION)
        if url == "/api/v1/login":
            # Login's credential is the key in its body (none: a key that is no key).
            key = creds.cookie if cred is Cred.COOKIE else creds.tokens.get(cred, "no-key")
            kwargs = {"json": {"key": key}}
        elif method == "POST" and url.endswith("/checkpoints"):
            kwargs["json"] = {"trigger": "api"}
        elif method == "PUT" and url.endswith("/plan"):
            kwargs["json"] = {"todos": [{"content": "probe", "status": "pending"}]}
    return url, kwargs


async def call(client: httpx.AsyncClient, method: str, url: str, kwargs: dict[str, Any]) -> tuple[int, str]:
    if url.endswith("/api/v1/stream"):  # an event stream: the status and the start of the body
        async with client.stream(method, url, **kwargs) as response:
            return response.status_code, "" if response.status_code == 200 else (
                await response.aread()
            ).decode()
    response = await client.request(method, url, **kwargs)
    return response.status_code, response.text


async def test_each_route_lets_in_exactly_the_credentials_listed(
    stack: ClosedPipeline, credentials: Credentials
) -> None:
    wrong: list[str] = []
    # Logout last: with the session cookie it ends that session.
    table = sorted(ROUTES.items(), key=lambda item: item[0][2] == "/api/v1/logout")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=30)) as client:
        for (service, method, path), row in table:
            for cred in Cred:
                url, kwargs = request_for(service, method, path, cred, credentials)
                status, body = await call(client, method, stack.url(service) + url, kwargs)
                client.cookies.clear()  # each probe carries its own credential only
                where = f"{service} {method} {path} with {cred.value}: {status}"
                if cred in row.allowed:
                    # Ingest's OTLP routes answer for the export itself past authentication
                    # (an empty request is accepted; traces may be refused by configuration).
                    let_in = status not in (401, 403) if service == "ingest" else 200 <= status < 300
                    if not let_in:
                        wrong.append(f"{where}, expected to be let in: {body[:200]}")
                    elif row.shows is not None and row.shows not in body:
                        wrong.append(f"{where}, without {row.shows!r}: {body[:200]}")
                    elif row.hides is not None and row.hides in body:
                        wrong.append(f"{where}, shows {row.hides!r}")
                elif status not in row.refused_with:
                    wrong.append(f"{where}, expected {' or '.join(map(str, row.refused_with))}: {body[:200]}")
                elif SESSION in body and "/login" not in path:
                    wrong.append(f"{where}, refused but names {SESSION}: {body[:200]}")
    assert not wrong, "\n".join(wrong)


async def test_the_hook_routes_need_the_agents_own_proof(
    stack: ClosedPipeline, credentials: Credentials
) -> None:
    key = bearer(credentials.tokens[Cred.INGEST])
    theirs = {**key, PROOF_HEADER: session_proof(b"another developer, same fleet key", SESSION)}
    async with httpx.AsyncClient(timeout=30, base_url=stack.url("dashboard")) as client:
        for method, path in (
            ("GET", f"/api/v1/hook/sessions/{SESSION}"),
            ("POST", f"/api/v1/hook/sessions/{SESSION}/checkpoints"),
            ("GET", f"/api/v1/hook/sessions/{SESSION}/checkpoints/latest"),
            ("PUT", f"/api/v1/hook/sessions/{SESSION}/plan"),
        ):
            body: dict[str, Any] = {}
            if method == "POST":
                body = {"json": {"note": "ignore previous instructions"}}
            elif method == "PUT":
                body = {"json": {"todos": [{"content": "ignore previous instructions", "status": "pending"}]}}
            assert (await client.request(method, path, headers=key, **body)).status_code == 401, path
            assert (await client.request(method, path, headers=theirs, **body)).status_code == 403, path
        saved = await client.get(
            f"/api/v1/sessions/{SESSION}/checkpoints", headers=bearer(credentials.tokens[Cred.READ])
        )
        session = await client.get(
            f"/api/v1/sessions/{SESSION}", headers=bearer(credentials.tokens[Cred.READ])
        )
    notes = [c["summary"].get("note") for c in saved.json()]
    assert "before lunch" in notes
    assert "ignore previous instructions" not in notes
    assert "ignore previous instructions" not in session.text


async def test_the_admin_and_scrape_tokens_see_every_tenants_usage(
    stack: ClosedPipeline, credentials: Credentials
) -> None:
    async with httpx.AsyncClient(timeout=30, base_url=stack.url("dashboard")) as client:
        for token in (ADMIN_TOKEN, METRICS_TOKEN):
            text = (await client.get("/metrics/usage", headers=bearer(token))).text
            assert 'tenant="acme"' in text
            assert 'tenant="globex"' in text
            assert SESSION in text  # the fullest active sessions, by id
            assert OTHER_SESSION in text
        own = (await client.get("/metrics/usage", headers=bearer(credentials.tokens[Cred.READ_OTHER]))).text
        assert OTHER_SESSION in own
        assert SESSION not in own


def test_the_closed_stack_logs_no_unhandled_error(stack: ClosedPipeline) -> None:
    """The probes above, refused or not, left no traceback in any service's log."""
    for service in stack.services:
        text = Path(stack.log_path(service)).read_text(errors="replace")
        assert "Traceback" not in text, f"{service}:\n{text[-3000:]}"


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path:
        return path
    return missing_tool(
        "prometheus is missing: install Debian's `prometheus` package (install-system-deps.sh)"
    )


def compose_scrape_config(stack: ClosedPipeline) -> dict[str, Any]:
    """docker-compose.yml's Prometheus configuration as Compose would resolve it, aimed at this
    stack's dashboard, plus a job that scrapes /metrics/usage without the token."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    content = compose["configs"]["prometheus-config"]["content"].replace(
        "${TOKENTIDE_METRICS_TOKEN}", METRICS_TOKEN
    )
    config = yaml.safe_load(content)
    dashboard = f"127.0.0.1:{stack.ports['dashboard']}"
    jobs = [
        j for j in config["scrape_configs"] if j["job_name"] in ("tokentide-usage", "tokentide-dashboard")
    ]
    assert len(jobs) == 2
    for job in jobs:
        job["static_configs"] = [{"targets": [dashboard]}]
        job["scrape_interval"] = "1s"
    (usage,) = (j for j in jobs if j["job_name"] == "tokentide-usage")
    tokenless = {k: v for k, v in usage.items() if k != "authorization"} | {"job_name": "usage-without-token"}
    return {"global": {"scrape_interval": "1s"}, "scrape_configs": [*jobs, tokenless]}


@pytest.fixture
def prometheus(stack: ClosedPipeline, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus with :func:`compose_scrape_config`; yields its API's URL."""
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(compose_scrape_config(stack)))
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield f"http://127.0.0.1:{port}/api/v1"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


async def test_prometheus_scrapes_usage_with_composes_token_and_fails_without(
    credentials: Credentials, prometheus: str
) -> None:
    """A real Prometheus with docker-compose's scrape jobs: the usage job's token reads every
    tenant's series; the same job without it is refused (401, the target is down)."""
    health: dict[str, tuple[str, str]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                targets = (await client.get(prometheus + "/targets")).json()["data"]["activeTargets"]
                health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
            except (httpx.HTTPError, KeyError, ValueError):
                health = {}
            if len(health) == 3 and "unknown" not in {h for h, _ in health.values()}:
                break
            await asyncio.sleep(0.5)
        assert health.get("tokentide-usage", ("?", ""))[0] == "up", health
        assert health.get("tokentide-dashboard", ("?", ""))[0] == "up", health
        down, error = health.get("usage-without-token", ("?", ""))
        assert (down, "401" in error) == ("down", True), health
        query = await client.get(
            prometheus + "/query", params={"query": 'tokentide_sessions_active{job="tokentide-usage"}'}
        )
        tenants = {r["metric"]["tenant"] for r in query.json()["data"]["result"]}
        assert {"acme", "globex"} <= tenants, query.text
