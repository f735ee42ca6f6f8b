#!/usr/bin/env python3
"""Run a command once per storage layout, back to back: `make bench-sink` and
`make bench-dashboard` run under `stack.py run --timescale` through this.

    python3 scripts/each_layout.py CMD [ARGS...]

First with DATABASE_URL as given and TOKENTIDE_DB_LAYOUT=plain, then (when
TIMESCALE_DATABASE_URL is set) with DATABASE_URL=$TIMESCALE_DATABASE_URL and
TOKENTIDE_DB_LAYOUT=timescale, each run under a heading naming its layout; without
TIMESCALE_DATABASE_URL it says so and the second run is left out (an error under CI=true).
Exit code: the first failing run's, else 0. Standard library only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

TRUTHY = frozenset({"1", "true", "yes", "on", "t", "y"})


def main(argv: Sequence[str]) -> int:
    if not argv:
        print("usage: each_layout.py CMD [ARGS...]", file=sys.stderr)
        return 2
    timescale = os.environ.get("TIMESCALE_DATABASE_URL", "").strip()
    runs: list[tuple[str, dict[str, str]]] = [("plain", {**os.environ, "TOKENTIDE_DB_LAYOUT": "plain"})]
    if timescale:
        runs.append(
            ("timescale", {**os.environ, "DATABASE_URL": timescale, "TOKENTIDE_DB_LAYOUT": "timescale"})
        )
    codes = []
    for layout, env in runs:
        print(f"\n== {layout} layout: {' '.join(argv)}", flush=True)
        codes.append(subprocess.call(list(argv), env=env))
    if not timescale:
        print("\n== timescale layout: not run (TIMESCALE_DATABASE_URL is not set)", flush=True)
        if os.environ.get("CI", "").strip().lower() in TRUTHY:
            codes.append(1)
    return next((code for code in codes if code), 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
