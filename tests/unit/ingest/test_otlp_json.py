"""The fast OTLP/JSON reader against ``json_format``: every capture, corner cases, generated documents.

The oracle is the reading ingest used before the fast reader existed (and still falls back to):
hex ids rewritten to base64, then ``json_format.ParseDict(..., ignore_unknown_fields=True)``. It
is re-implemented here so the comparison does not depend on ``ingest.decode``. Whenever the fast
reader answers, its message must be identical to the oracle's; whenever the oracle refuses a
document, the fast reader must decline it.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_json
from ingest.decode import decode
from ingest.errors import JSON, BadRequest
from tokentide.topics import Signal

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
_BODY = re.compile(r"\d{4}_v1_(?P<signal>logs|metrics|traces)(?:\.pb)?\.json")
BODIES = sorted(p for p in FIXTURES.glob("*/*/*.json") if _BODY.fullmatch(p.name))
REQUESTS: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
}
_HEX_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_ORACLE_ERRORS = (json_format.ParseError, ValueError, TypeError, OverflowError, RecursionError)

TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"


# --- the oracle and the comparison -------------------------------------------------------------


def _hex_to_base64(node: Any) -> Any:
    """The OTLP hex-id rewrite that precedes json_format (raises ValueError on bad hex)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_KEYS and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            elif isinstance(value, (dict, list)):
                _hex_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_to_base64(item)
    return node


def oracle(request_class: type[Message], document: dict[str, Any]) -> Message | Exception:
    message = request_class()
    try:
        json_format.ParseDict(_hex_to_base64(copy.deepcopy(document)), message, ignore_unknown_fields=True)
    except _ORACLE_ERRORS as exc:
        return exc
    return message


def fast(request_class: type[Message], document: dict[str, Any]) -> Message | None:
    """The fast reader's message, or None when it declines; it must not touch the document."""
    before = copy.deepcopy(document)
    try:
        message = otlp_json.parse(document, request_class)
    except otlp_json.Declined:
        message = None
    assert document == before
    return message


def assert_identical(got: Message, expected: Message) -> None:
    assert type(got) is type(expected)
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert got == expected


def agree(
    request_class: type[Message], document: dict[str, Any]
) -> tuple[Message | Exception, Message | None]:
    """Check the fast reader against the oracle on one document; both answers for more checks."""
    expected = oracle(request_class, document)
    got = fast(request_class, document)
    if isinstance(expected, Exception):
        assert got is None, f"the fast reader accepted what json_format refuses: {expected!r}"
    elif got is not None:
        assert_identical(got, expected)
    return expected, got


def through_decode(signal: Signal, document: dict[str, Any]) -> None:
    """decode() on the document as a body: the oracle's message, or BadRequest where it refuses."""
    body = json.dumps(document).encode()
    expected = oracle(REQUESTS[signal], json.loads(body))
    if isinstance(expected, Exception):
        with pytest.raises(BadRequest):
            decode(signal, body, JSON)
    else:
        assert_identical(decode(signal, body, JSON), expected)


# --- every capture ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", BODIES, ids=[f"{p.parent.parent.name}/{p.parent.name}/{p.name}" for p in BODIES]
)
def test_every_capture_reads_fast_and_identically(body: Path) -> None:
    match = _BODY.fullmatch(body.name)
    assert match is not None
    signal = Signal(match["signal"])
    document = json.loads(body.read_bytes())
    expected, got = agree(REQUESTS[signal], document)
    assert not isinstance(expected, Exception)
    assert got is not None, "a real capture must take the fast path"
    assert_identical(decode(signal, body.read_bytes(), JSON), expected)


def test_captures_cover_every_signal_and_both_renderings() -> None:
    assert {p.name.split("_v1_")[1].split(".")[0] for p in BODIES} == {"logs", "metrics", "traces"}
    assert any(p.name.endswith(".pb.json") for p in BODIES)
    assert any(not p.name.endswith(".pb.json") for p in BODIES)


