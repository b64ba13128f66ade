"""The course notebooks: solutions/ (instructor sources) and notebooks/ (generated student versions).

Fast checks: notebooks/ is exactly what `make release` generates, nothing is committed with
outputs, and every graded cell is well formed. Slow checks run the real nbgrader (release into a
throwaway course, autograde in real kernels): each solution executes top to bottom and gets full
marks; each untouched student version executes to the end and gets zero; harmless stderr output
(TensorFlow's C++ log lines, Python warnings) costs no points. Nothing is written into the repo.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from grader import release as rel

# nbgrader's own gradebook code triggers these SQLAlchemy warnings; they are not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")

ASSIGNMENTS = rel.assignments(rel.SOLUTIONS)
STATED_POINTS = re.compile(r"\*\*Points:\*\*\s*(\d+)")
ONE_LINE_DOCSTRING = re.compile(r'"""[^"\n]+"""')


def solution_path(name: str) -> Path:
    return rel.SOLUTIONS / name / f"{name}.ipynb"


def student_path(name: str) -> Path:
    return rel.NOTEBOOKS / name / f"{name}.ipynb"


def read(path: Path):
    return nbformat.read(path, as_version=4)


def nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def code_cells(notebook):
    return [(index, cell) for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]


def test_the_course_has_its_notebooks():
    numbers = [name[:2] for name in ASSIGNMENTS]
    assert numbers[:5] == ["01", "02", "03", "04", "05"], f"expected assignments 01..05 first, got {ASSIGNMENTS}"
    assert len(set(numbers)) == len(numbers), f"two assignments share a number: {ASSIGNMENTS}"


def test_notebooks_folder_is_what_release_generates(tmp_path):
    generated = rel.release(rel.SOLUTIONS, tmp_path)
    assert generated == [tmp_path / name / f"{name}.ipynb" for name in ASSIGNMENTS]

    def files(root: Path) -> list[str]:
        return sorted(
            str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and ".ipynb_checkpoints" not in p.parts
        )

    assert files(rel.NOTEBOOKS) == files(tmp_path), (
        "notebooks/ does not hold exactly the files `make release` generates from solutions/: "
        "run `make release` and commit notebooks/"
    )
    for name in ASSIGNMENTS:
        fresh, committed = read(tmp_path / name / f"{name}.ipynb"), read(student_path(name))
        assert committed.metadata == fresh.metadata, f"notebooks/{name}: notebook metadata drifted; run `make release`"
        assert len(committed.cells) == len(fresh.cells), (
            f"notebooks/{name} has {len(committed.cells)} cells, a fresh release {len(fresh.cells)}: run `make release`"
        )
        for index, (old, new) in enumerate(zip(committed.cells, fresh.cells)):
            assert (old.cell_type, old.source, old.metadata) == (new.cell_type, new.source, new.metadata), (
                f"notebooks/{name} cell {index} differs from what `make release` generates from "
                f"solutions/{name}: never edit notebooks/ by hand; run `make release`"
            )


def test_release_refuses_to_overwrite_its_source(tmp_path):
    shutil.copytree(rel.SOLUTIONS / ASSIGNMENTS[0], tmp_path / ASSIGNMENTS[0])
    for dest in (tmp_path, tmp_path / ASSIGNMENTS[0], tmp_path.parent):
        with pytest.raises(ValueError, match="overlaps the source folder"):
            rel.release(tmp_path, dest)
    assert (tmp_path / ASSIGNMENTS[0] / f"{ASSIGNMENTS[0]}.ipynb").is_file()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="no assignment found"):
        rel.release(tmp_path / "empty", tmp_path / "out")


@pytest.mark.parametrize("path", sorted(rel.SOLUTIONS.rglob("*.ipynb")) + sorted(rel.NOTEBOOKS.rglob("*.ipynb")),
                         ids=lambda p: str(p.relative_to(rel.ROOT)))
def test_no_outputs_are_committed(path):
    for index, cell in code_cells(read(path)):
        assert cell.outputs == [] and cell.execution_count is None, (
            f"{path.relative_to(rel.ROOT)} cell {index} was committed with outputs or an execution count: "
            "clear them (Edit > Clear Outputs of All Cells) and save"
        )


