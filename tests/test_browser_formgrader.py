"""The instructor's view: written answers of notebook 4 graded by hand in nbgrader's formgrader,
in a real (headless) browser, then exported, regraded and fed back.

A class of two hands in notebook 4 (ada answers the three written questions, bob leaves them
empty) and is autograded. JupyterLab is started the way grader/README.md tells an instructor
(``python -m grader --course-dir COURSE formgrader``); the instructor opens Nbgrader >
Formgrader > Manual Grading, picks ada's submission, types a score and a comment for each
written answer, and goes. Then the grader's ``export`` must show those scores with
``needs_manual_grading`` down to 0, a regrade of the autograded part (``autograde --force``)
must keep them, formgrader must still show them, and ada's feedback page must carry them.

Run on its own: ``.venv/bin/python -m pytest tests/test_browser_formgrader.py``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser_kit import ROOT, exercises, graded_ids, menu, read_cells, running_lab, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NAME = next(iter(sorted(p.name for p in (ROOT / "solutions").glob("04_*") if p.is_dir())), "04_missing")
STUDENT = ROOT / "notebooks" / NAME / f"{NAME}.ipynb"
SOURCE = ROOT / "solutions" / NAME / f"{NAME}.ipynb"
WRITTEN = graded_ids(SOURCE, "markdown") if SOURCE.is_file() else []
CLASS = {"ada": True, "bob": False}  # student -> answers the written questions
HAND = dict(zip(WRITTEN, [(2, "Both maps named with their maxima: full marks."),
                          (1, "The average difference is quoted, but nothing contradicts the claim."),
                          (2, "A clear ablation experiment.")]))


def grader(course: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "grader", "--course-dir", str(course), "--source", str(ROOT / "solutions"), *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"grader {args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def export_rows(course: Path, out: Path) -> dict[str, dict]:
    grader(course, "export", "--out", str(out))
    with open(out, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def handed_in(answered: bool) -> dict:
    """Notebook 4 as a student hands it in: the exercises solved, the written answers in their own words or empty."""
    notebook = json.loads(STUDENT.read_text())
    for index, code in exercises(STUDENT, SOURCE):
        notebook["cells"][index]["source"] = code
    for cell in notebook["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if answered and grade_id in HAND:
            cell["source"] = f"My answer to {grade_id}: the strongest map peaks at 3.1, the weakest at 0.2."
    return notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory, trained_model):
    """A class of two, autograded and merged into the gradebook."""
    assert len(HAND) == 3, f"notebook 4 should have three written answers, has {WRITTEN}"
    course = tmp_path_factory.mktemp("formgrader")
    for student, answered in CLASS.items():
        path = course / "submitted" / student / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(handed_in(answered)))
    grader(course, "autograde", NAME, "--jobs", "2", "--quiet")
    return course


@pytest.fixture(scope="module")
def lab(course):
    """JupyterLab as the README starts it for an instructor: ``python -m grader ... formgrader``."""
    launcher = (sys.executable, "-m", "grader", "--course-dir", str(course), "--source", str(ROOT / "solutions"),
                "formgrader")
    with running_lab(course, launcher=launcher, cwd=ROOT) as server:
        yield server


def open_submission(page, lab, student: str):
    """Nbgrader > Formgrader > Manual Grading > notebook 4 > the student's submission: its frame."""
    page.goto(lab.url("lab/workspaces/formgrader"))
    page.locator(".lm-MenuBar-itemLabel").first.wait_for()
    menu(page, "Nbgrader", "Formgrader")
    frame = page.frame_locator(".jp-MainAreaWidget:not(.lm-mod-hidden) iframe")
    frame.get_by_role("link", name="Manual Grading").click()
    frame.get_by_role("link", name=NAME, exact=True).click()  # the assignment
    frame.get_by_role("link", name=NAME, exact=True).click()  # its one notebook
    # the table fills in row by row: wait for the whole class before showing the names (hidden at first)
    frame.locator(f"tbody tr:nth-child({len(CLASS)}) .glyphicon-eye-open").wait_for()
    frame.get_by_role("button", name="Show All Names").click()
    frame.get_by_role("link", name=student, exact=True).click()
    frame.locator(f"input.score#{WRITTEN[0]}").wait_for()
    return frame


