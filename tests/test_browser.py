"""The student's view: notebooks 2 and 4 in JupyterLab in a real (headless) browser, end to end.

A learner opens the generated student notebook in JupyterLab, types the exercises into the
cells, runs everything, looks at the feature-map figure and checks the work the two ways the
course offers: nbgrader's Validate button and the course's own self-check (the notebook's last
cell, ``check()``). Everything goes through the page, as a person would do it; only the
solution code is read from ``solutions/`` (to type it in), and the saved file is read back to
prove that the typing reached the notebook. Notebook 4's own self-check cell is run by itself:
its progress line, then the report with the written answers still empty, as that cell's output.

JupyterLab serves a temporary copy of ``notebooks/``; chromium, JupyterLab and the page steps
are ``tests/browser_kit.py``'s. Screenshots for a person to look at go to ``build/screenshots/``.

Run on its own: ``.venv/bin/python -m pytest -m browser``.
"""

from __future__ import annotations

import shutil

import pytest
from browser_kit import (
    PANEL,
    ROOT,
    Clock,
    cell_text,
    cells_with_errors,
    copy_notebook,
    exercises,
    graded_ids,
    nbgrader_meta,
    open_notebook,
    outputs,
    read_cells,
    run_all,
    run_cell,
    running_lab,
    save,
    saved_cells,
    shot,
    type_into,
    validate,
    wait_for_kernel,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ASSIGNMENT = next(iter(sorted(p.name for p in (ROOT / "notebooks").glob("02_*") if p.is_dir())), "02_missing")
STUDENT = ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
SOURCE = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
CHECK_CELL = "from grader import check\n\ncheck()"  # the self-check cell the README describes


@pytest.fixture(scope="module")
def lab(tmp_path_factory, trained_model):
    """JupyterLab serving a temporary copy of ``notebooks/``."""
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    with running_lab(root) as server:
        yield server


def check_cell(page, cells):
    """The cell that runs the course's self-check: the notebook's last code cell when it calls
    ``check()``; otherwise the one a learner adds at the end as the README says (typed in)."""
    index = cells.evaluate_all("cells => cells.map(c => c.classList.contains('jp-CodeCell')).lastIndexOf(true)")
    if index >= 0 and "check(" in cell_text(cells.nth(index)):
        return cells.nth(index)
    count = cells.count()
    cells.nth(count - 1).locator(".jp-InputPrompt, .jp-Cell-inputArea").first.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # command mode: insert a cell below
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length === n", arg=[f"{PANEL} .jp-Notebook .jp-Cell", count + 1]
    )
    added = cells.nth(count)
    type_into(page, added, CHECK_CELL)
    return added


# ----------------------------------------------------------------------------- the tests
def test_solved_notebook_runs_draws_and_passes_its_checks(page, lab):
    clock = Clock()
    relative = copy_notebook(lab, "solved", STUDENT)
    cells = open_notebook(page, lab, relative, len(read_cells(STUDENT)))
    shot(page, "02_opened")
    clock.lap("open")

    for index, code in exercises(STUDENT, SOURCE):
        assert "NotImplementedError" in cell_text(cells.nth(index)), f"cell {index} is not an empty exercise"
        type_into(page, cells.nth(index), code)
    shot(page, "02_solved_typed", cells.nth(exercises(STUDENT, SOURCE)[-1][0]))
    check = check_cell(page, cells)
    save(page)
    saved = saved_cells(lab.root / relative)
    for index, code in exercises(STUDENT, SOURCE):
        assert "".join(saved[index]["source"]) == code, f"cell {index} was not saved as typed"
    clock.lap("type and save")

    run_all(page)
    clock.lap("Run All")
    errors = cells_with_errors(cells)
    assert not errors, f"cells showing an error after Run All: {errors}"
    prompts = page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_text_contents()
    assert all(p.strip()[1:-2].isdigit() for p in prompts), f"code cells that did not run: {prompts}"

    # The feature-map figure: the student's own grid, drawn as an image of a sensible size.
    drawing = "plot_feature_map_grid(get_feature_maps("
    figure = next((cells.nth(i) for i in range(cells.count()) if drawing in cell_text(cells.nth(i))), None)
    assert figure is not None, "no cell draws plot_feature_map_grid(get_feature_maps(...))"
    image = figure.locator(".jp-OutputArea-output img")
    assert image.count() == 1, f"expected one image output under the feature-map cell, got {image.count()}"
    width, height = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert 400 <= width <= 3000 and 250 <= height <= 3000, f"feature-map figure of {width}x{height} pixels"
    shot(page, "02_solved_feature_maps", figure)

    # The course's self-check (run by Run All, on the saved file): every exercise passes, once.
    report = outputs(check)
    shot(page, "02_solved_check", check)
    for grade_id in graded_ids(SOURCE):
        assert f"passed  {grade_id}" in report, f"{grade_id} not reported as passed:\n{report}"
    assert report.count("All exercises pass.") == 1, f"expected the report once:\n{report}"

    # nbgrader's Validate button (it saves, runs the notebook in a new kernel, shows a dialog).
    result = validate(page, "02_solved_validate")
    clock.lap("Validate")
    assert "Success! Your notebook passes all the tests." in result, result
    print(clock)


