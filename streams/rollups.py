"""Pure: per-minute usage of a session, per model, with overwrite semantics.

The stream stage keeps the recent minutes of each session in its state and, for every
message, emits the *full* value of each minute the message touched; the sink overwrites the
row (``SET col = EXCLUDED.col``). A redelivered or re-emitted rollup therefore never adds up
twice, and no window-close callback is needed (faust-notes.md: ``on_window_close`` is
unreliable). Minutes older than ``KEEP_MINUTES`` before the newest one are final and dropped
from the state.
"""

from __future__ import annotations

from tokentide.records import Event, EventKind, Rollup, Tokens

MINUTE_NS = 60 * 1_000_000_000
KEEP_MINUTES = 120
#: Positions in a stored bucket: input, output, cache_read, cache_creation, reasoning,
#: cost_nanos, requests, errors.
_WIDTH = 8


def bucket_key(event: Event) -> str | None:
    """``"<minute_ns>|<model>"`` for usage and API error events, else None."""
    if event.kind not in (EventKind.USAGE, EventKind.API_ERROR):
        return None
    minute = event.time_ns - event.time_ns % MINUTE_NS
    return f"{minute}|{event.model or 'unknown'}"


def add(buckets: dict[str, list[int]], event: Event) -> str | None:
    """Add ``event`` to its minute bucket; returns the bucket's key (None if not counted)."""
    key = bucket_key(event)
    if key is None:
        return None
    bucket = buckets.setdefault(key, [0] * _WIDTH)
    if event.kind is EventKind.API_ERROR:
        bucket[7] += 1
        return key
    tokens = event.tokens or Tokens()
    bucket[0] += tokens.input
    bucket[1] += tokens.output
    bucket[2] += tokens.cache_read
    bucket[3] += tokens.cache_creation
    bucket[4] += tokens.reasoning
    bucket[5] += event.cost_nanos or 0
    bucket[6] += 1
    return key


def prune(buckets: dict[str, list[int]]) -> None:
    """Forget minutes more than ``KEEP_MINUTES`` older than the newest one."""
    if not buckets:
        return
    newest = max(int(key.split("|", 1)[0]) for key in buckets)
    horizon = newest - KEEP_MINUTES * MINUTE_NS
    for key in [k for k in buckets if int(k.split("|", 1)[0]) < horizon]:
        del buckets[key]


def records(
    buckets: dict[str, list[int]],
    keys: set[str],
    *,
    tenant: str,
    session_id: str,
    user_id: str | None,
    agent: str,
) -> list[Rollup]:
    """The full current value of each bucket in ``keys`` (those still kept)."""
    out = []
    for key in sorted(keys):
        bucket = buckets.get(key)
        if bucket is None:
            continue
        minute, model = key.split("|", 1)
        out.append(
            Rollup(
                tenant=tenant,
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                model=model,
                minute_ns=int(minute),
                tokens=Tokens(
                    input=bucket[0],
                    output=bucket[1],
                    cache_read=bucket[2],
                    cache_creation=bucket[3],
                    reasoning=bucket[4],
                ),
                cost_nanos=bucket[5],
                requests=bucket[6],
                errors=bucket[7],
            )
        )
    return out
