"""The instructor's side: collect submissions, plan the grading, merge results into nbgrader's
gradebook, write autograded notebooks and feedback, export a CSV.

Layout of a course directory (nbgrader's, all of it gitignored student data)::

    submitted/<student>/<assignment>/<assignment>.ipynb   what students handed in
    grading/results/<assignment>/<student>.json           one result per submission (autograde)
    autograded/<student>/<assignment>/<assignment>.ipynb  the graded copy (formgrader, feedback)
    feedback/<student>/<assignment>/<assignment>.html     what the student gets back
    gradebook.db                                          nbgrader's gradebook (written by one process)
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from grader.errors import GraderError
from grader.notebook import (HIDDEN_TESTS, Assignment, NotebookError, cell_source, nbgrader_metadata,
                             read_json_notebook, read_source)

_STUDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,99}")
DEFAULT_REGEXP = r"(?P<student_id>[^_/]+)_(?P<file_id>\d\d_\w+\.ipynb)$"


@dataclass
class Course:
    """Where the course's sources and grading data live."""

    root: Path
    source: Path

    @property
    def submitted(self) -> Path:
        return self.root / "submitted"

    @property
    def results(self) -> Path:
        return self.root / "grading" / "results"

    @property
    def gradebook(self) -> Path:
        return self.root / "gradebook.db"

    def assignments(self) -> list[str]:
        from grader.release import assignments

        return assignments(self.source)

    def assignment(self, name: str) -> Assignment:
        path = self.source / name / f"{name}.ipynb"
        if not path.is_file():
            known = ", ".join(self.assignments()) or "none"
            raise GraderError(f"no source notebook {path} for assignment '{name}'; known assignments: {known}")
        return read_source(path)


# ------------------------------------------------------------------------------ collect
def _safe_extract(archive: Path, dest: Path, max_bytes: int = 2 * 2**30) -> list[str]:
    """Unzip without letting member names escape ``dest`` or the total size explode.

    Returns:
        The members left out because their path leaves the archive's folder.
    """
    escaping = []
    with zipfile.ZipFile(archive) as z:
        total = 0
        for info in z.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                escaping.append(info.filename)
                continue
            if info.is_dir():
                continue
            total += info.file_size
            if total > max_bytes:
                raise GraderError(f"{archive} unpacks to more than {max_bytes // 2**30} GB; refusing")
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            stamp = time.mktime((*info.date_time, 0, 0, -1))  # the entry's date: an LMS's submission time
            os.utime(target, (stamp, stamp))
    return escaping


def collect(course: Course, path: Path, assignment: str | None = None, regexp: str = DEFAULT_REGEXP,
            lms: str = "auto", due=None) -> list[tuple[str, str]]:
    """Copy submissions into ``submitted/<student>/<assignment>/`` and register the students.

    ``path`` is a zip or a folder: a Canvas "Download Submissions" or Gradescope "Export
    Submissions" zip (recognised by itself, or named with ``lms``; see :mod:`grader.lms`), laid
    out as ``<student>/<assignment>/*.ipynb`` (or ``submitted/<student>/<assignment>/``), or
    flat files named as nbgrader's zip_collect expects: ``regexp`` (nbgrader's
    ``FileNameCollectorPlugin.named_regexp``) gives ``student_id`` and ``file_id``.

    Args:
        course: The course.
        path: The zip or folder.
        assignment: The assignment of every file (default: from each file's name).
        regexp: For flat files that no LMS layout explains.
        lms: ``"auto"`` (recognise Canvas and Gradescope), ``"canvas"``, ``"gradescope"`` or
            ``"folder"`` (neither).
        due: A ``datetime``: submissions after it are recorded late (Canvas marks them itself).

    Returns:
        ``(student, assignment)`` pairs collected.
    """
    from grader import lms as lms_formats

    if lms not in ("auto", "folder", *lms_formats.LMS):
        raise GraderError(f"unknown --from {lms!r}: choose auto, folder, {', '.join(lms_formats.LMS)}")
    given = path = Path(path)
    tmp = None
    if path.is_file() and zipfile.is_zipfile(path):
        tmp = Path(tempfile.mkdtemp(prefix="collect-"))
        for member in _safe_extract(path, tmp):
            print(f"skipped {member}: its path leaves the archive (a name with '..' or an absolute path)")
        path = tmp
    if not path.is_dir():
        raise GraderError(f"{path} is neither a folder nor a zip file of submissions: give the zip your LMS "
                          "exported or a folder of <student>/<assignment>/<assignment>.ipynb")
    if (path / "submitted").is_dir():
        path = path / "submitted"
    try:
        layout = lms_formats.detect(path) if lms == "auto" else None if lms == "folder" else lms
        if layout is None:
            found = _collect_folder(course, path, assignment, regexp)
        else:
            print(f"reading a {layout.capitalize()} export")
            found = _collect_lms(course, path, layout, assignment, due)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    if not found:
        raise GraderError(f"nothing was collected from {given}: it holds no notebook that could be collected "
                          "(see the lines above for what was skipped and why)")
    with _gradebook(course) as gb:
        for student in sorted({s for s, _ in found}):
            gb.update_or_create_student(student)
    return found


