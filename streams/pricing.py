"""Cost of one model request from a versioned price table, exactly, in integer nano-USD.

Used where the agent sends no cost of its own (Gemini CLI, Codex CLI, OpenTelemetry GenAI
clients); Claude Code's own ``cost_usd`` always wins over the table (ARCHITECTURE.md, "Cost").

The table is the package data file ``streams/prices.json``::

    {"version": "2026-11-24", "source": "...",
     "models": {"gemini-2.5-pro": {"input": 1.25, "output": 10, "cache_read": 0.125,
                                   "tiers": [{"above_context_tokens": 200000,
                                              "input": 2.5, "output": 15, "cache_read": 0.25}]},
                ...}}

Rates are USD per million tokens for the canonical token types (``tokentide.records.Tokens``):
``input`` (uncached), ``output`` (reasoning included, so reasoning is never priced twice),
``cache_read`` and ``cache_creation``. ``cache_read`` and ``cache_creation`` default to the
same rate set's ``input``: OpenAI and Google bill cache writes as ordinary input. An entry may
also carry ``aliases``, ``tiers``, ``prefix``, ``assumed`` and a free-text ``source``.

Tiers: a tier applies to the *whole* request (every token type) when the request's prompt,
``input + cache_read + cache_creation``, is larger than its ``above_context_tokens``; the
highest such tier wins. That is how Gemini 2.5 Pro (> 200k prompt) and Claude Sonnet 4/4.5
long-context requests are billed.

Model lookup, first hit wins: the id as sent, lower-cased, without a ``[...]`` variant suffix
(``claude-opus-4-8[1m]``) and without a ``provider/`` path (``models/gemini-2.5-pro``);
(1) an entry's name or alias; (2) the same after dropping a snapshot suffix
(``-20251001``, ``@20250805``, ``-2025-08-07``, ``-latest``), so ``claude-haiku-4-5-20251001``
is ``claude-haiku-4-5`` but ``claude-opus-4-8`` is never ``claude-opus-4``; (3) the longest
entry marked ``"prefix": true`` that the id starts with, followed by ``-``. Anything else is
unknown: its cost is None, never a guess.

Rounding: none. A rate of P USD/MTok is P x 1000 nano-USD per token; the loader accepts rates
with at most three decimals, so every per-token rate is an integer and a request's cost,
``sum(count x rate)``, is an exact integer number of nano-USD. A finer rate is refused when
the table is loaded (:class:`PriceTableError`) rather than silently rounded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from tokentide.records import Tokens

#: nano-USD per token for 1 USD per million tokens.
NANOS_PER_USD_PER_MTOK = 1000
_SNAPSHOT = re.compile(r"^(?P<base>.+?)(?:[-@](?:\d{8}|\d{4}-\d{2}-\d{2}|latest))$")
_VARIANT = re.compile(r"\[[^\]]*\]$")
_RATE_KEYS = ("input", "output", "cache_read", "cache_creation")


class PriceTableError(ValueError):
    """The price table is malformed; raised when it is loaded (a deployment error, not retriable)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """Integer nano-USD per token for each canonical token type."""

    input: int
    output: int
    cache_read: int
    cache_creation: int

    def cost_nanos(self, tokens: Tokens) -> int:
        """Exact cost of ``tokens``; ``reasoning`` is part of ``output`` and not priced again."""
        return (
            tokens.input * self.input
            + tokens.output * self.output
            + tokens.cache_read * self.cache_read
            + tokens.cache_creation * self.cache_creation
        )


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """One model's rates: the base set and the tiers above prompt-size thresholds."""

    model: str
    base: Rates
    #: (threshold, rates) pairs, ascending by threshold.
    tiers: tuple[tuple[int, Rates], ...] = ()
    #: True for placeholders priced like an analogue (see the table's ``source``).
    assumed: bool = False
    #: The model's context window in tokens, when the table knows it.
    context_window: int | None = None

    def rates_for(self, context_tokens: int) -> Rates:
        """The rate set for a request whose prompt has ``context_tokens`` tokens."""
        rates = self.base
        for threshold, tier in self.tiers:
            if context_tokens > threshold:
                rates = tier
        return rates

    def cost_nanos(self, tokens: Tokens, context_tokens: int | None = None) -> int:
        """Cost of one request; ``context_tokens`` defaults to ``tokens.context``."""
        context = tokens.context if context_tokens is None else context_tokens
        return self.rates_for(context).cost_nanos(tokens)


