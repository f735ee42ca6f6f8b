#!/usr/bin/env python3
"""Generate ``streams/prices.json`` from the model price table LiteLLM ships on PyPI.

Standard library only. LiteLLM (MIT) keeps a maintained table of model prices and context
windows, ``litellm/model_prices_and_context_window_backup.json``, inside its package; this
script takes it from the wheel of the pinned version (:data:`LITELLM_VERSION`) and writes the
part tokentide prices with (:func:`convert`):

- the models of the providers our agents use (:data:`PROVIDERS`: Anthropic, OpenAI, Google's
  Gemini API), their direct API entries only (``litellm_provider`` is the provider itself,
  not Bedrock, Vertex, Azure or a gateway), in ``mode`` chat or responses; a key prefixed with
  its own provider (``gemini/gemini-2.5-pro``, how LiteLLM names every Gemini API model) is
  the bare model id the agents send (``gemini-2.5-pro``); keys naming another path
  (``openai/sora-2``) and fine-tuning templates (``ft:...``) are left out;
- standard-tier rates only (no ``_priority``, ``_flex``, ``_batches`` or other service-tier
  suffix, no regional uplift), per million tokens: ``input``, ``output``, ``cache_read``,
  ``cache_creation`` (5-minute writes), ``cache_creation_1h``
  (``cache_creation_input_token_cost_above_1hr``), each spelled out, with LiteLLM's own
  defaults resolved (a missing cache rate is the input rate, a missing 1-hour rate the write
  rate); the long-context rates ``*_above_<N>k_tokens`` (200k for Gemini, 272k for OpenAI,
  any other threshold alike) as ``tiers``, a tier's missing rates taken from the rates below
  it, as LiteLLM bills them; ``context_window`` from ``max_input_tokens``.

A model is left out, with the reason printed and recorded under ``left_out``, when it cannot
be priced exactly: no input or output price, both zero (LiteLLM's placeholder for a model it
has no price for: tokentide says "unknown", never $0), a standard rate finer than 0.001
USD/MTok (tokentide sums integer nano-USD, 1 nano-USD per token = 0.001 USD/MTok; a finer
rate would need rounding), a reasoning rate other than the output rate (tokentide prices
reasoning as output), or two LiteLLM entries for one model id that disagree.

Hand-kept overrides live in ``streams/prices.local.json``, never here.

    python3 scripts/update-prices.py                  # pip download the pinned wheel, write the table
    python3 scripts/update-prices.py --wheel W.whl    # use a wheel already downloaded
    python3 scripts/update-prices.py --check          # regenerate (same date), exit 1 if it differs

(Run it with an interpreter that has pip; uv's virtual environments have none.)
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

#: The LiteLLM release the table is generated from. Change it, run the script, review the diff.
LITELLM_VERSION = "1.110.2"
#: The file inside the wheel.
PRICES_MEMBER = "litellm/model_prices_and_context_window_backup.json"
PROVIDERS = ("anthropic", "openai", "gemini")
MODES = ("chat", "responses")
REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "streams" / "prices.json"

#: LiteLLM key -> our rate name (standard tier, no threshold).
RATE_KEYS = {
    "input": "input_cost_per_token",
    "output": "output_cost_per_token",
    "cache_read": "cache_read_input_token_cost",
    "cache_creation": "cache_creation_input_token_cost",
    "cache_creation_1h": "cache_creation_input_token_cost_above_1hr",
}
#: A long-context rate of the standard tier: ``<rate key>_above_<N>[k]_tokens`` and nothing after.
TIER_KEY = re.compile(
    r"^(?P<key>" + "|".join(re.escape(k) for k in RATE_KEYS.values()) + r")_above_(?P<n>\d+)(?P<k>k?)_tokens$"
)
#: USD per token -> USD per million tokens.
PER_MILLION = Decimal(1_000_000)
#: The finest rate tokentide can sum exactly: 1 nano-USD per token.
FINEST = Decimal("0.001")
RULES = (
    "Rates are USD per million tokens of the standard tier (no batch, flex, priority or regional "
    "pricing). input excludes cached tokens; output includes reasoning; cache_creation is a "
    "5-minute cache write, cache_creation_1h a 1-hour one (LiteLLM's "
    "cache_creation_input_token_cost_above_1hr); every rate is spelled out, LiteLLM's defaults "
    "resolved (a missing cache rate is the input rate, a missing 1-hour rate the 5-minute one). "
    "A tier applies to the whole request when its prompt (input + cache_read + cache_creation) "
    "is larger than above_context_tokens (LiteLLM's *_above_<N>k_tokens rates; a tier's missing "
    "rates are those below it). context_window is LiteLLM's max_input_tokens. OpenAI's 12-hour "
    "cache writes are not priced apart (Codex does not report them apart). Generated: edit "
    "streams/prices.local.json, not this file."
)


class GenerationError(Exception):
    """The source cannot be turned into a table (wrong wheel, version or licence)."""


def usd_per_mtok(value: Any) -> Decimal:
    """A LiteLLM per-token price (read from JSON as Decimal, so exactly) per million tokens."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"not a number: {value!r}")
    return (Decimal(value) * PER_MILLION).normalize()


