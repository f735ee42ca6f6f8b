"""Pure helpers over OTLP protobuf messages: attribute values, numbers the agents send as text."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue


def any_value(value: AnyValue) -> Any:
    """An ``AnyValue`` as a plain JSON-able Python value; an empty value is ``None``."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


_SCALARS = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def attributes(kvs: Iterable[KeyValue]) -> dict[str, Any]:
    """Attributes as a dict; empty values are dropped (Gemini sends ``{}`` for unset ones)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        kind = value.WhichOneof("value")
        if kind in _SCALARS:  # nearly all of them: no call of any_value
            out[kv.key] = getattr(value, kind)
        elif kind is not None:
            out[kv.key] = any_value(value)
    return out


def as_int(value: Any) -> int | None:
    """An integer from an int, a float or a decimal string (agents mix them); else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)  # exact, unlike a detour through float
        except ValueError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_bool(value: Any) -> bool | None:
    """A boolean from a bool or the strings ``"true"``/``"false"`` (agents send both)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def stable_id(*parts: object) -> str:
    """A short, stable id (hex) of ``parts``: the natural key of a record or series."""
    # The same bytes as hashing each part's repr followed by 0x1f, in one update.
    return hashlib.blake2b(("\x1f".join(map(repr, parts)) + "\x1f").encode(), digest_size=16).hexdigest()


#: Series ids already computed, by service, metric and attributes (:func:`series_id`).
_SERIES_IDS: dict[tuple[object, ...], str] = {}
#: Entries kept before the cache starts over (~1 KB each).
SERIES_IDS_KEPT = 16_384


def series_id(service: str | None, metric: str, attrs: dict[str, Any]) -> str:
    """The id of a metric series: :func:`stable_id` of the service, the metric and the sorted
    attributes. A session sends each series' attributes again in every export, so the id is
    remembered by those attributes as sent, each value with its type (``1``, ``1.0`` and
    ``True`` are equal keys in Python but not the same attribute) and a float as its repr
    (``0.0`` and ``-0.0`` are equal too); values that cannot be a key (lists, maps) are hashed
    every time."""
    key = (
        service,
        metric,
        *[(k, v.__class__, repr(v) if v.__class__ is float else v) for k, v in attrs.items()],
    )
    try:
        found = _SERIES_IDS.get(key)
    except TypeError:  # a list or map among the values
        return stable_id(service, metric, sorted(attrs.items()))
    if found is None:
        found = stable_id(service, metric, sorted(attrs.items()))
        if len(_SERIES_IDS) >= SERIES_IDS_KEPT:
            _SERIES_IDS.clear()
        _SERIES_IDS[key] = found
    return found
