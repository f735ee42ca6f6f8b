"""Real Gemini CLI and Codex CLI exports through the real pipeline, twice, the second time in
reverse order: the API shows the totals derived by hand from the payloads.

Derivations (reference/agent-telemetry.md section 6; the model stubs' usage per call):
- Gemini stub: two ``gemini_cli.api_response`` (router on gemini-3.5-flash-lite, main call on
  gemini-3.8-flash), each prompt 1500 (none cached), candidates 42, thoughts 10 -> input
  2 x 1500, output 2 x (42 + 10), reasoning 2 x 10; cost from the price table
  (streams/prices.json, LiteLLM 1.110.2: gemini/gemini-3.5-flash-lite 3e-07 / 2.5e-06 per
  token, gemini/gemini-3.8-flash 7.5e-07 / 3.75e-06): 1500 x 300 + 52 x 2500 = 580,000 and
  1500 x 750 + 52 x 3750 = 1,320,000 nano-USD. Context: the main call only, 1500 of a
  1,048,576-token Gemini window (max_input_tokens).
- Gemini offline: no response, 9 ``gemini_cli.api_error`` (5 router + 4 main attempts).
- Codex stub: one token ``sse_event``: input 1500 of which 1024 cached, output 42 of which 10
  reasoning -> input 476, cache read 1024; cost (gpt-6.1-sol: 2e-06 input, 1e-07 cache read,
  1e-05 output per token) 476 x 2000 + 1024 x 100 + 42 x 10,000; window 922,000
  (max_input_tokens).
- The Codex stub's logs again as a session of gpt-6.2-sol (Codex CLI 0.171's default, which
  LiteLLM 1.110.2 does not price): the same tokens, an unknown cost (null, never 0).
- Codex offline: three failed ``codex.api_request`` attempts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.support.captures import Export, cases, exports
from tests.support.pipeline import Pipeline
from tests.support.services import wait_caught_up

pytestmark = pytest.mark.e2e

NO_TOKENS = {
    "input": 0,
    "output": 0,
    "cache_read": 0,
    "cache_creation": 0,
    "reasoning": 0,
    "cache_creation_1h": 0,
}
CODEX_TOKENS = {
    "input": 476,
    "output": 42,
    "cache_read": 1024,
    "cache_creation": 0,
    "reasoning": 10,
    "cache_creation_1h": 0,
}
CODEX_STUB = "01a20b48-f967-7f32-8d59-1a1075fb417a"
#: The Codex stub's conversation, renamed, on a model the table does not price.
UNPRICED = "01a20b48-0000-7000-8000-00000000c0de"
EXPECTED: dict[str, dict[str, Any]] = {
    "13d622f0-5e61-4b5c-b76b-38d196594a05": {  # Gemini stub
        "agent": "gemini_cli",
        "api_requests": 2,
        "api_errors": 0,
        "prompts": 1,
        "events": 14,
        "tokens": {
            "input": 3000,
            "output": 104,
            "cache_read": 0,
            "cache_creation": 0,
            "reasoning": 20,
            "cache_creation_1h": 0,
        },
        "cost_usd": (580_000 + 1_320_000) / 1e9,
        "cost_source": ("price_table", 0),
        "context": (1500, 1_048_576),
    },
    "1d10c364-68ea-494f-8a92-3e1b684f5825": {  # Gemini offline
        "agent": "gemini_cli",
        "api_requests": 0,
        "api_errors": 9,
        "prompts": 1,
        "events": 45,
        "tokens": NO_TOKENS,
        "cost_usd": 0.0,  # no request: nothing spent, nothing unknown
        "cost_source": (None, 0),
        "context": (0, None),
    },
    CODEX_STUB: {  # Codex stub
        "agent": "codex",
        "api_requests": 1,
        "api_errors": 0,
        "prompts": 1,
        "events": 27,
        "tokens": CODEX_TOKENS,
        "cost_usd": (476 * 2000 + 1024 * 100 + 42 * 10_000) / 1e9,
        "cost_source": ("price_table", 0),
        "context": (1500, 922_000),
    },
    "01a20b4a-bd65-7333-9d66-123a42a1aa11": {  # Codex offline
        "agent": "codex",
        "api_requests": 0,
        "api_errors": 3,
        "prompts": 1,
        "events": 18,
        "tokens": NO_TOKENS,
        "cost_usd": 0.0,
        "cost_source": (None, 0),
        "context": (0, None),
    },
    UNPRICED: {  # the Codex stub's logs on gpt-6.2-sol
        "agent": "codex",
        "api_requests": 1,
        "api_errors": 0,
        "prompts": 1,
        "events": 27,
        "tokens": CODEX_TOKENS,
        "cost_usd": None,
        "cost_source": ("unknown", 1),
        "context": (1500, 200_000),  # no window known: the default
    },
}


def unpriced(export: Export) -> Export:
    """A Codex stub logs export as the same conversation on gpt-6.2-sol, under another id."""
    assert export.content_type == "application/x-protobuf"
    assert export.content_encoding is None
    request = ExportLogsServiceRequest.FromString(export.body)
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                for kv in record.attributes:
                    if kv.key == "model" and kv.value.string_value == "gpt-6.1-sol":
                        kv.value.string_value = "gpt-6.2-sol"
                    elif kv.key == "conversation.id" and kv.value.string_value == CODEX_STUB:
                        kv.value.string_value = UNPRICED
    return dataclasses.replace(export, body=request.SerializeToString())


async def post(client: httpx.AsyncClient, pipeline: Pipeline, sent: list[Export]) -> None:
    for export in sent:
        headers = {"Content-Type": export.content_type}
        if export.content_encoding:
            headers["Content-Encoding"] = export.content_encoding
        response = await client.post(
            pipeline.url("ingest") + export.path, content=export.body, headers=headers
        )
        # Traces are refused (404, not retried): the pipeline consumes no spans.
        want = 404 if export.path == "/v1/traces" else 200
        assert response.status_code == want, (export.path, response.text)


def matches(body: dict[str, Any], want: dict[str, Any]) -> bool:
    tokens, window = want["context"]
    return (
        body["agent"] == want["agent"]
        and body["tokens"] == want["tokens"]
        and (body["cost_usd"] is None) == (want["cost_usd"] is None)
        and (want["cost_usd"] is None or abs(body["cost_usd"] - want["cost_usd"]) < 1e-12)
        and (body["cost_source"], body["unpriced_requests"]) == want["cost_source"]
        and (body["api_requests"], body["api_errors"], body["prompts"], body["events"])
        == (want["api_requests"], want["api_errors"], want["prompts"], want["events"])
        and body["context"]["tokens"] == tokens
        and (window is None or body["context"]["limit"] == window)
    )


async def test_gemini_and_codex_captures_give_the_hand_derived_totals(pipeline: Pipeline) -> None:
    sent = [e for agent in ("gemini-cli", "codex") for case in cases(agent) for e in exports(case)]
    sent += [
        unpriced(e)
        for case in cases("codex")
        for e in exports(case)
        if e.signal == "logs" and "stub" in case.name
    ]
    async with httpx.AsyncClient(timeout=30) as client:
        await post(client, pipeline, sent)
        await post(client, pipeline, list(reversed(sent)))  # again, out of order
        await wait_caught_up(pipeline.kafka_bootstrap, pipeline.streams_group, pipeline.raw_topics()[:2])
        deadline = time.monotonic() + 60
        bodies: dict[str, dict[str, Any]] = {}
        while True:
            for sid in EXPECTED:
                response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}")
                if response.status_code == 200:
                    bodies[sid] = response.json()
            if all(sid in bodies and matches(bodies[sid], want) for sid, want in EXPECTED.items()):
                break
            if time.monotonic() > deadline:
                pipeline.fail(f"not as derived after 60 s:\n{bodies}")
            await asyncio.sleep(0.5)
        listed = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions", params={"agent": "codex"})
        by_id = {s["session_id"]: s for s in listed.json()["sessions"]}
        assert (by_id[UNPRICED]["cost_usd"], by_id[UNPRICED]["cost_source"]) == (None, "unknown")
        assert by_id[CODEX_STUB]["cost_source"] == "price_table"

        # Their main requests are on the timeline's chart as on the gauge (Codex says nothing
        # of a main context: its requests are; Gemini's router request has a role of its own).
        for sid, want in EXPECTED.items():
            if not want["api_requests"]:
                continue
            timeline = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{sid}/timeline")
            contexts = [i["context_tokens"] for i in timeline.json()["items"] if i["kind"] == "api_request"]
            assert contexts[-1] == want["context"][0], (sid, contexts)
            if want["agent"] == "codex":
                assert contexts == [want["context"][0]] * want["api_requests"], sid
