"""Fixtures the hook's unit tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokentide import hook

#: A call the hook made to the dashboard: (method, session id, path suffix, body).
HookCall = tuple[str, str, str, Any]


@pytest.fixture
def hook_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[HookCall]:
    """The hook's calls to the dashboard, recorded instead of made (answered with nothing), in
    a state directory of the test's own and without git."""
    calls: list[HookCall] = []

    def request(method: str, session_id: str, suffix: str = "", body: Any = None) -> Any:
        calls.append((method, session_id, suffix, body))
        return None

    monkeypatch.setattr(hook, "request", request)
    monkeypatch.setattr(hook, "git_context", lambda cwd, run=None: {})
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return calls
