"""Real Claude Code exports, through the real pipeline, read back from the API."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.support.captures import (
    FIXTURES,
    ExpectedSession,
    cases,
    expected_claude_sessions,
    export_for,
    exports,
)
from tests.support.pipeline import Pipeline
from tests.support.services import wait_caught_up

pytestmark = pytest.mark.e2e

CASES = cases("claude-code")


async def post_all(client: httpx.AsyncClient, pipeline: Pipeline, *, reverse: bool = False) -> int:
    """Post every capture (protobuf and JSON cases) as the agent sent it, in arrival order or
    reversed; return how many were accepted. Trace exports are refused (404, not retried by
    exporters): the pipeline consumes no spans and ingest does not take them by default."""
    posted = 0
    sent = [(case_dir, export) for case_dir in CASES for export in exports(case_dir)]
    for case_dir, export in reversed(sent) if reverse else sent:
        headers = {"Content-Type": export.content_type}
        if export.content_encoding:
            headers["Content-Encoding"] = export.content_encoding
        response = await client.post(
            pipeline.url("ingest") + export.path, content=export.body, headers=headers
        )
        assert response.headers["content-type"].startswith(export.content_type)
        if export.path == "/v1/traces":
            assert response.status_code == 404, (case_dir.name, response.text)
            continue
        assert response.status_code == 200, (case_dir.name, export.path, response.text)
        posted += 1
    return posted


def matches(body: dict[str, Any], expected: ExpectedSession) -> bool:
    tokens = body["tokens"]
    cost = Decimal(str(body["cost_usd"]))
    return (
        tokens["input"] == expected.input
        and tokens["output"] == expected.output
        and tokens["cache_read"] == expected.cache_read
        and tokens["cache_creation"] == expected.cache_creation
        and body["api_requests"] == expected.api_requests
        and body["api_errors"] == expected.api_errors
        # The agent's double, to the nano-dollar the pipeline keeps (exact decimal sum).
        and cost == expected.cost_usd.quantize(Decimal("1e-9"))
        # Every api_request of the captures carries cost_usd: the agent's figures, none unknown.
        and body["cost_source"] == ("agent" if expected.api_requests else None)
        and body["unpriced_requests"] == 0
        and tokens["cache_creation_1h"] == 0  # Claude Code 2.1.197 sends no split by lifetime
    )


async def wait_for_sessions(
    client: httpx.AsyncClient, pipeline: Pipeline, expected: dict[str, ExpectedSession], timeout_s: float = 60
) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    seen: dict[str, dict[str, Any]] = {}
    while True:
        for sid, want in expected.items():
            response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}")
            if response.status_code == 200 and matches(response.json(), want):
                seen[sid] = response.json()
        if len(seen) == len(expected):
            return seen
        if time.monotonic() > deadline:
            missing = {sid: want for sid, want in expected.items() if sid not in seen}
            pipeline.fail(f"sessions not as expected after {timeout_s}s: {missing}")
        await asyncio.sleep(0.5)


async def drained(pipeline: Pipeline) -> None:
    """Wait until the streams and then the sink stage have consumed everything posted so far."""
    await wait_caught_up(pipeline.kafka_bootstrap, pipeline.streams_group, pipeline.raw_topics()[:2])
    topics = pipeline.topics
    await wait_caught_up(
        pipeline.kafka_bootstrap, pipeline.sink_group, [topics.events, topics.points, topics.session_state]
    )


async def test_captures_twice_give_the_agents_own_totals(pipeline: Pipeline) -> None:
    expected = expected_claude_sessions(CASES)
    # The captures hold successful requests (stub cases) and failed ones (offline, error500).
    assert sum(s.api_requests for s in expected.values()) >= 7
    assert sum(s.api_errors for s in expected.values()) >= 3
    formats = {e.content_type for c in CASES for e in exports(c)}
    assert formats == {"application/x-protobuf", "application/json"}

    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)
        await drained(pipeline)  # logs and metrics both applied (they are separate messages)
        first = await wait_for_sessions(client, pipeline, expected)

        listing = (await client.get(pipeline.url("dashboard") + "/api/v1/sessions")).json()
        assert {s["session_id"] for s in listing["sessions"]} == set(expected)
        assert listing["total"] == len(expected)

        for sid, body in first.items():
            assert body["agent"] == "claude_code"
            assert set(body["models"]) >= expected[sid].models
            assert body["started_at"] <= body["last_seen_at"]

        # Everything again, last export first: re-sent, out-of-order exports change nothing.
        await post_all(client, pipeline, reverse=True)
        await drained(pipeline)
        second = await wait_for_sessions(client, pipeline, expected)
        for sid in expected:
            assert second[sid] == first[sid], sid


async def test_context_counts_the_main_conversation_only(pipeline: Pipeline) -> None:
    """stub-tool-traces: a Haiku title request plus two Opus requests of 6,000 context tokens."""
    expected = expected_claude_sessions([c for c in CASES if c.name.startswith("stub-tool-traces")])
    assert len(expected) == 2
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)  # idempotent: harmless if the other test posted already
        sessions = await wait_for_sessions(client, pipeline, expected)
    for sid in expected:
        context = sessions[sid]["context"]
        assert context["model"] == "claude-opus-4-8"
        assert context["tokens"] == 1200 + 4500 + 300
        # The metrics name the model claude-opus-4-8[1m]: a long-context session.
        assert context["limit"] == 1_000_000
        assert context["ratio"] == pytest.approx(6000 / 1_000_000)


async def test_every_service_reports_what_it_did(pipeline: Pipeline) -> None:
    """Each service's /metrics answers in the Prometheus text format and counts the captures."""
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)
        await drained(pipeline)
        scraped = {
            service: await client.get(pipeline.url(service) + "/metrics")
            for service in ("ingest", "streams", "sink", "dashboard")
        }
    for service, response in scraped.items():
        assert response.status_code == 200, (service, response.text[:500])
        assert response.headers["content-type"].startswith("text/plain"), service
    assert 'tokentide_ingest_requests_total{signal="logs",status="200"}' in scraped["ingest"].text
    assert 'tokentide_ingest_requests_total{signal="traces",status="404"}' in scraped["ingest"].text
    assert _sample(scraped["streams"].text, "tokentide_streams_events_total") > 0
    assert _sample(scraped["sink"].text, 'tokentide_sink_rows_offered_total{table="events"}') > 0


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in\n{exposition}")


