"""The whole pipeline as real processes (``tokentide ingest|streams|sink|dashboard``).

Each test pipeline gets its own topic prefix, consumer groups, database, data directory
and ports, so it never sees another run's data (nor a `make up` stack on the same broker).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx

from tests.support.services import free_port, unique
from tokentide.topics import Signal, Topics

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))
SERVICES = ("ingest", "streams", "sink", "dashboard")


class PipelineError(RuntimeError):
    """The pipeline did not start, or did not reach the state a caller waited for."""


@dataclass
class Pipeline:
    kafka_bootstrap: str
    database_url: str
    workdir: Path
    prefix: str = field(default_factory=lambda: unique("t") + ".")
    ports: dict[str, int] = field(default_factory=lambda: {s: free_port() for s in (*SERVICES, "grpc")})
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def topics(self) -> Topics:
        return Topics(self.prefix)

    @property
    def streams_group(self) -> str:
        return f"{self.prefix}streams"

    @property
    def sink_group(self) -> str:
        return f"{self.prefix}sink"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
        env.update(
            KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            DATABASE_URL=self.database_url,
            TOKENTIDE_OPEN_MODE="1",
            TOKENTIDE_LOG_LEVEL="INFO",
            TOKENTIDE_TOPIC_PREFIX=self.prefix,
            TOKENTIDE_STREAMS_APP_ID=self.streams_group,
            TOKENTIDE_SINK_GROUP_ID=self.sink_group,
            TOKENTIDE_DATA_DIR=str(self.workdir / "streams"),
            TOKENTIDE_INGEST_PORT=str(self.ports["ingest"]),
            TOKENTIDE_GRPC_PORT=str(self.ports["grpc"]),
            TOKENTIDE_STREAMS_PORT=str(self.ports["streams"]),
            TOKENTIDE_SINK_PORT=str(self.ports["sink"]),
            TOKENTIDE_DASHBOARD_PORT=str(self.ports["dashboard"]),
            TOKENTIDE_BATCH_LINGER_MS="50",
        )
        return env

    def log_path(self, service: str) -> Path:
        return self.workdir / f"{service}.log"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start every service and wait until each answers ``/readyz`` with 200."""
        env = self.env()
        for service in SERVICES:
            log = self.log_path(service).open("ab")
            self.processes[service] = subprocess.Popen(
                [TOKENTIDE, service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        pending = set(SERVICES)
        while pending:
            for service in sorted(pending):
                if self.processes[service].poll() is not None:
                    self.fail(f"{service} exited with {self.processes[service].returncode} during start")
                try:
                    if httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200:
                        pending.discard(service)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                self.fail(f"not ready after {timeout_s}s: {', '.join(sorted(pending))}")
            time.sleep(0.3)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every service, SIGKILL the ones still running after ``timeout_s``."""
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def logs(self, lines: int = 60) -> str:
        out = []
        for service in SERVICES:
            path = self.log_path(service)
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"----- {service} -----\n" + "\n".join(text))
        return "\n".join(out)

    def fail(self, message: str) -> NoReturn:
        """Raise with the tail of every service's log attached."""
        raise PipelineError(f"{message}\n{self.logs()}")

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir / "streams", ignore_errors=True)

    def raw_topics(self) -> list[str]:
        return [self.topics.raw(s) for s in Signal]
