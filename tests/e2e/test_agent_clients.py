"""The current Claude Code, Codex CLI and Gemini CLI (pinned npm installs:
``scripts/install-claude-code.sh``, ``install-codex.sh``, ``install-gemini-cli.sh``, which
``make install`` runs) against local model stubs, each exporting its own OTLP telemetry into the
real pipeline (ingest -> Kafka -> streams -> sink -> PostgreSQL -> dashboard API). Every
session's tokens, requests, cost, window and signals are asserted against what the stub answered
and, for cost, against the price table's own rates (``streams/prices.json`` with
``prices.local.json``), computed here, not by tokentide's code.

What the clients do, found by running them (and what the tests therefore assert):

- Claude Code 2.1.332 in ``-p`` mode never runs the project's ``statusLine`` command (the status
  line is part of its interactive UI): a marker the command would write is asserted absent, so
  no agent window reaches tokentide and the window is the model table's (``limit_source``
  ``model_table``). Its default model is ``claude-opus-5-5`` (asserted from the stub's requests),
  1,000,000 tokens in the table. It sends ``cost_usd`` on every ``api_request``; the agent's
  cost wins and is asserted equal to the table's.
- Claude Code 2.1.332 in ``-p`` mode did not compact ahead of the API's limit (after a reply at
  170,000 of 200,000 tokens the next turn went out uncompacted, at 230,000); it compacts when
  the API refuses a request as too long (HTTP 400 ``prompt is too long``), which the stub does
  above the model's window, as the real API does: one ``api_error``, a summary request
  (``query_source`` compact), a ``compaction`` event with ``trigger=auto`` and ``pre_tokens``,
  then the refused turn again on the compacted conversation. ``pre_tokens`` is Claude Code's
  own count (its transcript's ``compact_boundary``), read there, not from tokentide.
- Codex CLI 0.171.0 exports logs and metrics over OTLP/HTTP (``otlp-http``) and gRPC
  (``otlp-grpc``), configured in ``config.toml`` per signal; traces are left off. Its default
  model ``gpt-6.2-sol`` is not in the price table: cost null, ``cost_source`` unknown, the
  default window (200,000). With ``-m gpt-6.1-sol`` (priced, 922,000 tokens) the same turn has
  a table cost and the table's window.
- Gemini CLI 0.61.0 exports over OTLP/HTTP (JSON) or gRPC (gzip) to one endpoint and always
  adds a trace exporter: ``telemetry.traces`` (``GEMINI_TELEMETRY_TRACES_ENABLED``) only adds
  span detail, it does not turn the exporter off (bundle: ``initializeTelemetry`` builds an
  ``OTLPTraceExporter`` for every OTLP target; with ``OTEL_TRACES_EXPORTER=none``, the advice of
  tokentide's refusal, spans are still sent). tokentide refuses traces: over HTTP with 404,
  which the CLI reports on stderr (even on stdout, after its JSON) and exits 0, its logs and
  metrics sent. Over gRPC the refusal used to be ``UNIMPLEMENTED``, and then the logs and
  metrics were lost in most runs: at exit the CLI awaits ``sdk.shutdown()`` (NodeSDK: a
  ``Promise.all`` of the three providers' shutdowns), which rejects as soon as the trace export
  fails, and the process ends before the slower gRPC log and metric exports are sent (seen
  here: 10 of 14 runs lost every log record, 7 of them their metrics too). The trace service
  now answers OK with every span rejected (``partial_success``, decision 34), and the gRPC
  case runs against the pipeline's own ingest.
  A ``-p`` turn is two requests: the router (``utility_router``, flash-lite) and the main call
  (flash).

Signals: none on a 1M model at contexts that would be 95-135% of a 200,000 window (the issue's
false ``context_critical``); on the 200k model the thresholds of ``streams/signals.py``
(warning 80%, checkpoint 90% or at most 3 requests left, critical 95%) imply exactly the ones
listed in that test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.anthropic_stub import AnthropicStub, Conversation
from tests.support.anthropic_stub import Served as AnthropicServed
from tests.support.gemini_stub import GeminiStub
from tests.support.openai_stub import OpenAIStub
from tests.support.pipeline import Pipeline
from tests.support.services import free_port, missing_tool

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
CLAUDE = LOCAL / "claude-code" / "node_modules" / ".bin" / "claude"
CODEX = LOCAL / "codex" / "node_modules" / ".bin" / "codex"
GEMINI = LOCAL / "gemini-cli" / "node_modules" / ".bin" / "gemini"
INSTALLERS = {CLAUDE: "install-claude-code.sh", CODEX: "install-codex.sh", GEMINI: "install-gemini-cli.sh"}
VENV_BIN = Path(sys.executable).parent
CLIENT_TIMEOUT_S = 120
API_TIMEOUT_S = 60.0

CLAUDE_DEFAULT_MODEL = "claude-opus-5-5"  # Claude Code 2.1.332's default (no ANTHROPIC_MODEL)
CLAUDE_200K_MODEL = "claude-haiku-4-5"
CODEX_DEFAULT_MODEL = "gpt-6.2-sol"  # Codex CLI 0.171.0's default: not in the price table
CODEX_PRICED_MODEL = "gpt-6.1-sol"
DEFAULT_WINDOW = 200_000  # streams/context.py: no window known

# ---------------------------------------------------------------- the price table, read here


def price_table() -> dict[str, dict[str, Any]]:
    """streams/prices.json with streams/prices.local.json's fields laid over it."""
    models: dict[str, dict[str, Any]] = json.loads((ROOT / "streams" / "prices.json").read_text())["models"]
    local = json.loads((ROOT / "streams" / "prices.local.json").read_text())["models"]
    table = {name: dict(entry) for name, entry in models.items()}
    for name, entry in local.items():
        table.setdefault(name, {}).update({k: v for k, v in entry.items() if k != "reason"})
    return table