# --- the API's filters, usage and event stream ----------------------------------------------


async def _listing(client: httpx.AsyncClient, pipeline: Pipeline, **params: str) -> set[str]:
    response = await client.get(pipeline.url("dashboard") + "/api/v1/sessions", params=params)
    assert response.status_code == 200, (params, response.text)
    body = response.json()
    assert body["total"] == len(body["sessions"])
    return {s["session_id"] for s in body["sessions"]}


async def test_session_list_filters_narrow_to_matching_sessions(pipeline: Pipeline) -> None:
    expected = expected_claude_sessions(CASES)
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)
        sessions = await wait_for_sessions(client, pipeline, expected)

        assert await _listing(client, pipeline, agent="claude_code") == set(expected)
        assert await _listing(client, pipeline, agent="gemini_cli") == set()
        for model in {m for body in sessions.values() for m in body["models"]}:
            want = {sid for sid, body in sessions.items() if model in body["models"]}
            assert await _listing(client, pipeline, model=model) == want, model
        for user in {body["user_id"] for body in sessions.values() if body["user_id"]}:
            want = {sid for sid, body in sessions.items() if body["user_id"] == user}
            assert await _listing(client, pipeline, user=user) == want, user
        by_status = {sid: body["status"] for sid, body in sessions.items()}
        for status in ("active", "idle", "ended"):
            want = {sid for sid, s in by_status.items() if s == status}
            assert await _listing(client, pipeline, status=status) == want, status
        assert await _listing(client, pipeline, active="true") == {
            sid for sid, s in by_status.items() if s == "active"
        }
        assert await _listing(client, pipeline, team="no-such-team") == set()
        bad = await client.get(pipeline.url("dashboard") + "/api/v1/sessions", params={"status": "asleep"})
        assert bad.status_code == 422


