"""What the benchmark scripts share."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its threads so far (Linux /proc); 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid``, in the order Linux lists them (/proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in task.read_text().split())
    return found


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` of ``pid`` and of every live descendant (all of a server's workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        todo.extend(children(current))
    return total


def start_profiler(pid: int, output: str, seconds: int) -> subprocess.Popen[bytes] | None:
    """With BENCH_PYSPY=<path of py-spy>: sample ``pid`` at 100 Hz for ``seconds`` into
    ``output`` (py-spy's raw format: one collapsed stack and its count per line); else None."""
    py_spy = os.environ.get("BENCH_PYSPY")
    if not py_spy:
        return None
    command = [py_spy, "record", "-o", output, "-f", "raw", "-r", "100", "-p", str(pid), "-d", str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
