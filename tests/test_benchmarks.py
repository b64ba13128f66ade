"""benchmarks: the quick mode runs every item end to end and writes its table as JSON.

Benchmarks are not tests: nothing here asserts a time or a ratio, only that each row was
measured and reported.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ITEMS = ("all conv maps", "maps, 1 image", "maps 26x26 to PNG", "maps 14x14 to PNG", "VGG16", "training",
         "--help", "autograde", "grader check", "explorer update")


@pytest.mark.slow
def test_quick_run_prints_and_writes_every_row(tmp_path):
    out = tmp_path / "benchmarks.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["quick"] is True
    rows = report["rows"]
    for item in ITEMS:
        assert any(item in row["name"] for row in rows), f"no row for {item!r} in {[r['name'] for r in rows]}"
    for row in rows:
        for key in ("ours", "baseline", "ratio", "measured"):
            value = row[key]
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (row["name"], key, value)
        assert isinstance(row["met"], bool), row
        assert row["name"] in done.stdout  # the printed table has the same rows
    training = next(row for row in rows if row["name"] == "training on MNIST")
    assert training["details"]["bit_identical"] is True  # same seed, same weights
    stream = next(row for row in rows if row["name"].startswith("VGG16"))
    assert stream["details"]["ours"]["first_maps_match"] is True
    assert "GFLOP/s" in done.stdout and "images/s" in done.stdout
    grading = next(row for row in rows if row["name"].startswith("autograde"))
    copies = grading["details"]["copies"]
    assert grading["details"]["graded"] == copies  # every copy of the solution graded, full marks
    assert grading["details"]["results"] == [["graded", 10.0, 10.0]], grading["details"]
    # the rows whose goals this machine misses say what was measured and tried, printed under the table
    for prefix in ("all conv maps", "32 maps", "autograde", "grader check"):
        row = next(row for row in rows if row["name"].startswith(prefix))
        assert "tried:" in row["why"] and any(ch.isdigit() for ch in row["why"]), row
        if row["met"] is False:
            assert f"MISSED {row['name']}: " in done.stdout
    check = next(row for row in rows if row["name"].startswith("grader check"))
    assert check["details"]["exit_code"] == 0 and check["details"]["progress_lines"], check["details"]
