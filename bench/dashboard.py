"""Dashboard API benchmark: latency of ``GET /api/v1/sessions`` over 10,000 sessions and of
``GET /api/v1/usage`` over 30 days of per-minute rollups (not a test).

On the PostgreSQL given by DATABASE_URL (``make bench-dashboard`` provides one): a fresh,
migrated database is filled server-side (``generate_series``) with ``--sessions`` sessions of
one tenant spread over 30 days, each with ``--minutes`` rollup rows for two models; one
``tokentide dashboard`` process serves it; each route is called ``--requests`` times one after
the other, after a warm-up, and the latencies reported as p50 / p99 / max.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.services import admin_database_url, create_database, drop_database, free_port  # noqa: E402

SEED_SESSIONS = """
INSERT INTO sessions (tenant_id, session_id, agent, service_name, user_id, started_at, last_seen_at,
                      input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens,
                      cost_usd, api_requests, events, models, context_tokens, context_window,
                      context_model, state_version, attributes)
SELECT 'default', 'bench-' || i, 'claude_code', 'claude-code', 'user-' || (i %% 400),
       now() - make_interval(mins => i * 4) - interval '1 hour', now() - make_interval(mins => i * 4),
       1000 * i %% 90000, 20 * i %% 9000, 5000 * i %% 900000, 300 * i %% 30000,
       (i %% 997) / 100.0, i %% 300, i %% 900, ARRAY['claude-opus-4-8', 'claude-haiku-4-5'],
       (i * 37) %% 200000, 200000, 'claude-opus-4-8', 1,
       jsonb_build_object('team', 'team-' || (i %% 25))
  FROM generate_series(1, %(sessions)s) AS i
"""
SEED_ROLLUPS = """
INSERT INTO rollups_minute (tenant_id, session_id, model, minute, user_id, agent, input_tokens,
                            output_tokens, cache_read_tokens, cache_creation_tokens,
                            reasoning_tokens, cost_usd, requests, errors)
SELECT 'default', 'bench-' || i, m.model,
       date_trunc('minute', now() - make_interval(mins => i * 4 + j)), 'user-' || (i %% 400),
       'claude_code', 1200, 40, 4500, 300, 0, 0.0115, 2, 0
  FROM generate_series(1, %(sessions)s) AS i,
       generate_series(0, %(minutes)s - 1) AS j,
       (VALUES ('claude-opus-4-8'), ('claude-haiku-4-5')) AS m (model)
"""

SEED_HOURS = """
INSERT INTO rollups_hour (tenant_id, session_id, model, hour, user_id, agent, input_tokens,
                          output_tokens, cache_read_tokens, cache_creation_tokens,
                          reasoning_tokens, cost_usd, requests, errors)
SELECT tenant_id, session_id, model,
       date_bin(INTERVAL '1 hour', minute, TIMESTAMPTZ '2000-01-03 00:00:00+00'), max(user_id),
       max(agent), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens),
       sum(cache_creation_tokens), sum(reasoning_tokens), sum(cost_usd), sum(requests), sum(errors)
  FROM rollups_minute GROUP BY 1, 2, 3, 4
"""


def start_dashboard(dsn: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    env.update(DATABASE_URL=dsn, TOKENTIDE_OPEN_MODE="1", TOKENTIDE_DASHBOARD_PORT=str(port))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("tokentide")), "dashboard"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"dashboard not ready in 30 s:\n{log.read_text()[-2000:]}")


def measure(client: httpx.Client, url: str, requests: int) -> list[float]:
    for _ in range(10):  # warm-up: connections, plans, caches
        client.get(url).raise_for_status()
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        client.get(url).raise_for_status()
        latencies.append(time.perf_counter() - started)
    return sorted(latencies)


def report(name: str, latencies: list[float]) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{name}: p50 {1000 * q[49]:.1f} ms  p99 {1000 * q[98]:.1f} ms  max {1000 * latencies[-1]:.1f} ms "
        f"({len(latencies)} requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--minutes", type=int, default=30, help="rollup minutes per session (x2 models)")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    admin_url = admin_database_url()
    dsn = create_database(admin_url)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            started = time.perf_counter()
            params = {"sessions": args.sessions, "minutes": args.minutes}
            conn.execute(SEED_SESSIONS, params)
            conn.execute(SEED_ROLLUPS, params)
            conn.execute(SEED_HOURS)  # what the sink does after writing minutes
            conn.execute("ANALYZE")
            rollups = conn.execute("SELECT count(*) FROM rollups_minute").fetchone()
        print(
            f"seeded {args.sessions} sessions and {rollups[0] if rollups else 0} minute rollups over 30 days "
            f"in {time.perf_counter() - started:.1f} s"
        )
        with tempfile.TemporaryDirectory(prefix="tokentide-bench-") as tmp:
            process, url = start_dashboard(dsn, Path(tmp) / "dashboard.log")
            try:
                with httpx.Client(timeout=10) as client:
                    report(
                        "GET /api/v1/sessions (first page of 100)",
                        measure(client, url + "/api/v1/sessions", args.requests),
                    )
                    report(
                        "GET /api/v1/sessions?team=team-3&active=false",
                        measure(client, url + "/api/v1/sessions?team=team-3&active=false", args.requests),
                    )
                    for group_by in ("model", "team", "day"):
                        report(
                            f"GET /api/v1/usage?group_by={group_by} (30 days)",
                            measure(client, url + f"/api/v1/usage?group_by={group_by}", args.requests),
                        )
            finally:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(30)
    finally:
        drop_database(admin_url, dsn)


if __name__ == "__main__":
    main()