async def test_usage_groups_add_up_to_the_session_totals(pipeline: Pipeline) -> None:
    expected = expected_claude_sessions(CASES)
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)
        await wait_for_sessions(client, pipeline, expected)
        await drained(pipeline)
        usage = {}
        for group_by in ("model", "agent", "day", "user", "team"):
            response = await client.get(
                pipeline.url("dashboard") + "/api/v1/usage", params={"group_by": group_by, **window}
            )
            assert response.status_code == 200, response.text
            usage[group_by] = response.json()["groups"]
        rejected = await client.get(
            pipeline.url("dashboard") + "/api/v1/usage", params={"group_by": "planet"}
        )
        assert rejected.status_code == 422

    want_cost = sum((s.cost_usd.quantize(Decimal("1e-9")) for s in expected.values()), Decimal(0))
    want_input = sum(s.input for s in expected.values())
    want_requests = sum(s.api_requests for s in expected.values())
    for group_by, groups in usage.items():
        assert sum(Decimal(str(g["cost_usd"])) for g in groups) == want_cost, group_by
        assert sum(g["tokens"]["input"] for g in groups) == want_input, group_by
        assert sum(g["requests"] for g in groups) == want_requests, group_by
    assert [g["key"] for g in usage["agent"]] == ["claude_code"]
    assert {g["key"] for g in usage["model"]} == {m for s in expected.values() for m in s.models}
    assert all(len(g["key"]) == len("2026-11-24") for g in usage["day"])
    assert all(g["start"] is None for g in usage["model"])


async def test_usage_per_day_by_model_is_a_series_that_adds_up(pipeline: Pipeline) -> None:
    window = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    expected = expected_claude_sessions(CASES)
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)  # idempotent: harmless if another test posted already
        await wait_for_sessions(client, pipeline, expected)
        await drained(pipeline)
        url = pipeline.url("dashboard") + "/api/v1/usage"
        totals = (await client.get(url, params={"group_by": "model", **window})).json()["groups"]
        series = (await client.get(url, params={"group_by": "model", "bucket": "day", **window})).json()
    assert series["bucket"] == "day"
    assert all(g["start"].endswith("T00:00:00.000Z") for g in series["groups"])
    per_model: dict[str, Decimal] = {}
    for g in series["groups"]:
        per_model[g["key"]] = per_model.get(g["key"], Decimal(0)) + Decimal(str(g["cost_usd"]))
    assert per_model == {g["key"]: Decimal(str(g["cost_usd"])) for g in totals}
    assert set(per_model) == {m for s in expected.values() for m in s.models}


