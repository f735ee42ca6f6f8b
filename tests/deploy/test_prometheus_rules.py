"""The alert and recording rules (k8s/tokentide/files/prometheus/alerts.yml): valid for
Prometheus (`promtool check rules`), their unit tests pass (`promtool test rules`), every rule
has unit tests that see it fire and stay quiet, and every tokentide metric they use exists."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import ALERTS, PROMETHEUS_FILES, exposed_metric_names, promtool, tokentide_names

TESTS = sorted((PROMETHEUS_FILES / "tests").glob("*.yml"))


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *map(str, args)], capture_output=True, text=True, check=False, timeout=120
    )


def test_promtool_check_rules() -> None:
    result = run("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_test_rules() -> None:
    assert TESTS, "no unit tests in files/prometheus/tests/"
    result = run("test", "rules", *TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS), result.stdout


def test_every_rule_has_unit_tests() -> None:
    """Each alert is seen firing and seen quiet; each recording rule's value is checked."""
    firing: set[str] = set()
    quiet: set[str] = set()
    recorded: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
            for check in case.get("promql_expr_test", []):
                if check.get("exp_samples"):
                    recorded.add(check["expr"].strip())
    alerts = {r["alert"] for r in rules() if "alert" in r}
    records = {r["record"] for r in rules() if "record" in r}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"
    assert records - recorded == set(), "recording rules whose value is never tested"


def test_rules_name_only_metrics_that_exist() -> None:
    """Catches a renamed metric: a rule on a metric nobody exposes never fires."""
    samples = exposed_metric_names()
    families = exposed_metric_names(family_names=True)
    for rule in rules():
        name = rule.get("alert") or rule.get("record")
        missing = tokentide_names(rule["expr"]) - samples
        assert not missing, f"{name}: no service exposes {missing}"
        prose = " ".join(rule.get("annotations", {}).values())
        missing = tokentide_names(prose) - families
        assert not missing, f"{name}: its annotations name metrics nobody exposes: {missing}"


def test_every_alert_has_severity_and_summary() -> None:
    for rule in rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
