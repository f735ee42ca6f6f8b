"""EXPLAIN of the dashboard's queries and of the query shapes Grafana panels use, on realistic
volumes in the plain layout: no sequential scan of a raw table (events, metric_points or any
of their partitions that holds rows). The partitions created ahead for the coming days are
empty; a sequential scan of an empty partition reads nothing and is what the planner rightly
picks for it, so those are allowed.

Volumes: 20 tenants, 2 000 sessions, 240 000 events and 240 000 metric points over 8 days,
rollups per minute and hour, signals; then ANALYZE, as autovacuum would have done.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from dashboard import (
    compare,
    filters,
    plans,
    project_list,
    queries,
    recommendations,
    session_forecast,
    timeline,
)
from tests.support.services import create_database, drop_database

pytestmark = pytest.mark.integration

RAW_TABLES = ("events", "metric_points")
TENANT = "tenant-7"
SESSION = "tenant-7-s-107"
NOW = datetime.now(UTC).replace(microsecond=0)

SEED = """
SELECT tokentide_create_partitions(parent, (now() AT TIME ZONE 'UTC')::date - 8,
                                   (now() AT TIME ZONE 'UTC')::date)
  FROM unnest(ARRAY['events', 'metric_points']) AS parent;
INSERT INTO tenants (tenant_id) SELECT 'tenant-' || t FROM generate_series(0, 19) AS t;
INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at, context_window, state_version)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'claude_code',
       now() - (s % 190) * INTERVAL '1 hour', now() - (s % 180) * INTERVAL '1 hour', 200000, 1
  FROM generate_series(0, 1999) AS s;
INSERT INTO events (tenant_id, session_id, event_id, ts, agent, name, model, input_tokens, output_tokens,
                    cost_usd, attributes)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'e-' || i,
       now() - i * INTERVAL '2.875 seconds', 'claude_code',
       CASE WHEN i % 3 = 0 THEN 'api_request' ELSE 'tool_result' END, 'claude-opus-4-8', i % 5000, i % 700,
       (i % 1000) / 1000.0, '{"k": "v"}'
  FROM generate_series(0, 239999) AS i, LATERAL (SELECT i % 2000 AS s) AS x;
INSERT INTO metric_series (tenant_id, series_id, session_id, agent, name, unit, attributes, first_seen)
SELECT 'tenant-' || (s % 20), 'series-' || s || '-' || k, 'tenant-' || (s % 20) || '-s-' || s, 'claude_code',
       'claude_code.token.usage', 'tokens', jsonb_build_object('type', k), now() - INTERVAL '8 days'
  FROM generate_series(0, 1999) AS s, generate_series(0, 3) AS k;
INSERT INTO metric_points (tenant_id, series_id, ts, start_ts, value, temporality)
SELECT 'tenant-' || (s % 20), 'series-' || s || '-' || (i % 4), now() - i * INTERVAL '2.875 seconds',
       now() - INTERVAL '9 days', i, 1
  FROM generate_series(0, 239999) AS i, LATERAL (SELECT (i / 4) % 2000 AS s) AS x;
INSERT INTO rollups_minute (tenant_id, session_id, model, minute, agent, input_tokens, output_tokens,
                            cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd,
                            requests, errors)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'claude-opus-4-8',
       date_bin('1 minute', now() - m * INTERVAL '1 minute', TIMESTAMPTZ '2000-01-03'), 'claude_code',
       m, 1, 1, 1, 0, 0.01, 1, 0
  FROM generate_series(0, 1999) AS s, generate_series(0, 29) AS m;
INSERT INTO rollups_hour
SELECT tenant_id, session_id, model, date_bin('1 hour', minute, TIMESTAMPTZ '2000-01-03'), max(user_id),
       max(agent), sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_creation_tokens),
       sum(reasoning_tokens), sum(cost_usd), sum(requests), sum(errors)
  FROM rollups_minute GROUP BY 1, 2, 3, 4;
INSERT INTO signals (tenant_id, session_id, signal_id, kind, ts, ratio, tokens, context_window)
SELECT 'tenant-' || (s % 20), 'tenant-' || (s % 20) || '-s-' || s, 'g-' || k, 'context_warning',
       now() - k * INTERVAL '1 hour', 0.8, 160000, 200000
  FROM generate_series(0, 1999) AS s, generate_series(0, 2) AS k;
