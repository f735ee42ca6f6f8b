"""Cost per message and stored state size against the age of a session (not a test).

One long Claude Code session (the captured ``stub-tool-traces-protobuf`` logs export, 9 events,
and metrics export, 15 points, renumbered per export) is applied message by message through
the stream stage's pure core (:class:`streams.processor.Processor`), as the worker applies it,
with the state serialised after every message as the worker's commit does. Printed per slice
of the session: events so far, state bytes, and the median cost of a message in that slice, so
that a cost growing with the session's age shows as a rising column. No Kafka needed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streams import EVENTS_PER_EXPORT, LOGS, metrics_for  # noqa: E402
from streams.normalise import default_registry  # noqa: E402
from streams.processor import Processor  # noqa: E402
from streams.state import StoredSession  # noqa: E402
from tests.support.captures import export_for  # noqa: E402
from tokentide.settings import StreamsSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000, help="events in the session")
    parser.add_argument("--slices", type=int, default=10)
    args = parser.parse_args()
    exports = -(-args.events // EVENTS_PER_EXPORT)
    sid = "bench-long-session"
    messages = []
    for n in range(exports):
        for signal, value in (("logs", export_for(LOGS, sid, n)), ("metrics", metrics_for(sid, n))):
            headers = {
                "tt-tenant": "default",
                "tt-signal": signal,
                "tt-received-at-ns": str(time.time_ns()),
                "tt-session": sid,
            }
            messages.append((headers, value))
    processor = Processor(default_registry(), StreamsSettings().dedup_window)
    table: dict[bytes, StoredSession] = {}
    costs: list[float] = []
    sizes: list[int] = []
    events: list[int] = []
    for headers, value in messages:
        started = time.perf_counter()
        processed = processor.process(
            headers=headers, value=value, get_state=table.get, put_state=table.__setitem__
        )
        encoded = [stored.to_bytes() for stored in table.values()]  # the commit's state write
        costs.append(time.perf_counter() - started)
        sizes.append(sum(map(len, encoded)))
        events.append(processed.outputs[0].state.events)
    step = len(messages) // args.slices
    print(f"{args.events} events in {len(messages)} messages (logs + metrics exports), one session")
    print("  events so far   state bytes   median us/message")
    for i in range(args.slices):
        chunk = slice(i * step, (i + 1) * step)
        median_us = 1e6 * statistics.median(costs[chunk])
        print(f"  {events[chunk.stop - 1]:>13,}   {sizes[chunk.stop - 1]:>11,}   {median_us:>17.0f}")
    first, last = statistics.median(costs[:step]), statistics.median(costs[-step:])
    print(f"last slice / first slice: {last / first:.2f}x; largest state {max(sizes):,} bytes")


if __name__ == "__main__":
    main()
