"""Grade submissions: sandbox run, checker replay, limits and the parallel pool.

One submission is graded in two processes. The *sandbox* (:mod:`grader.sandbox`, confined,
fresh for every submission) runs the instructor's cells with the student's definitions and
records what the student's functions return. The *checker* (:mod:`grader.checker`, trusted,
reused for the submissions of one assignment) replays the instructor's tests against those
records and decides. This module starts both, watches the sandbox (time per cell and per
submission, resident memory, disk), turns every way a sandbox can end into a readable
reason, restarts it past a cell that killed it, and runs N submissions at a time.
"""

from __future__ import annotations

import ast
import concurrent.futures
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from grader.notebook import Assignment, Submission, program, read_submission, to_python

GRADER_VERSION = "1"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Limits:
    """What one submission may use. Times in seconds, sizes in MB."""

    cell_timeout: float = 60.0
    submission_timeout: float = 600.0
    memory_mb: int = 2500
    disk_mb: int = 512
    attempts: int = 5


# ------------------------------------------------------------------------------ environment
def _course_dirs() -> list[str]:
    model = os.environ.get("COURSE_MODEL_DIR") or str(ROOT / "models")
    data = os.environ.get("COURSE_DATA_DIR") or str(ROOT / "datasets")
    return [model, data, str(Path.home() / ".keras" / "datasets")]


@functools.lru_cache(maxsize=1)
def read_paths() -> tuple[str, ...]:
    """What a sandbox may read: Python, installed packages, the course package, models, data."""
    import importlib.util

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    paths |= {p for p in sys.path if p and os.path.isdir(p) and Path(p).resolve() != ROOT}
    for name in ("course", "grader"):
        spec = importlib.util.find_spec(name)
        paths |= set(spec.submodule_search_locations or [])
    try:
        import matplotlib

        paths |= {matplotlib.get_configdir(), matplotlib.get_cachedir()}
    except Exception:
        pass
    paths |= set(_course_dirs())
    paths |= {"/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/etc/localtime", "/etc/fonts",
              "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/matplotlibrc",
              "/proc/self", "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/devices/system/cpu",
              "/sys/fs/cgroup", "/dev/urandom", "/dev/random", "/dev/zero"}
    resolved = set()
    for p in paths:
        resolved |= {p, os.path.realpath(p)} if not p.startswith("/proc/self") else {p}
    return tuple(sorted(p for p in resolved if os.path.exists(p)))


