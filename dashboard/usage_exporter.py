"""Usage metrics for Prometheus: tokens, cost and context per tenant, team, model and session.

``GET /metrics/usage`` on the dashboard service (a registry of its own, apart from the
service's ``/metrics``). Each scrape runs a few aggregate queries in one read-only
transaction (:func:`fetch_snapshot`) and renders them through :class:`UsageCollector`, a
prometheus_client custom collector over that snapshot. The queries run in the route, not in
``collect()``: prometheus_client calls ``collect()`` synchronously, and the dashboard's pool is
asynchronous.

Who sees what (``dashboard.auth``, ``Access.METRICS``): Prometheus scrapes with the scrape
token (``TOKENTIDE_METRICS_TOKEN``, ``Authorization: Bearer``) and sees every tenant; a tenant's
read key or web session sees that tenant's series only; the admin token sees every tenant;
``?tenant=`` narrows to one. Without credentials the route is 401 (open mode: tenant
``default``'s, unauthenticated).

What is exposed (the families are listed in :data:`FAMILIES`):

- ``tokentide_usage_tokens_total{tenant,team,model,type}``, ``tokentide_usage_cost_usd_total``
  and ``tokentide_usage_requests_total{tenant,team,model}``: **totals so far**, since the first
  record, summed from ``rollups_hour`` per session and model (a session's rollups always sum to
  its totals, a metrics-only session's too, by the models its metrics name). Neither
  ``rollups_hour`` nor ``sessions`` is touched by retention (only raw ``events`` and
  ``metric_points`` are), so the totals never shrink when old partitions go: ``increase()`` and
  ``rate()`` work over any range. ``type`` is ``input``, ``output``, ``cache_read``,
  ``cache_creation`` and ``reasoning``; ``reasoning`` is the part of ``output`` spent thinking,
  so leave it out when adding types up. ``team`` is the session's team resource attribute
  (``OTEL_RESOURCE_ATTRIBUTES=team=...``; which attribute: ``TOKENTIDE_TEAM_ATTRIBUTE``,
  default ``team``), ``unset`` when it has none.
- Counters also never go down within one exporter process: each series is reported as the
  highest value it has had (a session switching from metric to event totals can move usage
  between models; Prometheus would read a lower value as a counter reset and count the whole
  total again). A restart reads the database totals again.
- ``tokentide_usage_signals_total{tenant,kind}``: context signals raised so far (the
  ``signals`` table, never pruned).
- ``tokentide_sessions_active{tenant}``: sessions seen within ``usage_active_within_s``.
- ``tokentide_session_context_ratio{tenant,session,agent,user}``: context / window of the
  ``usage_top_sessions`` active sessions of each tenant with the fullest context; the other
  active sessions of the tenant are summarised as
  ``tokentide_sessions_context_ratio_others{tenant}`` (how many) and
  ``tokentide_sessions_context_ratio_others_max{tenant}`` (the highest ratio among them).
  Cardinality is bounded by tenants x (top N + a few).
- ``tokentide_budget_usd``, ``tokentide_budget_spend_usd`` and
  ``tokentide_budget_forecast_usd{tenant,scope,value,period}`` (issue 17): each budget's amount,
  its spend in the current period so far and the forecast at the period's end, the numbers of
  ``GET /api/v1/budgets`` (``dashboard.budget_store``); ``value`` is "" for a tenant budget.
- ``tokentide_signals_open{tenant,kind}``: active sessions whose last ``context_warning``,
  ``checkpoint_requested`` or ``context_critical`` was raised after their last compaction
  (``compaction_observed``), i.e. still standing.

Every tenant of the ``tenants`` table gets its gauges (zero when idle), so alert expressions
need no ``absent()``. When the database cannot answer, the route answers 503: Prometheus marks
the scrape failed (``up == 0``) and the series go stale, rather than dropping to zero.
Several dashboard replicas report the same totals: aggregate with ``max`` over instances
before summing (the alert rules in ``k8s/tokentide/files/prometheus/alerts.yml`` do).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from pydantic import BaseModel, ConfigDict, Field

from dashboard import budget_store

log = logging.getLogger(__name__)

#: The route, next to the service's own ``/metrics``.
USAGE_METRICS_PATH = "/metrics/usage"
TOKEN_TYPES = ("input", "output", "cache_read", "cache_creation", "reasoning")
#: Signal kinds that stay raised until the session compacts (``compaction_observed`` is an event).
LEVEL_KINDS = ("context_warning", "checkpoint_requested", "context_critical")
#: Team label of a session without the team attribute.
NO_TEAM = "unset"


class UsageMetricsSettings(BaseModel):
    """Settings of the usage exporter. Built from the dashboard's settings object by attribute
    (:meth:`of`): fields it lacks keep these defaults, so ``DashboardSettings`` can grow them
    (``TOKENTIDE_USAGE_TOP_SESSIONS`` ...) without this module changing. ``team_attribute`` is
    the dashboard's own setting of that name."""

    model_config = ConfigDict(from_attributes=True, extra="ignore", frozen=True)

    #: Active sessions per tenant exported one by one (by highest context ratio).
    usage_top_sessions: int = Field(default=10, ge=0, le=1000)
    #: A session seen within this many seconds is active (the dashboard's "idle" is 5 min).
    usage_active_within_s: float = Field(default=300.0, gt=0)
    #: The session resource attribute that names its team (the dashboard's
    #: ``TOKENTIDE_TEAM_ATTRIBUTE``, shared with its API).
    team_attribute: str = Field(default="team", min_length=1)
    #: Scrapes within this many seconds of the last query reuse its result (several
    #: Prometheus servers scraping the same replica query the database once).
    usage_cache_s: float = Field(default=5.0, ge=0)
    #: Statement timeout of the scrape's queries (keep it under Prometheus' scrape timeout).
    usage_query_timeout_s: float = Field(default=8.0, gt=0, le=300)

    @classmethod
    def of(cls, settings: object) -> UsageMetricsSettings:
        """These settings from any object carrying some of the fields (e.g. DashboardSettings)."""
        if isinstance(settings, UsageMetricsSettings):
            return settings
        return cls.model_validate(settings)


