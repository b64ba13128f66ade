"""Manual grading in nbgrader's formgrader: JupyterLab started in the course folder, configured.

nbgrader's server extensions read ``nbgrader_config.py`` from the folder JupyterLab starts in,
and formgrader works only when the course folder is (under) the folder JupyterLab serves. So
``python -m grader --course-dir COURSE formgrader`` writes ``COURSE/nbgrader_config.py`` (the
course's own configuration, with COURSE as nbgrader's course root and the instructor sources
where they are), then runs JupyterLab in COURSE. Formgrader reads the autograded notebooks and
the gradebook that ``autograde`` (or ``merge``) wrote; the scores and comments typed there go
into that gradebook, where ``export`` and ``feedback`` read them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grader.errors import GraderError
from grader.instructor import Course

MARK = "# Written by `python -m grader formgrader`; it is rewritten each time (delete this line to keep your edits)."
COURSE_CONFIG = Path(__file__).resolve().parent / "nbgrader_config.py"


def write_config(course: Course) -> Path:
    """Write ``nbgrader_config.py`` into the course folder (never over one someone else wrote).

    Returns:
        The path written.

    Raises:
        GraderError: there is nothing to grade yet, or the folder holds an instructor's own
            ``nbgrader_config.py``.
    """
    if not course.gradebook.is_file() or not (course.root / "autograded").is_dir():
        raise GraderError(f"no gradebook.db and autograded/ in {course.root}: run autograde (or merge) first, "
                          "then formgrader shows the submissions to grade by hand")
    path = course.root / "nbgrader_config.py"
    if path.exists() and MARK not in path.read_text(errors="replace"):
        raise GraderError(f"{path} exists and was not written by the grader: move it away (the grader writes its "
                          "own there), or add to it: c.CourseDirectory.root and source_directory as in "
                          "grader/formgrader.py")
    exchange = course.root / "exchange"  # nbgrader's release/fetch folder, unused here; it must exist and be writable
    exchange.mkdir(exist_ok=True)
    path.write_text(
        f"{MARK}\n"
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(COURSE_CONFIG)!r})  # noqa: F821  (the course's configuration)\n"
        f"c.CourseDirectory.root = {str(course.root)!r}\n"
        f"c.CourseDirectory.source_directory = {str(course.source)!r}\n"
        f"c.Exchange.root = {str(exchange)!r}\n"
    )
    return path


def start(course: Course, lab_args: list[str]) -> None:
    """Replace this process with JupyterLab serving the course folder, formgrader configured.

    Args:
        lab_args: More options for JupyterLab (``--port=9000``, ``--no-browser``, ...). JupyterLab
            serves the course folder unless they name another root (which must contain it).
    """
    write_config(course)
    print(f"formgrader for {course.root}: in JupyterLab, open Nbgrader > Formgrader (or the page /formgrader), "
          "then Manual Grading; stop with Ctrl+C", flush=True)
    os.chdir(course.root)
    os.execv(sys.executable, lab_command(course, lab_args))


def lab_command(course: Course, lab_args: list[str]) -> list[str]:
    """The JupyterLab command line of :func:`start`: the course folder as root unless ``lab_args``
    name another, and ``--allow-root`` (with a note) when run as root, where JupyterLab refuses to start."""
    given_root = any(a.startswith(("--ServerApp.root_dir", "--notebook-dir", "--root-dir")) for a in lab_args)
    extra = [] if given_root else [f"--ServerApp.root_dir={course.root}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and not any(a.startswith("--allow-root") for a in lab_args):
        print("note: running as root, so JupyterLab gets --allow-root (it refuses root otherwise); a normal "
              "user account is safer for grading by hand", flush=True)
        extra.append("--allow-root")
    return [sys.executable, "-m", "jupyterlab", *extra, *lab_args]
