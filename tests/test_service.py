"""The self-check service (grader/service.py): a warm grader kept between a learner's checks.

Real runs: the service is started by the first real check, grades in bubblewrap sandboxes forked
from its zygote, and is asked for its status over its socket. Checked: later checks reuse its
zygote and checker and still see every change of the notebook; its grades equal those of a
check in fresh processes; only its user may use it (folder and socket modes, and SO_PEERCRED
for a connection that gets past them); a runtime folder others may enter is not used (the check
runs in fresh processes and says why); a change of the package or of the data starts a new
service; an idle service exits by itself and removes its socket.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from grader import release as rel
from grader import service
from grader.selfcheck import check_notebook

NAME = "02_first_layer_maps"
SOLUTION = rel.SOLUTIONS / NAME / f"{NAME}.ipynb"
NOBODY = 65534
BROKEN = ("def get_feature_maps(model, image, layer_name):\n"
          "    return make_activation_model(model, layer_name).predict(image[None], verbose=0)\n")


def _notebook(folder: Path, replace: dict[str, str] | None = None) -> Path:
    """A copy of notebook 02's solution, with the cells that start with a key replaced."""
    notebook = json.loads(SOLUTION.read_text())
    for cell in notebook["cells"]:
        text = "".join(cell["source"])
        for start, new in (replace or {}).items():
            if cell["cell_type"] == "code" and text.startswith(start):
                cell["source"] = new
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}.ipynb"
    path.write_text(json.dumps(notebook))
    return path


def _verdicts(report) -> dict:
    return {gid: (t["passed"], t["points"]) for gid, t in report.result["tests"].items()}


@pytest.fixture
def fresh_folder(tmp_path, monkeypatch):
    """A runtime folder of this test only (its own service), stopped afterwards."""
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    monkeypatch.setenv("GRADER_RUNTIME_DIR", str(folder))
    yield folder
    service.stop_all()


@pytest.mark.slow
def test_later_checks_reuse_the_warm_grader_and_see_every_change(fresh_folder, tmp_path):
    notebook = _notebook(tmp_path / "me")
    first = check_notebook(notebook, echo=False)
    assert first.passed and first.hidden, first.text()
    running = service.status()
    assert running["checks"] == 1 and running["starts"] == {"zygote": 1, "checker": 1}, running

    _notebook(tmp_path / "me", {"def get_feature_maps": BROKEN})
    broken = check_notebook(notebook, echo=False)
    assert not broken.passed, broken.text()
    assert broken.result["tests"]["get_feature_maps_tests"]["passed"] is False, broken.text()
    assert broken.result["tests"]["make_activation_model_tests"]["passed"] is True, broken.text()

    _notebook(tmp_path / "me")
    again = check_notebook(notebook, echo=False)
    assert _verdicts(again) == _verdicts(first), again.text()
    after = service.status()
    assert after["pid"] == running["pid"] and after["checks"] == 3, after
    assert after["starts"] == {"zygote": 1, "checker": 1}, f"a check started the grader again: {after}"

    fresh = check_notebook(notebook, echo=False, service=False)
    _notebook(tmp_path / "me", {"def get_feature_maps": BROKEN})
    fresh_broken = check_notebook(notebook, echo=False, service=False)
    assert (_verdicts(fresh), _verdicts(fresh_broken)) == (_verdicts(again), _verdicts(broken)), (
        "the service graded differently from a check in fresh processes")
    assert service.status()["checks"] == 3, "service=False still used the service"


