"""course.explore in a real browser: notebook 2's "explore first" cell in JupyterLab 4, driven by mouse.

The learner runs the cells up to the explorer, draws a digit on its canvas with the mouse, and
sees the prediction and the conv1 montage change; a click on a map enlarges it beside its kernel;
the normalization switch redraws the montage. This also proves that the widget renders in the
JupyterLab that ``make setup`` installs (anywidget's prebuilt lab extension, with ipywidgets').
Screenshots go to ``build/screenshots/`` (``explore_drawn.png`` is the README's picture, before
it is shrunk into ``docs/figures/``).

Run on its own: ``.venv/bin/python -m pytest tests/test_browser_explore.py``.
"""

from __future__ import annotations

import shutil

import pytest
from browser_kit import (
    ROOT,
    cell_text,
    open_notebook,
    read_cells,
    run_cell,
    running_lab,
    shot,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ASSIGNMENT = next(iter(sorted(p.name for p in (ROOT / "notebooks").glob("02_*") if p.is_dir())), "02_missing")
STUDENT = ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, trained_model):
    """JupyterLab serving a temporary copy of notebook 2 (the model is cached by ``trained_model``)."""
    root = tmp_path_factory.mktemp("explore")
    shutil.copytree(STUDENT.parent, root / "notebooks" / ASSIGNMENT)
    with running_lab(root) as server:
        yield server


def state(widget) -> dict:
    """What the learner sees: the top bar's label, the bars' text, the montages, the update count."""
    return widget.evaluate(
        """root => ({
            top: root.querySelector('.explore-bar')?.dataset.label,
            bars: root.querySelector('.explore-bars').textContent,
            conv1: root.querySelector('.explore-montage[data-layer="conv1"]')?.src,
            montages: root.querySelectorAll('.explore-montage').length,
            updates: Number(root.dataset.updates),
        })"""
    )


def wait_for_update(page, widget, after: int) -> None:
    page.wait_for_function("([root, n]) => Number(root.dataset.updates) > n", arg=[widget.element_handle(), after])


def test_draw_a_digit_and_watch_the_maps(page, lab):
    relative = f"notebooks/{ASSIGNMENT}/{ASSIGNMENT}.ipynb"
    cells = open_notebook(page, lab, relative, len(read_cells(STUDENT)))
    kinds = cells.evaluate_all("cells => cells.map(c => c.classList.contains('jp-CodeCell'))")
    explore_at = next(i for i in range(len(kinds)) if kinds[i] and "course.explore(" in cell_text(cells.nth(i)))
    for index in range(explore_at + 1):  # set-up, seeds, model and data, then the explorer
        if kinds[index]:
            run_cell(page, cells.nth(index))
    widget = cells.nth(explore_at).locator(".explore-root")
    widget.wait_for()
    two_montages = "root => root.querySelectorAll('.explore-montage').length === 2"
    page.wait_for_function(two_montages, arg=widget.element_handle())
    before = state(widget)
    assert before["top"] == "7", before  # it opens on test image 0, a 7

    # Draw a 1: one stroke from top to bottom, in small mouse moves, as a hand would.
    canvas = widget.locator(".explore-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for step in range(1, 21):
        page.mouse.move(x + step * 0.4, box["y"] + box["height"] * (0.15 + 0.035 * step))
        page.wait_for_timeout(30)
    page.mouse.up()
    wait_for_update(page, widget, before["updates"] + 1)  # at least one update while drawing, one at the end
    page.wait_for_timeout(500)  # the last update is painted
    drawn = state(widget)
    assert drawn["top"] == "1" and drawn["bars"] != before["bars"], (before, drawn)
    assert drawn["conv1"] != before["conv1"], "the conv1 montage did not change with the drawing"

    # Click the 6th map of conv1's montage (row 0, column 5): it is shown large, beside its 3x3 kernel.
    montage = widget.locator('.explore-montage[data-layer="conv1"]')
    mbox = montage.bounding_box()
    tile = mbox["width"] / (8 * 27 - 1) * 27  # 8 tiles of 26 pixels and a 1-pixel gap per row
    montage.click(position={"x": tile * 5.5, "y": tile * 0.5})
    widget.locator(".explore-detail-kernel").wait_for()
    assert "conv1, map 5" in widget.locator(".explore-detail").text_content()
    width = widget.locator(".explore-detail-map").evaluate("i => i.naturalWidth")
    assert width >= 26 * 4, f"the enlarged map is {width} pixels wide"
    page.wait_for_timeout(300)
    shot(page, "explore_drawn", cells.nth(explore_at).locator(".jp-OutputArea-output"))  # the README's picture

    # One scale for the whole layer: the same maps, drawn differently.
    shown = state(widget)
    widget.locator(".explore-norm").select_option("per_layer")
    wait_for_update(page, widget, shown["updates"])
    page.wait_for_timeout(300)
    assert state(widget)["conv1"] != shown["conv1"], "switching the normalization left the montage unchanged"
    shot(page, "explore_per_layer", cells.nth(explore_at).locator(".jp-OutputArea-output"))
