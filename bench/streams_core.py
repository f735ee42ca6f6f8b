"""The stream stage's pure core without Kafka: CPU seconds per event or point (not a test).

The backlog of ``bench/streams.py`` (the captured Claude Code logs export of 9 events and
metrics export of 15 points, renumbered per session; 200 sessions x 10 exports of each) goes
through :class:`streams.processor.Processor` as the worker drives it: decoded states kept in
memory, the changed ones encoded once per batch of 500 raw messages, the outputs merged per
batch and encoded. Reports events+points per CPU second of this process (process time, so a
busy machine slows it less than wall time) and the encoded bytes per record.

    .venv/bin/python bench/streams_core.py [--rounds 3] [--profile cumtime] [--without-normalising]

``--without-normalising`` decodes and normalises every message before each round, outside the
time, so the round measures what the stage costs beyond the normaliser: the ceiling a faster
(compiled) normaliser could reach, before any Kafka work.

To compare with another version, run the same file with that checkout first on the path:
``TOKENTIDE_TREE=/path/to/checkout .venv/bin/python bench/streams_core.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("TOKENTIDE_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from bench.streams import EVENTS_PER_EXPORT, LOGS, POINTS_PER_EXPORT, metrics_for  # noqa: E402
from streams.normalise import default_registry  # noqa: E402
from streams.processor import OutputMerger, Processor  # noqa: E402
from tests.support.captures import export_for  # noqa: E402
from tokentide.records import EventBatch, PointBatch  # noqa: E402

try:  # the sink's rows, built by the stream stage (decision 44; older versions have none)
    from sinks.postgres.rows import with_rows
except ImportError:
    with_rows = None
from tokentide.topics import HEADER_RECEIVED_AT, HEADER_SESSION, HEADER_SIGNAL, HEADER_TENANT  # noqa: E402

BATCH = 500


def wire(part: Any) -> bytes:
    """What the worker sends for ``part`` (with the sink's rows where this version builds them)."""
    if with_rows is not None and isinstance(part, EventBatch | PointBatch):
        part = with_rows(part)
    return bytes(part.to_bytes())


def backlog(sessions: int, exports: int) -> list[tuple[str, str, bytes]]:
    out = []
    for n in range(exports):
        for s in range(sessions):
            sid = f"bench-{s}"
            out.append(("logs", sid, export_for(LOGS, sid, n)))
            out.append(("metrics", sid, metrics_for(sid, n)))
    return out


class Prenormalised(Processor):
    """A processor whose :meth:`normalise` hands out results computed before the round."""

    def __init__(self, messages: list[tuple[str, str, bytes]]) -> None:
        super().__init__(default_registry(), 128)
        done = [super(Prenormalised, self).normalise(_headers(s, sid), v) for s, sid, v in messages]
        self._next = iter(done)

    def normalise(self, headers: dict[str, str], value: bytes) -> Any:
        return next(self._next)


def _headers(signal: str, session: str) -> dict[str, str]:
    return {
        HEADER_TENANT: "default",
        HEADER_SIGNAL: signal,
        HEADER_RECEIVED_AT: str(time.time_ns()),
        HEADER_SESSION: session,
    }


def run(messages: list[tuple[str, str, bytes]], processor: Processor | None = None) -> int:
    """Everything through a fresh processor (or ``processor``); returns the bytes encoded
    (states and outputs)."""
    processor = processor or Processor(default_registry(), 128)
    states: dict[bytes, Any] = {}
    dirty: dict[bytes, Any] = {}

    def put(key: bytes, stored: Any) -> None:
        states[key] = dirty[key] = stored

    merger = OutputMerger()
    encoded = 0
    for i, (signal, session, value) in enumerate(messages):
        processed = processor.process(
            headers=_headers(signal, session), value=value, get_state=states.get, put_state=put
        )
        for output in processed.outputs:
            merger.add(output)
        if i % BATCH == BATCH - 1 or i == len(messages) - 1:
            encoded += sum(len(stored.to_bytes()) for stored in dirty.values())
            dirty.clear()
            for output in merger.drain():
                for part in (output.events, output.points, output.signals, output.rollups, output.state):
                    if part is not None:
                        encoded += len(wire(part))
    return encoded


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--exports", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", metavar="SORT", help="one round under cProfile, sorted by SORT")
    parser.add_argument(
        "--without-normalising",
        action="store_true",
        help="normalise before each round, outside the time (the rest of the stage's ceiling)",
    )
    args = parser.parse_args()
    messages = backlog(args.sessions, args.exports)
    records = args.sessions * args.exports * (EVENTS_PER_EXPORT + POINTS_PER_EXPORT)
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, messages, Prenormalised(messages) if args.without_normalising else None)
        pstats.Stats(profile).sort_stats(args.profile).print_stats(30)
        return
    print(f"{ROOT}: {records:,} events+points per round")
    if args.without_normalising:
        print("  normalised before each round, outside the time")
    for _ in range(args.rounds):
        processor = Prenormalised(messages) if args.without_normalising else None
        started = time.process_time()
        encoded = run(messages, processor)
        cpu = time.process_time() - started
        rate, size = records / cpu, encoded / records
        print(f"  {rate:,.0f} events+points per CPU second, {size:,.0f} bytes encoded per record")


if __name__ == "__main__":
    main()
