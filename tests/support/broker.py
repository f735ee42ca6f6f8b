"""A private, killable Kafka broker for fault tests.

Same jars and configuration as the local stack (scripts/stack.py), but its own ports, data
directory and cluster id, so a test can stop and restart it without disturbing the shared
broker that every other test uses.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from tests.support.services import free_port

_STACK_PATH = Path(__file__).resolve().parents[2] / "scripts" / "stack.py"


def _stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokentide_stack", _STACK_PATH)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {_STACK_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look themselves up here
    spec.loader.exec_module(module)
    return module


def _controller_free_port() -> int:
    """A port whose successor is free too (the controller listens on port + 1)."""
    for _ in range(50):
        port = free_port()
        try:
            with socket.create_server(("127.0.0.1", port + 1)):
                return port
        except OSError:
            continue
    raise RuntimeError("no two consecutive free ports found")


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


class Broker:
    """One KRaft broker+controller on 127.0.0.1; ``start`` / ``kill`` / ``start`` again."""

    def __init__(self, workdir: Path) -> None:
        self._stack = _stack()
        self.port = _controller_free_port()
        self.workdir = workdir
        self.data = workdir / "data"
        self.log = workdir / "kafka.log"
        self.properties = workdir / "server.properties"
        self.process: subprocess.Popen[bytes] | None = None
        self._java = self._stack.java_binary()
        self._stack.fetch_kafka_jars()
        self.properties.write_text(self._stack.server_properties(self.port, self.data))
        cluster_id = self._storage_tool("random-uuid").strip().splitlines()[-1]
        self._storage_tool("format", "-t", cluster_id, "-c", str(self.properties), "--ignore-formatted")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _storage_tool(self, *args: str) -> str:
        return subprocess.run(
            [self._java, "-cp", self._stack.KAFKA_CLASSPATH, "kafka.tools.StorageTool", *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the broker and wait for its ready line and its port."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    self._java,
                    *self._stack.KAFKA_JVM_OPTS,
                    f"-Dkafka.logs.dir={self.workdir}",
                    f"-Dlog4j.configuration={self._stack.KAFKA_LOG4J.as_uri()}",
                    "-cp",
                    self._stack.KAFKA_CLASSPATH,
                    "kafka.Kafka",
                    str(self.properties),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"broker exited with {self.process.returncode}:\n{self.tail()}")
            with self.log.open("rb") as log:
                log.seek(offset)
                ready = self._stack.KAFKA_READY_LINE.encode() in log.read()
            if ready and _accepts("127.0.0.1", self.port):
                return
            time.sleep(0.2)
        raise RuntimeError(f"broker not ready after {timeout_s}s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: the harshest stop; acknowledged data is in the OS page cache already."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