def _collect_folder(course: Course, path: Path, assignment: str | None, regexp: str) -> list[tuple[str, str]]:
    """A folder of ``<student>/<assignment>/`` or of flat files named as ``regexp`` says."""
    from nbgrader.plugins.zipcollect import FileNameCollectorPlugin

    known = set(course.assignments())
    found = []
    for nb in sorted(path.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in nb.parts:
            continue
        if nb.is_symlink():
            print(f"skipped {nb.relative_to(path)}: a symbolic link, not a notebook file")
            continue
        rel = nb.relative_to(path).parts
        if len(rel) == 3 and rel[1] in known:
            student, name, source_dir = rel[0], rel[1], nb.parent
        else:
            plugin = FileNameCollectorPlugin(named_regexp=regexp)
            info = plugin.collect(nb.name)
            if not info:
                print(f"skipped {nb.relative_to(path)}: its name does not match {regexp!r}")
                continue
            student, stem = info["student_id"], Path(info["file_id"]).stem
            name = assignment or (stem if stem in known else None)
            source_dir = None
            if name is None:
                print(f"skipped {nb.name}: '{stem}' is not an assignment ({', '.join(sorted(known))}); use --assignment")
                continue
        if not _STUDENT.fullmatch(student):
            print(f"skipped {nb}: student id {student!r} has characters other than letters, digits, . _ @ -")
            continue
        dest = course.submitted / student / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb, dest / f"{name}.ipynb")
        if source_dir is not None:  # files handed in beside the notebook (links are not followed)
            for extra in source_dir.iterdir():
                if extra.is_file() and not extra.is_symlink() and extra.suffix != ".ipynb":
                    shutil.copy2(extra, dest / extra.name)
        found.append((student, name))
    return found


def _collect_lms(course: Course, folder: Path, layout: str, assignment: str | None, due) -> list[tuple[str, str]]:
    """An LMS export: each student's latest submission by the LMS's own order, late ones and
    replaced ones said, and every kept one recorded in ``collected.csv``."""
    from grader import lms as lms_formats

    submissions, skipped = lms_formats.read(folder, layout, due)
    for line in skipped:
        print(f"skipped {line}")
    known = set(course.assignments())
    pairs = []
    for sub in submissions:
        name = assignment or (sub.file_stem if sub.file_stem in known else None)
        if name is None:
            print(f"skipped {sub.notebook.name} ({sub.describe()}): '{sub.file_stem}' is not an assignment "
                  f"({', '.join(sorted(known))}); use --assignment")
        elif not _STUDENT.fullmatch(sub.student):
            print(f"skipped {sub.notebook.name}: student id {sub.student!r} has characters other than letters, "
                  "digits, . _ @ -")
        else:
            pairs.append((name, sub))
    kept, replaced = lms_formats.latest(pairs)
    final = {(sub.student, name): sub for name, sub in kept}
    earlier: dict[tuple[str, str], list[str]] = {}
    for name, older in replaced:
        newest = final[older.student, name]
        earlier.setdefault((older.student, name), []).append(older.submission)
        print(f"student {older.student}, {name}: {older.describe()} is replaced by the later {newest.describe()}")
    for name, sub in kept:
        dest = course.submitted / sub.student / name
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sub.notebook, dest / f"{name}.ipynb")
    late = [f"{sub.student} ({name})" for name, sub in kept if sub.late]
    if late:
        print(f"{len(late)} late submission(s): {', '.join(late)}")
    _record_collected(course, kept, earlier)
    return [(sub.student, name) for name, sub in kept]


COLLECTED_COLUMNS = ("student", "assignment", "lms", "submission", "submitted_at", "late", "replaced")


