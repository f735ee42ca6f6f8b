"""One ``tokentide streams`` worker as a process of its own, for fault tests.

Each worker gets its own environment (topic prefix, app id, data directory, port) and its own
process group, so a test can SIGKILL or SIGTERM it (and only it) at a moment of its choosing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.support.services import free_port

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
_MESSAGES = re.compile(r'^tokentide_streams_messages_total\{signal="[^"]*"\} ([0-9.e+]+)$', re.MULTILINE)


@dataclass
class StreamsWorker:
    """``tokentide streams`` with the given settings; ``start`` may be called again after a stop."""

    name: str
    bootstrap: str
    prefix: str
    app_id: str
    data_dir: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
        env.update(
            KAFKA_BOOTSTRAP=self.bootstrap,
            TOKENTIDE_OPEN_MODE="1",
            TOKENTIDE_LOG_LEVEL="INFO",
            TOKENTIDE_TOPIC_PREFIX=self.prefix,
            TOKENTIDE_STREAMS_APP_ID=self.app_id,
            TOKENTIDE_DATA_DIR=str(self.data_dir),
            TOKENTIDE_STREAMS_PORT=str(self.port),
            TOKENTIDE_PARTITIONS="4",
            TOKENTIDE_STORE="rocksdb://",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n===== {self.name}: start at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [TOKENTIDE, "streams"],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Wait until ``/readyz`` answers 200 (partitions assigned, tables recovered); returns seconds."""
        started = time.monotonic()
        while not self.ready():
            if not self.running():
                self.fail(f"{self.name} exited with {self.process and self.process.returncode} before ready")
            if time.monotonic() - started > timeout_s:
                self.fail(f"{self.name} not ready after {timeout_s}s")
            time.sleep(0.2)
        return time.monotonic() - started

    def messages_processed(self) -> int:
        """Raw messages this process applied or replayed (its ``/metrics`` counter), -1 if unreachable."""
        try:
            text = httpx.get(self.url + "/metrics", timeout=2).text
        except httpx.HTTPError:
            return -1
        return int(sum(float(v) for v in _MESSAGES.findall(text)))

    def kill(self) -> None:
        """SIGKILL the worker's whole process group: no flush, no commit, no clean close."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL if still running after ``timeout_s``; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode

    def logs(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return f"----- {self.name} ({self.log_path}) -----\n" + "\n".join(text[-lines:])

    def fail(self, message: str) -> NoReturn:
        pytest.fail(f"{message}\n{self.logs()}")
