"""Can the grader be trusted? Fairness and attack corpora through the real CLI.

The submissions are generated from the real notebooks by ``tests/submissions/trust.py``:

* **fairness**: correct solutions written in ordinary styles get full marks (notebooks 01-06);
* **attacks**: one class graded in one run (``--jobs 2 --cell-timeout 20 --memory-mb 1500``),
  attackers next to ordinary students: no attacker gets more than its honest score, nobody
  else's score changes, nothing outside the sandbox changes, no secret (canaries planted in a
  copy of the sources, the gradebook, another student's files, the grader's environment) and no
  line of a hidden test reaches a result, the feedback or the export, no connection reaches a
  loopback server of the test, no student HTML runs in the feedback;
* the readers again with the grader's working folder holding ``solutions/``;
* a forced grader failure (a broken copy of the source) is an "error", never a zero.

Written against the grader's contract (grader/README.md, the rewrite with bubblewrap sandboxes):
result files carry ``status`` ("graded" or "error"). The grader runs in a PID namespace of its
own (``unshare --pid``) so that an attack that escapes a broken sandbox (``kill(-1)``,
``prlimit`` on pid 1) cannot reach the rest of this machine.
"""

from __future__ import annotations

import csv
import functools
import glob
import hashlib
import html
import json
import os
import re
import secrets as pysecrets
import select
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from submissions import trust as T

pytestmark = pytest.mark.slow

ROOT = T.ROOT
JOBS = ["--jobs", "2", "--quiet"]
CLASS_LIMITS = ["--cell-timeout", "20", "--memory-mb", "1500"]
OUTPUTS = {"grading", "autograded", "feedback", "grades.csv", ".nbgrader.log"}
# pid 1 of the grader's PID namespace: runs the grader as its child (a pid 1 ignores SIGKILL
# from inside its namespace, which would hide an attack on the grader's process)
INIT = ("import os, signal, subprocess, sys\n"
        "child = subprocess.Popen(sys.argv[1:])\n"
        "signal.signal(signal.SIGTERM, lambda *a: child.kill())\n"
        "code = 1\n"
        "while True:  # reap every orphan; end with the grader\n"
        "    try:\n"
        "        pid, status = os.wait()\n"
        "    except ChildProcessError:\n"
        "        break\n"
        "    if pid == child.pid:\n"
        "        code = os.waitstatus_to_exitcode(status)\n"
        "        break\n"
        "sys.exit(code if code >= 0 else 128 - code)\n")


