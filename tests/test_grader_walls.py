"""The grader's walls between students, and around its own verdicts (issue 25).

Each class is graded for real (``python -m grader autograde`` on submissions generated from the
real notebook 02), attackers next to the students they try to reach:

* **leftovers**: one student leaves files in read-only (0555, 0000) folders of ``/tmp``,
  ``/dev/shm`` and its scratch folder, fills ``/tmp`` and ``/dev/shm``, and changes the mode and
  extended attributes of the folders themselves; the students graded after it by the same
  worker (``--jobs 1``) look for any of it. As root and as an ordinary user, whose grader must
  also leave no ``grader-*`` work folder in its temporary folder;
* **the reference guard**: every bypass of issue 25 (rebinding
  ``course.checks.reference_off_limits``, clearing the grader's lists through ``gc``,
  ``importlib.reload``, ``exec`` of the package's source, a ``__code__`` copy, a pasted copy)
  fails the check with the sentence, and the copies are marked *needs review* in the result, the
  export and the feedback; an ordinary student is not;
* **forged replies**: a graded function that writes answers for later calls into every pipe it
  can reach gets its honest score;
* **closed streams**: closing ``sys.stdout`` costs nothing (as in Jupyter); closing descriptors
  0-20 fails that check with a sentence, and the next check runs.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from submissions import trust as T
from test_grader_trust import grader, results

pytestmark = pytest.mark.slow

ROOT = T.ROOT
N02, MAM, GFM, PLOT = T.N02, T.MAM, T.GFM, T.PLOT
MARK = "LEFT_BY_A01"
NOBODY = 65534

# ------------------------------------------------------------------------------------ leftovers
LEAVE = rf'''
import os
import re
_bases = ["/tmp", "/dev/shm", os.getcwd(), os.path.dirname(os.getcwd())]
for _base in _bases:
    try:
        _d = os.path.join(_base, "{MARK}_dir")
        os.makedirs(os.path.join(_d, "locked"), exist_ok=True)
        with open(os.path.join(_d, "note.txt"), "w") as _f:
            _f.write("{MARK} in a 0555 dir")
        with open(os.path.join(_d, "locked", "inside.txt"), "w") as _f:
            _f.write("{MARK}")
        os.chmod(os.path.join(_d, "locked"), 0)
        os.chmod(_d, 0o555)
    except OSError:
        pass
for _base in ("/tmp", "/dev/shm"):  # fill them (files of at most 64 MB: the grader's file limit)
    for _i in range(8):
        try:
            with open(os.path.join(_base, f"{MARK}_fill_{{_i}}.bin"), "wb") as _f:
                for _ in range(60):
                    _f.write(b"\0" * 2**20)
        except OSError:
            break
for _base in ("/tmp", "/dev/shm"):
    try:
        os.setxattr(_base, "user.{MARK}", b"1")
    except OSError:
        pass
    try:
        os.chmod(_base, 0o500)
    except OSError:
        pass
'''

# the victim keeps its answer only where nothing of the attacker is found
LOOK = rf'''
import os
import re
_found = []
for _base in ("/tmp", "/dev/shm", os.getcwd(), os.path.dirname(os.getcwd())):
    for _root, _dirs, _files in os.walk(_base):
        _found += [os.path.join(_root, _n) for _n in _dirs + _files if "{MARK}" in _n]
    try:
        if any("{MARK}" in _a for _a in os.listxattr(_base)):
            _found.append(f"an extended attribute of {{_base}}")
    except OSError:
        pass
for _base in ("/tmp", "/dev/shm"):
    _free = os.statvfs(_base).f_bavail * os.statvfs(_base).f_frsize
    if _free < 200 * 2**20:
        _found.append(f"{{_base}} has {{_free // 2**20}} MB free")
    if not os.access(_base, os.W_OK | os.X_OK):
        _found.append(f"{{_base}} is not writable (mode {{oct(os.stat(_base).st_mode)}})")
    try:
        with open(os.path.join(_base, "victim_probe.txt"), "w") as _f:
            _f.write("x")
    except OSError as _e:
        _found.append(f"cannot write {{_base}}: {{_e}}")
if _found:
    def get_feature_maps(model, image, layer_name):
        raise RuntimeError("another student's files reached this sandbox: " + "; ".join(_found[:6]))
'''


def _leftover_class() -> list[T.Case]:
    attacker = T.insert_after(T.correct(N02), MAM, T.code_cell(f"# {T.TAG}\n" + LEAVE))
    cases = [T.Case("a01_leaves_files", N02, "leaves files, full and read-only folders in /tmp, /dev/shm, scratch",
                    "attack", None, 10, attacker)]
    for student in ("v01_looks", "v02_looks"):
        cases.append(T.Case(student, N02, "correct; fails get_feature_maps if it finds a01's traces", "ordinary",
                            10, 10, T.insert_after(T.correct(N02), GFM, T.code_cell(LOOK))))
    return cases


def _inaccessible_ancestor(path: str) -> Path | None:
    """The first folder above ``path`` that other users cannot enter (e.g. /root, 0700), or None."""
    for parent in reversed(Path(path).parents):
        if parent != Path("/") and not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


def _as_nobody(argv: list[str], base: Path) -> list[str]:
    """``argv`` as user nobody; where the interpreter lives in a folder nobody cannot enter (a
    pyenv under /root, 0700), a mount namespace of this command's own shows that one installation
    there (nothing changes outside it)."""
    python = os.path.realpath(sys.executable)
    blocked = _inaccessible_ancestor(python)
    run = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", *argv]
    if blocked is None:
        return run
    inside = blocked / Path(python).relative_to(blocked).parts[0]  # e.g. /root/.pyenv
    keep = base / "keep"
    keep.mkdir()
    script = ('mount --bind "$1" "$2" && mount -t tmpfs -o mode=755 tmpfs "$3" && mkdir -p "$4" && '
              'mount --bind "$2" "$4" && shift 4 && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(inside), str(keep), str(blocked), str(inside), *run]


def _grade_as(user: str, course: Path, base: Path) -> subprocess.CompletedProcess:
    tmpdir = base / "tmp"
    home = base / "home"
    for folder in (tmpdir, home):
        folder.mkdir()
    env = {**os.environ, "TMPDIR": str(tmpdir), "HOME": str(home)}
    argv = [sys.executable, "-m", "grader", "--course-dir", str(course), "--source", str(ROOT / "solutions"),
            "autograde", N02, "--jobs", "1", "--quiet", "--no-canary", "--cell-timeout", "30"]
    if user == "nobody":
        for path in (course, tmpdir, home):
            for root, dirs, files in os.walk(path):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.lchown(name, NOBODY, NOBODY)
        argv = _as_nobody(argv, base)
    return subprocess.run(argv, cwd=course, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_nothing_a_student_leaves_reaches_the_next_one(user, trained_model):
    if os.geteuid() != 0:
        pytest.fail("this test runs the grader as root and as user nobody: run it as root (CI does)")
    base = Path(tempfile.mkdtemp(prefix="walls-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        course = base / "classroom"
        cases = _leftover_class()
        T.write(course, cases)
        proc = _grade_as(user, course, base)
        assert proc.returncode == 0, (f"autograde as {user} exited {proc.returncode}:\n"
                                      f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        got = results(course)
        for case in cases:
            result = got.get((N02, case.student))
            assert result is not None and result["status"] == "graded", (case.student, result)
            messages = [t["message"] for t in result["tests"].values()], result["problems"]
            if case.kind == "ordinary":
                assert result["score"] == 10, (case.student, user, messages)
            else:
                assert result["score"] <= case.honest, (case.student, user, messages)
        left = sorted(p.name for p in (base / "tmp").iterdir())
        assert left == [], f"the grader (as {user}) left in its temporary folder: {left}"
    finally:
        for root, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ reference guard, forged replies, closed streams
ONE_LINE = ("def get_feature_maps(model, image, layer_name):\n"
            "    return {call}(model, image[None], layer_name)[layer_name][0]\n")
BYPASSES = {  # student -> (code before the one-line answer, the function it calls, what the scan must name)
    "r01_rebinds_the_guard": ("import contextlib\n"
                              "course.checks.reference_off_limits = lambda e, r: contextlib.nullcontext([])\n",
                              "course.extract_feature_maps", "course.checks"),
    "r02_clears_lists_by_gc": ("import gc\nfor _o in gc.get_objects():\n"
                               "    if type(_o).__name__ in ('Server', 'CallTrace'):\n"
                               "        for _k in ('references', 'course_code', 'wanted'):\n"
                               "            _o.__dict__.pop(_k, None)\n", "course.extract_feature_maps", "gc"),
    "r03_reloads": ("import importlib, course.activations\nimportlib.reload(course.activations)\n",
                    "course.activations.extract_feature_maps", "reload"),
    "r04_execs_the_source": ("import course.activations as _a\n_ns = {'__name__': 'copied'}\n"
                             "exec(open(_a.__file__).read(), _ns)\n", "_ns['extract_feature_maps']", "exec"),
    "r05_copies_code": ("import types\n_f = types.FunctionType(course.extract_feature_maps.__code__, "
                        "course.activations.__dict__, 'x', course.extract_feature_maps.__defaults__)\n", "_f",
                        "__code__"),
}

# each wraps the solution's own get_feature_maps (its honest answer), renamed below
FORGE = '''
import os, stat, json

def get_feature_maps(model, image, layer_name):
    forged = "".join(json.dumps({"op": "return", "id": k, "value": {"t": "py", "v": None}}) + "\\n"
                     for k in range(1, 400)).encode()
    for fd in map(int, os.listdir("/proc/self/fd")):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.write(fd, forged)
        except OSError:
            pass
    return honest_get_feature_maps(model, image, layer_name)
'''

CLOSE_STDOUT = '''
import sys

def get_feature_maps(model, image, layer_name):
    sys.stdout.close()
    return honest_get_feature_maps(model, image, layer_name)
'''

CLOSE_FDS = '''
import os
import re

def get_feature_maps(model, image, layer_name):
    os.closerange(0, 21)
    return honest_get_feature_maps(model, image, layer_name)
'''


def _pasted_copy() -> str:
    """Notebook code defining the package's ``extract_feature_maps`` from its pasted source."""
    import inspect

    import course.activations as activations

    def used(code) -> set[str]:
        return set(code.co_names).union(*(used(c) for c in code.co_consts if hasattr(c, "co_names")))

    annotations = {"keras", "np", "os"}  # evaluated when the pasted def runs
    code = activations.extract_feature_maps.__code__
    names = sorted(n for n in used(code) | annotations if hasattr(activations, n))
    return (f"from course.activations import {', '.join(names)}\n"
            + inspect.getsource(activations.extract_feature_maps) + "\n\n"
            + ONE_LINE.format(call="extract_feature_maps"))