async def _read_events(
    response: httpx.Response, want: Callable[[dict[str, Any]], bool], timeout_s: float
) -> list[dict[str, Any]]:
    """SSE events (``id``, ``event``, ``data``) read until one satisfies ``want`` or time is up."""
    seen: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    lines = response.aiter_lines()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(anext(lines), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        if not line:
            if "data" in current:
                current["data"] = json.loads(current["data"])
                seen.append(current)
                if want(current):
                    return seen
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    return seen


async def test_the_stream_sends_a_new_session_and_resumes_after_the_last_event(pipeline: Pipeline) -> None:
    template = ExportLogsServiceRequest.FromString(
        (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()
    )
    session_id = f"stream-{uuid.uuid4()}"
    stream_url = pipeline.url("dashboard") + "/api/v1/stream"

    def is_ours(event: dict[str, Any]) -> bool:
        return event.get("event") == "session" and event["data"]["session_id"] == session_id

    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        async with client.stream("GET", stream_url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            posted = await client.post(
                pipeline.url("ingest") + "/v1/logs",
                content=export_for(template, session_id, 0),
                headers={"Content-Type": "application/x-protobuf"},
            )
            assert posted.status_code == 200
            events = await _read_events(response, is_ours, timeout_s=60)
        ours = [e for e in events if is_ours(e)]
        assert ours, f"no session event for {session_id} in {events}"
        assert ours[-1]["data"]["api_requests"] == 1
        last_id = ours[-1]["id"]

        # Reconnecting after that event: what came before it is not sent again.
        async with client.stream("GET", stream_url, headers={"Last-Event-ID": last_id}) as response:
            again = await _read_events(response, is_ours, timeout_s=3)
        assert not [e for e in again if is_ours(e)], (last_id, ours, again)


# --- a session's timeline -------------------------------------------------------------------


def _logged_events(case_dir: Any) -> dict[str, list[dict[str, Any]]]:
    """session id -> its log records' attributes as captured, in the agent's sequence order."""
    by_session: dict[str, list[dict[str, Any]]] = {}
    for export in exports(case_dir):
        if export.signal != "logs":
            continue
        document = json.loads(export.json_form.read_text())
        for resource in document.get("resourceLogs", []):
            for scope in resource.get("scopeLogs", []):
                for record in scope.get("logRecords", []):
                    attrs = {a["key"]: next(iter(a["value"].values()), None) for a in record["attributes"]}
                    by_session.setdefault(str(attrs["session.id"]), []).append(attrs)
    return {sid: sorted(r, key=lambda a: int(a["event.sequence"])) for sid, r in by_session.items()}


def times(items: list[dict[str, Any]]) -> list[datetime]:
    """The items' times as instants (their ISO text does not sort: ``...:17Z`` > ``...:17.5Z``)."""
    return [datetime.fromisoformat(i["at"]) for i in items]


async def test_a_sessions_timeline_lists_its_prompts_requests_and_tools_in_order(pipeline: Pipeline) -> None:
    """stub-tool-traces: a prompt, a Haiku title request, a Write tool decided and run, two Opus
    requests of 1,200 input + 4,500 cache read + 300 cache write tokens."""
    captured: dict[str, list[dict[str, Any]]] = {}
    for case_dir in CASES:
        if case_dir.name.startswith("stub-tool-traces"):
            captured |= _logged_events(case_dir)
    assert len(captured) == 2  # the protobuf and the JSON capture
    async with httpx.AsyncClient(timeout=10) as client:
        await post_all(client, pipeline)  # idempotent: harmless if another test posted already
        await wait_for_sessions(client, pipeline, expected_claude_sessions(CASES))
        timelines: dict[str, list[dict[str, Any]]] = {}
        deadline = time.monotonic() + 60
        while len(timelines) < len(captured):
            for sid, records in captured.items():
                response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}/timeline")
                assert response.status_code == 200, (sid, response.status_code, response.text)
                items = [i for i in response.json()["items"] if i["kind"] != "signal"]
                if len(items) == len(records):  # events may land after the session's state
                    timelines[sid] = items
            if time.monotonic() > deadline:
                pipeline.fail(f"timelines incomplete after 60 s: {sorted(set(captured) - set(timelines))}")
            await asyncio.sleep(0.5)
        missing = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/no-such-session/timeline")
    assert missing.status_code == 404

    for sid, records in captured.items():
        items = timelines[sid]
        assert [i["name"] for i in items] == [r["event.name"] for r in records], sid
        assert times(items) == sorted(times(items)), sid
        kinds = [i["kind"] for i in items]
        assert kinds[0] == "prompt"
        assert kinds.count("api_request") == sum(r["event.name"] == "api_request" for r in records) == 3
        assert kinds.index("tool_decision") < kinds.index("tool_result")
        main = [
            int(r["input_tokens"]) + int(r["cache_read_tokens"]) + int(r["cache_creation_tokens"])
            for r in records
            if r["event.name"] == "api_request" and r["query_source"] != "generate_session_title"
        ]
        assert main == [1200 + 4500 + 300] * 2
        assert [i["context_tokens"] for i in items if i["kind"] == "api_request"] == [None, *main]
        requests = [i for i in items if i["kind"] == "api_request"]
        assert [i["cost_usd"] for i in requests] == pytest.approx(
            [float(r["cost_usd"]) for r in records if r["event.name"] == "api_request"]
        )
