"""Graceful shutdown: a request in flight when SIGTERM arrives is finished and acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.captures import FIXTURES
from tests.support.services import free_port, read_all, unique
from tokentide.topics import Signal, Topics

pytestmark = pytest.mark.integration

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
BODY = (FIXTURES / "claude-code" / "stub-text-protobuf" / "0001_v1_logs.pb").read_bytes()


def test_sigterm_drains_the_request_in_flight(bootstrap: str, tmp_path: Path) -> None:
    prefix, port = unique("drain") + ".", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        TOKENTIDE_OPEN_MODE="1",
        TOKENTIDE_TOPIC_PREFIX=prefix,
        TOKENTIDE_INGEST_PORT=str(port),
        TOKENTIDE_GRPC_PORT="0",
        TOKENTIDE_SHUTDOWN_GRACE_S="20",
    )
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [TOKENTIDE, "ingest"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(log.read_text())

        # A chunked export (as Claude Code sends them), cut in two around the SIGTERM.
        conn = socket.create_connection(("127.0.0.1", port), timeout=30)
        conn.sendall(
            b"POST /v1/logs HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        half = len(BODY) // 2
        conn.sendall(b"%x\r\n%s\r\n" % (half, BODY[:half]))
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        # The listener is closed: nobody new gets in while the old request finishes.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        rest = BODY[half:]
        conn.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        response = conn.recv(65536)
        conn.close()
        assert response.startswith(b"HTTP/1.1 200"), response
        # uvicorn re-raises the SIGTERM it caught once shutdown completed, so the exit
        # status tells a supervisor why the process ended.
        assert process.wait(30) in (0, -signal.SIGTERM), log.read_text()
        assert "Application shutdown complete" in log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    [message] = asyncio.run(read_all(bootstrap, Topics(prefix).raw(Signal.LOGS)))
    assert message.value == BODY  # type: ignore[attr-defined]