# --------------------------------------------------------------------------- snapshot (pure)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Totals so far of one (tenant, team, model)."""

    tenant: str
    team: str
    model: str
    tokens: dict[str, int]
    cost_usd: Decimal
    requests: int


@dataclass(frozen=True, slots=True)
class SessionRatio:
    tenant: str
    session: str
    agent: str
    user: str
    ratio: float


@dataclass(frozen=True, slots=True)
class TenantActivity:
    tenant: str
    active: int
    #: Active sessions not exported one by one, and the highest ratio among them.
    others: int
    others_max: float


@dataclass(frozen=True, slots=True)
class BudgetSeries:
    """One budget at the scrape (``dashboard.budget_store.evaluate``: what the API shows)."""

    tenant: str
    scope: str
    value: str
    period: str
    amount_usd: float
    spend_usd: float
    forecast_usd: float


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read from the database."""

    tenants: tuple[str, ...]
    usage: tuple[UsageTotals, ...] = ()
    top_sessions: tuple[SessionRatio, ...] = ()
    activity: tuple[TenantActivity, ...] = ()
    #: (tenant, kind) -> signals raised so far.
    signals_total: dict[tuple[str, str], int] = field(default_factory=dict)
    #: (tenant, kind) -> active sessions with that signal standing.
    signals_open: dict[tuple[str, str], int] = field(default_factory=dict)
    budgets: tuple[BudgetSeries, ...] = ()
    query_seconds: float = 0.0

    def of_tenant(self, tenant: str | None) -> Snapshot:
        """What one tenant may see of this snapshot (``None``: everything)."""
        if tenant is None:
            return self
        return Snapshot(
            tenants=tuple(t for t in self.tenants if t == tenant),
            usage=tuple(u for u in self.usage if u.tenant == tenant),
            top_sessions=tuple(s for s in self.top_sessions if s.tenant == tenant),
            activity=tuple(a for a in self.activity if a.tenant == tenant),
            signals_total={k: v for k, v in self.signals_total.items() if k[0] == tenant},
            signals_open={k: v for k, v in self.signals_open.items() if k[0] == tenant},
            budgets=tuple(b for b in self.budgets if b.tenant == tenant),
            query_seconds=self.query_seconds,
        )


#: Every family :func:`families` yields (names as exposed, ``_total`` included).
FAMILIES = (
    "tokentide_usage_tokens_total",
    "tokentide_usage_cost_usd_total",
    "tokentide_usage_requests_total",
    "tokentide_usage_signals_total",
    "tokentide_sessions_active",
    "tokentide_session_context_ratio",
    "tokentide_sessions_context_ratio_others",
    "tokentide_sessions_context_ratio_others_max",
    "tokentide_signals_open",
    "tokentide_budget_usd",
    "tokentide_budget_spend_usd",
    "tokentide_budget_forecast_usd",
    "tokentide_usage_query_seconds",
)


class Monotonic:
    """Highest value reported per counter series: totals so far never go down in one process."""

    def __init__(self) -> None:
        self._high: dict[tuple[str, tuple[str, ...]], float] = {}

    def __call__(self, family: str, labels: tuple[str, ...], value: float) -> float:
        key = (family, labels)
        high = max(self._high.get(key, value), value)
        self._high[key] = high
        return high

    def __len__(self) -> int:
        return len(self._high)


def families(snapshot: Snapshot, monotonic: Monotonic) -> Iterator[Metric]:
    """The metric families of ``snapshot`` (counters through ``monotonic``)."""
    tokens = CounterMetricFamily(
        "tokentide_usage_tokens",
        "Tokens used so far, by tenant, team, model and type (reasoning is part of output).",
        labels=["tenant", "team", "model", "type"],
    )
    cost = CounterMetricFamily(
        "tokentide_usage_cost_usd",
        "Cost so far in US dollars, by tenant, team and model.",
        labels=["tenant", "team", "model"],
    )
    requests = CounterMetricFamily(
        "tokentide_usage_requests",
        "Model API requests so far, by tenant, team and model.",
        labels=["tenant", "team", "model"],
    )
    for row in snapshot.usage:
        key = (row.tenant, row.team, row.model)
        for kind in TOKEN_TYPES:
            labels = (*key, kind)
            tokens.add_metric(labels, monotonic(tokens.name, labels, float(row.tokens.get(kind, 0))))
        cost.add_metric(key, monotonic(cost.name, key, float(row.cost_usd)))
        requests.add_metric(key, monotonic(requests.name, key, float(row.requests)))
    yield tokens
    yield cost
    yield requests

    tenants = sorted(
        {
            *snapshot.tenants,
            *(a.tenant for a in snapshot.activity),
            *(t for t, _ in snapshot.signals_total),
            *(t for t, _ in snapshot.signals_open),
        }
    )
    signals = CounterMetricFamily(
        "tokentide_usage_signals",
        "Context signals raised so far, by tenant and kind.",
        labels=["tenant", "kind"],
    )
    for (tenant, kind), count in sorted(snapshot.signals_total.items()):
        signals.add_metric((tenant, kind), monotonic(signals.name, (tenant, kind), float(count)))
    yield signals

    by_tenant = {a.tenant: a for a in snapshot.activity}
    active = GaugeMetricFamily("tokentide_sessions_active", "Sessions active now.", labels=["tenant"])
    others = GaugeMetricFamily(
        "tokentide_sessions_context_ratio_others",
        "Active sessions not in tokentide_session_context_ratio (beyond the top N of the tenant).",
        labels=["tenant"],
    )
    others_max = GaugeMetricFamily(
        "tokentide_sessions_context_ratio_others_max",
        "Highest context ratio among the active sessions beyond the top N (0 when none).",
        labels=["tenant"],
    )
    for tenant in tenants:
        activity = by_tenant.get(tenant, TenantActivity(tenant, 0, 0, 0.0))
        active.add_metric((tenant,), activity.active)
        others.add_metric((tenant,), activity.others)
        others_max.add_metric((tenant,), activity.others_max)
    ratio = GaugeMetricFamily(
        "tokentide_session_context_ratio",
        "Context tokens / window of the active sessions with the fullest context, top N per tenant.",
        labels=["tenant", "session", "agent", "user"],
    )
    for s in snapshot.top_sessions:
        ratio.add_metric((s.tenant, s.session, s.agent, s.user), s.ratio)
    yield active
    yield ratio
    yield others
    yield others_max

    open_signals = GaugeMetricFamily(
        "tokentide_signals_open",
        "Active sessions with this context signal raised and no compaction since.",
        labels=["tenant", "kind"],
    )
    for tenant in tenants:
        for kind in LEVEL_KINDS:
            open_signals.add_metric((tenant, kind), snapshot.signals_open.get((tenant, kind), 0))
    yield open_signals
    yield from budget_families(snapshot.budgets)
    yield GaugeMetricFamily(
        "tokentide_usage_query_seconds",
        "Time the last usage queries took.",
        value=snapshot.query_seconds,
    )


def budget_families(series: Sequence[BudgetSeries]) -> Iterator[Metric]:
    """The budget gauges (issue 17): amount, spend so far in the current period and the
    forecast at its end, per tenant, scope (tenant, team, user, project), value ("" for a
    tenant budget) and period (day, week, month)."""
    labels = ["tenant", "scope", "value", "period"]
    amount = GaugeMetricFamily("tokentide_budget_usd", "Budget amount in USD per period.", labels=labels)
    spend = GaugeMetricFamily(
        "tokentide_budget_spend_usd", "Spend in USD in the budget's current period so far.", labels=labels
    )
    forecast = GaugeMetricFamily(
        "tokentide_budget_forecast_usd",
        "Forecast spend in USD at the end of the budget's current period (tokentide.budgets).",
        labels=labels,
    )
    for b in series:
        key = (b.tenant, b.scope, b.value, b.period)
        amount.add_metric(key, b.amount_usd)
        spend.add_metric(key, b.spend_usd)
        forecast.add_metric(key, b.forecast_usd)
    yield amount
    yield spend
    yield forecast


class UsageCollector(Collector):
    """A prometheus_client collector over the latest :class:`Snapshot` (none: no samples)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.monotonic = Monotonic()

    def collect(self) -> Iterable[Metric]:
        return self.collect_for(None)

    def collect_for(self, tenant: str | None) -> list[Metric]:
        """The families of one tenant (``None``: every tenant)."""
        snapshot = self.snapshot
        if snapshot is None:
            return []
        return list(families(snapshot.of_tenant(tenant), self.monotonic))


