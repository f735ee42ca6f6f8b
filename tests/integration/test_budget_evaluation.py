"""The notifier's budget evaluation (notify.budgets.evaluate_all) on a real, migrated PostgreSQL:
the hour-of-week forecast over 8 days of history, once per period, again in the next period,
and only to the webhooks whose kinds include the signal.

Rollups are written as the sink leaves them (minutes, and each hour the sum of its minutes);
the evaluation runs at instants the test names. The forecast is recomputed here from the
formula of the README, independently of tokentide.budgets:

    forecast = spend + recent / W(now - 6 h, now) * W(now, end)
    w_k = 1/2 + 1/2 * mean_k / mean          (hour of the week k; history: >= 7 days)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from dashboard import budget_store
from notify.budgets import evaluate_all
from tokentide import admin

pytestmark = pytest.mark.integration

H = timedelta(hours=1)
NOW = datetime(2026, 12, 2, 12, 30, tzinfo=UTC)  # a Wednesday
FIRST = datetime(2026, 11, 24, 12, tzinfo=UTC)  # 8 days of history before NOW's hour
BUSY = range(9, 17)  # UTC hours that spent 1 USD each, every day


@pytest.fixture
async def pool(database: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database, min_size=1, max_size=2, kwargs={"row_factory": dict_row, "autocommit": True}, open=False
    )
    await pool.open(wait=True, timeout=10)
    yield pool
    await pool.close()


def spending_hours() -> dict[datetime, float]:
    """Every busy hour from FIRST to 2026-12-03 11:00 (the next day's test goes that far)."""
    out = {}
    hour = FIRST
    while hour < datetime(2026, 12, 3, 11, tzinfo=UTC):
        if hour.hour in BUSY:
            out[hour] = 1.0
        hour += H
    return out


def write_rollups(conn: psycopg.Connection[Any], hours: dict[datetime, float]) -> None:
    conn.execute(
        "INSERT INTO sessions (tenant_id, session_id, agent, user_id, started_at, last_seen_at,"
        " context_window, state_version, attributes)"
        " VALUES ('default', 's1', 'claude_code', 'ann', %s, %s, 200000, 1, %s)",
        (FIRST, NOW, psycopg.types.json.Jsonb({"team": "platform"})),
    )
    columns = (
        "tenant_id, session_id, model, {at}, user_id, agent, input_tokens, output_tokens, cache_read_tokens,"
        " cache_creation_tokens, reasoning_tokens, cost_usd, requests, errors"
    )
    values = "VALUES ('default', 's1', 'm', %s, 'ann', 'claude_code', 1, 1, 0, 0, 0, %s, 1, 0)"
    for hour, cost in hours.items():  # one minute per hour carries the hour's spend
        conn.execute(
            f"INSERT INTO rollups_minute ({columns.format(at='minute')}) {values}",
            (hour + timedelta(minutes=10), cost),
        )
        conn.execute(f"INSERT INTO rollups_hour ({columns.format(at='hour')}) {values}", (hour, cost))


def expected_forecast(
    hours: dict[datetime, float], spend: float, recent: float, now: datetime, end: datetime
) -> float:
    current = now.replace(minute=0, second=0, microsecond=0)
    history = {h: c for h, c in hours.items() if current - 28 * 24 * H <= h < current}
    first = min(history)
    count = int((current - first) / H)
    assert count >= 7 * 24
    sums, counts = [0.0] * 168, [0] * 168
    for i in range(count):
        hour = first + i * H
        k = hour.weekday() * 24 + hour.hour
        counts[k] += 1
        sums[k] += history.get(hour, 0.0)
    mean = sum(sums) / count
    w = [0.5 + 0.5 * (sums[k] / counts[k]) / mean for k in range(168)]

    def weight(a: datetime, b: datetime) -> float:
        total, hour = 0.0, a.replace(minute=0, second=0, microsecond=0)
        while hour < b:
            total += w[hour.weekday() * 24 + hour.hour] * ((min(b, hour + H) - max(a, hour)) / H)
            hour += H
        return total

    return spend + recent / weight(now - 6 * H, now) * weight(now, end)


async def test_hour_of_week_forecast_and_signals_once_per_period(
    database: str, pool: AsyncConnectionPool[Any]
) -> None:
    hours = spending_hours()
    # Each busy hour's 1 USD is spent at :10; NOW's hour (12:00) so far: its 12:10.
    with psycopg.connect(database) as conn:
        write_rollups(conn, hours)
        day = admin.set_budget(conn, "default", scope="tenant", value=None, period="day", amount_usd=1.5)
        week = admin.set_budget(
            conn, "default", scope="team", value="platform", period="week", amount_usd=1000
        )
        budget_hook, _ = admin.add_webhook(
            conn, "default", "http://127.0.0.1:9/b", kinds=["budget_exceeded", "budget_warning"]
        )
        admin.add_webhook(conn, "default", "http://127.0.0.1:9/c", kinds=["context_warning"])
        every_hook, _ = admin.add_webhook(conn, "default", "http://127.0.0.1:9/all")

    async with pool.connection() as conn:
        evaluations = {
            e.budget.budget_id: e for e in await budget_store.evaluate(conn, "default", "team", NOW)
        }
    # The week so far: Monday 11-30 and Tuesday 12-01 (8 USD each), today 09, 10, 11 and 12 h.
    week_start = datetime(2026, 11, 30, tzinfo=UTC)
    e = evaluations[week.budget_id]
    spend = sum(c for h, c in hours.items() if week_start <= h <= NOW.replace(minute=0))
    assert spend == 20.0
    recent = 4.0  # 09, 10, 11 h and 12:10; 06:30-09:00 spent nothing
    assert (e.forecast.spend_usd, e.forecast.recent_spend_usd, e.forecast.from_history) == (
        spend,
        recent,
        True,
    )
    assert e.forecast.forecast_usd == pytest.approx(
        expected_forecast(hours, spend, recent, NOW, week_start + 7 * 24 * H), rel=1e-12
    )
    flat = spend + recent / 6 * ((week_start + 7 * 24 * H - NOW) / H)
    assert abs(e.forecast.forecast_usd - flat) > 1  # the profile moved it: the nights ahead weigh less
    assert e.status == "ok"
    assert evaluations[day.budget_id].forecast.spend_usd == 4.0
    assert evaluations[day.budget_id].status == "exceeded"

    assert await evaluate_all(pool, "team", NOW) == (1, 2, 0)  # budget_exceeded, to two webhooks
    assert await evaluate_all(pool, "team", NOW + timedelta(minutes=1)) == (0, 0, 0)  # once per period
    # The next day spends 2 USD by 10:30 (09 and 10 h): exceeded again, a new period's signal.
    assert await evaluate_all(pool, "team", datetime(2026, 12, 3, 10, 30, tzinfo=UTC)) == (1, 2, 0)
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT webhook_id, signal_id, kind, session_id, payload ->> 'spend_usd'"
            " FROM webhook_deliveries ORDER BY 2, 1"
        ).fetchall()
        signals = conn.execute(
            "SELECT budget_id, period_start, kind FROM budget_signals ORDER BY 2"
        ).fetchall()
    ids = [f"{day.budget_id}:2026-12-02:budget_exceeded", f"{day.budget_id}:2026-12-03:budget_exceeded"]
    assert sorted((r[0], r[1]) for r in rows) == sorted(
        (h.webhook_id, i) for h in (budget_hook, every_hook) for i in ids
    )
    assert {(r[2], r[3]) for r in rows} == {("budget_exceeded", "")}
    assert sorted({(r[1], r[4]) for r in rows}) == [(ids[0], "4.0"), (ids[1], "2.0")]
    assert signals == [
        (day.budget_id, datetime(2026, 12, 2, tzinfo=UTC), "budget_exceeded"),
        (day.budget_id, datetime(2026, 12, 3, tzinfo=UTC), "budget_exceeded"),
    ]