def _wrapping(attack: str) -> dict:
    """Notebook 02 whose get_feature_maps is the solution's, wrapped by ``attack``."""
    honest = T.solutions(N02)[GFM].replace("def get_feature_maps(", "def honest_get_feature_maps(")
    return T.correct(N02, **{GFM: honest + "\n" + attack})


def _reference_class() -> list[T.Case]:
    fails = (f"{GFM}_tests",)
    passes = (f"{PLOT}_tests",)
    cases = []
    for student, (before, call, _) in BYPASSES.items():
        # clearing the trace's own lists blinds every traced call: the plot check fails too
        score, passing = (None, ()) if "gc" in student else (6, passes)
        cases.append(T.Case(student, N02, f"bypass: {student}", "attack", score, 10,
                            T.correct(N02, **{GFM: before + ONE_LINE.format(call=call)}),
                            failing=fails, passing=passing, reason="not allowed here|could not see"))
    cases.append(T.Case("r06_pastes_a_copy", N02, "pastes the package's function", "attack", 6, 10,
                        T.correct(N02, **{GFM: _pasted_copy()}), failing=fails, passing=passes,
                        reason="runs a copy"))
    cases.append(T.Case("f01_forges_replies", N02, "writes answers to later requests into every pipe", "attack",
                        10, 10, _wrapping(FORGE)))
    cases.append(T.Case("c01_closes_stdout", N02, "closes sys.stdout", "ordinary", 10, 10,
                        _wrapping(CLOSE_STDOUT)))
    cases.append(T.Case("c02_closes_fds", N02, "closes descriptors 0-20", "attack", 6, 10, _wrapping(CLOSE_FDS),
                        failing=fails, passing=passes, reason="closed the file descriptors"))
    for student in ('=HYPERLINK("x","y")', "@ada"):
        cases.append(T.Case(student, N02, "correct (an id a spreadsheet would read as a formula)", "ordinary",
                            10, 10, T.correct(N02)))
    return cases


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, trained_model):
    """The class above graded (``--jobs 2``), then feedback and the three exports."""
    base = tmp_path_factory.mktemp("reference")
    course = base / "classroom"
    cases = _reference_class()
    T.write(course, cases)
    source = ROOT / "solutions"
    steps = {
        "autograde": ("autograde", N02, "--jobs", "2", "--quiet", "--no-canary", "--cell-timeout", "60"),
        "feedback": ("feedback",),
        "csv": ("export", "--out", str(base / "grades.csv")),
        "gradescope": ("export", "--format", "gradescope", "--out", str(base / "gradescope")),
    }
    for what, args in steps.items():
        proc = grader(*args, course=course, source=source, cwd=course)
        assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    with open(base / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    return {"cases": {c.student: c for c in cases}, "results": results(course), "rows": rows, "course": course,
            "base": base, "csv": (base / "grades.csv").read_text(encoding="utf-8")}


def _why(run, student: str) -> str:
    result = run["results"].get((N02, student))
    if result is None:
        return f"{student}: no result"
    return f"{student}: score {result.get('score')}, review {result.get('review')}, " + "; ".join(
        f"{gid}: {t['message'][:300]}" for gid, t in result["tests"].items() if not t["passed"])


def _row(run, student: str) -> dict:
    """The student's row of grades.csv, where an id like ``=HYPERLINK(...)`` is written as ``'=HYPERLINK(...)``."""
    return run["rows"]["'" + student if student[0] in "=+-@" else student]


def _feedback(run, student: str) -> str:
    return "".join(p.read_text(encoding="utf-8") for p in (run["course"] / "feedback" / student).rglob("*.html"))


@pytest.mark.parametrize("student", [*BYPASSES, "r06_pastes_a_copy", "f01_forges_replies", "c01_closes_stdout",
                                     "c02_closes_fds", '=HYPERLINK("x","y")', "@ada"])
def test_each_student_gets_the_score_it_earned(reference_run, student):
    case = reference_run["cases"][student]
    result = reference_run["results"].get((N02, student))
    assert result is not None and result["status"] == "graded", _why(reference_run, student)
    if case.score is None:
        assert result["score"] < case.honest, _why(reference_run, student)
    else:
        assert result["score"] == case.score, _why(reference_run, student)
    for gid in case.passing:
        assert result["tests"][gid]["passed"], _why(reference_run, student)
    for gid in case.failing:
        assert re.search(case.reason, result["tests"][gid]["message"], re.I), _why(reference_run, student)


@pytest.mark.parametrize("student", [*BYPASSES, "r06_pastes_a_copy", "f01_forges_replies"])
def test_a_bypass_needs_review_in_result_export_and_feedback(reference_run, student):
    review = reference_run["results"][(N02, student)].get("review") or []
    assert review, _why(reference_run, student)
    expected = {**{s: b[2] for s, b in BYPASSES.items()}, "f01_forges_replies": "os.write",
                "r06_pastes_a_copy": "a copy of `course.extract_feature_maps`"}[student]
    assert any(expected in why for why in review), (expected, review)
    assert expected in _row(reference_run, student)["needs_review"], _row(reference_run, student)
    page = _feedback(reference_run, student)
    assert "Needs review by your instructor" in page, student
    gradescope = json.loads((reference_run["base"] / "gradescope" / N02 / student / "results.json").read_text())
    assert "needs review" in gradescope["output"], gradescope["output"]


@pytest.mark.parametrize("student", ["c01_closes_stdout", '=HYPERLINK("x","y")', "@ada"])
def test_an_ordinary_student_needs_no_review(reference_run, student):
    assert not reference_run["results"][(N02, student)].get("review"), _why(reference_run, student)
    row = _row(reference_run, student)
    assert row["needs_review"] == "" and row["score"] == "10", row
    assert "Needs review" not in _feedback(reference_run, student)


def test_no_student_id_is_a_formula_in_the_export(reference_run):
    for line in reference_run["csv"].splitlines()[1:]:
        first = next(csv.reader([line]))[0]
        assert not first.startswith(("=", "+", "-", "@")), line
    assert "'=HYPERLINK" in reference_run["csv"] and "'@ada" in reference_run["csv"]
