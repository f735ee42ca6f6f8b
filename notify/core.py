"""The notifier's pure core: what a webhook receives, how it is signed, when to try again.

No I/O here (no aiokafka, psycopg, httpx or FastAPI): payloads, signatures and the back-off
schedule are plain functions, tested in microseconds.

**The payload** (``Content-Type: application/json``, UTF-8, compact)::

    {"tenant": "acme", "session_id": "…", "signal_id": "…", "kind": "context_warning",
     "ratio": 0.81, "tokens": 162000, "limit": 200000, "requests_left": 4.2,
     "minutes_left": 11.5, "message": "…", "at": "2026-11-24T06:40:57.123000Z",
     "text": "[acme] context 81% full in session … (162,000 of 200,000 tokens) …"}

``text`` makes a Slack (or Mattermost, Discord ``/slack``) incoming-webhook URL work as is.

**The signature.** Every POST carries::

    X-Tokentide-Timestamp: <unix seconds, integer>
    X-Tokentide-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>
    X-Tokentide-Delivery: <webhook id>:<signal id>   (the same on every retry of a delivery)

The signed string is the timestamp's decimal digits, one ``.``, then the body bytes exactly as
received. A receiver recomputes the HMAC with the webhook's secret, compares in constant time,
and refuses timestamps more than a few minutes from its clock (replays):
:func:`verify_signature` does all three.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tokentide.records import SessionSignal, SignalKind

SIGNATURE_HEADER = "X-Tokentide-Signature"
TIMESTAMP_HEADER = "X-Tokentide-Timestamp"
DELIVERY_HEADER = "X-Tokentide-Delivery"
SIGNATURE_PREFIX = "sha256="
#: A receiver should refuse a timestamp further than this from its own clock.
DEFAULT_TOLERANCE_S = 300

_TITLES: dict[str, str] = {
    SignalKind.CONTEXT_WARNING: "context warning",
    SignalKind.CHECKPOINT_REQUESTED: "checkpoint requested",
    SignalKind.CONTEXT_CRITICAL: "context critical",
    SignalKind.COMPACTION_OBSERVED: "compaction observed",
}


def iso_time(time_ns: int) -> str:
    """``2026-11-24T06:40:57.123000Z`` (UTC, microseconds)."""
    moment = datetime.fromtimestamp(time_ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def slack_text(signal: SessionSignal) -> str:
    """One line for people (and Slack): tenant, what happened, how full, what is left."""
    title = _TITLES.get(signal.kind, str(signal.kind))
    parts = [
        f"[{signal.tenant}] {title}: session {signal.session_id} context {signal.ratio:.0%} full "
        f"({signal.tokens:,} of {signal.window:,} tokens)"
    ]
    left = []
    if signal.requests_left is not None and math.isfinite(signal.requests_left):
        left.append(f"about {signal.requests_left:.0f} requests")
    if signal.minutes_left is not None and math.isfinite(signal.minutes_left):
        left.append(f"{signal.minutes_left:.0f} min")
    if left:
        parts.append(" and ".join(left) + " left")
    if signal.message:
        parts.append(signal.message)
    return "; ".join(parts)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def build_payload(signal: SessionSignal) -> dict[str, Any]:
    """The JSON object a webhook receives for ``signal`` (see the module docstring)."""
    return {
        "tenant": signal.tenant,
        "session_id": signal.session_id,
        "signal_id": signal.signal_id,
        "kind": str(signal.kind),
        "ratio": signal.ratio,
        "tokens": signal.tokens,
        "limit": signal.window,
        "requests_left": _finite(signal.requests_left),
        "minutes_left": _finite(signal.minutes_left),
        "message": signal.message,
        "at": iso_time(signal.time_ns),
        "text": slack_text(signal),
    }


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The request body: compact JSON, UTF-8. What is signed is these bytes, not the object."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signed_string(timestamp: int, body: bytes) -> bytes:
    return f"{timestamp}.".encode() + body


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 under ``secret`` of ``"<timestamp>." + body``."""
    digest = hmac.new(secret.encode(), signed_string(timestamp, body), hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def delivery_headers(secret: str, body: bytes, now_s: float, delivery_id: str) -> dict[str, str]:
    """The headers of one POST of ``body`` at ``now_s`` (unix seconds)."""
    timestamp = int(now_s)
    return {
        "Content-Type": "application/json",
        "User-Agent": "tokentide-notify",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        DELIVERY_HEADER: delivery_id,
    }


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    now_s: float,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when ``signature`` is ``sign(secret, timestamp, body)`` and ``timestamp`` is within
    ``tolerance_s`` of ``now_s``: what a receiver checks (compared in constant time)."""
    if timestamp is None or signature is None or not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs(now_s - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def wants(kinds: Sequence[str] | None, kind: str) -> bool:
    """Whether a webhook with filter ``kinds`` (``None``: every kind) is sent a ``kind`` signal."""
    return kinds is None or kind in kinds


@dataclass(frozen=True, slots=True)
class Backoff:
    """When to try again: attempt ``n`` (1-based) that failed waits ``base_s * factor**(n-1)``
    seconds (at most ``max_s``) before attempt ``n + 1``; after ``max_attempts`` attempts the
    delivery is dead. The defaults, 6 attempts 10, 20, 40, 80 and 160 s apart, span ~5 minutes."""

    max_attempts: int = 6
    base_s: float = 10.0
    factor: float = 2.0
    max_s: float = 600.0

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after failed attempt ``attempt``; ``None`` when it was the last."""
        if attempt >= self.max_attempts:
            return None
        return min(self.base_s * self.factor ** (max(attempt, 1) - 1), self.max_s)

    def schedule(self) -> list[float]:
        """Every wait between attempts, in order (``max_attempts - 1`` of them)."""
        return [d for n in range(1, self.max_attempts) if (d := self.delay_after(n)) is not None]


def retriable(http_status: int | None) -> bool:
    """Whether a failed attempt may succeed later: network errors and timeouts (``None``),
    408, 425, 429 and 5xx are; any other status (another 4xx: a wrong URL, a revoked Slack hook;
    a redirect, which is not followed) is the endpoint refusing for good: dead at once."""
    if http_status is None:
        return True
    return http_status in {408, 425, 429} or http_status >= 500


def delivered(http_status: int | None) -> bool:
    return http_status is not None and 200 <= http_status < 300


class Status:
    """The states of a delivery (``webhook_deliveries.status``)."""

    PENDING = "pending"
    FAILED = "failed"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt leaves: the delivery's new status and, for ``failed``, the wait before
    the next attempt."""

    status: str
    retry_in_s: float | None = None


def outcome(attempt: int, http_status: int | None, backoff: Backoff) -> Outcome:
    """The result of attempt ``attempt`` (1-based) that got ``http_status`` (``None``: no answer:
    connection refused, timeout...)."""
    if delivered(http_status):
        return Outcome(Status.DELIVERED)
    delay = backoff.delay_after(attempt) if retriable(http_status) else None
    return Outcome(Status.DEAD) if delay is None else Outcome(Status.FAILED, delay)