def test_blank_notebook_shows_the_failing_checks_and_their_feedback(page, lab):
    clock = Clock()
    relative = copy_notebook(lab, "blank", STUDENT)
    cells = open_notebook(page, lab, relative, len(read_cells(STUDENT)))
    check = check_cell(page, cells)
    save(page)
    clock.lap("open")

    run_all(page)  # stops at the first test cell that fails, as it does for a student
    clock.lap("Run All")
    errors = cells_with_errors(cells)
    first_test = next(i for i, c in enumerate(read_cells(STUDENT)) if nbgrader_meta(c).get("grade"))
    assert list(errors) == [first_test], f"expected the run to stop at test cell {first_test}, got {errors}"
    assert "NotImplementedError" in errors[first_test]
    shot(page, "02_blank_run_all", cells.nth(first_test).locator(".jp-OutputArea"))

    run_cell(page, check)  # the learner runs the check cell itself
    clock.lap("check()")
    report = outputs(check)
    shot(page, "02_blank_check", check)
    for grade_id in graded_ids(SOURCE):
        assert f"FAILED  {grade_id}" in report, f"{grade_id} not reported as failed:\n{report}"
    assert report.count("is not done yet (it raises NotImplementedError)") == len(graded_ids(SOURCE)), report
    assert "All exercises pass." not in report

    result = validate(page, "02_blank_validate")
    clock.lap("Validate")
    # Validate stops at the first failing cell and shows it with its error.
    assert "The following cell failed" in result and "NotImplementedError" in result, result
    assert "Success" not in result, result
    print(clock)


def test_self_check_cell_of_notebook_4_shows_progress_then_the_report_with_the_written_answers(page, lab):
    """A second notebook: its own self-check cell (the last cell, as released), run by the learner after
    typing the exercises: a progress line appears in that cell's output, then the report replaces it,
    listing the written answers that are still empty."""
    name = next(p.name for p in (ROOT / "notebooks").glob("04_*") if p.is_dir())
    student, source = ROOT / "notebooks" / name / f"{name}.ipynb", ROOT / "solutions" / name / f"{name}.ipynb"
    relative = copy_notebook(lab, "selfcheck04", student)
    cells = open_notebook(page, lab, relative, len(read_cells(student)))
    last = cells.nth(cells.count() - 1)
    assert "from grader import check" in cell_text(last), "notebook 4 does not end with the self-check cell"
    for index, code in exercises(student, source):
        type_into(page, cells.nth(index), code)
    save(page)

    last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Shift+Enter")
    output = last.locator(".jp-OutputArea-output")
    output.filter(has_text=f"checking {student.name} as saved at").wait_for(timeout=60_000)
    shot(page, "04_self_check_progress", last)
    output.filter(has_text="points").wait_for(timeout=240_000)
    wait_for_kernel(page)
    report = outputs(last)
    shot(page, "04_self_check_report", last)
    assert "checking " not in report, f"the progress line was not replaced by the report:\n{report}"
    assert report.count(f"{name}: 10 / 10 points") == 1, f"expected the report once, as this cell's output:\n{report}"
    for grade_id in graded_ids(source):
        assert f"passed  {grade_id}" in report, f"{grade_id} not reported as passed:\n{report}"
    written = graded_ids(source, "markdown")
    for grade_id in written:
        assert f"EMPTY   {grade_id}" in report, f"{grade_id} not reported as unanswered:\n{report}"
    assert f"{len(written)} of {len(written)} written answers are still empty" in report, report
    assert "All exercises pass." not in report and not cells_with_errors(cells), report