def model_id(key: str, entry: dict[str, Any]) -> str | None:
    """The model id agents send for a LiteLLM key, or None for keys we do not take."""
    if key.startswith("ft:"):
        return None
    provider, slash, rest = key.partition("/")
    if not slash:
        return key
    return rest if provider == entry.get("litellm_provider") and "/" not in rest else None


def _resolve(raw: dict[str, Decimal | None]) -> dict[str, Decimal]:
    """Spell out every rate, with LiteLLM's defaults for the missing cache rates."""
    input_rate, output_rate = raw["input"], raw["output"]
    if input_rate is None or output_rate is None:
        raise ValueError("no input or output price")
    cache_creation = raw["cache_creation"] if raw["cache_creation"] is not None else input_rate
    return {
        "input": input_rate,
        "output": output_rate,
        "cache_read": raw["cache_read"] if raw["cache_read"] is not None else input_rate,
        "cache_creation": cache_creation,
        "cache_creation_1h": raw["cache_creation_1h"]
        if raw["cache_creation_1h"] is not None
        else cache_creation,
    }


def convert_entry(key: str, entry: dict[str, Any], version: str = LITELLM_VERSION) -> dict[str, Any]:
    """One LiteLLM entry as a price table entry; raises ValueError (the reason) when it cannot
    be priced exactly."""
    raw: dict[str, Decimal | None] = {
        name: None if entry.get(litellm) is None else usd_per_mtok(entry[litellm])
        for name, litellm in RATE_KEYS.items()
    }
    if raw["input"] is None or raw["output"] is None:
        raise ValueError("no input or output price")
    if raw["input"] == 0 and raw["output"] == 0:
        raise ValueError("priced 0 (LiteLLM's placeholder for an unknown price)")
    reasoning = entry.get("output_cost_per_reasoning_token")
    if reasoning is not None and usd_per_mtok(reasoning) != raw["output"]:
        raise ValueError("reasoning priced apart from output")
    thresholds: dict[int, dict[str, Decimal]] = {}
    names = {litellm: name for name, litellm in RATE_KEYS.items()}
    for litellm_key, value in entry.items():
        match = TIER_KEY.match(litellm_key)
        if match is None or value is None:
            continue
        threshold = int(match["n"]) * (1000 if match["k"] else 1)
        thresholds.setdefault(threshold, {})[names[match["key"]]] = usd_per_mtok(value)
    out: dict[str, Any] = {"provider": entry["litellm_provider"], **_resolve(raw)}
    tiers = []
    for threshold in sorted(thresholds):
        raw = {**raw, **thresholds[threshold]}
        tiers.append({"above_context_tokens": threshold, **_resolve(raw)})
    if tiers:
        out["tiers"] = tiers
    for rates in [out, *tiers]:
        for name in RATE_KEYS:
            if rates[name] % FINEST:
                raise ValueError(f"{name} {rates[name]:f} USD/MTok is finer than 0.001 USD/MTok")
    window = entry.get("max_input_tokens")
    if isinstance(window, int) and not isinstance(window, bool) and window > 0:
        out["context_window"] = window
    out["source"] = f"litellm {version}: {key}"
    return out


def convert(litellm: dict[str, Any], *, generated_on: str, version: str = LITELLM_VERSION) -> dict[str, Any]:
    """The whole ``streams/prices.json`` document from LiteLLM's parsed table (numbers as
    Decimal). Pure: the same input and date give the same document."""
    candidates: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    left_out: dict[str, str] = {}
    for key in sorted(litellm):  # a bare key sorts before its provider-prefixed twin
        entry = litellm[key]
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in PROVIDERS:
            continue
        name = model_id(key, entry) if entry.get("mode") in MODES else None
        if name is None:
            continue
        try:
            converted = convert_entry(key, entry, version)
        except ValueError as exc:
            left_out[key] = str(exc)
            continue
        candidates.setdefault(name.lower(), []).append((key, converted))
    models: dict[str, dict[str, Any]] = {}
    for name in sorted(candidates):
        (key, first), *others = candidates[name]
        rates = {k: v for k, v in first.items() if k != "source"}
        if all({k: v for k, v in other.items() if k != "source"} == rates for _, other in others):
            models[name] = first
            continue
        for other_key, _ in candidates[name]:
            left_out[other_key] = f"LiteLLM has entries for {name} that disagree"
    _add_aliases(litellm, models, left_out)
    return {
        "version": f"litellm-{version}/{generated_on}",
        "source": (
            f"LiteLLM {version} (PyPI package litellm=={version}, file {PRICES_MEMBER}), "
            "converted by scripts/update-prices.py: direct API entries of "
            f"{', '.join(PROVIDERS)} in mode {' or '.join(MODES)}"
        ),
        "licence": "MIT (LiteLLM, Copyright (c) 2023 Berri AI; https://github.com/BerriAI/litellm)",
        "litellm_version": version,
        "generated_on": generated_on,
        "unit": "USD per million tokens",
        "rules": RULES,
        "left_out": {key: left_out[key] for key in sorted(left_out)},
        "models": models,
    }


