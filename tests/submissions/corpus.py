"""The grader's corpus: submissions of notebook 02, generated from the real notebooks.

Each case starts from the released student notebook (``notebooks/02_first_layer_maps``) and
fills in, breaks or tampers with it; the correct code is the instructor's own solution
(``solutions/``) with the solution markers removed. ``python -m tests.submissions.corpus DIR``
writes them as ``DIR/submitted/<case>/02_first_layer_maps/02_first_layer_maps.ipynb``.

Points in notebook 02: make_activation_model 3, get_feature_maps 4, plot_feature_map_grid 3.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "02_first_layer_maps"
SOURCE = ROOT / "solutions" / NAME / f"{NAME}.ipynb"
RELEASE = ROOT / "notebooks" / NAME / f"{NAME}.ipynb"
MAM, GFM, PLOT = "make_activation_model", "get_feature_maps", "plot_feature_map_grid"


@dataclass
class Case:
    """A submission and what the grader must make of it."""

    name: str
    description: str
    score: float
    reason: str  # a piece of text the result's messages or problems must contain ("" = none)
    notebook: dict | bytes


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solutions() -> dict[str, str]:
    """grade id -> the instructor's solution code without the BEGIN/END SOLUTION lines."""
    nb = json.loads(SOURCE.read_text())
    out = {}
    for cell in nb["cells"]:
        if _meta(cell).get("solution") and cell["cell_type"] == "code":
            lines = [l for l in _src(cell).splitlines() if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l]
            out[_meta(cell)["grade_id"]] = "\n".join(lines)
    return out


def release() -> dict:
    return json.loads(RELEASE.read_text())


def fill(code: dict[str, str], nb: dict | None = None) -> dict:
    """The release with the exercise cells (by grade id) replaced by ``code``."""
    nb = copy.deepcopy(nb or release())
    for cell in nb["cells"]:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in code:
            cell["source"] = code[gid]
    return nb


def signature(gid: str) -> str:
    return {MAM: "def make_activation_model(model, layer_name):",
            GFM: "def get_feature_maps(model, image, layer_name):",
            PLOT: "def plot_feature_map_grid(maps, ncols=8):"}[gid]


def with_body(gid: str, body: str) -> str:
    return signature(gid) + "\n" + "\n".join("    " + l for l in body.strip().splitlines())


def tests_of(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if _meta(c).get("grade") and not _meta(c).get("solution")]


