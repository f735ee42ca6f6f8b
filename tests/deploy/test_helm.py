"""The Helm chart k8s/tokentide: ``helm lint``, ``helm template`` with every values file of
k8s/tokentide/ci/, the rendered manifests validated offline against Kubernetes' schemas
(kubernetes-validate), and what the schemas cannot know: hooks, security contexts, secrets
from existing Secrets, settings names, monitoring resources only with their CRDs, and bad
values refused by values.schema.json or the chart's own checks.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from starlette.routing import Mount, Route

from dashboard.app import create_app
from tests.deploy.conftest import (
    CHART,
    COMPOSE_FILE,
    HELPER_VARIABLES,
    STREAMS_MIN_GRACE_S,
    TEST_ONLY_VARIABLES,
    build_settings,
    local_tool,
    settings_for,
    variable_names,
)
from tokentide.settings import DashboardSettings

pytestmark = pytest.mark.deploy

VALUES = sorted((CHART / "ci").glob("*.yaml"))
#: The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest known.
KUBE_VERSIONS = ("1.29.0", "1.37.0")
MONITORING_CRDS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule")
WORKLOADS = {"Deployment", "StatefulSet", "Job"}
TOKENTIDE_COMPONENTS = {"ingest", "streams", "sink", "notify", "dashboard", "migrate", "topics"}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(local_tool("helm", "install-helm.sh")), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def api_versions(values: Path) -> list[str]:
    """The production-like values are rendered as if the Prometheus Operator's CRDs existed."""
    if values.name.startswith("production"):
        return [arg for crd in MONITORING_CRDS for arg in ("--api-versions", crd)]
    return []


