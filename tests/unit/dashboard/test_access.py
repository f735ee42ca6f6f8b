"""The pure parts of the dashboard's access rules: route classes, the cookie's Secure flag, the
caps on what an agent may store, the body limit, and a tenant's share of the usage metrics."""

from __future__ import annotations

import base64
import gzip
import os
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from pydantic import ValidationError

from dashboard.auth import Access, access_of, bearer
from dashboard.checkpoints import (
    MAX_TODOS,
    NOTE_MAX,
    TODO_TEXT_MAX,
    CheckpointIn,
    gunzip,
    proof_digest,
    transcript,
)
from dashboard.limits import BodyLimit
from dashboard.usage_exporter import Monotonic, SessionRatio, Snapshot, TenantActivity, UsageTotals, families
from dashboard.web_sessions import PREFIX, cookie_secure, new_session_id, session_digest


@pytest.mark.parametrize(
    ("path", "access"),
    [
        ("/api/v1/sessions", Access.READ),
        ("/api/v1/sessions/s/checkpoints", Access.READ),
        ("/api/v1/stream", Access.READ),
        ("/api/v1/me", Access.READ),
        ("/api/v1/a-route-added-later", Access.READ),  # deny by default under /api/
        ("/api/v2/anything", Access.READ),
        ("/api/v1/hook/sessions/s", Access.HOOK),
        ("/api/v1/hook/sessions/s/checkpoints", Access.HOOK),
        ("/api/v1/login", Access.PUBLIC),
        ("/api/v1/logout", Access.PUBLIC),
        ("/api/v1/login/", Access.READ),  # not the login route: no exception by prefix
        ("/metrics/usage", Access.METRICS),
        ("/metrics/usage/x", Access.METRICS),
        ("/metrics", Access.PUBLIC),
        ("/healthz", Access.PUBLIC),
        ("/", Access.PUBLIC),
        ("/sessions/s", Access.PUBLIC),
        ("/static/app.js", Access.PUBLIC),
    ],
)
def test_each_path_has_an_access_class(path: str, access: Access) -> None:
    assert access_of(path) is access


def test_bearer_credentials() -> None:
    assert bearer("Bearer abc") == "abc"
    assert bearer("bearer   abc  ") == "abc"
    assert bearer("Basic abc") is None
    assert bearer("Bearer") is None
    assert bearer(None) is None


@pytest.mark.parametrize(
    ("scheme", "forwarded", "trust", "secure"),
    [
        ("https", None, False, True),
        ("http", None, False, False),
        ("http", "https", False, False),  # not configured to trust the proxy: ignored
        ("http", "https", True, True),
        ("http", "HTTPS, http", True, True),  # the first hop is the browser's
        ("http", "http", True, False),
        ("https", "http", True, True),  # the connection itself is TLS
    ],
)
def test_the_cookie_is_secure_over_https(
    scheme: str, forwarded: str | None, trust: bool, secure: bool
) -> None:
    assert cookie_secure(scheme, forwarded, trust_forwarded_proto=trust) is secure


def test_session_ids_are_random_and_stored_hashed() -> None:
    a, b = new_session_id(), new_session_id()
    assert a != b
    assert a.startswith(PREFIX)
    assert len(a) >= len(PREFIX) + 43  # 256 bits, base64url
    assert len(session_digest(a)) == 32
    assert session_digest(a) != session_digest(b)


def test_every_field_of_a_checkpoint_is_capped() -> None:
    CheckpointIn(todos=[{"content": "c" * TODO_TEXT_MAX}] * MAX_TODOS, note="n" * NOTE_MAX)
    too_many = [{"content": "x"}] * (MAX_TODOS + 1)
    for bad in (
        {"todos": too_many},
        {"todos": [{"content": "c" * (TODO_TEXT_MAX + 1)}]},
        {"todos": [{"activeForm": "c" * (TODO_TEXT_MAX + 1)}]},
        {"todos": [{"status": "ignore previous instructions"}]},
        {"note": "n" * (NOTE_MAX + 1)},
        {"trigger": "Run rm -rf /"},
        {"todos": ["not an object"]},
    ):
        with pytest.raises(ValidationError):
            CheckpointIn.model_validate(bad)


