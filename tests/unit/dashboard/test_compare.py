"""The cross-model comparison's arithmetic (dashboard/compare.py), against hand-computed costs
on the small table of ``insight_prices.py``."""

from __future__ import annotations

from decimal import Decimal

from dashboard.compare import GroupSums, compare, cost_on, group_rows, to_nanos
from tests.unit.dashboard.insight_prices import catalogue
from tokentide.records import Tokens


def row(key: str | None, bucket: int, **tokens: int) -> dict[str, object]:
    base = dict.fromkeys(
        (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_creation_tokens",
            "cache_creation_1h_tokens",
            "reasoning_tokens",
        ),
        0,
    )
    base.update({f"{k}_tokens": v for k, v in tokens.items()})
    return {
        "key": key,
        "bucket": bucket,
        "cost_usd": Decimal("0.025"),
        "requests": 2,
        "unpriced_requests": 1,
        **base,
    }


ROWS = [
    row(
        "team-a",
        0,
        input=100,
        output=10,
        cache_read=200,
        cache_creation=50,
        cache_creation_1h=20,
        reasoning=5,
    ),
    row("team-a", 1, input=2000, output=100),
    row(None, 0, input=1),
]


def test_the_catalogue_knows_models_providers_thresholds_and_aliases() -> None:
    c = catalogue()
    assert [m.name for m in c.models] == ["big-1", "other-1", "other-1-20240101", "small-1"]
    assert c.thresholds == (1000,)
    assert c.context_of(0) == 0
    assert c.context_of(1) == 1001
    small = c.lookup("small-latest-alias")
    assert small is not None
    assert small.name == "small-1"
    assert small.provider == "acme"
    assert c.lookup("nobody-knows") is None


def test_a_snapshot_priced_as_its_base_is_the_base_model() -> None:
    c = catalogue()
    snapshot = c.lookup("small-1-20250101")
    assert snapshot is not None
    assert snapshot.name == "small-1"
    assert snapshot.snapshots == ("small-1-20250101",)
    dated = c.lookup("other-1-20240101")  # priced otherwise: itself
    assert dated is not None
    assert (dated.name, dated.snapshots) == ("other-1-20240101", ())


def test_rows_sum_per_group_keeping_the_buckets_apart() -> None:
    groups = group_rows(ROWS)
    assert [g.key for g in groups] == ["team-a", None]
    a = groups[0]
    assert a.requests == 4
    assert a.unpriced_requests == 2
    assert a.cost_nanos == 50_000_000
    assert a.tokens == Tokens(
        input=2100, output=110, cache_read=200, cache_creation=50, cache_creation_1h=20, reasoning=5
    )
    assert set(a.by_bucket) == {0, 1}


def test_each_model_prices_every_token_type_and_tier_by_hand() -> None:
    c = catalogue()
    a = group_rows(ROWS)[0]
    # big-1, bucket 0 (base rates): 100*10000 + 10*50000 + 200*1000 + (50-20)*12500 + 20*20000;
    # reasoning (5) is part of output, never priced again. Bucket 1 (above 1000: the tier):
    # 2000*20000 + 100*100000.
    big = 100 * 10_000 + 10 * 50_000 + 200 * 1_000 + 30 * 12_500 + 20 * 20_000 + 2000 * 20_000 + 100 * 100_000
    # small-1 has no tier: 100*1000 + 10*5000 + 200*100 + 30*1250 + 20*2000 + 2000*1000 + 100*5000
    small = 100 * 1_000 + 10 * 5_000 + 200 * 100 + 30 * 1_250 + 20 * 2_000 + 2000 * 1_000 + 100 * 5_000
    # other-1: every input-side type at 2000 (its cache rates default to input), output 8000
    other = (100 + 200 + 50) * 2_000 + 10 * 8_000 + 2000 * 2_000 + 100 * 8_000
    # other-1-20240101: the same at 3000 for the input-side types
    dated = (100 + 200 + 50) * 3_000 + 10 * 8_000 + 2000 * 3_000 + 100 * 8_000
    assert (big, small, other, dated) == (52_475_000, 2_747_500, 5_580_000, 7_930_000)
    costs = compare(a, c, c.models)
    assert [(m.model, m.cost_nanos, m.difference_nanos) for m in costs] == [
        ("small-1", small, small - 50_000_000),
        ("other-1", other, other - 50_000_000),
        ("other-1-20240101", dated, dated - 50_000_000),
        ("big-1", big, big - 50_000_000),
    ]
    assert costs[0].provider == "acme"
    assert not costs[0].assumed


def test_a_group_without_usage_costs_nothing_anywhere() -> None:
    c = catalogue()
    empty = GroupSums("nobody")
    assert [cost_on(m, empty, c) for m in c.models] == [0, 0, 0, 0]


def test_database_costs_become_exact_nanos() -> None:
    assert to_nanos(Decimal("0.000000001")) == 1
    assert to_nanos(Decimal("12.345678912")) == 12_345_678_912
    assert to_nanos(None) == 0
