"""Per-tenant rate limits hold across replicas: three real ``tokentide ingest`` processes on one
database, clients spreading each tenant's requests over all three, far above the tenant's rate.

What is asserted, and why it is a bound and not a timing: every token a replica spends was
granted from the tenant's one bucket in PostgreSQL, which starts full (the burst) and refills
at the rate by the database's clock; a tenant that never sent anything holds no lease. So over
a window of T seconds (measured by the test from before its first request to after its last
answer, on the same machine's clock) a fresh tenant is admitted at most ``burst + rate * T``,
whatever the replicas and however slow the machine. The only slack is float rounding (one
token). Per-process buckets would admit about ``3 * (burst + rate * T)``: the test fails on
them. The lower bound (half the rate) only checks that the limit is not refusing everything;
the clients ask for many times the rate all along. Counts are totals over the window; nothing
depends on how fast the machine is, except that the exchanges must answer (none may fail: a
failing database switches replicas to ``rate / replicas`` by design, a different bound).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.captures import FIXTURES
from tests.support.processes import ServiceProcess, clean_env, metric, start_all
from tests.support.services import free_port, unique
from tokentide.admin import Policy, create_key, create_tenant

pytestmark = pytest.mark.integration

REPLICAS = 3
WINDOW_S = 8.0
WORKERS_PER_TENANT = 6
BODY = (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
REQUESTS_PER_S = 10.0
BYTES_PER_S = 8.0 * len(BODY)  # about 8 requests/s of this body
BURST_S = 2.0  # ingest's burst: 2 s at the rate


@dataclass
class Tally:
    statuses: Counter[int]
    accepted_bytes: int = 0


@pytest.fixture
def replicas(
    database: str, bootstrap: str, tmp_path: Path
) -> Iterator[tuple[list[ServiceProcess], dict[str, str]]]:
    with psycopg.connect(database, autocommit=True) as conn:
        create_tenant(conn, "by-requests", Policy(requests_per_s=REQUESTS_PER_S))
        create_tenant(conn, "by-bytes", Policy(bytes_per_s=BYTES_PER_S))
        keys = {name: create_key(conn, name).token for name in ("by-requests", "by-bytes")}
    prefix = unique("sl") + "."
    services = []
    for i in range(REPLICAS):
        port = free_port()
        env = clean_env(
            KAFKA_BOOTSTRAP=bootstrap,
            DATABASE_URL=database,
            TOKENTIDE_REDACTION_KEY="shared-limits-test",
            TOKENTIDE_REDACTION="off",
            TOKENTIDE_TOPIC_PREFIX=prefix,
            TOKENTIDE_INGEST_PORT=str(port),
            TOKENTIDE_GRPC_PORT="0",
        )
        services.append(ServiceProcess("ingest", port, env, tmp_path / f"ingest-{i}.log"))
    start_all(services)
    try:
        yield services, keys
    finally:
        for service in services:
            service.stop()


async def hammer(urls: list[str], key: str, until: float, tally: Tally, offset: int) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"}
    async with httpx.AsyncClient(timeout=30) as client:
        i = offset
        while time.monotonic() < until:
            response = await client.post(f"{urls[i % len(urls)]}/v1/logs", content=BODY, headers=headers)
            tally.statuses[response.status_code] += 1
            if response.status_code == 200:
                tally.accepted_bytes += len(BODY)
            i += 1


async def test_three_replicas_admit_one_tenant_at_its_rate_not_three_times_it(
    replicas: tuple[list[ServiceProcess], dict[str, str]],
    record_property: Callable[[str, object], None],
) -> None:
    services, keys = replicas
    urls = [s.url for s in services]
    tallies = {name: Tally(Counter()) for name in keys}
    began = time.monotonic()
    until = began + WINDOW_S
    await asyncio.gather(
        *(
            hammer(urls, keys[name], until, tallies[name], offset)
            for name in keys
            for offset in range(WORKERS_PER_TENANT)
        )
    )
    window = time.monotonic() - began

    async with httpx.AsyncClient(timeout=10) as client:
        scraped = [(await client.get(s.url + "/metrics")).text for s in services]
    exchanges = sum(metric(m, "tokentide_ingest_limit_exchanges_total", {"result": "ok"}) for m in scraped)
    failed = sum(metric(m, "tokentide_ingest_limit_exchanges_total", {"result": "failed"}) for m in scraped)
    waits = sum(metric(m, "tokentide_ingest_limit_waits_total") for m in scraped)
    requests = sum(sum(t.statuses.values()) for t in tallies.values())
    exchange_s = sum(metric(m, "tokentide_ingest_limit_exchange_seconds_sum") for m in scraped)
    exchange_ms = 1000 * exchange_s / max(1, exchanges + failed)
    # The numbers docs/operations.md quotes (in the JUnit XML, and in the failure message).
    summary = (
        f"window {window:.2f} s; by-requests {dict(tallies['by-requests'].statuses)}; "
        f"by-bytes {dict(tallies['by-bytes'].statuses)} ({tallies['by-bytes'].accepted_bytes} bytes); "
        f"{requests} requests, {exchanges:.0f} exchanges ({exchanges / requests:.3f} per request), "
        f"{waits:.0f} requests waited for one; an exchange took {exchange_ms:.1f} ms on average"
    )
    record_property("shared_limits", summary)
    assert failed == 0, "an exchange failed: the replicas limited on their own (see the module docstring)"
    assert all(s.alive() for s in services)

    by_requests = tallies["by-requests"].statuses
    assert set(by_requests) <= {200, 429}, by_requests
    assert by_requests[429] > 0
    ceiling = REQUESTS_PER_S * BURST_S + REQUESTS_PER_S * window + 1
    assert by_requests[200] <= ceiling, (summary, ceiling)
    assert by_requests[200] >= 0.5 * REQUESTS_PER_S * window, summary

    by_bytes = tallies["by-bytes"]
    assert set(by_bytes.statuses) <= {200, 429}, by_bytes.statuses
    assert by_bytes.statuses[429] > 0
    ceiling = BYTES_PER_S * BURST_S + BYTES_PER_S * window + 1
    assert by_bytes.accepted_bytes <= ceiling, (summary, ceiling)
    assert by_bytes.accepted_bytes >= 0.5 * BYTES_PER_S * window, summary

    # Not a database round trip per request: exchanges follow the clock (every 250 ms, or
    # sooner, at most every 50 ms, when a lease runs out while the bucket has tokens).
    assert exchanges <= REPLICAS * (window / 0.05 + 2), summary
    assert exchanges < requests, summary