@cache
def render(values: Path, kube_version: str = KUBE_VERSIONS[0], *extra: str) -> list[dict[str, Any]]:
    done = helm(
        "template",
        "tt",
        str(CHART),
        "--namespace",
        "tokentide",
        "--kube-version",
        kube_version,
        "-f",
        str(values),
        *api_versions(values),
        *extra,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component(doc: dict[str, Any]) -> str:
    return str(doc["metadata"]["labels"].get("app.kubernetes.io/component", ""))


def tokentide_workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(component, workload, pod spec) of every tokentide Deployment, StatefulSet and Job."""
    for doc in docs:
        if doc["kind"] in WORKLOADS and component(doc) in TOKENTIDE_COMPONENTS:
            yield component(doc), doc, doc["spec"]["template"]["spec"]


def values_of(path: Path) -> dict[str, Any]:
    defaults: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    merged = json.loads(json.dumps(defaults))

    def merge(into: dict[str, Any], other: dict[str, Any]) -> None:
        for key, value in other.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    merge(merged, yaml.safe_load(path.read_text()) or {})
    return merged


values_files = pytest.mark.parametrize("values", VALUES, ids=[p.stem for p in VALUES])


def test_ci_values_files_exist() -> None:
    assert {p.stem for p in VALUES} >= {"defaults-values", "bundled-trial-values", "production-values"}


@values_files
def test_helm_lint(values: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@values_files
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_rendered_manifests_match_the_kubernetes_schemas(values: Path, kube_version: str) -> None:
    docs = render(values, kube_version)
    assert docs
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: not in Kubernetes' schemas; checked in test_monitoring_*
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = f"{values.name} {name} on Kubernetes {kube_version}"
            pytest.fail(f"{where}: {exc.message} at {list(exc.path)}")


def test_schema_validation_is_not_vacuous() -> None:
    """kubernetes-validate refuses what a cluster would: an unknown field, a wrong type."""
    deployment = next(d for d in render(VALUES[0]) if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["envFrom"] = {"not": "a list"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSIONS[0], strict=True)


@values_files
def test_workloads(values: Path) -> None:
    docs = render(values)
    kinds = {(d["kind"], component(d)) for d in docs}
    assert {
        ("Deployment", "ingest"),
        ("StatefulSet", "streams"),
        ("Deployment", "sink"),
        ("Deployment", "notify"),
    } <= kinds
    assert {("Deployment", "dashboard"), ("Job", "migrate"), ("Job", "topics")} <= kinds
    streams = next(d for d in by_kind(docs, "StatefulSet") if component(d) == "streams")
    claims = streams["spec"]["volumeClaimTemplates"]
    mount = streams["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    env = {e["name"]: e.get("value") for e in streams["spec"]["template"]["spec"]["containers"][0]["env"]}
    state = next(m for m in mount if m["name"] == claims[0]["metadata"]["name"])
    assert env["TOKENTIDE_DATA_DIR"] == state["mountPath"], "RocksDB state on the persistent volume"
    chart_values = values_of(values)
    assert streams["spec"]["replicas"] == chart_values["streams"]["replicas"]
    assert streams["spec"]["replicas"] <= int(env["TOKENTIDE_PARTITIONS"] or 0)
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    if chart_values["ingest"]["autoscaling"]["enabled"]:
        (hpa,) = hpas
        assert hpa["spec"]["scaleTargetRef"]["name"].endswith("-ingest")
        assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    else:
        assert not hpas


@values_files
def test_hooks(values: Path) -> None:
    docs = render(values)
    chart_values = values_of(values)
    made_by_release = (
        chart_values["kafka"]["bundled"]["enabled"]
        or chart_values["database"]["bundled"]["enabled"]
        or chart_values["secrets"]["create"]
    )
    phases = "post-install,pre-upgrade" if made_by_release else "pre-install,pre-upgrade"
    jobs = {component(j): j for j in by_kind(docs, "Job")}
    assert set(jobs) == {"migrate", "topics"}
    for job in jobs.values():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == phases
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert jobs["migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    assert jobs["topics"]["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["admin", "topics"]


@values_files
def test_security_and_resources(values: Path) -> None:
    for name, _, pod in tokentide_workloads(render(values)):
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert container["resources"]["requests"], name
            assert container["resources"]["limits"]["memory"], name
            # A read-only root needs /tmp somewhere writable.
            assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"]), name  # noqa: S108


@values_files
def test_disruption_budgets(values: Path) -> None:
    docs = render(values)
    budgets = by_kind(docs, "PodDisruptionBudget")
    chart_values = values_of(values)
    for name, workload, _ in tokentide_workloads(docs):
        if workload["kind"] == "Job":
            continue
        replicas = workload["spec"].get("replicas")
        if replicas is None:  # ingest with its HPA
            replicas = chart_values["ingest"]["autoscaling"]["minReplicas"]
        selector = workload["spec"]["selector"]["matchLabels"]
        covered = [b for b in budgets if b["spec"]["selector"]["matchLabels"] == selector]
        assert len(covered) == (1 if replicas > 1 else 0), f"{name}: {replicas} replicas"


@values_files
def test_secrets_come_from_existing_secrets(values: Path) -> None:
    docs = render(values)
    chart_values = values_of(values)
    secrets = by_kind(docs, "Secret")
    references = {
        ref["name"]
        for _, _, pod in tokentide_workloads(docs)
        for container in pod["containers"]
        for env in container["env"]
        if (ref := env.get("valueFrom", {}).get("secretKeyRef"))
    }
    if chart_values["secrets"]["create"]:
        (secret,) = secrets
        assert references == {secret["metadata"]["name"]}
        assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    else:
        assert not secrets, "no Secret is rendered: they come from secrets.existingSecret"
        assert references == {chart_values["secrets"]["existingSecret"]}
    for _, _, pod in tokentide_workloads(docs):
        for env in (e for c in pod["containers"] for e in c["env"]):
            if env["name"] in {"DATABASE_URL", "TOKENTIDE_REDACTION_KEY"}:
                assert "valueFrom" in env or "$(POSTGRES_PASSWORD)" in env["value"], env


@values_files
def test_variables_are_settings(values: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable is a setting of the process that gets it, and its settings validate."""
    for name, _, pod in tokentide_workloads(render(values)):
        (container,) = pod["containers"]
        cls = settings_for(container["args"])
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), f"{name}: duplicate variables"
        unknown = set(names) - variable_names(cls) - HELPER_VARIABLES
        assert not unknown, f"{name}: {sorted(unknown)} are not settings of {cls.__name__}"
        env: dict[str, str] = {}
        for entry in container["env"]:
            value = entry.get("value")
            if value is None:  # from a Secret: a stand-in of the right shape
                is_url = entry["name"] == "DATABASE_URL"
                # One stand-in per variable: settings refuse two tokens that are the same secret.
                value = "postgresql://u:p@db:5432/tokentide" if is_url else f"s3cret-{entry['name']}-" * 2
            # Kubernetes expands $(NAME) of variables defined before.
            env[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m, known=env: known.get(m.group(1), ""), value)
        with monkeypatch.context() as patch:
            build_settings(cls, env, patch)