class _OneTenant(Collector):
    def __init__(self, collector: UsageCollector, tenant: str) -> None:
        self._collector = collector
        self._tenant = tenant

    def collect(self) -> Iterable[Metric]:
        return self._collector.collect_for(self._tenant)


# --------------------------------------------------------------------------- queries

#: Totals so far per (tenant, team, model), from rollups_hour (kept forever, equal to
#: rollups_minute's sums in both layouts): the stream stage's rollup increments of every
#: session sum to its totals, metrics-only sessions' included.
USAGE_SQL = """
WITH usage AS (
    SELECT r.tenant_id, r.session_id, r.model,
           sum(r.input_tokens) AS input, sum(r.output_tokens) AS output,
           sum(r.cache_read_tokens) AS cache_read, sum(r.cache_creation_tokens) AS cache_creation,
           sum(r.reasoning_tokens) AS reasoning, sum(r.cost_usd) AS cost, sum(r.requests) AS requests
      FROM rollups_hour r
     GROUP BY r.tenant_id, r.session_id, r.model
)
SELECT u.tenant_id, coalesce(nullif(s.attributes ->> %(team)s, ''), %(no_team)s) AS team, u.model,
       sum(u.input)::bigint, sum(u.output)::bigint, sum(u.cache_read)::bigint,
       sum(u.cache_creation)::bigint, sum(u.reasoning)::bigint, sum(u.cost), sum(u.requests)::bigint
  FROM usage u
  LEFT JOIN sessions s ON s.tenant_id = u.tenant_id AND s.session_id = u.session_id
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3
"""

