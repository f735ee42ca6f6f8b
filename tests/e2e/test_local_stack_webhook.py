"""`make up`'s stack (scripts/stack.py's own functions) runs every service the README documents,
the notifier included, and a webhook added with ``tokentide admin webhook add`` fires on it.

The stack under test is a second one beside whatever runs on the default ports: its own state
directory (``TOKENTIDE_STACK_DIR``), service ports, topic prefix, consumer groups and database,
on the shared Kafka and PostgreSQL (``KAFKA_BOOTSTRAP`` / ``DATABASE_URL``, which the stack only
checks). Everything it starts is stopped by ``stop_started``; nothing else is touched.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from notify.core import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.captures import FIXTURES
from tests.support.services import (
    admin_database_url,
    create_database,
    drop_database,
    free_port,
    kafka_bootstrap,
    unique,
)

pytestmark = pytest.mark.e2e

STACK = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"
README = Path(__file__).resolve().parents[2] / "README.md"
PORT_VARIABLES = (
    "TOKENTIDE_INGEST_PORT",
    "TOKENTIDE_GRPC_PORT",
    "TOKENTIDE_STREAMS_PORT",
    "TOKENTIDE_SINK_PORT",
    "TOKENTIDE_DASHBOARD_PORT",
    "TOKENTIDE_NOTIFY_PORT",
)
#: A Claude Code logs export (captured) whose api_request is made to fill 87% of the 200k window.
LOGS = FIXTURES / "claude-code" / "stub-text-json" / "0001_v1_logs.json"


class _Hook(http.server.BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received.append((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base's signature)
        return None


class _Receiver(http.server.ThreadingHTTPServer):
    """A webhook endpoint on a free loopback port; keeps every POST (headers, body)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), _Hook)
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/tokentide"


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """scripts/stack.py loaded with a second stack's environment (set before the import: the
    state directory is read then)."""
    admin_url = admin_database_url()
    database = create_database(admin_url)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap())
    monkeypatch.setenv("DATABASE_URL", database)
    monkeypatch.setenv("TOKENTIDE_STACK_DIR", str(tmp_path / "stack"))
    monkeypatch.setenv("TOKENTIDE_OPEN_MODE", "1")
    monkeypatch.setenv("TOKENTIDE_TOPIC_PREFIX", unique("st") + ".")
    monkeypatch.setenv("TOKENTIDE_STREAMS_APP_ID", unique("st-streams-"))
    monkeypatch.setenv("TOKENTIDE_SINK_GROUP_ID", unique("st-sink-"))
    monkeypatch.setenv("TOKENTIDE_NOTIFY_GROUP_ID", unique("st-notify-"))
    monkeypatch.setenv("TOKENTIDE_NOTIFY_POLL_S", "0.5")
    for variable in PORT_VARIABLES:
        monkeypatch.setenv(variable, str(free_port()))
    spec = importlib.util.spec_from_file_location(unique("tokentide_stack_"), STACK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look themselves up here
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)
        drop_database(admin_url, database)


def claude_logs_near_full(session_id: str) -> bytes:
    document: dict[str, Any] = json.loads(LOGS.read_text())
    for resource in document["resourceLogs"]:
        for scope in resource["scopeLogs"]:
            for record in scope["logRecords"]:
                for attribute in record["attributes"]:
                    if attribute["key"] == "session.id":
                        attribute["value"] = {"stringValue": session_id}
                    if attribute["key"] == "input_tokens":
                        attribute["value"] = {"intValue": 170_000}  # + 4,800 cached = 87%
    return json.dumps(document).encode()


def tokentide(stack: ModuleType, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(stack.TOKENTIDE_BIN), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def test_the_stack_runs_every_documented_service(stack: ModuleType) -> None:
    """The services `make up` starts are those the README's process table lists."""
    section = README.read_text().split("## Processes, ports and settings", 1)[1].split("\n## ", 1)[0]
    commands = {
        cells[2].strip().strip("`")
        for line in section.splitlines()
        if len(cells := line.split("|")) > 3 and cells[2].strip().startswith("`tokentide ")
    }
    # `tokentide <one word>`: a process; `tokentide migrate` is the one-shot job `up` runs first.
    processes = {c.split()[1] for c in commands if len(c.split()) == 2} - {"migrate"}
    assert processes == {"ingest", "streams", "sink", "notify", "dashboard"}
    assert {s.name for s in stack.SERVICES} == processes
    assert {s.port_variable for s in stack.SERVICES} | {"TOKENTIDE_GRPC_PORT"} == set(PORT_VARIABLES)


def test_a_webhook_added_with_the_admin_cli_fires_on_the_local_stack(
    stack: ModuleType, receiver: _Receiver
) -> None:
    infra = stack.start_infra()
    assert infra.started == []  # the shared Kafka and PostgreSQL are only checked
    started: list[str] = []
    try:
        started = stack.start_services(infra)
        assert set(started) == {s.name for s in stack.SERVICES} >= {"notify"}
        status = {line.split()[0]: line.split()[1] for line in stack.status_lines()}
        assert all(status[s.name] == "running" for s in stack.SERVICES), status

        env = stack.service_env(infra)
        # Open mode's tenant, `default`, exists from the first migration on.
        secret = tokentide(
            stack, env, "admin", "webhook", "add", "--tenant", "default", "--url", receiver.url
        ).strip()
        assert secret.startswith("whsec_")

        session_id = str(uuid.uuid4())
        ingest = next(s for s in stack.SERVICES if s.name == "ingest")
        response = httpx.post(
            f"{ingest.url}/v1/logs",
            content=claude_logs_near_full(session_id),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text

        deadline = time.monotonic() + 120
        while not receiver.received:
            if time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {s.name}\n" + (stack.LOG_DIR / f"{s.name}.log").read_text()[-3000:]
                    for s in stack.SERVICES
                )
                pytest.fail(f"no webhook delivery after 120 s\n{logs}")
            time.sleep(0.3)
    finally:
        stack.stop_started(started)
    assert not any(stack.running_pid(s.name) for s in stack.SERVICES)

    [(headers, body)] = receiver.received
    assert verify_signature(
        secret, body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), time.time()
    )
    payload = json.loads(body)
    assert (payload["tenant"], payload["session_id"], payload["kind"]) == (
        "default",
        session_id,
        "context_warning",
    )
    assert payload["tokens"] == 170_000 + 4_500 + 300
