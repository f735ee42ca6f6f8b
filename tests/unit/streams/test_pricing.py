"""The versioned price table: exact integer nano-USD, model lookup, tiers, and a strict loader.

Expected costs are worked out by hand in the comments from the rates streams/prices.json
documents (LiteLLM 1.110.2's per-token prices x 10^6 = USD per million tokens): a rate of P USD
per million tokens is P x 1000 nano-USD per token.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from streams.pricing import PriceTable, PriceTableError, cost_nanos, default_table
from tokentide.records import Tokens, replace

#: The Anthropic stub's usage per call (tests/fixtures/README.md).
CLAUDE_STUB = Tokens(input=1200, output=42, cache_read=4500, cache_creation=300)


def _table(models: dict[str, Any], version: str = "test", local: dict[str, Any] | None = None) -> PriceTable:
    return PriceTable.from_json(
        json.dumps({"version": version, "models": models}),
        None if local is None else json.dumps({"version": "local", "models": local}),
    )


def test_claude_stub_check_value_on_opus() -> None:
    # agent-telemetry.md section 6: Opus at $5/$25, cache write x1.25 ($6.25), read x0.1 ($0.50),
    # which are LiteLLM's claude-opus-4-8 rates (5e-06, 2.5e-05, 6.25e-06, 5e-07 per token):
    # 1200 x 5000 + 42 x 25_000 + 4500 x 500 + 300 x 6250 = 11_175_000 nano-USD = $0.011175,
    # the cost_usd Claude Code itself reported.
    assert cost_nanos("claude-opus-4-8", CLAUDE_STUB) == 11_175_000
    assert cost_nanos("claude-opus-4-8", CLAUDE_STUB) == int(Decimal("0.011175") * 10**9)


def test_claude_haiku_snapshot_matches_the_agents_own_cost() -> None:
    # Claude Code reported cost_usd 0.0022349999999999996 for the stub usage on the dated
    # Haiku snapshot; prices.json (LiteLLM claude-haiku-4-5-20251001): $1/$5, write $1.25,
    # read $0.10: 1200 x 1000 + 42 x 5000 + 4500 x 100 + 300 x 1250 = 2_235_000.
    assert cost_nanos("claude-haiku-4-5-20251001", CLAUDE_STUB) == 2_235_000
    assert round(0.0022349999999999996 * 10**9) == 2_235_000


def test_one_hour_cache_writes_have_their_own_rate() -> None:
    # Of the 300 written tokens, 100 with a one-hour lifetime: claude-opus-4-8's
    # cache_creation_1h is $10 (LiteLLM cache_creation_input_token_cost_above_1hr 1e-05), the
    # other 200 stay at $6.25: 1200 x 5000 + 42 x 25_000 + 4500 x 500 + 200 x 6250 + 100 x 10_000.
    tokens = replace(CLAUDE_STUB, cache_creation_1h=100)
    assert cost_nanos("claude-opus-4-8", tokens) == 6_000_000 + 1_050_000 + 2_250_000 + 1_250_000 + 1_000_000
    # All 300 written for an hour: 300 x 10_000 instead of 300 x 6250.
    everything = replace(CLAUDE_STUB, cache_creation_1h=300)
    assert cost_nanos("claude-opus-4-8", everything) == 11_175_000 - 300 * 6250 + 300 * 10_000


def test_one_hour_writes_are_never_more_than_the_writes() -> None:
    table = _table({"m": {"input": 1, "output": 1, "cache_creation": 2, "cache_creation_1h": 7}})
    # 50 one-hour tokens claimed of 10 written: the 10 are priced as one-hour writes, no more.
    assert table.cost_nanos("m", Tokens(cache_creation=10, cache_creation_1h=50)) == 10 * 7000


def test_long_context_variant_suffix_is_ignored() -> None:
    assert cost_nanos("claude-opus-4-8[1m]", CLAUDE_STUB) == 11_175_000


def test_default_table_is_generated_from_litellm_and_versioned() -> None:
    table = default_table()
    assert table.version.startswith("litellm-1.110.2/")
    assert table.local_version
    assert table.full_version == f"{table.version} + local {table.local_version}"
    assert "LiteLLM 1.110.2" in table.source
    assert default_table() is table  # loaded once


@pytest.mark.parametrize(
    "model",
    [
        # every model of a usage record in tests/fixtures/*/*/ (grep of the captures' model attributes)
        "claude-opus-4-8",
        "claude-opus-4-8[1m]",
        "claude-haiku-4-5-20251001",
        "gemini-3.5-flash-lite",
        "gemini-3.8-flash",
        "gemini-3.1-pro-preview",
        "gpt-6.1-sol",
        # and current ones (issue 14: Claude 5.x, GPT-6.x, Gemini 3.x)
        "claude-opus-5-5",
        "claude-sonnet-5",
        "claude-haiku-5-5",
        "gpt-6-sol",
        "gpt-5.6-sol",
        "gemini-3.5-flash",
        "gemini-2.5-pro",
        "gpt-5",
        "gpt-5-codex",
    ],
)
def test_models_of_the_captures_and_current_ones_are_priced(model: str) -> None:
    assert model in default_table()


def test_the_shipped_table_has_no_placeholder_prices() -> None:
    # Every model the captures use is in LiteLLM 1.110.2; prices.local.json adds none.
    local = json.loads((resources.files("streams") / "prices.local.json").read_text())
    assert not any("input" in entry for entry in local["models"].values())
    for model in ("claude-opus-4-8", "gemini-3.8-flash", "gpt-6.1-sol"):
        price = default_table().lookup(model)
        assert price is not None
        assert not price.assumed


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        ("claude-opus-4-8-20261101", "claude-opus-4-8"),
        ("claude-opus-4-8@20261101", "claude-opus-4-8"),
        ("gpt-6.1-sol-2026-09-01", "gpt-6.1-sol"),
        ("gpt-5-2025-08-07", "gpt-5-2025-08-07"),  # a snapshot LiteLLM lists itself
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("openai/GPT-5", "gpt-5"),
        ("gemini-3.8-flash-latest", "gemini-3.8-flash"),
        # LiteLLM's aliases: "claude-opus-latest": {"alias_of": "claude-opus-5-5"}, ...
        ("claude-opus-latest", "claude-opus-5-5"),
        ("gpt-sol-latest", "gpt-6.1-sol"),
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
        "gpt-6.2-sol",  # Codex CLI 0.171's default: not in LiteLLM 1.110.2, so unknown
        "claude-opus-4-9",  # not a snapshot of claude-opus-4: unknown, never a guess
        "claude-opus-4-1",  # LiteLLM 1.110.2 lists it on Bedrock and Vertex only
        "gemma-4-31b-it",  # LiteLLM prices it 0: unknown, not free
        "gpt-5-turbo",
        "gemini-2.5-flash-preview-05-20",
        "auto",
        "some-local-model",
    ],
)
def test_unknown_models_have_no_cost(model: str | None) -> None:
    assert default_table().lookup(model) is None
    assert cost_nanos(model, CLAUDE_STUB) is None


def test_local_overrides_win_field_by_field() -> None:
    generated = {
        "m": {
            "input": 1,
            "output": 2,
            "context_window": 1_000_000,
            "tiers": [{"above_context_tokens": 10, "input": 5, "output": 5}],
        },
        "n": {"input": 1, "output": 1},
    }
    local = {
        "m": {"context_window": 200_000, "tiers": [], "reason": "the agent runs it with 200k"},
        "new": {"input": 3, "output": 4, "assumed": True, "reason": "not in LiteLLM; priced like m"},
    }
    table = _table(generated, local=local)
    m = table.lookup("m")
    assert m is not None
    assert (m.context_window, m.base.input, m.base.output, m.tiers) == (200_000, 1000, 2000, ())
    new = table.lookup("new")
    assert new is not None
    assert (new.base.input, new.assumed) == (3000, True)
    assert table.lookup("n") is not None
    assert table.full_version == "test + local local"


def test_the_shipped_overrides_keep_claude_4_windows_at_200k() -> None:
    # LiteLLM lists claude-opus-4-8 (and 4-6, 4-7, sonnet-4-6) with max_input_tokens 1_000_000;
    # Claude Code gives them 200k unless the [1m] variant is seen. A new LiteLLM pin that adds
    # a Claude 4.x model with a 1M window fails here until prices.local.json covers it.
    generated = json.loads((resources.files("streams") / "prices.json").read_text())
    assert generated["models"]["claude-opus-4-8"]["context_window"] == 1_000_000
    claude_4 = [name for name in generated["models"] if re.match(r"claude-(opus|sonnet|haiku)-4", name)]
    assert "claude-opus-4-8" in claude_4
    for name in claude_4:
        price = default_table().lookup(name)
        assert price is not None
        assert price.context_window == 200_000, name
    opus_5 = default_table().lookup("claude-opus-5-5")
    assert opus_5 is not None
    assert opus_5.context_window == 1_000_000


@pytest.mark.parametrize(
    ("local", "message"),
    [
        ({"m": {"context_window": 1}}, "reason"),
        ({"m": {"context_window": 1, "reason": " "}}, "reason"),
        ({"m": []}, "object"),
        ({"other": {"context_window": 5, "reason": "a window for a model with no price"}}, "input"),
    ],
)
def test_malformed_overrides_are_refused(local: dict[str, Any], message: str) -> None:
    with pytest.raises(PriceTableError, match=message):
        _table({"m": {"input": 1, "output": 1}}, local=local)
    with pytest.raises(PriceTableError, match="version"):
        PriceTable.from_json(json.dumps({"version": "v", "models": {}}), json.dumps({"models": {}}))


def test_gemini_2_5_pro_prompt_tier() -> None:
    tokens = Tokens(input=150_000, cache_read=50_000, output=2_000, reasoning=1_500)
    # LiteLLM gemini/gemini-2.5-pro: 1.25e-06 / 1.25e-07 / 1e-05 per token, and above 200k
    # (*_above_200k_tokens) 2.5e-06 / 2.5e-07 / 1.5e-05.
    # Prompt 150_000 + 50_000 = 200_000: not above 200k -> $1.25 / $0.125 / $10:
    # 150_000 x 1250 + 50_000 x 125 + 2000 x 10_000.
    assert cost_nanos("gemini-2.5-pro", tokens) == 187_500_000 + 6_250_000 + 20_000_000
    # One more prompt token: the whole request at $2.50 / $0.25 / $15:
    # 150_001 x 2500 + 50_000 x 250 + 2000 x 15_000.
    bigger = replace(tokens, input=150_001)
    assert cost_nanos("gemini-2.5-pro", bigger) == 375_002_500 + 12_500_000 + 30_000_000


def test_context_tokens_can_be_given_explicitly() -> None:
    tokens = Tokens(input=1000, output=100)
    # 1000 x 1250 + 100 x 10_000 below the tier; 1000 x 2500 + 100 x 15_000 above it.
    assert cost_nanos("gemini-2.5-pro", tokens) == 2_250_000
    assert cost_nanos("gemini-2.5-pro", tokens, context_tokens=300_000) == 4_000_000


def test_gpt_long_context_tier_above_272k() -> None:
    # LiteLLM gpt-6.1-sol: input 2e-06, cache read 1e-07, output 1e-05 ($2 / $0.10 / $10);
    # *_above_272k_tokens: 4e-06, 2e-07, 1.5e-05 ($4 / $0.20 / $15).
    tokens = Tokens(input=200_000, cache_read=72_000, output=1_000)
    # Prompt 272_000, not above: 200_000 x 2000 + 72_000 x 100 + 1000 x 10_000.
    assert cost_nanos("gpt-6.1-sol", tokens) == 400_000_000 + 7_200_000 + 10_000_000
    # 272_001: 200_001 x 4000 + 72_000 x 200 + 1000 x 15_000.
    bigger = replace(tokens, input=200_001)
    assert cost_nanos("gpt-6.1-sol", bigger) == 800_004_000 + 14_400_000 + 15_000_000


def test_a_tier_prices_one_hour_writes_at_its_own_rate() -> None:
    # LiteLLM claude-haiku-5-5 above 100k: input 5e-07, output 2.5e-06, cache read 5e-08,
    # write 6.25e-07, 1-hour write 1e-06 ($0.50 / $2.50 / $0.05 / $0.625 / $1).
    tokens = Tokens(
        input=10_000, cache_read=85_000, cache_creation=6_000, cache_creation_1h=2_000, output=500
    )
    # Prompt 10_000 + 85_000 + 6_000 = 101_000 > 100k:
    # 10_000 x 500 + 85_000 x 50 + 4_000 x 625 + 2_000 x 1000 + 500 x 2500.
    assert cost_nanos("claude-haiku-5-5", tokens) == 5_000_000 + 4_250_000 + 2_500_000 + 2_000_000 + 1_250_000


def test_reasoning_is_part_of_output_and_not_priced_again() -> None:
    with_reasoning = Tokens(input=476, cache_read=1024, output=42, reasoning=10)
    without = replace(with_reasoning, reasoning=0)
    # gpt-5 (LiteLLM 1.25e-06 / 1.25e-07 / 1e-05): 476 x 1250 + 1024 x 125 + 42 x 10_000.
    assert cost_nanos("gpt-5", with_reasoning) == cost_nanos("gpt-5", without) == 1_143_000


def test_cache_rates_default_to_the_input_rate() -> None:
    table = _table({"m": {"input": 2, "output": 8, "cache_read": 0.5}})
    price = table.lookup("m")
    assert price is not None
    assert (price.base.input, price.base.cache_read, price.base.cache_creation) == (2000, 500, 2000)
    assert price.base.cache_creation_1h == 2000  # the write rate, which is the input rate here
    bare = _table({"m": {"input": 2, "output": 8}}).lookup("m")
    assert bare is not None
    assert (bare.base.cache_read, bare.base.cache_creation) == (2000, 2000)
    written = _table({"m": {"input": 2, "output": 8, "cache_creation": 2.5}}).lookup("m")
    assert written is not None
    assert written.base.cache_creation_1h == 2500  # one-hour writes default to the write rate


def test_costs_are_exact_integers_at_any_size() -> None:
    tokens = Tokens(input=10**12 + 7, output=3, cache_read=10**9 + 1, cache_creation=11)
    # gemini-2.5-flash-lite (LiteLLM 1e-07 / 4e-07 / 1e-08, no write rate so the input rate):
    # $0.10 / $0.40 / $0.01 / $0.10 for writes.
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