def _record_collected(course: Course, kept: list, earlier: dict) -> None:
    """Add (or update) one row per kept submission in ``<course>/collected.csv``."""
    import csv

    from grader.exports import SafeWriter

    path = course.root / "collected.csv"
    rows = {}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = {(r["student"], r["assignment"]): r for r in csv.DictReader(f)}
    for name, sub in kept:
        when = sub.submitted_at.isoformat(timespec="seconds") if sub.submitted_at else ""
        rows[sub.student, name] = {
            "student": sub.student, "assignment": name, "lms": sub.lms, "submission": sub.submission,
            "submitted_at": when, "late": "yes" if sub.late else "no",
            "replaced": ";".join(earlier.get((sub.student, name), [])),
        }
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = SafeWriter(f)
        writer.writerow(COLLECTED_COLUMNS)
        for key in sorted(rows):
            writer.writerow([rows[key].get(c, "") for c in COLLECTED_COLUMNS])


# ------------------------------------------------------------------------------ planning
def submissions(course: Course, names: list[str] | None = None, student: str | None = None) -> list[tuple[str, str, Path]]:
    """``(assignment, student, notebook)`` for every submitted notebook, sorted."""
    out = []
    for name in names or course.assignments():
        for folder in sorted(course.submitted.glob(f"*/{name}")):
            if student and folder.parent.name != student:
                continue
            out.append((name, folder.parent.name, folder / f"{name}.ipynb"))
    return out


def in_shard(assignment: str, student: str, shard: tuple[int, int] | None) -> bool:
    """Whether a submission belongs to shard ``(i, n)`` (1-based): by a stable hash, so a
    submission stays in its shard when others are added."""
    if shard is None:
        return True
    i, n = shard
    digest = hashlib.sha256(f"{assignment}/{student}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n == i - 1


def parse_shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise GraderError(f"--shard must be i/n with 1 <= i <= n (e.g. 3/8), got {text!r}")
    return int(match[1]), int(match[2])


def result_path(results: Path, assignment: str, student: str) -> Path:
    return results / assignment / f"{student}.json"


def is_current(path: Path, digest: str) -> bool:
    """Whether a stored result was made from the same submission, source and grader (a grader
    error is never current: it is graded again)."""
    try:
        stored = json.loads(path.read_text())
        return stored.get("status", "graded") == "graded" and stored["hash"] == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


# ------------------------------------------------------------------------------ merge
class _gradebook:  # noqa: N801  (used as a context manager)
    def __init__(self, course: Course):
        self.url = f"sqlite:///{course.gradebook}"

    def __enter__(self):
        import sys

        from nbgrader.api import Gradebook

        # nbgrader runs the `alembic` command of its environment to check the database schema
        bindir = os.path.dirname(sys.executable)
        if bindir not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
        self.gb = Gradebook(self.url)
        return self.gb

    def __exit__(self, *exc):
        self.gb.close()


def _register(gb, assignment: Assignment) -> None:
    name, nb = assignment.name, assignment.notebook
    gb.update_or_create_assignment(name)
    gb.update_or_create_notebook(nb, name)
    for cell in assignment.cells:
        if cell.kind == "test":
            gb.update_or_create_grade_cell(cell.grade_id, nb, name, max_score=cell.points, cell_type="code")
        elif cell.kind == "manual":
            gb.update_or_create_grade_cell(cell.grade_id, nb, name, max_score=cell.points, cell_type=cell.cell_type)
            gb.update_or_create_solution_cell(cell.grade_id, nb, name)
        elif cell.kind == "solution" and cell.grade_id:
            gb.update_or_create_solution_cell(cell.grade_id, nb, name)


def load_results(dirs: list[Path]) -> list[dict]:
    """Every result file under ``dirs`` (``<assignment>/<student>.json``); broken files skipped."""
    results = []
    for d in dirs:
        for path in sorted(Path(d).glob("*/*.json")):
            try:
                results.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                print(f"skipped {path}: {exc}")
    return results


def merge(course: Course, dirs: list[Path] | None = None) -> int:
    """Put results into the gradebook and write the autograded notebooks (one writer: this process).

    ``dirs`` are extra results folders (e.g. copied back from shards); their files are first
    copied into the course's ``grading/results``.

    Returns:
        How many results were merged.
    """
    missing = [str(d) for d in dirs or [] if not Path(d).is_dir()]
    if missing:
        raise GraderError(f"no results folder {', '.join(missing)}: give the folders the shards wrote "
                          "(their --results-dir)")
    for d in dirs or []:
        for path in Path(d).glob("*/*.json"):
            dest = course.results / path.parent.name / path.name
            if path.resolve() != dest.resolve():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest)
    import warnings

    results = [r for r in load_results([course.results]) if r.get("status", "graded") == "graded"]
    if not results:
        raise GraderError(f"no graded results in {course.results} to merge: run autograde first")
    assignments, hand = {}, hand_grades(course)
    with _gradebook(course) as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's autoflush notes from inside nbgrader
        for result in results:
            name, student = result["assignment"], result["student"]
            if name not in assignments:
                assignments[name] = course.assignment(name)
                _register(gb, assignments[name])
            assignment = assignments[name]
            gb.update_or_create_student(student)
            gb.update_or_create_submission(name, student)
            for gid, test in result.get("tests", {}).items():
                grade = gb.find_grade(gid, assignment.notebook, name, student)
                grade.auto_score = float(test["points"])
            for gid, written in result.get("manual", {}).items():
                if not written.get("answered", True):  # left as released: 0, no hand grade needed (as nbgrader)
                    grade = gb.find_grade(gid, assignment.notebook, name, student)
                    grade.auto_score, grade.needs_manual_grade = 0.0, False
            gb.db.commit()
            write_autograded(course, assignment, result, hand.get((name, student)))
    return len(results)