def sandbox_env(threads: int, home: str) -> dict:
    """A small environment for sandboxes: no tokens or other secrets of the instructor's shell."""
    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "VIRTUAL_ENV",
            "COURSE_DATA_DIR", "COURSE_MODEL_DIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    threads = str(max(1, threads))
    env.update(HOME=home, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1",
               TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    try:
        import matplotlib

        env["MPLCONFIGDIR"] = matplotlib.get_configdir()
    except Exception:
        pass
    return env


# ------------------------------------------------------------------------------ launchers
class _Handle:
    """A running sandbox: ``wait(timeout)`` gives its exit code (negative: signal) or None."""

    def __init__(self, pid: int, wait):
        self.pid, self._wait = pid, wait

    def wait(self, timeout: float):
        return self._wait(timeout)

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class DirectLauncher:
    """One fresh ``python -m grader.sandbox WORKDIR`` per sandbox (imports TensorFlow each time)."""

    def __init__(self, env: dict):
        self.env = env

    def spawn(self, workdir: Path) -> _Handle:
        proc = subprocess.Popen([sys.executable, "-m", "grader.sandbox", str(workdir)], env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, cwd=workdir)

        def wait(timeout):
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None

        return _Handle(proc.pid, wait)

    def close(self) -> None:
        shutil.rmtree(self.env["HOME"], ignore_errors=True)


class ZygoteLauncher:
    """Forks sandboxes from one process that has imported TensorFlow and the course already.

    A fork is as isolated as a fresh process (its own copy of memory; nothing it does reaches
    the zygote), and saves the ~3 s import per submission. The zygote never runs TensorFlow
    operations (they would not survive a fork), only imports.
    """

    def __init__(self, env: dict):
        self.home = env["HOME"]
        self.proc = subprocess.Popen([sys.executable, "-m", "grader.sandbox", "--zygote"], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, cwd=env["HOME"])
        ready = self.proc.stdout.readline()
        if b"ready" not in ready:
            raise RuntimeError("the sandbox zygote did not start (python -m grader.sandbox --zygote)")
        self.lock, self.next_id = threading.Lock(), 0
        self.pids, self.status, self.cond = {}, {}, threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            reply = json.loads(line)
            with self.cond:
                if "pid" in reply:
                    self.pids[reply["id"]] = reply["pid"]
                else:
                    self.status[reply["id"]] = reply["status"]
                self.cond.notify_all()
        with self.cond:  # the zygote is gone: every sandbox counts as ended
            self.dead = True
            self.cond.notify_all()

    dead = False

    def spawn(self, workdir: Path) -> _Handle:
        with self.lock:
            self.next_id += 1
            rid = self.next_id
            self.proc.stdin.write((json.dumps({"id": rid, "workdir": str(workdir)}) + "\n").encode())
            self.proc.stdin.flush()
        with self.cond:
            self.cond.wait_for(lambda: rid in self.pids or self.dead, timeout=60)
            if rid not in self.pids:
                raise RuntimeError("the sandbox zygote did not fork a sandbox")
            pid = self.pids.pop(rid)

        def wait(timeout):
            with self.cond:
                self.cond.wait_for(lambda: rid in self.status or self.dead, timeout=timeout)
                if rid in self.status:
                    return self.status.pop(rid)
                return -9 if self.dead else None

        return _Handle(pid, wait)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
        shutil.rmtree(self.home, ignore_errors=True)


def make_launcher(jobs: int, zygote: bool = True):
    home = tempfile.mkdtemp(prefix="grader-home-")
    env = sandbox_env(max(1, (os.cpu_count() or 1) // max(1, jobs)), home)
    if zygote:
        try:
            return ZygoteLauncher(env)
        except Exception:
            pass
    return DirectLauncher(env)


# ------------------------------------------------------------------------------ the checker
class CheckerProcess:
    """A trusted ``python -m grader.checker`` serving one assignment."""

    def __init__(self, source: Path, workdir: Path, log: Path | None = None):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
        self.source, self.workdir = source, workdir
        self.log = open(log or os.devnull, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "grader.checker"], env=env, cwd=workdir,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self._send({"source": str(source)})
        self.loading = True  # its set-up runs while the first sandbox does

    def _send(self, message: dict) -> None:
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def request(self, message: dict, timeout: float) -> dict:
        if self.loading:
            self.loading = False
            self._reply(600)
        self._send(message)
        return self._reply(timeout)

    def _reply(self, timeout: float) -> dict:
        result = {}

        def read():
            result["line"] = self.proc.stdout.readline()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not result.get("line"):
            self.close()
            raise RuntimeError(f"the checker gave no answer within {timeout:.0f} s")
        reply = json.loads(result["line"])
        if not reply.get("ok"):
            raise RuntimeError(f"the checker failed: {reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(5)
        except Exception:
            pass
        self.log.close()


# ------------------------------------------------------------------------------ planning
def _names(code: str) -> tuple[set, set]:
    """(names read, names written) anywhere in a cell: a safe over-approximation."""
    try:
        tree = ast.parse(to_python(code))
    except SyntaxError:
        return set(), set()
    reads, writes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (reads if isinstance(node.ctx, ast.Load) else writes).add(node.id)
            if isinstance(node.ctx, ast.Del):
                reads.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            writes.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            writes |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            reads.add(node.target.id)
    return reads, writes


def global_reads(code: str) -> set:
    """Names a piece of code reads from its module's globals (not locals or parameters)."""
    import symtable

    try:
        top = symtable.symtable(to_python(code), "<student>", "exec")
    except SyntaxError:
        return set()
    names, tables = set(), [top]
    while tables:
        table = tables.pop()
        tables += table.get_children()
        for sym in table.get_symbols():
            if sym.is_referenced() and (table is top or sym.is_global()):
                names.add(sym.get_name())
    return names


def plan(assignment: Assignment, submission: Submission) -> tuple[list[dict], list[str]]:
    """The steps to run, without the demonstration cells after the first exercise that no test
    (and none of the student's functions) needs.

    Returns:
        ``(steps, skipped)``: the program and the keys of the context cells left out.
    """
    steps = program(assignment, submission)
    first = next(i for i, s in enumerate(steps) if s["kind"] == "student")
    needed = set()
    for _, code in submission.definitions:
        needed |= global_reads(code)
    keep, skipped = [], []
    for step in reversed(steps[first + 1:]):
        reads, writes = _names(step["source"])
        if step["kind"] == "test" or writes & needed:
            keep.append(step)
            needed |= reads
        else:
            skipped.append(step["key"])
    return steps[: first + 1] + keep[::-1], skipped


# ------------------------------------------------------------------------------ one submission
def _death(code, killed: str, where: str) -> str:
    if killed:
        return killed
    if code is None:
        return f"the process stopped responding {where}"
    if code == -signal.SIGXFSZ:
        return f"it wrote more than {64} MB to one file or to the output {where}"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the process was killed by {name} (a crash) {where}"
    return f"the code ended the grading process (exit code {code}, e.g. os._exit or sys.exit in a thread) {where}"


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def _rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def run_sandbox(steps: list, graded: list, launcher, limits: Limits, workdir: Path) -> dict:
    """Run the program in sandboxes until every step ran or was given up with a reason.

    Returns:
        ``{"records": {key: [events]}, "aborts": {key: reason}, "problems": [...], "notes": [...]}``
    """
    records, aborts, problems, done_tests = {}, {}, [], set()
    skip, started = set(), time.monotonic()
    tests = [s["key"] for s in steps if s["kind"] == "test"]
    log = workdir / "records.jsonl"
    student = next(s for s in steps if s["kind"] == "student")
    for attempt in range(limits.attempts):
        program = {"steps": steps, "graded_names": graded, "skip": sorted(skip | done_tests),
                   "read": list(read_paths()), "attempt": attempt}
        (workdir / "program.json").write_text(json.dumps(program), encoding="utf-8")
        offset = log.stat().st_size if log.exists() else 0
        handle = launcher.spawn(workdir)
        current, since, calling, finished, killed = None, time.monotonic(), None, False, ""
        last_disk, code = 0.0, None
        while True:
            code = handle.wait(0.1)
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                complete = chunk[: chunk.rfind(b"\n") + 1]
                offset += len(complete)
                for line in complete.splitlines():
                    try:
                        event = json.loads(line)
                        kind, key = event.get("event"), str(event.get("key", ""))
                    except (ValueError, AttributeError):
                        continue
                    if kind == "start":
                        current, since, calling = key, time.monotonic(), None
                        records[key] = []
                    elif kind == "end":
                        current = None
                        if key in tests:
                            done_tests.add(key)
                    elif kind == "done":
                        finished = True
                    elif kind == "begin":
                        calling = event.get("name")
                    elif kind == "call":
                        calling = None
                    if kind in ("call", "cellerror", "deferror"):
                        records.setdefault(key, []).append(event)
            if code is not None:
                break
            now = time.monotonic()
            who = f"{calling}()" if calling else "the code"
            if current and now - since > limits.cell_timeout:
                killed = f"{who} did not finish within {limits.cell_timeout:.0f} s (an endless loop?)"
            elif now - started > limits.submission_timeout:
                killed = f"the submission used up its {limits.submission_timeout:.0f} s time limit"
            elif _rss(handle.pid) > limits.memory_mb * 2**20:
                killed = f"{who} used more than {limits.memory_mb} MB of memory"
            elif now - last_disk > 1.0:
                last_disk = now
                if _du(workdir) > limits.disk_mb * 2**20:
                    killed = f"{who} wrote more than {limits.disk_mb} MB of files"
            if killed:
                handle.kill()
                handle.wait(10)
                code = -9
                break
        if finished:
            break
        where = f"while running {'the check ' + current if current in tests else current}" if current else ""
        reason = _death(code, killed, where)
        if current is None or "time limit" in killed:
            for key in tests:
                if key not in done_tests:
                    aborts.setdefault(key, f"not run: {reason}")
            problems.append(reason)
            break
        skip.add(current)
        aborts[current] = reason
        if current.startswith("student:"):
            j = int(current.split(":")[1])
            problems.append(f"defining {student['definitions'][j][0]} stopped the process ({reason}); it was left out")
        else:
            problems.append(f"{current}: {reason}")
    else:
        for key in tests:
            if key not in done_tests:
                aborts.setdefault(key, f"not run: the submission stopped the sandbox {limits.attempts} times")
    for key, events in records.items():
        for e in events:
            if e.get("event") == "deferror":
                err = e.get("error", {})
                problems.append(f"defining {e.get('label')} raised {err.get('type')}: {str(err.get('message'))[:200]}")
    notes = (workdir / "output.txt").read_text(errors="replace")[:2000] if (workdir / "output.txt").exists() else ""
    return {"records": records, "aborts": aborts, "problems": problems, "output": notes}


def submission_hash(notebook: Path, assignment: Assignment) -> str:
    """Changes when the submission, the source notebook or the grader changes."""
    h = hashlib.sha256(f"{GRADER_VERSION}\n{assignment.digest}\n".encode())
    try:
        h.update(notebook.read_bytes())
    except OSError:
        h.update(b"<missing>")
    return h.hexdigest()


def grade(assignment: Assignment, notebook: Path, launcher, checker: CheckerProcess,
          limits: Limits, workroot: Path, files: list[Path] = ()) -> dict:
    """Grade one submission; never raises for anything the submission does.

    Returns:
        The result: score, per-test verdicts and messages, manual cells, problems.
    """
    t0 = time.monotonic()
    submission = read_submission(notebook, assignment)
    tests = {c.grade_id: {"passed": False, "points": 0.0, "max_points": c.points, "message": ""}
             for c in assignment.tests}
    problems = list(submission.problems)
    timing = {}
    if submission.readable:
        steps, skipped = plan(assignment, submission)
        workdir = Path(tempfile.mkdtemp(prefix="sandbox-", dir=workroot))
        try:
            for f in files:
                if f.is_file() and f.suffix != ".ipynb" and f.stat().st_size < 50 * 2**20:
                    shutil.copy2(f, workdir / f.name)
            t1 = time.monotonic()
            run = run_sandbox(steps, assignment.graded_names, launcher, limits, workdir)
            timing["sandbox"] = round(time.monotonic() - t1, 2)
            problems += run["problems"]
            reply = checker.request({"records": run["records"], "aborts": run["aborts"],
                                     "blob_dir": str(workdir / "blobs"), "skip": skipped},
                                    timeout=max(120, 10 * len(tests) * limits.cell_timeout / 10))
            tests.update(reply["tests"])
            timing["check"] = round(time.monotonic() - t1 - timing["sandbox"], 2)
        except Exception as exc:  # the grader's own failure: a reason, never a crash
            problems.append(f"grader error: {exc}")
            for t in tests.values():
                t["message"] = t["message"] or "not graded: grader error (see problems)"
        finally:
            if not os.environ.get("GRADER_KEEP_WORKDIRS"):
                shutil.rmtree(workdir, ignore_errors=True)
    else:
        for t in tests.values():
            t["message"] = problems[0]
    manual = {c.grade_id: {"max_points": c.points, "answered": bool(submission.answers.get(c.grade_id, "").strip())}
              for c in assignment.manual}
    score = sum(t["points"] for t in tests.values())
    return {
        "grader_version": GRADER_VERSION,
        "assignment": assignment.name,
        "notebook": assignment.notebook,
        "hash": submission_hash(notebook, assignment),
        "score": score,
        "max_score": sum(c.points for c in assignment.tests),
        "manual_max_score": sum(c.points for c in assignment.manual),
        "tests": tests,
        "manual": manual,
        "problems": problems,
        "seconds": round(time.monotonic() - t0, 2),
        "timing": timing,
    }


# ------------------------------------------------------------------------------ many submissions
@dataclass
class Task:
    """One submission to grade: its notebook, the files beside it and where its result goes."""

    assignment: Assignment
    notebook: Path
    student: str
    out: Path
    files: tuple = ()


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a result file is complete or absent


class Progress:
    """A one-line progress bar with an ETA on stderr."""

    def __init__(self, total: int, stream=sys.stderr, enabled: bool = True):
        self.total, self.done, self.start, self.stream, self.enabled = total, 0, time.monotonic(), stream, enabled

    def step(self, label: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        width = 30
        bar = "#" * int(width * self.done / max(1, self.total))
        self.stream.write(f"\r[{bar:<{width}}] {self.done}/{self.total}  {elapsed:5.0f} s  ETA {eta:5.0f} s  {label[:30]:<30}")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()


def grade_many(tasks: list[Task], jobs: int = 1, limits: Limits | None = None, zygote: bool = True,
               progress: bool = True, log_dir: Path | None = None) -> list[dict]:
    """Grade ``tasks`` with ``jobs`` submissions at a time; write each result to ``task.out``.

    One failing submission never stops the others: every task ends with a result file.
    """
    limits = limits or Limits()
    if not tasks:
        return []
    jobs = max(1, min(jobs, len(tasks)))
    workroot = Path(tempfile.mkdtemp(prefix="grader-"))
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    launcher = make_launcher(jobs, zygote)
    bar = Progress(len(tasks), enabled=progress)
    local = threading.local()
    checkers, lock = [], threading.Lock()

    def checker_for(assignment: Assignment) -> CheckerProcess:
        current = getattr(local, "checker", None)
        if current is None or current.source != assignment.path or not current.alive():
            if current is not None:
                current.close()
            cwd = Path(tempfile.mkdtemp(prefix="checker-", dir=workroot))
            log = (log_dir / f"checker-{threading.get_ident()}.log") if log_dir else None
            local.checker = CheckerProcess(assignment.path, cwd, log)
            with lock:
                checkers.append(local.checker)
        return local.checker

    def one(task: Task) -> dict:
        try:
            result = grade(task.assignment, task.notebook, launcher, checker_for(task.assignment),
                           limits, workroot, list(task.files))
        except Exception as exc:  # e.g. the checker could not start: still a result
            result = {"assignment": task.assignment.name, "notebook": task.assignment.notebook,
                      "hash": "", "score": 0.0, "max_score": task.assignment.max_points,
                      "tests": {}, "manual": {}, "problems": [f"grader error: {exc}"], "seconds": 0}
        result["student"] = task.student
        _write_json(task.out, result)
        with lock:
            bar.step(f"{task.student}/{task.assignment.name}")
        return result

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, tasks))
    finally:
        for c in checkers:
            c.close()
        launcher.close()
        if not os.environ.get("GRADER_KEEP_WORKDIRS"):
            shutil.rmtree(workroot, ignore_errors=True)
    return results


def limits_dict(limits: Limits) -> dict:
    return asdict(limits)
