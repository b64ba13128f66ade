"""Grades out of the course folder, in the formats instructors' systems take.

- ``csv``: one row per student and assignment (total, each check, ``needs_manual_grading``,
  ``needs_review``, reason);
- ``gradescope``: ``<out>/<assignment>/<student>/results.json`` in Gradescope's autograder
  results format (``score``, ``output`` and a ``tests`` list of ``name``, ``score``,
  ``max_score``, ``status``, ``output``, ``visibility``); a message from a hidden test is
  ``visibility: "after_published"``, so students read it only once grades are published;
- ``canvas``: a Canvas gradebook import CSV (``Student, ID, SIS User ID, SIS Login ID,
  Section``, then one column per assignment, after a ``Points Possible`` row), filled into the
  roster that Canvas itself exports (Grades > Export): the grader's student id is matched
  against one roster column (``SIS Login ID`` by default).

Scores entered by hand in nbgrader's formgrader are included everywhere. A result the grader
failed on is never exported as a score, and a submission with answers still to be graded by
hand leaves its Canvas cell blank: a partial total must not look final. A submission the grader
marked *needs review* (a copied or re-executed reference function, code that reaches into the
grader) keeps its autograded score, with the reasons in the ``needs_review`` column, in
Gradescope's output and, for Canvas, printed beside the file.

Every CSV cell that a spreadsheet would read as a formula (beginning with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return: OWASP's rule) is written with a leading ``'``, so a student id
such as ``=HYPERLINK(...)`` stays text; numbers are written as they are.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import GraderError
from grader.instructor import Course, hand_grades, load_results

FORMATS = ("csv", "gradescope", "canvas")
CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?")


def csv_cell(value) -> str:
    """``value`` as a CSV cell that no spreadsheet runs as a formula (a number stays a number)."""
    text = str(value)
    if text.startswith(FORMULA_STARTS) and not NUMBER.fullmatch(text):  # a negative score stays a number
        return "'" + text
    return text


class SafeWriter:
    """``csv.writer`` whose every cell goes through :func:`csv_cell`."""

    def __init__(self, f):
        self._writer = csv.writer(f)

    def writerow(self, row: Iterable) -> None:
        self._writer.writerow([csv_cell(v) for v in row])


@dataclass
class Grade:
    """One submission's grade: the autograder's result with the hand-graded scores added."""

    result: dict
    manual: dict  # grade id -> score given by hand
    comments: dict = field(default_factory=dict)  # cell name -> comment given by hand

    @property
    def student(self) -> str:
        return self.result["student"]

    @property
    def assignment(self) -> str:
        return self.result["assignment"]

    @property
    def graded(self) -> bool:
        return self.result.get("status", "graded") == "graded"

    @property
    def unanswered(self) -> list[str]:
        """Written answers left as released: 0 points with no hand grade needed (as nbgrader does)."""
        return [gid for gid, m in self.result.get("manual", {}).items()
                if not m.get("answered", True) and gid not in self.manual]

    @property
    def scores(self) -> dict[str, float]:
        automatic = {gid: t["points"] for gid, t in self.result.get("tests", {}).items()}
        return {**automatic, **dict.fromkeys(self.unanswered, 0.0), **self.manual}

    @property
    def pending(self) -> list[str]:
        """Written answers that wait for a hand grade (an unanswered one does not)."""
        return [gid for gid in self.result.get("manual", {}) if gid not in self.manual and gid not in self.unanswered]

    @property
    def review(self) -> list[str]:
        """Why the grader asks the instructor to look at this submission (empty: no reason)."""
        return list(self.result.get("review") or [])

    @property
    def total(self) -> float:
        return sum(self.scores.values())

    @property
    def maximum(self) -> float:
        return self.result.get("max_score", 0) + self.result.get("manual_max_score", 0)


def grades(course: Course) -> list[Grade]:
    """Every result of the course, sorted by student and assignment.

    Raises:
        GraderError: there are no results yet.
    """
    results = load_results([course.results])
    if not results:
        raise GraderError(f"no results in {course.results}: run autograde first (nothing was exported)")
    given = hand_grades(course)
    found = []
    for r in sorted(results, key=lambda r: (r["student"], r["assignment"])):
        hand = given.get((r["assignment"], r["student"]))
        found.append(Grade(r, hand.scores, hand.comments) if hand else Grade(r, {}))
    return found


def export(course: Course, out: Path, fmt: str = "csv", roster: Path | None = None, match: str = "ID") -> int:
    """Write the course's grades to ``out`` in format ``fmt``; returns how many grades were written.

    Args:
        out: A CSV file (``csv``, ``canvas``) or a folder (``gradescope``).
        roster: The Canvas gradebook CSV export (``canvas`` only; required there).
        match: The roster column that holds the grader's student ids (``canvas``): ``ID``, the
            Canvas user id that Canvas puts in submission file names (what ``collect`` reads from a
            Canvas zip), or e.g. ``SIS Login ID``.

    Raises:
        GraderError: an unknown format, no results, a roster that cannot be used, or a Canvas
            export that would hold no grade (no graded student is in the roster).
    """
    if fmt not in FORMATS:
        raise GraderError(f"unknown export format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "canvas":
        students, header = _read_roster(roster, match)
        written = _canvas(grades(course), out, students, header, match)
        if not written:
            ids = sorted({g.student for g in grades(course)})[:3]
            column = sorted({row[match].strip() for row in students})[:3]
            raise GraderError(
                f"wrote 0 grades to {out}: no graded student of the course is in the roster's {match!r} column (the "
                f"grader's ids look like {ids}, that column holds {column}): pass --match-column with the roster "
                "column that holds them (ID for students collected from a Canvas zip, SIS Login ID for logins)"
            )
        return written
    return {"csv": _csv, "gradescope": _gradescope}[fmt](grades(course), out)


def _csv(all_grades: list[Grade], out: Path) -> int:
    columns = []
    for g in all_grades:
        for gid in [*g.result.get("tests", {}), *g.result.get("manual", {})]:
            if gid not in columns:
                columns.append(gid)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = SafeWriter(f)
        writer.writerow(["student", "assignment", "score", "max_score", "needs_manual_grading", "needs_review",
                         *columns, "reason"])
        for g in all_grades:
            reason = "; ".join(g.result.get("problems") or [])
            review = "; ".join(g.review)
            if not g.graded:
                writer.writerow([g.student, g.assignment, "not graded: grader error", f"{g.maximum:g}", "", review,
                                 *["" for _ in columns], reason])
                continue
            scores = g.scores
            writer.writerow([g.student, g.assignment, f"{g.total:g}", f"{g.maximum:g}", len(g.pending), review,
                             *[f"{scores[c]:g}" if c in scores else "" for c in columns], reason])
    return len(all_grades)


def gradescope_results(g: Grade) -> dict:
    """One submission in Gradescope's autograder ``results.json`` format."""
    tests = []
    for gid, t in g.result.get("tests", {}).items():
        test = {"name": gid, "score": t["points"], "max_score": t["max_points"],
                "status": "passed" if t["passed"] else "failed", "output": t["message"], "visibility": "visible"}
        if t.get("hidden"):
            test["visibility"] = "after_published"
        tests.append(test)
    for gid, m in g.result.get("manual", {}).items():
        if gid in g.manual:
            tests.append({"name": f"{gid} (graded by hand)", "score": g.manual[gid], "max_score": m["max_points"],
                          "status": "passed" if g.manual[gid] >= m["max_points"] else "failed",
                          "output": g.comments.get(gid, ""), "visibility": "after_published"})
        elif gid in g.unanswered:
            tests.append({"name": f"{gid} (written answer)", "score": 0.0, "max_score": m["max_points"],
                          "status": "failed", "output": "not answered", "visibility": "visible"})
    notes = list(g.result.get("problems") or [])
    if g.pending:
        notes.append(f"{len(g.pending)} written answer(s) still to be graded by hand: {', '.join(g.pending)}")
    notes += [f"needs review by your instructor: {why}" for why in g.review]
    for number, test in enumerate(tests, 1):
        test["number"] = str(number)
    return {"score": g.total, "execution_time": float(g.result.get("seconds", 0)), "output": "\n".join(notes),
            "output_format": "text", "stdout_visibility": "hidden", "visibility": "visible", "tests": tests}