# ---------------------------------------------------------------------------- running the grader
@functools.lru_cache(maxsize=1)
def _namespace_prefix() -> list[str]:
    for prefix in (["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
                   ["bwrap", "--dev-bind", "/", "/", "--proc", "/proc", "--unshare-pid", "--die-with-parent", "--"]):
        if shutil.which(prefix[0]):
            try:
                if subprocess.run(prefix + ["true"], capture_output=True, timeout=30).returncode == 0:
                    return prefix
            except (OSError, subprocess.TimeoutExpired):
                pass
    pytest.fail("these tests need `unshare --pid` or `bwrap --unshare-pid`: the attacks (kill(-1), prlimit on "
                "pid 1) must stay inside a PID namespace of the test's own if the sandbox fails")


def grader(*args: str, course: Path, source: Path, cwd: Path, env: dict | None = None,
           timeout: float = 1200) -> subprocess.CompletedProcess:
    """``python -m grader --course-dir course --source source ARGS`` for real, in its own PID namespace."""
    cmd = [*_namespace_prefix(), sys.executable, "-c", INIT, sys.executable, "-m", "grader",
           "--course-dir", str(course), "--source", str(source), *args]
    return subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"grader {what} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def results(course: Path) -> dict[tuple[str, str], dict]:
    """(assignment, student) -> the result file's content."""
    out = {}
    for path in (course / "grading" / "results").glob("*/*.json"):
        out[(path.parent.name, path.stem)] = json.loads(path.read_text())
    return out


def export_rows(course: Path, source: Path, cwd: Path, out: Path) -> dict[tuple[str, str], dict]:
    proc = grader("export", "--out", str(out), course=course, source=source, cwd=cwd)
    _ok(proc, "export")
    with open(out, newline="") as f:
        return {(row["assignment"], row["student"]): row for row in csv.DictReader(f)}


def texts_of(result: dict) -> list[str]:
    return [t.get("message", "") for t in result.get("tests", {}).values()] + list(result.get("problems", []))


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _describe(case: T.Case, result: dict | None) -> str:
    if result is None:
        return f"{case.student} ({case.description}): no result file"
    return (f"{case.student} ({case.description}): status {result.get('status')!r}, score {result.get('score')} "
            f"of {result.get('max_score')}; messages {texts_of(result)}")


# ---------------------------------------------------------------------------- what changed, what leaked
def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every path under ``roots`` (the grader's own outputs at the top excluded): type and mode,
    owner, size, mtime, extended attributes, link target, content hash."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            top = Path(dirpath) == Path(root)
            if top:
                dirnames[:] = [d for d in dirnames if d not in OUTPUTS]
                filenames = [f for f in filenames if f not in OUTPUTS and not f.startswith("gradebook.db")]
            for name in [None, *dirnames, *filenames]:
                if name is None and not top:
                    continue
                path = Path(dirpath) if name is None else Path(dirpath) / name
                st = os.lstat(path)
                try:
                    xattrs = tuple(sorted((a, os.getxattr(path, a, follow_symlinks=False))
                                          for a in os.listxattr(path, follow_symlinks=False)))
                except OSError as error:
                    xattrs = (f"unreadable: {error}",)
                record = [st.st_mode, st.st_uid, st.st_gid, xattrs]
                if name is not None:  # the root itself gains the output folders
                    record += [st.st_mtime_ns, st.st_size if not stat.S_ISDIR(st.st_mode) else None]
                if stat.S_ISLNK(st.st_mode):
                    record.append(os.readlink(path))
                elif stat.S_ISREG(st.st_mode):
                    record.append(hashlib.sha256(path.read_bytes()).hexdigest())
                out[f"{root}:{path.relative_to(root)}"] = tuple(record)
    return out


def changes(before: dict, after: dict) -> list[str]:
    out = [f"removed {k}" for k in before.keys() - after.keys()]
    out += [f"added {k}" for k in after.keys() - before.keys()]
    out += [f"changed {k}: {before[k]} -> {after[k]}" for k in before.keys() & after.keys() if before[k] != after[k]]
    return sorted(out)


def published(course: Path, export: Path | None = None) -> dict[str, str]:
    """What the grader hands out: result messages (all strings of the result files), the feedback
    HTML (raw and as text) and the export."""
    out = {}
    for path in (course / "grading" / "results").glob("*/*.json"):
        out[str(path)] = "\n".join(_strings(json.loads(path.read_text())))
    for path in (course / "feedback").glob("*/*/*.html"):
        raw = path.read_text(errors="replace")
        out[f"{path} (html)"] = raw
        out[f"{path} (text)"] = html.unescape(re.sub(r"<[^>]+>", "", raw))
    if export is not None and export.exists():
        out[str(export)] = export.read_text(errors="replace")
    return out


def leaks(texts: dict[str, str], secrets: dict[str, str], hidden: set[str], own: dict[str, str]) -> list[str]:
    """Secrets and hidden-test lines found in ``texts``; ``own`` maps a secret kind to a path
    fragment where it may legitimately appear (a student's own notebook in its own feedback)."""
    found = []
    for where, text in texts.items():
        for kind, secret in secrets.items():
            if secret in text and not (kind in own and own[kind] in where):
                found.append(f"{kind} canary in {where}")
        if where.endswith("(html)"):
            continue  # its text version is searched for lines
        for line in hidden:
            if line in text:
                found.append(f"hidden test line {line!r} in {where}")
    return found


def hidden(source: Path, assignments: set[str]) -> set[str]:
    out = set()
    for name in assignments:
        out |= T.hidden_lines(T.source_path(name, source), T.release_path(name))
    return out


# ---------------------------------------------------------------------------- a loopback server
class Listener:
    """TCP (IPv4 and IPv6) and UDP on one loopback port; records whatever arrives; stops by
    itself after ``lifetime`` seconds at the latest."""

    def __init__(self, lifetime: float = 1800):
        self.seen, self.stopped = [], threading.Event()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]
        self.socks = [self.tcp]
        try:
            self.tcp6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            self.tcp6.bind(("::1", self.port))
            self.tcp6.listen(16)
            self.socks.append(self.tcp6)
        except OSError:
            pass
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.socks.append(self.udp)
        self.deadline = time.monotonic() + lifetime
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            ready, _, _ = select.select(self.socks, [], [], 0.5)
            for sock in ready:
                try:
                    if sock is self.udp:
                        data, addr = sock.recvfrom(4096)
                        self.seen.append(("udp", addr, data[:200]))
                    else:
                        conn, addr = sock.accept()
                        conn.settimeout(1)
                        try:
                            data = conn.recv(4096)
                        except OSError:
                            data = b""
                        conn.close()
                        self.seen.append(("tcp", addr, data[:200]))
                except OSError:
                    pass
        for sock in self.socks:
            sock.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


# ---------------------------------------------------------------------------- the runs
@dataclass
class Run:
    course: Path
    source: Path
    cases: list
    proc: subprocess.CompletedProcess
    results: dict
    texts: dict
    secrets: dict
    hidden: set
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    connections: list = field(default_factory=list)
    shm_left: list = field(default_factory=list)
    seconds: float = 0.0
    env: T.Env | None = None

    def result(self, case: T.Case) -> dict | None:
        return self.results.get((case.assignment, case.student))


@pytest.fixture(scope="session")
def model_cache(trained_model):
    """The model cache must exist first: sandboxes may read models/ but not write it."""
    return trained_model


def _class_run(tmp: Path, make_cases, cwd_of, limits: list[str], layout: str) -> Run:
    token = pysecrets.token_hex(8)
    if layout == "parent":  # cwd = a folder holding solutions/ and the course directory
        # (not named "course": a folder of that name in the working folder would shadow the package)
        source, course = T.prepare_sources(tmp / "solutions", token), tmp / "classroom"
    else:
        source, course = T.prepare_sources(tmp / "src" / "solutions", token), tmp / "classroom"
    T.make_gradebook(course, token)
    listener = Listener()
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as probe:  # the server works
            probe.sendall(b"probe")
        for _ in range(100):
            if listener.seen:
                break
            time.sleep(0.05)
        assert listener.seen and listener.seen[0][2] == b"probe", listener.seen
        listener.seen.clear()
        env = T.Env(course, source, listener.port, token)
        cases = make_cases(env)
        T.write(course, cases)
        before = snapshot(course, source)
        start = time.monotonic()
        proc = grader("autograde", *JOBS, *limits, course=course, source=source, cwd=cwd_of(tmp, course),
                      env={"TRUST_CANARY_ENV": T.secrets(token)["environ"]})
        seconds = time.monotonic() - start
        grader("merge", course=course, source=source, cwd=cwd_of(tmp, course))
        grader("feedback", course=course, source=source, cwd=cwd_of(tmp, course))
        export = tmp / "export.csv"
        grader("export", "--out", str(export), course=course, source=source, cwd=cwd_of(tmp, course))
        after = snapshot(course, source)
    finally:
        listener.stop()
        shm_left = glob.glob(f"/dev/shm/trust-{token}*")
        for path in shm_left:
            os.unlink(path)
    return Run(course, source, cases, proc, results(course), published(course, export), T.secrets(token),
               hidden(source, {c.assignment for c in cases}), before, after, listener.seen, shm_left, seconds, env)


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory, model_cache) -> Run:
    """The fairness corpus (notebooks 01-06), default limits."""
    return _class_run(tmp_path_factory.mktemp("fair"), lambda env: T.fairness_cases(),
                      lambda tmp, course: course, [], "course")


