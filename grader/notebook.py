"""Read the instructor's source notebook and a student's submission into a grading *program*.

The program is what the sandbox runs: the source notebook's own cells (set-up, demonstrations
and tests, hidden tests included, taken from ``solutions/``) in their order, with one step in
place of the first exercise cell that defines what the student wrote. From the submission only
definitions are taken (imports, functions, classes and constants with literal values), from every
code cell, whatever its metadata says; everything else in the submission (top-level code, test
cells, outputs, metadata) is ignored. So a submission cannot change its checks by editing,
deleting, duplicating or splitting test cells, changing cell types or stripping metadata.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: A submission file larger than this is not parsed (its reason says so).
MAX_NOTEBOOK_BYTES = 100 * 1024 * 1024

_DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class NotebookError(Exception):
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
    """

    name: str
    notebook: str
    path: Path
    cells: list[SourceCell]
    graded_names: list[str]
    digest: str

    @property
    def tests(self) -> list[SourceCell]:
        return [c for c in self.cells if c.kind == "test"]

    @property
    def manual(self) -> list[SourceCell]:
        return [c for c in self.cells if c.kind == "manual"]

    @property
    def max_points(self) -> float:
        return sum(c.points for c in self.cells if c.kind in ("test", "manual"))


@dataclass
class Submission:
    """What the grader takes from a student's notebook.

    Attributes:
        definitions: ``(label, source)`` pairs, one per top-level definition, in order.
        problems: Readable notes on what could not be used (syntax errors, unreadable file).
        answers: grade id -> the student's text of manually graded cells (matched by grade id).
        cells: The submission's cells (for the autograded copy); empty when unreadable.
        readable: False when the file could not be read at all.
    """

    definitions: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    cells: list[dict] = field(default_factory=list)
    readable: bool = True


def _nbgrader(cell: dict) -> dict:
    meta = cell.get("metadata")
    meta = meta.get("nbgrader") if isinstance(meta, dict) else None
    return meta if isinstance(meta, dict) else {}


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    if isinstance(src, list):
        src = "".join(s for s in src if isinstance(s, str))
    return src if isinstance(src, str) else ""


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
    cells, graded = [], []
    for index, cell in enumerate(nb["cells"]):
        meta, cell_type, src = _nbgrader(cell), cell.get("cell_type"), _source(cell)
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
        else:
            cells.append(SourceCell(index, "context", src))
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
    )


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _keep(node: ast.stmt) -> bool:
    """Definitions, and assignments of literal constants (``KERNEL = 3``)."""
    if isinstance(node, _DEFINITIONS):
        return True
    if isinstance(node, ast.Assign):
        return all(isinstance(t, ast.Name) for t in node.targets) and _is_literal(node.value)
    if isinstance(node, ast.AnnAssign):
        return isinstance(node.target, ast.Name) and node.value is not None and _is_literal(node.value)
    return False


def _label(node: ast.stmt) -> str:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return "import " + ", ".join(a.asname or a.name for a in node.names)
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return ", ".join(t.id for t in targets)


def read_submission(path: str | os.PathLike, assignment: Assignment) -> Submission:
    """Take the definitions (and hand-graded answers) from a student's notebook.

    Never raises for a bad submission: what cannot be used is described in ``problems``.
    """
    sub = Submission()
    try:
        nb = read_json_notebook(path)
    except NotebookError as exc:
        return Submission(problems=[str(exc)], readable=False)
    sub.cells = nb["cells"]
    manual_ids = {c.grade_id for c in assignment.manual}
    for number, cell in enumerate(sub.cells, start=1):
        meta, src = _nbgrader(cell), _source(cell)
        if meta.get("grade_id") in manual_ids and (meta.get("solution") or meta.get("task")):
            sub.answers.setdefault(str(meta["grade_id"]), src)
        if cell.get("cell_type") != "code" or not src.strip():
            continue
        try:
            tree = ast.parse(to_python(src))
        except SyntaxError as exc:
            line = (exc.text or "").strip()
            sub.problems.append(
                f"cell {number} has a syntax error (line {exc.lineno}: {exc.msg}"
                + (f": {line[:80]}" if line else "")
                + "), so nothing in it was graded"
            )
            continue
        except Exception as exc:  # IPython's transformer on very odd input
            sub.problems.append(f"cell {number} could not be read as Python ({exc}); skipped")
            continue
        for node in tree.body:
            if _keep(node):
                sub.definitions.append((f"cell {number}: {_label(node)}", ast.unparse(node)))
    defined = set()
    for _, code in sub.definitions:
        defined.update(defined_names(code))
    missing = [n for n in assignment.graded_names if n not in defined]
    if missing:
        sub.problems.append("not defined in the submission: " + ", ".join(missing))
    return sub


def program(assignment: Assignment, submission: Submission) -> list[dict]:
    """The steps the sandbox (and, with the student's part replayed, the checker) runs.

    Returns:
        ``{"key", "kind", "source", "grade_id"}`` dicts in notebook order; the student's
        definitions are one ``"student"`` step (with ``"definitions"``) in place of the first
        exercise cell.
    """
    steps, placed = [], False
    for cell in assignment.cells:
        if cell.kind in ("solution", "manual"):
            if not placed:
                steps.append({"key": "student", "kind": "student", "definitions": submission.definitions})
                placed = True
            continue
        key = cell.grade_id if cell.kind == "test" else f"cell{cell.index}"
        try:
            source = to_python(cell.source)
        except Exception:
            source = cell.source
        steps.append({"key": key, "kind": cell.kind, "source": source, "grade_id": cell.grade_id})
    if not placed:
        steps.insert(0, {"key": "student", "kind": "student", "definitions": submission.definitions})
    return steps
