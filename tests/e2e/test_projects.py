"""Projects and plans through the real pipeline (ingest, streams, sink, dashboard as processes):
captured Claude Code exports and a synthetic session, their project set by the hook's report or
by a resource attribute, their plans reported as ``tokentide hook`` reports them.

Expected numbers are stated here, independently of the code under test: each captured export's
sums read from its OTLP/JSON form, the synthetic session's from its generator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.captures import FIXTURES, export_for
from tests.support.pipeline import Pipeline
from tests.support.scenarios import MS, Scenario, generate
from tokentide import hook
from tokentide.settings import DEV_REDACTION_KEY

pytestmark = pytest.mark.e2e

CASE = FIXTURES / "claude-code" / "stub-tool-traces-protobuf"
PROTOBUF = {"Content-Type": "application/x-protobuf"}
NANO = Decimal("1e-9")


@dataclass
class Sums:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_creation: int = 0
    cost: Decimal = Decimal(0)

    def add(self, other: Sums, times: int = 1) -> None:
        self.input += other.input * times
        self.output += other.output * times
        self.cache_read += other.cache_read * times
        self.cache_creation += other.cache_creation * times
        self.cost += other.cost * times

    def tokens(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_creation": self.cache_creation,
        }


def capture_sums() -> Sums:
    """What one copy of the captured logs export reports: the sums of its api_request events."""
    sums = Sums()
    document = json.loads((CASE / "0002_v1_logs.pb.json").read_text())
    for resource in document["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                attrs = {a["key"]: next(iter(a["value"].values())) for a in record["attributes"]}
                if attrs["event.name"] == "api_request":
                    sums.input += int(attrs["input_tokens"])
                    sums.output += int(attrs["output_tokens"])
                    sums.cache_read += int(attrs["cache_read_tokens"])
                    sums.cache_creation += int(attrs["cache_creation_tokens"])
                    sums.cost += Decimal(str(attrs["cost_usd"]))
    return sums


def capture_export(session_id: str, request_no: int, resource: dict[str, str]) -> bytes:
    template = ExportLogsServiceRequest.FromString((CASE / "0002_v1_logs.pb").read_bytes())
    request = ExportLogsServiceRequest.FromString(export_for(template, session_id, request_no))
    for rl in request.resource_logs:
        rl.resource.attributes.extend(
            KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in resource.items()
        )
    return request.SerializeToString()


async def until(what: str, check: Callable[[], Any], timeout_s: float = 60) -> Any:
    """``check()``'s answer once it says done (it returns (done, answer))."""
    deadline = time.monotonic() + timeout_s
    answer = None
    while time.monotonic() < deadline:
        done, answer = await check()
        if done:
            return answer
        await asyncio.sleep(0.5)
    pytest.fail(f"{what} after {timeout_s}s (last: {answer})")


def repository(root: Path, name: str) -> Path:
    """A git checkout named ``name`` whose origin's URL carries a token (the hook strips it)."""
    checkout = root / name
    (checkout / "src").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(checkout)], check=True)
    remote = f"https://ghp_token@example.com/acme/{name}.git"
    subprocess.run(["git", "-C", str(checkout), "remote", "add", "origin", remote], check=True)
    return checkout