async def test_a_tenant_whose_statement_is_refused_loses_its_round_only(
    database: str, pool: AsyncConnectionPool[Any]
) -> None:
    """One tenant's refused statement (here a trigger refusing its signals) must not cost the
    other tenants their signals: its round is lost, counted, and nothing of it is half-written."""
    with psycopg.connect(database) as conn:
        write_rollups(conn, spending_hours())
        conn.execute("INSERT INTO tenants (tenant_id) VALUES ('aaa-refused')")
        conn.execute(
            "INSERT INTO sessions (tenant_id, session_id, agent, started_at, last_seen_at,"
            " context_window, state_version) VALUES ('aaa-refused', 's1', 'claude_code', %s, %s, 200000, 1)",
            (FIRST, NOW),
        )
        conn.execute(
            "INSERT INTO rollups_minute (tenant_id, session_id, model, minute, agent, input_tokens,"
            " output_tokens, cache_read_tokens, cache_creation_tokens, reasoning_tokens, cost_usd,"
            " requests, errors) VALUES ('aaa-refused', 's1', 'm', %s, 'claude_code', 1, 1, 0, 0, 0, 9, 1, 0)",
            (NOW - timedelta(minutes=20),),
        )
        conn.execute(
            "CREATE FUNCTION refuse_signal() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.tenant_id = 'aaa-refused' THEN RAISE EXCEPTION 'refused by the test'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_signal BEFORE INSERT ON budget_signals"
            " FOR EACH ROW EXECUTE FUNCTION refuse_signal()"
        )
        for tenant in ("aaa-refused", "default"):
            admin.set_budget(conn, tenant, scope="tenant", value=None, period="day", amount_usd=1.5)
            admin.add_webhook(conn, tenant, "http://127.0.0.1:9/b")

    assert await evaluate_all(pool, "team", NOW) == (1, 1, 1)  # default's signal; the other refused
    with psycopg.connect(database) as conn:
        signals = conn.execute("SELECT tenant_id, kind FROM budget_signals ORDER BY tenant_id").fetchall()
        deliveries = conn.execute(
            "SELECT tenant_id, kind FROM webhook_deliveries ORDER BY tenant_id"
        ).fetchall()
    assert signals == [("default", "budget_exceeded")]
    assert deliveries == [("default", "budget_exceeded")]