def _summary(result: dict, hand: HandGrades | None) -> str:
    """The first cell of a graded copy: the scores, a table of every check and written answer, the
    instructor's comments and the problems found. Everything a student wrote is escaped."""
    hand = hand or HandGrades({}, {})
    tests, manual = result.get("tests", {}), result.get("manual", {})
    summary = f"**Autograded: {result.get('score', 0):g} / {result.get('max_score', 0):g} points**"
    by_hand = [gid for gid in manual if gid in hand.scores]
    if by_hand:
        summary += (f"  \n**Graded by hand: {sum(hand.scores[g] for g in by_hand):g} / "
                    f"{sum(manual[g]['max_points'] for g in by_hand):g} points** ({len(by_hand)} of {len(manual)} "
                    "written answers graded so far)")
    summary += "\n\n| check | result | points | what was checked or went wrong |\n|---|---|---|---|\n"
    for gid, t in tests.items():
        points = f"{t['points']:g} / {t['max_points']:g}"
        if gid in hand.scores:  # the instructor changed an autograded score in formgrader
            points = f"{hand.scores[gid]:g} / {t['max_points']:g} (set by your instructor)"
        message = _escape(t["message"]) or ("all checks hold" if t["passed"] else "")
        summary += f"| {gid} | {'passed' if t['passed'] else '**failed**'} | {points} | {message} |\n"
    for gid, m in manual.items():
        if gid in hand.scores:
            summary += f"| {gid} | graded by hand | {hand.scores[gid]:g} / {m['max_points']:g} | a written answer |\n"
        else:
            if m.get("answered", True):
                summary += f"| {gid} | to be graded by hand | - / {m['max_points']:g} | a written answer, graded by your instructor |\n"
            else:
                summary += f"| {gid} | **not answered** | 0 / {m['max_points']:g} | a written answer left empty |\n"
    comments = {name: text for name, text in hand.comments.items() if text.strip()}
    if comments:
        summary += "\nComments from your instructor:\n" + "\n".join(
            f"- {name}: {_escape(' '.join(text.split()))}" for name, text in comments.items())
    problems = result.get("problems") or []
    if problems:  # student text: escaped, never markup
        summary += "\n\nProblems found in this submission:\n" + "\n".join(f"- {_escape(p)}" for p in problems)
    review = result.get("review") or []
    if review:  # the grade stands until the instructor has looked (export shows needs_review)
        summary += ("\n\n**Needs review by your instructor** (the autograded score may change):\n"
                    + "\n".join(f"- {_escape(p)}" for p in review))
    return summary


