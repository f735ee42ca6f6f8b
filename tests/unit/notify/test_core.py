"""The notifier's pure core: payload, signature, back-off and the outcome of an attempt."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from notify.core import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Backoff,
    Outcome,
    Status,
    build_payload,
    delivery_headers,
    encode_body,
    outcome,
    retriable,
    sign,
    slack_text,
    verify_signature,
    wants,
)
from tokentide.records import SessionSignal, SignalKind

SECRET = "whsec_unit-test-secret-0123456789"
#: 2026-11-24T06:40:57.123Z
TIME_NS = 1_795_502_457_123_000_000


def signal(**changes: object) -> SessionSignal:
    fields: dict[str, object] = {
        "tenant": "acme",
        "session_id": "s-1",
        "signal_id": "g-1",
        "kind": SignalKind.CHECKPOINT_REQUESTED,
        "time_ns": TIME_NS,
        "ratio": 0.912,
        "tokens": 182_400,
        "window": 200_000,
        "requests_left": 3.4,
        "minutes_left": 7.6,
        "message": "save a checkpoint",
    }
    return SessionSignal(**(fields | changes))


def test_the_payload_has_every_field_and_a_slack_text() -> None:
    payload = build_payload(signal())
    assert payload == {
        "tenant": "acme",
        "session_id": "s-1",
        "signal_id": "g-1",
        "kind": "checkpoint_requested",
        "ratio": 0.912,
        "tokens": 182_400,
        "limit": 200_000,
        "requests_left": 3.4,
        "minutes_left": 7.6,
        "message": "save a checkpoint",
        "at": "2026-11-24T06:40:57.123000Z",
        "text": payload["text"],
    }
    text = payload["text"]
    assert text.startswith("[acme] checkpoint requested: session s-1 context 91% full")
    assert "(182,400 of 200,000 tokens)" in text
    assert "about 3 requests and 8 min left" in text
    assert text.endswith("save a checkpoint")


def test_unknown_predictions_are_null_and_left_out_of_the_text() -> None:
    quiet = signal(requests_left=None, minutes_left=float("inf"), message="")
    payload = build_payload(quiet)
    assert payload["requests_left"] is None
    assert payload["minutes_left"] is None
    assert "left" not in slack_text(quiet)
    json.loads(encode_body(payload))  # infinities would make invalid JSON


def test_the_body_is_compact_utf8_json() -> None:
    payload = build_payload(signal(message="context presque plein ✓"))
    body = encode_body(payload)
    assert body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert "✓".encode() in body
    assert json.loads(body)["message"] == "context presque plein ✓"


def test_the_signature_is_an_hmac_of_timestamp_dot_body() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, body) == f"sha256={expected}"


def test_delivery_headers_carry_timestamp_signature_and_delivery_id() -> None:
    body = encode_body(build_payload(signal()))
    headers = delivery_headers(SECRET, body, 1_700_000_000.9, "wh_1:g-1")
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    assert headers[SIGNATURE_HEADER] == sign(SECRET, 1_700_000_000, body)
    assert headers[DELIVERY_HEADER] == "wh_1:g-1"
    assert headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, body, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], 1_700_000_010)


@pytest.mark.parametrize(
    ("secret", "body", "timestamp", "signature", "now"),
    [
        ("another-secret-0123456789", b"{}", "1700000000", None, 1_700_000_000),  # wrong secret
        (SECRET, b'{"x":1}', "1700000000", None, 1_700_000_000),  # body changed
        (SECRET, b"{}", "1700000001", None, 1_700_000_000),  # timestamp changed
        (SECRET, b"{}", "1700000000", None, 1_700_000_301),  # too old: a replay
        (SECRET, b"{}", "1700000000", None, 1_699_999_699),  # too far ahead
        (SECRET, b"{}", "1700000000", "sha256=00", 1_700_000_000),  # forged
        (SECRET, b"{}", "17e8", None, 1_700_000_000),  # not an integer
        (SECRET, b"{}", None, None, 1_700_000_000),  # missing
    ],
)
def test_verification_refuses_tampering_replays_and_missing_headers(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: int
) -> None:
    genuine = sign(SECRET, 1_700_000_000, b"{}")
    assert verify_signature(SECRET, b"{}", "1700000000", genuine, 1_700_000_000)
    assert not verify_signature(secret, body, timestamp, signature or genuine, now)


def test_the_default_backoff_makes_six_attempts_over_about_five_minutes() -> None:
    backoff = Backoff()
    assert backoff.schedule() == [10, 20, 40, 80, 160]
    assert 240 <= sum(backoff.schedule()) <= 360
    assert backoff.delay_after(6) is None


def test_backoff_is_capped_and_bounded() -> None:
    backoff = Backoff(max_attempts=10, base_s=1, factor=3, max_s=30)
    assert backoff.schedule() == [1, 3, 9, 27, 30, 30, 30, 30, 30]
    assert Backoff(max_attempts=1).schedule() == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (None, True),
        (500, True),
        (503, True),
        (429, True),
        (408, True),
        (400, False),
        (404, False),
        (301, False),
    ],
)
def test_which_failures_are_retried(status: int | None, expected: bool) -> None:
    assert retriable(status) is expected


def test_the_outcome_of_an_attempt() -> None:
    backoff = Backoff(max_attempts=3, base_s=1, factor=2)
    assert outcome(1, 200, backoff) == Outcome(Status.DELIVERED)
    assert outcome(3, 204, backoff) == Outcome(Status.DELIVERED)
    assert outcome(1, 500, backoff) == Outcome(Status.FAILED, 1)
    assert outcome(2, None, backoff) == Outcome(Status.FAILED, 2)
    assert outcome(3, 500, backoff) == Outcome(Status.DEAD)
    assert outcome(1, 404, backoff) == Outcome(Status.DEAD)


def test_kind_filters() -> None:
    assert wants(None, "context_warning")
    assert wants(["context_warning", "context_critical"], "context_critical")
    assert not wants(["context_critical"], "context_warning")


def test_the_verification_recipe_in_the_docs_accepts_our_signatures() -> None:
    """docs/operations.md's few lines of Python, run as written, against real headers."""
    docs = (Path(__file__).parents[3] / "docs" / "operations.md").read_text()
    section = docs.split("## Verifying webhook signatures", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - our own documentation
    verify = namespace["verify"]
    body = encode_body(build_payload(signal()))
    headers = delivery_headers(SECRET, body, time.time(), "wh_1:g-1")
    assert verify(SECRET, body, headers)
    assert not verify(SECRET, body + b" ", headers)
    assert not verify("another-secret-0123456789", body, headers)
    old = delivery_headers(SECRET, body, time.time() - 600, "wh_1:g-1")
    assert not verify(SECRET, body, old)