PRICES = price_table()


@dataclass(frozen=True)
class Usage:
    """One request's canonical tokens (input without cache; output with reasoning)."""

    model: str
    input: int
    output: int
    cache_read: int = 0
    cache_creation: int = 0
    reasoning: int = 0

    @property
    def prompt(self) -> int:
        return self.input + self.cache_read + self.cache_creation

    def cost(self) -> Decimal | None:
        """USD from the table's rates (per million tokens; a tier when the prompt is above its
        ``above_context_tokens``), None when the model is not in the table."""
        entry = PRICES.get(self.model)
        if entry is None or "input" not in entry:
            return None
        rates = dict(entry)
        for tier in entry.get("tiers", []):
            if self.prompt > tier["above_context_tokens"]:
                rates.update(tier)
        total = (
            self.input * Decimal(str(rates["input"]))
            + self.output * Decimal(str(rates["output"]))
            + self.cache_read * Decimal(str(rates["cache_read"]))
            + self.cache_creation * Decimal(str(rates["cache_creation"]))
        )
        return total / 1_000_000


def tokens(usages: list[Usage]) -> dict[str, int]:
    return {
        "input": sum(u.input for u in usages),
        "output": sum(u.output for u in usages),
        "cache_read": sum(u.cache_read for u in usages),
        "cache_creation": sum(u.cache_creation for u in usages),
        "reasoning": sum(u.reasoning for u in usages),
        "cache_creation_1h": 0,
    }


def cost(usages: list[Usage]) -> float | None:
    costs = [u.cost() for u in usages]
    if not usages or any(c is None for c in costs):
        assert all(c is None for c in costs), "a session of priced and unpriced requests: not here"
        return None if usages else 0.0
    return float(sum(c for c in costs if c is not None))


def source(query_source: str, usages: list[Usage]) -> dict[str, Any]:
    return {
        "query_source": query_source,
        "tokens": tokens(usages),
        "cost_usd": cost(usages),
        "requests": len(usages),
    }


# ---------------------------------------------------------------- waiting for the API


def observed(session: dict[str, Any]) -> dict[str, Any]:
    """What the tests assert of a session, in a form to compare whole."""
    context = session["context"]
    return {
        "agent": session["agent"],
        "models": sorted(session["models"]),
        "tokens": session["tokens"],
        "api_requests": session["api_requests"],
        "api_errors": session["api_errors"],
        "cost_usd": None if session["cost_usd"] is None else round(session["cost_usd"], 9),
        "cost_source": session["cost_source"],
        "unpriced_requests": session["unpriced_requests"],
        "context": {
            k: context[k]
            for k in ("tokens", "limit", "limit_source", "ratio", "compactions", "auto_compact_at")
        },
        "signals": [
            (s["kind"], s["tokens"], s["limit"])
            for s in sorted(session["signals"] or [], key=lambda s: s["at"])
        ],
        "by_source": sorted(
            (
                {
                    "query_source": s["query_source"],
                    "tokens": s["tokens"],
                    "cost_usd": None if s["cost_usd"] is None else round(s["cost_usd"], 9),
                    "requests": s["requests"],
                }
                for s in session["by_source"]
            ),
            key=lambda s: s["query_source"],
        ),
    }


