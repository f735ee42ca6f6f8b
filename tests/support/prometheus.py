"""Prometheus helpers of the deployment tests: promtool, and the metric names the code exposes.

promtool comes from Debian's ``prometheus`` package (``scripts/install-system-deps.sh``, which
``make install`` runs). Missing, a test that needs it fails under CI (``CI=true``) and is
skipped elsewhere, saying how to install it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.support.services import missing_tool

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_FILES = REPO / "k8s" / "tokentide" / "files" / "prometheus"
ALERTS = PROMETHEUS_FILES / "alerts.yml"
#: Recording rule names (``level:metric:operations``) and the metric names inside PromQL.
RECORDING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]*")
TOKENTIDE_NAME = re.compile(r"\btokentide_[a-z0-9_]+")


def promtool() -> str:
    """The promtool executable; the test fails when it is missing."""
    path = shutil.which("promtool")
    if path:
        return path
    return missing_tool(
        "promtool is missing: run `bash scripts/install-system-deps.sh` as root (`make install` "
        "does), or install Debian's `prometheus` package"
    )


def _families(registry: CollectorRegistry, *, family_names: bool) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        if family_names:
            names.add(family.name)
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count", "_created")}
        else:
            names.add(family.name)
    return names


def exposed_metric_names(*, family_names: bool = False) -> set[str]:
    """Every ``tokentide_*`` sample name a service's /metrics or /metrics/usage can expose
    (``family_names``: and the names of their families, e.g. a histogram's, for prose)."""
    from dashboard.usage_exporter import FAMILIES  # noqa: PLC0415 - each import is heavy
    from ingest.metrics import IngestMetrics  # noqa: PLC0415
    from sinks.base import SinkMetrics  # noqa: PLC0415
    from streams.app import StreamsMetrics  # noqa: PLC0415

    names = set(FAMILIES)
    if family_names:
        names |= {name.removesuffix("_total") for name in FAMILIES}
    for metrics in (IngestMetrics, SinkMetrics, StreamsMetrics):
        registry = CollectorRegistry()
        metrics(registry)
        names |= _families(registry, family_names=family_names)
    return names


def tokentide_names(text: str) -> set[str]:
    """The ``tokentide_*`` metric names ``text`` (PromQL or prose) mentions, recording rules aside."""
    return set(TOKENTIDE_NAME.findall(RECORDING_NAME.sub(" ", text)))
