"""``tokentide prices check`` against a real, migrated database written by the real sink."""

from __future__ import annotations

import time

import pytest

from sinks.base import Batch
from sinks.postgres.writer import PostgresWriter
from streams.pricing import default_table
from tokentide.cli import main
from tokentide.records import Event, EventKind, SessionState, Tokens

pytestmark = pytest.mark.integration

NOW_NS = time.time_ns()


def _state(session_id: str, models: list[str], tenant: str = "default") -> SessionState:
    return SessionState(
        tenant=tenant,
        session_id=session_id,
        agent="codex",
        started_at_ns=NOW_NS,
        last_seen_at_ns=NOW_NS,
        models=models,
        version=1,
    )


def _usage(event_id: str, model: str, cost: int | None, session_id: str = "s-1") -> Event:
    return Event(
        tenant="default",
        session_id=session_id,
        event_id=event_id,
        agent="codex",
        name="codex.sse_event",
        kind=EventKind.USAGE,
        time_ns=NOW_NS,
        model=model,
        tokens=Tokens(input=476, output=42, cache_read=1024),
        cost_nanos=cost,
        cost_source=None if cost is None else "price_table",
    )


async def _write(database: str, batch: Batch) -> None:
    writer = PostgresWriter(database)
    try:
        result = await writer.write(batch)
    finally:
        await writer.close()
    assert result.rejected == []


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database: str) -> str:
    for name in ("TOKENTIDE_OPEN_MODE", "TOKENTIDE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", database)
    return database


async def test_models_without_a_price_are_listed_and_exit_1(
    env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _write(
        env,
        Batch(
            states=[
                _state("s-1", ["gpt-6.1-sol", "gpt-6.2-sol"]),
                _state("s-2", ["gpt-6.2-sol"]),
                _state("s-3", ["claude-opus-4-8"], tenant="other-team"),
            ],
            events=[
                _usage("e-1", "gpt-6.1-sol", 1_474_400),
                _usage("e-2", "gpt-6.2-sol", None),
                _usage("e-3", "gpt-6.2-sol", None, session_id="s-2"),
                # seen in an event only (a session row that names it is not needed)
                _usage("e-4", "some-local-model", None, session_id="s-4"),
            ],
        ),
    )
    assert main(["prices", "check"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"price table {default_table().full_version}"
    assert out[0].startswith("price table litellm-1.110.2/")
    assert out[1] == "2 of the 4 models seen in the data have no price:"
    assert out[2].split() == ["gpt-6.2-sol", "2", "sessions,", "2", "requests,", "2", "of", "unknown", "cost"]
    assert out[3].split() == [
        "some-local-model",
        "0",
        "sessions,",
        "1",
        "requests,",
        "1",
        "of",
        "unknown",
        "cost",
    ]
    assert "prices.local.json" in out[4]


async def test_every_model_priced_exits_0(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    await _write(
        env,
        Batch(
            states=[_state("s-1", ["claude-opus-4-8", "gemini-3.8-flash"])],
            events=[_usage("e-1", "claude-opus-4-8[1m]", 11_175_000)],
        ),
    )
    assert main(["prices", "check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"price table {default_table().full_version}",
        "every model seen in the data (3) has a price",
    ]


async def test_an_empty_database_has_nothing_unpriced(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "every model seen in the data (0) has a price"


def test_an_unreachable_database_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TOKENTIDE_OPEN_MODE", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://nobody:wrong@127.0.0.1:1/none")
    assert main(["prices", "check"]) == 2
    assert capsys.readouterr().err.startswith("tokentide prices check: cannot read the database:")


def test_without_database_url_it_refuses_to_guess(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DATABASE_URL", "TOKENTIDE_DATABASE_URL", "TOKENTIDE_OPEN_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(str(tmp_path))
    assert main(["prices", "check"]) == 2
    assert "DATABASE_URL" in capsys.readouterr().err