# --- corner cases -------------------------------------------------------------------------------


def _logs(record: dict[str, Any], **resource_logs: Any) -> dict[str, Any]:
    return {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}], **resource_logs}]}


def _metric(metric: dict[str, Any]) -> dict[str, Any]:
    return {"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}


def _span(span: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _nested_body(levels: int, leaf: dict[str, Any]) -> dict[str, Any]:
    """A log record whose body nests ``levels`` arrays around ``leaf``, an AnyValue at 5 + 2 * levels.

    (The request is at depth 1, ResourceLogs 2, ScopeLogs 3, LogRecord 4, its body 5.)
    """
    value = leaf
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    return _logs({"body": value})


#: Documents the fast reader must read itself (and identically).
FAST = [
    pytest.param(Signal.LOGS, {}, id="empty-request"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": "1795485058104123456"}), id="int64-as-string"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": 1795485058104123456}), id="int64-as-number"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": 1.0e18}), id="int64-as-integral-float"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": "18446744073709551615"}), id="fixed64-max"),
    pytest.param(Signal.LOGS, _logs({"body": {"intValue": "-9223372036854775808"}}), id="int64-min"),
    pytest.param(Signal.LOGS, _logs({"body": {"intValue": "+7"}}), id="int64-plus-sign"),
    pytest.param(Signal.LOGS, _logs({"droppedAttributesCount": 4294967295}), id="uint32-max"),
    pytest.param(Signal.LOGS, _logs({"traceId": TRACE_HEX.upper(), "spanId": SPAN_HEX}), id="hex-ids"),
    pytest.param(Signal.LOGS, _logs({"traceId": "", "spanId": None}), id="hex-empty-and-null"),
    pytest.param(Signal.LOGS, _logs({"trace_id": TRACE_HEX, "span_id": SPAN_HEX}), id="hex-snake-case"),
    pytest.param(Signal.LOGS, _logs({"body": {"bytesValue": "aGVsbG8gd29ybGQ="}}), id="base64"),
    pytest.param(Signal.LOGS, _logs({"body": {"bytesValue": "_-8"}}), id="base64-urlsafe-unpadded"),
    pytest.param(Signal.LOGS, _logs({"body": {}}), id="empty-anyvalue"),
    pytest.param(Signal.LOGS, _logs({"body": None, "attributes": None}), id="nulls"),
    pytest.param(Signal.LOGS, _logs({"attributes": [{"key": "k"}, {"key": "v", "value": {}}]}), id="kv"),
    pytest.param(Signal.LOGS, _logs({"body": {"stringValue": "", "intValue": None}}), id="oneof-null"),
    pytest.param(Signal.LOGS, _logs({"body": {"boolValue": False}}), id="oneof-default-value"),
    pytest.param(Signal.LOGS, _logs({"severityNumber": "SEVERITY_NUMBER_WARN"}), id="enum-name"),
    pytest.param(Signal.LOGS, _logs({"severityNumber": 99}), id="enum-unknown-number"),
    pytest.param(Signal.LOGS, _logs({"severity_text": "x", "event_name": "y"}), id="snake-case-keys"),
    pytest.param(Signal.LOGS, _logs({"body": {"stringValue": "héllo \U0001f600"}}), id="non-ascii"),
    pytest.param(
        Signal.LOGS,
        _logs({"futureField": {"traceId": TRACE_HEX, "x": [1, {"y": None}]}}, brandNew=[1]),
        id="unknown-fields",
    ),
    pytest.param(Signal.LOGS, _logs({"[x": 1, "[a-b]": 2}), id="bracket-keys-not-extensions"),
    pytest.param(Signal.LOGS, _nested_body(47, {"stringValue": "x"}), id="depth-99"),
    pytest.param(Signal.LOGS, _nested_body(47, {"arrayValue": {}}), id="depth-100"),
    pytest.param(
        Signal.METRICS,
        _metric({"gauge": {"dataPoints": [{"asDouble": "NaN"}, {"asDouble": "-Infinity"}, {"asInt": 3}]}}),
        id="double-specials",
    ),
    pytest.param(
        Signal.METRICS,
        _metric({"sum": {"dataPoints": [{"asDouble": 3, "exemplars": [{"asDouble": "2.5e3"}]}]}}),
        id="double-from-int-and-string",
    ),
    pytest.param(
        Signal.METRICS,
        _metric({"histogram": {"dataPoints": [{"sum": 0, "min": None, "bucketCounts": ["1", 2]}]}}),
        id="optional-double-zero",
    ),
    pytest.param(
        Signal.METRICS,
        _metric({"exponentialHistogram": {"dataPoints": [{"scale": -3, "positive": {"offset": -2}}]}}),
        id="sint32",
    ),
    pytest.param(
        Signal.TRACES,
        _span({"status": {}, "links": [{"traceId": TRACE_HEX, "flags": 256}], "kind": 2}),
        id="span",
    ),
]


