"""Where a benchmark's py-spy profile spends its samples (not a test).

Reads the raw files ``BENCH_PYSPY`` makes ``bench/streams.py`` and ``bench/ingest.py`` write
(py-spy's raw format: one collapsed stack per line, frames separated by ``;``, then the count)
and prints each function's share of all samples: inclusive (the function or anything it
called was running) and its own (it was the innermost frame).

    .venv/bin/python bench/profile.py streams-profile.txt [--top 40]

py-spy shows a coroutine's frames from the task's own entry point, not from the event loop, so
the inclusive shares of the loop's frames undercount; read a path's share from its own
function (``Ingestor.export``, ``Processor.process``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

#: ``name (path:line)``, as py-spy writes a frame.
FRAME = re.compile(r"^(?P<name>.*) \((?P<path>[^:()]*)(?::\d+)?\)$")
#: A sample in which py-spy saw no Python frame (the process was in native code).
NO_FRAME = "(no Python frame)"


def function(frame: str) -> str:
    """``Processor.process (streams/processor.py:42)`` -> ``Processor.process (processor.py)``."""
    match = FRAME.match(frame)
    if match is None:
        return frame
    return f"{match['name']} ({match['path'].rsplit('/', 1)[-1]})"


def shares(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, inclusive count by function, own count by function)."""
    total, inclusive, own = 0, Counter[str](), Counter[str]()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        functions = [function(frame) for frame in stack.split(";")] if stack else [NO_FRAME]
        inclusive.update(dict.fromkeys(functions, samples))
        own[functions[-1]] += samples
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    total, inclusive, own = shares(args.profile.read_text().splitlines())
    if not total:
        raise SystemExit(f"{args.profile}: no samples")
    lines = [f"{args.profile}: {total:,} samples"]
    for title, counts in (("inclusive", inclusive), ("own", own)):
        lines.append(f"--- {title}")
        lines.extend(f"{100 * count / total:5.1f}%  {name}" for name, count in counts.most_common(args.top))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