_RANKED = """
WITH ranked AS (
    SELECT tenant_id, session_id, agent, coalesce(user_id, '') AS user_id, ratio,
           row_number() OVER (PARTITION BY tenant_id ORDER BY ratio DESC, session_id) AS rank
      FROM (
        SELECT tenant_id, session_id, agent, user_id,
               CASE WHEN context_window > 0 THEN context_tokens::float8 / context_window ELSE 0 END
                   AS ratio
          FROM sessions
         WHERE last_seen_at >= now() - make_interval(secs => %(active_s)s)
      ) active
)
"""
TOP_SESSIONS_SQL = (
    _RANKED
    + """
SELECT tenant_id, session_id, agent, user_id, ratio
  FROM ranked WHERE rank <= %(top_n)s ORDER BY tenant_id, rank
"""
)
ACTIVITY_SQL = (
    _RANKED
    + """
SELECT tenant_id, count(*), count(*) FILTER (WHERE rank > %(top_n)s),
       coalesce(max(ratio) FILTER (WHERE rank > %(top_n)s), 0)
  FROM ranked GROUP BY tenant_id ORDER BY tenant_id
"""
)
SIGNALS_TOTAL_SQL = "SELECT tenant_id, kind, count(*) FROM signals GROUP BY 1, 2 ORDER BY 1, 2"
#: A level signal is open while its session is active and has not compacted since it was raised.
SIGNALS_OPEN_SQL = """
SELECT g.tenant_id, g.kind, count(DISTINCT g.session_id)
  FROM sessions s
  JOIN signals g ON g.tenant_id = s.tenant_id AND g.session_id = s.session_id
 WHERE s.last_seen_at >= now() - make_interval(secs => %(active_s)s)
   AND g.kind = ANY(%(kinds)s)
   AND NOT EXISTS (
        SELECT 1 FROM signals c
         WHERE c.tenant_id = g.tenant_id AND c.session_id = g.session_id
           AND c.kind = 'compaction_observed' AND c.ts >= g.ts)
 GROUP BY 1, 2
 ORDER BY 1, 2
"""
TENANTS_SQL = "SELECT tenant_id FROM tenants ORDER BY 1"