@pytest.mark.parametrize(("signal", "document"), FAST)
def test_the_fast_reader_reads(signal: Signal, document: dict[str, Any]) -> None:
    expected, got = agree(REQUESTS[signal], document)
    assert not isinstance(expected, Exception)
    assert got is not None, "declined a document it is meant to read"
    through_decode(signal, document)


#: Documents the fast reader leaves to json_format: refused there, or read by one of its corners.
DECLINED = [
    pytest.param(Signal.LOGS, _logs({"body": {"stringValue": "a", "intValue": 1}}), id="two-oneof-members"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": "5", "time_unix_nano": None}), id="both-spellings"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": " 5"}), id="int-with-space"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": "1_000"}), id="int-with-underscore"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": "1e3"}), id="int-as-exponent-string"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": 1.5}), id="int-as-fraction"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": True}), id="int-as-bool"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": -1}), id="uint64-negative"),
    pytest.param(Signal.LOGS, _logs({"timeUnixNano": 2**64}), id="uint64-overflow"),
    pytest.param(Signal.LOGS, _logs({"droppedAttributesCount": 2**32}), id="uint32-overflow"),
    pytest.param(Signal.LOGS, _logs({"severityNumber": True}), id="enum-bool"),
    pytest.param(Signal.LOGS, _logs({"severityNumber": "BOGUS"}), id="enum-unknown-name"),
    pytest.param(Signal.LOGS, _logs({"severityNumber": 2**31}), id="enum-overflow"),
    pytest.param(Signal.LOGS, _logs({"traceId": "xyz"}), id="bad-hex"),
    pytest.param(Signal.LOGS, _logs({"traceId": "abc"}), id="odd-hex"),
    pytest.param(Signal.LOGS, _logs({"traceId": 5}), id="hex-not-a-string"),
    pytest.param(Signal.LOGS, _logs({"body": {"bytesValue": "abcde"}}), id="bad-base64"),
    pytest.param(Signal.LOGS, _logs({"body": {"stringValue": "\ud800"}}), id="lone-surrogate"),
    pytest.param(Signal.LOGS, _logs({"body": {"stringValue": 5}}), id="string-not-a-string"),
    pytest.param(Signal.LOGS, _logs({"body": {"boolValue": 1}}), id="bool-as-int"),
    pytest.param(Signal.LOGS, _logs({"body": {"doubleValue": True}}), id="double-as-bool"),
    pytest.param(Signal.LOGS, _logs({"body": {"doubleValue": "nan"}}), id="double-lowercase-nan"),
    pytest.param(Signal.LOGS, _logs({"body": {"doubleValue": float("nan")}}), id="double-bare-nan"),
    pytest.param(Signal.LOGS, _logs({"body": {"doubleValue": 10**400}}), id="double-huge-int"),
    pytest.param(Signal.LOGS, _logs({"body": "abc"}), id="message-as-string"),
    pytest.param(Signal.LOGS, _logs({"body": []}), id="message-as-list"),
    pytest.param(Signal.LOGS, _logs({"attributes": {}}), id="repeated-as-object"),
    pytest.param(Signal.LOGS, _logs({"attributes": [None]}), id="null-in-repeated"),
    pytest.param(Signal.LOGS, _logs({"[ext.field]": 1}), id="extension-key"),
    pytest.param(Signal.LOGS, _logs({"futureField": [{"spanId": "zz"}]}), id="bad-hex-in-unknown"),
    pytest.param(Signal.LOGS, _nested_body(48, {}), id="depth-101"),
    pytest.param(Signal.METRICS, _metric({"sum": {}, "gauge": {}}), id="two-metric-kinds"),
    pytest.param(
        Signal.METRICS,
        _metric({"gauge": {"dataPoints": [{"asDouble": 1.5, "asInt": "2"}]}}),
        id="two-point-values",
    ),
]


