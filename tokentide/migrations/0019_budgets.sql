-- Issue 17, budgets: USD budgets per tenant, team, user or project and period (a UTC day, an
-- ISO week from Monday, a calendar month), and the budget signals raised for them. Plain
-- tables in both layouts, so one file serves both.
--
-- scope_value is '' for a tenant budget (the tenant itself), else the team attribute's value,
-- the user id or the project (dashboard/projects.py). One budget per tenant, scope, value
-- and period: setting it again changes its amount.
CREATE TABLE budgets (
    tenant_id    text          NOT NULL REFERENCES tenants (tenant_id),
    budget_id    text          PRIMARY KEY,
    scope        text          NOT NULL
        CONSTRAINT budgets_scope CHECK (scope IN ('tenant', 'team', 'user', 'project')),
    scope_value  text          NOT NULL DEFAULT '',
    period       text          NOT NULL
        CONSTRAINT budgets_period CHECK (period IN ('day', 'week', 'month')),
    amount_usd   numeric(14, 4) NOT NULL CONSTRAINT budgets_amount CHECK (amount_usd > 0),
    created_at   timestamptz   NOT NULL DEFAULT now(),
    updated_at   timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT budgets_tenant_value CHECK ((scope = 'tenant') = (scope_value = '')),
    CONSTRAINT budgets_natural UNIQUE (tenant_id, scope, scope_value, period)
);

-- One row per budget, period and kind (budget_warning: the forecast is over the amount;
-- budget_exceeded: the spend is): the natural key makes each signal once per period, however
-- often the notifier evaluates. What the evaluation saw is kept with it.
CREATE TABLE budget_signals (
    tenant_id     text           NOT NULL,
    budget_id     text           NOT NULL REFERENCES budgets (budget_id) ON DELETE CASCADE,
    period_start  timestamptz    NOT NULL,
    period_end    timestamptz    NOT NULL,
    kind          text           NOT NULL
        CONSTRAINT budget_signals_kind CHECK (kind IN ('budget_warning', 'budget_exceeded')),
    signal_id     text           NOT NULL UNIQUE,
    amount_usd    numeric(14, 4) NOT NULL,
    spend_usd     double precision NOT NULL,
    forecast_usd  double precision NOT NULL,
    at            timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, period_start, kind)
);
CREATE INDEX budget_signals_open ON budget_signals (tenant_id, period_end);

-- Tenant-readable like webhook_deliveries (0009): the policy keeps tenants apart.
ALTER TABLE budgets ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budgets FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
GRANT SELECT ON budgets TO PUBLIC;
ALTER TABLE budget_signals ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON budget_signals FOR SELECT
    USING (tenant_id = (SELECT tokentide_role_tenant()));
GRANT SELECT ON budget_signals TO PUBLIC;
