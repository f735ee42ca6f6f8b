"""Single tokentide services as real processes (``tokentide ingest``, ``tokentide dashboard``...),
each with ports, a topic prefix and a log file of its own, for tests that need a few of one
kind (several ingest replicas on one database) or a closed-mode service on its own.

:class:`tests.support.pipeline.Pipeline` starts the whole pipeline in open mode; this starts
exactly what a test asks for, with the environment it gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import httpx

TOKENTIDE = str(Path(sys.executable).with_name("tokentide"))


class ServiceError(RuntimeError):
    """The process did not start, or exited while a test needed it."""


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without any ``TOKENTIDE_*`` / ``OTEL_*`` variable, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKENTIDE_", "OTEL_"))}
    env.update(overrides)
    return env


@dataclass
class ServiceProcess:
    """``tokentide <command>`` with ``env``; ready when ``GET <url><ready_path>`` answers 200."""

    command: str
    port: int
    env: dict[str, str]
    log: Path
    ready_path: str = "/readyz"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [TOKENTIDE, self.command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is None or self.process.poll() is not None:
                self.fail(f"tokentide {self.command} exited during start")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.fail(f"tokentide {self.command} not ready after {timeout_s}s")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout_s``; safe to call twice."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:] if self.log.exists() else []
        return f"----- {self.command} ({self.log.name}) -----\n" + "\n".join(text)

    def fail(self, message: str) -> NoReturn:
        raise ServiceError(f"{message}\n{self.tail()}")


def start_all(services: list[ServiceProcess], timeout_s: float = 90.0) -> None:
    """Start every service, then wait for each (they start in parallel); stop all on failure."""
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready(timeout_s)
    except BaseException:
        for service in services:
            service.stop()
        raise


def metric(exposition: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample of a Prometheus text exposition (0.0 when absent)."""
    want = name
    if labels:
        want += "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in exposition.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
