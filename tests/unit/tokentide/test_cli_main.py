"""The ``tokentide`` entry point: clear refusal on bad configuration, ``--version``."""

from __future__ import annotations

import pytest

from tokentide import __version__
from tokentide.cli import main

pytestmark = pytest.mark.usefixtures("clean_env")


def test_ingest_without_open_mode_exits_2_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("tokentide ingest: invalid configuration:")
    assert "TOKENTIDE_OPEN_MODE=1" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["sink", "dashboard", "migrate"])
def test_database_services_without_configuration_exit_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tokentide {command}: invalid configuration:")
    assert "TOKENTIDE_OPEN_MODE=1" in err


def test_version_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"tokentide {__version__}"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_prices_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["prices"])
    assert info.value.code == 2
    assert "ACTION" in capsys.readouterr().err


def test_prices_check_without_configuration_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "check"]) == 2
    assert capsys.readouterr().err.startswith("tokentide prices: invalid configuration:")
