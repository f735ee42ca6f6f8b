"""Shared helpers of the unit tier: the captured Claude Code payloads and an in-memory pipeline.

Expected numbers are derived from the captures' JSON with plain ``json`` (never with the code
under test), so a test compares two independent readings of the same payload.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from ingest.decode import decode
from ingest.errors import JSON
from streams.normalise import default_registry
from streams.normalise.base import Rejected
from streams.processor import Output, Processor
from streams.state import StoredSession
from tokentide.records import SessionState
from tokentide.topics import HEADER_RECEIVED_AT, HEADER_SIGNAL, HEADER_TENANT, Signal, session_key

CAPTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude-code"
CASES = sorted(p.name for p in CAPTURES.iterdir() if p.is_dir())
_BODY = re.compile(r"\d{4}_v1_(?P<signal>logs|metrics|traces)\.(?P<ext>pb|json)")
REQUEST_TYPES: dict[Signal, type[Message]] = {
    Signal.LOGS: ExportLogsServiceRequest,
    Signal.METRICS: ExportMetricsServiceRequest,
    Signal.TRACES: ExportTraceServiceRequest,
}
#: ``query_source`` values of Claude Code's main conversation (agent-telemetry.md, section 6).
MAIN_THREAD = frozenset({"sdk", "repl_main_thread"})
_SUFFIX = re.compile(r"\[[^\]]*\]$")


def bodies(case: str) -> list[Path]:
    """The request bodies of one case, in arrival order (``.pb`` or raw ``.json``)."""
    return sorted(p for p in (CAPTURES / case).iterdir() if _BODY.fullmatch(p.name))


ALL_BODIES = [p for case in CASES for p in bodies(case)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``capture_body``: every request body; ``capture_pb``: every protobuf body; ``capture_case``."""
    if "capture_body" in metafunc.fixturenames:
        metafunc.parametrize(
            "capture_body", ALL_BODIES, ids=[f"{p.parent.name}/{p.name}" for p in ALL_BODIES]
        )
    if "capture_pb" in metafunc.fixturenames:
        pbs = [p for p in ALL_BODIES if p.suffix == ".pb"]
        metafunc.parametrize("capture_pb", pbs, ids=[f"{p.parent.name}/{p.name}" for p in pbs])
    if "capture_case" in metafunc.fixturenames:
        metafunc.parametrize("capture_case", CASES)


# --- plain-JSON reading of the captures -------------------------------------------------------


def plain(value: dict[str, Any] | None) -> Any:
    """An OTLP/JSON AnyValue as a Python value (ints may be JSON strings or numbers)."""
    if not value:
        return None
    ((kind, inner),) = value.items()
    if kind == "intValue":
        return int(inner)
    if kind == "doubleValue":
        return float(inner)
    if kind == "arrayValue":
        return [plain(v) for v in inner.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: plain(kv.get("value")) for kv in inner.get("values", [])}
    return inner


def attrs_of(item: dict[str, Any]) -> dict[str, Any]:
    return {kv["key"]: plain(kv.get("value")) for kv in item.get("attributes", [])}


