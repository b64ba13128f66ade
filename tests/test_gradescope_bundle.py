"""The Gradescope autograder bundle (issue 24): ``python -m grader gradescope-bundle`` writes the zip,
and its ``run_autograder`` is run here on a folder laid out as Gradescope's ``/autograder/``
(``source/`` the unpacked zip, ``submission/`` the student's files, ``results/results.json`` out),
grading for real; the result is checked against Gradescope's published format."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from test_grader import CASES, NAME, ROOT, SOURCE, grader

from grader.gradescope import extract

#: Gradescope's results.json: top-level and per-test fields, and the values it accepts.
TOP = {"score": (int, float), "execution_time": (int, float), "output": str, "output_format": str,
       "stdout_visibility": str, "tests": list}
TEST = {"name": str, "number": str, "score": (int, float), "max_score": (int, float), "status": str,
        "output": str, "visibility": str}
VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}


def check_format(results: dict) -> None:
    for key, kind in TOP.items():
        assert isinstance(results.get(key), kind), (key, results.get(key))
    assert results["output_format"] in FORMATS and results["stdout_visibility"] in VISIBILITY
    for test in results["tests"]:
        for key, kind in TEST.items():
            assert isinstance(test.get(key), kind), (key, test)
        assert test["status"] in {"passed", "failed"} and test["visibility"] in VISIBILITY, test
        assert 0 <= test["score"] <= test["max_score"], test


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, trained_model):
    folder = tmp_path_factory.mktemp("bundle")
    archive = folder / "autograder.zip"
    out = grader("--source", str(SOURCE.parents[1]), "gradescope-bundle", NAME, "--out", str(archive)).stdout
    assert f"wrote {archive}" in out, out
    return archive


def test_the_bundle_holds_what_gradescope_runs(bundle):
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
        modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        run = z.read("run_autograder").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "pyproject.toml", f"solutions/{NAME}/{NAME}.ipynb",
            "course/__init__.py", "grader/__main__.py", "grader/slurm/grade.sbatch", "models/seed_cnn.keras"} <= names
    assert not any("__pycache__" in n or n.startswith(("notebooks/", "tests/", "datasets/")) for n in names)
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert f"assignment={NAME}" in run and "--weak-isolation" in run


@pytest.mark.slow
@pytest.mark.parametrize("case", ["correct", "partly_correct"])
def test_run_autograder_on_a_gradescope_layout_writes_results_json(bundle, case, tmp_path):
    root = tmp_path / "autograder"
    extract(bundle, root / "source")
    (root / "source" / "datasets").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "datasets" / "mnist.npz", root / "source" / "datasets" / "mnist.npz")
    (root / "submission").mkdir()
    # the student renamed the notebook: the one .ipynb handed in is graded
    (root / "submission" / "my_work.ipynb").write_text(json.dumps(CASES[case].notebook))
    (root / "results").mkdir()
    (root / "results" / "results.json").write_text('{"score": 1000}')  # what a cheating submission could leave
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable,
           "PYTHONPATH": str(root / "source")}
    proc = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    results = json.loads((root / "results" / "results.json").read_text())
    check_format(results)
    assert results["score"] == CASES[case].score, results
    assert sum(t["score"] for t in results["tests"]) == results["score"]
    assert len(results["tests"]) == 3 and [t["number"] for t in results["tests"]] == ["1", "2", "3"]


def test_run_autograder_says_when_no_single_notebook_was_handed_in(bundle, tmp_path):
    root = tmp_path / "autograder"
    extract(bundle, root / "source")
    (root / "submission").mkdir()
    for name in ("a.ipynb", "b.ipynb"):
        (root / "submission" / name).write_text("{}")
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((root / "results" / "results.json").read_text())
    assert results["score"] == 0 and f"Hand in one notebook, {NAME}.ipynb (found 2" in results["output"]
