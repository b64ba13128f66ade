"""A Canvas "Download Submissions" zip and a Gradescope "Export Submissions" zip of one class,
made here in the exact layouts those systems write, resubmissions included, through collect,
autograde and export (issue 24's intake): each student's latest submission by the LMS's own
order and date, never by file-name sort; late ones recorded; replaced ones named."""

from __future__ import annotations

import csv
import json
import time
import zipfile

import pytest
from test_grader import CASES, LIMITS, NAME, export_rows, grader

CORRECT = json.dumps(CASES["correct"].notebook)
PARTLY = json.dumps(CASES["partly_correct"].notebook)  # scores 3


def _entry(z: zipfile.ZipFile, name: str, text: str, when: str) -> None:
    info = zipfile.ZipInfo(name, date_time=time.strptime(when, "%Y-%m-%d %H:%M")[:6])
    z.writestr(info, text)


def canvas_zip(path):
    """Canvas's names: <sortable name>_[LATE_]<user id>_<submission id>_<file>[-<n>].ipynb."""
    with zipfile.ZipFile(path, "w") as z:
        # doejane: a first try, then a LATE resubmission (a higher submission id, the file name gets -1)
        _entry(z, f"doejane_12345_67890_{NAME}.ipynb", PARTLY, "2026-11-30 20:00")
        _entry(z, f"doejane_LATE_12345_67891_{NAME}-1.ipynb", CORRECT, "2026-12-02 09:00")
        # roebob: copies -9 and -10 of one submission: by name "-10" sorts first, but it is the later
        _entry(z, f"roebob_22222_70000_{NAME}-9.ipynb", PARTLY, "2026-11-29 10:00")
        _entry(z, f"roebob_22222_70000_{NAME}-10.ipynb", CORRECT, "2026-11-29 11:00")
        _entry(z, f"smithann_33333_70100_{NAME}.ipynb", CORRECT, "2026-11-28 08:00")
    return path


GRADESCOPE_METADATA = """\
submission_205:
  :submitters:
  - :name: Ada Lovelace
    :sid: '9001'
    :email: ada@uni.example
  :created_at: 2026-12-01 09:00:00.123456789 -0800
  :score: 0.0
submission_301:
  :submitters:
  - :name: Ada Lovelace
    :sid: '9001'
    :email: ada@uni.example
  :created_at: 2026-11-30 10:00:00.000000000 -0800
  :score: 0.0
submission_150:
  :submitters:
  - :name: Alan Turing
    :sid: '9002'
    :email: alan@uni.example
  - :name: Grace Hopper
    :email: grace@uni.example
  :created_at: 2026-11-29 12:00:00.000000000 -0800
  :score: 0.0
"""