@pytest.fixture(scope="module")
def class_run(tmp_path_factory, model_cache) -> Run:
    """Attackers and ordinary students in one run, the grader's working folder the course's."""
    return _class_run(tmp_path_factory.mktemp("class"), T.attack_class, lambda tmp, course: course,
                      CLASS_LIMITS, "course")


@pytest.fixture(scope="module")
def parent_run(tmp_path_factory, model_cache) -> Run:
    """The readers again, the grader's working folder a parent holding solutions/ and the course."""
    return _class_run(tmp_path_factory.mktemp("parent"), T.parent_class, lambda tmp, course: tmp,
                      CLASS_LIMITS, "parent")


FAIR = T.fairness_cases()
ENV0 = T.Env(Path("/nonexistent/course"), Path("/nonexistent/solutions"), 1, "0" * 16)
CLASS = T.attack_class(ENV0)  # for the parameter lists only (names and kinds do not depend on env)
ATTACKERS = [c.student for c in CLASS if c.kind == "attack"]
ORDINARY = [c.student for c in CLASS if c.kind == "ordinary"]


def _case(run: Run, student: str) -> T.Case:
    return next(c for c in run.cases if c.student == student)


# ---------------------------------------------------------------------------- fairness
@pytest.mark.parametrize("student", [c.student for c in FAIR])
def test_fair_style_gets_full_marks(fair_run, student):
    case = _case(fair_run, student)
    result = fair_run.result(case)
    assert result is not None, _describe(case, result) + f"\n{fair_run.proc.stdout[-2000:]}\n{fair_run.proc.stderr[-2000:]}"
    assert result.get("score") == case.score == T.max_score(case.assignment), _describe(case, result)
    assert all(t["passed"] for t in result["tests"].values()), _describe(case, result)
    assert set(result["tests"]) == set(T.points(case.assignment)), _describe(case, result)
    assert result.get("status") == "graded", _describe(case, result)


