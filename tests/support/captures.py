"""The real agent captures in tests/fixtures, and what they say, read with plain ``json``.

Expected numbers are derived here independently of the code under test: from the OTLP/JSON
form of every logs body (the raw ``.json`` as sent, or the ``.pb.json`` rendering of a
``.pb``), summing what each session's ``api_request`` events report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@dataclass(frozen=True)
class Export:
    """One captured HTTP export: path, headers and body as the agent sent them."""

    path: str
    content_type: str
    content_encoding: str | None
    body: bytes
    json_form: Path

    @property
    def signal(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def exports(case_dir: Path) -> list[Export]:
    """The case's exports in arrival order."""
    out = []
    for meta_path in sorted(case_dir.glob("*.meta.json")):
        meta = json.loads(meta_path.read_text())
        stem = meta_path.name.removesuffix(".meta.json")
        body_path = case_dir / meta["raw_file"]
        json_form = case_dir / (stem + ".json")
        if not json_form.exists():
            json_form = case_dir / (stem + ".pb.json")
        out.append(
            Export(
                path=meta["path"],
                content_type=meta["content_type"],
                content_encoding=meta.get("content_encoding"),
                body=body_path.read_bytes(),
                json_form=json_form,
            )
        )
    return out


def cases(agent: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / agent).iterdir() if p.is_dir())


def _value(any_value: dict[str, Any]) -> Any:
    return next(iter(any_value.values()), None) if any_value else None


@dataclass
class ExpectedSession:
    session_id: str
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost_usd: Decimal = Decimal(0)
    api_requests: int = 0
    api_errors: int = 0
    models: set[str] = field(default_factory=set)


def expected_claude_sessions(case_dirs: list[Path]) -> dict[str, ExpectedSession]:
    """Per session: the sums of its ``api_request`` events and the count of ``api_error``s.

    Every session that appears anywhere (logs or metrics) is listed, with zeros if it made
    no successful request.
    """
    sessions: dict[str, ExpectedSession] = {}
    for case_dir in case_dirs:
        for export in exports(case_dir):
            document = json.loads(export.json_form.read_text())
            if export.signal == "logs":
                for resource in document.get("resourceLogs", []):
                    for scope in resource.get("scopeLogs", []):
                        for record in scope.get("logRecords", []):
                            _count_event(sessions, record)
            elif export.signal == "metrics":
                for resource in document.get("resourceMetrics", []):
                    for scope in resource.get("scopeMetrics", []):
                        for metric in scope.get("metrics", []):
                            for point in metric.get("sum", {}).get("dataPoints", []):
                                attrs = {a["key"]: _value(a["value"]) for a in point.get("attributes", [])}
                                sid = attrs.get("session.id")
                                if sid:
                                    sessions.setdefault(sid, ExpectedSession(sid))
    return sessions


def _count_event(sessions: dict[str, ExpectedSession], record: dict[str, Any]) -> None:
    attrs = {a["key"]: _value(a["value"]) for a in record.get("attributes", [])}
    sid = attrs.get("session.id")
    if not sid:
        return
    session = sessions.setdefault(sid, ExpectedSession(sid))
    name = attrs.get("event.name")
    if name == "api_error":
        session.api_errors += 1
    if name != "api_request":
        return
    session.api_requests += 1
    session.input += int(attrs["input_tokens"])
    session.output += int(attrs["output_tokens"])
    session.cache_read += int(attrs["cache_read_tokens"])
    session.cache_creation += int(attrs["cache_creation_tokens"])
    session.cost_usd += Decimal(str(attrs["cost_usd"]))
    session.models.add(str(attrs["model"]))


def export_for(template: ExportLogsServiceRequest, session_id: str, request_no: int) -> bytes:
    """The template export as the ``request_no``-th export of ``session_id``."""
    request = ExportLogsServiceRequest()
    request.CopyFrom(template)
    base = time.time_ns() + request_no * 1_000_000_000
    records = [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    for j, record in enumerate(records):
        record.time_unix_nano = record.observed_time_unix_nano = base + j * 1_000_000
        for kv in record.attributes:
            if kv.key == "session.id":
                kv.value.string_value = session_id
            elif kv.key == "event.sequence":
                kv.value.int_value = request_no * len(records) + j
    return request.SerializeToString()


def claude_logs_with_context(session_id: str, request_no: int, context_tokens: int) -> bytes:
    """The ``stub-tool-traces`` Claude Code logs export (a title request and main-conversation
    requests of 1,200 input + 4,500 cache read + 300 cache write tokens) as the ``request_no``-th
    export of ``session_id``, its main requests' context set to ``context_tokens``."""
    template = ExportLogsServiceRequest.FromString(
        (FIXTURES / "claude-code" / "stub-tool-traces-protobuf" / "0002_v1_logs.pb").read_bytes()
    )
    request = ExportLogsServiceRequest.FromString(export_for(template, session_id, request_no))
    for rl in request.resource_logs:
        for sl in rl.scope_logs:
            for record in sl.log_records:
                attrs = {kv.key: kv for kv in record.attributes}
                if (
                    "input_tokens" in attrs
                    and attrs["query_source"].value.string_value != "generate_session_title"
                ):
                    attrs["input_tokens"].value.int_value = context_tokens - 4_800
    return request.SerializeToString()
