"""The ``napari-m2mrf`` command: help everywhere, user errors as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from napari_m2mrf.cli import build_parser, main

CLI = [str(Path(sys.executable).with_name("napari-m2mrf"))]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, env=env)


def _subcommands() -> list[str]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.dest == "command"]
    return sorted(action.choices)


def test_console_entry_point_lists_subcommands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout


@pytest.mark.parametrize("command", _subcommands())
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    assert command in capsys.readouterr().out


def test_unknown_subcommand_is_one_line_and_exit_code_2() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "frobnicate" in result.stderr


def test_demo_without_display_or_screenshot_says_what_to_do() -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = _run("demo", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["napari-m2mrf: error: no display: pass --screenshot PATH to run the demo headless"]


def test_demo_screenshot_into_missing_folder_is_a_user_error(tmp_path: Path) -> None:
    result = _run("demo", "--screenshot", str(tmp_path / "no" / "such" / "shot.png"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
