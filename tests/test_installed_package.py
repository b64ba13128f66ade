"""The course as a learner installs it: a wheel in a fresh venv, used outside any checkout.

The wheel is built from a copy of the package's sources (nothing is written into the repo) and
installed with pip into a new venv. Its dependencies come from this checkout's ``.venv`` through
a ``.pth`` line (as a site's shared environment would provide them; downloading TensorFlow again
would cost minutes), so ``course`` and ``grader`` are the wheel's own copies. From a temporary
folder, with the interpreter called by a relative path as in ``../v/bin/python``, notebook 02's
solution runs in a real Jupyter kernel and ``grader check`` grades it in the sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest

from course import _paths
from grader import release as rel

pytestmark = pytest.mark.slow

NAME = "02_first_layer_maps"
#: Files of the package that are not modules and that the installed package reads.
PACKAGE_DATA = ["course/_explore.js", "grader/slurm/grade.sbatch"]
#: The kernel's own account of where it imports the course from, appended as a last cell.
WHERE_CELL = "import json, sys, course, grader\nprint(json.dumps([sys.executable, course.__file__, grader.__file__]))"


def _run(argv: list, cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory, trained_model, mnist) -> Path:
    """A fresh venv holding the course's wheel (its dependencies from this checkout's venv)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(rel.ROOT / name, source / name)
    for package in ("course", "grader"):
        shutil.copytree(rel.ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(root / "dist"), "./source"],
         cwd=root, env=env)
    (wheel,) = (root / "dist").glob("course-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    missing = [f for f in PACKAGE_DATA if f not in names]
    assert not missing, f"the wheel lacks {missing}: list them in pyproject's [tool.setuptools.package-data]"

    venv = root / "v"
    _run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], cwd=root, env=env)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
          "--no-deps", str(wheel)], cwd=root, env=env)
    return venv


def _learner_env() -> dict:
    """The learner's shell: no path into this checkout, the course's model and data where CI keeps them."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("JPY_")}
    env.update(COURSE_MODEL_DIR=str(_paths.model_dir()), COURSE_DATA_DIR=str(_paths.data_dir()))
    return env


def test_notebook_02_runs_and_self_checks_from_the_installed_package(installed, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    notebook = nbformat.read(rel.SOLUTIONS / NAME / f"{NAME}.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(WHERE_CELL))
    nbformat.write(notebook, work / f"{NAME}.ipynb")
    python = os.path.relpath(installed / "bin" / "python", work)
    assert python.startswith(".."), python
    env = _learner_env()

    _run([python, "-c", "import sys, nbformat, nbclient; nb = nbformat.read(sys.argv[1], as_version=4); "
          "nbclient.NotebookClient(nb, timeout=600, resources={'metadata': {'path': '.'}}).execute(); "
          "nbformat.write(nb, sys.argv[1])", f"{NAME}.ipynb"], cwd=work, env=env)
    executed = nbformat.read(work / f"{NAME}.ipynb", as_version=4)
    kernel_python, course_file, grader_file = json.loads(executed.cells[-1].outputs[0].text)
    site = str(installed / "lib")
    assert kernel_python.startswith(str(installed)), f"the kernel ran {kernel_python}, not the fresh venv's Python"
    assert course_file.startswith(site) and grader_file.startswith(site), (
        f"the kernel imported {course_file} and {grader_file}, not the wheel installed in {installed}")
    assert not any(o.output_type == "error" for cell in executed.cells for o in cell.get("outputs", []))

    checked = _run([python, "-m", "grader", "check", f"{NAME}.ipynb"], cwd=work, env=env)
    report = checked.stdout
    assert f"{NAME}: 10 / 10 points" in report, report
    assert "grader error" not in report and "Traceback" not in report + checked.stderr, report
    left = sorted(p.name for p in work.iterdir())
    assert left == [f"{NAME}.ipynb"], f"grader check left files in the learner's folder: {left}"
