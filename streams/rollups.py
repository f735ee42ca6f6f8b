"""Pure: per-minute usage of a session, per model, as increments that always sum to its totals.

Each raw message's rollups are what it *added* to each (minute, model): the sink adds them to
the stored minute exactly once (it records the Kafka positions it applied in the same
transaction), and the stream stage emits them in the same Kafka transaction as the state
they came from. So nothing here remembers minutes: late data of any age lands in its own
minute, a timestamp far ahead or behind changes nothing for the others, and the state stays
the same size whatever the session's age.

The invariant, per session: the sum of every rollup increment ever emitted equals the
session's totals (tokens by type, cost, API requests, API errors). :func:`settle` enforces
it: whatever the records of a message explain is attributed to their own minutes; what they
do not (the rounding of a metrics-only session's float sums, or the one switch of a session
from metric totals to event totals, decision 10) is put on the newest minute the message
touched, so the sums stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokentide.records import Event, EventKind, Rollup, Tokens

MINUTE_NS = 60 * 1_000_000_000
#: Positions in a bucket: input, output, cache_read, cache_creation, reasoning, cost_nanos,
#: requests, errors.
WIDTH = 8
UNKNOWN_MODEL = "unknown"

#: (minute_ns, model) -> the 8 counts above.
Buckets = dict[tuple[int, str], list[int]]


def minute_of(time_ns: int) -> int:
    return time_ns - time_ns % MINUTE_NS


def _bucket(buckets: Buckets, time_ns: int, model: str | None) -> list[int]:
    key = (minute_of(time_ns), model or UNKNOWN_MODEL)
    bucket = buckets.get(key)
    if bucket is None:
        bucket = buckets[key] = [0] * WIDTH
    return bucket


def add_event(buckets: Buckets, event: Event) -> None:
    """Count a new usage or API error event into its minute (other kinds count nothing)."""
    if event.kind == EventKind.API_ERROR:
        _bucket(buckets, event.time_ns, event.model)[7] += 1
    elif event.kind == EventKind.USAGE:
        bucket = _bucket(buckets, event.time_ns, event.model)
        tokens = event.tokens or Tokens()
        bucket[0] += tokens.input
        bucket[1] += tokens.output
        bucket[2] += tokens.cache_read
        bucket[3] += tokens.cache_creation
        bucket[4] += tokens.reasoning
        bucket[5] += event.cost_nanos or 0
        bucket[6] += 1


def add_amounts(
    buckets: Buckets, time_ns: int, model: str | None, amounts: Iterable[tuple[int, int]]
) -> None:
    """Add ``(position, amount)`` pairs to the minute of ``time_ns`` (metrics-only sessions)."""
    bucket = _bucket(buckets, time_ns, model)
    for position, amount in amounts:
        bucket[position] += amount


def totals_vector(tokens: Tokens, cost_nanos: int, requests: int, errors: int) -> list[int]:
    """A session's totals in bucket order."""
    return [
        tokens.input,
        tokens.output,
        tokens.cache_read,
        tokens.cache_creation,
        tokens.reasoning,
        cost_nanos,
        requests,
        errors,
    ]


def settle(buckets: Buckets, rolled: list[int], target: list[int], fallback: tuple[int, str]) -> None:
    """Make ``buckets`` add up to ``target - rolled`` and move ``rolled`` to ``target``.

    What the buckets do not explain goes to the newest bucket of the message (``fallback``,
    a (time_ns, model), when it has none).
    """
    explained = [sum(bucket[i] for bucket in buckets.values()) for i in range(WIDTH)]
    residual = [t - r - e for t, r, e in zip(target, rolled, explained, strict=True)]
    if any(residual):
        bucket = buckets[max(buckets)] if buckets else _bucket(buckets, *fallback)
        for i, amount in enumerate(residual):
            bucket[i] += amount
    rolled[:] = target


def records(
    buckets: Buckets,
    *,
    tenant: str,
    session_id: str,
    user_id: str | None,
    agent: str,
) -> list[Rollup]:
    """The non-zero buckets as rollup increments, oldest minute first."""
    out = []
    for (minute, model), bucket in sorted(buckets.items()):
        if not any(bucket):
            continue
        out.append(
            Rollup(
                tenant=tenant,
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                model=model,
                minute_ns=minute,
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
                increment=True,
            )
        )
    return out
