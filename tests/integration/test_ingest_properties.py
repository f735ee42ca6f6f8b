"""Property-based: whatever arrives, ingest answers per spec and never half-writes.

Random bytes and random OTLP-shaped JSON go to a real ingest process (HTTP, protobuf and
JSON). Properties: never a 5xx (503 would only mean Kafka trouble, which this test does not
cause), never a crash, and Kafka ends up holding exactly the records that 200 answers
accepted: nothing of a refused request, everything of an accepted one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tests.support.services import free_port, read_all, unique
from tokentide.topics import Signal, Topics

pytestmark = pytest.mark.integration

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
REQUEST_TYPES = {"logs": ExportLogsServiceRequest, "metrics": ExportMetricsServiceRequest}
RESPONSE_TYPES = {"logs": ExportLogsServiceResponse, "metrics": ExportMetricsServiceResponse}


class Ingest:
    def __init__(self, bootstrap: str, workdir: Path) -> None:
        self.prefix = unique("prop") + "."
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
        env.update(
            KAFKA_BOOTSTRAP=bootstrap,
            TOKENTIDE_OPEN_MODE="1",
            TOKENTIDE_TOPIC_PREFIX=self.prefix,
            TOKENTIDE_INGEST_PORT=str(self.port),
            TOKENTIDE_GRPC_PORT="0",
            TOKENTIDE_LOG_LEVEL="WARNING",
            TOKENTIDE_MAX_BODY_BYTES=str(256 * 1024),
        )
        self.log = workdir / "ingest.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [TOKENTIDE, "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0  # records that 200 answers accepted

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        pytest.fail(f"ingest not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)


@pytest.fixture(scope="module")
def ingest(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    service = Ingest(bootstrap, tmp_path_factory.mktemp("ingest"))
    service.wait_ready()
    yield service
    service.stop()


# --- OTLP-shaped JSON: right field names, values of every type, right and wrong ----------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["NaN", "Infinity", "12", "0x1f", ""]),
)
any_value = st.one_of(
    st.fixed_dictionaries({"stringValue": st.text(max_size=30)}),
    st.fixed_dictionaries({"intValue": st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=5))}),
    st.fixed_dictionaries({"doubleValue": st.floats()}),
    st.fixed_dictionaries({"boolValue": scalars}),
    st.just({}),
    scalars,
)
attributes = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["session.id", "event.name", "prompt", "x"]), "value": any_value}
    ),
    max_size=4,
)
hex_id = st.one_of(st.text("0123456789abcdef", min_size=0, max_size=34), scalars)
log_record = st.fixed_dictionaries(
    {},
    optional={
        "timeUnixNano": st.one_of(st.integers(0, 2**64 - 1).map(str), st.integers(0, 2**64 - 1), scalars),
        "body": any_value,
        "attributes": attributes,
        "traceId": hex_id,
        "spanId": hex_id,
        "severityNumber": st.one_of(st.integers(-5, 30), scalars),
        "unknownField": scalars,
    },
)
number_point = st.fixed_dictionaries(
    {},
    optional={
        "asDouble": st.one_of(st.floats(), scalars),
        "asInt": st.one_of(st.integers(-(2**63), 2**63 - 1).map(str), scalars),
        "attributes": attributes,
        "timeUnixNano": st.integers(0, 2**64 - 1).map(str),
    },
)
metric = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=10), scalars)},
    optional={
        "sum": st.fixed_dictionaries(
            {"dataPoints": st.lists(number_point, max_size=3)},
            optional={
                "aggregationTemporality": st.one_of(st.integers(0, 3), scalars),
                "isMonotonic": scalars,
            },
        ),
        "gauge": st.fixed_dictionaries({"dataPoints": st.lists(number_point, max_size=3)}),
    },
)
resource = st.fixed_dictionaries({}, optional={"attributes": attributes})
logs_document = st.fixed_dictionaries(
    {
        "resourceLogs": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": resource,
                    "scopeLogs": st.lists(
                        st.fixed_dictionaries({"logRecords": st.lists(log_record, max_size=4)}), max_size=2
                    ),
                }
            ),
            max_size=2,
        )
    }
)
metrics_document = st.fixed_dictionaries(
    {
        "resourceMetrics": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": resource,
                    "scopeMetrics": st.lists(
                        st.fixed_dictionaries({"metrics": st.lists(metric, max_size=3)}), max_size=2
                    ),
                }
            ),
            max_size=2,
        )
    }
)


def records_in(signal: str, request: Any) -> int:
    if signal == "logs":
        return sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
    return sum(
        len(getattr(m, m.WhichOneof("data")).data_points)
        for r in request.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
        if m.WhichOneof("data") in ("sum", "gauge", "histogram", "exponential_histogram", "summary")
    )


def rejected_in(signal: str, response: httpx.Response) -> int:
    """The ``partial_success`` rejected count of a 200 answer (0 when absent)."""
    if response.headers["content-type"].startswith("application/json"):
        partial = response.json().get("partialSuccess", {})
        return int(partial.get("rejectedLogRecords" if signal == "logs" else "rejectedDataPoints", 0))
    reply = RESPONSE_TYPES[signal].FromString(response.content).partial_success
    return int(reply.rejected_log_records if signal == "logs" else reply.rejected_data_points)


def sent_in(signal: str, body: bytes, content_type: str) -> int:
    """Records in a body that the server accepted, decoded here without ingest's code."""
    request = REQUEST_TYPES[signal]()
    if content_type == "application/json":
        json_format.ParseDict(_hex_to_b64(json.loads(body)), request, ignore_unknown_fields=True)
    else:
        request.ParseFromString(body)
    return records_in(signal, request)