def _add_aliases(
    litellm: dict[str, Any], models: dict[str, dict[str, Any]], left_out: dict[str, str]
) -> None:
    """LiteLLM's ``{"alias_of": <key>}`` entries (``claude-opus-latest``) of models in the
    table become their ``aliases``, under the same naming rule as the models."""
    for key in sorted(litellm):
        entry = litellm[key]
        if not isinstance(entry, dict) or not isinstance(entry.get("alias_of"), str):
            continue
        target = litellm.get(entry["alias_of"])
        if not isinstance(target, dict) or target.get("litellm_provider") not in PROVIDERS:
            continue
        name, target_name = model_id(key, target), model_id(entry["alias_of"], target)
        if name is None or target_name is None or target_name.lower() not in models:
            continue
        name = name.lower()
        taken = name in models or any(name in m.get("aliases", ()) for m in models.values())
        if taken:
            left_out[key] = f"alias of {entry['alias_of']}, but {name} is already another entry's name"
            continue
        models[target_name.lower()].setdefault("aliases", []).append(name)


def _number(value: Any) -> Any:
    """JSON-ready: Decimal rates as int or as the float whose shortest repr is that decimal."""
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        if Decimal(repr(as_float)) != value:  # never: rates have at most a few decimals
            raise GenerationError(f"{value} has no exact short JSON form")
        return as_float
    return value


def render(document: dict[str, Any]) -> str:
    """The document as the committed file's text."""
    return json.dumps(_number(document), indent=2, ensure_ascii=False) + "\n"


def read_wheel(path: Path, version: str = LITELLM_VERSION) -> bytes:
    """LiteLLM's price table from its wheel, after checking the wheel's version and licence."""
    with zipfile.ZipFile(path) as wheel:
        names = wheel.namelist()
        metadata = f"litellm-{version}.dist-info/METADATA"
        if metadata not in names:
            raise GenerationError(f"{path} is not the wheel of litellm {version} (no {metadata})")
        licences = [n for n in names if n.startswith(f"litellm-{version}.dist-info/") and "LICENSE" in n]
        if not licences or not any(b"MIT License" in wheel.read(n) for n in licences):
            raise GenerationError(f"{path}: no MIT licence in the wheel's metadata; check the terms first")
        if PRICES_MEMBER not in names:
            raise GenerationError(f"{path} has no {PRICES_MEMBER}")
        return wheel.read(PRICES_MEMBER)


def download_wheel(version: str, directory: Path) -> Path:
    """``pip download litellm==<version> --no-deps`` into ``directory``; the wheel's path."""
    python = sys.executable if importlib.util.find_spec("pip") else shutil.which("python3")
    if python is None:
        raise GenerationError("no Python with pip found to download the wheel (pass --wheel)")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "download",
            f"litellm=={version}",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(directory),
            "--quiet",
        ],
        check=True,
    )
    wheels = sorted(directory.glob(f"litellm-{version}-*.whl"))
    if not wheels:
        raise GenerationError(f"pip downloaded no wheel of litellm {version}")
    return wheels[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, help=f"a downloaded wheel of litellm {LITELLM_VERSION}")
    source.add_argument("--json", type=Path, help="LiteLLM's JSON itself (tests, a checkout)")
    parser.add_argument("--date", help="generation date, YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument(
        "--check", action="store_true", help="compare with --output (its own date) instead of writing it"
    )
    args = parser.parse_args(argv)
    try:
        if args.json is not None:
            data = args.json.read_bytes()
        elif args.wheel is not None:
            data = read_wheel(args.wheel)
        else:
            with tempfile.TemporaryDirectory(prefix="litellm-") as tmp:
                data = read_wheel(download_wheel(LITELLM_VERSION, Path(tmp)))
    except (GenerationError, OSError, subprocess.CalledProcessError, zipfile.BadZipFile) as exc:
        print(f"update-prices: {exc}", file=sys.stderr)
        return 2
    date = args.date
    if args.check and date is None and args.output.exists():
        date = json.loads(args.output.read_text()).get("generated_on")
    date = date or datetime.datetime.now(datetime.UTC).date().isoformat()
    document = convert(json.loads(data, parse_float=Decimal), generated_on=date)
    for key, reason in document["left_out"].items():
        print(f"update-prices: left out {key}: {reason}", file=sys.stderr)
    text = render(document)
    if args.check:
        same = args.output.exists() and args.output.read_text() == text
        print(f"{args.output}: {'up to date' if same else 'differs from what the generator makes'}")
        return 0 if same else 1
    args.output.write_text(text)
    print(f"wrote {args.output}: {len(document['models'])} models, version {document['version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
