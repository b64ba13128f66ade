"""The README's two commands choose a supported Python, or stop with one line before installing.

Real `make` and real interpreters: a folder first on PATH names an unsupported Python
(3.10, when this machine has one) ``python3``, ``python3.13`` ... so that the Makefile meets it.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("python3", "python3.13", "python3.12", "python3.11")


def old_python() -> str | None:
    """A real interpreter older than 3.11 on this machine, if any."""
    for pattern in ("/root/.pyenv/versions/3.1[0]*/bin/python3.1[0]", "/usr/bin/python3.[0-9]",
                    "/root/.pyenv/versions/3.[0-9].*/bin/python3.[0-9]"):
        for found in sorted(glob.glob(pattern)):
            if subprocess.run([found, "-c", "import sys; sys.exit(sys.version_info >= (3, 11))"]).returncode == 0:
                return found
    return None


def version(python: str) -> str:
    return subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True).stdout.strip()


def make(tmp_path: Path, bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    path = f"{bin_dir}:/usr/bin:/bin"
    return subprocess.run(["make", "-s", *args, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PATH": path})


@pytest.fixture
def old(tmp_path):
    python = old_python()
    if python is None:
        pytest.skip("no Python older than 3.11 on this machine to stand in for an unsupported one")
    return python


def test_no_supported_python_stops_with_one_line(tmp_path, old):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in NAMES:
        (bin_dir / name).symlink_to(old)
    result = make(tmp_path, bin_dir, "setup")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "the course needs Python 3.11, 3.12 or 3.13" in lines[0] and f"python3 is {version(old)}" in lines[0], lines[0]
    assert "make run PYTHON=/path/to/python3.12" in lines[0]
    assert not (tmp_path / "venv").exists()  # nothing was installed


def test_a_named_unsupported_python_is_refused(tmp_path, old):
    result = make(tmp_path, tmp_path, "setup", f"PYTHON={old}")
    assert result.returncode == 2 and f"{old} is {version(old)}" in result.stderr and not (tmp_path / "venv").exists()


def test_the_first_supported_python_on_path_is_chosen(tmp_path, old):
    """`python3` is too old here; the Makefile goes on to the next name that is supported."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(old)
    (bin_dir / "python3.12").symlink_to(sys.executable)  # this test's own Python: 3.11-3.13
    result = make(tmp_path, bin_dir, "-n", "setup")
    assert result.returncode == 0, result.stderr
    assert f"{bin_dir / 'python3.12'} -m venv {tmp_path / 'venv'}" in result.stdout, result.stdout
