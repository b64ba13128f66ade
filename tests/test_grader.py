"""The grader end to end: the corpus of submissions through the real CLI and real nbgrader
gradebook, export, feedback, rerun, shards, collect, self-study check; the codec's refusals.

The corpus (tests/submissions/corpus.py) is generated from the real notebook 02 at test time.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from submissions.corpus import NAME, SOURCE, cases, write

ROOT = Path(__file__).resolve().parents[1]
CASES = {c.name: c for c in cases()}
LIMITS = ["--cell-timeout", "10", "--memory-mb", "1500"]


def grader(*args: str, course: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m grader`` for real, as an instructor would."""
    cmd = [sys.executable, "-m", "grader"]
    if course is not None:
        cmd += ["--course-dir", str(course), "--source", str(SOURCE.parents[1])]
    proc = subprocess.run(cmd + list(args), cwd=ROOT, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"grader {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def results(course: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (course / "grading" / "results" / NAME).glob("*.json")}


def export_rows(course: Path, out: Path) -> dict[str, dict]:
    grader("export", "--out", str(out), course=course)
    with open(out, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, trained_model):
    """Every case of the corpus, autograded with --jobs 2 (and merged into the gradebook).

    ``trained_model`` makes sure the model cache exists first: sandboxes may read it but not
    write it, so without a cache every sandbox would try to train.
    """
    course = tmp_path_factory.mktemp("course")
    write(course)
    proc = grader("autograde", NAME, "--jobs", "2", *LIMITS, course=course)
    return course, results(course), proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_corpus_case_gets_its_score_and_a_reason(corpus, name):
    case = CASES[name]
    _, got, _ = corpus
    result = got[name]
    texts = [t["message"] for t in result["tests"].values()] + result["problems"]
    assert result["score"] == case.score, f"{name} ({case.description}): expected {case.score}, got {result['score']}: {texts}"
    if case.reason:
        assert any(case.reason in t for t in texts), f"{name}: expected a reason with {case.reason!r}, got {texts}"
    for test in result["tests"].values():  # every failed check says why
        assert test["passed"] or test["message"], f"{name}: a failed check without a message: {result['tests']}"
    assert not any("grader error" in t for t in texts), f"{name}: the grader itself failed: {texts}"


@pytest.mark.slow
def test_export_csv_one_row_per_submission_with_scores_and_reasons(corpus, tmp_path):
    course, got, _ = corpus
    rows = export_rows(course, tmp_path / "grades.csv")
    assert set(rows) == set(CASES)
    tests = ["make_activation_model_tests", "get_feature_maps_tests", "plot_feature_map_grid_tests"]
    for name, row in rows.items():
        assert row["assignment"] == NAME and row["max_score"] == "10"
        assert float(row["score"]) == CASES[name].score
        assert sum(float(row[t]) for t in tests) == CASES[name].score
    assert rows["correct"]["reason"] == ""
    assert "not valid JSON" in rows["corrupt_json"]["reason"]
    assert "MB of memory" in rows["memory_hog"]["reason"]
    assert "syntax error" in rows["syntax_error"]["reason"]


# Gradescope's autograder results format, as its documentation publishes it (fields and values)
GRADESCOPE_TOP = {"score", "execution_time", "output", "output_format", "test_output_format", "test_name_format",
                  "visibility", "stdout_visibility", "extra_data", "tests", "leaderboard"}
GRADESCOPE_TEST = {"score", "max_score", "status", "name", "name_format", "number", "output", "output_format",
                   "tags", "visibility", "extra_data"}
GRADESCOPE_VISIBILITY = {"hidden", "after_due_date", "after_published", "visible"}
# Canvas's gradebook import: the first five columns of its own export, then one column per assignment
CANVAS_FIRST = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]


