"""How the sink reads errors (by SQLSTATE, never by message) and what a dead letter holds."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import errors

from sinks.base import Origin, dead_letter
from sinks.postgres.writer import poison, retriable
from tokentide.records import Event


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("connection refused"),
        errors.AdminShutdown(),  # 57P01: the server is shutting down
        errors.QueryCanceled(),  # 57014: statement_timeout, a slow database
        errors.DeadlockDetected(),  # 40P01
        errors.LockNotAvailable(),  # 55P03
        errors.DiskFull(),  # 53100
    ],
)
def test_database_trouble_is_retried_not_dead_lettered(exc: Exception) -> None:
    assert retriable(exc)
    assert not poison(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.NumericValueOutOfRange(),  # 22003
        errors.CheckViolation(),  # 23514: no partition for the row
        errors.NotNullViolation(),  # 23502
        errors.UntranslatableCharacter(),  # 22P05
        UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates not allowed"),
        OverflowError("int too big to convert"),
    ],
)
def test_values_postgresql_refuses_are_poison(exc: Exception) -> None:
    assert poison(exc)
    assert not retriable(exc)


def test_a_missing_table_is_neither_poison_nor_silently_dropped() -> None:
    # 42P01 (not migrated yet): not the data's fault; the writer reports it as unavailable.
    assert not poison(errors.UndefinedTable())


def test_a_dead_letter_says_where_from_why_and_what() -> None:
    event = Event(tenant="acme", session_id="s", event_id="e", agent="a", name="n", time_ns=1)
    letter = json.loads(
        dead_letter(Origin("events", 2, 41, b"acme/s"), "events", "out of range", "22003", event)
    )
    assert letter["source"] == {"topic": "events", "partition": 2, "offset": 41}
    assert (letter["table"], letter["reason"], letter["sqlstate"]) == ("events", "out of range", "22003")
    assert letter["record"]["event_id"] == "e"
    raw = json.loads(dead_letter(Origin("events", 0, 7), "events", "undecodable", None, b"\xff"))
    assert raw["value_base64"] == "/w=="
