"""The submission zips that learning-management systems export, read by their own rules.

* **Canvas** ("Download Submissions"): flat files named
  ``<sortable name>_[LATE_]<user id>_<submission id>_<file name>[-<n>].<ext>``, a resubmitted
  file name getting ``-1``, ``-2`` ...; the student is the Canvas user id, ``LATE`` marks a late
  submission, and the latest is the highest submission id (then the highest ``-<n>``, then the
  zip entry's date).
* **Gradescope** ("Export Submissions"): one ``submission_<id>/`` folder per submission and a
  ``submission_metadata.yml`` that maps each folder to its ``:submitters`` (``:sid``,
  ``:email``, ``:name``) and ``:created_at``; the latest is the one created last (then the
  highest submission id). Its export says nothing about lateness: give ``due`` to record it.

Never by file-name sort: "x-10" sorts before "x-9", and a Gradescope folder's name says nothing
of its date.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from grader.errors import GraderError

LMS = ("canvas", "gradescope")
CANVAS_NAME = re.compile(
    r"(?P<name>[^_/]+)_(?:(?P<late>LATE)_)?(?P<user>\d+)_(?P<submission>\d+)_(?P<file>.+?)(?:-(?P<copy>\d+))?"
    r"(?P<ext>\.[A-Za-z0-9]+)"
)
GRADESCOPE_METADATA = "submission_metadata.yml"


@dataclass(frozen=True)
class Submission:
    """One submission as its LMS describes it."""

    student: str
    file_stem: str  # the file's own name without the LMS's additions, e.g. "02_first_layer_maps"
    notebook: Path
    lms: str
    submission: str  # the LMS's id of the submission
    order: tuple  # the LMS's own order: larger is later
    submitted_at: dt.datetime | None
    late: bool

    def describe(self) -> str:
        when = f", {self.submitted_at.isoformat(sep=' ', timespec='seconds')}" if self.submitted_at else ""
        return f"{self.lms} submission {self.submission}{when}{', late' if self.late else ''}"


def detect(folder: Path) -> str | None:
    """``"gradescope"`` or ``"canvas"`` when ``folder`` is laid out as that LMS exports, else None."""
    if (folder / GRADESCOPE_METADATA).is_file():
        return "gradescope"
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix == ".ipynb"]
    if files and all(CANVAS_NAME.fullmatch(p.name) for p in files):
        return "canvas"
    return None


def read(folder: Path, lms: str, due: dt.datetime | None = None) -> tuple[list[Submission], list[str]]:
    """Every submission in an LMS export folder, and what was skipped (one line each)."""
    if lms == "canvas":
        return _canvas(folder, due)
    if lms == "gradescope":
        return _gradescope(folder, due)
    raise GraderError(f"unknown LMS {lms!r}: choose one of {', '.join(LMS)}")


def latest(submissions: list[tuple[str, Submission]]) -> tuple[list[tuple[str, Submission]], list[tuple]]:
    """Each student's latest submission of each assignment, by the LMS's own order.

    Args:
        submissions: ``(assignment, submission)`` pairs.

    Returns:
        The kept pairs, sorted by student and assignment; and ``(assignment, replaced)`` for
        every earlier submission that a later one replaced.
    """
    kept: dict[tuple[str, str], Submission] = {}
    replaced = []
    for name, sub in sorted(submissions, key=lambda pair: pair[1].order):
        key = (sub.student, name)
        if key in kept:
            replaced.append((name, kept[key]))
        kept[key] = sub
    return [(name, kept[student, name]) for student, name in sorted(kept)], replaced


def _is_late(when: dt.datetime | None, due: dt.datetime | None) -> bool:
    if when is None or due is None:
        return False
    if (when.tzinfo is None) != (due.tzinfo is None):  # compare naive with naive, aware with aware
        when, due = when.replace(tzinfo=None), due.replace(tzinfo=None)
    return when > due


def _canvas(folder: Path, due) -> tuple[list[Submission], list[str]]:
    found, skipped = [], []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix != ".ipynb":
            continue
        match = CANVAS_NAME.fullmatch(path.name)
        if match is None:
            skipped.append(f"{path.name}: not a Canvas submission name "
                           "(<name>_[LATE_]<user id>_<submission id>_<file>)")
            continue
        when = dt.datetime.fromtimestamp(path.stat().st_mtime)  # the zip entry's date (kept on extraction)
        copy = int(match["copy"] or 0)
        found.append(Submission(
            student=match["user"], file_stem=match["file"], notebook=path, lms="canvas",
            submission=match["submission"] + (f" (copy {copy})" if copy else ""),
            order=(int(match["submission"]), copy, when), submitted_at=when,
            late=bool(match["late"]) or _is_late(when, due),
        ))
    return found, skipped


def _gradescope(folder: Path, due) -> tuple[list[Submission], list[str]]:
    import yaml

    try:
        metadata = yaml.safe_load((folder / GRADESCOPE_METADATA).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise GraderError(f"{folder / GRADESCOPE_METADATA} is not readable YAML ({str(exc).splitlines()[0]}): "
                          "give the zip Gradescope's 'Export Submissions' made, unchanged") from None
    found, skipped = [], []
    for name, info in sorted(metadata.items()):
        info = info if isinstance(info, dict) else {}
        submitters = [s for s in info.get(":submitters") or [] if isinstance(s, dict)]
        notebooks = sorted((folder / str(name)).glob("*.ipynb")) if (folder / str(name)).is_dir() else []
        if not submitters or not notebooks:
            skipped.append(f"{name}: {'no submitter' if not submitters else 'no notebook'} in Gradescope's metadata "
                           "and folder")
            continue
        if len(notebooks) > 1:
            skipped.append(f"{name}: {len(notebooks)} notebooks ({', '.join(p.name for p in notebooks)}); "
                           f"kept {notebooks[0].name}")
        when = _timestamp(info.get(":created_at"))
        number = int(re.sub(r"\D", "", str(name)) or 0)
        for person in submitters:  # a group submission counts for each of its members
            student = str(person.get(":sid") or person.get(":email") or "").strip()
            if not student:
                skipped.append(f"{name}: a submitter ({person.get(':name', '?')}) with neither :sid nor :email")
                continue
            found.append(Submission(
                student=student, file_stem=notebooks[0].stem, notebook=notebooks[0], lms="gradescope",
                submission=str(name),
                order=(when or dt.datetime.min.replace(tzinfo=dt.UTC), number),
                submitted_at=when, late=_is_late(when, due),
            ))
    return found, skipped


def _timestamp(value) -> dt.datetime | None:
    """Gradescope's ``:created_at`` (YAML gives a datetime, or a string such as
    ``2026-11-30 23:59:58.123456789 -0800``), always aware (UTC when it says no zone)."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip())  # nanoseconds: Python reads microseconds
    for form in ("%Y-%m-%d %H:%M:%S.%f %z", "%Y-%m-%d %H:%M:%S %z", "%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(text, form)
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