def gradescope_zip(path):
    """Gradescope's layout: submission_<id>/ folders and submission_metadata.yml."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("submission_metadata.yml", GRADESCOPE_METADATA)
        z.writestr(f"submission_205/{NAME}.ipynb", CORRECT)  # Ada's later one, though its folder number is lower
        z.writestr(f"submission_301/{NAME}.ipynb", PARTLY)
        z.writestr(f"submission_150/{NAME}.ipynb", CORRECT)  # a group submission: both members
    return path


def collected(course):
    with open(course / "collected.csv", newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
@pytest.mark.parametrize("lms", ["canvas", "gradescope"])
def test_an_lms_zip_goes_through_collect_autograde_and_export(lms, tmp_path, trained_model):
    course = tmp_path / "course"
    if lms == "canvas":
        archive, expected = canvas_zip(tmp_path / "submissions.zip"), {"12345", "22222", "33333"}
        out = grader("collect", str(archive), course=course).stdout
    else:
        archive, expected = gradescope_zip(tmp_path / "export.zip"), {"9001", "9002", "grace@uni.example"}
        out = grader("collect", str(archive), "--due", "2026-12-01T00:00:00-08:00", course=course).stdout
    assert f"reading a {lms.capitalize()} export" in out
    assert f"collected {len(expected)} submission(s) from {len(expected)} student(s)" in out, out
    assert {p.name for p in (course / "submitted").iterdir()} == expected
    rows = collected(course)
    assert set(rows) == expected
    if lms == "canvas":
        assert rows["12345"]["late"] == "yes" and rows["12345"]["submission"] == "67891 (copy 1)"
        assert rows["12345"]["replaced"] == "67890"
        assert rows["22222"]["submission"] == "70000 (copy 10)" and rows["22222"]["late"] == "no"
        assert "student 22222" in out and "70000 (copy 9)" in out and "replaced by the later" in out
        assert "1 late submission(s): 12345" in out
    else:
        assert rows["9001"]["submission"] == "submission_205" and rows["9001"]["replaced"] == "submission_301"
        assert rows["9001"]["late"] == "yes" and rows["9001"]["submitted_at"].startswith("2026-12-01T09:00:00")
        assert rows["9002"]["submission"] == rows["grace@uni.example"]["submission"] == "submission_150"
        assert rows["9002"]["late"] == "no"

    grader("autograde", NAME, "--jobs", "2", *LIMITS, course=course)
    grades = export_rows(course, tmp_path / "grades.csv")
    assert set(grades) == expected
    # Every kept submission is the correct, later one: 10 of 10 (the replaced ones score 3).
    assert {student: float(row["score"]) for student, row in grades.items()} == dict.fromkeys(expected, 10.0), grades
    if lms == "canvas":
        _canvas_round_trip(course, tmp_path)


def _canvas_round_trip(course, tmp_path):
    """Back into Canvas's own roster: matched on the Canvas id (the default), the assignment's own
    "<title> (<id>)" header kept, and an export that would hold no grade refused."""
    roster = tmp_path / "canvas_roster.csv"
    header = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "02 First Layer Maps (4711)"]
    with open(roster, "w", newline="", encoding="utf-8") as f:
        f.write("\ufeff")
        w = csv.writer(f)
        w.writerow(header)
        w.writerow(["    Points Possible", "", "", "", "", "10"])
        for name, canvas_id in [("Doe, Jane", "12345"), ("Roe, Bob", "22222"), ("Smith, Ann", "33333")]:
            w.writerow([name, canvas_id, f"S{canvas_id}", name.split(",")[0].lower(), "Lab A", ""])
    out = tmp_path / "canvas_grades.csv"
    proc = grader("export", "--format", "canvas", "--roster", str(roster), "--out", str(out), course=course)
    assert "wrote 3 grade(s)" in proc.stdout and "will create a new assignment" not in proc.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == header  # the import fills assignment 4711
    assert {row[1]: row[5] for row in rows[2:]} == {"12345": "10", "22222": "10", "33333": "10"}
    refused = grader("export", "--format", "canvas", "--roster", str(roster), "--out", str(out),
                     "--match-column", "SIS Login ID", course=course, check=False)
    assert refused.returncode == 2 and "wrote 0 grades" in refused.stderr and "'12345'" in refused.stderr


def test_collect_says_what_it_cannot_read(tmp_path):
    course = tmp_path / "course"
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as z:
        z.writestr("submission_metadata.yml", "submission_1: [unclosed")
        z.writestr(f"submission_1/{NAME}.ipynb", CORRECT)
    result = grader("collect", str(broken), course=course, check=False)
    assert result.returncode != 0 and "is not readable YAML" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    odd = tmp_path / "odd.zip"
    with zipfile.ZipFile(odd, "w") as z:
        z.writestr("submission_metadata.yml", "submission_7:\n  :submitters: []\n")
        z.writestr(f"submission_7/{NAME}.ipynb", CORRECT)
    result = grader("collect", str(odd), course=course, check=False)
    assert "skipped submission_7: no submitter" in result.stdout
    assert "nothing was collected" in result.stdout + result.stderr
    forced = grader("collect", str(canvas_zip(tmp_path / "c.zip")), "--from", "folder", course=course, check=False)
    assert "nothing was collected" in forced.stdout + forced.stderr  # the Canvas names do not fit the default regexp