def expected(
    agent: str,
    usages: list[Usage],
    *,
    main: Callable[[int], bool] = lambda i: True,
    api_errors: int = 0,
    context: dict[str, Any],
    signals: list[tuple[str, int, int]] | None = None,
    cost_source: str,
) -> dict[str, Any]:
    total = cost(usages)
    sources = [
        source(name, [u for i, u in enumerate(usages) if main(i) == (name == "main")])
        for name in ("auxiliary", "main")
    ]
    return {
        "agent": agent,
        "models": sorted({u.model for u in usages}),
        "tokens": tokens(usages),
        "api_requests": len(usages),
        "api_errors": api_errors,
        "cost_usd": None if total is None else round(total, 9),
        "cost_source": cost_source,
        "unpriced_requests": len(usages) if total is None else 0,
        "context": {"compactions": 0, "auto_compact_at": None, **context},
        "signals": signals or [],
        "by_source": [
            {**s, "cost_usd": None if s["cost_usd"] is None else round(s["cost_usd"], 9)}
            for s in sources
            if s["requests"]
        ],
    }


async def session_as(pipeline: Pipeline, session_id: str, want: dict[str, Any]) -> dict[str, Any]:
    """The session once the API shows ``want`` (bounded); the last answer compared on timeout."""
    url = f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}"
    deadline = time.monotonic() + API_TIMEOUT_S
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            response = await client.get(url)
            body: dict[str, Any] = response.json() if response.status_code == 200 else {}
            if body and observed(body) == want:
                return body
            if time.monotonic() > deadline:
                missing = f"no session {session_id} after {API_TIMEOUT_S}s: {response.text[:300]}"
                assert body, f"{missing}\n{pipeline.logs()}"
                assert observed(body) == want  # shows the difference
            await asyncio.sleep(0.3)


