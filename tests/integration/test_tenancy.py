"""Multi-tenancy on the real PostgreSQL (and Kafka for the HTTP path).

Schema, admin operations, the ``tokentide admin`` CLI as a process, the ingest ``KeyStore``
(loading, revocation within ``refresh_s``, direct lookups, database outages), and the HTTP
receiver with keys: statuses, Kafka keys and headers, per-tenant limits and redaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.app import create_app
from ingest.auth import KeyStore
from ingest.errors import Forbidden, IngestError, Unauthorized, Unavailable
from tests.support.captures import FIXTURES
from tests.support.services import free_port, read_all
from tokentide.admin import (
    ApiKey,
    DuplicateTenant,
    InvalidPolicy,
    InvalidTenantName,
    Policy,
    UnknownKey,
    UnknownTenant,
    create_key,
    create_tenant,
    list_keys,
    list_tenants,
    new_key,
    parse_key,
    revoke_key,
    secret_digest,
    set_tenant_disabled,
    update_tenant,
)
from tokentide.settings import IngestSettings
from tokentide.tenancy import Redaction, Tenant
from tokentide.topics import HEADER_TENANT, Signal, Topics

pytestmark = pytest.mark.integration

TOKENTIDE = Path(sys.executable).with_name("tokentide")
KEY_FORMAT = re.compile(r"tt_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
PB = "application/x-protobuf"
TEXT_LOGS = FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb"


@pytest.fixture
def conn(database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database, autocommit=True) as connection:
        yield connection


def bearer(key: ApiKey) -> str:
    return f"Bearer {key.token}"


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout_s: float = 5.0) -> float:
    """Seconds until ``check()`` (a plain or async predicate) is true; fails after ``timeout_s``."""
    start = time.monotonic()
    while not await _value(check()):
        assert time.monotonic() - start < timeout_s, f"not true after {timeout_s}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def _value(result: bool | Awaitable[bool]) -> bool:
    return await result if inspect.isawaitable(result) else result


async def outcome(store: KeyStore, key: ApiKey, hint: str | None = None) -> Tenant | type[IngestError]:
    """The tenant, or the class of the error ``authenticate`` raised."""
    try:
        return await store.authenticate(bearer(key), hint)
    except IngestError as error:
        return type(error)


# --- schema ---------------------------------------------------------------------------------


def test_migration_adds_policy_columns_and_api_keys(conn: psycopg.Connection[Any]) -> None:
    columns = {
        (table, column)
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_name IN ('tenants', 'api_keys')"
        )
    }
    policy = {"requests_per_s", "bytes_per_s", "max_body_bytes", "redaction", "disabled_at"}
    assert {("tenants", c) for c in policy} <= columns
    assert {
        ("api_keys", c)
        for c in ("key_id", "tenant_id", "secret_sha256", "description", "created_at", "revoked_at")
    } <= columns
    # The tenant of open mode survives, with every setting at the service default.
    assert conn.execute(
        "SELECT requests_per_s, bytes_per_s, max_body_bytes, redaction, disabled_at"
        " FROM tenants WHERE tenant_id = 'default'"
    ).fetchall() == [(None, None, None, None, None)]


@pytest.mark.parametrize(
    ("statement", "error"),
    [
        ("INSERT INTO tenants (tenant_id) VALUES ('Acme')", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id) VALUES ('a b')", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id) VALUES (repeat('a', 64))", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id) VALUES (E'acme\\n')", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id, requests_per_s) VALUES ('t', 0)", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id, bytes_per_s) VALUES ('t', -1)", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id, max_body_bytes) VALUES ('t', 0)", psycopg.errors.CheckViolation),
        ("INSERT INTO tenants (tenant_id, redaction) VALUES ('t', 'blur')", psycopg.errors.CheckViolation),
        (
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256) VALUES ('XYZ', 'default', sha256(''))",
            psycopg.errors.CheckViolation,
        ),
        (
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256) VALUES ('0123456789ab', 'default', 'x')",
            psycopg.errors.CheckViolation,
        ),
        (
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256)"
            " VALUES ('0123456789ab', 'nope', sha256(''))",
            psycopg.errors.ForeignKeyViolation,
        ),
    ],
)
def test_schema_refuses_bad_rows(
    conn: psycopg.Connection[Any], statement: Any, error: type[psycopg.Error]
) -> None:
    with pytest.raises(error):
        conn.execute(statement)


# --- admin operations -----------------------------------------------------------------------


def test_tenant_lifecycle(conn: psycopg.Connection[Any]) -> None:
    acme = create_tenant(
        conn, "acme", Policy(requests_per_s=5.0, max_body_bytes=2048, redaction=Redaction.DROP)
    )
    assert (acme.name, acme.requests_per_s, acme.bytes_per_s, acme.max_body_bytes, acme.redaction) == (
        "acme",
        5.0,
        None,
        2048,
        Redaction.DROP,
    )
    assert acme.disabled_at is None
    assert [t.name for t in list_tenants(conn)] == ["acme", "default"]

    changed = update_tenant(conn, "acme", Policy(bytes_per_s=1e6, requests_per_s=None))
    assert (changed.requests_per_s, changed.bytes_per_s, changed.max_body_bytes, changed.redaction) == (
        None,
        1e6,
        2048,
        Redaction.DROP,
    )

    disabled = set_tenant_disabled(conn, "acme", disabled=True)
    assert disabled.disabled_at is not None
    assert set_tenant_disabled(conn, "acme", disabled=True).disabled_at == disabled.disabled_at
    assert set_tenant_disabled(conn, "acme", disabled=False).disabled_at is None


@pytest.mark.parametrize("name", ["", "Acme", "-acme", "a b", "a" * 64, "acme\n", "acme/x", "tenant:1"])
def test_bad_tenant_names_are_refused(conn: psycopg.Connection[Any], name: str) -> None:
    with pytest.raises(InvalidTenantName):
        create_tenant(conn, name)


def test_tenant_refusals(conn: psycopg.Connection[Any]) -> None:
    create_tenant(conn, "acme")
    with pytest.raises(DuplicateTenant):
        create_tenant(conn, "acme")
    with pytest.raises(UnknownTenant):
        update_tenant(conn, "nobody", Policy(redaction=Redaction.OFF))
    with pytest.raises(UnknownTenant):
        set_tenant_disabled(conn, "nobody", disabled=True)
    for bad in (Policy(requests_per_s=0), Policy(bytes_per_s=float("nan")), Policy(max_body_bytes=-1)):
        with pytest.raises(InvalidPolicy):
            update_tenant(conn, "acme", bad)
        with pytest.raises(InvalidPolicy):
            create_tenant(conn, "acme2", bad)


def test_key_lifecycle(conn: psycopg.Connection[Any]) -> None:
    create_tenant(conn, "acme")
    create_tenant(conn, "other")
    key = create_key(conn, "acme", "ci runner")
    other = create_key(conn, "other")
    assert KEY_FORMAT.fullmatch(key.token)

    [(digest, stored)] = conn.execute(
        "SELECT secret_sha256, api_keys::text FROM api_keys WHERE key_id = %s", (key.key_id,)
    ).fetchall()
    assert digest == hashlib.sha256(key.secret.encode()).digest()
    assert key.secret not in stored  # only the digest is stored

    listed = list_keys(conn)
    assert [(k.key_id, k.tenant, k.description, k.revoked_at) for k in listed] == [
        (key.key_id, "acme", "ci runner", None),
        (other.key_id, "other", None, None),
    ]
    assert [k.key_id for k in list_keys(conn, "other")] == [other.key_id]

    revoked = revoke_key(conn, key.key_id)
    assert revoked.revoked_at is not None
    assert revoke_key(conn, key.key_id).revoked_at == revoked.revoked_at  # idempotent

    with pytest.raises(UnknownTenant):
        create_key(conn, "nobody")
    with pytest.raises(UnknownTenant):
        list_keys(conn, "nobody")
    with pytest.raises(UnknownKey):
        revoke_key(conn, "0123456789ab")
    with pytest.raises(UnknownKey) as info:
        revoke_key(conn, other.token)  # a whole key pasted instead of its id
    assert other.secret not in str(info.value)


# --- the CLI, as a process ------------------------------------------------------------------

Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(database: str, tmp_path: Path) -> Cli:
    """Run ``tokentide admin ARGS...`` against the test database (no TOKENTIDE_* from outside)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")} | {"DATABASE_URL": database}

    def run(*args: str, dsn: str = database) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TOKENTIDE), "admin", *args],
            env=env | {"DATABASE_URL": dsn},
            cwd=tmp_path,  # no .env of the checkout
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def test_cli_end_to_end(cli: Cli, conn: psycopg.Connection[Any]) -> None:
    created = cli("tenant", "create", "acme", "--requests-per-s", "5", "--redaction", "drop")
    assert created.returncode == 0, created.stderr
    assert re.search(r"^acme\s+5\s+default\s+default\s+drop\s", created.stdout, re.MULTILINE)

    made = cli("key", "create", "--tenant", "acme", "--description", "ci runner")
    assert made.returncode == 0, made.stderr
    [token] = made.stdout.splitlines()  # the key alone on stdout: KEY=$(tokentide admin key create ...)
    key = parse_key(token)
    assert key.key_id in made.stderr
    assert key.secret not in made.stderr
    stored = conn.execute("SELECT secret_sha256 FROM api_keys WHERE key_id = %s", (key.key_id,)).fetchone()
    assert stored == (secret_digest(key.secret),)

    for args in (("key", "list"), ("key", "list", "--tenant", "acme")):
        listed = cli(*args)
        assert listed.returncode == 0, listed.stderr
        assert re.search(
            rf"^{key.key_id}\s+acme\s+ingest\s+\S+\s+-\s+ci runner$", listed.stdout, re.MULTILINE
        )
        assert key.secret not in listed.stdout + listed.stderr

    reset = cli("tenant", "set", "acme", "--requests-per-s", "default", "--max-body-bytes", "2048")
    assert reset.returncode == 0, reset.stderr
    assert re.search(r"^acme\s+default\s+default\s+2048\s+drop\s", reset.stdout, re.MULTILINE)
    tenants = cli("tenant", "list")
    assert re.search(r"^default\s+default\s+default\s+default\s+default\s", tenants.stdout, re.MULTILINE)

    revoked = cli("key", "revoke", key.key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert key.key_id in revoked.stdout
    listed = cli("key", "list")
    assert re.search(
        rf"^{key.key_id}\s+acme\s+ingest\s+\S+\s+\d{{4}}-\S+Z\s+ci runner$", listed.stdout, re.MULTILINE
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("tenant", "create", "Bad Name"), "invalid tenant name"),
        (("tenant", "create", "default"), "exists already"),
        (("tenant", "set", "nobody", "--redaction", "off"), "no tenant 'nobody'"),
        (("tenant", "set", "default"), "nothing to change"),
        (("key", "create", "--tenant", "nobody"), "no tenant 'nobody'"),
        (("key", "revoke", "0123456789ab"), "no API key with id 0123456789ab"),
    ],
)
def test_cli_refusals_exit_1_without_traceback(cli: Cli, args: tuple[str, ...], says: str) -> None:
    result = cli(*args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_without_a_database_exits_1(cli: Cli) -> None:
    result = cli("tenant", "list", dsn=f"postgresql://tokentide@127.0.0.1:{free_port()}/nothing")
    assert result.returncode == 1
    assert "database error" in result.stderr
    assert "Traceback" not in result.stderr


# --- KeyStore -------------------------------------------------------------------------------


@asynccontextmanager
async def key_store(
    dsn: str, refresh_s: float = 0.5, default_redaction: Redaction = Redaction.HASH
) -> AsyncIterator[KeyStore]:
    """A started store, once it has loaded."""
    store = KeyStore(dsn, refresh_s=refresh_s, default_redaction=default_redaction)
    await store.start()
    try:
        await eventually(lambda: store.ready)
        yield store
    finally:
        await store.stop()


async def test_a_key_is_its_tenant_with_the_tenants_policy(
    conn: psycopg.Connection[Any], database: str
) -> None:
    create_tenant(
        conn,
        "acme",
        Policy(requests_per_s=5, bytes_per_s=1000, max_body_bytes=2048, redaction=Redaction.DROP),
    )
    create_tenant(conn, "plain")
    acme, plain = create_key(conn, "acme"), create_key(conn, "plain")
    async with key_store(database, default_redaction=Redaction.OFF) as store:
        assert await store.authenticate(bearer(acme), None) == Tenant(
            "acme", 5.0, 1000.0, 2048, Redaction.DROP
        )
        assert await store.authenticate(bearer(acme), "acme") == Tenant(
            "acme", 5.0, 1000.0, 2048, Redaction.DROP
        )
        assert await store.authenticate(bearer(plain), None) == Tenant("plain", redaction=Redaction.OFF)


async def test_a_read_key_cannot_export(conn: psycopg.Connection[Any], database: str) -> None:
    """Read keys are for the dashboard: ingest does not know them (loaded or looked up)."""
    create_tenant(conn, "acme")
    before = create_key(conn, "acme", scope="read")
    async with key_store(database) as store:
        after = create_key(conn, "acme", scope="read")  # not loaded yet: looked up directly
        for key in (before, after):
            with pytest.raises(Unauthorized, match="unknown API key"):
                await store.authenticate(bearer(key), None)
        assert (await store.authenticate(bearer(create_key(conn, "acme")), None)).name == "acme"


async def test_refusals(conn: psycopg.Connection[Any], database: str) -> None:
    create_tenant(conn, "acme")
    create_tenant(conn, "other")
    key = create_key(conn, "acme")
    async with key_store(database) as store:
        with pytest.raises(Unauthorized, match="unknown API key"):
            await store.authenticate(bearer(new_key()), None)
        with pytest.raises(Unauthorized, match="wrong secret"):
            await store.authenticate(bearer(ApiKey(key.key_id, new_key().secret)), None)
        with pytest.raises(Forbidden, match="belongs to tenant 'acme'"):
            await store.authenticate(bearer(key), "other")
        with pytest.raises(Unauthorized, match="missing"):
            await store.authenticate(None, None)


async def test_a_revoked_key_is_refused_within_refresh_s(
    conn: psycopg.Connection[Any], database: str
) -> None:
    create_tenant(conn, "acme")
    key = create_key(conn, "acme")
    async with key_store(database, refresh_s=0.5) as store:
        assert await outcome(store, key) == Tenant("acme")
        revoke_key(conn, key.key_id)
        waited = await eventually(lambda: _refused(store, key, Unauthorized), timeout_s=2.0)
        assert waited < 0.5 + 0.5  # one refresh period, plus slack for the load itself
        with pytest.raises(Unauthorized, match="revoked"):
            await store.authenticate(bearer(key), None)


async def _refused(store: KeyStore, key: ApiKey, error: type[IngestError]) -> bool:
    return await outcome(store, key) is error


async def test_a_disabled_tenant_is_403_until_enabled(conn: psycopg.Connection[Any], database: str) -> None:
    create_tenant(conn, "acme")
    key = create_key(conn, "acme")
    async with key_store(database, refresh_s=0.5) as store:
        set_tenant_disabled(conn, "acme", disabled=True)
        await eventually(lambda: _refused(store, key, Forbidden), timeout_s=2.0)
        with pytest.raises(Forbidden, match="disabled"):
            await store.authenticate(bearer(key), None)
        set_tenant_disabled(conn, "acme", disabled=False)
        await eventually(lambda: _accepted(store, key), timeout_s=2.0)


async def _accepted(store: KeyStore, key: ApiKey) -> bool:
    return isinstance(await outcome(store, key), Tenant)


async def test_a_key_created_after_the_load_works_at_once(
    conn: psycopg.Connection[Any], database: str
) -> None:
    create_tenant(conn, "acme")
    async with key_store(database, refresh_s=10) as store:  # no reload during the test
        create_tenant(conn, "late", Policy(max_body_bytes=4096))
        key = create_key(conn, "late")
        assert await store.authenticate(bearer(key), None) == Tenant("late", max_body_bytes=4096)
        # The direct lookup honours revocation too.
        revoked = create_key(conn, "late")
        revoke_key(conn, revoked.key_id)
        with pytest.raises(Unauthorized, match="revoked"):
            await store.authenticate(bearer(revoked), None)


async def test_unknown_key_ids_are_not_looked_up_again_before_the_next_load(
    conn: psycopg.Connection[Any], database: str
) -> None:
    key = new_key()
    async with key_store(database, refresh_s=10) as store:  # no reload during the test
        with pytest.raises(Unauthorized, match="unknown"):
            await store.authenticate(bearer(key), None)
        # Created behind the store's back with the same id: still unknown, from memory.
        conn.execute(
            "INSERT INTO api_keys (key_id, tenant_id, secret_sha256) VALUES (%s, 'default', %s)",
            (key.key_id, secret_digest(key.secret)),
        )
        with pytest.raises(Unauthorized, match="unknown"):
            await store.authenticate(bearer(key), None)


async def test_lookups_of_invented_keys_are_rate_limited(database: str) -> None:
    async with key_store(database, refresh_s=10) as store:
        results = [await outcome(store, new_key()) for _ in range(40)]
    assert results[:20] == [Unauthorized] * 20  # the burst: 2 s at 10 lookups/s
    assert results.count(Unavailable) >= 15  # then 503: retried later, when the keys are loaded


@asynccontextmanager
async def tcp_forward(listen_port: int, host: str, port: int) -> AsyncIterator[None]:
    """Forward 127.0.0.1:``listen_port`` to ``host:port`` while in the block."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )

    server = await asyncio.start_server(connect, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()
        await server.wait_closed()


async def test_the_store_starts_without_the_database_and_loads_when_it_appears(
    conn: psycopg.Connection[Any], database: str
) -> None:
    create_tenant(conn, "acme")
    key = create_key(conn, "acme")
    real = psycopg.conninfo.conninfo_to_dict(database)
    port = free_port()  # nothing listens there until tcp_forward does
    store = KeyStore(
        psycopg.conninfo.make_conninfo(database, host="127.0.0.1", port=port),
        refresh_s=0.5,
        default_redaction=Redaction.HASH,
    )
    await store.start()  # must not fail
    try:
        await asyncio.sleep(1.0)  # a few failed attempts
        assert not store.ready
        with pytest.raises(Unavailable) as info:
            await store.authenticate(bearer(key), None)
        assert info.value.retry_after == 5
        async with tcp_forward(port, str(real.get("host", "127.0.0.1")), int(real.get("port", 5432))):
            await eventually(lambda: store.ready, timeout_s=5.0)
            assert await store.authenticate(bearer(key), None) == Tenant("acme")
            await store.stop()  # before the forwarder goes
    finally:
        await store.stop()  # safe twice


async def test_stop_is_safe_before_start(database: str) -> None:
    await KeyStore(database, refresh_s=1, default_redaction=Redaction.HASH).stop()


# --- the HTTP receiver with keys ------------------------------------------------------------

TENANTS: dict[str, Policy] = {
    "acme": Policy(),  # the service defaults (redaction off, see ingest_settings)
    "other": Policy(),
    "small": Policy(max_body_bytes=2048),
    "slow": Policy(requests_per_s=1),
    "dropper": Policy(redaction=Redaction.DROP),
    "hasher": Policy(redaction=Redaction.HASH),
}
REDACTION_KEY = "test-secret"
PROMPT = "fix the bug in auth.py"
EMAIL = "ann@example.com"


@pytest.fixture
def keys(conn: psycopg.Connection[Any]) -> dict[str, ApiKey]:
    for name, policy in TENANTS.items():
        create_tenant(conn, name, policy)
    return {name: create_key(conn, name) for name in TENANTS}


def ingest_settings(database: str, bootstrap: str, prefix: str) -> IngestSettings:
    return IngestSettings(
        open_mode=False,
        database_url=database,
        redaction_key=REDACTION_KEY,
        redaction=Redaction.OFF,  # so that the tenants' own modes are what redacts
        kafka_bootstrap=bootstrap,
        topic_prefix=prefix,
        grpc_port=0,
        key_refresh_s=0.5,
        kafka_ack_timeout_s=5,
    )


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (real Kafka producer, real KeyStore), once ``/readyz`` is 200."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout_s=15.0)
            yield client


@pytest.fixture
async def client(database: str, bootstrap: str, prefix: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_app(ingest_settings(database, bootstrap, prefix))) as c:
        yield c


def headers(key: ApiKey | None = None, tenant: str | None = None) -> dict[str, str]:
    out = {"Content-Type": PB}
    if key is not None:
        out["Authorization"] = bearer(key)
    if tenant is not None:
        out["x-tokentide-tenant"] = tenant
    return out


def prompt_logs(session_id: str) -> bytes:
    """A Claude Code ``user_prompt`` event with its prompt and the user's e-mail address."""
    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.add(key="service.name").value.string_value = "claude-code"
    record = resource.scope_logs.add().log_records.add(time_unix_nano=1_795_485_000_000_000_000)
    for name, value in {
        "session.id": session_id,
        "event.name": "user_prompt",
        "prompt": PROMPT,
        "user.email": EMAIL,
    }.items():
        record.attributes.add(key=name).value.string_value = value
    return request.SerializeToString()


async def raw_logs(bootstrap: str, prefix: str) -> list[Any]:
    return await read_all(bootstrap, Topics(prefix).raw(Signal.LOGS))


async def test_http_statuses_with_keys(
    client: httpx.AsyncClient,
    keys: dict[str, ApiKey],
    conn: psycopg.Connection[Any],
    bootstrap: str,
    prefix: str,
) -> None:
    body = TEXT_LOGS.read_bytes()
    acme = keys["acme"]

    missing = await client.post("/v1/logs", content=body, headers=headers())
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (await client.post("/v1/logs", content=body, headers=headers(new_key()))).status_code == 401
    assert (await client.post("/v1/logs", content=body, headers=headers(acme, "other"))).status_code == 403
    assert (await client.post("/v1/logs", content=body, headers=headers(acme))).status_code == 200
    assert (await client.post("/v1/logs", content=body, headers=headers(acme, "acme"))).status_code == 200

    accepted = 2
    revoke_key(conn, acme.key_id)

    async def refused() -> bool:
        nonlocal accepted
        status = (await client.post("/v1/logs", content=body, headers=headers(acme))).status_code
        accepted += status == 200  # until the next reload, the key still works
        return status == 401

    assert await eventually(refused, timeout_s=2.0) < 1.0

    messages = await raw_logs(bootstrap, prefix)
    assert len(messages) == accepted  # nothing of the refused requests
    for message in messages:
        tenant_header = dict(message.headers)[HEADER_TENANT]
        assert tenant_header == b"acme"
        assert message.key.startswith(b"acme/")
        assert message.value == body  # redaction off: the bytes that arrived


async def test_http_tenant_limits(client: httpx.AsyncClient, keys: dict[str, ApiKey]) -> None:
    body = TEXT_LOGS.read_bytes()
    assert len(body) < 2048
    small = keys["small"]
    assert (await client.post("/v1/logs", content=body, headers=headers(small))).status_code == 200
    too_large = await client.post("/v1/logs", content=b"\0" * 4096, headers=headers(small))
    assert too_large.status_code == 413
    # Another tenant without a limit of its own has the service's (16 MiB): 4 KiB is only bad protobuf.
    assert (
        await client.post("/v1/logs", content=b"\0" * 4096, headers=headers(keys["acme"]))
    ).status_code == 400

    slow = keys["slow"]
    statuses = [
        (await client.post("/v1/logs", content=body, headers=headers(slow))).status_code for _ in range(2)
    ]
    assert statuses == [200, 200]  # the burst: 2 s at 1 request/s
    limited = await client.post("/v1/logs", content=body, headers=headers(slow))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # Other tenants are not affected.
    assert (await client.post("/v1/logs", content=body, headers=headers(keys["acme"]))).status_code == 200


def _digest(value: str) -> str:
    return "redacted:" + hmac.new(REDACTION_KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


async def test_http_redaction_per_tenant(
    client: httpx.AsyncClient, keys: dict[str, ApiKey], bootstrap: str, prefix: str
) -> None:
    for tenant in ("acme", "dropper", "hasher"):
        response = await client.post(
            "/v1/logs", content=prompt_logs(f"s-{tenant}"), headers=headers(keys[tenant])
        )
        assert response.status_code == 200, response.text

    attributes: dict[str, dict[str, str]] = {}
    for message in await raw_logs(bootstrap, prefix):
        request = ExportLogsServiceRequest.FromString(message.value)
        [record] = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        tenant = dict(message.headers)[HEADER_TENANT].decode()
        attributes[tenant] = {kv.key: kv.value.string_value for kv in record.attributes}

    assert attributes["acme"]["prompt"] == PROMPT  # service default in this test: off
    assert attributes["acme"]["user.email"] == EMAIL
    assert "prompt" not in attributes["dropper"]
    assert "user.email" not in attributes["dropper"]
    assert attributes["dropper"]["session.id"] == "s-dropper"
    assert attributes["hasher"]["prompt"] == _digest(PROMPT)
    assert attributes["hasher"]["user.email"] == _digest(EMAIL)
    assert attributes["hasher"]["session.id"] == "s-hasher"