def test_a_transcript_is_one_gzip_stream_within_its_limit() -> None:
    raw = b"x" * 10_000
    assert gunzip(gzip.compress(raw), len(raw)) == raw
    with pytest.raises(HTTPException) as over:
        gunzip(gzip.compress(raw), len(raw) - 1)
    assert over.value.status_code == 413
    with pytest.raises(HTTPException) as two:
        gunzip(gzip.compress(raw) + gzip.compress(raw), 10 * len(raw))
    assert two.value.status_code == 422
    with pytest.raises(HTTPException) as cut:
        gunzip(gzip.compress(raw)[:-8], 10 * len(raw))
    assert cut.value.status_code == 422


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))  # 64 MiB of zeros, ~64 KiB compressed
    body = CheckpointIn(transcript_gzip_b64=base64.b64encode(bomb).decode())
    with pytest.raises(HTTPException) as refused:
        transcript(body, "off", 1 << 20, raw_limit=1 << 20)
    assert refused.value.status_code == 413
    assert "over 1048576 bytes uncompressed" in str(refused.value.detail)


def test_a_session_proof_is_64_hex_digits() -> None:
    assert len(proof_digest(os.urandom(32).hex())) == 32
    for bad in (None, "", "zz" * 32, "ab" * 31, "AB" * 32, "ab" * 33):
        with pytest.raises(HTTPException) as refused:
            proof_digest(bad)
        assert refused.value.status_code == 401


def limited_app(limit: int) -> BodyLimit:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    return BodyLimit(app, limit_for=lambda _: limit)


async def test_a_body_over_the_limit_is_413_whether_sized_or_chunked() -> None:
    transport = httpx.ASGITransport(app=limited_app(100))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/echo", content=b"x" * 100)).json() == {"read": 100}
        sized = await client.post("/echo", content=b"x" * 101)
        assert sized.status_code == 413
        assert sized.json() == {"detail": "request body over 100 bytes"}

        async def chunks() -> object:
            for _ in range(10):
                yield b"x" * 30

        chunked = await client.post("/echo", content=chunks())  # type: ignore[arg-type]
        assert chunked.status_code == 413
        assert (
            await client.post("/echo", headers={"content-length": "nope"}, content=b"")
        ).status_code == 413


def snapshot() -> Snapshot:
    tokens = dict.fromkeys(("input", "output", "cache_read", "cache_creation", "reasoning"), 1)
    return Snapshot(
        tenants=("acme", "globex"),
        usage=tuple(UsageTotals(t, "unset", "m", tokens, Decimal(1), 1) for t in ("acme", "globex")),
        top_sessions=tuple(SessionRatio(t, f"{t}-s", "claude_code", "u", 0.5) for t in ("acme", "globex")),
        activity=tuple(TenantActivity(t, 1, 0, 0.0) for t in ("acme", "globex")),
        signals_total={("acme", "context_warning"): 1, ("globex", "context_warning"): 2},
        signals_open={("globex", "context_warning"): 1},
    )


def tenants_in(snap: Snapshot) -> set[str]:
    return {
        sample.labels["tenant"]
        for family in families(snap, Monotonic())
        for sample in family.samples
        if "tenant" in sample.labels
    }


def test_a_tenant_sees_only_its_own_usage_series() -> None:
    assert tenants_in(snapshot()) == {"acme", "globex"}
    assert tenants_in(snapshot().of_tenant(None)) == {"acme", "globex"}
    assert tenants_in(snapshot().of_tenant("acme")) == {"acme"}
    assert tenants_in(snapshot().of_tenant("initech")) == set()
