"""The three ways a learner checks work agree: the test cell, ``grader check`` and nbgrader's Validate.

Notebook 1's ``build_cnn`` written Keras-2 style, ``input_shape=`` on the first layer instead of
``keras.Input``, is correct: Keras 3 builds the same model and only advises against it on stderr.
That advice once made nbgrader's Validate fail (Validate counts any stderr in a test cell as a
failure) while the test cell and ``grader check`` passed. Real runs: nbgrader's Validator in a
real kernel, the grader's sandbox and checker, the test cell in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_notebooks

from grader import release as rel
from grader.selfcheck import check_notebook

NAME = "01_train_cnn"


def _submission(folder: Path) -> Path:
    """The student version of notebook 1 with the solution's prepare_images and the input_shape= build_cnn."""
    solutions = test_notebooks._solution_code(NAME)
    answers = {"prepare_images": solutions["prepare_images"], "build_cnn": test_notebooks.INPUT_SHAPE_CNN}
    notebook = json.loads((rel.NOTEBOOKS / NAME / f"{NAME}.ipynb").read_text())
    for cell in notebook["cells"]:
        gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if gid in answers and cell["cell_type"] == "code" and not cell["metadata"]["nbgrader"].get("grade"):
            cell["source"] = answers[gid]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.ipynb"
    path.write_text(json.dumps(notebook))
    return path


@pytest.mark.slow
def test_input_shape_build_cnn_passes_the_test_cell_check_and_validate(tmp_path, monkeypatch):
    from nbgrader.validator import Validator

    outcomes = test_notebooks._swap_in(NAME, {"build_cnn_tests": [(test_notebooks.INPUT_SHAPE_CNN, "")]})
    assert [error for _, _, error in outcomes] == [None], f"the test cell failed: {outcomes}"

    path = _submission(tmp_path / "work")
    report = check_notebook(path, echo=False)
    assert report.passed, report.text()

    monkeypatch.chdir(tmp_path)
    results = Validator(config=rel.load_config()).validate(str(path))
    assert not results.get("failed") and not results.get("changed"), (
        f"nbgrader's Validate fails a correct input_shape= build_cnn: {json.dumps(results)[:2000]}"
    )
    # The control: the same notebook with a wrong build_cnn fails Validate, so Validate really checked.
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "build_cnn":
            cell["source"] = test_notebooks.INPUT_SHAPE_CNN.replace("Dense(64", "Dense(65")
    path.write_text(json.dumps(notebook))
    failed = Validator(config=rel.load_config()).validate(str(path)).get("failed", [])
    assert any("build_cnn:" in item["source"] for item in failed), failed
