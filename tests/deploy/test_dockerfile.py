"""The Dockerfile and .dockerignore, read statically (no Docker engine here): multi-stage, the
locked install, non-root, and every package of the wheel in the build context and the image."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.deploy.conftest import REPO

pytestmark = pytest.mark.deploy

DOCKERFILE = (REPO / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def wheel_packages() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages: list[str] = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return packages


def stages() -> list[list[str]]:
    found: list[list[str]] = []
    for line in INSTRUCTIONS:
        if line.upper().startswith("FROM "):
            found.append([])
        if found:
            found[-1].append(line)
    return found


def stage(name: str) -> list[str]:
    (found,) = [s for s in stages() if s[0].endswith(f" AS {name}")]
    return found


def test_multi_stage_with_a_locked_install() -> None:
    assert [s[0].rsplit(" AS ", 1)[1] for s in stages()] == ["web", "build", "runtime"]
    build, runtime = stage("build"), stage("runtime")
    assert build[0].endswith(" AS build")
    assert runtime[0].endswith(" AS runtime")
    syncs = [line for line in build if "uv sync" in line]
    assert syncs, "the build stage installs with uv"
    for line in syncs:
        assert "--frozen" in line, "exactly uv.lock"
        assert "--no-dev" in line, "no test tools in the image"
    assert any("COPY pyproject.toml uv.lock" in line for line in build)
    runtime_runs = [line for line in runtime if line.startswith("RUN ")]
    assert not [line for line in runtime_runs if re.search(r"\buv\b", line)], "no uv at runtime"


def test_runs_as_an_unprivileged_user() -> None:
    runtime = stages()[-1]
    users = [line.split()[1] for line in runtime if line.upper().startswith("USER ")]
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in {"0", "root"}
    assert uid == "${TOKENTIDE_UID}"
    assert any("ARG TOKENTIDE_UID=10001" in line for line in runtime), "UID 10001, as the chart's runAsUser"
    assert any(line.startswith("ENTRYPOINT") and "tokentide" in line for line in runtime)


def test_every_wheel_package_is_copied_and_in_the_build_context() -> None:
    copied = {line.split()[1] for line in stage("build") if line.startswith("COPY ") and "--from" not in line}
    allowed = {
        line.strip().removeprefix("!").rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    assert (REPO / ".dockerignore").read_text().splitlines()[1].strip() == "*", "an allow-list"
    for package in wheel_packages():
        assert package in copied, f"Dockerfile does not COPY {package}/"
        assert package in allowed, f".dockerignore leaves out {package}/"
    for needed in ("pyproject.toml", "uv.lock", "README.md"):
        assert needed in allowed, needed


def test_the_web_ui_library_comes_from_the_npm_lock_into_the_package() -> None:
    web = stage("web")
    assert any("COPY dashboard/web/package.json dashboard/web/package-lock.json" in line for line in web)
    assert any("npm ci" in line for line in web), "exactly the locked version"
    assert any(
        line.startswith("COPY --from=web") and "dashboard/static/vendor" in line for line in stage("build")
    )
