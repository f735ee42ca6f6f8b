"""scripts/update-prices.py: the committed price table is what the generator makes of LiteLLM.

The fixture ``tests/fixtures/litellm/model_prices_and_context_window_backup.subset.json`` is a
verbatim copy of 37 entries of the file in the litellm 1.110.2 wheel (the models of the agents'
captures and the cases the conversion has rules for). Regenerating from it must give, model by
model, exactly the entries of the committed ``streams/prices.json``; the committed file must
name the pin the script holds. The full regeneration is ``scripts/update-prices.py --check``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from streams.pricing import PriceTable

ROOT = Path(__file__).resolve().parents[3]
FIXTURE = ROOT / "tests" / "fixtures" / "litellm" / "model_prices_and_context_window_backup.subset.json"
COMMITTED = ROOT / "streams" / "prices.json"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("update_prices", ROOT / "scripts" / "update-prices.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


update = _script()


def _litellm() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(FIXTURE.read_text(), parse_float=Decimal)
    return document


def _committed() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(COMMITTED.read_text())
    return document


def _generated() -> dict[str, Any]:
    """The fixture's conversion, rendered and read back as the committed file is."""
    document = update.convert(_litellm(), generated_on=_committed()["generated_on"])
    rendered: dict[str, Any] = json.loads(update.render(document))
    return rendered


def test_the_committed_table_is_the_conversion_of_litellm() -> None:
    generated, committed = _generated(), _committed()
    assert sorted(generated["models"]) == [
        "claude-haiku-4-5",
        "claude-haiku-4-5-20251001",
        "claude-haiku-5-5",
        "claude-opus-4-8",
        "claude-opus-5-5",
        "claude-sonnet-4-6",
        "gemini-2.5-flash-lite",
        "gemini-2.5-pro",
        "gemini-3.1-pro-preview",
        "gemini-3.5-flash-lite",
        "gemini-3.8-flash",
        "gemini-exp-1206",
        "gemini-pro-latest",
        "gpt-5",
        "gpt-5-codex",
        "gpt-5-nano",
        "gpt-5.5",
        "gpt-6-luna",
        "gpt-6.1-sol",
    ]
    for name, entry in generated["models"].items():
        assert committed["models"][name] == entry, name
    for key, reason in generated["left_out"].items():
        assert committed["left_out"][key] == reason, key
    for field in ("version", "source", "licence", "litellm_version", "generated_on", "unit", "rules"):
        assert committed[field] == generated[field], field


def test_the_committed_table_names_the_pin_in_every_model() -> None:
    committed = _committed()
    pin = update.LITELLM_VERSION
    assert committed["litellm_version"] == pin
    assert committed["version"] == f"litellm-{pin}/{committed['generated_on']}"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", committed["generated_on"])
    assert committed["licence"].startswith("MIT")
    for name, entry in committed["models"].items():
        assert entry["source"].startswith(f"litellm {pin}: "), name
        assert entry["provider"] in update.PROVIDERS, name


def test_the_committed_table_loads_and_is_rendered_canonically() -> None:
    text = COMMITTED.read_text()
    committed = json.loads(text, parse_float=Decimal)
    assert update.render(committed) == text
    assert PriceTable.from_json(text).version == committed["version"]


def test_rates_per_million_tokens_are_exact() -> None:
    # LiteLLM's per-token prices as written in its JSON, times 10^6, read as decimals.
    models = _generated()["models"]
    assert {k: models["claude-opus-4-8"][k] for k in update.RATE_KEYS} == {
        # input_cost_per_token 5e-06, output 2.5e-05, cache_read_input_token_cost 5e-07,
        # cache_creation_input_token_cost 6.25e-06, ..._above_1hr 1e-05
        "input": 5,
        "output": 25,
        "cache_read": 0.5,
        "cache_creation": 6.25,
        "cache_creation_1h": 10,
    }
    # gpt-5-nano: cache_read_input_token_cost 5e-09 -> 0.005 (its _batches/_flex 2.5e-09 is
    # finer than 0.001 USD/MTok, but not a standard rate, so it does not count).
    assert models["gpt-5-nano"]["cache_read"] == 0.005