async def fetch_snapshot(conn: psycopg.AsyncConnection[Any], settings: UsageMetricsSettings) -> Snapshot:
    """Run the usage queries in one read-only transaction (one consistent view)."""
    params = {
        "team": settings.team_attribute,
        "no_team": NO_TEAM,
        "active_s": settings.usage_active_within_s,
        "top_n": settings.usage_top_sessions,
        "kinds": list(LEVEL_KINDS),
    }
    started = time.perf_counter()
    async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        timeout_ms = str(int(settings.usage_query_timeout_s * 1000))
        await cur.execute("SELECT set_config('statement_timeout', %s, true)", (timeout_ms,))
        tenants = tuple(str(r[0]) for r in await _rows(cur, TENANTS_SQL, params))
        usage = tuple(
            UsageTotals(
                tenant=r[0],
                team=r[1],
                model=r[2],
                tokens=dict(zip(TOKEN_TYPES, (int(v or 0) for v in r[3:8]), strict=True)),
                cost_usd=Decimal(r[8] or 0),
                requests=int(r[9] or 0),
            )
            for r in await _rows(cur, USAGE_SQL, params)
        )
        top = tuple(
            SessionRatio(r[0], r[1], r[2], r[3], float(r[4]))
            for r in await _rows(cur, TOP_SESSIONS_SQL, params)
        )
        activity = tuple(
            TenantActivity(r[0], int(r[1]), int(r[2]), float(r[3]))
            for r in await _rows(cur, ACTIVITY_SQL, params)
        )
        signals_total = {(r[0], r[1]): int(r[2]) for r in await _rows(cur, SIGNALS_TOTAL_SQL, params)}
        signals_open = {(r[0], r[1]): int(r[2]) for r in await _rows(cur, SIGNALS_OPEN_SQL, params)}
        budgets = await _budgets(conn, settings.team_attribute)
    return Snapshot(
        tenants=tenants,
        usage=usage,
        top_sessions=top,
        activity=activity,
        signals_total=signals_total,
        signals_open=signals_open,
        budgets=budgets,
        query_seconds=time.perf_counter() - started,
    )


