"""Self-study: check a notebook's exercises without any nbgrader set-up.

    python -m grader check notebooks/02_first_layer_maps/02_first_layer_maps.ipynb

or, from the last cell of a notebook (save it first; this reads the saved file)::

    from grader import check
    check()

It grades the saved notebook exactly as the instructor's autograde does (same sandbox, same
checks, hidden tests included when ``solutions/`` is there), in fresh processes: nothing in
the running notebook is used or changed, and nothing is saved.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from grader.engine import ROOT, Limits, Task, grade_many
from grader.notebook import read_source


@dataclass
class Report:
    """The outcome of a check: the grader's result dict and its text."""

    result: dict
    source: Path
    hidden: bool

    @property
    def passed(self) -> bool:
        tests = self.result.get("tests", {})
        return bool(tests) and all(t["passed"] for t in tests.values())

    def text(self) -> str:
        r = self.result
        if r.get("status") != "graded":
            return f"{r['notebook']}: not checked: " + "; ".join(r.get("problems") or ["the grader failed"])
        lines = [f"{r['notebook']}: {r['score']:g} / {r['max_score']:g} points"
                 + ("" if self.hidden else " (visible tests only: solutions/ was not found)")]
        width = max([len(g) for g in r["tests"]] + [10])
        for gid, t in r["tests"].items():
            status = "passed" if t["passed"] else "FAILED"
            line = f"  {status}  {gid:<{width}}  {t['points']:g}/{t['max_points']:g}"
            if not t["passed"]:
                line += f"  {t['message']}"
            lines.append(line)
        for gid, m in r.get("manual", {}).items():
            lines.append(f"  manual  {gid:<{width}}  -/{m['max_points']:g}  graded by hand"
                         + ("" if m["answered"] else " (not answered yet)"))
        for p in r.get("problems", []):
            lines.append(f"  note: {p}")
        failed = sum(not t["passed"] for t in r["tests"].values())
        lines.append("All exercises pass." if self.passed else f"{failed} exercise(s) to fix.")
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython shows the text, not the dataclass
        p.text(self.text())

    def __str__(self) -> str:
        return self.text()


def find_source(notebook: Path) -> tuple[Path, bool]:
    """The instructor source for a student notebook: ``solutions/<name>/<name>.ipynb`` found next
    to the course checkout, else the notebook itself (visible tests only).

    Returns:
        ``(path, has_hidden_tests)``.
    """
    name = notebook.stem
    for base in [*notebook.resolve().parents, ROOT]:
        candidate = base / "solutions" / name / f"{name}.ipynb"
        if candidate.is_file():
            return candidate, True
    return notebook, False


def current_notebook() -> Path:
    """The notebook this kernel runs (Jupyter's session path), else the only NN_*.ipynb here."""
    session = os.environ.get("JPY_SESSION_NAME")
    try:
        session = session or get_ipython().user_ns.get("__session__")  # noqa: F821
    except NameError:
        pass
    candidates = []
    if session:
        candidates += [Path(session), Path.cwd() / Path(session).name]
    for candidate in candidates:
        if candidate.suffix == ".ipynb" and candidate.is_file():
            return candidate
    found = sorted(Path.cwd().glob("[0-9][0-9]_*.ipynb"))
    if len(found) == 1:
        return found[0]
    raise FileNotFoundError(
        f"cannot tell which notebook to check (found {[f.name for f in found]} in {Path.cwd()}): "
        "pass its path, e.g. check('02_first_layer_maps.ipynb')"
    )


def check_notebook(path: str | os.PathLike | None = None, source: str | os.PathLike | None = None,
                   echo: bool = True, limits: Limits | None = None) -> Report:
    """Check the *saved* notebook at ``path`` (default: the current one) and print the report.

    Args:
        path: The notebook to check.
        source: The instructor source to check against (default: found by :func:`find_source`).
        echo: Print the report.
        limits: Time and memory limits (defaults as for the instructor).

    Returns:
        The :class:`Report` (``report.passed`` is True when every autograded test passes).
    """
    if os.environ.get("GRADER_SANDBOX"):  # a check() cell inside a submission being graded
        return None
    notebook = Path(path) if path else current_notebook()
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}: give the path of a saved .ipynb file")
    src, hidden = (Path(source), True) if source else find_source(notebook)
    assignment = read_source(src)
    with tempfile.TemporaryDirectory(prefix="check-") as tmp:
        out = Path(tmp) / "result.json"
        files = [f for f in notebook.parent.iterdir() if f.is_file() and not f.is_symlink() and f.suffix != ".ipynb"]
        result = grade_many([Task(assignment, notebook, "me", out, tuple(files))], jobs=1,
                            limits=limits, progress=False, write=False)[0]
    report = Report(result, src, hidden)
    if echo:
        print(report.text())
    return report


check = check_notebook