def test_grade_ids_are_unique_across_the_course():
    seen = {}
    for name in ASSIGNMENTS:
        for index, cell in enumerate(read(solution_path(name)).cells):
            meta = nbgrader(cell)
            if not meta:
                continue
            grade_id = meta.get("grade_id")
            assert grade_id, f"solutions/{name} cell {index} has nbgrader metadata without a grade_id"
            assert grade_id not in seen, f"grade_id '{grade_id}' is used in {seen.get(grade_id)} and {name} cell {index}"
            seen[grade_id] = f"{name} cell {index}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_graded_cells_are_well_formed(name):
    notebook = read(solution_path(name))
    graded = [cell for cell in notebook.cells if nbgrader(cell).get("grade")]
    assert graded, f"solutions/{name} has no graded cell"
    for cell in graded:
        meta = nbgrader(cell)
        assert meta.get("points", 0) > 0, f"{name}: graded cell '{meta['grade_id']}' has no points"
        if cell.cell_type == "code":
            first_line = cell.source.splitlines()[0]
            assert ONE_LINE_DOCSTRING.fullmatch(first_line), (
                f"{name}: test cell '{meta['grade_id']}' must start with a one-line docstring, got {first_line!r}"
            )
            assert meta.get("locked"), f"{name}: test cell '{meta['grade_id']}' must be locked"
    stated = STATED_POINTS.search(notebook.cells[0].source)
    total = sum(nbgrader(cell)["points"] for cell in graded)
    assert stated, f"{name}: the first cell must state the total as **Points:** N"
    assert int(stated.group(1)) == total, f"{name}: states {stated.group(1)} points, its graded cells add up to {total}"
    exercises = [c for c in notebook.cells if c.cell_type == "code" and nbgrader(c).get("solution")]
    for cell in exercises:
        assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, (
            f"{name}: exercise '{nbgrader(cell)['grade_id']}' has no BEGIN/END SOLUTION region"
        )
    tests = [c for c in graded if c.cell_type == "code"]
    assert len(tests) >= len(exercises), f"{name}: {len(exercises)} exercises but only {len(tests)} test cells"
    assert any("### BEGIN HIDDEN TESTS" in cell.source for cell in tests), f"{name}: no hidden tests"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_notebook_has_the_course_structure(name):
    cells = read(solution_path(name)).cells
    intro = cells[0].source
    for part in ("# ", "Learning goals", "**Time:**", "**Points:**"):
        assert part in intro, f"{name}: the first cell must contain {part!r} (title, goals, time, points)"
    sources = "\n".join(cell.source for cell in cells if cell.cell_type == "code")
    for part in ("keras.__version__", "set_random_seed", "course.load_or_train_model("):
        assert part in sources, f"{name}: expected {part!r} (version check, seeds, the cached model)"
    headings = [line for c in cells if c.cell_type == "markdown" for line in c.source.splitlines() if line.startswith("## ")]
    assert headings[-2:] == ["## Summary", "## Bonus"], f"{name}: must end with ## Summary and ## Bonus, got {headings[-2:]}"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_hides_the_solutions(name):
    for index, cell in enumerate(read(student_path(name)).cells):
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS"):
            assert marker not in cell.source, f"notebooks/{name} cell {index} still contains {marker}"
        meta = nbgrader(cell)
        if meta.get("solution") and cell.cell_type == "code":
            assert "raise NotImplementedError()" in cell.source, f"notebooks/{name} cell {index}: exercise without a stub"
        if meta.get("solution") and cell.cell_type == "markdown":
            assert cell.source.strip() == "YOUR ANSWER HERE", f"notebooks/{name} cell {index}: answer not cleared"


# --- real nbgrader runs -------------------------------------------------------------------------


@dataclass
class Graded:
    """One autograded submission."""

    notebook: nbformat.NotebookNode
    scores: dict  # grade_id -> (auto_score, max_score, needs_manual_grade)
    seconds: float