def test_only_direct_api_chat_models_of_our_providers() -> None:
    models = _generated()["models"]
    # gemini/<model> is the Gemini API's own entry: the bare id agents send.
    assert models["gemini-3.8-flash"]["source"] == "litellm 1.110.2: gemini/gemini-3.8-flash"
    assert models["gemini-3.8-flash"]["provider"] == "gemini"
    # gemini-2.5-pro (unprefixed) is Vertex AI's entry in LiteLLM; the table has the Gemini API's.
    assert models["gemini-2.5-pro"]["source"] == "litellm 1.110.2: gemini/gemini-2.5-pro"
    for absent in (
        "sora-2",  # openai/sora-2: video generation
        "text-embedding-3-small",
        "gemini-embedding-001",
        "ft:gpt-4o-2024-08-06",
        "anthropic.claude-opus-4-1-20250805-v1:0",  # Bedrock
        "azure/gpt-5",
        "gpt-5-azure",
        "sample_spec",
    ):
        assert absent not in models
    assert all("/" not in name for name in models)


def test_standard_tier_only_and_long_context_tiers() -> None:
    models = _generated()["models"]
    # gpt-6.1-sol: input 2e-06, output 1e-05, cache read 1e-07, write 2.5e-06; above 272k:
    # 4e-06 / 1.5e-05 / 2e-07 / 5e-06. Its _ultrafast and _above_12hr rates are ignored, and
    # it has no 1-hour write rate: 1h writes cost what writes cost.
    sol = models["gpt-6.1-sol"]
    assert {k: sol[k] for k in update.RATE_KEYS} == {
        "input": 2,
        "output": 10,
        "cache_read": 0.1,
        "cache_creation": 2.5,
        "cache_creation_1h": 2.5,
    }
    assert sol["tiers"] == [
        {
            "above_context_tokens": 272_000,
            "input": 4,
            "output": 15,
            "cache_read": 0.2,
            "cache_creation": 5,
            "cache_creation_1h": 5,
        }
    ]
    assert sol["context_window"] == 922_000
    assert sol["aliases"] == ["gpt-sol-latest"]  # "gpt-sol-latest": {"alias_of": "gpt-6.1-sol"}
    # gemini-2.5-pro: above 200k input 2.5e-06, output 1.5e-05, cache read 2.5e-07; no write
    # rate at all, so writes are input (LiteLLM's rule); _priority/_flex/_batches ignored.
    pro = models["gemini-2.5-pro"]
    assert (pro["input"], pro["output"], pro["cache_read"], pro["cache_creation"]) == (1.25, 10, 0.125, 1.25)
    assert pro["tiers"] == [
        {
            "above_context_tokens": 200_000,
            "input": 2.5,
            "output": 15,
            "cache_read": 0.25,
            "cache_creation": 2.5,
            "cache_creation_1h": 2.5,
        }
    ]
    # claude-haiku-5-5: a 100k tier with its own 1-hour write rate (..._above_1hr_above_100k_tokens 1e-06).
    assert models["claude-haiku-5-5"]["tiers"] == [
        {
            "above_context_tokens": 100_000,
            "input": 0.5,
            "output": 2.5,
            "cache_read": 0.05,
            "cache_creation": 0.625,
            "cache_creation_1h": 1,
        }
    ]
    # gpt-5.5: above 272k there is no write rate, so writes are that tier's input (1e-05).
    assert models["gpt-5.5"]["tiers"][0]["cache_creation"] == 10


def test_windows_come_from_max_input_tokens() -> None:
    models = _generated()["models"]
    assert models["gpt-5"]["context_window"] == 272_000
    assert models["claude-opus-5-5"]["context_window"] == 1_000_000
    assert models["claude-opus-4-8"]["context_window"] == 1_000_000  # prices.local.json says 200k
    assert models["gemini-3.5-flash-lite"]["context_window"] == 1_048_576


