"""Which tests touch the database layout (decision 14), so that `make test` runs them again on
TimescaleDB: tests/conftest.py marks them ``db_layout``, and scripts/pytest_legs.py selects that
marker for the TimescaleDB leg.

What touches it: storage, sink, dashboard (its API and sign-in), Grafana, the usage exporter,
`tokentide prices check` (it reads events), and every end-to-end test (the pipeline always ends
in the database). Left out: ingest (its shared rate limits included: regular tables in both
layouts), the stream stage, the notifier and the deploy checks, which read or write no
layout-dependent relation; and test_layouts_agree.py and test_migration_0014.py, which make the
databases of the layouts they need themselves (they run in the plain leg, reaching TimescaleDB
as TIMESCALE_DATABASE_URL).
"""

from __future__ import annotations

#: Paths relative to tests/: a file, or a folder (ending in ``/``) and everything in it.
DB_LAYOUT = (
    "e2e/",
    "integration/test_budget_evaluation.py",
    "integration/test_budget_spend.py",
    "integration/test_dashboard_auth.py",
    "integration/test_grafana_dashboards.py",
    "integration/test_insights.py",
    "integration/test_live_stream_behind.py",
    "integration/test_migrate.py",
    "integration/test_prices_check.py",
    "integration/test_query_plans.py",
    "integration/test_sink_database_outage.py",
    "integration/test_sink_exactly_once.py",
    "integration/test_sink_faults.py",
    "integration/test_sink_postgres.py",
    "integration/test_storage_layout.py",
    "integration/test_stream_positions.py",
    "integration/test_tenancy.py",
    "integration/test_tenant_isolation.py",
    "integration/test_timeline.py",
    "integration/test_usage_exporter.py",
)


def touches_layout(relative: str) -> bool:
    """Whether the test file at ``relative`` (to tests/, with ``/``) is one of :data:`DB_LAYOUT`."""
    return any(
        relative == entry or (entry.endswith("/") and relative.startswith(entry)) for entry in DB_LAYOUT
    )