class PriceTable:
    """A loaded, validated price table. Immutable once built."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        """Build from the parsed JSON document (numbers as ``int`` or ``Decimal``).

        Raises :class:`PriceTableError` on a missing version, a malformed entry, a rate that
        is negative or finer than 0.001 USD/MTok, or a name or alias used twice.
        """
        version = document.get("version")
        if not isinstance(version, str) or not version:
            raise PriceTableError("the price table needs a non-empty string 'version'")
        models = document.get("models")
        if not isinstance(models, Mapping) or not models:
            raise PriceTableError("the price table needs a non-empty 'models' object")
        self.version: str = version
        self.source: str = str(document.get("source", ""))
        self._by_name: dict[str, ModelPrice] = {}
        self._prefixes: list[tuple[str, ModelPrice]] = []
        for name, entry in models.items():
            price = _model_price(str(name).lower(), entry)
            aliases = entry.get("aliases", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
                raise PriceTableError(f"{price.model}: 'aliases' must be a list of model ids")
            names = [price.model, *(a.lower() for a in aliases)]
            for key in names:
                if key in self._by_name:
                    raise PriceTableError(f"model {key!r} is priced twice")
                self._by_name[key] = price
            if entry.get("prefix") is True:
                self._prefixes.append((price.model, price))
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    @classmethod
    def from_json(cls, data: bytes | str) -> PriceTable:
        """Parse a table from JSON text; decimals are read exactly (never through float)."""
        try:
            document = json.loads(data, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            raise PriceTableError(f"the price table is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise PriceTableError("the price table must be a JSON object")
        return cls(document)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.lookup(model) is not None

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The price of ``model`` by the rules in the module docstring, or None if unknown."""
        if not model:
            return None
        name = _VARIANT.sub("", model.strip().lower()).rsplit("/", 1)[-1]
        price = self._by_name.get(name)
        if price is not None:
            return price
        snapshot = _SNAPSHOT.match(name)
        if snapshot is not None:
            price = self._by_name.get(snapshot["base"])
            if price is not None:
                return price
        for prefix, price in self._prefixes:
            if name.startswith(prefix + "-"):
                return price
        return None

    def cost_nanos(self, model: str | None, tokens: Tokens, context_tokens: int | None = None) -> int | None:
        """Exact cost in nano-USD of one request of ``model``; None when the model is unknown."""
        price = self.lookup(model)
        return None if price is None else price.cost_nanos(tokens, context_tokens)


def _nanos_per_token(model: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        raise PriceTableError(f"{model}: {key} must be a number, not {value!r}")
    try:
        nanos = Decimal(value) * NANOS_PER_USD_PER_MTOK
    except InvalidOperation as exc:
        raise PriceTableError(f"{model}: {key} {value!r} is not a number") from exc
    if not nanos.is_finite() or nanos < 0 or nanos != nanos.to_integral_value():
        raise PriceTableError(
            f"{model}: {key} {value} USD/MTok is negative or finer than 0.001 USD/MTok (1 nano-USD/token)"
        )
    return int(nanos)


def _rates(model: str, entry: Mapping[str, Any]) -> Rates:
    for key in ("input", "output"):
        if key not in entry:
            raise PriceTableError(f"{model}: missing rate {key!r}")
    values = {key: _nanos_per_token(model, key, entry[key]) for key in _RATE_KEYS if key in entry}
    return Rates(
        input=values["input"],
        output=values["output"],
        cache_read=values.get("cache_read", values["input"]),
        cache_creation=values.get("cache_creation", values["input"]),
    )


def _model_price(model: str, entry: object) -> ModelPrice:
    if not isinstance(entry, Mapping):
        raise PriceTableError(f"{model}: an entry must be an object")
    tiers = []
    for tier in entry.get("tiers", ()):
        if not isinstance(tier, Mapping):
            raise PriceTableError(f"{model}: a tier must be an object")
        threshold = tier.get("above_context_tokens")
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
            raise PriceTableError(f"{model}: a tier needs a non-negative integer 'above_context_tokens'")
        tiers.append((threshold, _rates(model, tier)))
    tiers.sort(key=lambda item: item[0])
    window = entry.get("context_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
        raise PriceTableError(f"{model}: 'context_window' must be a positive integer")
    return ModelPrice(
        model, _rates(model, entry), tuple(tiers), assumed=entry.get("assumed") is True, context_window=window
    )


@functools.cache
def default_table() -> PriceTable:
    """The table shipped with tokentide (``streams/prices.json``), loaded once per process."""
    return PriceTable.from_json(resources.files("streams").joinpath("prices.json").read_bytes())


def context_window(model: str | None) -> int | None:
    """The context window of ``model`` from the model table, or None when unknown."""
    price = default_table().lookup(model)
    return None if price is None else price.context_window


def cost_nanos(model: str | None, tokens: Tokens, context_tokens: int | None = None) -> int | None:
    """Exact cost in nano-USD of one request of ``model`` by the default table; None if unknown.

    ``context_tokens`` is the request's prompt size for tiered prices; it defaults to
    ``tokens.context`` (input + cache read + cache write).
    """
    return default_table().cost_nanos(model, tokens, context_tokens)