@pytest.mark.slow
def test_export_gradescope_results_one_file_per_submission(corpus, tmp_path):
    course, got, _ = corpus
    totals = {name: float(row["score"]) for name, row in export_rows(course, tmp_path / "grades.csv").items()}
    grader("export", "--format", "gradescope", "--out", str(tmp_path / "gs"), course=course)
    files = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "gs" / NAME).glob("*/results.json")}
    assert set(files) == set(CASES)
    hidden_failures = 0
    for name, results in files.items():
        assert set(results) <= GRADESCOPE_TOP and {"score", "tests"} <= set(results), results.keys()
        assert results["score"] == totals[name] == sum(t["score"] for t in results["tests"])
        for test in results["tests"]:
            assert set(test) <= GRADESCOPE_TEST and test["visibility"] in GRADESCOPE_VISIBILITY, test
            assert test["status"] in ("passed", "failed") and 0 <= test["score"] <= test["max_score"]
            verdict = got[name]["tests"][test["name"]]
            assert test["output"] == verdict["message"] and test["score"] == verdict["points"]
            # a message that comes from a hidden test waits until grades are published
            assert test["visibility"] == ("after_published" if verdict.get("hidden") else "visible")
            hidden_failures += bool(verdict.get("hidden"))
        assert "HIDDEN TESTS" not in json.dumps(results) and "x_test[10:13]" not in json.dumps(results)
    assert hidden_failures > 0, "no case of the corpus fails in a hidden test: the visibility rule went untested"


@pytest.mark.slow
def test_export_canvas_fills_the_roster_canvas_exported(corpus, tmp_path):
    course, _, _ = corpus
    totals = {name: row["score"] for name, row in export_rows(course, tmp_path / "grades.csv").items()}
    students = sorted(CASES)
    roster = tmp_path / "canvas_export.csv"
    with open(roster, "w", newline="", encoding="utf-8") as f:  # as Canvas writes it: a BOM, Points Possible
        f.write("\ufeff")
        w = csv.writer(f)
        w.writerow([*CANVAS_FIRST, "Quiz 1 (4711)"])
        w.writerow(["    Points Possible", "", "", "", "", "5"])
        for i, student in enumerate(students[1:]):  # the first student is missing from Canvas
            w.writerow([f"Student, {student}", str(1000 + i), f"S{i}", student, "Lab A", "4"])
        w.writerow(["Late, Newcomer", "2000", "S999", "newcomer", "Lab B", ""])  # enrolled, nothing submitted
    proc = grader("export", "--format", "canvas", "--roster", str(roster), "--out", str(tmp_path / "canvas.csv"),
                  "--match-column", "SIS Login ID", course=course)
    assert f"not exported: {students[0]} is not in the roster's 'SIS Login ID' column" in proc.stderr
    with open(tmp_path / "canvas.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == [*CANVAS_FIRST, NAME]
    assert rows[1][0] == "Points Possible" and rows[1][5] == "10"
    by_login = {row[3]: row for row in rows[2:]}
    assert set(by_login) == {*students[1:], "newcomer"}
    for student in students[1:]:
        assert by_login[student][:5] == [f"Student, {student}", by_login[student][1], by_login[student][2],
                                         student, "Lab A"]
        expected = "" if totals[student].startswith("not graded") else totals[student]
        assert by_login[student][5] == expected, student
    assert by_login["newcomer"][5] == ""
    refused = grader("export", "--format", "canvas", course=course, check=False)
    assert refused.returncode == 2 and "--format canvas needs --roster" in refused.stderr


@pytest.mark.slow
def test_gradebook_and_feedback_hold_the_scores_without_hidden_tests(corpus):
    from nbgrader.api import Gradebook

    course, _, _ = corpus
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # nbgrader's alembic
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        assert gb.find_submission(NAME, "correct").score == 10
        assert gb.find_submission(NAME, "partly_correct").score == 3
    grader("feedback", course=course)
    html = (course / "feedback" / "partly_correct" / NAME / f"{NAME}.html").read_text()
    assert "drop the batch axis" in html and "Autograded: 3 / 10 points" in html
    assert "HIDDEN TESTS" not in html and "x_test[10:13]" not in html  # a line of a hidden test
    assert "<h1" in html and "&lt;h1" not in html and "&lt;p&gt;" not in html  # the notebook's own markdown renders


def student_view(html_text: str) -> str:
    """What a student reads in a feedback page: its text, without markup, scripts or styles."""
    import html as html_lib

    text = re.sub(r"<(script|style)\b.*?</\1>", " ", html_text, flags=re.S)
    text = html_lib.unescape(re.sub(r"<[^>]+>", " ", text))
    return re.sub(r"\s+", " ", text)


@pytest.mark.slow
def test_feedback_reads_as_a_student_would(corpus):
    """Per check: passed or failed, the points and the message; what was not run and why; no hidden test."""
    course, got, _ = corpus
    grader("feedback", course=course)
    for name in ("partly_correct", "ignores_layer", "os_exit", "syntax_error"):
        text = student_view((course / "feedback" / name / NAME / f"{NAME}.html").read_text())
        result = got[name]
        assert f"Autograded: {result['score']:g} / {result['max_score']:g} points" in text
        for gid, t in result["tests"].items():
            row = f"{gid} {'passed' if t['passed'] else 'failed'} {t['points']:g} / {t['max_points']:g}"
            assert row in text, (name, row)
            assert " ".join(t["message"].split())[:80] in text, (name, t["message"])
        for problem in result["problems"]:
            assert " ".join(problem.split())[:60] in text, (name, problem)
        assert "HIDDEN TESTS" not in text and "x_test[10:13]" not in text and "(33, \"conv1\"" not in text
    # what was not graded, and why (os_exit's problem line)
    assert "ended the process" in student_view((course / "feedback" / "os_exit" / NAME / f"{NAME}.html").read_text())


@pytest.mark.slow
def test_rerun_grades_only_what_changed(corpus):
    course, before, _ = corpus
    again = grader("autograde", NAME, *LIMITS, course=course)
    assert f"0 submission(s) to grade, {len(CASES)} unchanged" in again.stdout
    path = course / "submitted" / "empty" / NAME / f"{NAME}.ipynb"
    nb = json.loads(path.read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "a note added later"})
    path.write_text(json.dumps(nb))
    changed = grader("autograde", NAME, *LIMITS, course=course)
    assert "1 submission(s) to grade" in changed.stdout
    assert results(course)["empty"]["score"] == 0
    assert results(course)["correct"] == before["correct"]  # untouched