class Course:
    """A throwaway nbgrader course whose source is ``source``: gradebook and folders under ``root``."""

    def __init__(self, root: Path, source: Path, **config_changes):
        from nbgrader.converters import GenerateAssignment

        self.root, self.source = root, source
        root.mkdir(parents=True, exist_ok=True)
        self.config = rel.load_config()
        self.config.CourseDirectory.root = str(root)
        self.config.CourseDirectory.source_directory = str(source)
        self.config.CourseDirectory.release_directory = str(root / "release")
        self.config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
        for dotted, value in config_changes.items():
            section, key = dotted.split("__")
            setattr(self.config[section], key, value)
        for name in rel.assignments(source):
            converter = GenerateAssignment(coursedir=self._coursedir(name), config=self.config)
            converter.force = True
            converter.start()

    def _coursedir(self, assignment: str, student: str = "*"):
        from nbgrader.coursedir import CourseDirectory

        coursedir = CourseDirectory(config=self.config)
        coursedir.assignment_id, coursedir.student_id = assignment, student
        return coursedir

    def autograde(self, student: str, assignment: str, notebook: Path) -> Graded:
        """Submit ``notebook`` as ``student``'s work and autograde it."""
        from nbgrader.api import Gradebook
        from nbgrader.converters import Autograde

        submitted = self.root / "submitted" / student / assignment
        submitted.mkdir(parents=True, exist_ok=True)
        shutil.copy(notebook, submitted / f"{assignment}.ipynb")
        converter = Autograde(coursedir=self._coursedir(assignment, student), config=self.config)
        converter.force, converter.create_student = True, True
        start = time.perf_counter()
        converter.start()
        seconds = time.perf_counter() - start
        graded = read(self.root / "autograded" / student / assignment / f"{assignment}.ipynb")
        with Gradebook(self.config.CourseDirectory.db_url) as gradebook:
            submission = gradebook.find_submission_notebook(assignment, assignment, student)
            scores = {g.name: (g.auto_score, g.max_score, g.needs_manual_grade) for g in submission.grades}
        return Graded(graded, scores, seconds)


@pytest.fixture(scope="module", autouse=True)
def venv_on_path():
    """nbgrader runs the ``alembic`` command when it creates a gradebook: find the venv's copy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
        yield


@pytest.fixture(scope="module")
def course(tmp_path_factory, trained_model):
    """The course's assignments released into a throwaway nbgrader course (the model is cached first)."""
    return Course(tmp_path_factory.mktemp("nbgrader_course"), rel.SOLUTIONS)


@pytest.fixture(scope="module")
def graded(course):
    """``graded(version, name)``: each notebook is autograded once per module and reused."""
    results = {}

    def grade(version: str, name: str) -> Graded:
        if (version, name) not in results:
            path = solution_path(name) if version == "solution" else student_path(name)
            results[version, name] = course.autograde(version, name, path)
        return results[version, name]

    return grade


def errors_of(notebook) -> list[tuple[int, str, str]]:
    return [
        (index, output.ename, output.evalue[:200])
        for index, cell in code_cells(notebook)
        for output in cell.outputs
        if output.output_type == "error"
    ]


def test_stderr_pattern_matches_harmless_lines_only():
    pattern = re.compile(rel.load_config().IgnorePattern.pattern)
    harmless = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1795309430.843473    4995 port.cc:153] oneDNN custom operations are on.\n",
        "2024-05-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.\n",
        "/tmp/ipykernel_61/2657760706.py:1: UserWarning: harmless\n  warnings.warn('harmless')\n",
        "/x/numpy/core.py:12: RuntimeWarning: invalid value encountered in divide\n",
        "WARNING:tensorflow:5 out of the last 5 calls to <function> triggered tf.function retracing.\n",
    ]
    for text in harmless:
        assert pattern.search(text), f"the stderr ignore pattern misses the harmless line {text!r}"
    for text in ["my own debug output\n", "Traceback (most recent call last):\n", "ERROR: wrong shape\n"]:
        assert not pattern.search(text), f"the stderr ignore pattern swallows {text!r}"


