"""The course notebooks: solutions/ (instructor sources) and notebooks/ (generated student versions).

Fast checks: notebooks/ is exactly what `make release` generates, nothing is committed with
outputs, and every graded cell is well formed. Slow checks run the real nbgrader (release into a
throwaway course, autograde in real kernels): each solution executes top to bottom and gets full
marks; each untouched student version executes to the end and gets zero; harmless stderr output
(TensorFlow's C++ log lines, Python warnings) costs no points. Nothing is written into the repo.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

import course as course_package  # `course` is the nbgrader course fixture below

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
    for part in ("rng = course.setup_notebook(seed=0)", "course.load_or_train_model("):
        assert part in sources, f"{name}: expected {part!r} (versions, Keras 3 check and seeds in one call; the cached model)"
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


# --- what the notebooks print agrees with what their text says ------------------------------------


def printed(notebook, marker: str) -> str:
    """The text output (stdout and text/plain) of the one code cell whose source contains ``marker``."""
    cells = [cell for _, cell in code_cells(notebook) if marker in cell.source]
    assert len(cells) == 1, f"expected one code cell containing {marker!r}, found {len(cells)}"
    text = "".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in cells[0].outputs)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)  # rich's colours (model.summary())


def number(pattern: str, text: str, group: int = 1) -> float:
    """The number the regex ``pattern`` captures in ``text`` (commas and % removed)."""
    found = re.search(pattern, text)
    assert found, f"the notebook did not print {pattern!r}; it printed:\n{text[-1500:]}"
    return float(found.group(group).replace(",", "").rstrip("%"))


def _claims_01(nb):
    summary = printed(nb, "model.summary()")
    weights_line = printed(nb, "optimizer_state = sum(")
    weights, state = number(r"weights: ([\d,]+);", weights_line), number(r"optimizer state: ([\d,]+)", weights_line)
    total, trainable = number(r"Total params: ([\d,]+)", summary), number(r"Trainable params: ([\d,]+)", summary)
    assert weights == trainable == 121_930, "the text counts 121,930 parameters (the table), the model has others"
    assert weights + state == total, f"the text says weights + optimizer state = Total params: {weights} + {state} != {total}"
    assert 1.95 < state / weights < 2.05, f"the text says Adam keeps two numbers per weight, got {state / weights:.2f}"
    assert 2.5 < total / weights < 3.5, f"the text says Total params is about three times 121,930, got {total / weights:.2f}"
    recipe = printed(nb, "recipe = meta[")
    assert number(r"peak learning rate of ([\d.e-]+)", recipe) > 0.001 and "schedule cosine" in recipe, (
        f"the text says the cached model's learning rate is larger than 0.001 and follows a cosine: {recipe}"
    )


def _claims_02(nb):
    ratio = number(r"\((\d+)x slower\)", printed(nb, "milliseconds(lambda"))
    assert ratio >= 10, f"the text says a direct call is more than ten times faster than predict, measured {ratio:g}x"


def _claims_03(nb):
    text = printed(nb, "mean class selectivity")
    conv1, conv2 = (number(rf"{n}: mean class selectivity ([\d.]+)", text) for n in ("conv1", "conv2"))
    assert conv2 > conv1, f"the text says conv2's printed selectivity is higher than conv1's: {conv1} vs {conv2}"


def _claims_04(nb):
    text = printed(nb, "many_peaks = ")
    assert re.search(r"weaker than 10% of the strongest: \[\d", text), f"question 1 asks for a map from this list: {text}"
    assert number(r"over 1,000 test digits: (\d+) silent", text) >= 1, (
        f"the text says the cell finds and draws a silent conv2 map among 1,000 digits: {text}"
    )
    cell = next(c for _, c in code_cells(nb) if "many_peaks = " in c.source)
    assert any("image/png" in o.get("data", {}) for o in cell.outputs), "the silent and the weak map are not drawn"
    scale = printed(nb, "raw_image = image * 255")
    for name in ("conv1", "conv2"):
        ratio = number(rf"{name}: largest activation [\d.]+ -> [\d.]+ \((\d+)x\)", scale)
        assert 150 <= ratio <= 300, f"the text says every activation is about 255 times too large: {name} {ratio:g}x"
    certain = [number(rf"{label}: accuracy [\d.]+, predictions with p > 0.9999: (\d+%)", scale)
               for label in (r"in \[0, 1\]", "in 0..255")]
    assert certain[1] >= 90 and certain[1] > certain[0], f"the text says with 0..255 nearly every prediction is certain: {certain}"


def _claims_05(nb):
    text = printed(nb, "tally = {")
    first = re.search(r"shared: (\d+) with its true class \d, (\d+) with the predicted \d -> (.*)", text)
    assert first, text
    assert int(first.group(1)) > int(first.group(2)) and first.group(3) == "closer to the true class", (
        f"the text says the first mistake's strongest filters overlap more with its true class: {first.group(0)}"
    )
    toward = number(r"closer to the predicted class (\d+)", text)
    assert 1 <= toward < 5, f"the text says the overlap points to the predicted class for only some of ten: {toward:g}"
    pairs = printed(nb, "np.corrcoef(flat")
    conv1, conv2 = (number(rf"{n}: (\d+) pairs", pairs) for n in ("conv1", "conv2"))
    assert conv1 > conv2, f"the text says conv1 has more near-duplicate pairs than conv2: {conv1:g} vs {conv2:g}"
    accuracy = printed(nb, "bias[5] = -100.0")
    before, after = (number(r"accuracy on 1,000 test digits: ([\d.]+) -> ([\d.]+)", accuracy, g) for g in (1, 2))
    assert before - after < 0.05, f"the text says losing one filter costs little: {before} -> {after}"


def _claims_06(nb):
    text = printed(nb, "roughness(pictures[1])")
    lines = [line for line in text.splitlines() if line.startswith("test #")]
    assert len(lines) == 4, text
    for line in lines:
        near = [number(p, line) for p in (r"near the ink \((\d+%)", r"near the ink.*?saliency (\d+%)",
                                             r"near the ink.*?SmoothGrad (\d+%)")]
        far = [number(p, line) for p in (r"far from it \((\d+%)", r"far from it.*?saliency (\d+%)",
                                            r"far from it.*?SmoothGrad (\d+%)")]
        raw, smooth = number(r"roughness ([\d.]+) -> ([\d.]+)", line), number(r"roughness ([\d.]+) -> ([\d.]+)", line, 2)
        assert near[1] > near[0] and near[2] > near[0], f"the text says most saliency lies near the strokes: {line}"
        assert far[1] < far[0] and far[2] < far[0], f"the text says far pixels get less than their share: {line}"
        assert 0.6 < smooth / raw < 0.95, f"the text says SmoothGrad lowers the roughness by only a fifth or so: {line}"
        assert abs(near[1] - near[2]) <= 10, f"the text says SmoothGrad hardly moves the shares: {line}"
    top = printed(nb, "hits = int(")
    labels = [int(v) for v in re.search(r"most: \[([\d, ]+)\]", top).group(1).split(",")]
    preferred = number(r"strongest on average for class (\d)", printed(nb, "preferred = int("))
    hits = number(r"; (\d) of 8 are its class", top)
    assert hits == labels.count(preferred), f"the printed count does not match the printed labels: {top}"
    assert hits < 4 and "disagree" in top, f"the text says the class mean and the top digits disagree: {top}"
    assert "TensorBoard logs go to " in printed(nb, "log_dir = tempfile.mkdtemp"), "the text points at the printed folder"


CLAIMS = {name: globals()[f"_claims_{name[:2]}"] for name in ASSIGNMENTS if f"_claims_{name[:2]}" in globals()}


@pytest.mark.slow
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_printed_numbers_agree_with_the_text(graded, name):
    """The solution's outputs (from the autograde run above, not a second execution) hold the text's claims."""
    assert name in CLAIMS, f"{name} has no claims test: add _claims_{name[:2]} to tests/test_notebooks.py"
    CLAIMS[name](graded("solution", name).notebook)


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
        # issue 11: each of these gave a traceback or a misleading hint before
        ("def prepare_images(images):\n    images /= 255\n    return images[..., np.newaxis]",
         "make a float copy first, images.astype(np.float32) / 255"),
        ("def prepare_images(images):\n    scaled = images.astype(np.float32)[..., np.newaxis] / 255",
         "prepare_images returned None, expected a numpy array: end the function with `return ...`"),
        ("def prepare_images(images):\n    return (images.astype(np.float32) / 255)[np.newaxis]",
         "np.newaxis in front adds a batch axis"),
    ],
    "build_cnn_tests": [
        (_cnn(with_input=False), "keras.Input(shape=(28, 28, 1))"),
        (_cnn(conv_kwargs=", padding='same'"), "use no padding"),
        (_cnn(dense_units=128), "number of filters/units"),
        (_cnn(last="activation='relu'"), "expected activation 'softmax'"),
        (_cnn().replace("shape=(28, 28, 1)", "shape=(28, 28)"), "keras.Input(shape=(28, 28, 1))"),
        (_cnn().replace("return keras.Sequential(", "return list("), "pass the layers to keras.Sequential"),
        (_cnn().replace("return keras.Sequential(", "net = keras.Sequential("), "build_cnn returned None"),
    ],
    "make_activation_model_tests": [
        ("def make_activation_model(model, layer_name):\n    return model.get_layer(layer_name).output",
         "make_activation_model returned a KerasTensor: a KerasTensor (such as layer.output) is a symbolic "
         "placeholder without values; wrap it in keras.Model"),
        ("def make_activation_model(model, layer_name):\n"
         "    return keras.Model(keras.Input((28, 28, 1)), model.get_layer(layer_name).output)",
         "the output must come from the model's own input"),
        ("def make_activation_model(model, layer_name):\n"
         "    return keras.Model(model.inputs[0], {layer_name: model.get_layer(layer_name).output})",
         "got a dict of outputs"),
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
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return np.asarray(make_activation_model(model, layer_name)(image))[0]",
         "without a batch axis, but models work on batches: call it on image[np.newaxis]"),
        ("def get_feature_maps(model, image, layer_name):\n"  # the dict output course.activation_model has
         "    sub = keras.Model(model.inputs[0], {layer_name: model.get_layer(layer_name).output})\n"
         "    return np.asarray(sub(image[np.newaxis]))[0]", "take the layer's entry, outputs[layer_name]"),
        ("def get_feature_maps(model, image, layer_name):\n"
         "    sub = keras.Model(model.inputs[0], {layer_name: model.get_layer(layer_name).output})\n"
         "    return sub(image[np.newaxis])", "returned a dict with keys ['conv1']"),
        ("def get_feature_maps(model, image, layer_name):\n    return make_activation_model(model, layer_name).output",
         "get_feature_maps returned a KerasTensor"),
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return np.moveaxis(np.asarray(make_activation_model(model, layer_name)(image[None]))[0], -1, 0)",
         "Keras keeps the channels last"),
        ("def get_feature_maps(model, image, layer_name):\n    maps = get(model, image[None], layer_name)[0]",
         "get_feature_maps returned None"),
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
        ("def conv_layer_names(model):\n    names = [layer.name for layer in model.layers]", "conv_layer_names returned None"),
    ],
    "extract_all_conv_maps_tests": [
        ("def extract_all_conv_maps(model, images):\n"
         "    return {n: get(model, images, n)[0] for n in conv_layer_names(model)}", "keep the batch axis"),
        ("def extract_all_conv_maps(model, images):\n"
         "    return {n: tf.constant(get(model, images, n)) for n in conv_layer_names(model)}", "use np.asarray"),
        ("def extract_all_conv_maps(model, images):\n"
         "    return [get(model, images, n) for n in conv_layer_names(model)]", "dict(zip(names, outputs))"),
        ("def extract_all_conv_maps(model, images):\n"  # channels first (PyTorch's layout)
         "    return {n: get(model, images, n).transpose(0, 3, 1, 2) for n in conv_layer_names(model)}",
         "do not move the channel axis"),
        ("def extract_all_conv_maps(model, images):\n"
         "    return {n: get(model, images[0], n) for n in conv_layer_names(model)}", "without a batch axis"),
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
        ("def normalize_map(m):\n    warnings.warn('note', UserWarning)\n    m = np.asarray(m, dtype=np.float32)\n"
         "    return (m - m.min()) / (m.max() - m.min())", "check for max == min"),
        ("def normalize_map(m):\n    m = np.asarray(m, dtype=np.float64)\n    span = m.max() - m.min()\n"
         "    return (m - m.min()) / span if span else np.zeros_like(m)", "np.asarray(m, dtype=np.float32)"),
        ("def normalize_map(m):\n    m = np.asarray(m, dtype=np.float32)\n    m = (m - m.min()) / (m.max() - m.min())",
         "normalize_map returned None"),
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
        ("def to_uint8(x):\n    return tf.cast(tf.round(tf.clip_by_value(x, 0, 1) * 255), tf.uint8)",
         "convert the tensor with np.asarray"),
    ],
    "get_filters_tests": [
        ("def get_filters(model, layer_name):\n    return model.get_layer(layer_name).get_weights()", "take the kernel"),
        ("def get_filters(model, layer_name):\n    return model.get_layer(layer_name).get_weights()[1]", "that is the bias"),
        ("def get_filters(model, layer_name):\n    return model.get_layer(layer_name).kernel", "returned a Keras variable"),
        ("def get_filters(model, layer_name):\n    return model.get_layer('conv_1').get_weights()[0]",
         "look the layer up with the layer_name argument"),
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
        ("def find_dead_filters(maps, threshold=0.0):\n    return np.flatnonzero(maps.max(axis=(0, 1, 2)) <= threshold).tolist()",
         "wrap the indices in np.asarray"),
    ],
    "strongest_filters_tests": [
        ("def strongest_filters(maps, k=5):\n    return np.argsort(maps.mean(axis=(0, 1)))[:k]", "sort descending"),
        ("def strongest_filters(maps, k=5):\n    return np.argsort(-maps.max(axis=(0, 1)))[:k]", "not its maximum"),
        ("def strongest_filters(maps, k=5):\n    return np.sort(maps.mean(axis=(0, 1)))[::-1][:k]",
         "expected channels [1, 3, 5]"),
        ("def strongest_filters(maps, k=5):\n    order = np.argsort(-maps.mean(axis=(0, 1)))[:k]", "strongest_filters returned None"),
    ],
}


def refused(exercise: str, reference: str) -> str:
    """The sentence a visible test shows when the student's function calls the exercise's reference."""
    return (f"this exercise asks you to write `{exercise}` yourself; `course.{reference}` does it for you, "
            "so it is not allowed here")


#: Answers that hand the job to the package function the exercise asks the student to write: each
#: would pass (or nearly) if it were allowed; the visible test must refuse it with the sentence.
REFERENCE_CALLS = {
    "build_cnn_tests": [("def build_cnn():\n    return course.build_model()", "build_cnn", "build_model")],
    "make_activation_model_tests": [
        ("def make_activation_model(model, layer_name):\n    return course.activation_model(model, layer_name)",
         "make_activation_model", "activation_model"),
    ],
    "get_feature_maps_tests": [
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return course.extract_feature_maps(model, image, layer_name)[layer_name][0]",
         "get_feature_maps", "extract_feature_maps"),
        ("def get_feature_maps(model, image, layer_name):\n"  # an alias bound in an earlier cell
         "    return efm(model, image, layer_name)[layer_name][0]", "get_feature_maps", "extract_feature_maps"),
        ("def get_feature_maps(model, image, layer_name):\n"
         "    return np.asarray(course.activations.activation_model(model, layer_name)(image[None])[layer_name])[0]",
         "get_feature_maps", "activation_model"),
    ],
    "plot_feature_map_grid_tests": [
        ("def plot_feature_map_grid(maps, ncols=8):\n    return course.plot_feature_maps(maps, ncols=ncols)",
         "plot_feature_map_grid", "plot_feature_maps"),
    ],
    "conv_layer_names_tests": [
        ("def conv_layer_names(model):\n    return course.conv_layer_names(model)", "conv_layer_names", "conv_layer_names"),
    ],
    "extract_all_conv_maps_tests": [
        ("def extract_all_conv_maps(model, images):\n"
         "    return course.extract_feature_maps(model, images, conv_layer_names(model))",
         "extract_all_conv_maps", "extract_feature_maps"),
    ],
    "normalize_map_tests": [
        ("def normalize_map(m):\n    return course.normalize_maps(np.asarray(m, np.float32)[..., None])[..., 0]",
         "normalize_map", "normalize_maps"),
    ],
    "normalize_maps_tests": [
        ("def normalize_maps(maps, mode='per_map'):\n    return course.normalize_maps(maps, mode)",
         "normalize_maps", "normalize_maps"),
    ],
    "to_uint8_tests": [("def to_uint8(x):\n    return course.to_uint8(x)", "to_uint8", "to_uint8")],
    "get_filters_tests": [
        ("def get_filters(model, layer_name):\n    return course.filter_weights(model, layer_name)",
         "get_filters", "filter_weights"),
    ],
    "plot_filters_tests": [
        ("def plot_filters(kernels, ncols=8):\n    return course.plot_filters(model, 'conv1', in_channel=0, ncols=ncols)",
         "plot_filters", "plot_filters"),
    ],
    "find_dead_filters_tests": [
        ("def find_dead_filters(maps, threshold=0.0):\n    return course.dead_filters(maps, threshold)",
         "find_dead_filters", "dead_filters"),
    ],
    "strongest_filters_tests": [
        ("def strongest_filters(maps, k=5):\n    return course.top_channels(maps, k)", "strongest_filters", "top_channels"),
    ],
    # Notebook 6's other mistakes live in test_notebook06.py; its first exercise is enough here.
    "saliency_tests": [
        ("def saliency(model, image, class_index=None):\n"
         "    return course.saliency_map(model, image, class_index=class_index)", "saliency", "saliency_map"),
    ],
}
for _grade_id, _answers in REFERENCE_CALLS.items():
    MISTAKES.setdefault(_grade_id, []).extend((answer, refused(exercise, reference))
                                              for answer, exercise, reference in _answers)

#: Helpers the wrong implementations above may use (defined in the notebook's namespace); none of
#: them goes through a package function that an exercise may not call.
MISTAKE_HELPERS = (
    "from course import extract_feature_maps as efm\n"
    "def get(model, images, name):\n"
    "    sub = keras.Model(model.inputs[0], model.get_layer(name).output)\n"
    "    return np.asarray(sub(np.asarray(images, np.float32), training=False))\n"
)

#: build_cnn with Keras 2's style, input_shape= on the first layer: correct, and it must pass the test
#: cell, ``grader check`` and nbgrader's Validate alike (Keras' advice must not reach stderr).
INPUT_SHAPE_CNN = _cnn(with_input=False).replace(
    "L.Conv2D(32, 3, activation='relu'", "L.Conv2D(32, 3, activation='relu', input_shape=(28, 28, 1)", 1)

#: test grade id -> [(a correct but unusual implementation, why it must pass)]: fairness cases.
CORRECT_ANSWERS = {
    "build_cnn_tests": [
        (INPUT_SHAPE_CNN, "input_shape= on the first layer instead of keras.Input builds the same model "
                          "(Keras only advises against it)"),
    ],
    "normalize_map_tests": [
        ("def normalize_map(m):\n    warnings.warn('note', UserWarning)\n    m = np.asarray(m, dtype=np.float32)\n"
         "    low, high = m.min(), m.max()\n    return np.zeros_like(m) if high == low else (m - low) / (high - low)",
         "a harmless UserWarning is not a division by zero"),
        ("def normalize_map(m):\n    warnings.warn('float32 on purpose', RuntimeWarning)\n"
         "    m = np.asarray(m, dtype=np.float32)\n    span = m.max() - m.min()\n"
         "    return (m - m.min()) / span if span else np.zeros_like(m)",
         "a RuntimeWarning that is not numpy's division warning does not count either"),
    ],
}


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


#: Pieces of raw tracebacks and TensorFlow's error dumps that feedback must never contain.
RAW_ERROR_TEXT = ("Traceback (most recent call last)", "Exception encountered when calling", "{{function_node",
                  "Arguments received by", "\x1b[")

NOTEBOOKS_WITH_MISTAKES = [
    name for name in ASSIGNMENTS
    if any(nbgrader(c).get("grade_id") in MISTAKES for c in read(student_path(name)).cells)
]


def _swap_in(name: str, table: dict) -> list[tuple[str, str, BaseException | None]]:
    """Run the student version of ``name`` in this process, the exercises filled with the solutions;
    before each visible test cell named in ``table``, swap in each of its implementations and run
    the cell. Returns (grade id, implementation, the error the cell raised or None) for each."""
    solutions = _solution_code(name)
    cells = [cell for cell in read(student_path(name)).cells if cell.cell_type == "code"]
    last = max(i for i, cell in enumerate(cells) if nbgrader(cell).get("grade_id") in table)
    namespace = {"__name__": "__main__"}
    defined, outcomes = [], []
    for cell in cells[: last + 1]:
        meta = nbgrader(cell)
        if meta.get("solution"):
            defined.append(solutions[meta["grade_id"]])
            _run(defined[-1], namespace)
            continue
        for answer, _ in table.get(meta.get("grade_id"), []):
            _run(MISTAKE_HELPERS + answer, namespace)
            try:
                _run(cell.source, namespace)
            except Exception as error:  # noqa: BLE001 (the caller judges every failure)
                outcomes.append((meta["grade_id"], answer, error))
            else:
                outcomes.append((meta["grade_id"], answer, None))
            for code in defined:  # restore the correct functions
                _run(code, namespace)
        _run(cell.source, namespace)
    return outcomes


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS_WITH_MISTAKES)
def test_visible_tests_catch_the_common_mistakes(name):
    """Before each visible test cell, swap in each typical wrong implementation (MISTAKES, read when
    called): the cell must fail with an AssertionError carrying the feedback."""
    feedback_of = {(grade_id, wrong): feedback for grade_id, pairs in MISTAKES.items() for wrong, feedback in pairs}
    missed = []
    for grade_id, wrong, error in _swap_in(name, MISTAKES):
        feedback, last_line = feedback_of[grade_id, wrong], wrong.splitlines()[-1].strip()
        if error is None:
            missed.append(f"{grade_id}: the visible tests pass this mistake: {wrong!r}")
        elif not isinstance(error, AssertionError):  # any other failure is feedback-less
            missed.append(f"{grade_id}: {last_line!r} raised {type(error).__name__}: {error}, "
                          "not an AssertionError with feedback")
        elif feedback not in str(error):
            missed.append(f"{grade_id}: {last_line!r} got {str(error)!r}, expected feedback containing {feedback!r}")
        elif any(raw in str(error) for raw in RAW_ERROR_TEXT):  # a sentence, not TensorFlow's dump
            missed.append(f"{grade_id}: {last_line!r} got feedback with raw error text: {str(error)!r}")
    assert not missed, "\n".join(missed)


NOTEBOOKS_WITH_CORRECT_ANSWERS = [
    name for name in ASSIGNMENTS
    if any(nbgrader(c).get("grade_id") in CORRECT_ANSWERS for c in read(student_path(name)).cells)
]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS_WITH_CORRECT_ANSWERS)
def test_visible_tests_pass_correct_but_unusual_answers(name):
    """Fairness: a correct answer written another way (e.g. one that also emits a harmless warning)
    passes its visible test."""
    failed = [f"{grade_id}: {answer!r} failed with {type(error).__name__}: {error} ({why})"
              for grade_id, answer, error in _swap_in(name, CORRECT_ANSWERS)
              if error is not None
              for why in [dict(CORRECT_ANSWERS[grade_id])[answer]]]
    assert not failed, "\n".join(failed)


# --- each exercise names the package functions that solve it; its visible test refuses them ------


def _exercises(name: str):
    """(exercise name, its solution cell, its test cell) for every exercise of ``name``."""
    cells = read(solution_path(name)).cells
    tests = {nbgrader(c)["grade_id"]: c for c in cells if c.cell_type == "code" and nbgrader(c).get("grade")}
    for cell in cells:
        if cell.cell_type == "code" and nbgrader(cell).get("solution"):
            exercise = nbgrader(cell)["grade_id"]
            assert f"{exercise}_tests" in tests, f"{name}: exercise '{exercise}' has no test cell '{exercise}_tests'"
            yield exercise, cell, tests[f"{exercise}_tests"]


def _parse(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))


GUARDS = ("reference_off_limits", "student_code")  # student_code = reference_off_limits + errors as sentences


def _off_limits_blocks(tree: ast.AST) -> list[tuple[ast.With, object, object]]:
    """Every ``with course.checks.reference_off_limits(exercise, [...]):`` (or ``student_code``) with its
    literal arguments (no list: no reference)."""
    blocks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and ast.unparse(call.func).endswith(GUARDS):
                    assert ast.unparse(call.func) in {f"course.checks.{g}" for g in GUARDS}, (
                        f"call it as course.checks.reference_off_limits or course.checks.student_code, "
                        f"got {ast.unparse(call.func)}"
                    )
                    arguments = [ast.literal_eval(arg) for arg in call.args]
                    blocks.append((node, *arguments, *([[]] if len(arguments) == 1 else [])))
    return blocks


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_each_exercise_names_its_reference_and_its_visible_test_refuses_it(name):
    for exercise, solution, test in _exercises(name):
        where = f"solutions/{name} exercise '{exercise}'"
        reference = solution.metadata.get("grader", {}).get("reference")
        assert isinstance(reference, list) and all(isinstance(r, str) for r in reference), (
            f"{where}: expected cell metadata \"grader\": {{\"reference\": [names of course functions]}}, got {reference!r}"
        )
        for ref in reference:
            function = getattr(course_package, ref, None)
            assert isinstance(function, types.FunctionType) and function.__module__.startswith("course."), (
                f"{where}: grader.reference names '{ref}', which is not a function of the course package"
            )
        solution_tree = _parse(solution.source)
        used = {node.attr for node in ast.walk(solution_tree)
                if isinstance(node, ast.Attribute) and ast.unparse(node.value).split(".")[0] == "course"}
        used |= {alias.name for node in ast.walk(solution_tree) if isinstance(node, ast.ImportFrom)
                 and (node.module or "").split(".")[0] == "course" for alias in node.names}
        assert not used & set(reference), f"{where}: the solution itself calls its reference {sorted(used & set(reference))}"

        visible = _parse(test.source.split("### BEGIN HIDDEN TESTS")[0])
        blocks = _off_limits_blocks(visible)
        for _, named, listed in blocks:
            assert (named, listed) == (exercise, reference), (
                f"{where}: its visible test refuses {listed!r} for '{named}', the metadata says {reference!r} for "
                f"'{exercise}': keep the two lists equal (the metadata is the source of truth)"
            )
        inside = {id(node) for block, _, _ in blocks for statement in block.body for node in ast.walk(statement)}
        calls = [node for node in ast.walk(visible)
                 if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == exercise]
        assert calls, f"{where}: its visible test never calls {exercise}"
        if not reference:
            assert not [b for b in blocks if b[2]], f"{where}: no reference in the metadata, yet its visible test refuses some"
            continue
        outside = [node.lineno for node in calls if id(node) not in inside]
        assert not outside, (
            f"{where}: visible test lines {outside} call {exercise} outside "
            "`with course.checks.student_code(...)` (or reference_off_limits)"
        )
        for block, _, _ in blocks:
            for statement in block.body:
                for node in ast.walk(statement):
                    if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("course."):
                        raise AssertionError(
                            f"{where}: `{ast.unparse(node)}` runs inside the reference_off_limits block: compute "
                            "expected values before the block, only the student's calls go inside"
                        )


def test_every_notebook_proves_its_refusal():
    """At least one exercise per notebook has a REFERENCE_CALLS case (its visible test refuses it)."""
    for name in ASSIGNMENTS:
        guarded = [f"{exercise}_tests" for exercise, solution, _ in _exercises(name) if solution.metadata["grader"]["reference"]]
        if guarded:
            assert set(guarded) & set(REFERENCE_CALLS), f"{name}: no REFERENCE_CALLS case for any of {guarded}"
        for grade_id in set(guarded) & set(REFERENCE_CALLS):
            exercise = grade_id.removesuffix("_tests")
            reference = dict(_exercises_meta(name))[exercise]
            for _, named, ref in REFERENCE_CALLS[grade_id]:
                assert named == exercise and ref in reference, (
                    f"{name}: REFERENCE_CALLS['{grade_id}'] expects `course.{ref}` to be refused for '{named}', "
                    f"but the metadata of '{exercise}' lists {reference}"
                )


def _exercises_meta(name: str):
    return [(exercise, solution.metadata["grader"]["reference"]) for exercise, solution, _ in _exercises(name)]
