"""Read the instructor's source notebook and a student's submission into a grading plan.

A submission is graded the way *Restart and Run All* runs it: every code cell of the
submission, in its order, in the student's sandbox, except the autograded test cells. Those
are the source's (``solutions/``, hidden parts included) and run in the trusted checker at the
place where the submission has them, matched by grade id; a deleted test cell runs where the
source has it. So a submission cannot change its checks by editing, deleting, duplicating or
splitting test cells, changing cell types or stripping metadata, and every ordinary style of
code (computed constants, lambdas, aliases, helper modules) works as it does in Jupyter.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import GraderError

#: A submission file larger than this is not parsed (its reason says so).
MAX_NOTEBOOK_BYTES = 100 * 1024 * 1024

#: The tag of a notebook's self-check cell (``from grader import check; check()``): it is the learner's
#: tool, not part of the work, so the grader neither runs it from a submission nor replays it from the source.
SELF_CHECK_TAG = "self-check"

#: What nbgrader puts into an empty written-answer cell of a released notebook.
UNANSWERED = "YOUR ANSWER HERE"

#: nbgrader's hidden-test region of a test cell (with the line break before it): never shown to students.
HIDDEN_TESTS = re.compile(r"\n?[ \t]*### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS[ \t]*", re.S)


class NotebookError(GraderError):
    """A notebook that cannot be read (missing, too big, not JSON, not a notebook)."""


@dataclass
class SourceCell:
    """One cell of the instructor's source notebook, as the grader sees it.

    Attributes:
        index: Position in the source notebook.
        kind: ``"context"`` (set-up or demonstration code), ``"solution"`` (an exercise the
            student fills in), ``"test"`` (autograded checks) or ``"manual"`` (graded by hand).
        source: The cell's code (tests keep their hidden part).
        grade_id: nbgrader's grade id (``""`` for context cells).
        points: Points of a test or manual cell.
        cell_type: ``"code"`` or ``"markdown"``.
    """

    index: int
    kind: str
    source: str
    grade_id: str = ""
    points: float = 0.0
    cell_type: str = "code"


@dataclass
class Assignment:
    """An instructor source notebook, parsed.

    Attributes:
        name: The assignment name (the folder ``NN_name``).
        notebook: The notebook name without ``.ipynb`` (nbgrader's notebook id).
        path: The source notebook.
        cells: The cells that matter for grading, in notebook order.
        graded_names: Names the exercise cells define (the functions the tests call).
        digest: sha256 of the source notebook's bytes.
        references: graded name -> the ``course`` functions that solve its exercise (cell
            metadata ``grader.reference`` of the exercise cell): off limits while it runs.
    """

    name: str
    notebook: str
    path: Path
    cells: list[SourceCell]
    graded_names: list[str]
    digest: str
    references: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tests(self) -> list[SourceCell]:
        return [c for c in self.cells if c.kind == "test"]

    @property
    def manual(self) -> list[SourceCell]:
        return [c for c in self.cells if c.kind == "manual"]

    @property
    def given_code(self) -> set[str]:
        """The plain Python of the instructor's code cells (set-up and demonstrations), as given."""
        out = set()
        for cell in self.cells:
            if cell.kind == "context" and cell.cell_type == "code":
                try:
                    out.add(to_python(cell.source))
                except Exception:  # IPython's transformer on odd input: compared as written
                    out.add(cell.source)
        return out

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.cells if c.kind in ("test", "manual"))


@dataclass
class Submission:
    """What the grader takes from a student's notebook.

    Attributes:
        code: The code cells to run in the sandbox, in order: ``{"number", "source", "grade_id"}``
            (``number`` counts every cell of the notebook from 1, as Jupyter shows them; the
            source is plain Python; test cells are left out, locked cells are the source's).
        steps: The plan: ``("cell", i)`` runs ``code[i]`` in the sandbox, ``("test", grade_id)``
            runs the source's test in the checker.
        problems: Readable notes on what could not be used (syntax errors, unreadable file).
        answers: grade id -> the student's text of manually graded cells (matched by grade id; "" for
            nbgrader's untouched "YOUR ANSWER HERE").
        cells: The submission's cells (for the autograded copy); empty when unreadable.
        readable: False when the file could not be read at all.
    """

    code: list[dict] = field(default_factory=list)
    steps: list[tuple[str, object]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)
    readable: bool = True