@pytest.mark.slow
def test_harmless_stderr_costs_no_points(tmp_path):
    """A correct answer whose test cell writes TensorFlow's start-up lines and warnings to stderr."""
    source = tmp_path / "source"
    folder = source / "00_stderr"
    folder.mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}

    def cell(source_code, **meta):
        new = nbformat.v4.new_code_cell(source_code)
        new.metadata["nbgrader"] = {"schema_version": 3, "task": False, "locked": False, **meta}
        return new

    notebook.cells = [
        cell("def answer():\n    ### BEGIN SOLUTION\n    return 42\n    ### END SOLUTION",
             grade=False, solution=True, grade_id="answer"),
        cell('"""answer() is 42; importing TensorFlow and warnings write to stderr."""\n'
             "import warnings\nimport numpy as np\nimport tensorflow as tf  # C++ log lines on stderr\n"
             "warnings.warn('a harmless warning', UserWarning)\n"
             "np.float32(1) / np.float32(0)  # RuntimeWarning: divide by zero\n"
             "assert answer() == 42",
             grade=True, solution=False, locked=True, points=2, grade_id="correct_with_stderr"),
        cell('"""answer() is 43: a wrong answer must still score 0."""\nassert answer() == 43, "expected 43"',
             grade=True, solution=False, locked=True, points=1, grade_id="wrong_answer"),
    ]
    nbformat.write(notebook, folder / "00_stderr.ipynb")

    with_config = Course(tmp_path / "course", source).autograde("s1", "00_stderr", folder / "00_stderr.ipynb")
    assert with_config.scores["correct_with_stderr"][:2] == (2.0, 2.0), (
        f"harmless stderr cost points: {with_config.scores}"
    )
    assert with_config.scores["wrong_answer"][:2] == (0.0, 1.0), f"a failing check was not zeroed: {with_config.scores}"

    # The control: without the ignore pattern the same correct cell is zeroed, so stderr really came.
    without = Course(tmp_path / "plain", source, IgnorePattern__enabled=False)
    plain = without.autograde("s1", "00_stderr", folder / "00_stderr.ipynb")
    assert plain.scores["correct_with_stderr"][:2] == (0.0, 2.0), f"expected stderr to cost points here: {plain.scores}"
    stderr = "".join(
        output.text for _, c in code_cells(plain.notebook) for output in c.outputs
        if output.output_type == "stream" and output.name == "stderr"
    )
    assert "UserWarning: a harmless warning" in stderr and "RuntimeWarning" in stderr, stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_solution_runs_and_gets_full_marks(graded, name, record_property):
    result = graded("solution", name)
    record_property("seconds", round(result.seconds, 1))
    print(f"{name}: autograded the solution in {result.seconds:.1f} s")
    assert not errors_of(result.notebook), f"solutions/{name} raised: {errors_of(result.notebook)}"
    unexecuted = [index for index, cell in code_cells(result.notebook) if cell.execution_count is None]
    assert not unexecuted, f"solutions/{name}: cells {unexecuted} did not run"
    source = read(solution_path(name))
    expected = {nbgrader(c)["grade_id"]: c for c in source.cells if nbgrader(c).get("grade")}
    assert set(result.scores) == set(expected)
    for grade_id, (score, max_score, manual) in result.scores.items():
        if expected[grade_id].cell_type == "code":
            assert score == max_score and not manual, f"solutions/{name}: '{grade_id}' got {score} of {max_score}"
        else:
            assert manual, f"solutions/{name}: written answer '{grade_id}' should wait for manual grading"


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_student_version_runs_to_the_end_and_scores_zero(graded, name):
    result = graded("student", name)
    unexecuted = [index for index, cell in code_cells(result.notebook) if cell.execution_count is None]
    assert not unexecuted, f"notebooks/{name}: cells {unexecuted} did not run (did the kernel die?)"
    errors = errors_of(result.notebook)
    others = [error for error in errors if error[1] != "NotImplementedError"]
    assert not others, (
        f"notebooks/{name}: an unanswered exercise should only cause NotImplementedError, got {others}: "
        "later cells must not depend on a variable computed by an exercise"
    )
    failing_cells = {index for index, _, _ in errors}
    tests = [i for i, c in code_cells(result.notebook) if nbgrader(c).get("grade")]
    assert set(tests) <= failing_cells, f"notebooks/{name}: test cells {sorted(set(tests) - failing_cells)} passed unanswered"
    for grade_id, (score, max_score, _) in result.scores.items():
        assert score == 0, f"notebooks/{name}: '{grade_id}' gave {score} of {max_score} points without an answer"


# --- the visible tests catch the common mistakes ------------------------------------------------


def _cnn(conv_kwargs: str = "", dense_units: int = 64, last: str = 'activation="softmax"', with_input: bool = True) -> str:
    """Source of a build_cnn with one typical mistake."""
    first = "keras.Input(shape=(28, 28, 1)), " if with_input else ""
    return (
        "def build_cnn():\n    L = keras.layers\n    return keras.Sequential([" + first
        + f"L.Conv2D(32, 3, activation='relu'{conv_kwargs}), L.MaxPooling2D(2), "
        + f"L.Conv2D(64, 3, activation='relu'{conv_kwargs}), L.MaxPooling2D(2), L.Flatten(), "
        + f"L.Dense({dense_units}, activation='relu'), L.Dense(10, {last})])"
    )


