"""Self-study: check a notebook's exercises without any nbgrader set-up.

    python -m grader check notebooks/02_first_layer_maps/02_first_layer_maps.ipynb

or from the notebook's last cell, the self-check cell (save the notebook first; this reads the
saved file)::

    from grader import check
    check()

It grades the saved notebook exactly as the instructor's autograde does (same sandbox, same
checks, hidden tests included when ``solutions/`` is there), in fresh processes: nothing in
the running notebook is used or changed, and nothing is saved. In a notebook the cell shows a
progress line at once, replaced by the report when it is done. Where no learner is looking
(nbgrader's Validate and autograde, nbconvert, the grader's own sandbox) the cell does nothing
but say so, so that grading a notebook never grades it again.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from grader.engine import ROOT, Limits, Task, grade_many
from grader.notebook import NotebookError, nbgrader_metadata, read_json_notebook, read_source

#: What the learner waits for, said by the progress line.
STARTING = "the first check starts the grader, 5-15 s; later ones reuse it, about 3 s"
_SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\s*(.*?)\s*### END SOLUTION", re.S)


@dataclass
class Report:
    """The outcome of a check: the grader's result dict and its text.

    Attributes:
        result: The grader's result for the notebook.
        source: The instructor source it was checked against.
        hidden: True when that source is the instructor's (hidden tests and model answers included).
        note: A line about how the source was found (e.g. for a renamed copy), or "".
        model_answers: grade id -> the model answer of each written question (from ``solutions/``).
        shown: True once the report was shown as a cell's output (it is then not shown again).
    """

    result: dict
    source: Path
    hidden: bool
    note: str = ""
    model_answers: dict[str, str] = field(default_factory=dict)
    shown: bool = False

    @property
    def passed(self) -> bool:
        tests = self.result.get("tests", {})
        return bool(tests) and all(t["passed"] for t in tests.values())

    @property
    def unanswered(self) -> list[str]:
        """The grade ids of the written answers that are still empty."""
        return [gid for gid, m in self.result.get("manual", {}).items() if not m["answered"]]

    def text(self) -> str:
        r = self.result
        if r.get("status") != "graded":
            return f"{r['notebook']}: not checked: " + "; ".join(r.get("problems") or ["the grader failed"])
        lines = [f"{r['notebook']}: {r['score']:g} / {r['max_score']:g} points"
                 + ("" if self.hidden else " (visible tests only: this checkout has no solutions/ for it)")]
        if self.note:
            lines.append(f"  note: {self.note}")
        manual = r.get("manual", {})
        width = max([len(g) for g in [*r["tests"], *manual]] + [10])
        for gid, t in r["tests"].items():
            status = "passed" if t["passed"] else "FAILED"
            line = f"  {status}  {gid:<{width}}  {t['points']:g}/{t['max_points']:g}"
            if not t["passed"]:
                line += f"  {t['message']}"
            lines.append(line)
        for gid, m in manual.items():
            lines.append(f"  {'answer' if m['answered'] else 'EMPTY '}  {gid:<{width}}  -/{m['max_points']:g}  "
                         + ("answered; graded by hand" if m["answered"] else "not answered yet: write your answer "
                            "in the cell under the question"))
            if m["answered"] and self.model_answers.get(gid):
                lines.append(textwrap.fill(f"model answer (compare it with yours): {self.model_answers[gid]}",
                                           width=100, initial_indent="      ", subsequent_indent="      "))
        for p in r.get("problems", []):
            lines.append(f"  note: {p}")
        for p in r.get("review", []):
            lines.append(f"  needs review: {p}")
        lines.append(self._verdict())
        return "\n".join(lines)

    def _verdict(self) -> str:
        failed = sum(not t["passed"] for t in self.result["tests"].values())
        manual, empty = self.result.get("manual", {}), self.unanswered
        if not self.passed:
            still = f" Written answers still empty: {', '.join(empty)}." if empty else ""
            return f"{failed} exercise(s) to fix.{still}"
        if not manual:
            return "All exercises pass."
        if empty:
            return (f"All autograded exercises pass; {len(empty)} of {len(manual)} written answers are still "
                    f"empty: {', '.join(empty)}.")
        return f"All autograded exercises pass; your {len(manual)} written answers are graded by hand."

    def _repr_pretty_(self, p, cycle):  # IPython's text view of the report
        p.text(self.text())

    def _ipython_display_(self):
        """As a cell's value: the report, unless :func:`check` already showed it in this cell."""
        if not self.shown:
            from IPython.display import display

            display({"text/plain": self.text()}, raw=True)

    def __str__(self) -> str:
        return self.text()


