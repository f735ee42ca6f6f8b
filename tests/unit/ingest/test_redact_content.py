"""Privacy at the door: content attributes hashed, dropped or kept, per mode."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.decode import decode
from ingest.errors import JSON
from ingest.redact import CONTENT_KEYS, Redactor
from tests.support.captures import FIXTURES
from tokentide.tenancy import Redaction
from tokentide.topics import Signal

GEMINI_LOGS = FIXTURES / "gemini-cli" / "stub-text-http-json" / "0002_v1_logs.json"


def logs(
    records: list[dict[str, object]], resource: dict[str, object] | None = None
) -> ExportLogsServiceRequest:
    def kvs(attrs: dict[str, object]) -> list[dict[str, object]]:
        out = []
        for k, v in attrs.items():
            value = (
                {"arrayValue": {"values": [{"stringValue": x} for x in v]}}
                if isinstance(v, list)
                else {"stringValue": v}
            )
            out.append({"key": k, "value": value})
        return out

    document = {
        "resourceLogs": [
            {
                "resource": {"attributes": kvs(resource or {})},
                "scopeLogs": [{"logRecords": [{"attributes": kvs(r)} for r in records]}],
            }
        ]
    }
    return json_format.ParseDict(document, ExportLogsServiceRequest())


def attrs(request: ExportLogsServiceRequest) -> list[dict[str, object]]:
    return [
        {kv.key: json_format.MessageToDict(kv.value) for kv in r.attributes}
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for r in sl.log_records
    ]


def test_hash_replaces_content_and_keeps_the_rest() -> None:
    request = logs(
        [{"prompt": "my secret plan", "user.email": "a@example.com", "session.id": "s1", "model": "m"}]
    )
    changed = Redactor(b"k").apply(Signal.LOGS, request, Redaction.HASH)
    [record] = attrs(request)
    assert changed == 2
    assert record["session.id"] == {"stringValue": "s1"}
    assert record["model"] == {"stringValue": "m"}
    for key in ("prompt", "user.email"):
        value = record[key]["stringValue"]
        assert isinstance(value, str)
        assert value.startswith("redacted:")
        assert "secret" not in value
        assert "example" not in value


def test_hash_is_keyed_and_stable() -> None:
    one, two, other_key = (logs([{"prompt": "same text"}]) for _ in range(3))
    Redactor(b"k1").apply(Signal.LOGS, one, Redaction.HASH)
    Redactor(b"k1").apply(Signal.LOGS, two, Redaction.HASH)
    Redactor(b"k2").apply(Signal.LOGS, other_key, Redaction.HASH)
    assert attrs(one) == attrs(two)
    assert attrs(one) != attrs(other_key)


def test_drop_removes_content_attributes() -> None:
    request = logs([{"tool_parameters": '{"cmd": "cat ~/.ssh/id_rsa"}', "tool_name": "Bash"}])
    assert Redactor(b"k").apply(Signal.LOGS, request, Redaction.DROP) == 1
    assert attrs(request) == [{"tool_name": {"stringValue": "Bash"}}]


def test_off_keeps_everything() -> None:
    request = logs([{"prompt": "hello"}])
    before = request.SerializeToString()
    assert Redactor(b"k").apply(Signal.LOGS, request, Redaction.OFF) == 0
    assert request.SerializeToString() == before


def test_the_agents_own_placeholder_is_left_alone() -> None:
    request = logs([{"prompt": "<REDACTED>"}])
    assert Redactor(b"k").apply(Signal.LOGS, request, Redaction.HASH) == 0
    assert attrs(request) == [{"prompt": {"stringValue": "<REDACTED>"}}]


def test_gemini_command_args_on_the_resource_are_redacted() -> None:
    request = logs([{"event.name": "x"}], resource={"process.command_args": ["gemini", "-p", "my prompt"]})
    Redactor(b"k").apply(Signal.LOGS, request, Redaction.HASH)
    [kv] = request.resource_logs[0].resource.attributes
    assert kv.key == "process.command_args"
    assert kv.value.string_value.startswith("redacted:")


@pytest.mark.parametrize("mode", [Redaction.HASH, Redaction.DROP])
def test_real_gemini_export_keeps_no_prompt_or_response_text(mode: Redaction) -> None:
    body = GEMINI_LOGS.read_bytes()
    request = decode(Signal.LOGS, body, JSON)
    Redactor(b"k").apply(Signal.LOGS, request, mode)
    rendered = json.dumps(json_format.MessageToDict(request))
    document = json.loads(body)
    secrets = {
        a["value"]["stringValue"]
        for rl in document["resourceLogs"]
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
        for a in r["attributes"]
        if a["key"] in CONTENT_KEYS and len(a["value"].get("stringValue", "")) > 20
    }
    assert secrets, "the capture holds content (prompts, request and response text)"
    for text in secrets:
        assert json.dumps(text)[1:-1] not in rendered


def test_metric_points_and_span_attributes_are_covered() -> None:
    metrics = json_format.ParseDict(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "m",
                                    "sum": {
                                        "dataPoints": [
                                            {
                                                "asDouble": 1,
                                                "attributes": [
                                                    {"key": "user.email", "value": {"stringValue": "a@b.c"}}
                                                ],
                                            }
                                        ]
                                    },
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        ExportMetricsServiceRequest(),
    )
    spans = json_format.ParseDict(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "attributes": [
                                        {"key": "gen_ai.input.messages", "value": {"stringValue": "hi"}}
                                    ],
                                    "events": [
                                        {
                                            "name": "e",
                                            "attributes": [{"key": "prompt", "value": {"stringValue": "p"}}],
                                        }
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        ExportTraceServiceRequest(),
    )
    assert Redactor(b"k").apply(Signal.METRICS, metrics, Redaction.DROP) == 1
    assert Redactor(b"k").apply(Signal.TRACES, spans, Redaction.DROP) == 2