def test_written_answers_graded_by_hand_reach_the_export_survive_a_regrade_and_the_feedback(page, lab, course,
                                                                                            tmp_path):
    before = export_rows(course, tmp_path / "before.csv")
    assert before["ada"]["needs_manual_grading"] == "3", before
    assert all(before["ada"][gid] == "" for gid in WRITTEN), before["ada"]
    # bob left his answers as released: 0 each with no hand grade needed, as nbgrader does
    assert before["bob"]["needs_manual_grading"] == "0" and all(before["bob"][gid] == "0" for gid in WRITTEN), before
    with _gradebook_of(course) as gb:
        notebook = gb.find_submission_notebook(NAME, NAME, "bob")
        bob_cells = {g.name: (g.score, g.needs_manual_grade) for g in notebook.grades}
    assert all(bob_cells[gid] == (0.0, False) for gid in WRITTEN), bob_cells
    autograded = float(before["ada"]["score"])

    frame = open_submission(page, lab, "ada")
    shot(page, "formgrader_submission_opened")
    for gid, (score, comment) in HAND.items():
        with page.expect_response(lambda r: "/formgrader/api/grade/" in r.url and r.request.method == "PUT") as saved:
            frame.locator(f"input.score#{gid}").fill(str(score))
            frame.locator(f"input.score#{gid}").press("Tab")  # formgrader saves a score when it changes
        assert saved.value.ok, f"formgrader did not save the score of {gid}: HTTP {saved.value.status}"
        box = frame.locator(f"textarea.comment#{gid}-comment")
        with page.expect_response(lambda r: "/formgrader/api/comment/" in r.url and r.request.method == "PUT") as saved:
            box.fill(comment)
            box.press("Tab")
        assert saved.value.ok, f"formgrader did not save the comment on {gid}: HTTP {saved.value.status}"
    frame.locator(f"input.score#{WRITTEN[0]}").scroll_into_view_if_needed()
    shot(page, "formgrader_written_answers_graded")

    graded = export_rows(course, tmp_path / "graded.csv")
    ada = graded["ada"]
    assert {gid: float(ada[gid]) for gid in WRITTEN} == {gid: float(s) for gid, (s, _) in HAND.items()}, ada
    assert ada["needs_manual_grading"] == "0", ada
    assert float(ada["score"]) == autograded + sum(s for s, _ in HAND.values()), ada
    assert graded["bob"] == before["bob"], "grading ada by hand changed bob's row"
    grader(course, "export", "--format", "gradescope", "--out", str(tmp_path / "gradescope"))
    results = json.loads((tmp_path / "gradescope" / NAME / "ada" / "results.json").read_text())
    by_hand = {t["name"]: (t["score"], t["output"]) for t in results["tests"] if t["name"].endswith("(graded by hand)")}
    assert by_hand == {f"{gid} (graded by hand)": hand for gid, hand in HAND.items()}, results["tests"]
    assert results["score"] == float(ada["score"]), results

    regrade = grader(course, "autograde", NAME, "--force", "--student", "ada", "--no-canary", "--quiet")
    assert "1 submission(s) to grade" in regrade.stdout and "merged 2 result(s)" in regrade.stdout, regrade.stdout
    assert export_rows(course, tmp_path / "regraded.csv") == graded, "autograde --force lost or changed hand grades"

    frame = open_submission(page, lab, "ada")  # formgrader still shows them after the regrade
    for gid, (score, comment) in HAND.items():
        assert float(frame.locator(f"input.score#{gid}").input_value()) == score, gid
        assert frame.locator(f"textarea.comment#{gid}-comment").input_value() == comment, gid

    grader(course, "feedback", NAME)
    page_text = (course / "feedback" / "ada" / NAME / f"{NAME}.html").read_text()
    for gid, (score, comment) in HAND.items():
        assert f"<td>{gid}</td>\n<td>graded by hand</td>\n<td>{score} / 2</td>" in page_text, gid
        assert comment in page_text, f"the comment on {gid} is not in ada's feedback"
    assert f"Graded by hand: {sum(s for s, _ in HAND.values())} / 6 points" in page_text
    bob = (course / "feedback" / "bob" / NAME / f"{NAME}.html").read_text()
    assert "not answered" in bob and "0 / 2" in bob and "Comments from your instructor" not in bob
    assert len(read_cells(course / "autograded" / "ada" / NAME / f"{NAME}.ipynb")) > 1


def _gradebook_of(course):
    from grader.instructor import Course, _gradebook

    return _gradebook(Course(course, ROOT / "solutions"))