def _grid(body: str, name: str = "plot_feature_map_grid") -> str:
    """Source of a grid-plotting function (maps, ncols) with ``body`` drawing panel k."""
    return (
        f"def {name}(maps, ncols=8):\n"
        "    count = maps.shape[-1]\n    nrows = -(-count // ncols)\n"
        "    fig = Figure()\n    axes = fig.subplots(nrows, ncols, squeeze=False)\n"
        "    for k, ax in enumerate(axes.flat):\n        ax.set_axis_off()\n"
        f"        if k < count:\n            {body}\n    return fig"
    )


#: test grade id -> [(a wrong implementation, a piece of the feedback it must get)]
MISTAKES = {
    "prepare_images_tests": [
        ("def prepare_images(images):\n    return images.astype(np.float32) / 255", "add the channel axis"),
        ("def prepare_images(images):\n    return (images.astype(np.float32) / 255)[:, np.newaxis]", "not (N, 1, 28, 28)"),
        ("def prepare_images(images):\n    return images.astype(np.float32)[..., np.newaxis]", "divide by 255"),
        ("def prepare_images(images):\n    return (images // 255).astype(np.float32)[..., np.newaxis]", "not with //"),
        ("def prepare_images(images):\n    return (images / 255.0)[..., np.newaxis]", "astype(np.float32)"),
    ],
    "build_cnn_tests": [
        (_cnn(with_input=False), "keras.Input(shape=(28, 28, 1))"),
        (_cnn(conv_kwargs=", padding='same'"), "use no padding"),
        (_cnn(dense_units=128), "number of filters/units"),
        (_cnn(last="activation='relu'"), "expected activation 'softmax'"),
    ],
    "make_activation_model_tests": [
        ("def make_activation_model(model, layer_name):\n    return model.get_layer(layer_name).output",
         "wrap the output tensor"),
        ("def make_activation_model(model, layer_name):\n"
         "    return keras.Model(inputs=model.input, outputs=model.get_layer(layer_name).output)",
         "use model.inputs[0]"),
        ("def make_activation_model(model, layer_name):\n    x = keras.Input((28, 28, 1))\n"
         "    return keras.Model(x, keras.layers.Conv2D(32, 3, activation='relu')(x))",
         "reuse model.get_layer(layer_name).output"),
    ],
    "get_feature_maps_tests": [
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return np.asarray(make_activation_model(model, layer_name)(image[np.newaxis]))", "drop the batch axis"),
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return make_activation_model(model, layer_name)(image[np.newaxis])[0]", "np.asarray"),
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return np.asarray(make_activation_model(model, layer_name)(image[np.newaxis]))[0, :, :, 0]",
         "you returned a single map"),
    ],
    "plot_feature_map_grid_tests": [
        (_grid("ax.imshow(maps[:, :, k])").replace("    return fig", "    pass"), "return the figure"),
        (_grid("ax.imshow(maps[:, :, k])").replace("fig.subplots(nrows, ncols", "fig.subplots(ncols, nrows"),
         "expected a grid of 2 rows x 3 columns"),
        (_grid("ax.imshow(maps[:, :, count - 1 - k])"), "draw the maps in channel order"),
        (_grid("ax.imshow(maps[:, :, k]); ax.set_axis_on()"), "ax.set_axis_off()"),
    ],
    "conv_layer_names_tests": [
        ("def conv_layer_names(model):\n    return [layer.name for layer in model.layers[:3]]",
         "keep only the Conv2D layers"),
        ("def conv_layer_names(model):\n"
         "    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]", "use layer.name"),
        ("def conv_layer_names(model):\n"
         "    return tuple(layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D))",
         "expected a list"),
    ],
    "extract_all_conv_maps_tests": [
        ("def extract_all_conv_maps(model, images):\n"
         "    return {n: get(model, images, n)[0] for n in conv_layer_names(model)}", "keep the batch axis"),
        ("def extract_all_conv_maps(model, images):\n"
         "    return {n: tf.constant(get(model, images, n)) for n in conv_layer_names(model)}", "use np.asarray"),
        ("def extract_all_conv_maps(model, images):\n"
         "    return [get(model, images, n) for n in conv_layer_names(model)]", "expected a dict"),
    ],
    "plot_comparison_tests": [
        ("def plot_comparison(images, all_maps):\n"
         "    fig = Figure()\n    axes = fig.subplots(len(images), 1 + len(all_maps), squeeze=False)\n"
         "    for i in range(len(images)):\n        axes[i, 0].imshow(images[i, ..., 0])\n"
         "        for j, name in enumerate(all_maps, start=1):\n"
         "            c = int(all_maps[name][i].max(axis=(0, 1)).argmax())\n"
         "            axes[i, j].imshow(all_maps[name][i][:, :, c]); axes[i, j].set_title(f'{name} #{c}')\n"
         "    return fig", "maps.mean(axis=(0, 1)).argmax()"),
        ("def plot_comparison(images, all_maps):\n"
         "    fig = Figure()\n    axes = fig.subplots(len(images), len(all_maps), squeeze=False)\n"
         "    for i in range(len(images)):\n        for j, name in enumerate(all_maps):\n"
         "            c = int(all_maps[name][i].mean(axis=(0, 1)).argmax())\n"
         "            axes[i, j].imshow(all_maps[name][i][:, :, c]); axes[i, j].set_title(f'{name} #{c}')\n"
         "    return fig", "one row per image"),
    ],
    "normalize_map_tests": [
        ("def normalize_map(m):\n    m = np.asarray(m, dtype=np.float32)\n    return (m - m.min()) / (m.max() - m.min())",
         "check for max == min"),
        ("def normalize_map(m):\n    m = np.asarray(m, dtype=np.float32)\n"
         "    return m / m.max() if m.max() else np.zeros_like(m)", "subtract the minimum"),
        ("def normalize_map(m):\n    m -= m.min()\n    top = m.max()\n"
         "    return (m / top if top else np.zeros_like(m)).astype(np.float32)", "the input map was modified"),
    ],
    "normalize_maps_tests": [
        ("def normalize_maps(maps, mode='per_map'):\n"
         "    if mode not in ('per_map', 'global'):\n        raise ValueError('per_map or global')\n"
         "    return normalize_map(maps)", "scale each channel maps[:, :, k] separately"),
        ("def normalize_maps(maps, mode='per_map'):\n"
         "    if mode not in ('per_map', 'global'):\n        raise ValueError('per_map or global')\n"
         "    return np.stack([normalize_map(maps[:, :, k]) for k in range(maps.shape[-1])], axis=-1)",
         "use one minimum and one maximum over every map"),
        ("def normalize_maps(maps, mode='per_map'):\n"
         "    if mode == 'global':\n        return normalize_map(maps)\n"
         "    return np.stack([normalize_map(maps[:, :, k]) for k in range(maps.shape[-1])], axis=-1)",
         "expected a ValueError"),
        ("def normalize_maps(maps, mode='per_map'):\n"
         "    if mode == 'global':\n        return normalize_map(maps)\n    if mode != 'per_map':\n"
         "        raise ValueError('bad mode')\n"
         "    return np.stack([normalize_map(maps[:, :, k]) for k in range(maps.shape[-1])], axis=-1)",
         "to name the valid modes"),
    ],
    "to_uint8_tests": [
        ("def to_uint8(x):\n    return (np.asarray(x) * 255).astype(np.uint8)", "round with np.round"),
        ("def to_uint8(x):\n    return np.round(np.asarray(x) * 255).astype(np.uint8)", "clip to [0, 1] first"),
        ("def to_uint8(x):\n    return np.round(np.clip(x, 0, 1) * 255)", "finish with .astype(np.uint8)"),
        ("def to_uint8(x):\n    return np.round(np.clip(x, 0, 1)).astype(np.uint8)", "multiply by 255"),
    ],
    "get_filters_tests": [
        ("def get_filters(model, layer_name):\n    return model.get_layer(layer_name).get_weights()", "take the kernel"),
        ("def get_filters(model, layer_name):\n    return model.get_layer(layer_name).get_weights()[1]", "that is the bias"),
    ],
    "plot_filters_tests": [
        (_grid("ax.imshow(maps[:, :, k], cmap='RdBu_r')", "plot_filters"), "vmin=-limit, vmax=limit"),
        (_grid("ax.imshow(maps[:, :, k], cmap='RdBu_r', vmin=maps.min(), vmax=maps.max())", "plot_filters"),
         "shared symmetric scale"),
        (_grid("limit = np.abs(maps).max(); ax.imshow(maps[:, :, k], vmin=-limit, vmax=limit)", "plot_filters"),
         "diverging colormap"),
    ],
    "find_dead_filters_tests": [
        ("def find_dead_filters(maps, threshold=0.0):\n    return np.flatnonzero(maps[0].max(axis=(0, 1)) <= threshold)",
         "fires in one image only"),
        ("def find_dead_filters(maps, threshold=0.0):\n    return maps.max(axis=(0, 1, 2)) <= threshold",
         "np.flatnonzero"),
        ("def find_dead_filters(maps, threshold=0.0):\n    return np.flatnonzero(maps.mean(axis=(0, 1, 2)) <= threshold)",
         "with threshold=0.1"),
    ],
    "strongest_filters_tests": [
        ("def strongest_filters(maps, k=5):\n    return np.argsort(maps.mean(axis=(0, 1)))[:k]", "sort descending"),
        ("def strongest_filters(maps, k=5):\n    return np.argsort(-maps.max(axis=(0, 1)))[:k]", "not its maximum"),
        ("def strongest_filters(maps, k=5):\n    return np.sort(maps.mean(axis=(0, 1)))[::-1][:k]",
         "expected channels [1, 3, 5]"),
    ],
}
#: Helpers the wrong implementations above may use (defined in the notebook's namespace).
MISTAKE_HELPERS = (
    "def get(model, images, name):\n"
    "    return course.extract_feature_maps(model, images, name)[name]\n"
)