def _gradescope(all_grades: list[Grade], out: Path) -> int:
    written = 0
    for g in all_grades:
        if not g.graded:
            print(f"not exported: {g.student}/{g.assignment}: the grader failed on it (rerun autograde)",
                  file=sys.stderr)
            continue
        path = out / g.assignment / g.student / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(gradescope_results(g), indent=1))
        written += 1
    return written


def _read_roster(roster: Path | None, match: str) -> tuple[list[dict], list[str]]:
    if roster is None:
        raise GraderError("--format canvas needs --roster: the CSV that Canvas exports (Grades > Export), so each "
                          "student's row carries Canvas's own ID")
    try:
        with open(roster, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise GraderError(f"cannot read the roster {roster} ({getattr(exc, 'strerror', None) or exc}): give the CSV "
                          "Canvas exported") from None
    missing = [c for c in (*CANVAS_COLUMNS[:2], match) if c not in header]
    if missing:
        raise GraderError(f"the roster {roster} has no column {', '.join(map(repr, missing))}: give the CSV that "
                          f"Canvas exports (its first columns are {', '.join(CANVAS_COLUMNS)})")
    # Canvas's export has a "Points Possible" row (and sometimes a muted-assignments row): not students
    students = [r for r in rows if r.get("ID", "").strip() and not r["Student"].strip().startswith("Points Possible")]
    return students, list(header)


CANVAS_ASSIGNMENT = re.compile(r"(?P<title>.+?) \((?P<id>\d+)\)")


def _canvas_header(assignment: str, header: list[str]) -> str:
    """The roster's own column of ``assignment`` ("<title> (<Canvas id>)", kept verbatim so that
    the import fills that assignment instead of creating a new one), else the assignment's name."""
    def plain(text: str) -> str:
        return re.sub(r"[\W_]+", " ", text).strip().casefold()

    for column in header:
        match = CANVAS_ASSIGNMENT.fullmatch(column.strip())
        if match and plain(match["title"]) == plain(assignment):
            return column
    columns = [c for c in header if CANVAS_ASSIGNMENT.fullmatch(c.strip())]
    print(f"note: the roster has no column for {assignment} (its assignment columns: {columns or 'none'}); Canvas "
          f"will create a new assignment '{assignment}': name the Canvas assignment {assignment} to fill it instead",
          file=sys.stderr)
    return assignment


def _canvas(all_grades: list[Grade], out: Path, roster: list[dict], header: list[str], match: str) -> int:
    assignments = sorted({g.assignment for g in all_grades})
    maximum = {a: max(g.maximum for g in all_grades if g.assignment == a) for a in assignments}
    by_id = {(g.student, g.assignment): g for g in all_grades}
    known = {row[match].strip() for row in roster}
    for student in sorted({g.student for g in all_grades} - known):
        print(f"not exported: {student} is not in the roster's {match!r} column", file=sys.stderr)
    written = 0
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = SafeWriter(f)
        writer.writerow([*CANVAS_COLUMNS, *[_canvas_header(a, header) for a in assignments]])
        writer.writerow(["Points Possible", "", "", "", "", *[f"{maximum[a]:g}" for a in assignments]])
        for row in roster:
            cells = []
            for a in assignments:
                g = by_id.get((row[match].strip(), a))
                if g is None or not g.graded or g.pending:
                    if g is not None:
                        why = "the grader failed on it" if not g.graded else "answers still to be graded by hand"
                        print(f"left blank: {g.student}/{a}: {why}", file=sys.stderr)
                    cells.append("")
                    continue
                cells.append(f"{g.total:g}")
                written += 1
                for why in g.review:
                    print(f"needs review: {g.student}/{a}: {why}", file=sys.stderr)
            writer.writerow([row.get(c, "") for c in CANVAS_COLUMNS] + cells)
    return written
