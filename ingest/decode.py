"""Pure decoding of OTLP/HTTP requests: media type, compression, protobuf and OTLP/JSON.

Nothing here does I/O; every failure is one of the errors of :mod:`ingest.errors`, raised
before anything is written anywhere.
"""

from __future__ import annotations

import base64
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest import otlp_json
from ingest.errors import JSON, PROTOBUF, BadRequest, PayloadTooLarge, UnsupportedMediaType
from tokentide.topics import Signal

REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
}

#: OTLP/JSON carries these ``bytes`` fields as hex, not the proto3-JSON base64.
_HEX_ID_FIELDS = otlp_json.HEX_ID_FIELDS


def media_type(content_type: str | None) -> str:
    """The request's media type (parameters such as ``charset`` ignored), or 415."""
    if not content_type:
        raise UnsupportedMediaType(f"missing Content-Type: send {PROTOBUF} or {JSON}")
    base = content_type.split(";", 1)[0].strip().lower()
    if base not in (PROTOBUF, JSON):
        raise UnsupportedMediaType(f"unsupported Content-Type {base!r}: send {PROTOBUF} or {JSON}")
    return base


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or identity) without ever holding more than ``limit``.

    A gzip bomb stops at ``limit + 1`` bytes of output and is refused with 413.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: send gzip or identity")
    out = bytearray()
    data = body
    try:
        while data:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            chunk = inflater.decompress(data, limit + 1 - len(out))
            out += chunk
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes after decompression")
            if not inflater.eof:
                raise BadRequest("truncated gzip body")
            # A gzip file may hold several members; each starts a new stream.
            data = inflater.unused_data
    except zlib.error as exc:
        raise BadRequest(f"invalid gzip body: {exc}") from exc
    return bytes(out)


def decode(signal: Signal, body: bytes, media: str) -> Message:
    """Decode a (decompressed) body into the ``Export*ServiceRequest`` of ``signal``."""
    request_type = REQUEST_TYPES[signal]
    if media == PROTOBUF:
        request = request_type()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise BadRequest(f"cannot decode body as OTLP/protobuf {signal.value}: {exc}") from exc
        return request
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise BadRequest("JSON nested too deeply") from exc
    if not isinstance(document, dict):
        raise BadRequest("OTLP/JSON body must be a JSON object")
    try:
        return otlp_json.parse(document, request_type)
    except otlp_json.Declined:
        pass
    # The fast reader declined (an error, or a corner of proto3 JSON it leaves alone):
    # json_format gives the canonical answer.
    request = request_type()
    try:
        json_format.ParseDict(_hex_ids_to_base64(document), request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, OverflowError) as exc:
        # OverflowError: json_format lets float() of a huge JSON integer escape (a double field).
        raise BadRequest(f"not an OTLP/JSON {signal.value} request: {exc}") from exc
    except RecursionError as exc:
        # OTLP nests a handful of levels; only AnyValue arrays/kvlists can go deeper.
        raise BadRequest("JSON nested too deeply") from exc
    return request


def _hex_ids_to_base64(node: Any) -> Any:
    """Rewrite hex trace/span ids in place so proto3-JSON parsing reads the right bytes."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_FIELDS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError as exc:
                    raise BadRequest(f"{key} must be a hex string, got {value[:40]!r}") from exc
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)
    return node