def _nobody_connects(path: Path) -> str:
    """What user nobody gets when connecting to the socket at ``path`` (Debian's python3: the
    course's interpreter may sit in a folder nobody cannot enter)."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python, "this test needs /usr/bin/python3 to connect as user nobody"
    script = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
              "try:\n    s.connect(sys.argv[1])\n"
              "except OSError as e:\n    print('cannot connect:', e.strerror); sys.exit()\n"
              # the service may refuse and close before the request is written: its answer is still there
              "try:\n    s.sendall(b'{\"op\": \"status\"}\\n')\nexcept BrokenPipeError:\n    pass\n"
              "print(s.makefile().readline())")
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                           python, "-I", "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow
def test_only_its_user_may_use_it(tmp_path, monkeypatch):
    if os.getuid() != 0:
        pytest.fail("this test connects as user nobody: run it as root (CI does)")
    # in the system's temporary folder, which everyone may enter (pytest's own folders are 0700)
    fresh_folder = Path(tempfile.mkdtemp(prefix="grader-service-test-"))
    monkeypatch.setenv("GRADER_RUNTIME_DIR", str(fresh_folder))
    try:
        _only_its_user_may_use_it(fresh_folder, tmp_path)
    finally:
        service.stop_all()
        shutil.rmtree(fresh_folder)


def _only_its_user_may_use_it(fresh_folder: Path, tmp_path: Path) -> None:
    check_notebook(_notebook(tmp_path / "me"), echo=False)
    path = service.socket_path()
    assert oct(fresh_folder.stat().st_mode & 0o777) == "0o700" and oct(path.stat().st_mode & 0o777) == "0o600"
    assert _nobody_connects(path).startswith("cannot connect: Permission denied")

    # past both modes (as if the folder had been opened up), the service still refuses by the peer's uid
    fresh_folder.chmod(0o711)
    path.chmod(0o666)
    try:
        said = _nobody_connects(path)
    finally:
        fresh_folder.chmod(0o700)
        path.chmod(0o600)
    assert json.loads(said) == {"error": f"refused: uid {NOBODY} is not this service's user (0)"}, said
    assert service.status()["checks"] == 1


def test_a_runtime_folder_others_may_enter_is_not_used(tmp_path, monkeypatch):
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o755)
    monkeypatch.setenv("GRADER_RUNTIME_DIR", str(folder))
    with pytest.raises(service.ServiceUnavailable, match=r"mode 0755, expected your own uid \d+ and 0700"):
        service.socket_path()


@pytest.mark.slow
def test_a_check_says_why_it_runs_in_fresh_processes_when_the_folder_is_open(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    monkeypatch.setenv("GRADER_RUNTIME_DIR", str(folder))
    report = check_notebook(_notebook(tmp_path / "me"), echo=True)
    assert report.passed, report.text()
    said = capsys.readouterr().err
    assert "the check service is not available (its folder" in said and "checking in fresh processes" in said, said
    assert list(folder.iterdir()) == [], "a service was started in a folder others may enter"


def test_a_change_of_the_package_or_the_data_means_another_service(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.setenv("COURSE_MODEL_DIR", str(models))
    before = service.service_key()
    assert service.service_key() == before
    (models / "seed_cnn.keras").write_bytes(b"retrained")
    retrained = service.service_key()
    assert retrained != before, "a new model file must not be served by a service that loaded the old one"
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert service.service_key() not in (before, retrained)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (an exited one not yet reaped by init counts as gone)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.slow
def test_an_idle_service_exits_and_removes_its_socket(tmp_path):
    folder = tmp_path / "idle"
    folder.mkdir(mode=0o700)
    env = dict(os.environ, GRADER_RUNTIME_DIR=str(folder), GRADER_SERVICE_IDLE="3")
    done = subprocess.run([sys.executable, "-m", "grader", "check", str(_notebook(tmp_path / "me"))],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (socket_file,) = folder.glob("check-*.sock")
    pid = service.status(socket_file)["pid"]
    deadline = time.monotonic() + 60
    while socket_file.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not socket_file.exists(), "the service did not exit after 3 idle seconds"
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _running(pid), f"the service (pid {pid}) removed its socket but runs on"
    assert "stopped after 1 check(s)" in socket_file.with_suffix(".log").read_text()