ANALYZE;
"""

#: What the Grafana panels ask of the raw tables and
#: the rollups: one session's timeline, a tenant's recent requests, a session's metric points,
#: a tenant's usage per hour and per model.
GRAFANA_QUERIES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "session_timeline": (
        "SELECT ts, name, model, input_tokens, output_tokens, cost_usd FROM events"
        " WHERE tenant_id = %s AND session_id = %s ORDER BY ts",
        (TENANT, SESSION),
    ),
    "recent_requests": (
        "SELECT ts, session_id, model, input_tokens, cost_usd FROM events"
        " WHERE tenant_id = %s AND ts >= %s AND name = 'api_request' ORDER BY ts DESC LIMIT 200",
        (TENANT, NOW - timedelta(hours=1)),
    ),
    "requests_per_minute": (
        "SELECT date_bin('1 minute', ts, TIMESTAMPTZ '2000-01-03'), count(*) FROM events"
        " WHERE tenant_id = %s AND ts >= %s AND ts < %s GROUP BY 1 ORDER BY 1",
        (TENANT, NOW - timedelta(hours=6), NOW),
    ),
    "session_points": (
        "SELECT s.name, s.attributes ->> 'type', p.ts, p.value"
        "  FROM metric_series s"
        "  JOIN metric_points p ON p.tenant_id = s.tenant_id AND p.series_id = s.series_id"
        " WHERE s.tenant_id = %s AND s.session_id = %s AND p.ts >= %s ORDER BY p.ts",
        (TENANT, SESSION, NOW - timedelta(days=1)),
    ),
    "usage_per_hour": (
        "SELECT date_bin('1 hour', hour, TIMESTAMPTZ '2000-01-03'), model, sum(input_tokens), sum(cost_usd)"
        "  FROM rollups_hour WHERE tenant_id = %s AND hour >= %s GROUP BY 1, 2 ORDER BY 1",
        (TENANT, NOW - timedelta(days=7)),
    ),
    "usage_per_minute": (
        "SELECT minute, sum(input_tokens) FROM rollups_minute WHERE tenant_id = %s AND minute >= %s"
        " GROUP BY 1 ORDER BY 1",
        (TENANT, NOW - timedelta(hours=1)),
    ),
}
_PAGE, _COUNT, _ = filters.list_sessions(filters.SessionFilter(), "team")
_FROM, _TO = NOW - timedelta(days=1, minutes=17), NOW
_RANGE = {
    "tenant": TENANT,
    "from": _FROM,
    "to": _TO,
    "from_hour": filters.hour_bounds(_FROM, _TO)[0],
    "to_hour": filters.hour_bounds(_FROM, _TO)[1],
    "team_key": "team",
}
#: The recommendations' and the comparison's 30-day window.
_INSIGHTS = {
    "tenant": TENANT,
    "from": NOW - timedelta(days=30),
    "to": NOW,
    "team_key": "team",
    "thresholds": [100_000, 200_000, 272_000],
    "storm_min": recommendations.STORM_MIN_ERRORS,
    "idle_s": recommendations.IDLE_MIN_S,
    "idle_context": recommendations.IDLE_MIN_CONTEXT,
}
#: One smaller-model candidate (the arrays the route builds with movable_params).
_MOVABLE = {
    **_INSIGHTS,
    "c_idx": [0],
    "c_project": ["web"],
    "c_source": ["repl_main_thread"],
    "c_agent": [""],
    "c_model": ["claude-opus-4-8"],
    "c_prompt": [2000],
    "c_output": [500],
}
_TIMELINE = {"tenant": TENANT, "session": SESSION, "limit": timeline.DEFAULT_LIMIT}
_PROJECT_PAGE, _, _ = filters.list_sessions(filters.SessionFilter(project="api"), "team")
_PROJECT = {"tenant": TENANT, "project": "api", "idle_after": queries.IDLE_AFTER}
DASHBOARD_QUERIES: dict[str, tuple[str, Any]] = {
    "get_session": (queries.GET_SESSION, (TENANT, SESSION)),
    "list_sessions": (_PAGE, {"tenant": TENANT, "limit": 100, "offset": 0}),
    "count_sessions": (_COUNT, {"tenant": TENANT}),
    "session_signals": (queries.SESSION_SIGNALS, (TENANT, SESSION)),
    "timeline_session": (timeline.SESSION_EXISTS, _TIMELINE),
    "timeline_events": (timeline.TIMELINE_EVENTS, _TIMELINE),
    "timeline_signals": (timeline.TIMELINE_SIGNALS, _TIMELINE),
    **{f"usage_by_{g.value}": (filters.usage(g), _RANGE) for g in filters.GroupBy},
    **{f"compare_by_{g.value}": (compare.compare_sql(g), _INSIGHTS) for g in compare.CompareBy},
    "recommendations_cache": (recommendations.CACHE_SQL, _INSIGHTS),
    "recommendations_compactions": (recommendations.COMPACTION_SQL, _INSIGHTS),
    "recommendations_patterns": (recommendations.PATTERNS_SQL, _INSIGHTS),
    "recommendations_movable": (recommendations.MOVABLE_SQL, _MOVABLE),
    "recommendations_project_errors": (recommendations.PROJECT_ERRORS_SQL, _INSIGHTS),
    "recommendations_storms": (recommendations.STORM_SQL, _INSIGHTS),
    "recommendations_idle": (recommendations.IDLE_SQL, _INSIGHTS),
    "list_sessions_of_project": (
        _PROJECT_PAGE,
        {"tenant": TENANT, "project": "api", "limit": 100, "offset": 0},
    ),
    "session_forecast_history": (
        session_forecast.HISTORY_OF,
        {
            "tenant": TENANT,
            "projects": ["api"],
            "ended_after": queries.ENDED_AFTER,
            "history": session_forecast.HISTORY_SESSIONS,
            "history_window": session_forecast.HISTORY_WINDOW,
        },
    ),
    "projects": (project_list.PROJECTS, _PROJECT | {"limit": 200}),
    "project": (project_list.PROJECT, _PROJECT),
    "project_sessions": (project_list.PROJECT_SESSIONS, _PROJECT | {"limit": 200}),
    "session_projects": (project_list.SESSION_PROJECTS, {"tenant": TENANT, "sessions": [SESSION]}),
    "latest_plans": (plans.LATEST_PLANS, {"tenant": TENANT, "sessions": [SESSION]}),
    "plan_history": (plans.PLAN_HISTORY, _TIMELINE),
}


@pytest.fixture(scope="module")
def loaded(admin_url: str) -> Iterator[str]:
    dsn = create_database(admin_url)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
    yield dsn
    drop_database(admin_url, dsn)


def scans(plan: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(node type, relation) of every scan in an EXPLAIN (FORMAT JSON) plan."""
    if "Relation Name" in plan:
        yield plan["Node Type"], plan["Relation Name"]
    for child in plan.get("Plans", ()):
        yield from scans(child)