def env_of(container: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in container["env"]}


@values_files
def test_streams_statefulset(values: Path) -> None:
    """Liveness from /healthz (the loop died), readiness from /readyz (joining, restoring,
    stalled), time to commit the batch on SIGTERM, RocksDB on the pod's volume, and the same
    application id as the topics job, which names the changelog after it."""
    docs = render(values)
    chart_values = values_of(values)
    (streams,) = (d for d in by_kind(docs, "StatefulSet") if component(d) == "streams")
    pod = streams["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
    (port,) = container["ports"]
    env = env_of(container)
    assert (port["name"], str(port["containerPort"])) == ("http", env["TOKENTIDE_STREAMS_PORT"])
    assert pod["terminationGracePeriodSeconds"] >= STREAMS_MIN_GRACE_S
    assert env["TOKENTIDE_STORE"] == "rocksdb"
    assert env["TOKENTIDE_STREAMS_APP_ID"] == chart_values["streams"]["appId"]
    assert float(env["TOKENTIDE_STALL_AFTER_S"] or 0) == chart_values["streams"]["stallAfterSeconds"]
    (topics,) = (j for j in by_kind(docs, "Job") if component(j) == "topics")
    (job,) = topics["spec"]["template"]["spec"]["containers"]
    assert env_of(job)["TOKENTIDE_STREAMS_APP_ID"] == env["TOKENTIDE_STREAMS_APP_ID"]
    for name in ("TOKENTIDE_PARTITIONS", "TOKENTIDE_TOPIC_PREFIX", "KAFKA_BOOTSTRAP"):
        assert env_of(job)[name] == env[name], name


@values_files
def test_no_test_hooks_in_any_workload(values: Path) -> None:
    assert TEST_ONLY_VARIABLES, "the test hooks' names come from the settings"
    for name, _, pod in tokentide_workloads(render(values)):
        for container in pod["containers"]:
            hooks = TEST_ONLY_VARIABLES & set(env_of(container))
            assert not hooks, f"{name} sets the test-only {sorted(hooks)}"


#: Bundled-Kafka settings that are the release's own (names, paths, sizes from values).
RELEASE_SPECIFIC_BROKER_SETTINGS = {
    "KAFKA_ADVERTISED_LISTENERS",
    "KAFKA_LOG_DIRS",
    "KAFKA_NUM_PARTITIONS",
    "KAFKA_HEAP_OPTS",
}


def test_bundled_kafka_is_the_compose_broker() -> None:
    """The trial broker of the chart has docker-compose's settings (which are scripts/stack.py's,
    test_compose.py), transactions on one broker included."""
    docs = render(CHART / "ci" / "bundled-trial-values.yaml")
    (kafka,) = (d for d in by_kind(docs, "StatefulSet") if component(d) == "kafka")
    (container,) = kafka["spec"]["template"]["spec"]["containers"]
    chart = {k: v for k, v in env_of(container).items() if k not in RELEASE_SPECIFIC_BROKER_SETTINGS}
    compose_env = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["kafka"]["environment"]
    compose = {k: v for k, v in compose_env.items() if k not in RELEASE_SPECIFIC_BROKER_SETTINGS}
    assert set(chart) == set(compose)
    compose["CLUSTER_ID"] = compose["CLUSTER_ID"].removeprefix("${KAFKA_CLUSTER_ID:-").removesuffix("}")
    assert chart == compose
    assert chart["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert chart["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


def test_monitoring_resources_only_with_their_crds() -> None:
    defaults = render(CHART / "ci" / "defaults-values.yaml")
    assert not by_kind(defaults, "ServiceMonitor")
    assert not by_kind(defaults, "PrometheusRule")
    production = render(CHART / "ci" / "production-values.yaml")
    monitors = {m["metadata"]["name"]: m for m in by_kind(production, "ServiceMonitor")}
    assert set(monitors) == {"tt-tokentide", "tt-tokentide-usage"}
    (rule,) = by_kind(production, "PrometheusRule")
    alerts = yaml.safe_load((CHART / "files" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]

    def scraped(monitor: dict[str, Any]) -> set[str]:
        selector = monitor["spec"]["selector"]["matchLabels"]
        return {
            component(s)
            for s in by_kind(production, "Service")
            if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
        }

    operational, usage = monitors["tt-tokentide"], monitors["tt-tokentide-usage"]
    assert scraped(operational) == {"ingest", "streams", "sink", "notify", "dashboard"}
    assert [(e["port"], e["path"]) for e in operational["spec"]["endpoints"]] == [("http", "/metrics")]
    for service in by_kind(production, "Service"):
        if component(service) in scraped(operational):
            assert "http" in {p["name"] for p in service["spec"]["ports"]}
    # The usage metrics: the dashboard only, with the scrape token the dashboard itself reads.
    assert scraped(usage) == {"dashboard"}
    (endpoint,) = usage["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("http", "/metrics/usage", "60s")
    secret = values_of(CHART / "ci" / "production-values.yaml")["secrets"]["existingSecret"]
    token = {"name": secret, "key": "TOKENTIDE_METRICS_TOKEN"}
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": token}
    (dashboard,) = (d for d in by_kind(production, "Deployment") if component(d) == "dashboard")
    (container,) = dashboard["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TOKENTIDE_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == token
    admin = env["TOKENTIDE_DASHBOARD_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert admin == {"name": secret, "key": "TOKENTIDE_DASHBOARD_ADMIN_TOKEN", "optional": True}
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_open_mode_scrapes_usage_without_a_token() -> None:
    docs = render(CHART / "ci" / "production-values.yaml", KUBE_VERSIONS[0], "--set", "ingest.openMode=true")
    usage = next(m for m in by_kind(docs, "ServiceMonitor") if m["metadata"]["name"].endswith("-usage"))
    assert "authorization" not in usage["spec"]["endpoints"][0]
    (dashboard,) = (d for d in by_kind(docs, "Deployment") if component(d) == "dashboard")
    names = {e["name"] for e in dashboard["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert not {"TOKENTIDE_METRICS_TOKEN", "TOKENTIDE_DASHBOARD_ADMIN_TOKEN"} & names


def test_the_trial_secret_has_a_scrape_token() -> None:
    (secret,) = by_kind(render(CHART / "ci" / "bundled-trial-values.yaml"), "Secret")
    assert {"POSTGRES_PASSWORD", "TOKENTIDE_REDACTION_KEY", "TOKENTIDE_METRICS_TOKEN"} == set(secret["data"])


@values_files
def test_grafana_dashboards_as_configmaps(values: Path) -> None:
    files = sorted((CHART / "files" / "grafana" / "dashboards").glob("*.json"))
    assert files
    config_maps = by_kind(render(values), "ConfigMap")
    maps = [m for m in config_maps if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    shipped = {key: json.loads(text) for m in maps for key, text in m["data"].items()}
    assert shipped == {path.name: json.loads(path.read_text()) for path in files}


def ingress_serves(paths: list[dict[str, Any]], path: str) -> bool:
    """Whether an Ingress rule's paths route ``path`` (Kubernetes' Exact and Prefix: a prefix
    matches whole path elements, ``/api/`` matches ``/api/v1`` but not ``/apis``)."""
    for rule in paths:
        wanted, kind = rule["path"], rule["pathType"]
        if kind == "Exact" and path == wanted:
            return True
        prefix = wanted.rstrip("/")
        if kind == "Prefix" and (not prefix or path == prefix or path.startswith(prefix + "/")):
            return True
    return False


#: What the dashboard host must never route: operational and usage metrics, probes.
UNPUBLISHED = ("/metrics", "/metrics/usage", "/metrics/usage/x", "/healthz", "/readyz")


def test_ingress_routes_otlp_and_dashboard() -> None:
    (ingress,) = by_kind(render(CHART / "ci" / "production-values.yaml"), "Ingress")
    rules = {r["host"]: r["http"]["paths"] for r in ingress["spec"]["rules"]}
    assert rules["otlp.example.com"][0]["path"] == "/v1/"
    assert rules["otlp.example.com"][0]["backend"]["service"]["name"].endswith("-ingest")
    dashboard = rules["tokentide.example.com"]
    assert {p["backend"]["service"]["name"] for p in dashboard} == {"tt-tokentide-dashboard"}
    for path in UNPUBLISHED:
        assert not ingress_serves(dashboard, path), path
        assert not ingress_serves(rules["otlp.example.com"], path), path
    for path in (
        "/",
        "/usage",
        "/webhooks",
        "/sessions/abc",
        "/static/app.js",
        "/api/v1/sessions",
        "/api/v1/login",
        "/api/v1/hook/sessions/abc/checkpoints",
        "/docs",
        "/openapi.json",
    ):
        assert ingress_serves(dashboard, path), path


#: Dashboard routes that exist for in-cluster callers only (probes, Prometheus) or not at all
#: for people (Swagger's OAuth redirect, ReDoc): the ingress must not route them.
CLUSTER_ONLY = {"/healthz", "/readyz", "/metrics", "/metrics/usage", "/docs/oauth2-redirect", "/redoc"}


def test_the_ingress_publishes_every_dashboard_route_but_metrics_and_probes() -> None:
    """Against the dashboard app's own route table: a new page or API route must be published
    (or listed here as cluster-only), and metrics never are."""
    app = create_app(DashboardSettings(database_url="postgresql://u:p@db:5432/tokentide"))
    (ingress,) = by_kind(render(CHART / "ci" / "production-values.yaml"), "Ingress")
    (dashboard,) = (
        r["http"]["paths"] for r in ingress["spec"]["rules"] if r["host"] == "tokentide.example.com"
    )
    paths = {r.path for r in app.routes if isinstance(r, Route | Mount)}
    assert paths >= CLUSTER_ONLY, "a cluster-only route is gone: update CLUSTER_ONLY"
    for path in sorted(paths):
        sample = re.sub(r"\{[^}]+\}", "abc", path) + ("/app.js" if path == "/static" else "")
        assert ingress_serves(dashboard, sample) is (path not in CLUSTER_ONLY), path


BAD_VALUES = [
    ("streams.replicas=13", "must not exceed kafka.partitions"),
    ("kafka.bootstrap=", "/kafka/bootstrap"),
    ("kafka.bootstrap=no-port", "/kafka/bootstrap"),
    ("secrets.existingSecret=", "/secrets/existingSecret"),
    ("kafka.partitions=0", "/kafka/partitions"),
    ("kafka.partitions=2000", "/kafka/partitions"),
    ("logLevel=TRACE", "/logLevel"),
    ("ingest.env.NOT_A_SETTING=1", "NOT_A_SETTING"),
    ("ingest.autoscaling.minReplicas=20", "minReplicas must not exceed"),
    ("secrets.create=true", "/database/bundled/enabled"),
    ("streams.persistence.size=lots", "/streams/persistence/size"),
    ("streams.terminationGracePeriodSeconds=30", "/streams/terminationGracePeriodSeconds"),
    ("streams.stallAfterSeconds=0", "/streams/stallAfterSeconds"),
    ("streams.env.TOKENTIDE_STREAMS_TEST_PAUSE_AT=after_commit", "/streams/env"),
    ("sink.env.TOKENTIDE_SINK_TEST_PAUSE=after_database_commit", "/sink/env"),
    ("replicaz=3", "additional properties 'replicaz' not allowed"),
]


@pytest.mark.parametrize(("setting", "message"), BAD_VALUES, ids=[s for s, _ in BAD_VALUES])
def test_bad_values_fail(setting: str, message: str) -> None:
    done = helm(
        "template",
        "tt",
        str(CHART),
        "--kube-version",
        KUBE_VERSIONS[0],
        "-f",
        str(CHART / "ci" / "defaults-values.yaml"),
        "--set",
        setting,
    )
    assert done.returncode != 0, f"{setting} was accepted"
    assert message in done.stderr, done.stderr


def test_streams_replicas_up_to_partitions_pass() -> None:
    docs = render(CHART / "ci" / "defaults-values.yaml", KUBE_VERSIONS[0], "--set", "streams.replicas=12")
    (streams,) = (d for d in by_kind(docs, "StatefulSet") if component(d) == "streams")
    assert streams["spec"]["replicas"] == 12
