"""ingest.onepass.prepare_logs decides what drop_invalid, Redactor.apply and split_by_session's
session lookup decide, in one pass: compared on every captured logs export and on records that
each step changes (refused ids, dates and values; content; sessions mixed and missing)."""

from __future__ import annotations

import time

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from ingest.onepass import prepare_logs
from ingest.partition import _record_sessions, split_by_session
from ingest.redact import Redactor
from ingest.validate import drop_invalid
from tests.support.captures import FIXTURES
from tokentide.tenancy import Redaction
from tokentide.topics import Signal

REDACTOR = Redactor(b"k" * 32)
NOW = time.time_ns()


def captured() -> list[ExportLogsServiceRequest]:
    return [
        ExportLogsServiceRequest.FromString(p.read_bytes()) for p in sorted(FIXTURES.rglob("*_v1_logs.pb"))
    ]


def crafted() -> ExportLogsServiceRequest:
    """Two resources; records with bad ids, a future date, bad and good token counts, content,
    several sessions, none, and a session only on the resource."""
    request = ExportLogsServiceRequest()
    for n, resource_session in enumerate(("", "res-session")):
        rl = request.resource_logs.add()
        attr = rl.resource.attributes.add()
        attr.key, attr.value.string_value = "service.name", f"svc-{n}"
        attr = rl.resource.attributes.add()
        attr.key, attr.value.string_value = "process.command_args", "claude -p secret"
        if resource_session:
            attr = rl.resource.attributes.add()
            attr.key, attr.value.string_value = "session.id", resource_session
        for scope_no in range(2):
            sl = rl.scope_logs.add()
            sl.scope.name = f"scope-{scope_no}"
            for i in range(8):
                record = sl.log_records.add()
                record.time_unix_nano = NOW
                record.body.string_value = f"r{i}"
                kvs = {
                    "event.name": "api_request",
                    "session.id": f"s-{i % 3}" if i % 4 else "",
                    "user.id": "u1",
                    "prompt": "the prompt" if i % 2 else "<REDACTED>",
                    "input_tokens": -5 if i == 5 else 10,
                    "tool_parameters": "{}",
                }
                for key, value in kvs.items():
                    kv = record.attributes.add()
                    kv.key = key
                    if isinstance(value, int):
                        kv.value.int_value = value
                    else:
                        kv.value.string_value = value
                if i == 1:
                    record.trace_id = b"short"
                if i == 2:
                    record.span_id = b"\x01" * 3
                if i == 3 and scope_no:
                    record.time_unix_nano = NOW + 10 * 86_400 * 10**9
                if i == 6:
                    record.time_unix_nano = 0
                    record.observed_time_unix_nano = NOW
    return request


@pytest.mark.parametrize("mode", list(Redaction))
def test_one_pass_decides_what_the_three_steps_decide(mode: Redaction) -> None:
    for original in [*captured(), crafted()]:
        three, one = ExportLogsServiceRequest(), ExportLogsServiceRequest()
        three.CopyFrom(original)
        one.CopyFrom(original)
        refused = drop_invalid(Signal.LOGS, three, NOW)
        redacted = REDACTOR.apply(Signal.LOGS, three, mode)
        sessions = list(_record_sessions(Signal.LOGS, "acme", three))

        got_refused, got_redacted, located = prepare_logs(one, "acme", NOW, REDACTOR, mode)
        assert got_refused == refused
        assert got_redacted == redacted
        assert located == sessions
        assert one == three
        parts = split_by_session(Signal.LOGS, "acme", one, None, located)
        want = split_by_session(Signal.LOGS, "acme", three)
        assert [(p.session_id, p.records, p.request) for p in parts] == [
            (p.session_id, p.records, p.request) for p in want
        ]


def test_the_crafted_export_exercises_every_step() -> None:
    request = crafted()
    refused, redacted, located = prepare_logs(request, "acme", NOW, REDACTOR, Redaction.HASH)
    assert set(refused.reasons) == {"bad_trace_id", "bad_span_id", "time_in_future", "tokens_negative"}
    assert redacted > 0
    assert len({session for _, _, session in located}) > 3