async def test_projects_sum_their_sessions_through_the_pipeline(pipeline: Pipeline, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    alpha, beta, gamma = f"alpha-{run}", f"beta-{run}", f"gamma-{run}"
    checkout = repository(tmp_path, alpha)
    dashboard = pipeline.url("dashboard")
    one = capture_sums()
    # (session, exports of the capture, resource attributes, the hook's working directory)
    captured: list[tuple[str, int, dict[str, str], Path | None]] = [
        (f"a1-{run}", 2, {}, checkout),
        (f"a2-{run}", 1, {"project": beta}, checkout / "src"),  # the hook's report wins
        (f"b1-{run}", 3, {"project": beta}, None),
        (f"c1-{run}", 1, {"service.namespace": gamma}, None),
    ]
    start_ms = time.time_ns() // MS - 60_000
    gen = generate(
        Scenario(
            seed=7,
            requests=24,
            growth=1_000,
            growth_jitter=300,
            interval_s=(1.0, 2.0),
            start_ns=start_ms * MS,
            session_id=f"syn-{run}",
        )
    )
    want = {alpha: Sums(), beta: Sums(), gamma: Sums()}
    sessions: dict[str, set[str]] = {alpha: set(), beta: set(), gamma: set()}
    async with httpx.AsyncClient(timeout=10) as client:
        for session, copies, resource, cwd in captured:
            for n in range(copies):
                posted = await client.post(
                    pipeline.url("ingest") + "/v1/logs",
                    content=capture_export(session, n, resource),
                    headers=PROTOBUF,
                )
                assert posted.status_code == 200, posted.text
            if cwd is not None:  # what `tokentide hook` sends (open mode: no proof)
                body = hook.plan_body(None, str(cwd), hook.git_context(str(cwd)))
                assert body["project"] == alpha
                reported = await client.put(f"{dashboard}/api/v1/hook/sessions/{session}/plan", json=body)
                assert reported.status_code == 200, reported.text
                assert reported.json()["project"] == alpha
            project = alpha if cwd else resource.get("project") or resource["service.namespace"]
            session_sums = Sums()
            session_sums.add(one, copies)
            session_sums.cost = session_sums.cost.quantize(NANO)
            want[project].add(session_sums)
            sessions[project].add(session)
        for export in gen.exports:
            posted = await client.post(
                pipeline.url("ingest") + export.path, content=export.body, headers=PROTOBUF
            )
            assert posted.status_code == 200, posted.text
        plan = [
            {"content": "Generate the data", "status": "completed", "activeForm": "Generating the data"},
            {"content": "Check the sums", "status": "in_progress", "activeForm": "Checking the sums"},
            {"content": "Write it up", "status": "pending", "activeForm": "Writing it up"},
        ]
        reported = await client.put(
            f"{dashboard}/api/v1/hook/sessions/{gen.session_id}/plan",
            json={
                "todos": plan,
                "cwd": "/work/x",
                "git_repository": f"https://t0k@example.com/acme/{gamma}.git",
            },
        )
        assert reported.status_code == 200, reported.text
        totals = gen.totals
        synthetic = Sums(
            totals.input,
            totals.output,
            totals.cache_read,
            totals.cache_creation,
            (Decimal(totals.cost_nanos) / 10**9).quantize(NANO),
        )
        want[gamma].add(synthetic)
        sessions[gamma].add(str(gen.session_id))

        async def arrived() -> tuple[bool, dict[str, Any]]:
            listed = (await client.get(f"{dashboard}/api/v1/projects")).json()["projects"]
            mine = {p["project"]: p for p in listed if p["project"] in want}
            done = all(
                p["sessions"] == len(sessions[name]) and _tokens(p) == want[name].tokens()
                for name, p in mine.items()
            )
            return len(mine) == 3 and done, mine

        projects = await until("the projects' sums", arrived)
        for name, sums in want.items():
            assert Decimal(str(projects[name]["cost_usd"])) == sums.cost, name
        assert (projects[alpha]["active_sessions"], projects[alpha]["parallel"]) == (2, True)
        assert (projects[beta]["active_sessions"], projects[beta]["parallel"]) == (1, False)
        assert (projects[gamma]["active_sessions"], projects[gamma]["parallel"]) == (2, True)

        # One project's page: its sessions, the active ones together; their sums are its sums.
        detail = (await client.get(f"{dashboard}/api/v1/projects/{gamma}")).json()
        assert {s["session_id"] for s in detail["active"]} == sessions[gamma]
        assert detail["inactive"] == []
        for key in ("input", "output", "cache_read", "cache_creation"):
            assert sum(s["tokens"][key] for s in detail["active"]) == projects[gamma]["tokens"][key]
        syn = next(s for s in detail["active"] if s["session_id"] == gen.session_id)
        assert syn["project"] == gamma
        assert syn["workspace"]["git_repository"] == f"https://example.com/acme/{gamma}.git"
        # Open mode's tenant has no privacy mode of its own: ingest's default, hash, under the
        # development key, as its prompts get.
        keyed = hmac.new(DEV_REDACTION_KEY.encode(), b"Checking the sums", hashlib.sha256).hexdigest()[:32]
        assert (syn["plan"]["done"], syn["plan"]["total"], syn["plan"]["text_mode"]) == (1, 3, "hashed")
        assert syn["plan"]["current"]["active_form"] == f"redacted:{keyed}"
        assert "Check the sums" not in json.dumps(detail)

        # The session list's project filter and the usage grouping agree with the project's sums.
        listed = (await client.get(f"{dashboard}/api/v1/sessions", params={"project": alpha})).json()
        assert {s["session_id"] for s in listed["sessions"]} == sessions[alpha]

        # The synthetic session's requests run on past now (its generator spaces them out).
        until_tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()

        async def grouped() -> tuple[bool, dict[str, Any]]:
            usage = (
                await client.get(
                    f"{dashboard}/api/v1/usage", params={"group_by": "project", "to": until_tomorrow}
                )
            ).json()
            groups = {g["key"]: g for g in usage["groups"] if g["key"] in want}
            same = all(_tokens(g) == want[k].tokens() for k, g in groups.items())
            return len(groups) == 3 and same, groups

        groups = await until("usage by project", grouped)
        for name, sums in want.items():
            assert groups[name]["sessions"] == len(sessions[name])
            assert Decimal(str(groups[name]["cost_usd"])) == sums.cost, name


def _tokens(project: dict[str, Any]) -> dict[str, int]:
    return {k: project["tokens"][k] for k in ("input", "output", "cache_read", "cache_creation")}
