"""Media type, Content-Encoding and OTLP decoding, against the real captures and hostile bodies."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ingest.decode import decode, decompress, media_type
from ingest.errors import JSON, PROTOBUF, BadRequest, PayloadTooLarge, UnsupportedMediaType
from tokentide.topics import Signal

MiB = 1024 * 1024
CAPTURES = Path(__file__).resolve().parents[2] / "fixtures" / "claude-code"
TRACE_HEX = "5b8efff798038103d269b633813fc60c"
SPAN_HEX = "eee19b7ec3c1b174"
PARENT_HEX = "eee19b7ec3c1b173"


# --- media type -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "media"),
    [
        ("application/x-protobuf", PROTOBUF),
        ("application/json", JSON),
        ("application/json; charset=utf-8", JSON),
        ("Application/JSON;charset=UTF-8", JSON),
        ("  APPLICATION/X-PROTOBUF ; foo=bar", PROTOBUF),
    ],
)
def test_media_type(header: str, media: str) -> None:
    assert media_type(header) == media


@pytest.mark.parametrize(
    "header", [None, "", "text/plain", "application/protobuf", "application/x-www-form-urlencoded", "json"]
)
def test_media_type_refused(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        media_type(header)


# --- Content-Encoding -------------------------------------------------------------------------

BODY = b'{"resourceLogs":[]}' * 100


@pytest.mark.parametrize("encoding", [None, "", "identity", "IDENTITY", " identity "])
def test_identity_returns_the_body(encoding: str | None) -> None:
    assert decompress(BODY, encoding, limit=MiB) == BODY


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " gzip "])
def test_gzip_round_trip(encoding: str) -> None:
    assert decompress(gzip.compress(BODY), encoding, limit=MiB) == BODY


def test_multi_member_gzip_is_concatenated() -> None:
    body = gzip.compress(b"first member|") + gzip.compress(b"second member|") + gzip.compress(b"third")
    assert decompress(body, "gzip", limit=MiB) == b"first member|second member|third"


def test_output_exactly_at_the_limit_is_accepted() -> None:
    data = bytes(range(256)) * 16
    assert decompress(gzip.compress(data), "gzip", limit=len(data)) == data
    with pytest.raises(PayloadTooLarge):
        decompress(gzip.compress(data), "gzip", limit=len(data) - 1)


def test_limit_applies_to_all_members_together() -> None:
    member = gzip.compress(b"x" * 600)
    assert len(decompress(member * 2, "gzip", limit=1200)) == 1200
    with pytest.raises(PayloadTooLarge):
        decompress(member * 2, "gzip", limit=1199)


@pytest.mark.parametrize("cut", [1, 10, -9, -1])
def test_truncated_gzip_is_bad_request(cut: int) -> None:
    body = gzip.compress(BODY)
    with pytest.raises(BadRequest):
        decompress(body[:cut], "gzip", limit=MiB)


@pytest.mark.parametrize(
    "body",
    [b"definitely not gzip", b"\x1f\x8b\x08\x00garbage-after-magic", gzip.compress(BODY) + b"trailing"],
)
def test_garbage_gzip_is_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        decompress(body, "gzip", limit=MiB)


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """50 MiB of zeros, gzip-compressed to a few tens of KiB."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MiB)
    body = b"".join(compressor.compress(zeros) for _ in range(50)) + compressor.flush()
    assert len(body) < MiB // 10
    return body


def test_gzip_bomb_is_refused_without_inflating_it(gzip_bomb: bytes) -> None:
    limit = MiB
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decompress(gzip_bomb, "gzip", limit=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The output buffer plus one chunk plus zlib's window; 50 MiB would mean it inflated the bomb.
    assert peak < 4 * limit


@pytest.mark.parametrize("encoding", ["br", "zstd", "deflate", "gzip, br", "x-gzip"])
def test_unknown_encoding_is_unsupported(encoding: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="Content-Encoding"):
        decompress(gzip.compress(BODY), encoding, limit=MiB)


# --- decoding the captures --------------------------------------------------------------------


def _count(signal: Signal, message: Any) -> int:
    if signal is Signal.LOGS:
        return sum(len(s.log_records) for r in message.resource_logs for s in r.scope_logs)
    if signal is Signal.TRACES:
        return sum(len(s.spans) for r in message.resource_spans for s in r.scope_spans)
    return sum(
        len(getattr(m, m.WhichOneof("data")).data_points)
        for r in message.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    )


def test_every_capture_decodes_for_its_signal(capture_body: Path, capture: Any) -> None:
    cap = capture(capture_body)
    media = PROTOBUF if capture_body.suffix == ".pb" else JSON
    message = decode(cap.signal, capture_body.read_bytes(), media)
    assert _count(cap.signal, message) == len(cap.records()) > 0


def test_protobuf_and_its_json_rendering_decode_equal(capture_pb: Path, capture: Any) -> None:
    signal = capture(capture_pb).signal
    from_pb = decode(signal, capture_pb.read_bytes(), PROTOBUF)
    from_json = decode(signal, capture_pb.with_name(capture_pb.name + ".json").read_bytes(), JSON)
    assert from_json == from_pb


@pytest.mark.parametrize("case", ["stub-tool-traces-json", "stub-tool-traces-protobuf"])
def test_captured_trace_ids_are_read_as_hex(case: str, captures_of: Callable[[str], list[Any]]) -> None:
    (traces,) = [c for c in captures_of(case) if c.signal is Signal.TRACES]
    decoded: Any = decode(Signal.TRACES, _json(traces.document), JSON)
    spans = [s for r in decoded.resource_spans for ss in r.scope_spans for s in ss.spans]
    for span, raw in zip(spans, traces.records(), strict=True):
        assert span.trace_id.hex() == raw["traceId"]
        assert span.span_id.hex() == raw["spanId"]
        assert span.parent_span_id.hex() == raw.get("parentSpanId", "")


# --- OTLP/JSON rules --------------------------------------------------------------------------


def _logs(record: dict[str, Any]) -> dict[str, Any]:
    return {"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}


def _record(message: Any) -> Any:
    return message.resource_logs[0].scope_logs[0].log_records[0]


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize("trace_hex", [TRACE_HEX, TRACE_HEX.upper()])
def test_hex_ids_become_their_bytes(trace_hex: str) -> None:
    record = _record(decode(Signal.LOGS, _json(_logs({"traceId": trace_hex, "spanId": SPAN_HEX})), JSON))
    assert record.trace_id == bytes.fromhex(TRACE_HEX)
    assert len(record.trace_id) == 16
    assert record.span_id == bytes.fromhex(SPAN_HEX)
    assert len(record.span_id) == 8


def test_span_parent_id_is_hex_too() -> None:
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {"spans": [{"traceId": TRACE_HEX, "spanId": SPAN_HEX, "parentSpanId": PARENT_HEX}]}
                ]
            }
        ]
    }
    span = decode(Signal.TRACES, _json(document), JSON).resource_spans[0].scope_spans[0].spans[0]
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        bytes.fromhex(TRACE_HEX),
        bytes.fromhex(SPAN_HEX),
        bytes.fromhex(PARENT_HEX),
    )


