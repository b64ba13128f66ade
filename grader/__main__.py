"""``python -m grader``: release, collect, autograde (parallel, sharded), merge, feedback,
export, gradescope-bundle and formgrader (hand grading) for instructors; ``check`` for self-study learners.
See grader/README.md.

Exit codes: 0 done; 1 ``check`` ran and an exercise fails; 2 a bad argument or input (nothing
was done; the message says what to give instead); 3 the grader could not run or some
submissions were not graded (not the students' fault: rerun once the cause is fixed)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from course.console import Progress, writable_folder
from course.errors import CourseError
from grader.engine import GraderError, Limits, Task, canary, grade_many, isolation_available, submission_hash
from grader.errors import GraderFailure
from grader.exports import FORMATS, export
from grader.instructor import (
    Course,
    DEFAULT_REGEXP,
    collect,
    default_course,
    feedback,
    in_shard,
    is_current,
    merge,
    parse_shard,
    result_path,
    submissions,
)


def _due_date(text: str):
    """``--due``: an ISO date and time (a zone is optional)."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date and time: write it as 2026-12-01T23:59:00 (a zone such as -08:00 "
            "may follow)") from None


def _autograde(course: Course, args) -> int:
    if args.jobs < 1:
        raise GraderError(f"--jobs must be at least 1, got {args.jobs}: give how many submissions to grade at a time (default: the number of cores)")
    shard = parse_shard(args.shard) if args.shard else None
    results = Path(args.results_dir) if args.results_dir else course.results
    limits = Limits(cell_timeout=args.cell_timeout, submission_timeout=args.timeout, memory_mb=args.memory_mb)
    isolated = isolation_available(required=not args.weak_isolation)
    if not isolated:
        print("warning: --weak-isolation: submissions run with Landlock and seccomp only, without namespaces "
              "(see grader/README.md, threat model)", file=sys.stderr)
    for name in args.assignment:
        course.assignment(name)  # an unknown name is refused with the list of known ones
    found = submissions(course, args.assignment or None, args.student)
    if not found:
        who = f"from student {args.student!r} " if args.student else ""
        students = sorted({s for _, s, _ in submissions(course, args.assignment or None)})
        hint = (f"students with submissions: {', '.join(students[:20])}{' ...' if len(students) > 20 else ''}"
                if students else f"collect them first: python -m grader --course-dir {course.root} collect ZIP")
        raise GraderError(f"no submissions {who}of {', '.join(args.assignment) or 'any assignment'} in "
                          f"{course.submitted}; {hint}")
    tasks, skipped, cache = [], 0, {}
    for name, student, notebook in found:
        if not in_shard(name, student, shard):
            continue
        if name not in cache:
            cache[name] = course.assignment(name)
        assignment = cache[name]
        out = result_path(results, name, student)
        files = tuple(f for f in notebook.parent.iterdir() if f.suffix != ".ipynb" and not f.is_symlink() and f.is_file())
        if not args.force and is_current(out, submission_hash(notebook, assignment, files)):
            skipped += 1
            continue
        tasks.append(Task(assignment, notebook, student, out, files))
    where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    print(f"{len(tasks)} submission(s) to grade{where}, {skipped} unchanged since the last run (use --force to regrade)")
    if tasks and not args.no_canary:
        assignments = list({t.assignment.name: t.assignment for t in tasks}.values())
        print(f"canary: grading the solution of {', '.join(a.name for a in assignments)} first", flush=True)
        canary(assignments, limits, isolated)
    done = grade_many(tasks, jobs=args.jobs, limits=limits, progress=not args.quiet,
                      log_dir=course.root / "grading", isolated=isolated)
    for r in done:
        if r["status"] == "graded" and r.get("problems"):
            print(f"  {r['student']}/{r['assignment']}: {r['score']:g}/{r['max_score']:g}; " + "; ".join(r["problems"])[:300])
    failed = [r for r in done if r["status"] != "graded"]
    if shard is None and not args.no_merge and results == course.results and len(failed) < len(done):
        print(f"merged {merge(course)} result(s) into {course.gradebook}")
    elif shard is not None:
        print(f"results in {results}; combine the shards with: python -m grader merge {results}")
    if failed:
        print(f"{len(failed)} submission(s) NOT GRADED because the grader itself failed (not the students' fault; "
              "they are not in the gradebook and a rerun grades them again):", file=sys.stderr)
        for r in failed:
            print(f"  {r['student']}/{r['assignment']}: " + "; ".join(r["problems"])[:300], file=sys.stderr)
        return 3
    return 0