def _solution_code(name: str) -> dict[str, str]:
    """grade id -> the instructor's code of each exercise."""
    return {
        nbgrader(cell)["grade_id"]: cell.source
        for cell in read(solution_path(name)).cells
        if cell.cell_type == "code" and nbgrader(cell).get("solution")
    }


def _run(source: str, namespace: dict) -> None:
    """Run a cell's code here; IPython magics (``%matplotlib inline``) are skipped."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%"))
    exec(compile(code, "<notebook cell>", "exec"), namespace)  # noqa: S102 (our own notebooks)


NOTEBOOKS_WITH_MISTAKES = [
    name for name in ASSIGNMENTS
    if any(nbgrader(c).get("grade_id") in MISTAKES for c in read(student_path(name)).cells)
]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS_WITH_MISTAKES)
def test_visible_tests_catch_the_common_mistakes(name):
    """Run the student version (exercises filled with the solutions) in this process; before each
    visible test cell, swap in each typical wrong implementation: the cell must fail with feedback."""
    solutions = _solution_code(name)
    cells = [cell for cell in read(student_path(name)).cells if cell.cell_type == "code"]
    last = max(i for i, cell in enumerate(cells) if nbgrader(cell).get("grade_id") in MISTAKES)
    namespace = {"__name__": "__main__"}
    defined, missed = [], []
    for cell in cells[: last + 1]:
        meta = nbgrader(cell)
        if meta.get("solution"):
            defined.append(solutions[meta["grade_id"]])
            _run(defined[-1], namespace)
            continue
        for wrong, feedback in MISTAKES.get(meta.get("grade_id"), []):
            _run(MISTAKE_HELPERS + wrong, namespace)
            try:
                _run(cell.source, namespace)
            except AssertionError as error:
                if feedback not in str(error):
                    missed.append(f"{meta['grade_id']}: {wrong.splitlines()[-1].strip()!r} got {str(error)!r}, "
                                  f"expected feedback containing {feedback!r}")
            except Exception as error:  # noqa: BLE001 (any other failure is feedback-less)
                missed.append(f"{meta['grade_id']}: {wrong.splitlines()[-1].strip()!r} raised "
                              f"{type(error).__name__}: {error}, not an AssertionError with feedback")
            else:
                missed.append(f"{meta['grade_id']}: the visible tests pass this mistake: {wrong!r}")
            for code in defined:  # restore the correct functions
                _run(code, namespace)
        _run(cell.source, namespace)
    assert not missed, "\n".join(missed)
