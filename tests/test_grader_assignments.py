"""Every assignment through the project's grader (its solution full marks, its student version
zero), the canary, and a forced grader failure that must never become a zero.

All through the real CLI, real sandboxes (bubblewrap) and real checkers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
ASSIGNMENTS = sorted(p.name for p in SOLUTIONS.iterdir() if (p / f"{p.name}.ipynb").is_file())


def grader(course: Path, *args: str, source: Path = SOLUTIONS, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "grader", "--course-dir", str(course), "--source", str(source), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, **(env or {})})


def submit(course: Path, student: str, assignment: str, notebook: Path) -> None:
    dest = course / "submitted" / student / assignment / f"{assignment}.ipynb"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(notebook, dest)


def results(course: Path) -> dict[tuple[str, str], dict]:
    out = {}
    for path in (course / "grading" / "results").glob("*/*.json"):
        r = json.loads(path.read_text())
        out[(r["student"], r["assignment"])] = r
    return out


@pytest.mark.slow
def test_every_assignment_solution_full_marks_student_version_zero(tmp_path, trained_model):
    course = tmp_path / "course"
    for name in ASSIGNMENTS:
        submit(course, "solution", name, SOLUTIONS / name / f"{name}.ipynb")
        submit(course, "release", name, NOTEBOOKS / name / f"{name}.ipynb")
    proc = grader(course, "autograde", "--jobs", "2", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "canary: grading the solution of" in proc.stdout
    got = results(course)
    assert len(got) == 2 * len(ASSIGNMENTS)
    for name in ASSIGNMENTS:
        solved, blank = got[("solution", name)], got[("release", name)]
        failed = {g: t["message"] for g, t in solved["tests"].items() if not t["passed"]}
        assert solved["status"] == "graded" and solved["score"] == solved["max_score"] > 0, (name, failed, solved["problems"])
        assert blank["status"] == "graded" and blank["score"] == 0, (name, blank["tests"])
        for gid, test in blank["tests"].items():  # every failure of the blank notebook says why
            assert test["message"], (name, gid)


@pytest.mark.slow
def test_canary_stops_the_batch_when_the_solution_loses_points(tmp_path, trained_model):
    name = "02_first_layer_maps"
    source = tmp_path / "solutions"
    shutil.copytree(SOLUTIONS / name, source / name)
    nb = json.loads((source / name / f"{name}.ipynb").read_text())
    for cell in nb["cells"]:  # the environment "changed": the package's maps no longer match
        text = "".join(cell["source"])
        if cell["metadata"].get("nbgrader", {}).get("grade_id") == "get_feature_maps_tests":
            cell["source"] = text.replace('["conv1"][0]\nassert np.allclose(maps', '["conv1"][0] + 1.0\nassert np.allclose(maps')
            assert cell["source"] != text
    (source / name / f"{name}.ipynb").write_text(json.dumps(nb))
    course = tmp_path / "course"
    submit(course, "alice", name, SOLUTIONS / name / f"{name}.ipynb")
    proc = grader(course, "autograde", name, "--quiet", source=source)
    assert proc.returncode == 3, proc.stdout + proc.stderr  # could not run
    assert "the canary failed: the solution notebook of 02_first_layer_maps scores" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (course / "grading" / "results").exists() or not list((course / "grading" / "results").rglob("*.json"))


@pytest.mark.slow
def test_a_grader_failure_is_never_a_zero_and_is_graded_again(tmp_path, trained_model):
    name = "02_first_layer_maps"
    course = tmp_path / "course"
    for student in ("alice", "bob"):
        submit(course, student, name, SOLUTIONS / name / f"{name}.ipynb")
    # fault injection: every checker process ends itself after its second test
    proc = grader(course, "autograde", name, "--jobs", "2", "--quiet", "--no-canary",
                  env={"GRADER_TEST_CHECKER_CRASH_AFTER": "2"})
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "NOT GRADED because the grader itself failed" in proc.stderr
    got = results(course)
    for student in ("alice", "bob"):
        r = got[(student, name)]
        assert r["status"] == "error" and r["score"] is None, r
        assert "not graded: grader error" in r["problems"][0]
    out = tmp_path / "grades.csv"
    assert grader(course, "export", "--out", str(out)).returncode == 0
    with open(out, newline="") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert rows["alice"]["score"] == "not graded: grader error"
    # the gradebook holds no zero for them
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    from nbgrader.api import Gradebook, MissingEntry

    if (course / "gradebook.db").exists():
        with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
            with pytest.raises(MissingEntry):
                gb.find_submission(name, "alice")
    again = grader(course, "autograde", name, "--jobs", "2", "--quiet")  # no --force: errors are not cached
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert "2 submission(s) to grade" in again.stdout
    assert all(r["status"] == "graded" and r["score"] == 10 for r in results(course).values())
