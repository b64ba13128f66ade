"""The student's view: notebooks 2 and 4 in JupyterLab in a real (headless) browser, end to end.

A learner opens the generated student notebook in JupyterLab, types the exercises into the
cells, runs everything, looks at the feature-map figure and checks the work the two ways the
course offers: nbgrader's Validate button and the course's own self-check (the notebook's last
cell, ``check()``). Everything goes through the page, as a person would do it; only the
solution code is read from ``solutions/`` (to type it in), and the saved file is read back to
prove that the typing reached the notebook. Notebook 4's own self-check cell is run by itself:
its progress line, then the report with the written answers still empty, as that cell's output.

Runs Debian's ``chromium`` (installed with apt-get when missing) through Playwright for Python;
Playwright never downloads a browser here. JupyterLab runs from this environment on 127.0.0.1
with a random port and token, in a temporary copy of ``notebooks/``, and is always shut down
(its process group, then any process it started that is left). Screenshots for a person to look
at go to ``build/screenshots/``.

Run on its own: ``.venv/bin/python -m pytest -m browser``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "build" / "screenshots"
ASSIGNMENT = next(iter(sorted(p.name for p in (ROOT / "notebooks").glob("02_*") if p.is_dir())), "02_missing")
STUDENT = ROOT / "notebooks" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
SOURCE = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
TRACEBACK = "Traceback (most recent call last)"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in front
CHECK_CELL = "from grader import check\n\ncheck()"  # the self-check cell the README describes


# ----------------------------------------------------------------------------- chromium
def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is missing (CI runs as root).

    Fails the test (never skips it) when it cannot be installed, saying why.
    """
    if CHROMIUM.is_file():
        return CHROMIUM
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.fail(
            f"{CHROMIUM} is missing and cannot be installed here (apt-get: {shutil.which('apt-get')}, "
            f"uid {os.geteuid()}): install Debian's chromium (as root: apt-get update && "
            "apt-get install -y chromium), then rerun"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if result.returncode != 0:
            pytest.fail(
                f"`{' '.join(command)}` failed with exit code {result.returncode} while installing "
                f"chromium for the browser test:\n{(result.stdout + result.stderr)[-3000:]}"
            )
    if not CHROMIUM.is_file():
        pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist")
    return CHROMIUM


# ----------------------------------------------------------------------------- JupyterLab
@dataclass
class Lab:
    """A running JupyterLab: where it serves, and the folder it serves."""

    base: str
    token: str
    root: Path
    log: Path

    def url(self, path: str) -> str:
        return f"{self.base}/{path}?token={self.token}"

    def api(self, path: str, method: str = "GET"):
        request = urllib.request.Request(
            f"{self.base}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    """Stop the server we started: its process group, then whatever it started that is left."""
    import psutil

    try:
        family = psutil.Process(process.pid).children(recursive=True)  # kernels have their own group
    except psutil.NoSuchProcess:
        family = []
    try:
        os.killpg(process.pid, signal.SIGTERM)  # the server shuts its kernels down on SIGTERM
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, trained_model):
    """JupyterLab from this environment, on 127.0.0.1 with a random port and token.

    It serves a temporary copy of ``notebooks/`` (the course package and the grader are imported
    from the environment) and finds the cached model and MNIST through COURSE_MODEL_DIR and
    COURSE_DATA_DIR. Its settings, workspaces and runtime files stay in the temporary folder.
    """
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    settings = root / ".lab" / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    # No "Would you like to receive Jupyter news?" toast over the notebook (and no network).
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), secrets.token_hex(24)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "JPY_")) and k != "MPLBACKEND"}
    env.update(
        COURSE_MODEL_DIR=str(ROOT / "models"),
        COURSE_DATA_DIR=str(ROOT / "datasets"),
        JUPYTER_CONFIG_DIR=str(root / ".lab" / "config"),
        JUPYTER_DATA_DIR=str(root / ".lab" / "data"),
        JUPYTER_RUNTIME_DIR=str(root / ".lab" / "runtime"),
        IPYTHONDIR=str(root / ".lab" / "ipython"),
    )
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabServerApp.user_settings_dir={root / '.lab' / 'settings'}",
        f"--LabServerApp.workspaces_dir={root / '.lab' / 'workspaces'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log = root / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Lab(f"http://127.0.0.1:{port}", token, root, log)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {process.returncode} at start-up:\n{server.log_tail()}")
            try:
                server.api("status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer on port {port} within 120 s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        _stop(process)


# ----------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, lab, request):
    """A fresh page; on the way out it is saved as a screenshot and its kernels are shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{request.node.name}_last.png")
        context.close()
        for session in lab.api("sessions"):
            lab.api(f"sessions/{session['id']}", method="DELETE")


# ----------------------------------------------------------------------------- in the page
def shot(page, name: str, element=None) -> Path:
    """Save a screenshot (of the page, or of one element) under build/screenshots/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    if element is not None:
        element.scroll_into_view_if_needed()
    page.mouse.move(0, 0)  # no hover controls over the outputs
    page.wait_for_timeout(300)  # cells scrolled into view are painted on the next frames
    (element or page).screenshot(path=path)
    return path


def open_notebook(page, lab: Lab, relative: str, count: int):
    """Open a notebook in JupyterLab and wait for all its cells and an idle kernel.

    Each notebook gets its own workspace, so JupyterLab does not reopen an earlier test's tabs.
    """
    workspace = relative.split("/")[0]
    page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{relative}"))
    page.wait_for_function(
        "([panel, n]) => document.querySelectorAll(panel + ' .jp-Notebook .jp-Cell').length === n", arg=[PANEL, count]
    )
    wait_for_kernel(page)
    return page.locator(f"{PANEL} .jp-Notebook .jp-Cell")


def wait_for_kernel(page, timeout: float = 180_000) -> None:
    """Wait until the kernel is idle and no cell is queued or running (no ``[*]`` prompt)."""
    page.wait_for_function(
        """panel => {
            const status = document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator');
            const prompts = [...document.querySelectorAll(panel + ' .jp-InputPrompt')];
            return status && status.dataset.status === 'idle'
                && prompts.every(p => !p.textContent.includes('*'));
        }""",
        arg=PANEL, timeout=timeout,
    )


def type_into(page, cell, code: str) -> None:
    """Replace a cell's text the way a person pastes it: click, select all, insert."""
    editor = cell.locator(".cm-content")
    editor.scroll_into_view_if_needed()
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(code)
    page.keyboard.press("Escape")  # back to command mode


def save(page) -> None:
    """File > Save (Ctrl+S), and wait until the tab no longer shows unsaved changes."""
    page.keyboard.press("Control+S")
    page.wait_for_function(
        "() => !document.querySelector('.lm-TabBar-tab.jp-mod-current.jp-mod-dirty')", timeout=30_000
    )


def saved_cells(path: Path, timeout: float = 30.0) -> list[dict]:
    """The cells of the notebook file on disk, once JupyterLab has finished writing it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _read(path)
        except (json.JSONDecodeError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel").get_by_text(top, exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def run_all(page, timeout: float = 240_000) -> None:
    """Run > Run All Cells, and wait until the kernel is done (after the first error, if any)."""
    menu(page, "Run", "Run All Cells")
    page.wait_for_function(
        "panel => [...document.querySelectorAll(panel + ' .jp-InputPrompt')].some(p => p.textContent.includes('*'))"
        " || document.querySelector(panel + ' .jp-Notebook-ExecutionIndicator').dataset.status !== 'idle'",
        arg=PANEL, timeout=30_000,
    )
    wait_for_kernel(page, timeout)


def run_cell(page, cell, timeout: float = 240_000) -> None:
    """Select one cell and run it with Shift+Enter, as a person runs the cell in front of them.

    Shift+Enter moves on to the next cell (making a new one after the last), so ``cell`` must
    be a locator that keeps pointing at the same cell (``nth``, not ``last``).
    """
    cell.locator(".jp-InputPrompt").click()
    prompt = cell.locator(".jp-InputPrompt").element_handle()
    before = prompt.text_content()
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "([p, old]) => p.textContent !== old && !p.textContent.includes('*')",
        arg=[prompt, before], timeout=timeout,
    )
    wait_for_kernel(page, timeout)


def cell_text(cell) -> str:
    return cell.locator(".jp-InputArea-editor").text_content()


def outputs(cell) -> str:
    return "\n".join(cell.locator(".jp-OutputArea-output").all_text_contents())


def cells_with_errors(cells) -> dict[int, str]:
    """Index -> the error shown, for every cell whose output is a traceback (the red box)."""
    found = {}
    for index in range(cells.count()):
        texts = cells.nth(index).locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).all_text_contents()
        shown = [t for t in texts if TRACEBACK in t]
        if shown:
            found[index] = shown[0][-600:]
    return found


def validate(page, name: str) -> str:
    """Click nbgrader's Validate button; return the result dialog's text (screenshot saved)."""
    page.locator(f"{PANEL} .validate-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=240_000)
    page.wait_for_timeout(300)  # the dialog's fade-in
    text = dialog.inner_text()
    shot(page, name)
    dialog.get_by_role("button", name="Ok").click()
    dialog.wait_for(state="detached")
    return text


# ----------------------------------------------------------------------------- the notebook
def _read(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_code(cell: dict) -> str:
    """The instructor's code of an exercise cell, without nbgrader's solution markers."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(l for l in lines if l.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def exercises(student_path: Path = STUDENT, source_path: Path = SOURCE) -> list[tuple[int, str]]:
    """(cell index, solution code) of each autograded exercise cell of a notebook (default notebook 2)."""
    student, source = _read(student_path), _read(source_path)
    assert len(student) == len(source), f"{STUDENT.name}: {len(student)} cells, its source {len(source)}"
    found = []
    for index, (mine, theirs) in enumerate(zip(student, source)):
        meta = _nbgrader(theirs)
        if meta.get("solution") and not meta.get("grade") and theirs["cell_type"] == "code":
            assert _nbgrader(mine).get("grade_id") == meta["grade_id"], f"cell {index} is not {meta['grade_id']}"
            found.append((index, solution_code(theirs)))
    assert found, f"no exercise cell in {source_path}"
    return found


def graded_ids(source_path: Path = SOURCE, cell_type: str = "code") -> list[str]:
    return [_nbgrader(c)["grade_id"] for c in _read(source_path) if _nbgrader(c).get("grade") and c["cell_type"] == cell_type]


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


class Clock:
    """Seconds spent on each step, printed with ``pytest -s``."""

    def __init__(self):
        self.last, self.laps = time.perf_counter(), []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append(f"{name} {now - self.last:.0f} s")
        self.last = now

    def __str__(self) -> str:
        return ", ".join(self.laps)


def copy_notebook(lab: Lab, folder: str, student: Path = STUDENT) -> str:
    """A private copy of a student notebook (default notebook 2) for one test: its path relative to the server's root."""
    target = lab.root / folder / student.parent.name
    target.mkdir(parents=True)
    shutil.copy(student, target / student.name)
    return f"{folder}/{student.parent.name}/{student.name}"


# ----------------------------------------------------------------------------- the tests
def test_solved_notebook_runs_draws_and_passes_its_checks(page, lab):
    clock = Clock()
    relative = copy_notebook(lab, "solved")
    cells = open_notebook(page, lab, relative, len(_read(STUDENT)))
    shot(page, "02_opened")
    clock.lap("open")

    for index, code in exercises():
        assert "NotImplementedError" in cell_text(cells.nth(index)), f"cell {index} is not an empty exercise"
        type_into(page, cells.nth(index), code)
    shot(page, "02_solved_typed", cells.nth(exercises()[-1][0]))
    check = check_cell(page, cells)
    save(page)
    saved = saved_cells(lab.root / relative)
    for index, code in exercises():
        assert "".join(saved[index]["source"]) == code, f"cell {index} was not saved as typed"
    clock.lap("type and save")

    run_all(page)
    clock.lap("Run All")
    errors = cells_with_errors(cells)
    assert not errors, f"cells showing an error after Run All: {errors}"
    prompts = page.locator(f"{PANEL} .jp-CodeCell .jp-InputPrompt").all_text_contents()
    assert all(p.strip()[1:-2].isdigit() for p in prompts), f"code cells that did not run: {prompts}"

    # The feature-map figure: the student's own grid, drawn as an image of a sensible size.
    figure = next(
        (cells.nth(i) for i in range(cells.count()) if "plot_feature_map_grid(get_feature_maps(" in cell_text(cells.nth(i))),
        None,
    )
    assert figure is not None, "no cell draws plot_feature_map_grid(get_feature_maps(...))"
    image = figure.locator(".jp-OutputArea-output img")
    assert image.count() == 1, f"expected one image output under the feature-map cell, got {image.count()}"
    width, height = image.evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert 400 <= width <= 3000 and 250 <= height <= 3000, f"feature-map figure of {width}x{height} pixels"
    shot(page, "02_solved_feature_maps", figure)

    # The course's self-check (run by Run All, on the saved file): every exercise passes, once.
    report = outputs(check)
    shot(page, "02_solved_check", check)
    for grade_id in graded_ids():
        assert f"passed  {grade_id}" in report, f"{grade_id} not reported as passed:\n{report}"
    assert report.count("All exercises pass.") == 1, f"expected the report once:\n{report}"

    # nbgrader's Validate button (it saves, runs the notebook in a new kernel, shows a dialog).
    result = validate(page, "02_solved_validate")
    clock.lap("Validate")
    assert "Success! Your notebook passes all the tests." in result, result
    print(clock)


def test_blank_notebook_shows_the_failing_checks_and_their_feedback(page, lab):
    clock = Clock()
    relative = copy_notebook(lab, "blank")
    cells = open_notebook(page, lab, relative, len(_read(STUDENT)))
    check = check_cell(page, cells)
    save(page)
    clock.lap("open")

    run_all(page)  # stops at the first test cell that fails, as it does for a student
    clock.lap("Run All")
    errors = cells_with_errors(cells)
    first_test = next(i for i, c in enumerate(_read(STUDENT)) if _nbgrader(c).get("grade"))
    assert list(errors) == [first_test], f"expected the run to stop at test cell {first_test}, got {errors}"
    assert "NotImplementedError" in errors[first_test]
    shot(page, "02_blank_run_all", cells.nth(first_test).locator(".jp-OutputArea"))

    run_cell(page, check)  # the learner runs the check cell itself
    clock.lap("check()")
    report = outputs(check)
    shot(page, "02_blank_check", check)
    for grade_id in graded_ids():
        assert f"FAILED  {grade_id}" in report, f"{grade_id} not reported as failed:\n{report}"
    assert report.count("is not done yet (it raises NotImplementedError)") == len(graded_ids()), report
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
    cells = open_notebook(page, lab, relative, len(_read(student)))
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