def nbgrader_metadata(cell: dict) -> dict:
    """A cell's nbgrader metadata (``{}`` when it has none or it is malformed)."""
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def cell_source(cell: dict) -> str:
    """A cell's text (nbformat allows a string or a list of lines)."""
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


def is_self_check(cell: dict) -> bool:
    """True for a self-check cell: tagged :data:`SELF_CHECK_TAG` and not an nbgrader cell."""
    meta = cell.get("metadata")
    tags = meta.get("tags") if isinstance(meta, dict) else None
    return isinstance(tags, list) and SELF_CHECK_TAG in tags and not nbgrader_metadata(cell).get("grade_id")


def read_json_notebook(path: str | os.PathLike) -> dict:
    """Read a notebook file as plain JSON, with limits and readable errors.

    Raises:
        NotebookError: missing, larger than :data:`MAX_NOTEBOOK_BYTES`, not JSON, or not a
            notebook (no list of cells).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise NotebookError(f"cannot read {path.name}: {exc.strerror}") from None
    if size > MAX_NOTEBOOK_BYTES:
        raise NotebookError(
            f"{path.name} is {size / 2**20:.0f} MB, more than the {MAX_NOTEBOOK_BYTES // 2**20} MB "
            "limit: clear the outputs (Kernel > Restart and Clear Outputs) and submit again"
        )
    try:
        nb = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise NotebookError(
            f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "the file is damaged: open a saved copy in Jupyter and submit again"
        ) from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{path.name} is JSON but not a notebook (it has no list of cells)")
    nb["cells"] = [c for c in nb["cells"] if isinstance(c, dict)]
    return nb


def to_python(source: str) -> str:
    """Turn notebook cell code (which may use ``%magics`` and ``!shell``) into plain Python."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def defined_names(source: str) -> list[str]:
    """Top-level names a cell defines: functions, classes and assigned names."""
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


class NoIPython:
    """``get_ipython()`` for notebook code run outside Jupyter: magics and ``!commands`` do nothing."""

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def namespace() -> dict:
    """A fresh ``__main__``-like namespace for notebook code (with a no-op ``get_ipython``)."""
    import builtins

    return {"__name__": "__main__", "__builtins__": builtins, "get_ipython": NoIPython}


def read_source(path: str | os.PathLike) -> Assignment:
    """Parse an instructor source notebook (``solutions/NN_name/NN_name.ipynb``).

    Raises:
        NotebookError: the file cannot be read, or has no autograded test cell.
    """
    path = Path(path).resolve()
    nb = read_json_notebook(path)
    cells, graded, references = [], [], {}
    for index, cell in enumerate(nb["cells"]):
        if is_self_check(cell):
            continue
        meta, cell_type, src = nbgrader_metadata(cell), cell.get("cell_type"), cell_source(cell)
        own = (cell.get("metadata") or {}).get("grader") or {}
        grade_id, points = str(meta.get("grade_id", "")), float(meta.get("points", 0) or 0)
        if meta.get("grade") and meta.get("solution"):
            cells.append(SourceCell(index, "manual", src, grade_id, points, cell_type))
            if cell_type == "code":
                graded += defined_names(src)
        elif meta.get("task"):
            cells.append(SourceCell(index, "manual", src, grade_id, points, "markdown"))
        elif cell_type != "code":
            continue
        elif meta.get("grade"):
            cells.append(SourceCell(index, "test", src, grade_id, points))
        elif meta.get("solution"):
            cells.append(SourceCell(index, "solution", src, grade_id))
            graded += defined_names(src)
            for name in defined_names(src):
                references[name] = [str(r) for r in own.get("reference", [])]
        else:
            cells.append(SourceCell(index, "context", src, grade_id if meta.get("locked") else ""))
    if not any(c.kind == "test" for c in cells):
        raise NotebookError(f"{path} has no autograded test cell (nbgrader metadata grade=true)")
    ids = [c.grade_id for c in cells if c.kind in ("test", "manual")]
    if len(ids) != len(set(ids)) or "" in ids:
        raise NotebookError(f"{path}: every graded cell needs its own grade id; got {ids}")
    return Assignment(
        name=path.parent.name,
        notebook=path.stem,
        path=path,
        cells=cells,
        graded_names=list(dict.fromkeys(graded)),
        digest=hashlib.sha256(path.read_bytes()).hexdigest(),
        references={k: v for k, v in references.items() if v},
    )


