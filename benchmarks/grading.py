"""Benchmark (not a test): the grader with --jobs 2 against plain sequential `nbgrader autograde`.

    python -m benchmarks.grading [--count 20]

Grades the same submissions of notebook 02 (correct, partly correct, unfinished and failing
ones, from tests/submissions/corpus.py) both ways on this machine and prints the seconds per
submission and the ratio. It also measures the overhead of the grader per submission beyond
executing the notebook: the grader's time for one submission at a time minus the time to
execute the same notebook top to bottom with nbclient (what any grading must at least do).
Wall-clock figures on a shared machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # as the tests import it: a site-packages `tests` may shadow ROOT/tests

from submissions.corpus import NAME, SOURCE, cases  # noqa: E402

MIX = ["correct"] * 10 + ["partly_correct"] * 4 + ["empty"] * 3 + ["exception"] * 3


def _write(course: Path, count: int, mix: list[str] = MIX) -> None:
    by_name = {c.name: c for c in cases()}
    for i in range(count):
        case = by_name[mix[i % len(mix)]]
        path = course / "submitted" / f"s{i:03d}_{case.name}" / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(case.notebook))


def _run(cmd: list[str], cwd: Path) -> float:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def nbgrader_sequential(tmp: Path, count: int) -> float:
    course = tmp / "nbgrader"
    shutil.copytree(SOURCE.parent, course / "source" / NAME)
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nload_subconfig({str(ROOT / 'grader' / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.source_directory = 'source'\nc.CourseDirectory.release_directory = 'release'\n"
    )
    _write(course, count)
    nbgrader = [sys.executable, "-m", "nbgrader"]
    _run(nbgrader + ["generate_assignment", NAME, "--force"], course)
    return _run(nbgrader + ["autograde", NAME, "--force"], course)


def ours(tmp: Path, count: int, jobs: int, mix: list[str] = MIX) -> float:
    course = tmp / f"ours{jobs}"
    _write(course, count, mix)
    return _run([sys.executable, "-m", "grader", "--course-dir", str(course), "--source", str(SOURCE.parents[1]),
                 "autograde", NAME, "--jobs", str(jobs), "--quiet", "--no-merge"], ROOT)


def execute_once(tmp: Path) -> float:
    """Execute one correct submission top to bottom with nbclient (no grading at all)."""
    import nbformat
    from nbclient import NotebookClient

    correct = next(c for c in cases() if c.name == "correct").notebook
    nb = nbformat.reads(json.dumps(correct), as_version=4)
    t = time.perf_counter()
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp)}}).execute()
    return time.perf_counter() - t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        seq = nbgrader_sequential(tmp, args.count)
        par = ours(tmp, args.count, jobs=2)
        one = ours(tmp, 3, jobs=1)
        execute = sum(execute_once(tmp) for _ in range(2)) / 2
    n = args.count
    print(f"{n} submissions of {NAME} on {os.cpu_count()} cores")
    print(f"  nbgrader autograde, sequential : {seq:7.1f} s  ({seq / n:5.2f} s per submission)")
    print(f"  python -m grader --jobs 2      : {par:7.1f} s  ({par / n:5.2f} s per submission)")
    print(f"  speed-up                       : {seq / par:7.2f}x  (goal >= 1.8x)")
    print(f"  grader, --jobs 1, 3 submissions: {one / 3:7.2f} s per submission (incl. one-off start-up)")
    print(f"  executing the notebook (nbclient): {execute:5.2f} s")
    print(f"  overhead beyond executing it   : {one / 3 - execute:7.2f} s per submission (goal <= 1 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