def test_fair_run_exits_cleanly_and_hands_out_no_hidden_test(fair_run):
    _ok(fair_run.proc, "autograde (fairness corpus)")
    found = leaks(fair_run.texts, fair_run.secrets, fair_run.hidden, {})
    assert not found, found[:20]
    assert changes(fair_run.before, fair_run.after) == []


# ---------------------------------------------------------------------------- the attack class
def test_class_run_finishes_with_a_result_for_everyone(class_run):
    """Forged .keras files, memory bombs, signals and loops included: the run ends, exit code 0."""
    _ok(class_run.proc, "autograde (attack class)")
    missing = [c.student for c in class_run.cases if class_run.result(c) is None]
    assert not missing, f"no result for {missing}:\n{class_run.proc.stderr[-3000:]}"


@pytest.mark.parametrize("student", ORDINARY)
def test_ordinary_student_keeps_its_score_next_to_attackers(class_run, student):
    case = _case(class_run, student)
    result = class_run.result(case)
    assert result is not None and result.get("score") == case.score, _describe(case, result)
    assert result.get("status") == "graded", _describe(case, result)


@pytest.mark.parametrize("student", ATTACKERS)
def test_attacker_gets_no_more_than_its_honest_score(class_run, student):
    case = _case(class_run, student)
    result = class_run.result(case)
    assert result is not None, _describe(case, result)
    score = result.get("score")
    assert score is not None and score <= case.honest, _describe(case, result)
    if case.score is not None:
        assert score == case.score, _describe(case, result)
    for gid in case.passing:
        assert result["tests"][gid]["passed"], f"{gid} should pass: " + _describe(case, result)
    for gid in case.failing:
        test = result["tests"][gid]
        assert not test["passed"], f"{gid} should fail: " + _describe(case, result)
        assert re.search(case.reason, test["message"], re.I), (
            f"{gid}: expected a reason matching {case.reason!r}, got {test['message']!r}: " + _describe(case, result))
    assert result.get("status") == "graded", _describe(case, result)


def test_class_run_changed_nothing_outside_the_sandbox(class_run):
    assert changes(class_run.before, class_run.after) == []
    assert class_run.shm_left == [], f"files left in the machine's /dev/shm: {class_run.shm_left}"


def test_class_run_hands_out_no_secret_and_no_hidden_test(class_run):
    found = leaks(class_run.texts, class_run.secrets, class_run.hidden, {"victim": "/o_victim/"})
    assert not found, found[:20]


