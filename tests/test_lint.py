"""The lint configuration in pyproject.toml ([tool.ruff]) holds for the package, the grader and the tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "course", "grader", "tests"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    hint = "ruff check found problems (fix them; the rules are [tool.ruff] in pyproject.toml)"
    assert result.returncode == 0, f"{hint}:\n{result.stdout}{result.stderr}"


def test_ruff_would_catch_a_real_problem(tmp_path):
    """The configuration is live: an unused import and an undefined name are found."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name\n")
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"), str(bad)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1 and "F401" in result.stdout and "F821" in result.stdout, result.stdout