@pytest.mark.slow
def test_shards_then_merge_equal_one_unsharded_run(corpus, tmp_path):
    names = ["correct", "partly_correct", "empty", "corrupt_json"]
    course = tmp_path / "sharded"
    write(course, names)
    a, b = tmp_path / "shard1", tmp_path / "shard2"
    out1 = grader("autograde", NAME, "--shard", "1/2", "--results-dir", str(a), *LIMITS, course=course).stdout
    out2 = grader("autograde", NAME, "--shard", "2/2", "--results-dir", str(b), *LIMITS, course=course).stdout
    count = lambda out: int(out.split(" submission(s)")[0].split()[-1])  # noqa: E731
    assert count(out1) + count(out2) == len(names)
    in_a = {p.stem for p in a.glob("*/*.json")}
    in_b = {p.stem for p in b.glob("*/*.json")}
    assert not in_a & in_b and in_a | in_b == set(names)  # disjoint and complete
    grader("merge", str(a), str(b), course=course)
    sharded = export_rows(course, tmp_path / "sharded.csv")
    whole = export_rows(corpus[0], tmp_path / "whole.csv")
    assert sharded == {n: whole[n] for n in names}


@pytest.mark.slow
def test_self_check_cli_exit_codes_and_report(corpus, tmp_path):
    course = corpus[0]
    half = course / "submitted" / "partly_correct" / NAME / f"{NAME}.ipynb"
    proc = subprocess.run([sys.executable, "-m", "grader", "check", str(half)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-2000:]
    assert f"{NAME}: 3 / 10 points" in proc.stdout
    assert "passed  make_activation_model_tests" in proc.stdout
    assert "FAILED  get_feature_maps_tests" in proc.stdout and "drop the batch axis" in proc.stdout
    assert "plot_feature_map_grid is not done yet" in proc.stdout

    from grader.selfcheck import check_notebook

    correct = tmp_path / f"{NAME}.ipynb"
    correct.write_text(json.dumps(CASES["correct"].notebook))
    before = correct.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())
    report = check_notebook(correct, echo=False)
    assert report.passed and report.hidden and "All exercises pass." in report.text()
    assert (correct.stat().st_mtime_ns, sorted(p.name for p in tmp_path.iterdir())) == before  # saved nothing
    missing = subprocess.run([sys.executable, "-m", "grader", "check", str(tmp_path / "nope.ipynb")],
                             cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode == 2 and "no notebook at" in missing.stderr


def test_help_lists_every_command():
    out = grader("--help").stdout
    # each command opens its own line of the COMMAND list (the description names them too: not enough)
    listed = re.findall(r"^    ([\w-]+) {2,}\S", out, flags=re.M)
    assert listed == ["release", "collect", "autograde", "merge", "feedback", "export", "gradescope-bundle",
                      "formgrader", "check"], out
    assert "--shard" in grader("autograde", "--help").stdout


def test_collect_zip_with_lms_names(tmp_path):
    archive = tmp_path / "downloads.zip"
    release = (ROOT / "notebooks" / NAME / f"{NAME}.ipynb").read_bytes()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"alice_{NAME}.ipynb", release)
        z.writestr(f"bob_{NAME}.ipynb", release)
        z.writestr("readme.txt", "not a submission")
        z.writestr(f"../escape_{NAME}.ipynb", release)  # a name that points outside
    course = tmp_path / "course"
    out = grader("collect", str(archive), course=course).stdout
    assert "collected 2 submission(s) from 2 student(s)" in out
    for student in ("alice", "bob"):
        assert (course / "submitted" / student / NAME / f"{NAME}.ipynb").read_bytes() == release
    assert not (tmp_path / f"escape_{NAME}.ipynb").exists() and not (course / "submitted" / "escape").exists()


