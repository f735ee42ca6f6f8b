"""The pipeline as real processes in closed mode (API keys required, no open mode), with the
notifier, two tenants and their keys: what an outsider, a teammate or another team meets.

Like :class:`tests.support.pipeline.Pipeline` (own topics, groups, database, ports), plus an
admin token and a scrape token on the dashboard. Tenants and keys are made with the functions
of ``tokentide admin`` before the services start.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass, field

import httpx
import psycopg

from tests.support.pipeline import SERVICES, TOKENTIDE, Pipeline
from tests.support.services import free_port
from tokentide.admin import ApiKey, create_key, create_tenant

ADMIN_TOKEN = "admin-token-of-the-closed-test-pipeline"
METRICS_TOKEN = "scrape-token-of-the-closed-test-pipeline"
REDACTION_KEY = "redaction-key-of-the-closed-test-pipeline"
TENANTS = ("acme", "globex")


@dataclass
class ClosedPipeline(Pipeline):
    services: tuple[str, ...] = (*SERVICES, "notify")
    read_keys: dict[str, ApiKey] = field(default_factory=dict)
    ingest_keys: dict[str, ApiKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ports.setdefault("notify", free_port())

    def env(self) -> dict[str, str]:
        env = super().env()
        del env["TOKENTIDE_OPEN_MODE"]
        env.update(
            TOKENTIDE_REDACTION_KEY=REDACTION_KEY,
            TOKENTIDE_DASHBOARD_ADMIN_TOKEN=ADMIN_TOKEN,
            TOKENTIDE_METRICS_TOKEN=METRICS_TOKEN,
            TOKENTIDE_NOTIFY_PORT=str(self.ports["notify"]),
            TOKENTIDE_NOTIFY_GROUP_ID=f"{self.prefix}notify",
            TOKENTIDE_KEY_REFRESH_S="1",
            TOKENTIDE_STREAM_POLL_S="0.2",
            TOKENTIDE_USAGE_CACHE_S="0",
        )
        return env

    def add_tenants(self) -> None:
        """Two tenants, each with a read key and an ingest key (the fleet's)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            for tenant in TENANTS:
                create_tenant(conn, tenant)
                self.read_keys[tenant] = create_key(conn, tenant, "people", scope="read")
                self.ingest_keys[tenant] = create_key(conn, tenant, "the fleet", scope="ingest")

    def start(self, timeout_s: float = 120.0) -> None:
        """Start ``services`` and wait until each answers ``/readyz`` with 200."""
        env = self.env()
        for service in self.services:
            log = self.log_path(service).open("ab")
            self.processes[service] = subprocess.Popen(
                [TOKENTIDE, service],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        pending = set(self.services)
        while pending:
            for service in sorted(pending):
                if self.processes[service].poll() is not None:
                    self.fail(f"{service} exited with {self.processes[service].returncode} during start")
                try:
                    if httpx.get(self.url(service) + "/readyz", timeout=2).status_code == 200:
                        pending.discard(service)
                except httpx.HTTPError:
                    pass
            if pending and time.monotonic() > deadline:
                self.fail(f"not ready after {timeout_s}s: {', '.join(sorted(pending))}")
            time.sleep(0.3)

    def logs(self, lines: int = 60) -> str:
        out = []
        for service in self.services:
            path = self.log_path(service)
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            out.append(f"----- {service} -----\n" + "\n".join(text))
        return "\n".join(out)

    def hook_env(self, home: str, key: ApiKey) -> dict[str, str]:
        """The environment ``tokentide hook`` runs in on one developer's machine (``home``)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENTIDE_")}
        env.update(
            TOKENTIDE_URL=self.url("dashboard"),
            TOKENTIDE_KEY=key.token,
            HOME=home,
            XDG_CONFIG_HOME=f"{home}/.config",
            XDG_STATE_HOME=f"{home}/.local/state",
        )
        return env