@dataclass
class Capture:
    """One request body and its OTLP/JSON document."""

    path: Path

    @property
    def signal(self) -> Signal:
        match = _BODY.fullmatch(self.path.name)
        assert match is not None
        return Signal(match["signal"])

    @property
    def document(self) -> dict[str, Any]:
        """The raw JSON body, or for a ``.pb`` its ``.pb.json`` rendering."""
        source = self.path if self.path.suffix == ".json" else self.path.with_name(self.path.name + ".json")
        doc: dict[str, Any] = json.loads(source.read_text())
        return doc

    @property
    def request(self) -> Message:
        """The protobuf request: parsed from ``.pb``; for a JSON-only case through ingest's decoder."""
        if self.path.suffix == ".pb":
            message = REQUEST_TYPES[self.signal]()
            message.ParseFromString(self.path.read_bytes())
            return message
        return decode(self.signal, self.path.read_bytes(), JSON)

    @property
    def raw(self) -> bytes:
        """What ingest publishes to Kafka: the protobuf bytes."""
        return self.path.read_bytes() if self.path.suffix == ".pb" else self.request.SerializeToString()

    def records(self) -> list[dict[str, Any]]:
        """Log records, spans or metric data points of the document (with ``_metric`` for points)."""
        doc = self.document
        out: list[dict[str, Any]] = []
        if self.signal is Signal.LOGS:
            for rl in doc.get("resourceLogs", []):
                for sl in rl.get("scopeLogs", []):
                    out.extend(sl.get("logRecords", []))
        elif self.signal is Signal.TRACES:
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    out.extend(ss.get("spans", []))
        else:
            for rm in doc.get("resourceMetrics", []):
                for sm in rm.get("scopeMetrics", []):
                    for metric in sm.get("metrics", []):
                        for kind in ("sum", "gauge", "histogram", "exponentialHistogram", "summary"):
                            points = metric.get(kind, {}).get("dataPoints", [])
                            out.extend({**point, "_metric": metric["name"]} for point in points)
        return out


@dataclass
class Expected:
    """What a case's events say about its session, read with plain ``json``."""

    session_id: str
    tokens: dict[str, int] = field(
        default_factory=lambda: {"input": 0, "output": 0, "cache_read": 0, "cache_creation": 0}
    )
    cost_usd: Decimal = Decimal(0)
    api_requests: int = 0
    api_errors: int = 0
    events: int = 0
    models: set[str] = field(default_factory=set)
    context_tokens: int = 0
    context_model: str | None = None
    long_context: bool = False
    points: int = 0

    @property
    def cost_nanos(self) -> int:
        return int((self.cost_usd * 10**9).to_integral_value())

    @property
    def window(self) -> int:
        return 1_000_000 if self.long_context else 200_000


def expected_of(captures: list[Capture]) -> Expected:
    """Totals of a list of logs/metrics captures of one session, from their JSON."""
    sessions: set[str] = set()
    exp = Expected(session_id="")
    context_time = -1
    for capture in captures:
        for record in capture.records():
            attrs = attrs_of(record)
            sessions.add(attrs["session.id"])
            model = attrs.get("model")
            if isinstance(model, str) and model.endswith("[1m]"):
                exp.long_context = True
            if capture.signal is Signal.METRICS:
                exp.points += 1
                continue
            exp.events += 1
            if model:
                exp.models.add(_SUFFIX.sub("", model))
            name = attrs["event.name"]
            if name == "api_error":
                exp.api_errors += 1
            if name != "api_request":
                continue
            exp.api_requests += 1
            exp.tokens["input"] += int(attrs["input_tokens"])
            exp.tokens["output"] += int(attrs["output_tokens"])
            exp.tokens["cache_read"] += int(attrs["cache_read_tokens"])
            exp.tokens["cache_creation"] += int(attrs["cache_creation_tokens"])
            exp.cost_usd += Decimal(str(attrs["cost_usd"]))
            time = int(record["timeUnixNano"])
            if attrs.get("query_source") in {*MAIN_THREAD, None} and time >= context_time:
                context_time = time
                exp.context_tokens = (
                    int(attrs["input_tokens"])
                    + int(attrs["cache_read_tokens"])
                    + int(attrs["cache_creation_tokens"])
                )
                exp.context_model = _SUFFIX.sub("", model)
    assert len(sessions) == 1, sessions
    exp.session_id = sessions.pop()
    return exp


def streamed(case: str) -> list[Capture]:
    """The captures of a case that the streams stage consumes (logs and metrics; no traces)."""
    return [c for c in (Capture(p) for p in bodies(case)) if c.signal is not Signal.TRACES]


# --- building OTLP by hand --------------------------------------------------------------------


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def key_values(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attributes.items() if v is not None]


