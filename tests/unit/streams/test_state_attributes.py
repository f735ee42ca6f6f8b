"""Which resource attributes a session keeps (``streams.state.team_attributes``)."""

from __future__ import annotations

from streams.state import team_attributes


def test_the_deployments_attributes_and_service_namespace_are_kept_standard_ones_not() -> None:
    resource = {
        "service.name": "claude-code",
        "service.version": "2.1.332",
        "service.namespace": "payments",
        "host.arch": "amd64",
        "team": "core",
        "project": "api",
        "tags": ["a", "b"],
    }
    assert team_attributes(resource) == {"service.namespace": "payments", "team": "core", "project": "api"}
