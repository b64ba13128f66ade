"""The self-check cell and ``grader check``: what a self-study learner sees.

Every notebook ends with the self-check cell; the grader neither runs it from a submission nor
replays it from the source; in a real Jupyter kernel started for the notebook it shows a progress
line and then the report as the cell's output (once, wherever ``check()`` stands in the cell);
in a kernel no learner looks at (nbgrader, nbconvert) it only says it was skipped. The report
lists unanswered written answers, shows a model answer only for answered ones, says which
assignment a renamed copy is, and uses the notebook's own sentences for typical mistakes.
Everything runs for real: Jupyter kernels through nbclient, the grader's sandbox and checker.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from grader import release as rel
from grader.notebook import SELF_CHECK_TAG, read_source, read_submission
from grader.selfcheck import check_notebook, find_source

ASSIGNMENTS = rel.assignments(rel.SOLUTIONS)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _fill(student: Path, answers: dict[str, str], target: Path) -> Path:
    """A copy of a student notebook with the cells of the given grade ids replaced by ``answers``."""
    notebook = json.loads(student.read_text())
    for cell in notebook["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers:
            cell["source"] = answers[gid]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(notebook))
    return target


def _solution(name: str, grade_id: str) -> str:
    """The instructor's code of one exercise, without nbgrader's markers."""
    cell = next(c for c in _cells(rel.SOLUTIONS / name / f"{name}.ipynb")
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id)
    return "\n".join(line for line in _source(cell).splitlines() if "### " not in line)


@pytest.mark.parametrize("folder", [rel.SOLUTIONS, rel.NOTEBOOKS], ids=["solutions", "notebooks"])
@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_every_notebook_ends_with_the_self_check_cell(folder, name):
    last = _cells(folder / name / f"{name}.ipynb")[-1]
    assert last["cell_type"] == "code" and SELF_CHECK_TAG in last["metadata"].get("tags", []), (
        f"{folder.name}/{name}: the last cell must be the code cell tagged {SELF_CHECK_TAG!r}"
    )
    assert _source(last).rstrip().endswith("from grader import check\n\ncheck()"), _source(last)
    assert "nbgrader" not in last["metadata"], f"{name}: the self-check cell must not be an nbgrader cell"


@pytest.mark.parametrize("name", ASSIGNMENTS)
def test_the_grader_neither_runs_nor_replays_the_self_check_cell(name):
    source = rel.SOLUTIONS / name / f"{name}.ipynb"
    assignment = read_source(source)
    assert not any("check()" in c.source for c in assignment.cells), f"{name}: the source replays the self-check cell"
    plan = read_submission(rel.NOTEBOOKS / name / f"{name}.ipynb", assignment)
    assert plan.code and not any("from grader import check" in c["source"] for c in plan.code), (
        f"{name}: the self-check cell is in the sandbox's plan"
    )
    assert not any(plan.answers.values()), f"{name}: nbgrader's 'YOUR ANSWER HERE' counted as an answer"


def _execute(notebook: Path, session: bool) -> nbformat.NotebookNode:
    """Run a notebook in a real Jupyter kernel, with or without JupyterLab's session variable."""
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JPY_")}
    if session:
        env["JPY_SESSION_NAME"] = str(notebook)
    NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(notebook.parent)}}).execute(env=env)
    return nb


def _texts(cell) -> list[str]:
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(output.text)
        elif "data" in output:
            texts.append(output.data.get("text/plain", ""))
    return texts


@pytest.mark.slow
def test_in_a_kernel_the_report_is_the_cells_output_once_and_skipped_without_a_session(tmp_path):
    name = "02_first_layer_maps"
    notebook = tmp_path / name / f"{name}.ipynb"
    notebook.parent.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    check_cell = nbformat.v4.new_code_cell("from grader import check\n\ncheck()")
    check_cell.metadata["tags"] = [SELF_CHECK_TAG]
    nb.cells = [check_cell, nbformat.v4.new_code_cell("report = check()\nprint('after:', report and report.passed)")]
    nbformat.write(nb, notebook)

    ran = _execute(notebook, session=True)
    for index, cell in enumerate(ran.cells):
        shown = "\n".join(_texts(cell))
        assert shown.count(f"{name}: 0 / 10 points") == 1, f"cell {index}: expected the report once, got:\n{shown}"
        assert "FAILED  get_feature_maps_tests" in shown and "checked in" in shown, shown
        assert "checking " not in shown, f"cell {index}: the progress line was not replaced by the report:\n{shown}"
        assert not any(o.output_type == "execute_result" for o in cell.outputs), "the report was shown twice"
    assert "after: False" in "".join(_texts(ran.cells[1]))
    assert any(o.get("transient", {}).get("display_id") or o.output_type == "display_data"
               for o in ran.cells[0].outputs), "the report is not a display (no progress line could be replaced)"

    skipped = _execute(notebook, session=False)  # as nbgrader's Validate and nbconvert run it
    shown = "".join(_texts(skipped.cells[0]))
    assert shown.startswith("self-check skipped") and "points" not in shown, shown


