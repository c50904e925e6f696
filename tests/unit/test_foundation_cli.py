"""The `mimic` dispatcher lists only verbs whose module exists and rejects unknown verbs in one line."""

from __future__ import annotations

import subprocess
import sys

from mimic import cli


def test_help_lists_only_available_verbs(capsys) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in cli._available():
        assert f"  {verb}" in out


def test_unknown_verb_is_one_line_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "mimic.cli", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown verb 'frobnicate'" in proc.stderr