def test_zero_prices_are_left_out_not_free() -> None:
    generated = _generated()
    assert "gemma-4-31b-it" not in generated["models"]
    assert generated["left_out"]["gemini/gemma-4-31b-it"].startswith("priced 0")
    # gemini/gemini-exp-1206 is priced 0 (left out); the bare gemini-exp-1206 entry has prices.
    assert generated["left_out"]["gemini/gemini-exp-1206"].startswith("priced 0")
    assert generated["models"]["gemini-exp-1206"]["source"] == "litellm 1.110.2: gemini-exp-1206"
    # gemini-pro-latest and gemini/gemini-pro-latest agree: one entry, named after the bare key.
    assert generated["models"]["gemini-pro-latest"]["source"] == "litellm 1.110.2: gemini-pro-latest"
    assert generated["left_out"]["openai/container"] == "no input or output price"


def _entry(**rates: Any) -> dict[str, Any]:
    return {"litellm_provider": "openai", "mode": "chat", **rates}


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_entry(input_cost_per_token=Decimal("1e-06")), "no input or output price"),
        (_entry(input_cost_per_token=0, output_cost_per_token=Decimal("0.0")), "priced 0"),
        (
            _entry(input_cost_per_token=Decimal("1.0005e-06"), output_cost_per_token=Decimal("2e-06")),
            "input 1.0005 USD/MTok is finer than 0.001 USD/MTok",
        ),
        (
            _entry(
                input_cost_per_token=Decimal("1e-06"),
                output_cost_per_token=Decimal("2e-06"),
                cache_read_input_token_cost_above_200k_tokens=Decimal("1e-13"),
            ),
            "cache_read 0.0000001 USD/MTok is finer",
        ),
        (
            _entry(
                input_cost_per_token=Decimal("1e-06"),
                output_cost_per_token=Decimal("2e-06"),
                output_cost_per_reasoning_token=Decimal("3e-06"),
            ),
            "reasoning priced apart",
        ),
    ],
)
def test_models_that_cannot_be_priced_exactly_are_refused(entry: dict[str, Any], reason: str) -> None:
    document = update.convert({"m": entry}, generated_on="2026-12-03")
    assert document["models"] == {}
    assert document["left_out"]["m"].startswith(reason)


def test_entries_that_disagree_are_both_left_out() -> None:
    a = _entry(input_cost_per_token=Decimal("1e-06"), output_cost_per_token=Decimal("2e-06"))
    b = {**a, "litellm_provider": "gemini", "output_cost_per_token": Decimal("3e-06")}
    document = update.convert({"m": {**a, "litellm_provider": "gemini"}, "gemini/m": b}, generated_on="d")
    assert document["models"] == {}
    assert set(document["left_out"]) == {"m", "gemini/m"}


def test_the_wheel_is_checked_for_version_and_licence(tmp_path: Path) -> None:
    wheel = tmp_path / "litellm-1.110.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("litellm-1.110.2.dist-info/METADATA", "Name: litellm\nVersion: 1.110.2\n")
        z.writestr(
            "litellm-1.110.2.dist-info/licenses/LICENSE", "MIT License\n\nCopyright (c) 2023 Berri AI\n"
        )
        z.writestr(update.PRICES_MEMBER, FIXTURE.read_text())
    assert update.read_wheel(wheel) == FIXTURE.read_bytes()
    with pytest.raises(update.GenerationError, match=r"not the wheel of litellm 9\.9\.9"):
        update.read_wheel(wheel, version="9.9.9")
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as z:
        z.writestr("litellm-1.110.2.dist-info/METADATA", "Version: 1.110.2\n")
        z.writestr("litellm-1.110.2.dist-info/licenses/LICENSE", "Proprietary\n")
        z.writestr(update.PRICES_MEMBER, "{}")
    with pytest.raises(update.GenerationError, match="no MIT licence"):
        update.read_wheel(other)


def test_the_command_line_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prices.json"
    assert update.main(["--json", str(FIXTURE), "--date", "2026-12-03", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["version"] == f"litellm-{update.LITELLM_VERSION}/2026-12-03"
    assert update.main(["--json", str(FIXTURE), "--output", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace('"output": 25', '"output": 26', 1))
    assert update.main(["--json", str(FIXTURE), "--output", str(out), "--check"]) == 1
    assert "left out gemini/gemma-4-31b-it" in capsys.readouterr().err