@pytest.mark.parametrize(("signal", "document"), DECLINED)
def test_corners_are_left_to_json_format(signal: Signal, document: dict[str, Any]) -> None:
    _, got = agree(REQUESTS[signal], document)
    assert got is None
    through_decode(signal, document)


def test_the_depth_limit_is_json_formats() -> None:
    assert not isinstance(oracle(ExportLogsServiceRequest, _nested_body(47, {"arrayValue": {}})), Exception)
    assert isinstance(oracle(ExportLogsServiceRequest, _nested_body(48, {})), json_format.ParseError)


def test_a_huge_integer_for_a_double_is_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        decode(
            Signal.LOGS,
            b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"doubleValue":1%s}}]}]}]}'
            % (b"0" * 400),
            JSON,
        )


# --- generated documents ------------------------------------------------------------------------
#
# A document is drawn by one composite strategy walking the descriptors: Hypothesis draws the leaf
# values (ints, doubles, ids, strings, ...), while the shape (which fields, their order, nulls,
# list lengths, where something goes wrong) comes from a random.Random that Hypothesis seeds. Drawing
# the shape through Hypothesis too is ten times slower, and it favours small integers so much that
# "one time in n" would not be.

_F = FieldDescriptor
_INT_BOUNDS = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _F.CPPTYPE_UINT32: (0, 2**32 - 1),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _F.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
_MAX_NESTING = 8

_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=4,
)
_BAD_CONTAINERS = st.sampled_from([[], [1], ["a"], [None], [{}], {}, {"a": 1}, "abc", 5, 1.5, True])
_BAD_HEX_IN_JUNK = {"x": [{"spanId": "zz"}]}


def _bad_ints(low: int, high: int) -> st.SearchStrategy[Any]:
    corners: list[Any] = [
        low - 1, high + 1, str(low - 1), str(high + 1), 2**64, 10**30, "1e3", " 5", "5 ", "\t5",
        "-0", "007", "1_000", "0x10", "5.0", "5.5", "", "abc", "Infinity", "NaN", "1e400",
        "\u0661\u0662", True, False, 1.0, 1.5, -0.0, 1e18, 1e30, float("nan"), float("inf"),
        "9" * 5000,
    ]  # fmt: skip
    wide = st.integers(-(2**70), 2**70)
    return st.sampled_from(corners) | wide | wide.map(str) | st.floats()


