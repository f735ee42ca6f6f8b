"""Subagents, skills and MCP servers accounted (issue 14 item 3), through the real pipeline: a
Claude Code session's main, title (auxiliary), subagent and skill/MCP requests and a
``subagent_completed`` go through ingest, streams and the sink; the session's ``by_source``,
usage ``group_by=query_source|agent_name|skill|mcp_server`` and the totals agree exactly, and
``subagent_completed`` is in the timeline as what it is and adds nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.e2e

#: (query_source, agent.name, skill.name, mcp_server.name, model, input, output, cost_usd)
REQUESTS = [
    ("repl_main_thread", None, None, None, "claude-opus-4-8", 1_000, 100, 0.0175),
    ("generate_session_title", None, None, None, "claude-haiku-4-5", 10, 5, 0.000035),
    ("agent:builtin", "Explore", None, None, "claude-opus-4-8", 5_000, 300, 0.0325),
    ("agent:builtin", "Explore", None, None, "claude-opus-4-8", 2_000, 200, 0.015),
    ("agent:custom", "reviewer", None, None, "claude-opus-4-8", 3_000, 50, 0.01625),
    ("repl_main_thread", None, "pdf", "github", "claude-opus-4-8", 7, 9, 0.00026),
]


def _value(v: Any) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def export(session_id: str, start_ns: int) -> bytes:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.extend(
        [
            KeyValue(key="service.name", value=_value("claude-code")),
            KeyValue(key="service.version", value=_value("2.1.332")),
        ]
    )
    scope = resource_logs.scope_logs.add()
    scope.scope.name = "com.anthropic.claude_code.events"
    events: list[dict[str, Any]] = []
    for source, agent, skill, mcp, model, input_, output, cost in REQUESTS:
        events.append(
            {
                "event.name": "api_request",
                "model": model,
                "input_tokens": input_,
                "output_tokens": output,
                "cache_read_tokens": 0,
                "cache_creation_tokens": 0,
                "cost_usd": cost,
                "query_source": source,
                "agent.name": agent,
                "skill.name": skill,
                "mcp_server.name": mcp,
            }
        )
    events.append({"event.name": "subagent_completed", "agent_type": "Explore", "total_tokens": 7_500})
    for i, attributes in enumerate(events):
        time_ns = start_ns + i * 1_000_000_000
        record = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=time_ns)
        record.body.string_value = f"claude_code.{attributes['event.name']}"
        attrs = {"session.id": session_id, "user.id": "u-1", "event.sequence": i, **attributes}
        record.attributes.extend(KeyValue(key=k, value=_value(v)) for k, v in attrs.items() if v is not None)
        scope.log_records.append(record)
    return request.SerializeToString()


def expected(key: Any) -> dict[Any, tuple[int, int, float, int]]:
    """(input, output, cost, requests) per group, summed here from REQUESTS."""
    out: dict[Any, tuple[int, int, float, int]] = {}
    for row in REQUESTS:
        group = key(row)
        i, o, c, n = out.get(group, (0, 0, 0.0, 0))
        out[group] = (i + row[5], o + row[6], c + row[7], n + 1)
    return out


def source_of(row: tuple[Any, ...]) -> str:
    return "subagent" if row[1] else ("main" if row[0] == "repl_main_thread" else "auxiliary")


async def test_usage_by_source_agrees_with_the_session_and_the_totals(pipeline: Pipeline) -> None:
    session_id = f"sources-{uuid.uuid4()}"
    # whole minutes: the rollups (group_by=model) count minutes that start inside the window
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
    start_ns = int(start.timestamp()) * 1_000_000_000
    dashboard = pipeline.url("dashboard")
    async with httpx.AsyncClient(timeout=10) as client:
        posted = await client.post(
            pipeline.url("ingest") + "/v1/logs",
            content=export(session_id, start_ns),
            headers={"Content-Type": "application/x-protobuf"},
        )
        assert posted.status_code == 200, posted.text
        deadline = time.monotonic() + 60
        while True:
            response = await client.get(f"{dashboard}/api/v1/sessions/{session_id}")
            if response.status_code == 200 and response.json()["api_requests"] == len(REQUESTS):
                break
            assert time.monotonic() < deadline, pipeline.logs()
            await asyncio.sleep(0.2)
        session = response.json()

        by = {
            (s["query_source"], s["agent_name"], s["skill"], s["mcp_server"]): s for s in session["by_source"]
        }
        want = expected(lambda r: (source_of(r), r[1], r[2], r[3]))
        assert {k: (s["tokens"]["input"], s["tokens"]["output"], s["requests"]) for k, s in by.items()} == {
            k: (v[0], v[1], v[3]) for k, v in want.items()
        }
        for k, s in by.items():
            assert s["cost_usd"] == pytest.approx(want[k][2], abs=1e-9), k
        # they add up to the session, and subagent_completed added nothing
        assert sum(s["tokens"]["input"] for s in by.values()) == session["tokens"]["input"]
        assert sum(s["requests"] for s in by.values()) == session["api_requests"] == len(REQUESTS)

        window = {"from": start.isoformat(), "to": (start + timedelta(minutes=10)).isoformat()}
        groupings = {
            "query_source": source_of,
            "agent_name": lambda r: r[1],
            "skill": lambda r: r[2],
            "mcp_server": lambda r: r[3],
        }
        for group_by, key in groupings.items():
            # the sink writes events and the session in one transaction: visible together
            usage = await client.get(f"{dashboard}/api/v1/usage", params={"group_by": group_by, **window})
            assert usage.status_code == 200, usage.text
            got = {
                g["key"]: (
                    g["tokens"]["input"],
                    g["tokens"]["output"],
                    round(g["cost_usd"], 9),
                    g["requests"],
                )
                for g in usage.json()["groups"]
            }
            assert got == {k: (v[0], v[1], round(v[2], 9), v[3]) for k, v in expected(key).items()}, group_by
            assert all(g["sessions"] == 1 for g in usage.json()["groups"])
        # the same window by model (the rollups) has the same totals
        by_model = (
            await client.get(f"{dashboard}/api/v1/usage", params={"group_by": "model", **window})
        ).json()
        assert sum(g["tokens"]["input"] for g in by_model["groups"]) == session["tokens"]["input"]

        timeline = (await client.get(f"{dashboard}/api/v1/sessions/{session_id}/timeline")).json()
        completed = [i for i in timeline["items"] if i["name"] == "subagent_completed"]
        assert len(completed) == 1
        assert completed[0]["kind"] != "other"
        assert "Explore" in completed[0]["summary"]