@pytest.mark.parametrize("bad", ["xyz", "5b8efff79803810", "5b8e-ff7"])
def test_bad_hex_id_is_bad_request(bad: str) -> None:
    with pytest.raises(BadRequest, match="traceId"):
        decode(Signal.LOGS, _json(_logs({"traceId": bad})), JSON)


def test_64_bit_ints_as_strings_or_numbers() -> None:
    ns = 1_795_485_058_104_123_456
    attribute = {"key": "n", "value": {"intValue": None}}
    as_strings = _logs({"timeUnixNano": str(ns), "attributes": [{**attribute, "value": {"intValue": "12"}}]})
    as_numbers = _logs({"timeUnixNano": ns, "attributes": [{**attribute, "value": {"intValue": 12}}]})
    from_strings = decode(Signal.LOGS, _json(as_strings), JSON)
    assert decode(Signal.LOGS, _json(as_numbers), JSON) == from_strings
    record = _record(from_strings)
    assert record.time_unix_nano == ns
    assert record.attributes[0].value.int_value == 12


def test_metric_as_int_as_string_or_number() -> None:
    def metrics(value: Any) -> bytes:
        point = {"asInt": value, "timeUnixNano": "1795485058111000000"}
        metric = {"name": "n", "sum": {"dataPoints": [point], "aggregationTemporality": 1}}
        return _json({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]})

    decoded = decode(Signal.METRICS, metrics("9007199254740993"), JSON)
    assert decode(Signal.METRICS, metrics(9007199254740993), JSON) == decoded
    point = decoded.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0]
    assert point.as_int == 9007199254740993


def test_unknown_fields_are_ignored() -> None:
    known = _logs({"timeUnixNano": "1", "body": {"stringValue": "x"}})
    extended = {
        "resourceLogs": [
            {
                "resource": {"attributes": [], "entityRefs": [{"type": "service"}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {"timeUnixNano": "1", "body": {"stringValue": "x"}, "futureField": {"a": 1}}
                        ],
                        "newScopeThing": True,
                    }
                ],
            }
        ],
        "brandNewTopLevel": [1, 2, 3],
    }
    decoded = decode(Signal.LOGS, _json(extended), JSON)
    assert _record(decoded) == _record(decode(Signal.LOGS, _json(known), JSON))


def test_empty_json_object_is_an_empty_request() -> None:
    assert decode(Signal.METRICS, b"{}", JSON).ByteSize() == 0


# --- bad bodies -------------------------------------------------------------------------------


def test_json_body_sent_as_protobuf_is_bad_request(captures_of: Callable[[str], list[Any]]) -> None:
    (logs,) = [c for c in captures_of("stub-text-json") if c.signal is Signal.LOGS]
    with pytest.raises(BadRequest, match="protobuf"):
        decode(Signal.LOGS, logs.path.read_bytes(), PROTOBUF)


@pytest.mark.parametrize("cut", [1, 2, 100, -1])
def test_truncated_protobuf_is_bad_request(cut: int) -> None:
    body = (CAPTURES / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
    # A capture is one ResourceLogs: every cut falls inside that length-delimited field.
    with pytest.raises(BadRequest):
        decode(Signal.LOGS, body[:cut], PROTOBUF)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"resourceLogs": [}',
        b"[]",
        b'[{"resourceLogs": []}]',
        b'"resourceLogs"',
        b"null",
        b"42",
        b"\xff\xfe\x00garbage",
        b'{"resourceLogs": "not a list"}',
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "yesterday"}]}]}]}',
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": -5}]}]}]}',
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"intValue": "1e40"}}]}]}]}',
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"intValue": "%d"}}]}]}]}' % 2**64,
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "\\ud800"}}]}]}]}',
    ],
)
def test_invalid_json_is_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        decode(Signal.LOGS, body, JSON)


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["nested-arrays", "nested-objects"],
)
def test_deeply_nested_json_is_bad_request(body: bytes) -> None:
    # A hostile body must be a 400 like any other bad JSON, not an unhandled RecursionError (500).
    with pytest.raises(BadRequest):
        decode(Signal.LOGS, body, JSON)
