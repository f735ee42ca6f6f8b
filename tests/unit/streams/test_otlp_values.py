"""AnyValue to Python, attribute dicts, and numbers the agents send as text."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from streams import dedup, otlp
from streams.otlp import any_value, as_float, as_int, attributes, series_id, stable_id


def _kv(key: str, value: AnyValue) -> KeyValue:
    return KeyValue(key=key, value=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (AnyValue(string_value="claude-opus-4-8"), "claude-opus-4-8"),
        (AnyValue(string_value=""), ""),
        (AnyValue(int_value=1200), 1200),
        (AnyValue(int_value=0), 0),
        (AnyValue(int_value=-(2**63)), -(2**63)),
        (AnyValue(double_value=0.0022349999999999996), 0.0022349999999999996),
        (AnyValue(double_value=0.0), 0.0),
        (AnyValue(bool_value=True), True),
        (AnyValue(bool_value=False), False),
        (AnyValue(bytes_value=b"\x00\xffab"), "00ff6162"),
        (
            AnyValue(
                array_value=ArrayValue(
                    values=[AnyValue(string_value="-p"), AnyValue(int_value=3), AnyValue()]
                )
            ),
            ["-p", 3, None],
        ),
        (
            AnyValue(
                kvlist_value=KeyValueList(
                    values=[
                        _kv("file", AnyValue(string_value="a.py")),
                        _kv(
                            "nested",
                            AnyValue(kvlist_value=KeyValueList(values=[_kv("n", AnyValue(int_value=1))])),
                        ),
                        _kv("unset", AnyValue()),
                    ]
                )
            ),
            {"file": "a.py", "nested": {"n": 1}},
        ),
        (AnyValue(array_value=ArrayValue()), []),
        (AnyValue(), None),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, AnyValue) else str(v.WhichOneof("value")),
)
def test_any_value(value: AnyValue, expected: Any) -> None:
    result = any_value(value)
    assert result == expected
    assert type(result) is type(expected)


def test_attributes_drop_empty_values_only() -> None:
    kvs = [
        _kv("status_code", AnyValue()),  # Gemini's unset attribute
        _kv("success", AnyValue(bool_value=False)),
        _kv("attempt", AnyValue(int_value=0)),
        _kv("error", AnyValue(string_value="")),
        _kv("model", AnyValue(string_value="gemini-2.5-pro")),
    ]
    assert attributes(kvs) == {"success": False, "attempt": 0, "error": "", "model": "gemini-2.5-pro"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12),
        (12, 12),
        (12.0, 12),
        ("12.0", 12),
        ("-3", -3),
        (0, 0),
        ("x", None),
        ("", None),
        (None, None),
        (True, None),
        (False, None),
        (math.nan, None),
        (math.inf, None),
        (-math.inf, None),
        ("NaN", None),
        ("Infinity", None),
        ([12], None),
        # A decimal string is read exactly, not through a double (2**53 + 1).
        ("9007199254740993", 9007199254740993),
    ],
)
def test_as_int(value: Any, expected: int | None) -> None:
    result = as_int(value)
    assert result == expected
    assert result is None or type(result) is int


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", 12.0),
        (12, 12.0),
        (12.0, 12.0),
        ("0.011175", 0.011175),
        ("1e3", 1000.0),
        ("x", None),
        (None, None),
        (True, None),
        (math.nan, None),
        (math.inf, None),
        ("-inf", None),
        ("nan", None),
    ],
)
def test_as_float(value: Any, expected: float | None) -> None:
    result = as_float(value)
    assert result == expected
    assert result is None or type(result) is float


def test_stable_id_is_stable_and_separates_parts() -> None:
    assert stable_id("s", "api_request", 1, 10) == stable_id("s", "api_request", 1, 10)
    assert stable_id("s", "api_request", 1, 10) != stable_id("s", "api_request", 11, 0)
    assert stable_id("ab", "c") != stable_id("a", "bc")
    assert stable_id(1) != stable_id("1")


@pytest.mark.parametrize(
    "parts", [("s", "api_request", 1, 1_795_485_058_104_123_456), ("s", b"\x00\xffraw"), (None, 2.5, "é")]
)
def test_ids_and_digests_are_the_ones_earlier_versions_stored(parts: tuple[object, ...]) -> None:
    """Natural keys and dedup digests are stored (rows, states): an upgrade must make the same
    ones, or a re-sent export would count twice across it. The rule: each part's repr, each
    followed by 0x1f, hashed in order."""
    old = hashlib.blake2b(digest_size=16)
    short = hashlib.blake2b(digest_size=8)
    for part in parts:
        for h in (old, short):
            h.update(repr(part).encode())
            h.update(b"\x1f")
    assert stable_id(*parts) == old.hexdigest()
    assert dedup.digest(*parts) == short.digest()


@pytest.mark.parametrize(
    "attrs",
    [
        {"type": "input", "model": "m"},
        {"model": "m", "type": "input"},  # another order: the same series
        {"n": 1},
        {"n": 1.0},
        {"n": True},
        {"n": "1"},
        {"list": [1, 2], "map": {"a": 1}},
        {"nan": float("nan")},
        {},
    ],
)
def test_series_ids_remembered_are_the_ids_computed(attrs: dict[str, Any]) -> None:
    """Remembered or not, the id is stable_id of the sorted attributes: 1, 1.0 and True are
    equal dict keys in Python but distinct attributes, so distinct series."""
    otlp._SERIES_IDS.clear()
    want = stable_id("svc", "metric", sorted(attrs.items()))
    assert series_id("svc", "metric", attrs) == want
    assert series_id("svc", "metric", dict(attrs)) == want  # from the cache where it can be
    assert series_id("svc", "other", attrs) != want


def test_series_ids_of_equal_but_distinct_values_stay_distinct() -> None:
    otlp._SERIES_IDS.clear()
    values = (1, 1.0, True, 0.0, -0.0, 0)
    ids = [series_id("svc", "m", {"n": v}) for v in values]
    assert ids == [stable_id("svc", "m", [("n", v)]) for v in values]
    assert len(set(ids)) == len(values)  # all equal as Python keys, none the same attribute


def test_the_series_id_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp, "SERIES_IDS_KEPT", 10)
    otlp._SERIES_IDS.clear()
    for i in range(25):
        assert series_id("svc", "m", {"i": i}) == stable_id("svc", "m", [("i", i)])
        assert len(otlp._SERIES_IDS) <= 10
