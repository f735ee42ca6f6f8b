"""A small price table for the recommendation and comparison unit tests (rates chosen to make
hand arithmetic easy; USD per million tokens, so ``x`` USD/MTok is ``1000 x`` nano-USD/token)."""

from __future__ import annotations

import json

from dashboard.compare import Catalogue

TABLE = {
    "version": "unit-1",
    "models": {
        # 10000 / 50000 / 1000 / 12500 / 20000 nano-USD per token; above 1000 prompt tokens
        # 20000 / 100000 / 2000 / 25000 / 40000.
        "big-1": {
            "provider": "acme",
            "input": 10,
            "output": 50,
            "cache_read": 1,
            "cache_creation": 12.5,
            "cache_creation_1h": 20,
            "tiers": [
                {
                    "above_context_tokens": 1000,
                    "input": 20,
                    "output": 100,
                    "cache_read": 2,
                    "cache_creation": 25,
                    "cache_creation_1h": 40,
                }
            ],
        },
        # 1000 / 5000 / 100 / 1250 / 2000
        "small-1": {
            "provider": "acme",
            "input": 1,
            "output": 5,
            "cache_read": 0.1,
            "cache_creation": 1.25,
            "cache_creation_1h": 2,
            "aliases": ["small-latest-alias"],
        },
        # a snapshot priced as its base: the same model; one priced otherwise: a model of its own
        "small-1-20250101": {
            "provider": "acme",
            "input": 1,
            "output": 5,
            "cache_read": 0.1,
            "cache_creation": 1.25,
            "cache_creation_1h": 2,
        },
        "other-1-20240101": {"provider": "globex", "input": 3, "output": 8},
        # 2000 / 8000, cache rates default to input: 2000
        "other-1": {"provider": "globex", "input": 2, "output": 8},
    },
}


def catalogue() -> Catalogue:
    return Catalogue.from_json(json.dumps(TABLE))