async def _budgets(conn: psycopg.AsyncConnection[Any], team_key: str) -> tuple[BudgetSeries, ...]:
    """Every tenant's budgets, evaluated at one instant as ``GET /api/v1/budgets`` does."""
    now = await budget_store.database_now(conn)
    out = []
    for tenant in await budget_store.tenants_with_budgets(conn):
        for e in await budget_store.evaluate(conn, tenant, team_key, now):
            b = e.budget
            out.append(
                BudgetSeries(
                    b.tenant,
                    str(b.scope),
                    b.value,
                    str(b.period),
                    b.amount_usd,
                    e.forecast.spend_usd,
                    e.forecast.forecast_usd,
                )
            )
    return tuple(out)


async def _rows(
    cur: psycopg.AsyncCursor[tuple[Any, ...]], query: str, params: dict[str, Any]
) -> Sequence[tuple[Any, ...]]:
    """Rows of ``query``; one ``params`` dict serves every statement (psycopg reads only the
    names a statement uses)."""
    await cur.execute(query, params)
    return await cur.fetchall()


# --------------------------------------------------------------------------- the route


class UsageExporter:
    """Serves the usage registry; queries the database at most once per ``usage_cache_s``."""

    def __init__(self, pool: AsyncConnectionPool[Any], settings: UsageMetricsSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.collector = UsageCollector()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        self._lock = asyncio.Lock()
        self._fetched_at: float | None = None

    async def refresh(self) -> None:
        """Read a new snapshot unless the last one is recent enough; raises on database errors."""
        async with self._lock:
            now = time.monotonic()
            if self._fetched_at is not None and now - self._fetched_at < self.settings.usage_cache_s:
                return
            async with self.pool.connection(timeout=self.settings.usage_query_timeout_s) as conn:
                self.collector.snapshot = await fetch_snapshot(conn, self.settings)
            self._fetched_at = time.monotonic()

    async def render(self, tenant: str | None = None) -> Response:
        """The exposition of ``tenant``'s series (``None``: every tenant's)."""
        try:
            await self.refresh()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("usage metrics: database unavailable: %s", exc)
            return Response(
                f"usage metrics unavailable: {type(exc).__name__}\n",
                status_code=503,
                media_type="text/plain",
                headers={"Retry-After": "5"},
            )
        if tenant is None:
            return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_OneTenant(self.collector, tenant))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def add_usage_metrics(
    app: FastAPI,
    pool: AsyncConnectionPool[Any],
    settings: object,
    tenant_of: Callable[[], str | None] = lambda: None,
) -> UsageExporter:
    """Serve ``GET /metrics/usage`` from ``pool`` (opened and closed by the app's lifespan).

    ``settings``: :class:`UsageMetricsSettings`, or any object with some of its fields (the
    dashboard's settings). ``tenant_of``: the tenant whose series the request may see (the
    dashboard's authenticated caller's; ``None``: every tenant's, for the admin and scrape tokens).
    """
    exporter = UsageExporter(pool, UsageMetricsSettings.of(settings))

    async def usage_metrics() -> Response:
        return await exporter.render(tenant_of())

    app.add_api_route(USAGE_METRICS_PATH, usage_metrics, methods=["GET"], include_in_schema=False)
    return exporter
