"""The versioned price table: exact integer nano-USD, model lookup, tiers, and a strict loader.

Expected costs are worked out by hand in the comments: a rate of P USD per million tokens is
P x 1000 nano-USD per token.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from streams.pricing import PriceTable, PriceTableError, cost_nanos, default_table
from tokentide.records import Tokens

#: The Anthropic stub's usage per call (tests/fixtures/README.md).
CLAUDE_STUB = Tokens(input=1200, output=42, cache_read=4500, cache_creation=300)


def _table(models: dict[str, Any], version: str = "test") -> PriceTable:
    return PriceTable.from_json(json.dumps({"version": version, "models": models}))


def test_claude_stub_check_value_on_opus() -> None:
    # agent-telemetry.md section 6: Opus at $5/$25, cache write x1.25 ($6.25), read x0.1 ($0.50):
    # 1200 x 5000 + 42 x 25_000 + 4500 x 500 + 300 x 6250 = 11_175_000 nano-USD = $0.011175,
    # the cost_usd Claude Code itself reported.
    assert cost_nanos("claude-opus-4-8", CLAUDE_STUB) == 11_175_000
    assert cost_nanos("claude-opus-4-8", CLAUDE_STUB) == int(Decimal("0.011175") * 10**9)


def test_claude_haiku_snapshot_matches_the_agents_own_cost() -> None:
    # Claude Code reported cost_usd 0.0022349999999999996 for the stub usage on the dated
    # Haiku snapshot: $1/$5, write $1.25, read $0.10:
    # 1200 x 1000 + 42 x 5000 + 4500 x 100 + 300 x 1250 = 2_235_000.
    assert cost_nanos("claude-haiku-4-5-20251001", CLAUDE_STUB) == 2_235_000
    assert round(0.0022349999999999996 * 10**9) == 2_235_000


def test_long_context_variant_suffix_is_ignored() -> None:
    assert cost_nanos("claude-opus-4-8[1m]", CLAUDE_STUB) == 11_175_000


def test_default_table_is_versioned_and_sourced() -> None:
    table = default_table()
    assert table.version == "2026-11-24"
    assert "Anthropic" in table.source
    assert default_table() is table  # loaded once


@pytest.mark.parametrize(
    "model",
    [
        # every model seen in tests/fixtures/*/*/ (grep of the captures' model attributes)
        "claude-opus-4-8",
        "claude-opus-4-8[1m]",
        "claude-haiku-4-5-20251001",
        "gemini-3.5-flash-lite",
        "gemini-3.8-flash",
        "gemini-3.1-pro-preview",
        "gpt-6.1-sol",
        # and common current ones
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gpt-5",
        "gpt-5-codex",
        "gpt-5-mini",
    ],
)
def test_models_of_the_captures_and_common_ones_are_priced(model: str) -> None:
    assert model in default_table()


def test_placeholder_prices_say_so() -> None:
    table = default_table()
    for model in ("gemini-3.5-flash-lite", "gemini-3.8-flash", "gemini-3.1-pro-preview", "gpt-6.1-sol"):
        price = table.lookup(model)
        assert price is not None
        assert price.assumed
    opus = table.lookup("claude-opus-4-8")
    assert opus is not None
    assert not opus.assumed


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("openai/GPT-5", "gpt-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ],
)
def test_snapshot_suffixes_aliases_and_provider_paths(model: str, priced_as: str) -> None:
    price = default_table().lookup(model)
    assert price is not None
    assert price.model == priced_as


@pytest.mark.parametrize(
    "model",
    [
        None,
        "",
        "claude-opus-4-6",  # not a snapshot of claude-opus-4: unknown, never a guess
        "gpt-5-turbo",
        "gemini-2.5-flash-preview-05-20",
        "auto",
        "some-local-model",
    ],
)
def test_unknown_models_have_no_cost(model: str | None) -> None:
    assert default_table().lookup(model) is None
    assert cost_nanos(model, CLAUDE_STUB) is None


def test_gemini_2_5_pro_prompt_tier() -> None:
    tokens = Tokens(input=150_000, cache_read=50_000, output=2_000, reasoning=1_500)
    # Prompt 150_000 + 50_000 = 200_000: not above 200k -> $1.25 / $0.125 / $10:
    # 150_000 x 1250 + 50_000 x 125 + 2000 x 10_000.
    assert cost_nanos("gemini-2.5-pro", tokens) == 187_500_000 + 6_250_000 + 20_000_000
    # One more prompt token: the whole request at $2.50 / $0.25 / $15:
    # 150_001 x 2500 + 50_000 x 250 + 2000 x 15_000.
    bigger = tokens.model_copy(update={"input": 150_001})
    assert cost_nanos("gemini-2.5-pro", bigger) == 375_002_500 + 12_500_000 + 30_000_000


def test_context_tokens_can_be_given_explicitly() -> None:
    tokens = Tokens(input=1000, output=100)
    # 1000 x 1250 + 100 x 10_000 below the tier; 1000 x 2500 + 100 x 15_000 above it.
    assert cost_nanos("gemini-2.5-pro", tokens) == 2_250_000
    assert cost_nanos("gemini-2.5-pro", tokens, context_tokens=300_000) == 4_000_000


def test_sonnet_long_context_tier() -> None:
    tokens = Tokens(input=10_000, cache_read=250_000, cache_creation=1_000, output=500)
    # Prompt 261_000 > 200k: $6 / $0.60 read / $7.50 write / $22.50 output:
    # 10_000 x 6000 + 250_000 x 600 + 1000 x 7500 + 500 x 22_500.
    assert cost_nanos("claude-sonnet-4-5", tokens) == 60_000_000 + 150_000_000 + 7_500_000 + 11_250_000


def test_reasoning_is_part_of_output_and_not_priced_again() -> None:
    with_reasoning = Tokens(input=476, cache_read=1024, output=42, reasoning=10)
    without = with_reasoning.model_copy(update={"reasoning": 0})
    # gpt-5: 476 x 1250 + 1024 x 125 + 42 x 10_000.
    assert cost_nanos("gpt-5", with_reasoning) == cost_nanos("gpt-5", without) == 1_143_000


def test_cache_rates_default_to_the_input_rate() -> None:
    table = _table({"m": {"input": 2, "output": 8, "cache_read": 0.5}})
    price = table.lookup("m")
    assert price is not None
    assert (price.base.input, price.base.cache_read, price.base.cache_creation) == (2000, 500, 2000)
    bare = _table({"m": {"input": 2, "output": 8}}).lookup("m")
    assert bare is not None
    assert (bare.base.cache_read, bare.base.cache_creation) == (2000, 2000)


def test_costs_are_exact_integers_at_any_size() -> None:
    tokens = Tokens(input=10**12 + 7, output=3, cache_read=10**9 + 1, cache_creation=11)
    # gemini-2.5-flash-lite above no tier: $0.10 / $0.40 / $0.01 / input rate for writes.
    expected = (10**12 + 7) * 100 + 3 * 400 + (10**9 + 1) * 10 + 11 * 100
    result = cost_nanos("gemini-2.5-flash-lite", tokens)
    assert isinstance(result, int)
    assert result == expected


def test_prices_are_read_exactly_not_through_float() -> None:
    # 0.1 + 0.2 style rates: any float detour would show up in the last digit.
    table = _table({"m": {"input": 0.1, "output": 0.3, "cache_read": 0.007}})
    assert table.cost_nanos("m", Tokens(input=3, output=7, cache_read=1000)) == 3 * 100 + 7 * 300 + 1000 * 7


def test_prefix_entries_match_longest_first() -> None:
    table = _table(
        {
            "acme": {"input": 1, "output": 1, "prefix": True},
            "acme-large": {"input": 5, "output": 5, "prefix": True},
            "exact-only": {"input": 9, "output": 9},
        }
    )
    assert table.cost_nanos("acme-large-2", Tokens(input=1)) == 5000
    assert table.cost_nanos("acme-small", Tokens(input=1)) == 1000
    assert table.cost_nanos("acme", Tokens(input=1)) == 1000
    assert table.cost_nanos("acmex", Tokens(input=1)) is None
    assert table.cost_nanos("exact-only-v2", Tokens(input=1)) is None


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"models": {"m": {"input": 1, "output": 1}}}, "version"),
        ({"version": "v", "models": {}}, "models"),
        ({"version": "v", "models": {"m": {"input": 1}}}, "output"),
        ({"version": "v", "models": {"m": {"input": 0.0001, "output": 1}}}, "finer"),
        ({"version": "v", "models": {"m": {"input": -1, "output": 1}}}, "negative"),
        ({"version": "v", "models": {"m": {"input": "abc", "output": 1}}}, "not a number"),
        ({"version": "v", "models": {"m": {"input": True, "output": 1}}}, "number"),
        ({"version": "v", "models": {"m": []}}, "object"),
        (
            {
                "version": "v",
                "models": {"a": {"input": 1, "output": 1}, "b": {"input": 1, "output": 1, "aliases": ["a"]}},
            },
            "twice",
        ),
        (
            {
                "version": "v",
                "models": {"m": {"input": 1, "output": 1, "tiers": [{"input": 2, "output": 2}]}},
            },
            "above_context_tokens",
        ),
        ({"version": "v", "models": {"m": {"input": 1, "output": 1, "aliases": "m2"}}}, "aliases"),
    ],
)
def test_malformed_tables_are_refused_at_load(document: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceTableError, match=message):
        PriceTable.from_json(json.dumps(document))


def test_non_json_is_refused() -> None:
    with pytest.raises(PriceTableError, match="not JSON"):
        PriceTable.from_json("{not json")
    with pytest.raises(PriceTableError, match="object"):
        PriceTable.from_json("[]")