async def timeline(pipeline: Pipeline, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{pipeline.url('dashboard')}/api/v1/sessions/{session_id}/timeline")
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# ---------------------------------------------------------------- running the clients


def installed(binary: Path) -> Path:
    if not binary.exists():
        missing_tool(f"{binary} is missing: run `bash scripts/{INSTALLERS[binary]}` (make install does)")
    return binary


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    prefixes = ("TOKENTIDE_", "OTEL_", "ANTHROPIC_", "CLAUDE", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(HOME=str(home), TERM="dumb", **extra)
    return env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"{argv[0]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout


# ---------------------------------------------------------------- Claude Code


@dataclass
class ClaudeProject:
    root: Path
    stub: AnthropicStub
    pipeline: Pipeline
    model: str | None

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def marker(self) -> Path:
        """Written by the project's statusLine command, should Claude Code ever run it."""
        return self.root / "statusline-ran"

    def setup(self) -> None:
        (self.project / ".claude").mkdir(parents=True)
        command = f"touch {self.marker}; exec {VENV_BIN / 'tokentide'} statusline"
        settings = {"statusLine": {"type": "command", "command": command}}
        (self.project / ".claude" / "settings.json").write_text(json.dumps(settings))

    def turn(self, prompt: str, session_id: str | None = None) -> dict[str, Any]:
        env = clean_env(
            self.root / "home",
            ANTHROPIC_BASE_URL=self.stub.url,
            ANTHROPIC_API_KEY="sk-ant-stub",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
            CLAUDE_CODE_ENABLE_TELEMETRY="1",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=self.pipeline.url("ingest"),
            OTEL_LOGS_EXPORT_INTERVAL="500",
            OTEL_METRIC_EXPORT_INTERVAL="1000",
            TOKENTIDE_URL=self.pipeline.url("dashboard"),
            TOKENTIDE_INGEST_URL=self.pipeline.url("ingest"),
            XDG_STATE_HOME=str(self.root / "state"),
        )
        if self.model:
            env["ANTHROPIC_MODEL"] = self.model
        resume = ["--resume", session_id] if session_id else []
        out = run(
            [str(installed(CLAUDE)), "-p", prompt, *resume, "--output-format", "json"], self.project, env
        )
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert result["is_error"] is False, result
        return result

    def conversation(self, turns: int) -> tuple[str, float]:
        """``turns`` prompts in one session; its id and Claude Code's own cost of the session
        (a resumed run's ``total_cost_usd`` includes the runs before it)."""
        result = self.turn("turn 1")
        session_id = result["session_id"]
        for n in range(2, turns + 1):
            result = self.turn(f"turn {n}", session_id)
            assert result["session_id"] == session_id
        return session_id, float(result["total_cost_usd"])

    def transcript(self, session_id: str) -> list[dict[str, Any]]:
        [path] = (self.root / "home" / ".claude" / "projects").glob(f"*/{session_id}.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def anthropic_usage(served: AnthropicServed) -> Usage:
    u = served.usage
    return Usage(
        served.model,
        input=u["input_tokens"],
        output=u["output_tokens"],
        cache_read=u.get("cache_read_input_tokens", 0),
        cache_creation=u.get("cache_creation_input_tokens", 0),
    )


@pytest.fixture
def anthropic() -> Iterator[Callable[[Conversation], AnthropicStub]]:
    stubs: list[AnthropicStub] = []

    def start(conversation: Conversation) -> AnthropicStub:
        stub = AnthropicStub(free_port(), conversation=conversation)
        stub.start()
        stubs.append(stub)
        return stub

    yield start
    for stub in stubs:
        stub.stop()


async def test_claude_code_default_model_has_a_1m_window_and_no_false_signal(
    pipeline: Pipeline, anthropic: Callable[[Conversation], AnthropicStub], tmp_path: Path
) -> None:
    # Contexts of 95% to 135% of a 200,000 window: under 30% of 1M.
    stub = anthropic(Conversation(base=150_000, per_message=20_000, window=1_000_000))
    claude = ClaudeProject(tmp_path, stub, pipeline, model=None)
    claude.setup()
    session_id, spent = claude.conversation(3)

    usages = [anthropic_usage(s) for s in stub.served]
    assert [s.model for s in stub.served] == [CLAUDE_DEFAULT_MODEL] * 3
    assert not any(s.summary for s in stub.served)
    assert stub.refused == []
    # 190k, 230k, 270k as run (the first request already holds two messages).
    contexts = [u.prompt for u in usages]
    assert contexts == sorted(contexts), contexts
    assert contexts[0] >= 0.95 * DEFAULT_WINDOW, contexts
    assert contexts[-1] >= 1.25 * DEFAULT_WINDOW, "the table's old 200k would be over-full"
    window = PRICES[CLAUDE_DEFAULT_MODEL]["context_window"]
    assert window == 1_000_000
    want = expected(
        "claude_code",
        usages,
        context={
            "tokens": contexts[-1],
            "limit": window,
            "limit_source": "model_table",
            "ratio": round(contexts[-1] / window, 6),
        },
        signals=[],  # none: 27% of the window, (1M - 270k) / 40k growth = ~18 requests left
        cost_source="agent",
    )
    await session_as(pipeline, session_id, want)
    # The agent's cost (what Claude Code printed, and sent) is the table's.
    assert want["cost_usd"] == pytest.approx(spent, abs=1e-9)
    # `-p` runs no status line: the agent never said its window, the table decided.
    assert not claude.marker.exists()
    assert [
        i for i in await timeline(pipeline, session_id) if i["kind"] in ("context_window", "signal")
    ] == []


async def test_claude_code_200k_model_through_a_real_auto_compaction(
    pipeline: Pipeline, anthropic: Callable[[Conversation], AnthropicStub], tmp_path: Path
) -> None:
    # Contexts 50k, 110k, 170k; the 4th turn (230k) is refused as too long, Claude Code compacts
    # (summary request of 200k: the API's maximum, answered) and sends the turn again (50k);
    # the 5th is 110k.
    stub = anthropic(Conversation(base=20_000, per_message=30_000, window=200_000))
    claude = ClaudeProject(tmp_path, stub, pipeline, model=CLAUDE_200K_MODEL)
    claude.setup()
    session_id, spent = claude.conversation(5)

    assert stub.refused == [230_000]
    assert [s.summary for s in stub.served] == [False, False, False, True, False, False]
    assert {s.model for s in stub.served} == {CLAUDE_200K_MODEL}
    usages = [anthropic_usage(s) for s in stub.served]
    main = [u.prompt for u, s in zip(usages, stub.served, strict=True) if not s.summary]
    assert main == [50_000, 110_000, 170_000, 50_000, 110_000]
    # Claude Code's own record of the compaction (its transcript's compact boundary).
    [boundary] = [m for m in claude.transcript(session_id) if m.get("subtype") == "compact_boundary"]
    compaction = boundary["compactMetadata"]
    assert compaction["trigger"] == "auto"
    pre, post = compaction["preTokens"], compaction["postTokens"]
    assert 170_000 <= pre < 200_000, compaction
    assert post < 50_000, compaction

    window = PRICES[CLAUDE_200K_MODEL]["context_window"]
    assert window == 200_000
    want = expected(
        "claude_code",
        usages,
        main=lambda i: not stub.served[i].summary,
        api_errors=1,  # the refused request
        context={
            "tokens": 110_000,
            "limit": window,
            "limit_source": "model_table",
            "ratio": 0.55,
            "compactions": 1,
            "auto_compact_at": pre,  # learned from the auto compaction's pre_tokens
        },
        signals=[
            # 110k: growth 60k a request, (200k - 110k) / 60k = 1.5 requests left <= 3.
            ("checkpoint_requested", 110_000, window),
            # 170k: 85% >= 80% (the checkpoint is still raised; below 95%: not critical).
            ("context_warning", 170_000, window),
            # The compaction, at Claude Code's post_tokens. Afterwards 50k and 110k stay below
            # 80%, and the checkpoint (requests left to the learned threshold never above 5)
            # is not re-armed, so nothing fires again.
            ("compaction_observed", post, window),
        ],
        cost_source="agent",
    )
    await session_as(pipeline, session_id, want)
    assert want["cost_usd"] == pytest.approx(spent, abs=1e-9)
    assert not claude.marker.exists()
    items = await timeline(pipeline, session_id)
    compactions = [i for i in items if i["kind"] == "compaction"]
    assert [i["summary"] for i in compactions] == [f"compacted (auto) from {pre:,} to {post:,} tokens"]
    [refusal] = [i for i in items if i["kind"] == "api_error"]
    assert "prompt is too long: 230000 tokens > 200000 maximum" in refusal["summary"]


# ---------------------------------------------------------------- Codex CLI


@pytest.fixture
def openai() -> Iterator[OpenAIStub]:
    stub = OpenAIStub(free_port())
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


def codex_config(stub: OpenAIStub, pipeline: Pipeline, protocol: str) -> str:
    if protocol == "http":
        ingest = pipeline.url("ingest")

        def exporter(signal: str) -> str:
            return f'{{ otlp-http = {{ endpoint = "{ingest}/v1/{signal}", protocol = "binary" }} }}'
    else:
        grpc = f"http://127.0.0.1:{pipeline.ports['grpc']}"

        def exporter(signal: str) -> str:
            return f'{{ otlp-grpc = {{ endpoint = "{grpc}" }} }}'

    # A provider of its own: the stub speaks the Responses API without WebSockets.
    return f"""model_provider = "stub"

[model_providers.stub]
name = "stub"
base_url = "{stub.url}"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false

[otel]
environment = "e2e"
exporter = {exporter("logs")}
metrics_exporter = {exporter("metrics")}
"""


@pytest.mark.parametrize(
    ("protocol", "model"), [("http", None), ("grpc", None), ("grpc", CODEX_PRICED_MODEL)]
)
async def test_codex_over_otlp(
    pipeline: Pipeline, openai: OpenAIStub, tmp_path: Path, protocol: str, model: str | None
) -> None:
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    (home / ".codex" / "config.toml").write_text(codex_config(openai, pipeline, protocol))
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(
        home, CODEX_HOME=str(home / ".codex"), OPENAI_API_KEY="sk-stub", OTEL_METRIC_EXPORT_INTERVAL="1000"
    )
    choose = ["-m", model] if model else []
    out = run(
        [str(installed(CODEX)), "exec", "--skip-git-repo-check", "--json", *choose, "say hi"], work, env
    )
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    [session_id] = [e["thread_id"] for e in events if e["type"] == "thread.started"]

    assert [m for m, _ in openai.served] == [model or CODEX_DEFAULT_MODEL]
    # OpenAI's definitions: input includes the cached part, output the reasoning part.
    usages = [
        Usage(m, u.input - u.cached, u.output, cache_read=u.cached, reasoning=u.reasoning)
        for m, u in openai.served
    ]
    [usage] = usages
    entry = PRICES.get(usage.model)
    if model is None:
        assert entry is None, "Codex's default is priced now: this test's unpriced case needs another model"
        context = {"limit": DEFAULT_WINDOW, "limit_source": "default"}
    else:
        assert entry is not None
        context = {"limit": entry["context_window"], "limit_source": "model_table"}
    prompt = openai.served[0][1].input
    want = expected(
        "codex",
        usages,
        context={"tokens": prompt, "ratio": round(prompt / context["limit"], 6), **context},
        cost_source="unknown" if entry is None else "price_table",
    )
    session = await session_as(pipeline, session_id, want)
    assert (session["cost_usd"] is None) == (entry is None)  # unknown is null, never 0


# ---------------------------------------------------------------- Gemini CLI


@pytest.fixture
def gemini() -> Iterator[GeminiStub]:
    stub = GeminiStub(free_port())
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


def gemini_result(stdout: str) -> dict[str, Any]:
    """The CLI's JSON result (an exporter's error may follow it on stdout)."""
    result, _ = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])
    assert isinstance(result, dict)
    return result


async def test_gemini_cli_over_otlp_http(pipeline: Pipeline, gemini: GeminiStub, tmp_path: Path) -> None:
    await gemini_session(pipeline, gemini, tmp_path, pipeline.url("ingest"), "http")


async def test_gemini_cli_over_otlp_grpc(pipeline: Pipeline, gemini: GeminiStub, tmp_path: Path) -> None:
    await gemini_session(pipeline, gemini, tmp_path, f"http://127.0.0.1:{pipeline.ports['grpc']}", "grpc")


async def gemini_session(
    pipeline: Pipeline, gemini: GeminiStub, tmp_path: Path, endpoint: str, protocol: str
) -> None:
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    settings = {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(
        home,
        GEMINI_API_KEY="AIza-stub",
        GOOGLE_GEMINI_BASE_URL=gemini.url,
        GEMINI_CLI_TRUST_WORKSPACE="true",
        GEMINI_TELEMETRY_ENABLED="true",
        GEMINI_TELEMETRY_TARGET="local",
        GEMINI_TELEMETRY_OTLP_ENDPOINT=endpoint,
        GEMINI_TELEMETRY_OTLP_PROTOCOL=protocol,
    )
    out = run([str(installed(GEMINI)), "-p", "say hi", "--output-format", "json"], work, env)
    result = gemini_result(out)
    session_id = result["session_id"]

    # The router's call (generateContent) and the main call (streamed).
    assert [s.streamed for s in gemini.served] == [False, True]
    # Gemini's definitions: prompt includes the cached part, thoughts are not in candidates.
    usages = [
        Usage(
            s.model,
            s.usage.prompt - s.usage.cached,
            s.usage.candidates + s.usage.thoughts,
            cache_read=s.usage.cached,
            reasoning=s.usage.thoughts,
        )
        for s in gemini.served
    ]
    main = gemini.served[1]
    assert all(PRICES.get(u.model) for u in usages), "the Gemini CLI's models are priced in the table"
    window = PRICES[main.model]["context_window"]
    want = expected(
        "gemini_cli",
        usages,
        main=lambda i: gemini.served[i].streamed,
        context={
            "tokens": main.usage.prompt,
            "limit": window,
            "limit_source": "model_table",
            "ratio": round(main.usage.prompt / window, 6),
        },
        cost_source="price_table",
    )
    await session_as(pipeline, session_id, want)
    # What the CLI itself counted agrees with the stub.
    stats = result["stats"]["models"]
    assert {m: stats[m]["api"]["totalRequests"] for m in stats} == {s.model: 1 for s in gemini.served}
