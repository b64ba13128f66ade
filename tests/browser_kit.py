"""What the browser tests share: Debian's chromium through Playwright, a JupyterLab started and
always stopped, and the steps a person takes in a notebook page.

Playwright never downloads a browser here; ``ensure_chromium`` installs Debian's ``chromium``
with apt-get when it is missing (CI runs as root). JupyterLab runs from this environment on
127.0.0.1 with a random port and token, and is stopped by its process group, then any process
it started that is left. Screenshots for a person to look at go to ``build/screenshots/``.
"""

from __future__ import annotations

import contextlib
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
TRACEBACK = "Traceback (most recent call last)"
PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"  # the notebook in front


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
                f"chromium for the browser tests:\n{(result.stdout + result.stderr)[-3000:]}"
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


@contextlib.contextmanager
def running_lab(root: Path, extra_args: tuple[str, ...] = (), extra_env: dict | None = None, cwd: Path | None = None,
                launcher: tuple[str, ...] = (sys.executable, "-m", "jupyterlab")):
    """JupyterLab from this environment, on 127.0.0.1 with a random port and token, serving ``root``.

    The course package and the grader are imported from the environment; the cached model and
    MNIST are found through COURSE_MODEL_DIR and COURSE_DATA_DIR. Its settings, workspaces and
    runtime files stay under ``root/.lab``. ``extra_args`` go on JupyterLab's command line,
    ``extra_env`` into its environment; it starts in ``cwd`` (default ``root``), where
    ``nbgrader_config.py`` is looked for. ``launcher`` is the command that starts JupyterLab and
    takes its options (a command that replaces itself with JupyterLab keeps its process group).
    It is always stopped on the way out.
    """
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
    env.update(extra_env or {})
    command = [
        *launcher, "--no-browser", "--allow-root",
        "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabServerApp.user_settings_dir={root / '.lab' / 'settings'}",
        f"--LabServerApp.workspaces_dir={root / '.lab' / 'workspaces'}",
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        *extra_args,
    ]
    log = root / "jupyterlab.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=cwd or root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
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
@contextlib.contextmanager
def launched_chromium():
    """Debian's chromium (installed when missing), headless, driven by Playwright."""
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def fresh_page(browser, lab: Lab, name: str):
    """A new page; on the way out it is saved as ``<name>_last.png`` and the lab's kernels are shut down."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"{name}_last.png")
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
            return read_cells(path)
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
def read_cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def nbgrader_meta(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_code(cell: dict) -> str:
    """The instructor's code of an exercise cell, without nbgrader's solution markers."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(line for line in lines if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))


def exercises(student_path: Path, source_path: Path) -> list[tuple[int, str]]:
    """(cell index, solution code) of each autograded exercise cell of a student notebook and its source."""
    student, source = read_cells(student_path), read_cells(source_path)
    assert len(student) == len(source), f"{student_path.name}: {len(student)} cells, its source {len(source)}"
    found = []
    for index, (mine, theirs) in enumerate(zip(student, source)):
        meta = nbgrader_meta(theirs)
        if meta.get("solution") and not meta.get("grade") and theirs["cell_type"] == "code":
            assert nbgrader_meta(mine).get("grade_id") == meta["grade_id"], f"cell {index} is not {meta['grade_id']}"
            found.append((index, solution_code(theirs)))
    assert found, f"no exercise cell in {source_path}"
    return found


def graded_ids(source_path: Path, cell_type: str = "code") -> list[str]:
    """The grade ids of a source notebook's graded cells of one type (code: tests; markdown: written answers)."""
    cells = read_cells(source_path)
    graded = [c for c in cells if nbgrader_meta(c).get("grade") and c["cell_type"] == cell_type]
    return [nbgrader_meta(c)["grade_id"] for c in graded]


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


def copy_notebook(lab: Lab, folder: str, student: Path) -> str:
    """A private copy of a student notebook for one test: its path relative to the server's root."""
    target = lab.root / folder / student.parent.name
    target.mkdir(parents=True)
    shutil.copy(student, target / student.name)
    return f"{folder}/{student.parent.name}/{student.name}"
