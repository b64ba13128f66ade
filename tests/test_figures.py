"""``python -m course figures``: the README's pictures come from the command it names."""

from __future__ import annotations

import re
import struct
import subprocess
import sys

import pytest

from course import _paths

ROOT = _paths.PROJECT_ROOT
COMMITTED = ROOT / "docs" / "figures"
MAX_BYTES = 150_000  # small enough to commit and to load fast on a README page
MAX_WIDTH = 1000  # pixels: a README shows them at their real size, not shrunk


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
def test_figures_command_redraws_what_the_readme_shows(trained_model, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "course", "figures", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert drawn == sorted(p.name for p in COMMITTED.glob("*.png")), "docs/figures differs: run `make figures`"
    assert f"Wrote {len(drawn)} figures" in result.stdout

    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]+\]\(docs/figures/([\w.]+\.png)\)", readme)
    assert sorted(shown) == drawn, f"README shows {shown}, the command draws {drawn}"
    assert "make figures" in readme and "-m course figures --out docs/figures" in (ROOT / "Makefile").read_text()

    for name in drawn:
        width, height = png_size(tmp_path / name)
        assert (width, height) == png_size(COMMITTED / name), f"{name} changed size: run `make figures`"
        assert 400 <= width <= MAX_WIDTH and 150 <= height <= 800, f"{name}: {width}x{height} pixels"
        assert (COMMITTED / name).stat().st_size < MAX_BYTES, f"{name} is larger than {MAX_BYTES} bytes"


def test_figures_refuses_a_bad_index(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "course", "figures", "--out", str(tmp_path), "--index", "-1"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert result.returncode == 2
    assert "--index -1 is out of range: the test set has images 0..9999" in result.stderr
    assert "Traceback" not in result.stderr