def _leaf(field: FieldDescriptor, key: str) -> tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]:
    """Good and bad values for a scalar field given under ``key``."""
    cpp = field.cpp_type
    good: st.SearchStrategy[Any]
    bad: st.SearchStrategy[Any]
    if cpp in _INT_BOUNDS:
        low, high = _INT_BOUNDS[cpp]
        good = (
            st.integers(low, high) | st.integers(low, high).map(str) | st.sampled_from([low, high, str(high)])
        )
        bad = _bad_ints(low, high)
    elif cpp in (_F.CPPTYPE_DOUBLE, _F.CPPTYPE_FLOAT):
        finite = st.floats(allow_nan=False, allow_infinity=False)
        specials = st.sampled_from(["NaN", "Infinity", "-Infinity"])
        good = finite | st.integers(-(2**60), 2**60) | finite.map(repr) | specials
        odd = [10**400, "nan", "-nan", "inf", " 1.5", "1_0.5", "1.", ".5", "abc", "", True, "1e400", "-0"]
        bad = st.floats() | st.sampled_from(odd)
    elif cpp == _F.CPPTYPE_BOOL:
        good = st.booleans()
        bad = st.sampled_from([0, 1, "true", "false", 1.0, "", "True"])
    elif cpp == _F.CPPTYPE_ENUM:
        assert field.enum_type is not None
        values = field.enum_type.values
        good = st.sampled_from([v.number for v in values] + [v.name for v in values]) | st.integers(
            -(2**31), 2**31 - 1
        )
        bad = st.sampled_from([2**31, -(2**31) - 1, "5", " 1", "BOGUS", "", 1.0, 1.5, True, False])
    elif field.type == _F.TYPE_BYTES and key in _HEX_KEYS:
        ids = st.binary(max_size=16).map(bytes.hex)
        good = ids | ids.map(str.upper) | st.sampled_from([TRACE_HEX, SPAN_HEX, ""])
        bad = st.sampled_from(["xyz", "abc", "5b8e-ff7", "5b 8e", "0x12", "é1", " 5b", "5b8e\n", 5, True])
    elif field.type == _F.TYPE_BYTES:
        raw = st.binary(max_size=12)
        good = raw.map(lambda b: base64.b64encode(b).decode()) | raw.map(
            lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
        )
        bad = st.sampled_from(["!", "a", "abc=d", "é", "a b", "====", 5, True])
    else:
        good = st.text(max_size=8)
        bad = st.sampled_from(["\ud800", "a\udc00", "\ud83d\ude00", "\udfff\ud800", 5, True, 1.5])
    return good, bad | _BAD_CONTAINERS


_LEAVES: dict[tuple[str, str], tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]] = {}