def write_autograded(course: Course, assignment: Assignment, result: dict, hand: HandGrades | None = None) -> Path:
    """The graded copy of a submission: the source's cells (hidden tests removed) with the
    student's exercise cells and answers, each test cell's verdict as its output, and a first
    cell that sums it up with the scores and comments given by hand so far (``hand``)."""
    import nbformat

    student, name = result["student"], assignment.name
    submitted = course.submitted / student / name / f"{name}.ipynb"
    try:
        cells = read_json_notebook(submitted)["cells"]
    except NotebookError:
        cells = []
    by_id = {}
    for cell in cells:
        meta = nbgrader_metadata(cell)
        if meta.get("grade_id"):
            by_id.setdefault(str(meta["grade_id"]), cell)
    source_nb = read_json_notebook(assignment.path)
    out = nbformat.v4.new_notebook(metadata=source_nb.get("metadata", {}))
    tests = result.get("tests", {})
    out.cells.append(nbformat.v4.new_markdown_cell(_summary(result, hand)))
    for cell in source_nb["cells"]:
        meta, src = nbgrader_metadata(cell), cell_source(cell)
        gid = str(meta.get("grade_id", ""))
        if meta.get("solution"):
            mine = by_id.get(gid)
            src = cell_source(mine) if mine else "# (no cell with this grade id in the submission)"
            if cell.get("cell_type") != "code":  # a written answer: its markdown stays, raw HTML shows as text
                src = html.escape(src, quote=False)
        elif meta.get("grade"):
            src = HIDDEN_TESTS.sub("", src)
        if cell.get("cell_type") == "code":
            new = nbformat.v4.new_code_cell(src, metadata=cell.get("metadata", {}))
            test = tests.get(gid) if meta.get("grade") and not meta.get("solution") else None
            if test is not None:
                if test["passed"]:
                    new.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"passed: {test['points']:g} / {test['max_points']:g} points\n")]
                else:
                    new.outputs = [nbformat.v4.new_output("error", ename="Failed", evalue=test["message"], traceback=[f"Failed: {test['message']}"])]
        else:
            new = nbformat.v4.new_markdown_cell(src, metadata=cell.get("metadata", {}))
        out.cells.append(new)
    path = course.root / "autograded" / student / name / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(out, path)
    return path


def _escape(text: str) -> str:
    """Student text for a markdown cell: HTML-escaped, and markdown's own markup characters too."""
    escaped = html.escape(str(text), quote=False)  # quotes are plain text here; "&#x27;" would show as such
    return "".join(f"\\{c}" if c in "\\`*_[]()#+!|{}" else c for c in escaped)


# ------------------------------------------------------------------------------ feedback, export
@dataclass
class HandGrades:
    """What an instructor typed in formgrader for one submission."""

    scores: dict[str, float]  # grade id -> the score given by hand
    comments: dict[str, str]  # cell name -> the comment


def hand_grades(course: Course) -> dict[tuple[str, str], HandGrades]:
    """(assignment, student) -> the scores and comments given by hand in the gradebook."""
    found = {}
    if not course.gradebook.exists():
        return found
    with _gradebook(course) as gb:
        for assignment in gb.assignments:
            for sub in gb.assignment_submissions(assignment.name):
                hand = found.setdefault((assignment.name, sub.student.id), HandGrades({}, {}))
                for nb in sub.notebooks:
                    hand.scores.update({g.name: g.manual_score for g in nb.grades if g.manual_score is not None})
                    hand.comments.update({c.name: c.manual_comment for c in nb.comments if c.manual_comment})
    return found


def feedback(course: Course, names: list[str] | None = None) -> list[Path]:
    """HTML feedback per submission from its autograded notebook (run ``merge`` first), with the
    scores and comments given by hand in formgrader up to now."""
    import nbformat
    from nbconvert import HTMLExporter

    known = course.assignments()
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise GraderError(f"no assignment named {', '.join(map(repr, unknown))}; known assignments: "
                          f"{', '.join(known) or 'none'}")
    exporter, written, hand = HTMLExporter(), [], hand_grades(course)  # student text was escaped in write_autograded
    for path in sorted((course.root / "autograded").glob("*/*/*.ipynb")):
        student, name = path.parts[-3], path.parts[-2]
        if names and name not in names:
            continue
        if (name, student) in hand:  # scores and comments typed in formgrader since the merge
            try:
                result = json.loads(result_path(course.results, name, student).read_text())
                write_autograded(course, course.assignment(name), result, hand[(name, student)])
            except (OSError, ValueError) as exc:
                print(f"feedback of {student}/{name} without the hand grades: its result cannot be read ({exc})")
        body, _ = exporter.from_notebook_node(nbformat.read(path, as_version=4))
        out = course.root / "feedback" / student / name / f"{name}.html"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body, encoding="utf-8")
        written.append(out)
    if not written:
        raise GraderError(f"no autograded notebooks{' of ' + ', '.join(names) if names else ''} in "
                          f"{course.root / 'autograded'}: run autograde (or merge) first")
    return written


def ensure_dirs(course: Course) -> None:
    for d in (course.submitted, course.results):
        d.mkdir(parents=True, exist_ok=True)


def default_course() -> Course:
    from grader.engine import ROOT

    return Course(root=Path(os.environ.get("GRADER_COURSE_DIR") or ROOT), source=ROOT / "solutions")
