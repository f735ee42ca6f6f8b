"""Partial success: invalid records are removed and counted, the rest kept."""

from __future__ import annotations

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.validate import drop_invalid
from tests.support.captures import FIXTURES
from tokentide.topics import Signal

RECEIVED_NS = 1_800_000_000 * 10**9  # after every capture


def test_real_captures_are_entirely_valid() -> None:
    for path in sorted(FIXTURES.glob("*/*/*_v1_*.pb")):
        signal = Signal(path.name.split("_v1_")[1].removesuffix(".pb"))
        request = {
            Signal.LOGS: ExportLogsServiceRequest,
            Signal.METRICS: ExportMetricsServiceRequest,
            Signal.TRACES: ExportTraceServiceRequest,
        }[signal].FromString(path.read_bytes())
        before = request.SerializeToString()
        assert drop_invalid(signal, request, RECEIVED_NS).count == 0, path
        assert request.SerializeToString() == before


def test_log_records_with_bad_ids_are_refused() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.add(time_unix_nano=1)  # no ids: fine for logs
    records.add(time_unix_nano=2, trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    records.add(time_unix_nano=3, trace_id=b"abc")
    records.add(time_unix_nano=4, trace_id=b"\x01" * 16, span_id=b"\x02" * 3)
    refused = drop_invalid(Signal.LOGS, request, RECEIVED_NS)
    assert refused.count == 2
    assert refused.message == "2 log records refused: trace_id must be 16 bytes, got 3"
    assert refused.reasons == {"bad_trace_id": 1, "bad_span_id": 1}
    assert [r.time_unix_nano for r in records] == [1, 2]


def test_spans_need_both_ids() -> None:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    spans.add(name="ok", trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    spans.add(name="no-ids")
    refused = drop_invalid(Signal.TRACES, request, RECEIVED_NS)
    assert (refused.count, refused.message) == (1, "1 span refused: trace_id must be 16 bytes, got 0")
    assert [s.name for s in spans] == ["ok"]


def test_points_without_value_or_metric_name_are_refused() -> None:
    request = json_format.ParseDict(
        {
            "resourceMetrics": [
                {
                    "scopeMetrics": [
                        {
                            "metrics": [
                                {
                                    "name": "good",
                                    "sum": {"dataPoints": [{"asInt": "1"}, {"timeUnixNano": "5"}]},
                                },
                                {"name": "", "gauge": {"dataPoints": [{"asDouble": 1.0}, {"asDouble": 2.0}]}},
                                {"name": "hist", "histogram": {"dataPoints": [{"count": "3"}]}},
                            ]
                        }
                    ]
                }
            ]
        },
        ExportMetricsServiceRequest(),
    )
    refused = drop_invalid(Signal.METRICS, request, RECEIVED_NS)
    assert refused.count == 3
    assert refused.reasons == {"point_without_value": 1, "metric_without_name": 2}
    assert refused.message == "3 data points refused: number data point without a value"
    good, nameless, hist = request.resource_metrics[0].scope_metrics[0].metrics
    assert [p.as_int for p in good.sum.data_points] == [1]
    assert len(nameless.gauge.data_points) == 0
    assert len(hist.histogram.data_points) == 1