def _first_line(source: str) -> str:
    lines = [line.strip() for line in source.strip().splitlines()]
    return lines[0] if lines else ""


def defines(code: list[dict]) -> set[str]:
    """Top-level names the cells bind: functions, classes, assignments and imports."""
    names = set()
    for cell in code:
        try:
            tree = ast.parse(cell["source"])
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def read_submission(path: str | os.PathLike, assignment: Assignment) -> Submission:
    """The plan for a student's notebook: its code cells in order, the source's tests in place.

    Never raises for a bad submission: what cannot be used is described in ``problems``.
    """
    try:
        nb = read_json_notebook(path)
    except NotebookError as exc:
        return Submission(problems=[str(exc)], readable=False)
    sub = Submission(cells=nb["cells"])
    tests = [c.grade_id for c in assignment.tests]
    test_first_lines = {_first_line(c.source) for c in assignment.tests} - {""}
    locked = {c.grade_id: c.source for c in assignment.cells if c.kind == "context" and c.grade_id}
    manual_ids = {c.grade_id for c in assignment.manual}
    placed = {}  # test grade id -> position in steps
    for number, cell in enumerate(sub.cells, start=1):
        meta, src = nbgrader_metadata(cell), cell_source(cell)
        gid = str(meta.get("grade_id", ""))
        if gid in manual_ids and (meta.get("solution") or meta.get("task")):
            sub.answers.setdefault(gid, "" if src.strip() == UNANSWERED else src)
        if cell.get("cell_type") != "code" or is_self_check(cell):
            continue
        if gid in tests or (meta.get("grade") and not meta.get("solution")) or _first_line(src) in test_first_lines:
            if gid in tests and gid not in placed:  # the source's test runs here (the first copy)
                placed[gid] = len(sub.steps)
                sub.steps.append(("test", gid))
            continue
        src = locked.get(gid, src)
        if not src.strip():
            continue
        try:
            code = to_python(src)
            ast.parse(code)
        except SyntaxError as exc:
            line = (exc.text or "").strip()
            sub.problems.append(
                f"cell {number} has a syntax error (line {exc.lineno}: {exc.msg}"
                + (f": {line[:80]}" if line else "")
                + "), so nothing in it ran"
            )
            continue
        except Exception as exc:  # IPython's transformer on very odd input
            sub.problems.append(f"cell {number} could not be read as Python ({exc}); it did not run")
            continue
        sub.steps.append(("cell", len(sub.code)))
        sub.code.append({"number": number, "source": code, "grade_id": gid})
    _place_missing_tests(sub, assignment, placed)
    missing = [n for n in assignment.graded_names if n not in defines(sub.code)]
    if missing:
        sub.problems.append("not defined in the submission: " + ", ".join(missing))
    return sub


def _place_missing_tests(sub: Submission, assignment: Assignment, placed: dict) -> None:
    """Put each deleted test right after the submission's cell of the exercise before it in the
    source (else at the end), and keep the tests in the source's order."""
    position_of_cell = {c["grade_id"]: k for k, c in enumerate(sub.code) if c["grade_id"]}
    step_of_cell = {i: k for k, (kind, i) in enumerate(sub.steps) if kind == "cell"}
    anchor = None
    for cell in assignment.cells:
        if cell.kind == "solution" and cell.grade_id in position_of_cell:
            anchor = step_of_cell[position_of_cell[cell.grade_id]]
        if cell.kind != "test":
            continue
        if cell.grade_id in placed:
            anchor = placed[cell.grade_id]
            continue
        where = len(sub.steps) if anchor is None else anchor + 1
        sub.steps.insert(where, ("test", cell.grade_id))
        placed = {g: (p + 1 if p >= where else p) for g, p in placed.items()}
        step_of_cell = {i: (k + 1 if k >= where else k) for i, k in step_of_cell.items()}
        placed[cell.grade_id] = anchor = where
    # the checker runs the tests in the source's order (later tests may use earlier ones' state)
    order = [c.grade_id for c in assignment.tests]
    positions = sorted(k for k, (kind, _) in enumerate(sub.steps) if kind == "test")
    for k, gid in zip(positions, order):
        sub.steps[k] = ("test", gid)
