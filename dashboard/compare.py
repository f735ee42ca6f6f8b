"""Cross-model comparison: what the same tokens would have cost on each priced model (pure).

``GET /api/v1/compare`` (dashboard/insights.py) sums a window's usage events per team or
project and per *tier bucket*, then prices those sums at every model of the price table
(``streams/prices.json`` + ``streams/prices.local.json``, through :mod:`streams.pricing`,
never changed here). How each token type is priced is :meth:`streams.pricing.Rates.cost_nanos`:
``input``, ``output`` (reasoning included, so ``reasoning`` is never priced twice),
``cache_read``, the five-minute part of ``cache_creation`` at the model's ``cache_creation``
rate and its one-hour part (``cache_creation_1h``) at the model's ``cache_creation_1h`` rate.

Tiers: a model's long-context tier applies to a whole request whose prompt
(``input + cache_read + cache_creation``) is above the tier's threshold. The query counts,
for each request, how many of the table's thresholds (all models' together, ascending) its
prompt is above: its bucket ``b``. Every request of one bucket falls in the same tier of every
model (each model's thresholds are among the table's), so the bucket's summed tokens are priced
at ``rates_for(thresholds[b - 1] + 1)`` (``rates_for(0)`` for bucket 0): exactly the sum of
the per-request costs, as integer nano-USD.

The one-hour part of a request's cache writes is read from the event's attributes exactly as
the Claude Code normaliser reads it (``cache_creation_1h_tokens``, else what
``cache_creation_5m_tokens`` leaves of ``cache_creation_tokens``, else 0, never above the
total): :data:`ONE_HOUR_SQL`. Agents that do not split cache writes have none.

Nothing here runs a query: SQL text, the price catalogue and arithmetic on rows.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from typing import Any, LiteralString

from dashboard.projects import PROJECT_JOIN, PROJECT_SQL
from streams.pricing import GENERATED_FILE, LOCAL_FILE, ModelPrice, PriceTable, with_overrides
from tokentide.records import Tokens

NANOS_PER_USD = 1_000_000_000
#: The longest window ``/api/v1/compare`` and ``/api/v1/recommendations`` accept.
MAX_WINDOW_DAYS = 90

_HOUR: LiteralString = (
    "CASE WHEN e.attributes ->> 'cache_creation_1h_tokens' ~ '^[0-9]{1,18}$'"
    " THEN (e.attributes ->> 'cache_creation_1h_tokens')::bigint END"
)
_FIVE: LiteralString = (
    "CASE WHEN e.attributes ->> 'cache_creation_5m_tokens' ~ '^[0-9]{1,18}$'"
    " THEN (e.attributes ->> 'cache_creation_5m_tokens')::bigint END"
)
#: The one-hour part of the cache writes of usage event ``e`` (streams.normalise.claude_code.cache_writes).
ONE_HOUR_SQL: LiteralString = (
    "LEAST(GREATEST(COALESCE("
    + _HOUR
    + ", coalesce(e.cache_creation_tokens, 0) - "
    + _FIVE
    + ", 0), 0), coalesce(e.cache_creation_tokens, 0))"
)
#: The prompt of usage event ``e``: what its tier depends on.
PROMPT_SQL: LiteralString = (
    "(coalesce(e.input_tokens, 0) + coalesce(e.cache_read_tokens, 0) + coalesce(e.cache_creation_tokens, 0))"
)


class CompareBy(enum.StrEnum):
    TEAM = "team"
    PROJECT = "project"


_KEY: dict[CompareBy, LiteralString] = {
    CompareBy.TEAM: "s.attributes ->> %(team_key)s",
    CompareBy.PROJECT: PROJECT_SQL,
}


def compare_sql(group_by: CompareBy) -> LiteralString:
    """Tokens by type, known cost and requests of the caller's tenant's usage events in
    ``[%(from)s, %(to)s)`` per group and tier bucket (``%(thresholds)s``: the table's tier
    thresholds, ascending)."""
    # LiteralString parts from closed sets; values are parameters.
    return (
        "SELECT "  # noqa: S608
        + _KEY[group_by]
        + " AS key, (SELECT count(*) FROM unnest(%(thresholds)s::bigint[]) t WHERE "
        + PROMPT_SQL
        + """ > t)::int AS bucket,
               sum(coalesce(e.input_tokens, 0))::bigint AS input_tokens,
               sum(coalesce(e.output_tokens, 0))::bigint AS output_tokens,
               sum(coalesce(e.cache_read_tokens, 0))::bigint AS cache_read_tokens,
               sum(coalesce(e.cache_creation_tokens, 0))::bigint AS cache_creation_tokens,
               sum("""
        + ONE_HOUR_SQL
        + """)::bigint AS cache_creation_1h_tokens,
               sum(coalesce(e.reasoning_tokens, 0))::bigint AS reasoning_tokens,
               coalesce(sum(e.cost_usd), 0) AS cost_usd,
               count(*)::bigint AS requests,
               count(*) FILTER (WHERE e.cost_usd IS NULL)::bigint AS unpriced_requests
          FROM events e
          JOIN sessions s ON s.tenant_id = e.tenant_id AND s.session_id = e.session_id
          """
        + PROJECT_JOIN
        + """
         WHERE e.tenant_id = %(tenant)s AND e.kind = 'usage' AND e.ts >= %(from)s AND e.ts < %(to)s
         GROUP BY 1, 2
         ORDER BY 1 NULLS LAST, 2"""
    )


@dataclass(frozen=True, slots=True)
class PricedModel:
    """One model of the price table: its canonical name, provider and prices."""

    name: str
    provider: str | None
    price: ModelPrice
    #: Dated snapshots of this model priced exactly as it (looked up as this model).
    snapshots: tuple[str, ...] = ()


#: A dated snapshot's id (the price table's snapshot rule, streams/pricing.py's lookup step 2).
_SNAPSHOT = re.compile(r"^(?P<base>.+?)(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|latest))$")


class Catalogue:
    """Every model of a price table with its provider (the table's ``provider`` field).

    A dated snapshot priced exactly as its base model (``gpt-5-nano-2025-08-07`` and
    ``gpt-5-nano``) is one model here: the base, which lists the snapshot in ``snapshots``;
    looking the snapshot up gives the base. A snapshot priced otherwise stays a model of its own.
    """

    def __init__(self, table: PriceTable, document: Mapping[str, Any]) -> None:
        """``document``: the merged table (generated + overrides) ``table`` was built from."""
        self.table = table
        entries: dict[str, tuple[ModelPrice, str | None]] = {}
        for name, entry in document.get("models", {}).items():
            price = table.lookup(str(name))
            if price is not None and price.model == str(name).lower():
                entries[price.model] = (price, _provider(entry))
        self._same: dict[str, str] = {}
        for name, (price, _) in entries.items():
            dated = _SNAPSHOT.match(name)
            base = entries.get(dated["base"]) if dated else None
            if base is not None and (base[0].base, base[0].tiers) == (price.base, price.tiers):
                self._same[name] = base[0].model
        self.models: tuple[PricedModel, ...] = tuple(
            PricedModel(
                name,
                provider,
                price,
                tuple(sorted(s for s, b in self._same.items() if b == name)),
            )
            for name, (price, provider) in sorted(entries.items())
            if name not in self._same
        )
        self._by_name = {m.name: m for m in self.models}
        self.thresholds: tuple[int, ...] = tuple(
            sorted({threshold for m in self.models for threshold, _ in m.price.tiers})
        )

    @classmethod
    def from_json(cls, generated: bytes | str, local: bytes | str | None = None) -> Catalogue:
        table = PriceTable.from_json(generated, local)
        document = json.loads(generated, parse_float=Decimal)
        if local is not None:
            document = with_overrides(document, json.loads(local, parse_float=Decimal))
        return cls(table, document)

    def lookup(self, model: str | None) -> PricedModel | None:
        """The priced model ``model`` names (by the price table's lookup rules), or None."""
        price = self.table.lookup(model)
        if price is None:
            return None
        return self._by_name.get(self._same.get(price.model, price.model))

    def context_of(self, bucket: int) -> int:
        """A prompt size in tier bucket ``bucket`` (module docstring)."""
        return 0 if bucket <= 0 else self.thresholds[min(bucket, len(self.thresholds)) - 1] + 1


def _provider(entry: object) -> str | None:
    value = entry.get("provider") if isinstance(entry, Mapping) else None
    return value if isinstance(value, str) else None


@functools.cache
def default_catalogue() -> Catalogue:
    """The catalogue of the table shipped with tokentide (as streams.pricing.default_table)."""
    files = resources.files("streams")
    return Catalogue.from_json(
        files.joinpath(GENERATED_FILE).read_bytes(), files.joinpath(LOCAL_FILE).read_bytes()
    )


@dataclass(slots=True)
class GroupSums:
    """One group's usage in the window: tokens by type per tier bucket, cost and requests."""

    key: str | None
    by_bucket: dict[int, Tokens] = field(default_factory=dict)
    cost_nanos: int = 0
    requests: int = 0
    unpriced_requests: int = 0

    @property
    def tokens(self) -> Tokens:
        total = Tokens()
        for tokens in self.by_bucket.values():
            total.add(tokens)
        return total


def to_nanos(usd: Decimal | int | float | None) -> int:
    """A database cost (numeric(20, 9)) as integer nano-USD."""
    if usd is None:
        return 0
    return int(Decimal(usd).scaleb(9).to_integral_value())


def tokens_of(row: Mapping[str, Any]) -> Tokens:
    """The token sums of a query row with the usage columns (``input_tokens``, ...)."""
    return Tokens(
        input=row["input_tokens"],
        output=row["output_tokens"],
        cache_read=row["cache_read_tokens"],
        cache_creation=row["cache_creation_tokens"],
        cache_creation_1h=row["cache_creation_1h_tokens"],
        reasoning=row["reasoning_tokens"],
    )


def group_rows(rows: Iterable[Mapping[str, Any]]) -> list[GroupSums]:
    """The rows of :func:`compare_sql` per group, in their order."""
    groups: dict[str | None, GroupSums] = {}
    for row in rows:
        group = groups.setdefault(row["key"], GroupSums(row["key"]))
        tokens = group.by_bucket.setdefault(int(row["bucket"]), Tokens())
        tokens.add(tokens_of(row))
        group.cost_nanos += to_nanos(row["cost_usd"])
        group.requests += row["requests"]
        group.unpriced_requests += row["unpriced_requests"]
    return list(groups.values())


def cost_on(model: PricedModel, group: GroupSums, catalogue: Catalogue) -> int:
    """Exact nano-USD the group's tokens would have cost on ``model`` (tiers per bucket)."""
    return sum(
        model.price.rates_for(catalogue.context_of(bucket)).cost_nanos(tokens)
        for bucket, tokens in group.by_bucket.items()
    )


@dataclass(frozen=True, slots=True)
class ModelCost:
    model: str
    provider: str | None
    cost_nanos: int
    #: ``cost_nanos`` minus the group's actual (known) cost: negative is cheaper.
    difference_nanos: int
    assumed: bool
    snapshots: tuple[str, ...] = ()


def compare(group: GroupSums, catalogue: Catalogue, models: Iterable[PricedModel]) -> list[ModelCost]:
    """The group's tokens priced on each of ``models``, cheapest first (then by name)."""
    costs = [
        ModelCost(
            m.name,
            m.provider,
            cost := cost_on(m, group, catalogue),
            cost - group.cost_nanos,
            m.price.assumed,
            m.snapshots,
        )
        for m in models
    ]
    return sorted(costs, key=lambda c: (c.cost_nanos, c.model))