def _graded_ids(path: Path) -> set[str]:
    """The grade ids of a notebook's graded (test and written-answer) cells; empty if unreadable."""
    try:
        cells = read_json_notebook(path)["cells"]
    except NotebookError:
        return set()
    return {str(m["grade_id"]) for m in map(nbgrader_metadata, cells) if m.get("grade") and m.get("grade_id")}


def _solution_folders(notebook: Path) -> list[Path]:
    """The ``solutions/`` folders of the checkouts the notebook is in, then this grader's."""
    folders = [base / "solutions" for base in [*notebook.resolve().parents, ROOT]]
    return list(dict.fromkeys(f for f in folders if f.is_dir()))


def find_source(notebook: Path) -> tuple[Path, bool, str]:
    """The instructor source for a student notebook.

    ``solutions/<name>/<name>.ipynb`` next to the course checkout; for a renamed copy
    (``01_train_cnn-Copy1.ipynb``) the source whose graded cells the notebook has; else the
    notebook itself (its visible tests only).

    Returns:
        ``(path, has_hidden_tests, note)``; the note says how a renamed copy was matched, or why
        only the visible tests could be used.
    """
    name = notebook.stem
    folders = _solution_folders(notebook)
    for folder in folders:
        candidate = folder / name / f"{name}.ipynb"
        if candidate.is_file():
            return candidate, True, ""
    mine = _graded_ids(notebook)
    best, overlap = None, 0
    for folder in folders:
        for candidate in sorted(folder.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb")):
            if candidate.stem == candidate.parent.name:
                shared = len(mine & _graded_ids(candidate))
                if shared > overlap:
                    best, overlap = candidate, shared
    if best is not None:
        return best, True, (
            f"{notebook.name} is not named like an assignment; its graded cells are those of {best.stem}, so it "
            f"was checked against solutions/{best.stem}. Rename it {best.stem}.ipynb (or check it with "
            f"`python -m grader check {notebook.name} --source {best}`) before you submit it"
        )
    known = sorted({c.stem for f in folders for c in f.glob("[0-9][0-9]_*/[0-9][0-9]_*.ipynb")})
    if folders:
        why = (f"no assignment in {', '.join(str(f) for f in folders)} has this notebook's graded cells "
               f"(assignments: {', '.join(known)})")
    else:
        why = "no solutions/ folder was found next to it or in the grader's checkout"
    return notebook, False, f"{why}; only the notebook's own visible tests were run"


def _session_path(shell=None) -> Path | None:
    """The notebook a Jupyter kernel was started for (JupyterLab, Notebook 7, VS Code), or None."""
    names = [os.environ.get("JPY_SESSION_NAME")]
    if shell is not None:
        names += [shell.user_ns.get("__session__"), shell.user_ns.get("__vsc_ipynb_file__")]
    for name in filter(None, names):
        for candidate in (Path(name), Path.cwd() / Path(name).name):
            if candidate.suffix == ".ipynb" and candidate.is_file():
                return candidate
    return None


def current_notebook() -> Path:
    """The notebook this kernel runs (Jupyter's session path), else the only NN_*.ipynb here."""
    shell = _kernel_shell()
    found = _session_path(shell)
    if found is not None:
        return found
    found = sorted(Path.cwd().glob("[0-9][0-9]_*.ipynb"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"cannot tell which notebook to check (found {[f.name for f in found]} in {Path.cwd()}): "
        "pass its path, e.g. check('02_first_layer_maps.ipynb')"
    )


def _model_answers(source: Path) -> dict[str, str]:
    """grade id -> the model answer (the solution region) of each written question of a source."""
    answers = {}
    for cell in read_source(source).manual:
        match = _SOLUTION_REGION.search(cell.source)
        if match:
            answers[cell.grade_id] = " ".join(match.group(1).split())
    return answers


def _use_service(service: bool | None) -> bool:
    """Whether to check through the self-check service: Linux only, ``$GRADER_SERVICE=off`` says no."""
    if service is None:
        service = os.environ.get("GRADER_SERVICE", "on").lower() not in ("off", "0", "no")
    return service and sys.platform == "linux"


def _grade(notebook: Path, src: Path, limits: Limits | None, service: bool | None, echo: bool) -> dict:
    """The grader's result: from the self-check service, else (or when it fails) in fresh processes."""
    files = [f for f in notebook.parent.iterdir() if f.is_file() and not f.is_symlink() and f.suffix != ".ipynb"]
    if _use_service(service):
        from grader import service as check_service

        try:
            return check_service.check(notebook, src, files, limits or Limits())
        except check_service.ServiceUnavailable as why:
            if echo:
                print(f"        the check service is not available ({why}): checking in fresh processes",
                      file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="check-") as tmp:
        task = Task(read_source(src), notebook, "me", Path(tmp) / "result.json", tuple(files))
        return grade_many([task], jobs=1, limits=limits, progress=False, write=False)[0]


def check_notebook(path: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                   echo: bool = True, limits: Limits | None = None, service: bool | None = None) -> Report:
    """Check the *saved* notebook at ``path`` (default: the current one) and print the report.

    Args:
        path: The notebook to check.
        source: The instructor source to check against (default: found by :func:`find_source`).
        echo: Print the report.
        limits: Time and memory limits (defaults as for the instructor).
        service: Check through the self-check service (:mod:`grader.service`), started by the first
            check and kept warm for the next ones; False: in fresh processes; None (default): unless
            ``$GRADER_SERVICE`` is ``off``.

    Returns:
        The :class:`Report` (``report.passed`` is True when every autograded test passes), or
        None inside the grader's sandbox (a check() cell of a notebook being graded).

    Raises:
        FileNotFoundError: No notebook at ``path`` (or no way to tell which one is meant).
    """
    if os.environ.get("GRADER_SANDBOX"):  # a check() cell inside a submission being graded
        return None
    notebook = Path(path) if path else current_notebook()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}: give the path of a saved .ipynb file")
    src, hidden, note = (Path(source), True, "") if source else find_source(notebook)
    read_source(src)  # a source that cannot be used is the caller's error, before anything starts
    start = time.monotonic()
    if echo:  # the progress line: the report follows in some seconds
        print(f"[  0.0 s] checking {notebook.name} against {src.name} in a sandbox ({STARTING}) ...",
              file=sys.stderr, flush=True)
    result = _grade(notebook, src, limits, service, echo)
    report = Report(result, src, hidden, note, _model_answers(src) if hidden else {})
    if echo:
        print(f"[{time.monotonic() - start:5.1f} s] checked {notebook.name}", file=sys.stderr, flush=True)
        print(report.text())
    return report


def _kernel_shell():
    """The IPython shell of a Jupyter kernel this code runs in, else None (a script, a terminal)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if shell is not None and getattr(shell, "kernel", None) is not None else None


def check(path: str | os.PathLike | None = None, **kwargs) -> Report | None:
    """The self-check cell: check the saved notebook and show the report as this cell's output.

    In a Jupyter kernel a progress line appears at once and is replaced by the report; the
    returned report is not shown a second time. Run by nbgrader (Validate, autograde), nbconvert
    or the grader (no learner's session), it only says that it was skipped and returns None.
    Outside Jupyter it returns the report without printing it.

    Args:
        path: The notebook (default: the notebook of this kernel's session).
        **kwargs: Passed on to :func:`check_notebook` (``source``, ``limits``).

    Returns:
        The :class:`Report`, or None when skipped or when the notebook could not be found.
    """
    if os.environ.get("GRADER_SANDBOX"):
        return None
    shell = _kernel_shell()
    if shell is None:
        kwargs.setdefault("echo", False)
        return check_notebook(path, **kwargs)
    from IPython.display import display

    if os.environ.get("NBGRADER_EXECUTION") or (path is None and _session_path(shell) is None):
        print("self-check skipped: this kernel was not started for a notebook a learner has open (nbgrader's "
              "Validate, autograde or nbconvert run it); check a saved notebook with "
              "`python -m grader check NOTEBOOK.ipynb`")
        return None
    try:
        notebook = Path(path) if path else current_notebook()
        if not notebook.is_file():
            raise FileNotFoundError(f"no notebook at {notebook}: give the path of a saved .ipynb file")
    except FileNotFoundError as error:
        print(f"self-check: {error}")
        return None
    saved = time.strftime("%H:%M:%S", time.localtime(notebook.stat().st_mtime))
    handle = display({"text/plain": (
        f"checking {notebook.name} as saved at {saved} (save with Ctrl+S first to include your latest changes): "
        f"the grader runs it in a sandbox ({STARTING}) ...")}, raw=True, display_id=True)
    start = time.monotonic()
    kwargs["echo"] = False
    try:
        report = check_notebook(notebook, **kwargs)
    except Exception as error:  # noqa: BLE001 (a sentence in the cell, never a traceback)
        handle.update({"text/plain": f"self-check of {notebook.name} failed: {type(error).__name__}: {error}"},
                      raw=True)
        return None
    report.shown = True
    handle.update({"text/plain": report.text() + f"\n(checked in {time.monotonic() - start:.0f} s)"}, raw=True)
    return report


__all__ = ["Report", "check", "check_notebook", "current_notebook", "find_source"]
