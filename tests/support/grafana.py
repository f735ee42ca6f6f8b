"""The provisioned Grafana dashboards (k8s/tokentide/files/grafana/dashboards/*.json): their
PostgreSQL queries, and what Grafana substitutes into them (``$__timeFilter``,
``$__timeFrom()``, ``$__timeTo()``, ``$__interval_ms``, ``$tenant``, ``${session:sqlstring}``...).

Used by tests/integration/test_grafana_dashboards.py (every query runs and returns data) and
tests/integration/test_layouts_agree.py (every query returns the same on both layouts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.prometheus import REPO

GRAFANA = REPO / "k8s" / "tokentide" / "files" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "tokentide.yaml"
POSTGRES_TYPES = {"grafana-postgresql-datasource", "postgres"}
#: Grafana's $__interval for a given $__interval_ms.
INTERVALS = {60_000: "1m", 3_600_000: "1h"}

_TIME_FILTER = re.compile(r"\$__timeFilter\(([^()]+)\)")
_FORMATTED = re.compile(r"\$\{(\w+):(\w+)\}")
_BRACED = re.compile(r"\$\{(\w+)\}")
_PLAIN = re.compile(r"\$(\w+)")


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows


def datasource_type(board: dict[str, Any], target: dict[str, Any], panel: dict[str, Any]) -> str:
    ds = target.get("datasource") or panel.get("datasource") or {}
    return str(ds.get("type", ""))


def postgres_targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``panel title / refId``, target) of every PostgreSQL query of ``board``'s panels."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            if datasource_type(board, target, panel) in POSTGRES_TYPES:
                yield f"{panel['title']} / {target['refId']}", target


def prometheus_targets(board: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for panel in panels(board):
        for target in panel.get("targets", []):
            if datasource_type(board, target, panel) == "prometheus":
                yield f"{panel['title']} / {target['refId']}", target


# --------------------------------------------------------------------------- substitution


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class Grafana:
    """What Grafana substitutes into a query: time range, interval and variables' values."""

    time_from: datetime
    time_to: datetime
    interval_ms: int
    #: name -> (selected values, multi-value or "include All")
    variables: dict[str, tuple[list[str], bool]] = field(default_factory=dict)

    @staticmethod
    def timestamp(value: datetime) -> str:
        return (
            "'" + value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z'"
        )

    def value(self, name: str, fmt: str | None) -> str:
        if name not in self.variables:
            raise KeyError(f"${name} is not a template variable (or is used before it is defined)")
        values, multi = self.variables[name]
        if fmt == "sqlstring" or (fmt is None and multi):
            return ",".join(quoted(v) for v in values)
        if fmt in (None, "raw"):
            return ",".join(values)
        raise ValueError(f"unsupported variable format ${{{name}:{fmt}}}")

    def render(self, query: str) -> str:
        frm, to = self.timestamp(self.time_from), self.timestamp(self.time_to)
        out = _TIME_FILTER.sub(lambda m: f"{m[1]} BETWEEN {frm} AND {to}", query)
        out = out.replace("$__timeFrom()", frm).replace("$__timeTo()", to)
        out = out.replace("$__interval_ms", str(self.interval_ms))
        out = out.replace("$__interval", INTERVALS[self.interval_ms])
        out = _FORMATTED.sub(lambda m: self.value(m[1], m[2]), out)
        out = _BRACED.sub(lambda m: self.value(m[1], None), out)
        out = _PLAIN.sub(lambda m: self.value(m[1], None), out)
        assert "$" not in out, f"unsubstituted Grafana syntax left in:\n{out}"
        return out