def _check(args) -> int:
    """``check NOTEBOOK``: exit 0 only if all pass, 1 if a check fails, 2 if the notebook cannot be checked."""
    import json

    from grader.selfcheck import check_notebook

    if not args.notebook.is_file():
        raise GraderError(f"no notebook at {args.notebook}: give the path of a saved .ipynb file")
    report = check_notebook(args.notebook, args.check_source, echo=not args.json,
                            service=False if args.no_service else None)
    if args.json:
        print(json.dumps(report.result, indent=1))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    """The command line; every error of the grader becomes one sentence and exit code 2."""
    # `python -m` puts the current folder first on sys.path: a folder there named like a package
    # (a course dir called `course`) must not shadow the installed one
    sys.path[:] = [p for p in sys.path if p and Path(p).resolve() != Path.cwd().resolve()] or sys.path
    try:
        return _main(argv)
    except GraderFailure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except (GraderError, CourseError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept; run the same command again to go on", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    default = default_course()
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--course-dir", type=Path, default=default.root,
                        help=f"where submitted/, autograded/, feedback/, grading/ and gradebook.db live (default {default.root})")
    parser.add_argument("--source", type=Path, default=default.source, help=f"instructor sources (default {default.source})")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("release", help="regenerate the student notebooks (notebooks/) from the sources")
    p.add_argument("--dest", type=Path, help="default: notebooks/")

    p = sub.add_parser("collect", help="copy a zip or folder of submissions into submitted/ and register the students")
    p.add_argument("path", type=Path)
    p.add_argument("--assignment", help="the assignment of flat, LMS-style files (default: from the file name)")
    p.add_argument("--regexp", default=DEFAULT_REGEXP, help=f"nbgrader zip_collect named_regexp for flat files (default {DEFAULT_REGEXP!r})")
    p.add_argument("--from", dest="lms", default="auto", choices=("auto", "canvas", "gradescope", "folder"),
                   help="the layout: a Canvas or Gradescope submissions zip (recognised by itself), or a folder")
    p.add_argument("--due", type=_due_date, help="ISO date and time; later submissions are recorded late "
                   "(Canvas marks them itself), e.g. 2026-12-01T23:59:00-08:00")

    p = sub.add_parser("autograde", help="grade submissions, N at a time, each in a sandbox")
    p.add_argument("assignment", nargs="*", help="assignments to grade (default: all)")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="submissions at a time (default: cores)")
    p.add_argument("--shard", help="grade only slice i of n (1-based), e.g. 3/8, for array jobs; then run merge")
    p.add_argument("--force", action="store_true", help="regrade submissions that did not change")
    p.add_argument("--student", help="grade one student only")
    p.add_argument("--results-dir", help="where result files go (default grading/results; shards may use their own)")
    p.add_argument("--no-merge", action="store_true", help="do not update the gradebook at the end")
    p.add_argument("--no-canary", action="store_true", help="skip grading the solution notebook first")
    p.add_argument("--weak-isolation", action="store_true",
                   help="grade without bubblewrap namespaces (Landlock and seccomp only; see grader/README.md)")
    p.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, help="seconds per cell (default %(default)s)")
    p.add_argument("--timeout", type=float, default=Limits.submission_timeout, help="seconds per submission (default %(default)s)")
    p.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="resident memory per sandbox (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("merge", help="combine result files (e.g. from shards) into the gradebook and autograded/")
    p.add_argument("dirs", nargs="*", type=Path, help="extra results folders to copy in first")

    p = sub.add_parser("feedback", help="write feedback/<student>/<assignment>/*.html from autograded/")
    p.add_argument("assignment", nargs="*")

    p = sub.add_parser("export", help="write the grades as a CSV, Gradescope results or a Canvas import",
                       description="csv: one row per student and assignment; gradescope: <out>/<assignment>/"
                       "<student>/results.json; canvas: a gradebook import CSV filled into Canvas's own roster export "
                       "(see grader/README.md, Exports)")
    p.add_argument("--format", choices=FORMATS, default="csv", help="default: csv")
    p.add_argument("--out", type=Path, help="default: grades.csv, gradescope/ or canvas_grades.csv")
    p.add_argument("--roster", type=Path, help="canvas: the CSV Canvas exports (Grades > Export)")
    p.add_argument("--match-column", default="ID",
                   help="canvas: the roster column holding the grader's student ids (default: %(default)s, the Canvas "
                        "user id that Canvas puts in submission file names; SIS Login ID for logins)")

    p = sub.add_parser("gradescope-bundle", help="write the Gradescope autograder zip of an assignment")
    p.add_argument("assignment")
    p.add_argument("--out", type=Path, help="default: <assignment>-gradescope.zip")

    p = sub.add_parser("formgrader", help="grade written answers by hand: JupyterLab in the course folder, formgrader set up",
                       description="Writes <course-dir>/nbgrader_config.py and starts JupyterLab there; open Nbgrader > "
                       "Formgrader > Manual Grading. The scores and comments go into gradebook.db, where export and "
                       "feedback read them. Options after it go to JupyterLab, e.g. formgrader --port=9000 --no-browser")

    p = sub.add_parser("check", help="self-study: check one saved notebook's exercises",
                       description="self-study: check one saved notebook's exercises (exit 0 all pass, 1 some fail)")
    p.add_argument("notebook", type=Path)
    p.add_argument("--source", dest="check_source", type=Path,
                   help="instructor source notebook (default: solutions/<name>/<name>.ipynb)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of text")
    p.add_argument("--no-service", action="store_true",
                   help="check in fresh processes, not through the warm self-check service (grader/service.py)")

    args, lab_args = parser.parse_known_args(argv)
    if lab_args and args.command != "formgrader":
        parser.error(f"unrecognized arguments: {' '.join(lab_args)}")
    if args.command == "check":
        return _check(args)
    course = Course(root=args.course_dir.resolve(), source=args.source.resolve())
    if args.command == "collect":  # the first command of a new course creates its folder
        writable_folder(course.root, "--course-dir")
    elif not course.root.is_dir():
        raise GraderError(f"--course-dir {args.course_dir} is not a folder: give the course folder that holds "
                          "submitted/ (collect creates it for a new course)")
    if not course.assignments():
        raise GraderError(f"--source {args.source} holds no assignments (<name>/<name>.ipynb): give the folder of "
                          "the instructor source notebooks, solutions/ of the course checkout")
    progress = Progress()
    if args.command == "formgrader":
        from grader.formgrader import start

        start(course, [a for a in lab_args if a != "--"])
    elif args.command == "release":
        from grader.release import NOTEBOOKS, release

        dest = writable_folder(args.dest or NOTEBOOKS, "--dest")
        progress(f"generating the student notebooks of {len(course.assignments())} assignments with nbgrader")
        for path in release(course.source, dest):
            print(path)
    elif args.command == "collect":
        progress(f"collecting submissions from {args.path}")
        found = collect(course, args.path, args.assignment, args.regexp, args.lms, args.due)
        print(f"collected {len(found)} submission(s) from {len({s for s, _ in found})} student(s) into {course.submitted}")
    elif args.command == "autograde":
        return _autograde(course, args)
    elif args.command == "merge":
        progress("merging results into the gradebook and writing the autograded notebooks")
        print(f"merged {merge(course, args.dirs)} result(s) into {course.gradebook}")
    elif args.command == "feedback":
        progress("writing one HTML page per autograded notebook")
        written = feedback(course, args.assignment or None)
        print(f"wrote {len(written)} feedback file(s) under {course.root / 'feedback'}")
    elif args.command == "gradescope-bundle":
        from course._paths import checkout_root
        from grader.gradescope import bundle

        if checkout_root() is None:
            raise GraderError("gradescope-bundle packs a course checkout (course/, grader/, models/), and this "
                              "package is installed without one: run it from the repository's .venv")
        out = args.out or Path(f"{args.assignment}-gradescope.zip")
        names = bundle(checkout_root(), course.source, args.assignment, out)
        print(f"wrote {out} ({len(names)} files): upload it in Gradescope's Configure Autograder > Zip file upload")
    elif args.command == "export":
        out = args.out or Path({"csv": "grades.csv", "gradescope": "gradescope", "canvas": "canvas_grades.csv"}[args.format])
        if args.format == "gradescope":
            writable_folder(out)
        elif out.is_dir():
            raise GraderError(f"--out {out} is a folder: give the CSV file to write, e.g. {out / 'grades.csv'}")
        else:
            writable_folder(out.parent, "--out's folder")
        count = export(course, out, args.format, args.roster, args.match_column)
        print(f"wrote {count} grade(s) to {out} ({args.format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
