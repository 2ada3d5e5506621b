"""The command line: version, help and the README's demo."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

import warpstore
from warpstore.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert warpstore.__version__ in result.output


def test_help_lists_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def test_demo_runs_as_installed_console_script() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "warpstore", "demo", "--size-mib", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo OK" in proc.stdout
    assert "resolved before use: False" in proc.stdout
