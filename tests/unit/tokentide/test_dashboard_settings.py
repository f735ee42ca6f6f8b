"""The dashboard's credentials settings: a scrape token of its own, sane session limits."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tokentide.settings import DashboardSettings

pytestmark = pytest.mark.usefixtures("clean_env")

DSN = "postgresql://u:p@db/tokentide"


def test_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DSN)
    settings = DashboardSettings()
    assert settings.metrics_token is None
    assert (settings.web_session_idle_s, settings.web_session_max_s) == (12 * 3600, 7 * 24 * 3600)
    assert settings.trust_forwarded_proto is False


def test_the_scrape_token_is_long_and_not_the_admin_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DSN)
    monkeypatch.setenv("TOKENTIDE_METRICS_TOKEN", "short")
    with pytest.raises(ValidationError, match="TOKENTIDE_METRICS_TOKEN is too short"):
        DashboardSettings()
    monkeypatch.setenv("TOKENTIDE_METRICS_TOKEN", "the-same-long-secret")
    monkeypatch.setenv("TOKENTIDE_DASHBOARD_ADMIN_TOKEN", "the-same-long-secret")
    with pytest.raises(ValidationError, match="must differ from TOKENTIDE_DASHBOARD_ADMIN_TOKEN"):
        DashboardSettings()
    monkeypatch.setenv("TOKENTIDE_DASHBOARD_ADMIN_TOKEN", "another-long-secret")
    token = DashboardSettings().metrics_token
    assert token is not None
    assert token.get_secret_value() == "the-same-long-secret"
    assert "the-same-long-secret" not in repr(DashboardSettings())


def test_a_session_cannot_idle_longer_than_it_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", DSN)
    monkeypatch.setenv("TOKENTIDE_WEB_SESSION_IDLE_S", "7200")
    monkeypatch.setenv("TOKENTIDE_WEB_SESSION_MAX_S", "3600")
    with pytest.raises(ValidationError, match="IDLE_S must not exceed"):
        DashboardSettings()
    monkeypatch.setenv("TOKENTIDE_WEB_SESSION_MAX_S", "7200")
    monkeypatch.setenv("TOKENTIDE_TRUST_FORWARDED_PROTO", "1")
    settings = DashboardSettings()
    assert settings.web_session_max_s == 7200
    assert settings.trust_forwarded_proto is True
