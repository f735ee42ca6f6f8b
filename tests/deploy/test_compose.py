"""docker-compose.yml, checked without a Docker engine.

Two independent readings: the raw file against the Compose Specification's JSON schema
(``fixtures/compose-spec.json``, committed: nothing is fetched), and ``docker-compose config``
(the Compose CLI built by scripts/install-compose.sh), which interpolates the variables,
validates and normalises the file exactly as ``docker compose up`` would. Then what the
schema cannot know: dependencies and health checks, the secrets that must be set, the
variables each tokentide service gets (tokentide/settings.py's names, accepted by its settings
class), the broker settings of the local stack, and the monitoring files the chart ships.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import (
    CHART,
    COMPOSE_FILE,
    REPO,
    STREAMS_MIN_GRACE_S,
    TEST_ONLY_VARIABLES,
    build_settings,
    local_tool,
    settings_for,
    variable_names,
)
from tokentide.settings import StreamsSettings

pytestmark = pytest.mark.deploy

SCHEMA = Path(__file__).parent / "fixtures" / "compose-spec.json"
SECRETS = {
    "TOKENTIDE_DB_PASSWORD": "0123456789abcdef0123456789abcdef",
    "TOKENTIDE_REDACTION_KEY": "fedcba9876543210fedcba9876543210fedcba9876543210",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
    "TOKENTIDE_METRICS_TOKEN": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}
ONE_SHOT = {"migrate", "topics"}
TOKENTIDE_SERVICES = {"ingest", "streams", "sink", "notify", "dashboard", *ONE_SHOT}
INFRA_SERVICES = {"kafka", "timescaledb", "prometheus", "grafana"}


def raw_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def run_compose(env: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f docker-compose.yml <args>`` with exactly ``env`` (plus PATH, HOME) and
    an empty env file, so that neither this shell nor a developer's .env changes the result."""
    compose = local_tool("docker-compose", "install-compose.sh")
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    return subprocess.run(
        [str(compose), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The project as ``docker-compose config --format json`` resolves it, secrets set."""
    done = run_compose(SECRETS, "config", "--format", "json", tmp_path=tmp_path_factory.mktemp("compose"))
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = json.loads(done.stdout)
    return resolved


def tokentide_services(config: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, service in config["services"].items():
        if name in TOKENTIDE_SERVICES:
            yield name, service


# --- the file as written --------------------------------------------------------------------


def test_raw_file_matches_the_compose_spec_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(raw_compose()), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_check_catches_a_broken_file() -> None:
    """The schema check is not vacuous: a typo'd key and a wrong type are reported."""
    broken = raw_compose()
    broken["services"]["ingest"]["depends_om"] = ["kafka"]
    broken["services"]["kafka"]["ports"] = "9092:9092"
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    messages = " ".join(e.message for e in validator.iter_errors(broken))
    assert "depends_om" in messages
    assert "'9092:9092' is not of type 'array'" in messages


def test_services_and_one_image() -> None:
    services = raw_compose()["services"]
    assert set(services) == TOKENTIDE_SERVICES | INFRA_SERVICES
    images = {
        (s["image"], json.dumps(s["build"], sort_keys=True))
        for n, s in services.items()
        if n in TOKENTIDE_SERVICES
    }
    assert len(images) == 1, f"every tokentide service must use the one Dockerfile's image: {images}"
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    assert "-oss" not in services["timescaledb"]["image"], "the full TimescaleDB image, not -oss"
    assert services["kafka"]["image"].startswith("apache/kafka:")


def test_secrets_have_no_default() -> None:
    """Every secret is `${VAR:?message}`: the file itself holds no password."""
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required == set(SECRETS)
    for name in SECRETS:
        defaulted = re.findall(rf"\$\{{{name}:?-", text)
        assert not defaulted, f"{name} must never have a default"


# --- the file as Compose resolves it ---------------------------------------------------------


def test_compose_config_validates(config: dict[str, Any]) -> None:
    assert set(config["services"]) == TOKENTIDE_SERVICES | INFRA_SERVICES
    # The normalised model is still a valid Compose file.
    errors = list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(config))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_a_secret(secret: str, tmp_path: Path) -> None:
    env = {name: value for name, value in SECRETS.items() if name != secret}
    done = run_compose(env, "config", "--quiet", tmp_path=tmp_path)
    assert done.returncode != 0
    assert f"required variable {secret} is missing a value" in done.stderr


def test_secrets_reach_the_services(config: dict[str, Any]) -> None:
    services = config["services"]
    password = SECRETS["TOKENTIDE_DB_PASSWORD"]
    url = f"postgresql://tokentide:{password}@timescaledb:5432/tokentide"
    for name in ("ingest", "sink", "dashboard", "migrate"):
        assert services[name]["environment"]["DATABASE_URL"] == url, name
    assert services["timescaledb"]["environment"]["POSTGRES_PASSWORD"] == password
    ingest, grafana = services["ingest"]["environment"], services["grafana"]["environment"]
    assert ingest["TOKENTIDE_REDACTION_KEY"] == SECRETS["TOKENTIDE_REDACTION_KEY"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    assert (
        services["dashboard"]["environment"]["TOKENTIDE_METRICS_TOKEN"] == SECRETS["TOKENTIDE_METRICS_TOKEN"]
    )


def test_prometheus_scrapes_usage_with_the_dashboards_token(config: dict[str, Any]) -> None:
    """/metrics/usage refuses a scrape without credentials: the usage job sends the token the
    dashboard was given; the services' own /metrics need none."""
    prometheus = yaml.safe_load(config["configs"]["prometheus-config"]["content"])
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    usage = jobs["tokentide-usage"]
    assert usage["metrics_path"] == "/metrics/usage"
    token = config["services"]["dashboard"]["environment"]["TOKENTIDE_METRICS_TOKEN"]
    assert usage["authorization"] == {"type": "Bearer", "credentials": token}
    assert [name for name, job in jobs.items() if "authorization" in job] == ["tokentide-usage"]


def test_dependencies_and_health_checks(config: dict[str, Any]) -> None:
    services = config["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart", "no") == "no", f"{name} is a one-shot job"
            assert "healthcheck" not in service
        else:
            test = service.get("healthcheck", {}).get("test")
            assert test, f"{name} has no health check"
            assert test[0] in {"CMD", "CMD-SHELL"}, name
        for target, dependency in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            expected = "service_completed_successfully" if target in ONE_SHOT else "service_healthy"
            assert dependency["condition"] == expected, f"{name} -> {target}"
    needs = {
        "migrate": {"timescaledb"},
        "topics": {"kafka"},
        "ingest": {"kafka", "topics", "migrate"},
        "streams": {"kafka", "topics"},
        "sink": {"kafka", "timescaledb", "topics", "migrate"},
        "notify": {"kafka", "timescaledb", "topics", "migrate"},
        "dashboard": {"timescaledb", "migrate"},
    }
    for name, targets in needs.items():
        assert targets <= set(services[name].get("depends_on", {})), name


def test_tokentide_commands(config: dict[str, Any]) -> None:
    commands = {name: service["command"] for name, service in tokentide_services(config)}
    assert commands["migrate"] == ["migrate"]
    assert commands["topics"][:2] == ["admin", "topics"]
    for name in ("ingest", "streams", "sink", "notify", "dashboard"):
        assert commands[name] == [name]


def test_tokentide_variables_are_settings(config: dict[str, Any]) -> None:
    """The same variable names as `make up` and Helm: each one a setting of that service."""
    for name, service in tokentide_services(config):
        known = variable_names(settings_for(service["command"]))
        unknown = set(service["environment"]) - known
        command = " ".join(service["command"][:2])
        assert not unknown, f"{name}: {sorted(unknown)} are not settings of `tokentide {command}`"


def test_tokentide_settings_accept_the_environment(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's settings class validates what compose gives it (no refusal at start-up)."""
    for name, service in tokentide_services(config):
        env = {key: value for key, value in service["environment"].items() if value is not None}
        with monkeypatch.context() as patch:
            settings = build_settings(settings_for(service["command"]), env, patch)
        if name in {"ingest", "streams", "sink", "notify", "topics"}:
            assert settings.kafka_bootstrap == "kafka:9092", name  # type: ignore[attr-defined]


def test_no_test_hooks_in_any_service(config: dict[str, Any]) -> None:
    assert TEST_ONLY_VARIABLES, "the test hooks' names come from the settings"
    for name, service in config["services"].items():
        hooks = TEST_ONLY_VARIABLES & set(service.get("environment") or {})
        assert not hooks, f"{name} sets the test-only {sorted(hooks)}"
    assert not any(hook in COMPOSE_FILE.read_text() for hook in TEST_ONLY_VARIABLES)


def _seconds(duration: str) -> float:
    """A Compose duration (``45s``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    assert "".join(f"{n}{u}" for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_streams_service(config: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The stream stage: RocksDB on its volume, health from /readyz on its port, time to commit
    its batch on SIGTERM, and the same application id as the topics job that names its changelog."""
    services = config["services"]
    streams, topics = services["streams"], services["topics"]
    env = streams["environment"]
    assert env["TOKENTIDE_STORE"] == "rocksdb"
    assert env["TOKENTIDE_STREAMS_APP_ID"] == topics["environment"]["TOKENTIDE_STREAMS_APP_ID"]
    assert env["TOKENTIDE_STREAMS_APP_ID"] == "tokentide-streams"
    assert any(v["target"] == env["TOKENTIDE_DATA_DIR"] and v["type"] == "volume" for v in streams["volumes"])
    assert f"127.0.0.1:{env['TOKENTIDE_STREAMS_PORT']}/readyz" in " ".join(streams["healthcheck"]["test"])
    assert _seconds(streams["stop_grace_period"]) >= STREAMS_MIN_GRACE_S
    settings = build_settings(StreamsSettings, env, monkeypatch)
    assert isinstance(settings, StreamsSettings)
    assert settings.store == "rocksdb"
    assert settings.stall_after_s == 60
    assert settings.streams_test_pause_at is None


def test_streams_app_id_reaches_the_stage_and_the_topics_job(tmp_path: Path) -> None:
    """The upgrade from the faust-based stage sets a new id (docs/operations.md): both get it."""
    done = run_compose(
        {**SECRETS, "TOKENTIDE_STREAMS_APP_ID": "tokentide-streams-v2"},
        "config",
        "--format",
        "json",
        tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for name in ("streams", "topics"):
        assert services[name]["environment"]["TOKENTIDE_STREAMS_APP_ID"] == "tokentide-streams-v2", name


def test_broker_allows_transactions(config: dict[str, Any]) -> None:
    """The stage's transactional producers need a transaction log the one broker can host."""
    env = config["services"]["kafka"]["environment"]
    brokers = len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert brokers == 1
    replicas = int(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"])
    assert replicas <= brokers
    assert int(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) <= replicas
    assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= brokers


def test_same_variables_as_the_local_stack(config: dict[str, Any]) -> None:
    """What scripts/stack.py gives its services is what compose gives them, by name."""
    stack = _stack_module()
    infra = stack.Infra("127.0.0.1:9092", "postgresql://u:p@127.0.0.1/db", False, False)
    added = {k for k, v in stack.service_env(infra).items() if os.environ.get(k) != v}
    used = set().union(*(set(s["environment"]) for _, s in tokentide_services(config)))
    assert added <= used, f"the local stack sets {sorted(added - used)}, compose does not"
    streams = config["services"]["streams"]
    data_dir = streams["environment"]["TOKENTIDE_DATA_DIR"]
    assert any(v["target"] == data_dir and v["type"] == "volume" for v in streams["volumes"])


def test_broker_settings_match_the_local_stack(config: dict[str, Any]) -> None:
    stack = _stack_module()
    properties = dict(
        line.split("=", 1)
        for line in stack.server_properties(9092, Path("/data")).splitlines()
        if "=" in line and not line.startswith("#")
    )
    machine_specific = {
        "process.roles",
        "node.id",
        "controller.quorum.voters",
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "controller.listener.names",
        "inter.broker.listener.name",
        "log.dirs",
        "num.network.threads",
        "num.io.threads",
        "num.recovery.threads.per.data.dir",
        "background.threads",
    }
    env = config["services"]["kafka"]["environment"]
    for key, value in properties.items():
        if key in machine_specific:
            continue
        variable = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(variable) == value, f"{variable}: compose {env.get(variable)!r}, stack.py {value!r}"


def _stack_module() -> ModuleType:
    path = REPO / "scripts" / "stack.py"
    spec = importlib.util.spec_from_file_location("tokentide_stack_for_compose", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look themselves up here
    spec.loader.exec_module(module)
    return module


# --- monitoring: the chart's files, mounted --------------------------------------------------


def test_monitoring_files_are_the_charts(config: dict[str, Any]) -> None:
    files = CHART / "files"
    mounts = {
        v["target"]: Path(v["source"])
        for name in ("prometheus", "grafana")
        for v in config["services"][name]["volumes"]
        if v["type"] == "bind"
    }
    assert mounts["/etc/prometheus/rules/tokentide.yml"] == files / "prometheus" / "alerts.yml"
    assert mounts["/etc/grafana/provisioning"] == files / "grafana" / "provisioning"
    assert mounts["/var/lib/grafana/dashboards/tokentide"] == files / "grafana" / "dashboards"
    for target, source in mounts.items():
        assert source.exists(), f"{source} (mounted at {target}) is missing"


def test_prometheus_scrapes_every_service_and_loads_the_rules(config: dict[str, Any]) -> None:
    prometheus = yaml.safe_load(config["configs"]["prometheus-config"]["content"])
    assert "/etc/prometheus/rules/*.yml" in prometheus["rule_files"]
    targets = {t for job in prometheus["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    ports = {
        "ingest": "TOKENTIDE_INGEST_PORT",
        "streams": "TOKENTIDE_STREAMS_PORT",
        "sink": "TOKENTIDE_SINK_PORT",
        "notify": "TOKENTIDE_NOTIFY_PORT",
        "dashboard": "TOKENTIDE_DASHBOARD_PORT",
    }
    for service, variable in ports.items():
        port = config["services"][service]["environment"][variable]
        assert f"{service}:{port}" in targets, service
    rules = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yml").read_text())
    assert rules["groups"], "the rules file needs at least one group"
    for group in rules["groups"]:
        assert group["name"], group
        assert group["rules"], group
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert rule["expr"], rule


def test_grafana_gets_every_variable_its_provisioning_reads(config: dict[str, Any]) -> None:
    provisioning = CHART / "files" / "grafana" / "provisioning"
    wanted = {
        match
        for path in provisioning.rglob("*.y*ml")
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#")
        for match in re.findall(r"\$(?:__env)?\{([A-Za-z_][A-Za-z0-9_]*)\}", line)
    }
    missing = wanted - set(config["services"]["grafana"]["environment"])
    assert not missing, f"Grafana's provisioning reads {sorted(missing)}, compose does not set them"
    dashboards = sorted((CHART / "files" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard.get("uid"), path
        assert dashboard.get("title"), path
        assert isinstance(dashboard.get("panels"), list), path