@dataclass
class _Shape:
    """The document being drawn: Hypothesis's ``draw``, a seeded ``rnd``, how often to go wrong."""

    draw: st.DrawFn
    rnd: random.Random
    #: 0: a well-formed document; n: one decision in n goes wrong.
    rate: int

    def chance(self, p: float) -> bool:
        return self.rnd.random() < p

    def wrong(self) -> bool:
        return bool(self.rate) and self.rnd.random() * self.rate < 1

    def leaf(self, field: FieldDescriptor, key: str) -> Any:
        strategies = _LEAVES.get((field.full_name, key))
        if strategies is None:
            strategies = _LEAVES[field.full_name, key] = _leaf(field, key)
        good, bad = strategies
        return self.draw(bad if self.wrong() else good)

    def value(self, field: FieldDescriptor, key: str, depth: int) -> Any:
        if self.wrong():
            return self.draw(_BAD_CONTAINERS)
        if not field.is_repeated:
            return self.item(field, key, depth)
        # Near the top (resources, scopes, records), lists are rarely empty: documents reach the data.
        least = 1 if depth < 4 and field.cpp_type == _F.CPPTYPE_MESSAGE else 0
        items = self.rnd.randint(least, 3 if depth < 4 else 2)
        return [None if self.wrong() else self.item(field, key, depth) for _ in range(items)]

    def item(self, field: FieldDescriptor, key: str, depth: int) -> Any:
        message_type = field.message_type
        if message_type is None:
            return self.leaf(field, key)
        if message_type.full_name == _ANY_VALUE and self.wrong():
            return self.deep_any_value()
        return self.message(message_type, depth + 1)

    def message(self, descriptor: Descriptor, depth: int) -> dict[str, Any]:
        """Some fields of ``descriptor`` (json or snake names, nulls), in any order, and unknown keys."""
        chosen = []
        for f in descriptor.fields:
            if f.message_type is None:
                weight = 0.3
            else:  # message fields near the top mostly, so documents reach the data
                weight = 0.9 if depth < 5 else 0.3 if depth < _MAX_NESTING else 0
            if self.chance(weight):
                chosen.append(f)
        self.rnd.shuffle(chosen)
        if not self.wrong():
            chosen = _one_per_oneof(chosen)  # json_format refuses two members of a oneof
        document: dict[str, Any] = {}
        for f in chosen:
            keys = [f.json_name]
            if self.wrong() and f.name != f.json_name:
                keys = [f.json_name, f.name]  # both spellings: json_format applies both, in order
            elif self.chance(0.1):
                keys = [f.name]  # the original field name, which json_format accepts too
            for key in keys:
                document[key] = None if self.chance(0.1) else self.value(f, key, depth)
        self.unknown_fields(descriptor, document)
        return document

    def unknown_fields(self, descriptor: Descriptor, document: dict[str, Any]) -> None:
        """Keys the message does not have: ignored, though the hex rewrite still reads id-named ones."""
        if not self.chance(0.2):
            return
        known = {f.json_name for f in descriptor.fields} | {f.name for f in descriptor.fields}
        key = self.rnd.choice(["futureField", "newThing", "traceId", "spanId", "parent_span_id"])
        if key in known:
            return
        if key in _HEX_KEYS:
            ids = [TRACE_HEX, SPAN_HEX, "", None, 5, [TRACE_HEX]]
            document[key] = self.rnd.choice(["zz", "a", "5b8e-ff"] if self.wrong() else ids)
        else:
            document[key] = _BAD_HEX_IN_JUNK if self.wrong() else self.draw(_JUNK)
        if self.wrong():
            # json_format reads "[...]" keys as extensions, which OTLP's messages do not have.
            document[self.rnd.choice(["[ext]", "[a.b]", "[", "[x"])] = 1

    def deep_any_value(self) -> dict[str, Any]:
        """Arrays and kvlists nested around json_format's depth limit from where an AnyValue sits."""
        value: dict[str, Any] = {"stringValue": "leaf"}
        for _ in range(self.rnd.randint(40, 52)):
            if self.chance(0.5):
                value = {"arrayValue": {"values": [value]}}
            else:
                value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
        return value


def _one_per_oneof(fields: list[FieldDescriptor]) -> list[FieldDescriptor]:
    seen: set[str] = set()
    kept = []
    for f in fields:
        oneof = f.containing_oneof
        if oneof is None or oneof.name not in seen:
            kept.append(f)
            if oneof is not None:
                seen.add(oneof.name)
    return kept


@st.composite
def _documents(draw: st.DrawFn, signal: Signal, valid: bool) -> dict[str, Any]:
    """Requests of ``signal``: well formed, or with things wrong here and there (at several rates)."""
    rnd = draw(st.randoms(use_true_random=True))
    rate = 0 if valid else draw(st.sampled_from([4, 16, 64, 256, 1024]))
    return _Shape(draw, rnd, rate).message(REQUESTS[signal].DESCRIPTOR, 1)


_SETTINGS = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("signal", list(Signal))
def test_generated_documents_agree_with_json_format(signal: Signal) -> None:
    @_SETTINGS
    @given(document=_documents(signal, valid=False))
    def check(document: dict[str, Any]) -> None:
        agree(REQUESTS[signal], document)

    check()


@pytest.mark.parametrize("signal", list(Signal))
def test_valid_generated_documents_take_the_fast_path(signal: Signal) -> None:
    @settings(_SETTINGS, max_examples=200)
    @given(document=_documents(signal, valid=True))
    def check(document: dict[str, Any]) -> None:
        expected, got = agree(REQUESTS[signal], document)
        assert not isinstance(expected, Exception), expected
        assert got is not None, "declined a valid document"

    check()


@pytest.mark.parametrize("signal", list(Signal))
def test_generated_bodies_decode_like_json_format(signal: Signal) -> None:
    @settings(_SETTINGS, max_examples=100)
    @given(document=_documents(signal, valid=False))
    def check(document: dict[str, Any]) -> None:
        through_decode(signal, document)

    check()
