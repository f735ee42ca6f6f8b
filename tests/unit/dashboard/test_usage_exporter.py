"""The usage exporter's families from a snapshot: names, labels, zero-filled gauges, counters
that never go down, and settings read from the dashboard's settings object."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from dashboard.usage_exporter import (
    FAMILIES,
    LEVEL_KINDS,
    TOKEN_TYPES,
    BudgetSeries,
    SessionRatio,
    Snapshot,
    TenantActivity,
    UsageCollector,
    UsageMetricsSettings,
    UsageTotals,
)
from tokentide.settings import DashboardSettings

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def usage(tenant: str, team: str, model: str, base: int, cost: str, requests: int) -> UsageTotals:
    tokens = {kind: base + i for i, kind in enumerate(TOKEN_TYPES)}
    return UsageTotals(tenant, team, model, tokens, Decimal(cost), requests)


def snapshot(**overrides: object) -> Snapshot:
    values: dict[str, object] = {
        "tenants": ("acme", "default", "idle"),
        "usage": (
            usage("acme", "platform", "claude-opus-4-8", 100, "1.250000001", 7),
            usage("default", "unset", "unknown", 10, "0.5", 0),
        ),
        "top_sessions": (SessionRatio("acme", "s-1", "claude_code", "u-1", 0.97),),
        "activity": (TenantActivity("acme", 3, 2, 0.5),),
        "signals_total": {("acme", "context_critical"): 4, ("acme", "compaction_observed"): 1},
        "signals_open": {("acme", "context_critical"): 1},
        "budgets": (
            BudgetSeries("acme", "team", "platform", "day", 50.0, 12.5, 61.25),
            BudgetSeries("default", "tenant", "", "month", 100.0, 1.0, 2.0),
        ),
        "query_seconds": 0.25,
    }
    values.update(overrides)
    return Snapshot(**values)  # type: ignore[arg-type]


def scrape(collector: UsageCollector) -> tuple[Samples, dict[str, str]]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    text = generate_latest(registry).decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def test_usage_counters_by_tenant_team_model_and_type() -> None:
    collector = UsageCollector()
    collector.snapshot = snapshot()
    samples, types = scrape(collector)

    assert types["tokentide_usage_tokens"] == "counter"
    assert types["tokentide_usage_cost_usd"] == "counter"
    labels = {"tenant": "acme", "team": "platform", "model": "claude-opus-4-8"}
    for i, kind in enumerate(TOKEN_TYPES):
        assert samples[key("tokentide_usage_tokens_total", **labels, type=kind)] == 100 + i
    assert samples[key("tokentide_usage_cost_usd_total", **labels)] == pytest.approx(1.250000001)
    assert samples[key("tokentide_usage_requests_total", **labels)] == 7
    unset = {"tenant": "default", "team": "unset", "model": "unknown"}
    assert samples[key("tokentide_usage_cost_usd_total", **unset)] == 0.5
    # 2 rows x 5 types of tokens, nothing else.
    assert sum(1 for name, _ in samples if name == "tokentide_usage_tokens_total") == 10


def test_gauges_cover_every_tenant_and_bound_the_sessions() -> None:
    collector = UsageCollector()
    collector.snapshot = snapshot()
    samples, types = scrape(collector)

    assert types["tokentide_session_context_ratio"] == "gauge"
    ratio = key(
        "tokentide_session_context_ratio", tenant="acme", session="s-1", agent="claude_code", user="u-1"
    )
    assert samples[ratio] == 0.97
    assert sum(1 for name, _ in samples if name == "tokentide_session_context_ratio") == 1
    assert samples[key("tokentide_sessions_active", tenant="acme")] == 3
    assert samples[key("tokentide_sessions_context_ratio_others", tenant="acme")] == 2
    assert samples[key("tokentide_sessions_context_ratio_others_max", tenant="acme")] == 0.5
    # Tenants without activity get zeros rather than no series.
    for tenant in ("default", "idle"):
        assert samples[key("tokentide_sessions_active", tenant=tenant)] == 0
        assert samples[key("tokentide_sessions_context_ratio_others", tenant=tenant)] == 0
        for kind in LEVEL_KINDS:
            assert samples[key("tokentide_signals_open", tenant=tenant, kind=kind)] == 0
    assert samples[key("tokentide_signals_open", tenant="acme", kind="context_critical")] == 1
    assert samples[key("tokentide_signals_open", tenant="acme", kind="context_warning")] == 0
    assert samples[key("tokentide_usage_signals_total", tenant="acme", kind="context_critical")] == 4
    assert samples[key("tokentide_usage_signals_total", tenant="acme", kind="compaction_observed")] == 1
    assert samples[key("tokentide_usage_query_seconds")] == 0.25


def test_every_declared_family_is_exposed() -> None:
    collector = UsageCollector()
    collector.snapshot = snapshot()
    samples, _ = scrape(collector)
    assert {name for name, _ in samples} == set(FAMILIES)


def test_budget_gauges_per_tenant_scope_value_and_period() -> None:
    collector = UsageCollector()
    collector.snapshot = snapshot()
    samples, types = scrape(collector)
    team = {"tenant": "acme", "scope": "team", "value": "platform", "period": "day"}
    assert samples[key("tokentide_budget_usd", **team)] == 50.0
    assert samples[key("tokentide_budget_spend_usd", **team)] == 12.5
    assert samples[key("tokentide_budget_forecast_usd", **team)] == 61.25
    tenant = {"tenant": "default", "scope": "tenant", "value": "", "period": "month"}
    assert samples[key("tokentide_budget_forecast_usd", **tenant)] == 2.0
    assert types["tokentide_budget_usd"] == "gauge"
    own = collector.snapshot.of_tenant("acme")
    assert [b.tenant for b in own.budgets] == ["acme"]


def test_counters_never_go_down_but_gauges_do() -> None:
    collector = UsageCollector()
    collector.snapshot = snapshot()
    scrape(collector)
    lower = (
        usage("acme", "platform", "claude-opus-4-8", 50, "1.0", 3),
        usage("default", "unset", "unknown", 10, "0.75", 0),
    )
    collector.snapshot = snapshot(
        usage=lower,
        top_sessions=(SessionRatio("acme", "s-1", "claude_code", "u-1", 0.12),),
        signals_total={("acme", "context_critical"): 2},
    )
    samples, _ = scrape(collector)

    labels = {"tenant": "acme", "team": "platform", "model": "claude-opus-4-8"}
    assert samples[key("tokentide_usage_tokens_total", **labels, type="input")] == 100
    assert samples[key("tokentide_usage_cost_usd_total", **labels)] == pytest.approx(1.250000001)
    assert samples[key("tokentide_usage_requests_total", **labels)] == 7
    assert samples[key("tokentide_usage_signals_total", tenant="acme", kind="context_critical")] == 4
    # A total that grew is reported as it is now.
    assert (
        samples[key("tokentide_usage_cost_usd_total", tenant="default", team="unset", model="unknown")]
        == 0.75
    )
    ratio = key(
        "tokentide_session_context_ratio", tenant="acme", session="s-1", agent="claude_code", user="u-1"
    )
    assert samples[ratio] == 0.12


def test_nothing_before_the_first_snapshot() -> None:
    samples, _ = scrape(UsageCollector())
    assert samples == {}


def test_settings_from_the_dashboard_settings_object(clean_env: pytest.MonkeyPatch) -> None:
    dashboard = DashboardSettings(database_url="postgresql://u:p@db/tokentide", open_mode=True)
    assert UsageMetricsSettings.of(dashboard) == UsageMetricsSettings()
    # The dashboard's team attribute (TOKENTIDE_TEAM_ATTRIBUTE) is the exporter's too.
    clean_env.setenv("TOKENTIDE_TEAM_ATTRIBUTE", "squad")
    dashboard = DashboardSettings(database_url="postgresql://u:p@db/tokentide", open_mode=True)
    assert UsageMetricsSettings.of(dashboard).team_attribute == "squad"

    some = UsageMetricsSettings.of(SimpleNamespace(usage_top_sessions=3, team_attribute="squad"))
    assert some.usage_top_sessions == 3
    assert some.team_attribute == "squad"
    assert some.usage_active_within_s == 300

    own = UsageMetricsSettings(usage_cache_s=0)
    assert UsageMetricsSettings.of(own) is own


@pytest.mark.parametrize(
    "bad",
    [
        {"usage_top_sessions": -1},
        {"usage_top_sessions": 5000},
        {"usage_active_within_s": 0},
        {"team_attribute": ""},
        {"usage_query_timeout_s": 0},
    ],
)
def test_settings_refuse_nonsense(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UsageMetricsSettings.of(SimpleNamespace(**bad))
