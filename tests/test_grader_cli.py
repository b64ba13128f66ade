"""`python -m grader` with bad arguments: one sentence on stderr, no traceback, a distinct exit code.

Exit codes: 0 done, 1 `check` ran and an exercise fails, 2 bad argument or input (nothing done),
3 the grader could not run. Nothing that did nothing may say it succeeded.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDENT_02 = ROOT / "notebooks" / "02_first_layer_maps" / "02_first_layer_maps.ipynb"
USAGE, CHECK_FAILED = 2, 1


def grader(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "grader", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def one_sentence(result: subprocess.CompletedProcess, *phrases: str) -> None:
    progress = re.compile(r"\[ *\d+\.\d s\] ")  # a stage line ("[  0.1 s] collecting ..."), not an error
    lines = [line for line in result.stderr.strip().splitlines() if not progress.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])


@pytest.fixture
def course_dir(tmp_path) -> Path:
    folder = tmp_path / "course"
    folder.mkdir()
    return folder


def make_zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return path


CASES = {
    "missing course dir": (["--course-dir", "{tmp}/nowhere", "export"], "is not a folder: give the course folder"),
    "source without assignments": (["--source", "{tmp}", "autograde"], "holds no assignments"),
    "unknown assignment": (["autograde", "nosuch"],
                           "for assignment 'nosuch'; known assignments: 01_train_cnn, 02_first_layer_maps"),
    "nothing submitted": (["autograde"], "no submissions of any assignment", "collect them first"),
    "jobs zero": (["autograde", "--jobs", "0"], "--jobs must be at least 1, got 0"),
    "jobs negative": (["autograde", "-j", "-3"], "--jobs must be at least 1, got -3"),
    "bad shard": (["autograde", "--shard", "5/4"], "--shard must be i/n"),
    "merge missing folder": (["merge", "{tmp}/shard-results"], "no results folder", "--results-dir"),
    "merge nothing": (["merge"], "no graded results", "run autograde first"),
    "feedback unknown assignment": (["feedback", "nosuch"], "no assignment named 'nosuch'; known assignments:"),
    "feedback nothing": (["feedback"], "no autograded notebooks", "run autograde (or merge) first"),
    "export nothing": (["export", "--out", "{tmp}/grades.csv"], "no results in", "nothing was exported"),
    "export into a folder": (["export", "--out", "{tmp}"], "is a folder: give the CSV file to write"),
    "export under a file": (["export", "--out", "{tmp}/a_file/grades.csv"], "--out's folder", "is a file, not a folder"),
    "release onto a file": (["release", "--dest", "{tmp}/a_file"], "--dest", "is a file, not a folder"),
    "collect nothing there": (["collect", "{tmp}/nothing-here"], "is neither a folder nor a zip file"),
    "collect empty zip": (["collect", "{tmp}/empty.zip"], "nothing was collected from"),
    "formgrader before autograde": (["formgrader", "--no-browser"], "no gradebook.db and autograded/ in",
                                    "run autograde (or merge) first"),
    "check missing notebook": (["check", "{tmp}/missing.ipynb"], "no notebook at"),
    "check a text file": (["check", "{tmp}/a_file"], "is not valid JSON", "open a saved copy in Jupyter"),
    "check without grader cells": (["check", "{tmp}/plain.ipynb"], "has no autograded test cell"),
}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_arguments_get_one_sentence_and_exit_2(course_dir, case):
    import nbformat

    tmp = course_dir.parent
    (tmp / "a_file").write_text("not a notebook, not a folder")
    make_zip(tmp / "empty.zip", {})
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), tmp / "plain.ipynb")
    args, *phrases = CASES[case]
    result = grader("--course-dir", course_dir, *[a.format(tmp=tmp) for a in args])
    assert result.returncode == USAGE, (result.returncode, result.stdout, result.stderr)
    one_sentence(result, *phrases)
    assert not (tmp / "grades.csv").exists()


def test_formgrader_never_overwrites_an_nbgrader_config_someone_else_wrote(course_dir):
    (course_dir / "gradebook.db").write_bytes(b"")
    (course_dir / "autograded").mkdir()
    theirs = "c = get_config()\nc.CourseDirectory.root = '/srv/their/course'\n"
    (course_dir / "nbgrader_config.py").write_text(theirs)
    result = grader("--course-dir", course_dir, "formgrader", "--no-browser")
    assert result.returncode == USAGE, (result.returncode, result.stdout, result.stderr)
    one_sentence(result, "nbgrader_config.py exists and was not written by the grader", "move it away")
    assert (course_dir / "nbgrader_config.py").read_text() == theirs


def test_options_of_another_command_are_refused(course_dir):
    result = grader("--course-dir", course_dir, "export", "--port=9000")
    assert result.returncode == USAGE and "unrecognized arguments: --port=9000" in result.stderr, result.stderr


def test_unknown_student_lists_the_students_who_submitted(course_dir, tmp_path):
    archive = make_zip(tmp_path / "class.zip", {f"{s}/02_first_layer_maps/02_first_layer_maps.ipynb":
                                                STUDENT_02.read_text() for s in ("alice", "bob")})
    assert grader("--course-dir", course_dir, "collect", archive).returncode == 0
    result = grader("--course-dir", course_dir, "autograde", "--student", "carol")
    assert result.returncode == USAGE
    one_sentence(result, "no submissions from student 'carol'", "students with submissions: alice, bob")


def test_collect_reports_every_member_it_skips(course_dir, tmp_path):
    archive = make_zip(tmp_path / "class.zip", {
        "../escape.ipynb": "{}",
        "/etc/absolute.ipynb": "{}",
        "alice/02_first_layer_maps/02_first_layer_maps.ipynb": STUDENT_02.read_text(),
        "random_name.ipynb": "{}",
    })
    result = grader("--course-dir", course_dir, "collect", archive)
    assert result.returncode == 0, result.stderr
    assert "skipped ../escape.ipynb: its path leaves the archive" in result.stdout
    assert "skipped /etc/absolute.ipynb: its path leaves the archive" in result.stdout
    assert "skipped random_name.ipynb: its name does not match" in result.stdout
    assert "collected 1 submission(s) from 1 student(s)" in result.stdout
    assert not (tmp_path / "escape.ipynb").exists()


@pytest.mark.slow
def test_check_takes_global_options_and_exits_1_when_an_exercise_fails(course_dir):
    """The grader README writes global options first; `check` accepts them like every command."""
    result = grader("--course-dir", course_dir, "check", STUDENT_02)
    assert result.returncode == CHECK_FAILED, result.stderr
    assert "0 / 10 points" in result.stdout and "FAILED" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_help_lists_the_exit_codes():
    result = grader("--help")
    assert result.returncode == 0
    for line in ("1 ``check`` ran and an exercise fails", "2 a bad argument", "3 the grader could not run"):
        assert line in " ".join(result.stdout.split()), line


def test_help_imports_no_tensorflow():
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "grader", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert "argparse" in imported
    assert not imported & {"tensorflow", "keras", "numpy", "matplotlib", "nbgrader"}, imported


def test_formgrader_as_root_passes_allow_root_and_says_so(tmp_path, capsys, monkeypatch):
    from grader.formgrader import lab_command
    from grader.instructor import Course

    course = Course(tmp_path, ROOT / "solutions")
    for uid, wanted in ((0, True), (1000, False)):
        monkeypatch.setattr("os.geteuid", lambda uid=uid: uid)
        command = lab_command(course, ["--no-browser"])
        assert ("--allow-root" in command) is wanted, (uid, command)
        assert command[-1] == "--no-browser" and f"--ServerApp.root_dir={tmp_path}" in command
        note = capsys.readouterr().out
        assert ("running as root, so JupyterLab gets --allow-root" in note) is wanted, note
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert lab_command(course, ["--allow-root"]).count("--allow-root") == 1


def test_the_documented_nbgrader_config_option_loads_the_course_config(tmp_path):
    """grader/nbgrader_config.py's docstring names --NbGrader.config_file=; nbgrader 0.9.6 has no
    --config (it warns that no config was found and goes on without one)."""
    config = tmp_path / "mine.py"
    database = tmp_path / "from_config.db"
    config.write_text(f"c = get_config()\nload_subconfig({str(ROOT / 'grader' / 'nbgrader_config.py')!r})\n"
                      f"c.CourseDirectory.db_url = 'sqlite:///{database}'\n")
    assert "--NbGrader.config_file=" in (ROOT / "grader" / "nbgrader_config.py").read_text()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for option, loads in (([f"--NbGrader.config_file={config}"], True), (["--config", str(config)], False)):
        database.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "nbgrader", "db", "assignment", "list", *option], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
        assert database.exists() is loads, option