def test_shard_slices_are_deterministic_disjoint_and_complete():
    from grader.instructor import in_shard, parse_shard

    pairs = [(f"{a:02d}_x", f"student{s}") for a in range(3) for s in range(200)]
    slices = [{p for p in pairs if in_shard(*p, (i, 4))} for i in range(1, 5)]
    assert sum(len(s) for s in slices) == len(pairs) and set().union(*slices) == set(pairs)
    assert all(100 < len(s) < 200 for s in slices)  # roughly balanced (150 each)
    assert slices[0] == {p for p in pairs if in_shard(*p, (1, 4))}
    from grader.errors import GraderError

    with pytest.raises(GraderError, match="i/n"):
        parse_shard("5/4")


# ---------------------------------------------------------------------------- the codec's refusals
def test_codec_round_trips_plain_values_and_refuses_the_rest(tmp_path):
    from grader.codec import Encoder, Unsupported, decode

    enc = Encoder(tmp_path)
    value = {"a": [1, 2.5, "x", None, True], "b": (np.arange(6, dtype=np.uint8).reshape(2, 3), np.float32(1.5))}
    back = decode(tmp_path, json.loads(json.dumps(enc.encode(value))))
    assert back["a"] == [1, 2.5, "x", None, True]
    assert back["b"][0].dtype == np.uint8 and back["b"][0].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert back["b"][1] == np.float32(1.5) and back["b"][1].dtype == np.float32

    class AlwaysEqual(float):
        def __eq__(self, other):
            return True

    assert type(decode(tmp_path, enc.encode(AlwaysEqual(3.0)))) is float  # its own __eq__ is gone
    with pytest.raises(Unsupported, match="cannot compare"):
        decode(tmp_path, enc.encode(object()))
    with pytest.raises(Unsupported, match="dtype object"):
        decode(tmp_path, enc.encode(np.array([object()])))
    (tmp_path / "0_99.npy").write_bytes(b"\x93NUMPY pickled junk")
    with pytest.raises(Unsupported, match="malformed"):
        decode(tmp_path, {"t": "array", "blob": "0_99.npy"})
    with pytest.raises(Unsupported, match="blob name"):
        decode(tmp_path, {"t": "array", "blob": "../../etc/passwd"})