def cases() -> list[Case]:
    sol = solutions()
    right = lambda **over: fill({**sol, **over})  # noqa: E731
    out = [
        Case("correct", "the instructor's solutions", 10, "", right()),
        Case("partly_correct", "right activation model; maps keep the batch axis; plot not done", 3,
             "drop the batch axis",
             fill({MAM: sol[MAM], GFM: with_body(GFM, """
sub = make_activation_model(model, layer_name)
return np.asarray(sub(image[np.newaxis]))""")})),
        Case("empty", "the release as is", 0, "not done yet", release()),
        Case("ignores_layer", "get_feature_maps always returns conv1's maps: passes the visible test, not the "
             "hidden one", 6, "for conv2 on test image 7",
             right(**{GFM: with_body(GFM, """
sub = make_activation_model(model, "conv1")
return np.asarray(sub(image[np.newaxis]))[0]""")})),
        Case("syntax_error", "get_feature_maps' cell does not parse", 6, "syntax error",
             right(**{GFM: sol[GFM].replace("return np.asarray", "return np.asarray((")})),
        Case("exception", "get_feature_maps raises", 6, "get_feature_maps raised ValueError: boom",
             right(**{GFM: with_body(GFM, "raise ValueError('boom')")})),
        Case("infinite_loop", "get_feature_maps never returns", 6, "did not finish within",
             right(**{GFM: with_body(GFM, "while True:\n    pass")})),
        Case("memory_hog", "get_feature_maps allocates without end", 6, "MB of memory",
             right(**{GFM: with_body(GFM, "hog = []\nwhile True:\n    hog.append(np.ones(25_000_000))")})),
        Case("sys_exit", "plot_feature_map_grid calls sys.exit", 7, "sys.exit",
             right(**{PLOT: "import sys\n" + with_body(PLOT, "sys.exit(0)")})),
        Case("os_exit", "get_feature_maps ends the process with os._exit", 6, "ended the process (exit code 1",
             right(**{GFM: "import os\n" + with_body(GFM, "os._exit(1)")})),
    ]
    # test cells tampered with: they are taken from the source, so nothing changes
    nb = release()
    for cell in tests_of(nb):
        cell["source"] = "assert True  # edited by the student"
    out.append(Case("tests_edited", "unfinished, but every test cell replaced by `assert True`", 0, "not done yet", nb))
    nb = right()
    nb["cells"] = [c for c in nb["cells"] if c not in tests_of(nb)]
    out.append(Case("tests_deleted", "correct, test cells deleted", 10, "", nb))
    nb = right()
    nb["cells"] = [d for c in nb["cells"] for d in ([c, copy.deepcopy(c)] if c in tests_of(nb) else [c])]
    out.append(Case("tests_duplicated", "correct, every test cell twice", 10, "", nb))
    nb, cells = right(), []
    for c in nb["cells"]:
        if c in tests_of(nb):
            lines = _src(c).splitlines(keepends=True)
            half = len(lines) // 2
            a, b = copy.deepcopy(c), copy.deepcopy(c)
            a["source"], b["source"] = "".join(lines[:half]), "".join(lines[half:])
            cells += [a, b]
        else:
            cells.append(c)
    nb["cells"] = cells
    out.append(Case("tests_split", "correct, every test cell split in two (broken halves)", 10, "", nb))
    nb = right()
    for c in nb["cells"]:
        if _meta(c).get("grade_id") == GFM:
            c["cell_type"] = "markdown"
            c.pop("outputs", None), c.pop("execution_count", None)
        elif c in tests_of(nb):
            c["cell_type"] = "raw"
            c.pop("outputs", None), c.pop("execution_count", None)
    out.append(Case("cell_types_changed", "get_feature_maps' cell made markdown, tests made raw", 6,
                    "not defined in the submission: get_feature_maps", nb))
    nb = right()
    nb["metadata"] = {}
    for c in nb["cells"]:
        c["metadata"] = {}
    out.append(Case("metadata_stripped", "correct, all metadata removed", 10, "", nb))
    out.append(Case("corrupt_json", "the file is cut in the middle", 0, "not valid JSON",
                    json.dumps(right()).encode()[:5000]))
    nb = right(**{GFM: sol[GFM].replace("    sub_model =", "    print('x' * 3_000_000)\n    sub_model =")})
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "y" * 20_000_000}]
            break
    out.append(Case("huge_output", "correct; 20 MB output saved in the notebook, prints 3 MB per call", 10, "", nb))
    out.append(Case("harmless_stderr", "correct; writes TensorFlow-like log lines and warnings", 10, "",
                    right(**{GFM: "import sys, warnings\n" + sol[GFM].replace("    sub_model =", (
                        "    sys.stderr.write('I0000 00:00:1.0   1 port.cc:153] oneDNN custom operations are on.\\n')\n"
                        "    warnings.warn('a harmless warning', UserWarning)\n    sub_model ="))}))),
    out.append(Case("cheat_numpy", "returns zeros and replaces np.allclose / np.array_equal when defined", 6,
                    "expected the trained conv1's maps",
                    right(**{GFM: ("def get_feature_maps(model, image, layer_name,\n"
                                   "                     _=(setattr(np, 'allclose', lambda *a, **k: True),\n"
                                   "                        setattr(np, 'array_equal', lambda *a, **k: True))):\n"
                                   "    return np.zeros((26, 26, 32), dtype=np.float32)")}))),
    out.append(Case("cheat_eq", "make_activation_model returns an object whose __eq__ is always True "
                    "(get_feature_maps, which uses it, fails too)", 3, "cannot compare",
                    right(**{MAM: with_body(MAM, """
class Anything:
    def __eq__(self, other):
        return True
    def __getattr__(self, name):
        return self
    def __call__(self, *args, **kwargs):
        return self
    def __iter__(self):
        return iter([])
return Anything()""")}))),
    out.append(Case("cheat_read_hidden", "reads the instructor's source notebook and runs its solution", 6,
                    "get_feature_maps raised",
                    right(**{GFM: "import json\n" + with_body(GFM, f"""
source = json.load(open({str(SOURCE)!r}))
code = [c for c in source["cells"] if c["metadata"].get("nbgrader", {{}}).get("grade_id") == "get_feature_maps"]
namespace = dict(globals())
exec("".join(code[0]["source"]), namespace)
return namespace["get_feature_maps"](model, image, layer_name)""")}))),
    out.append(Case("sandbox_escape", "correct only if network, fork, writes outside and signals are all refused", 10, "",
                    right(**{GFM: "import os, socket, signal\n" + sol[GFM].replace("    sub_model =", f"""    escaped = []
    for attempt in (lambda: socket.socket(),
                    lambda: os.fork(),
                    lambda: open({str(ROOT / 'solutions' / 'escaped.txt')!r}, 'w'),
                    lambda: open({str(SOURCE)!r}).read(),
                    lambda: os.kill(os.getppid(), signal.SIGCONT)):
        try:
            result = attempt()
        except OSError:
            continue
        if result == 0:
            os._exit(0)  # the forked child
        escaped.append(attempt)
    if escaped:
        return np.zeros((26, 26, 32), np.float32)
    sub_model =""")}))),
    return out


def write(dest: Path, selected: list[str] | None = None) -> list[Case]:
    """Write the corpus as a course directory's ``submitted/<case>/02_first_layer_maps/``."""
    written = []
    for case in cases():
        if selected and case.name not in selected:
            continue
        path = Path(dest) / "submitted" / case.name / NAME / f"{NAME}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = case.notebook if isinstance(case.notebook, bytes) else json.dumps(case.notebook, indent=1).encode()
        path.write_bytes(data)
        written.append(case)
    return written


if __name__ == "__main__":
    for case in write(Path(sys.argv[1])):
        print(f"{case.name:<20} expected {case.score:>4g}  {case.description}")