def check(ingest: Ingest, signal: str, body: bytes, content_type: str) -> None:
    response = httpx.post(
        f"{ingest.url}/v1/{signal}", content=body, headers={"Content-Type": content_type}, timeout=30
    )
    assert response.status_code in (200, 400, 413), (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith(content_type)
    if response.status_code == 200:
        ingest.accepted += sent_in(signal, body, content_type) - rejected_in(signal, response)


def _hex_to_b64(node: Any) -> Any:
    """OTLP/JSON ids are hex; proto3 JSON wants base64 (what ingest's decoder does too)."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId") and isinstance(v, str)
            else _hex_to_b64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_to_b64(v) for v in node]
    return node


COMMON = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@COMMON
@given(body=st.binary(max_size=2048), signal=st.sampled_from(["logs", "metrics"]))
def test_random_bytes_as_protobuf(ingest: Ingest, body: bytes, signal: str) -> None:
    check(ingest, signal, body, "application/x-protobuf")


@COMMON
@given(body=st.binary(max_size=512), signal=st.sampled_from(["logs", "metrics"]))
def test_random_bytes_as_json(ingest: Ingest, body: bytes, signal: str) -> None:
    check(ingest, signal, body, "application/json")


@COMMON
@given(document=logs_document)
def test_otlp_shaped_logs_json(ingest: Ingest, document: dict[str, Any]) -> None:
    check(ingest, "logs", json.dumps(document).encode(), "application/json")


@COMMON
@given(document=metrics_document)
def test_otlp_shaped_metrics_json(ingest: Ingest, document: dict[str, Any]) -> None:
    check(ingest, "metrics", json.dumps(document).encode(), "application/json")


def test_kafka_holds_exactly_what_was_accepted(ingest: Ingest, bootstrap: str) -> None:
    """Runs after the properties above (same module): the sum over every example."""
    assert ingest.process.poll() is None, "ingest must still be running"
    topics = Topics(ingest.prefix)
    in_kafka = 0
    for name in ("logs", "metrics"):
        for message in asyncio.run(read_all(bootstrap, topics.raw(Signal(name)))):
            in_kafka += records_in(name, REQUEST_TYPES[name].FromString(message.value))  # type: ignore[attr-defined]
    assert ingest.accepted > 0, "the generated requests must include accepted records"
    assert in_kafka == ingest.accepted