@pytest.mark.slow
def test_renamed_copy_with_mistakes_names_its_assignment_and_the_notebooks_sentences(tmp_path):
    """A renamed copy of notebook 2 whose make_activation_model returns a KerasTensor and whose
    get_feature_maps forgets the batch axis: ``grader check`` says which assignment it is and
    gives the same sentences as the notebook's test cells (course.checks)."""
    import keras
    import numpy as np

    import course
    from course.checks import describe_value, explain_error

    name = "02_first_layer_maps"
    wrong = {
        "make_activation_model": ("def make_activation_model(model, layer_name):\n"
                                  "    return model.get_layer(layer_name).output"),
        "get_feature_maps": ("def get_feature_maps(model, image, layer_name):\n"
                             "    sub = keras.Model(model.inputs[0], model.get_layer(layer_name).output)\n"
                             "    return np.asarray(sub(image))[0]"),
        "plot_feature_map_grid": _solution(name, "plot_feature_map_grid"),
    }
    copy = _fill(rel.NOTEBOOKS / name / f"{name}.ipynb", wrong, tmp_path / "work" / f"{name}-Copy1.ipynb")
    source, hidden, note = find_source(copy)
    assert source == rel.SOLUTIONS / name / f"{name}.ipynb" and hidden
    assert f"its graded cells are those of {name}" in note and f"Rename it {name}.ipynb" in note, note

    report = check_notebook(copy, echo=False)
    text = report.text()
    assert "solutions/ was not found" not in text and f"note: {copy.name} is not named like an assignment" in text
    model = course.load_or_train_model()
    expected_keras = describe_value("make_activation_model", model.get_layer("conv1").output, "a keras.Model")
    try:
        keras.Model(model.inputs[0], model.get_layer("conv1").output)(course.load_mnist()[1][0][0])
    except Exception as error:  # noqa: BLE001 (the very error the student's code raises)
        expected_batch = explain_error("get_feature_maps", error)
    tests = report.result["tests"]
    assert tests["make_activation_model_tests"]["message"] == expected_keras, tests["make_activation_model_tests"]
    assert tests["get_feature_maps_tests"]["message"] == expected_batch, tests["get_feature_maps_tests"]
    assert "image[np.newaxis]" in expected_batch and "Traceback" not in text
    assert tests["plot_feature_map_grid_tests"]["passed"]
    assert np.isclose(report.result["score"], 3)


@pytest.mark.slow
def test_written_answers_listed_and_model_answers_only_once_answered(tmp_path):
    name = "04_normalize_interpret"
    mine = "Map A looks as bright as B per map; with one scale A is black."
    notebook = _fill(rel.NOTEBOOKS / name / f"{name}.ipynb", {"written_raw_vs_normalized": mine},
                     tmp_path / name / f"{name}.ipynb")
    report = check_notebook(notebook, echo=False)
    text = report.text()
    assert report.unanswered == ["written_preprocessing", "written_maps_and_decision"], report.unanswered
    assert "All exercises pass." not in text
    assert "Written answers still empty: written_preprocessing, written_maps_and_decision." in text, text
    assert text.count("model answer (compare it with yours)") == 1, text
    answered = text.split("written_raw_vs_normalized", 1)[1].split("EMPTY", 1)[0]
    assert "model answer" in answered and "per map" in answered.lower(), answered

    solved = tmp_path / "solved" / f"{name}.ipynb"  # the solution itself: every answer written
    solved.parent.mkdir()
    shutil.copy(rel.SOLUTIONS / name / f"{name}.ipynb", solved)
    done = check_notebook(solved, echo=False)
    assert done.passed and not done.unanswered
    assert done.text().endswith("All autograded exercises pass; your 3 written answers are graded by hand.")