def test_the_readers_find_every_secret_when_nothing_stops_them(class_run):
    """The control: the readers' code, run unconfined (as the instructor, in the course
    directory), finds every canary. So the absence of secrets above is the sandbox's doing."""
    code = T.steal_code(class_run.env) + "\nprint(_report(_steal()))\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=class_run.course, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TRUST_CANARY_ENV": class_run.secrets["environ"]})
    missing = [kind for kind, secret in class_run.secrets.items() if secret not in proc.stdout]
    assert not missing, f"the readers would not find {missing}: {proc.stdout[:2000]} {proc.stderr[-2000:]}"
    assert any(class_run.secrets["hidden"] in line for line in class_run.hidden) and len(class_run.hidden) > 20


def test_no_connection_reaches_a_loopback_server(class_run):
    assert class_run.connections == []


def test_feedback_runs_no_html_from_students(class_run):
    pages = {k: v for k, v in class_run.texts.items() if k.endswith("(html)")}
    for student in ("atk_html", "atk_html04"):
        assert any(f"/{student}/" in k for k in pages), f"no feedback for {student}: {sorted(pages)[:5]}"
    for where, page in pages.items():
        assert "alert(1)</script>" not in page, where
        assert not re.search(r"<script\b[^>]*>\s*alert", page, re.I), where
        assert not re.search(r"<img\b[^>]*\bonerror\s*=", page, re.I), where


# ---------------------------------------------------------------------------- the working folder holds solutions/
def test_readers_learn_nothing_when_the_working_folder_holds_solutions(parent_run):
    _ok(parent_run.proc, "autograde (cwd holds solutions/)")
    for case in parent_run.cases:
        result = parent_run.result(case)
        assert result is not None and result.get("score") is not None, _describe(case, result)
        if case.kind == "ordinary":
            assert result["score"] == case.score, _describe(case, result)
        else:
            assert result["score"] <= case.honest, _describe(case, result)
        assert result.get("status") == "graded", _describe(case, result)
    found = leaks(parent_run.texts, parent_run.secrets, parent_run.hidden, {"victim": "/o_victim/"})
    assert not found, found[:20]
    assert changes(parent_run.before, parent_run.after) == []


# ---------------------------------------------------------------------------- a grader failure
def test_a_broken_source_is_an_error_never_a_zero_and_is_graded_on_the_next_run(tmp_path, model_cache):
    """The instructor's set-up cell raises (a broken copy of the source, while a flag file
    exists). With the canary: nothing is graded, exit code non-zero. Without it
    (``--no-canary``): every submission is an "error", never a zero, export says "not graded",
    exit code non-zero. Repaired (the same source, so the same hashes), a rerun without
    ``--force`` grades them."""
    source = tmp_path / "src" / "solutions"
    shutil.copytree(ROOT / "solutions", source)
    flag = tmp_path / "setup-is-broken"
    flag.touch()
    T.break_source(source, T.N02, flag)
    course = tmp_path / "classroom"
    cases = T.failure_class()
    T.write(course, cases)
    run = lambda *extra: grader("autograde", T.N02, *JOBS, "--cell-timeout", "20", *extra,  # noqa: E731
                                course=course, source=source, cwd=course)

    proc = run()
    assert proc.returncode != 0, f"the grader exited 0 although its canary could not be graded:\n{proc.stdout[-2000:]}"
    graded = {k: r.get("status") for k, r in results(course).items() if r.get("status") != "error"}
    assert not graded, f"graded although the canary failed: {graded}"

    proc = run("--no-canary")
    assert proc.returncode != 0, f"the grader exited 0 although its checker could not run:\n{proc.stdout[-2000:]}"
    got = results(course)
    for case in cases:
        result = got.get((case.assignment, case.student))
        assert result is not None, _describe(case, result) + f"\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        assert result.get("status") == "error" and result.get("score") is None, _describe(case, result)
    rows = export_rows(course, source, course, tmp_path / "grades.csv")
    for case in cases:
        row = rows.get((case.assignment, case.student))
        assert row is not None and any("not graded" in str(v).lower() for v in row.values()), (case.student, row)

    flag.unlink()  # the instructor repairs the set-up
    again = run()
    _ok(again, "autograde after the repair (without --force)")
    got = results(course)
    for case in cases:
        result = got.get((case.assignment, case.student))
        assert result is not None and result.get("status") == "graded", _describe(case, result)
        assert result["score"] == case.score, _describe(case, result)
