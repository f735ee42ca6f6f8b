"""The sink's PostgreSQL writer alone: one batch of 40,000 ``api_request``-like events written
into a fresh migrated database, four times, wall and CPU seconds per write (not a test).

No Kafka: what the writer costs (row building, COPY, upserts, positions), apart from fetching
and decoding. ``DATABASE_URL`` (an admin-capable URL, as the tests use) says where.

    .venv/bin/python bench/sink_writer.py [--events 40000] [--rounds 4]

To compare with another version, run it with that checkout first on the path:
``TOKENTIDE_TREE=/path/to/checkout PYTHONPATH=/path/to/checkout .venv/bin/python bench/sink_writer.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(os.environ.get("TOKENTIDE_TREE") or Path(__file__).resolve().parents[1])
sys.path.insert(0, str(ROOT))

from sinks.base import Batch  # noqa: E402
from sinks.postgres.writer import PostgresWriter  # noqa: E402
from tests.support.services import admin_database_url, create_database, drop_database  # noqa: E402
from tokentide.records import Event, EventKind, Tokens  # noqa: E402


def events(count: int, first: int, now_ns: int) -> list[Event]:
    """Events shaped like Claude Code's api_request: typed columns and a dozen attributes."""
    out = []
    for i in range(count):
        session = f"s{i % 200}"
        out.append(
            Event(
                tenant="bench",
                session_id=session,
                agent="claude_code",
                event_id=f"e{first + i}",
                name="api_request",
                kind=EventKind.USAGE,
                time_ns=now_ns - i * 1000,
                sequence=i,
                user_id="u-1",
                model="claude-opus-4-8",
                query_source="repl_main_thread",
                duration_ms=812.0,
                tokens=Tokens(input=1200, output=42, cache_read=4500, cache_creation=300),
                cost_nanos=11_175_000,
                cost_source="agent",
                attributes={
                    "model": "claude-opus-4-8",
                    "input_tokens": 1200,
                    "output_tokens": 42,
                    "cache_read_tokens": 4500,
                    "cache_creation_tokens": 300,
                    "cost_usd": 0.011175,
                    "query_source": "repl_main_thread",
                    "session.id": session,
                    "user.id": "u-1",
                    "terminal.type": "xterm-256color",
                    "event.sequence": i,
                    "duration_ms": 812,
                },
            )
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    admin = admin_database_url()
    dsn = create_database(admin)
    try:
        writer = PostgresWriter(dsn)
        now_ns = time.time_ns()
        print(f"{ROOT}: {args.events:,} events per write")
        for n in range(args.rounds):
            batch = Batch(events=events(args.events, n * args.events, now_ns))
            wall, cpu = time.perf_counter(), time.process_time()
            result = await writer.write(batch)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if result.written.get("events") != args.events:
                raise SystemExit(f"wrote {result.written}, expected {args.events} events")
            print(f"  {wall:.2f} s ({args.events / wall:,.0f} rows/s), writer process CPU {cpu:.2f} s")
        await writer.close()
    finally:
        drop_database(admin, dsn)


if __name__ == "__main__":
    asyncio.run(main())