def test_codec_rebuilds_figures_with_their_grid_images_and_scales(tmp_path):
    from matplotlib.figure import Figure

    from grader.codec import Encoder, decode

    fig = Figure()
    axes = fig.subplots(2, 3)
    axes[1, 2].imshow(np.eye(3), cmap="RdBu_r", vmin=-2, vmax=2)
    axes[1, 2].set_title("channel 5")
    axes[0, 0].set_axis_off()
    back = decode(tmp_path, Encoder(tmp_path).encode(fig))
    assert isinstance(back, Figure) and len(back.axes) == 6
    ax = back.axes[5]
    assert ax.get_subplotspec().get_geometry() == (2, 3, 5, 5) and ax.get_title() == "channel 5"
    assert np.array_equal(ax.images[0].get_array(), np.eye(3)) and ax.images[0].get_clim() == (-2, 2)
    assert ax.images[0].get_cmap().name == "RdBu_r" and not back.axes[0].axison


def test_codec_refuses_keras_models_with_code(tmp_path):
    import keras

    from grader.codec import Encoder, Unsupported, decode

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    with pytest.raises(Unsupported, match="Lambda"):
        decode(tmp_path, Encoder(tmp_path).encode(model))
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    back = decode(tmp_path, Encoder(tmp_path).encode(plain))
    assert np.allclose(back(np.ones((1, 4))), plain(np.ones((1, 4))))


def test_exceptions_cross_as_their_builtin_kind():
    from grader.codec import SubmissionError, encode_exception, rebuild_exception

    class MyError(ValueError):
        pass

    rebuilt = rebuild_exception(encode_exception(MyError("bad layer")))
    assert isinstance(rebuilt, ValueError) and str(rebuilt) == "bad layer"
    assert isinstance(rebuild_exception(encode_exception(SystemExit(0))), SubmissionError)
    assert type(rebuild_exception(encode_exception(KeyError("k")))) is KeyError


def test_codec_refuses_forged_sizes_before_allocating(tmp_path):
    """A .npy header that declares more than its file holds, a .keras config that declares a huge
    layer and a blob behind a symbolic link are refused before anything big is built."""
    import io
    import zipfile

    from grader.codec import Unsupported, decode

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    (tmp_path / "0_1.npy").write_bytes(header.getvalue() + b"\0" * 64)  # 8 TB declared, 64 bytes given
    with pytest.raises(Unsupported, match="does not match"):
        decode(tmp_path, {"t": "array", "blob": "0_1.npy"})
    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "module": "keras.layers", "config": {"batch_shape": [None, 4]}},
        {"class_name": "Dense", "module": "keras.layers", "config": {"units": 10**9}}]}}
    with zipfile.ZipFile(tmp_path / "0_2.keras", "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
    with pytest.raises(Unsupported, match="units=1,000,000,000"):
        decode(tmp_path, {"t": "keras", "blob": "0_2.keras"})
    np.save(tmp_path / "elsewhere.npy", np.ones(3))
    (tmp_path / "0_3.npy").symlink_to(tmp_path / "elsewhere.npy")
    with pytest.raises(Unsupported, match="cannot be opened"):
        decode(tmp_path, {"t": "array", "blob": "0_3.npy"})


def test_course_grading_is_true_only_where_the_grader_runs_the_notebook(tmp_path):
    from grader import engine

    env = engine.sandbox_env(1, tmp_path, private_tmp=False)
    flag = "import course; print(course.GRADING)"
    inside = subprocess.run([sys.executable, "-c", flag], env={**os.environ, **env}, capture_output=True, text=True)
    outside = subprocess.run([sys.executable, "-c", flag], env={k: v for k, v in os.environ.items()
                                                                 if k != "GRADER_SANDBOX"}, capture_output=True,
                             text=True)
    assert (inside.stdout.strip(), outside.stdout.strip()) == ("True", "False"), (inside.stderr, outside.stderr)