def claude_logs(records: list[tuple[int, dict[str, Any]]]) -> ExportLogsServiceRequest:
    """A Claude Code logs request (resource and scope as 2.1.197 sends them) of (time_ns, attributes)."""
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(
        key_values({"service.name": "claude-code", "service.version": "2.1.197", "os.type": "linux"})
    )
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = "com.anthropic.claude_code.events"
    scope_logs.scope.version = "2.1.197"
    for time_ns, attributes in records:
        record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
        record.body.string_value = f"claude_code.{attributes['event.name']}"
        record.attributes.extend(key_values(attributes))
        scope_logs.log_records.append(record)
    return request


def api_request(
    sequence: int,
    *,
    session_id: str = "s-1",
    query_source: str | None = "sdk",
    model: str = "claude-opus-4-8",
    input_tokens: Any = 1200,
    output_tokens: Any = 42,
    cache_read_tokens: Any = 4500,
    cache_creation_tokens: Any = 300,
    cost_usd: Any = 0.011175,
) -> dict[str, Any]:
    """The attributes of a Claude Code ``api_request`` event (defaults: the Opus stub's usage)."""
    return {
        "user.id": "u-1",
        "session.id": session_id,
        "event.name": "api_request",
        "event.sequence": sequence,
        "model": model,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": cache_read_tokens,
        "cache_creation_tokens": cache_creation_tokens,
        "cost_usd": cost_usd,
        "duration_ms": 180,
        "query_source": query_source,
    }


# --- an in-memory streams stage ---------------------------------------------------------------

RECEIVED_NS = 1_795_485_000_000_000_000


class Pipeline:
    """:class:`Processor` over a dict table that stores serialised values, as the runtime
    stores them (each message applied once, in order, like the worker does)."""

    def __init__(self, dedup_window: int = 256, tenant: str = "default") -> None:
        self.processor = Processor(default_registry(), dedup_window)
        self.tenant = tenant
        self.table: dict[bytes, bytes] = {}
        self.rejected: list[Rejected] = []

    def get(self, key: bytes) -> StoredSession | None:
        value = self.table.get(key)
        return None if value is None else StoredSession.from_bytes(value)

    def put(self, key: bytes, stored: StoredSession) -> None:
        self.table[key] = stored.to_bytes()

    def send(self, signal: Signal, value: bytes) -> list[Output]:
        """Process one raw message (as ingest writes it, without a session header: the
        records' own attributes name their sessions)."""
        headers = {
            HEADER_TENANT: self.tenant,
            HEADER_SIGNAL: signal.value,
            HEADER_RECEIVED_AT: str(RECEIVED_NS),
        }
        processed = self.processor.process(
            headers=headers, value=value, get_state=self.get, put_state=self.put
        )
        self.rejected += processed.rejected
        return processed.outputs

    def send_logs(self, request: ExportLogsServiceRequest) -> list[Output]:
        return self.send(Signal.LOGS, request.SerializeToString())

    def stored(self, session_id: str) -> StoredSession:
        stored = self.get(session_key(self.tenant, session_id).encode())
        assert stored is not None, f"no state for session {session_id!r}"
        return stored

    def state(self, session_id: str) -> SessionState:
        return self.stored(session_id).state


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline()


@pytest.fixture
def make_pipeline() -> Callable[..., Pipeline]:
    return Pipeline


@pytest.fixture
def capture() -> type[Capture]:
    return Capture


@pytest.fixture
def captures_of() -> Callable[[str], list[Capture]]:
    """All captures of a case, traces included, in arrival order."""
    return lambda case: [Capture(p) for p in bodies(case)]


@pytest.fixture
def streamed_of() -> Callable[[str], list[Capture]]:
    return streamed


@pytest.fixture
def expected() -> Callable[[list[Capture]], Expected]:
    return expected_of


@pytest.fixture
def otlp_build() -> SimpleNamespace:
    """Builders of hand-made Claude Code OTLP: ``logs``, ``api_request``, ``key_values``."""
    return SimpleNamespace(logs=claude_logs, api_request=api_request, key_values=key_values)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No tokentide variables in the environment and no ``.env`` in the working directory."""
    for name in list(os.environ):
        if name.startswith("TOKENTIDE_") or name in {"KAFKA_BOOTSTRAP", "DATABASE_URL"}:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
