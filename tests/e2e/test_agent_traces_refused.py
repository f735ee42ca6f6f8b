"""What the real Claude Code CLI does when ingest refuses its traces (the default: tokentide
consumes no spans, so ``/v1/traces`` answers 404 rather than accepting and dropping them).

OTLP exporters retry only 429, 502, 503 and 504 (otlp-http.md); a 404 must make Claude Code's
exporter drop the batch and carry on, one attempt per batch, with its logs and metrics still
exported. A control run against a receiver answering 503 shows the same exporter does retry a
retryable answer, so the single attempt is its decision and not a lack of time to retry.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.anthropic_stub import AnthropicStub
from tests.support.processes import ServiceProcess, clean_env, metric
from tests.support.services import free_port, kafka_bootstrap, missing_tool, unique

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CLAUDE = ROOT / ".local" / "claude-code" / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """One ingest process with the default settings (traces refused), open mode."""
    port = free_port()
    env = clean_env(
        KAFKA_BOOTSTRAP=kafka_bootstrap(),
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_TOPIC_PREFIX=unique("tr") + ".",
        TOKENTIDE_INGEST_PORT=str(port),
        TOKENTIDE_GRPC_PORT=str(free_port()),
    )
    service = ServiceProcess("ingest", port, env, tmp_path_factory.mktemp("ingest") / "ingest.log")
    service.start().wait_ready()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def stub() -> Iterator[AnthropicStub]:
    model = AnthropicStub(free_port())
    model.start()
    try:
        yield model
    finally:
        model.stop()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers ``/v1/traces`` with the server's ``traces_status``, anything else 200; counts."""

    server: _RecordingServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status = self.server.traces_status if self.path == "/v1/traces" else 200
        with self.server.lock:
            self.server.paths.append(self.path)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's signature)
        return None


class _RecordingServer(http.server.ThreadingHTTPServer):
    def __init__(self, port: int, traces_status: int) -> None:
        super().__init__(("127.0.0.1", port), _Recorder)
        self.traces_status = traces_status
        self.paths: list[str] = []
        self.lock = threading.Lock()


def run_claude(endpoint: str, stub: AnthropicStub, workdir: Path) -> None:
    """One ``claude -p`` turn with every signal exported (traces included) to ``endpoint``.

    Spans are exported at exit only (a 60 s interval), so the run makes exactly one batch.
    """
    if not CLAUDE.exists():
        missing_tool(f"{CLAUDE} is missing: run `bash scripts/install-claude-code.sh` (make install does)")
    project = workdir / "project"
    project.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENTIDE_", "OTEL_", "ANTHROPIC_"))}
    env.update(
        HOME=str(workdir / "home"),
        ANTHROPIC_BASE_URL=stub.url,
        ANTHROPIC_API_KEY="sk-ant-stub",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        CLAUDE_CODE_ENABLE_TELEMETRY="1",
        CLAUDE_CODE_ENHANCED_TELEMETRY_BETA="1",  # Claude Code's spans
        OTEL_LOGS_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_TRACES_EXPORT_INTERVAL="60000",
        OTEL_LOGS_EXPORT_INTERVAL="60000",
    )
    done = subprocess.run(
        [str(CLAUDE), "-p", "hello", "--output-format", "json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"claude: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_claude_code_drops_a_refused_trace_batch_and_keeps_exporting(
    ingest: ServiceProcess, stub: AnthropicStub, tmp_path: Path
) -> None:
    run_claude(ingest.url, stub, tmp_path)
    exposition = httpx.get(ingest.url + "/metrics", timeout=10).text
    requests = "tokentide_ingest_requests_total"
    # One batch, one attempt: the 404 was not retried.
    assert metric(exposition, requests, {"signal": "traces", "status": "404"}) == 1
    assert metric(exposition, requests, {"signal": "traces", "status": "200"}) == 0
    assert metric(exposition, requests, {"signal": "logs", "status": "200"}) >= 1
    assert metric(exposition, "tokentide_ingest_rejects_total", {"reason": "signal_not_accepted"}) == 1


def test_the_same_exporter_retries_a_retryable_answer(stub: AnthropicStub, tmp_path: Path) -> None:
    """Control: answered 503, the one batch of spans is sent again (so 1 attempt above is the
    exporter obeying the 404, not a process that exited before it could retry)."""
    server = _RecordingServer(free_port(), traces_status=503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        run_claude(f"http://127.0.0.1:{server.server_address[1]}", stub, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert server.paths.count("/v1/traces") >= 2, server.paths
    assert "/v1/logs" in server.paths