def raw(relation: str) -> bool:
    return any(relation == t or relation.startswith(f"{t}_p") for t in RAW_TABLES)


def test_the_seed_is_realistic(loaded: str) -> None:
    with psycopg.connect(loaded) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM metric_points),"
            " (SELECT count(*) FROM events WHERE tenant_id = %s)",
            (TENANT,),
        ).fetchone()
    assert counts == (240_000, 240_000, 12_000)


@pytest.mark.parametrize("name", [*DASHBOARD_QUERIES, *GRAFANA_QUERIES])
def test_no_sequential_scan_of_a_raw_table(loaded: str, name: str) -> None:
    query, params = {**DASHBOARD_QUERIES, **GRAFANA_QUERIES}[name]
    with psycopg.connect(loaded) as conn:
        row = conn.execute(f"EXPLAIN (FORMAT JSON) {query}", params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    found = list(scans(row[0][0]["Plan"]))
    assert found, f"{name}: no scan at all?"
    seq = [relation for node, relation in found if node == "Seq Scan" and raw(relation)]
    with psycopg.connect(loaded) as conn:
        populated = [
            str(r[0])
            for r in conn.execute(
                "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND reltuples > 0", (seq,)
            )
        ]
    assert populated == [], f"{name} scans {populated} sequentially: {found}"
