"""Grade submissions: the sandbox and the checker of each submission, limits, the parallel pool.

One submission is graded by two processes that never meet. The *sandbox*
(:mod:`grader.sandbox`, fresh for every submission, inside bubblewrap namespaces and a memory
cgroup, :mod:`grader.isolation`) runs the submission's code cells in order, as *Restart and Run
All* does. The *checker* (:mod:`grader.checker`, trusted, reused for the submissions of one
assignment) runs the instructor's tests where the submission has them; each call of a student
function is relayed by this module to the sandbox, with this module's own clock for every
limit. Everything the sandbox says is treated as hostile. A failure of the grader itself (a
checker or a sandbox that cannot start) is never a student's zero: the submission is regraded
once with a new checker and otherwise reported "not graded: grader error".
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from grader.errors import GraderError, GraderFailure
from grader.isolation import MemoryCgroup, bwrap_argv, bwrap_works, remove_tree
from grader.notebook import Assignment, read_submission
from grader.references import scan
from grader.sandbox import PIPES_CLOSED

GRADER_VERSION = "3"
ROOT = Path(__file__).resolve().parent.parent
#: Longest line a sandbox may send (a reply with its value's plain data; arrays travel as files).
MAX_REPLY_BYTES = 32 * 2**20
#: Seconds a sandbox may take to start (import TensorFlow) before the grader counts it as its own failure.
STARTUP_TIMEOUT = 180.0
#: Seconds the trusted checker may take for one request beyond the sandbox's own time.
CHECKER_TIMEOUT = 300.0


@dataclass
class Limits:
    """What one submission may use. Times in seconds, sizes in MB."""

    cell_timeout: float = 60.0
    submission_timeout: float = 600.0
    memory_mb: int = 2500
    disk_mb: int = 512
    attempts: int = 3


# ------------------------------------------------------------------------------ environment
def _course_paths():
    """``course._paths`` (the one place of the course's folders), loaded on its own: importing
    ``course`` would import TensorFlow into the grader."""
    import importlib.util

    location = importlib.util.find_spec("course").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("_course_paths", os.path.join(location, "_paths.py"))
    paths = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paths)
    return paths


def course_dirs() -> dict[str, str]:
    """The folders sandboxes read the course's data and trained models from."""
    paths = _course_paths()
    return {"COURSE_MODEL_DIR": str(paths.model_dir()), "COURSE_DATA_DIR": str(paths.data_dir())}


def interpreter() -> str:
    """This Python as an absolute path without ``..`` (``/work/../v/bin/python`` when called as
    ``../v/bin/python``): inside bubblewrap only the bound folders exist, so a path through
    another folder cannot be executed. Not resolved through links: a venv is known by its path."""
    return os.path.abspath(sys.executable)


@functools.cache
def import_folders() -> list[str]:
    """The folders the sandbox's Python imports from: ``sys.path`` of ``python -I`` (its standard
    library, its site-packages and what their ``.pth`` files add), without a checkout's own root
    (a path-style editable install puts it there: its ``solutions/`` must stay out of reach) and
    without an import hook's made-up entries (setuptools' editable finder adds one)."""
    found = subprocess.run([interpreter(), "-I", "-c", "import json, sys; print(json.dumps(sys.path))"],
                           capture_output=True, text=True, check=True)
    checkout = _course_paths().checkout_root()
    return [p for p in json.loads(found.stdout)
            if os.path.isabs(p) and not (checkout and Path(p).resolve() in (checkout, *checkout.parents))]


def read_paths() -> list[str]:
    """What a sandbox may read: Python, the installed packages (wherever ``.pth`` files put them),
    ``course/`` and ``grader/``, the trained models and the data (keras' cache under
    ``$KERAS_HOME`` too); nothing that depends on the current directory."""
    import importlib.util

    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, *import_folders(), *course_dirs().values(),
             str(_course_paths().keras_datasets_dir())}
    for name in ("course", "grader"):
        spec = importlib.util.find_spec(name)
        paths |= set(spec.submodule_search_locations or [])
    paths |= {"/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc/ld.so.cache", "/etc/localtime",
              "/etc/fonts", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/alternatives",
              "/sys/devices/system/cpu"}
    resolved = set()
    for p in paths:
        resolved |= {os.path.abspath(p), os.path.realpath(p)}
    return sorted(p for p in resolved if os.path.exists(p))


def sandbox_env(threads: int, scratch: Path, private_tmp: bool) -> dict:
    """The sandbox's whole environment: no tokens or other secrets of the instructor's shell."""
    env = {k: os.environ[k] for k in ("LANG", "LC_ALL", "LC_CTYPE", "TZ") if k in os.environ}
    threads = str(max(1, threads))
    env.update(course_dirs())
    env.update(PATH="/usr/bin:/bin", HOME=str(scratch), TMPDIR="/tmp" if private_tmp else str(scratch),
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", MPLCONFIGDIR=str(scratch / ".matplotlib"),
               KERAS_HOME=str(scratch / ".keras"), PYTHONDONTWRITEBYTECODE="1", GRADER_SANDBOX="1",
               TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def _copy_font_cache(scratch: Path) -> None:
    """matplotlib's font list, so that each sandbox does not rebuild it (seconds) in its own home."""
    try:
        import matplotlib

        cache = Path(matplotlib.get_cachedir())
        dest = scratch / ".matplotlib"
        dest.mkdir(exist_ok=True)
        for f in cache.glob("fontlist-*.json"):
            shutil.copyfile(f, dest / f.name)
    except Exception:
        pass


# ------------------------------------------------------------------------------ processes
class _Lines:
    """Reads a process's output lines (at most ``limit`` bytes each) into a queue."""

    def __init__(self, stream, limit: int):
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(stream, limit), daemon=True).start()

    def _read(self, stream, limit: int) -> None:
        try:
            while True:
                line = stream.readline(limit + 1)
                if not line:
                    break
                if len(line) > limit or not line.endswith(b"\n"):
                    self.queue.put({"op": "garbage", "why": f"a reply longer than {limit // 2**20} MB"})
                    while line and not line.endswith(b"\n"):  # drop the rest of that line
                        line = stream.readline(limit)
                    continue
                try:
                    message = json.loads(line)
                except (ValueError, RecursionError):
                    message = {"op": "garbage", "why": "a reply that is not JSON or nested too deeply"}
                self.queue.put(message if isinstance(message, dict) else {"op": "garbage", "why": "not an object"})
        except (OSError, ValueError):
            pass
        self.queue.put(None)  # end of output

    def get(self, timeout: float):
        """The next message, ``None`` at the end of output, or raise ``queue.Empty``."""
        return self.queue.get(timeout=timeout)


class _Forked:
    """A sandbox forked by a :class:`Zygote`: the parts of ``subprocess.Popen`` a Sandbox uses."""

    def __init__(self, zygote: Zygote, inner: int, pid: int, stdin, stdout):
        self.zygote, self.inner, self.pid, self.stdin, self.stdout = zygote, inner, pid, stdin, stdout
        self.returncode = None

    def wait(self, timeout: float = 0.0):
        """The exit code (negative: a signal); raises ``subprocess.TimeoutExpired`` if still running."""
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.inner, timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired("sandbox", timeout)
        return self.returncode

    def poll(self):
        try:
            return self.wait(0.0)
        except subprocess.TimeoutExpired:
            return None


class Zygote:
    """One worker's warm parent of sandboxes: ``python -m grader.sandbox --zygote`` in bubblewrap.

    It imports TensorFlow, Keras, matplotlib and the course once (about 3 s) and forks a fresh
    sandbox for each submission of this worker, one at a time, into the same namespaces: only
    the slot's ``scratch`` (read-write) and ``inbox`` (read-only) folders are bound in, and the
    grader empties both after each submission, so a sandbox sees only its own submission.

    Args:
        slot: A new folder of the grader's work root for this worker.
        threads: TensorFlow threads of each sandbox.
        isolated: Run inside bubblewrap (else only Landlock and seccomp, for self-study).
        log: Where the zygote's (and its sandboxes' start-up) messages go.
    """

    def __init__(self, slot: Path, threads: int, isolated: bool, log: Path | None = None):
        self.threads, self.isolated = threads, isolated
        self.scratch, self.inbox = slot / "scratch", slot / "inbox"
        self.scratch.mkdir(parents=True)
        self.inbox.mkdir()
        _copy_font_cache(self.scratch)
        self.log_path = log or slot / "zygote.txt"  # outside the bound folders
        env = sandbox_env(threads, self.scratch, isolated) | {"GRADER_PRIVATE_TMP": "1" if isolated else "0"}
        command = [interpreter(), "-I", "-c",
                   f"import sys; sys.path.insert(0, {str(ROOT)!r}); from grader.sandbox import main; main()",
                   "--zygote"]
        argv = bwrap_argv(command, self.scratch, self.inbox, read_paths(), env) if isolated else command
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(argv, env=env, cwd=self.scratch, stdin=theirs, stdout=subprocess.DEVNULL,
                                         stderr=log_file, start_new_session=True)
        theirs.close()
        try:
            self._answer(STARTUP_TIMEOUT)
        except GraderFailure:
            said = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            self.close()
            raise GraderFailure(f"the sandbox did not start (it said: {' | '.join(said)[-400:] or 'nothing'}); "
                                "is bubblewrap working and the course installed?") from None

    def _answer(self, timeout: float) -> dict:
        self.control.settimeout(timeout)
        try:
            message = self.control.recv(1 << 16)
            answer = json.loads(message) if message else None
        except (OSError, ValueError):
            answer = None
        if not isinstance(answer, dict) or "error" in answer:
            raise GraderFailure(f"the sandbox zygote stopped answering ({str(answer)[:200]})")
        return answer

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _outer_pid(self, inner: int) -> int:
        """The pid in the grader's namespace of the zygote's child ``inner`` (its pid inside)."""
        if not self.isolated:
            return inner
        for _ in range(100):
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    status = Path(f"/proc/{child.pid}/status").read_text()
                    ns_pids = next(line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:"))
                    if int(ns_pids[-1]) == inner and len(ns_pids) > 1:
                        return child.pid
            except (psutil.Error, OSError, StopIteration):
                pass
            time.sleep(0.01)
        raise GraderFailure(f"the sandbox zygote's child {inner} cannot be found")

    def fork(self) -> _Forked:
        """A new sandbox process (it reads ``scratch/program.json``, then says ready)."""
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        try:
            socket.send_fds(self.control, [json.dumps({"op": "fork", "scratch": str(self.scratch)}).encode()],
                            [requests_r, replies_w])
            inner = int(self._answer(60)["pid"])
        except (OSError, KeyError, ValueError, GraderFailure) as exc:
            for fd in (requests_w, replies_r):
                os.close(fd)
            raise GraderFailure(f"the sandbox zygote could not fork a sandbox ({exc})") from None
        finally:
            os.close(requests_r)
            os.close(replies_w)
        return _Forked(self, inner, self._outer_pid(inner), os.fdopen(requests_w, "wb"), os.fdopen(replies_r, "rb"))

    def wait(self, inner: int, timeout: float):
        """The exit code of the sandbox ``inner`` once it ended (None if it runs after ``timeout`` s)."""
        try:
            self.control.send(json.dumps({"op": "wait", "pid": inner, "timeout": timeout}).encode())
            return self._answer(timeout + 30)["code"]
        except (OSError, GraderFailure):
            return None

    def clear(self) -> bool:
        """Empty the scratch and inbox folders and the private /tmp and /dev/shm (the sandbox has
        ended); False if something is left (the zygote must then not serve another submission)."""
        for folder in (self.scratch, self.inbox):
            with contextlib.suppress(OSError):
                os.chmod(folder, 0o700)  # a sandbox may have made its own folder read-only
            for entry in list(folder.iterdir()):
                remove_tree(str(entry))
        if any(self.scratch.iterdir()) or any(self.inbox.iterdir()):
            return False
        if not self.isolated:
            return True
        try:
            self.control.send(json.dumps({"op": "reset"}).encode())
            return self._answer(60).get("left") == ""
        except (OSError, GraderFailure):
            return False

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.control.close()


class SandboxDied(Exception):
    """The sandbox ended or was stopped while doing something: the reason, as a sentence part."""


class Sandbox:
    """One sandbox process for one submission (a new one after each restart).

    Args:
        scratch: Its only writable folder.
        inbox: Where the checker puts call arguments (read-only inside).
        program: ``program.json``'s content (the submission's cells, references).
        limits: What it may use.
        threads: TensorFlow threads for it.
        isolated: Run inside bubblewrap (else only Landlock and seccomp, for self-study).
        zygote: Fork the sandbox from this worker's zygote (``scratch`` and ``inbox`` are its
            folders) instead of starting a new process.
    """

    def __init__(self, scratch: Path, inbox: Path, program: dict, limits: Limits, threads: int, isolated: bool,
                 zygote: Zygote | None = None):
        self.scratch, self.limits, self.dead, self.forked = scratch, limits, "", zygote is not None
        name = f"grader-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
        self.cgroup = MemoryCgroup.create(name, limits.memory_mb * 2**20)
        reads = read_paths()
        landlock_reads = [*reads, "/dev/urandom", "/dev/random", "/dev/zero", "/proc/self",
                          "/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/sys/fs/cgroup"]
        program = {**program, "inbox": str(inbox), "read": landlock_reads, "cgroup": self.cgroup is not None,
                   "private_tmp": isolated}
        (scratch / "program.json").write_text(json.dumps(program), encoding="utf-8")
        env = sandbox_env(threads, scratch, isolated)
        # -I: neither the current folder nor PYTHON* variables on sys.path; the grader from ROOT
        command = [interpreter(), "-I", "-c",
                   f"import sys; sys.path.insert(0, {str(ROOT)!r}); from grader.sandbox import main; main()",
                   str(scratch)]
        argv = bwrap_argv(command, scratch, inbox, reads, env) if isolated else command
        if zygote is not None:
            self.startup_log = zygote.log_path
            self.proc = zygote.fork()
        else:
            self.startup_log = scratch.parent / f"startup-{time.monotonic_ns()}.txt"  # outside the sandbox
            with open(self.startup_log, "wb") as log:
                self.proc = subprocess.Popen(argv, env=env, cwd=scratch, stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        if self.cgroup is not None:
            try:
                self.cgroup.add(self.proc.pid)
            except OSError:
                self.cgroup.remove()
                self.cgroup = None
        self.lines = _Lines(self.proc.stdout, MAX_REPLY_BYTES)
        self.next_id = 0
        self.started = time.monotonic()
        try:
            ready = self._wait(None, STARTUP_TIMEOUT, "starting", startup=True)
        except SandboxDied as exc:
            self.close()
            said = self.startup_log.read_text(errors="replace").strip().splitlines()[-3:]
            raise GraderFailure(f"the sandbox did not start ({exc}; it said: {' | '.join(said)[-400:] or 'nothing'}); "
                                "is bubblewrap working and the course installed?") from None
        self.notes = [str(n) for n in ready.get("notes", [])][:5]
        if self.cgroup is not None:  # bwrap's child may have been forked before bwrap joined the group
            try:
                for child in psutil.Process(self.proc.pid).children(recursive=True):
                    self.cgroup.add(child.pid)
            except (psutil.Error, OSError):
                self.close()
                raise GraderFailure("the sandbox could not be put into its memory cgroup") from None

    def _pid_tree_rss(self) -> int:
        try:
            proc = psutil.Process(self.proc.pid)
            return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
        except psutil.Error:
            return 0

    def _du(self) -> int:
        total = 0
        for root, _, files in os.walk(self.scratch):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total

    def _death(self, who: str, code) -> str:
        if self.cgroup is not None and self.cgroup.over_limit():
            return f"{who} used more than {self.limits.memory_mb} MB of memory"
        if code is None:
            return f"{who} stopped responding"
        if isinstance(code, int) and 128 < code < 160 and not self.forked:  # bwrap: 128 + n for signal n
            code = 128 - code
        if code == PIPES_CLOSED:
            return (f"{who} closed the file descriptors through which the grader talks to the sandbox (e.g. os.close "
                    "on descriptors 0-20), so nothing could come back (in Jupyter this stops the kernel)")
        if code == -signal.SIGXFSZ:
            return f"{who} wrote more than 64 MB to one file or to the output"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"{who} crashed the process ({name})"
        return f"{who} ended the process (exit code {code}, e.g. os._exit or sys.exit in a thread)"

    def _wait(self, request_id, timeout: float, who: str, startup: bool = False) -> dict:
        deadline = time.monotonic() + timeout
        last_check = 0.0
        while True:
            try:
                message = self.lines.get(0.1)
            except queue.Empty:
                message = False
            if message is None:  # the process closed its output: it ended
                try:
                    code = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.kill()
                    code = None
                raise SandboxDied(self._death(who, code))
            if message and message.get("op") == "garbage" and not startup:
                self.kill()
                raise SandboxDied(f"{who} sent the grader data it cannot read ({message['why']})")
            if message:
                if startup and message.get("op") == "ready":
                    return message
                if not startup and (message.get("id"), message.get("nonce")) == request_id:
                    return message
                continue  # anything else the student's code wrote is ignored
            now = time.monotonic()
            reason = ""
            if now > deadline:
                reason = (f"{who} did not finish within {timeout:.0f} s (an endless loop?)" if not startup
                          else f"it took more than {timeout:.0f} s")
            elif (self.cgroup.over_limit() if self.cgroup is not None
                  else self._pid_tree_rss() > self.limits.memory_mb * 2**20):
                reason = f"{who} used more than {self.limits.memory_mb} MB of memory"
            elif now - last_check > 1.0:
                last_check = now
                if self._du() > self.limits.disk_mb * 2**20:
                    reason = f"{who} wrote more than {self.limits.disk_mb} MB of files"
            if reason:
                self.kill()
                raise SandboxDied(reason)

    def request(self, message: dict, timeout: float, who: str) -> dict:
        """Send one request and wait for its reply, within ``timeout`` seconds of this process's clock.

        Raises:
            SandboxDied: it ended, hung, or went over a limit (the sandbox is then gone).
        """
        if self.dead:
            raise SandboxDied(self.dead)
        self.next_id += 1
        # a reply counts only with this request's nonce: lines the student's code wrote into the
        # reply pipe before this request was sent (forged answers to later calls) are ignored
        nonce = secrets.token_hex(16)
        try:
            self.proc.stdin.write((json.dumps({**message, "id": self.next_id, "nonce": nonce}) + "\n").encode())
            self.proc.stdin.flush()
            return self._wait((self.next_id, nonce), timeout, who)
        except SandboxDied as exc:
            self.dead = str(exc)
            raise
        except (BrokenPipeError, OSError):
            self.dead = self._death(who, self.proc.poll())
            self.kill()
            raise SandboxDied(self.dead) from None

    def kill(self) -> None:
        stop = [os.killpg, os.kill] if self.forked else [os.killpg]  # forked: before or after its setsid
        for function in stop:
            try:
                function(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self.cgroup is not None:
            self.cgroup.remove()

    def close(self) -> None:
        self.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        if self.cgroup is not None:
            self.cgroup.remove()


class CheckerProcess:
    """A trusted ``python -m grader.checker`` serving one assignment."""

    def __init__(self, source: Path, workdir: Path, log: Path | None = None):
        # its temporary files (TensorFlow's autograph modules) go into its folder, removed with it
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", TMPDIR=str(workdir))
        self.source, self.workdir = source, workdir
        self.log = open(log or os.devnull, "ab")
        self.proc = subprocess.Popen([interpreter(), "-m", "grader.checker"], env=env, cwd=workdir,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self.lines = _Lines(self.proc.stdout, 256 * 2**20)
        self._send({"op": "source", "path": str(source)})
        self.loading = True  # its set-up runs while the first sandbox starts

    def _send(self, message: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise GraderFailure("the checker process ended unexpectedly") from None

    def request(self, message: dict, relay=None) -> dict:
        """One request; ``relay(call) -> reply`` answers the calls of student functions meanwhile.

        Raises:
            GraderFailure: the checker failed, ended or gave no answer in time.
        """
        if self.loading:
            self.loading = False
            self._done(None)
        self._send(message)
        return self._done(relay)

    def _done(self, relay) -> dict:
        while True:
            try:
                reply = self.lines.get(CHECKER_TIMEOUT)
            except queue.Empty:
                self.close()
                raise GraderFailure(f"the checker gave no answer within {CHECKER_TIMEOUT:.0f} s") from None
            if reply is None:
                raise GraderFailure(f"the checker process ended (exit code {self.proc.poll()})")
            if reply.get("op") == "call" and relay is not None:
                self._send({"op": "reply", "reply": relay(reply)})
                continue
            if reply.get("op") != "done":
                raise GraderFailure(f"the checker sent an unexpected message ({str(reply)[:200]})")
            if not reply.get("ok"):  # the traceback is for the instructor's log, not for the report
                self.log.write(f"the checker failed:\n{reply.get('traceback', '')}\n".encode())
                self.log.flush()
                raise GraderFailure(f"the checker failed: {reply.get('error')}")
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


# ------------------------------------------------------------------------------ one submission
def submission_hash(notebook: Path, assignment: Assignment, files=()) -> str:
    """Changes when the submission, the files beside it, the source notebook or the grader changes."""
    h = hashlib.sha256(f"{GRADER_VERSION}\n{assignment.digest}\n".encode())
    for path in [notebook, *sorted(files)]:
        try:
            h.update(Path(path).name.encode() + b"\0" + Path(path).read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()


def _python_files(files) -> dict[str, str]:
    """The Python files handed in beside the notebook (name -> text), for the review scan."""
    out = {}
    for f in map(Path, files):
        if f.suffix == ".py" and f.is_file() and not f.is_symlink() and f.stat().st_size < 2**20:
            out[f.name] = f.read_text(encoding="utf-8", errors="replace")
    return out


def _copy_files(files, scratch: Path) -> None:
    """The files handed in beside the notebook (regular files only: links are not followed)."""
    for f in files:
        f = Path(f)
        try:
            fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as src:
            info = os.fstat(src.fileno())
            if f.suffix == ".ipynb" or not os.path.isfile(f) or info.st_size > 50 * 2**20 or (info.st_mode & 0o170000) != 0o100000:
                continue
            with open(scratch / f.name, "wb") as dst:
                shutil.copyfileobj(src, dst)


class _Run:
    """The state of grading one submission: its sandbox, restarts and what went wrong."""

    def __init__(self, submission, assignment: Assignment, limits: Limits, workdir: Path, threads: int, isolated: bool,
                 zygote: Zygote | None = None):
        self.sub, self.limits, self.threads, self.isolated, self.zygote = submission, limits, threads, isolated, zygote
        if zygote is None:
            self.scratch, self.inbox = workdir / "scratch", workdir / "inbox"
            self.scratch.mkdir()
            self.inbox.mkdir()
        else:  # the zygote's folders, emptied after the previous submission
            self.scratch, self.inbox = zygote.scratch, zygote.inbox
        (self.scratch / "out").mkdir()
        _copy_font_cache(self.scratch)
        self.program = {"cells": submission.code, "references": assignment.references}
        self.sandbox: Sandbox | None = None
        self.started, self.starts, self.ran = time.monotonic(), 0, []
        self.notes: list[str] = []

    def remaining(self) -> float:
        return self.limits.submission_timeout - (time.monotonic() - self.started)

    def start(self) -> None:
        """A new sandbox that has run the cells this submission ran so far (after a restart)."""
        if self.sandbox is not None:
            self.sandbox.close()
        self.starts += 1
        self.sandbox = Sandbox(self.scratch, self.inbox, {**self.program, "attempt": self.starts},
                               self.limits, self.threads, self.isolated, self.zygote)
        if self.starts == 1:
            self.notes = self.sandbox.notes
        for i in self.ran:
            self.run_cell(i, replay=True)

    def run_cell(self, i: int, replay: bool = False):
        """Run code cell ``i``; returns the student's error (as data) or None.

        Raises:
            SandboxDied: the cell ended the process, hung or went over a limit.
        """
        number = self.sub.code[i]["number"]
        timeout = min(self.limits.cell_timeout, max(1.0, self.remaining()))
        reply = self.sandbox.request({"op": "run", "cell": i}, timeout, f"cell {number}")
        if not replay:
            self.ran.append(i)
        error = reply.get("error")
        return error if isinstance(error, dict) else None

    def call(self, request: dict) -> dict:
        """Relay one call of a student function to the sandbox (its reply, or a failure)."""
        name = str(request.get("name"))
        if self.remaining() <= 0:
            return {"failure": f"not run: the submission used up its {self.limits.submission_timeout:.0f} s time limit"}
        timeout = min(self.limits.cell_timeout, max(1.0, self.remaining()))
        try:
            message = {"op": "call", "name": name, "args": request.get("args", []), "kwargs": request.get("kwargs", {}),
                       "references": request.get("references", [])}
            reply = self.sandbox.request(message, timeout, f"{name}()")
        except SandboxDied as exc:
            return {"failure": str(exc)}
        reply.pop("op", None), reply.pop("id", None)
        return reply


def grade(assignment: Assignment, notebook: Path, checker: CheckerProcess, limits: Limits, workroot: Path,
          files=(), threads: int = 1, isolated: bool = True, zygote: Zygote | None = None) -> dict:
    """Grade one submission; never raises for anything the submission does.

    With a ``zygote`` its sandboxes are forked from it (the zygote is closed when its folders
    cannot be emptied afterwards, so that nothing is left for the next submission).

    Raises:
        GraderFailure: the grader itself failed (the checker, or a sandbox that could not start).

    Returns:
        The result: status, score, per-test verdicts and messages, manual cells, problems.
    """
    t0 = time.monotonic()
    submission = read_submission(notebook, assignment)
    tests = {c.grade_id: {"passed": False, "points": 0.0, "max_points": c.points, "message": ""}
             for c in assignment.tests}
    problems = list(submission.problems)
    notes = []
    review = scan(submission.code, assignment.given_code, _python_files(files))  # decided here, outside
    if not submission.readable:
        for t in tests.values():
            t["message"] = problems[0]
    else:
        workdir = Path(tempfile.mkdtemp(prefix="submission-", dir=workroot))
        run = None
        try:
            run = _Run(submission, assignment, limits, workdir, threads, isolated, zygote)
            _copy_files(files, run.scratch)
            checker.request({"op": "begin", "inbox": str(run.inbox), "outbox": str(run.scratch / "out")})
            _grade_steps(run, checker, tests, problems, limits, review)
            notes = run.notes
        finally:
            if run is not None and run.sandbox is not None:
                run.sandbox.close()
            if zygote is not None:
                if os.environ.get("GRADER_KEEP_WORKDIRS"):
                    shutil.copytree(zygote.scratch, workdir / "scratch", symlinks=True, dirs_exist_ok=True)
                if not zygote.clear():
                    zygote.close()
            if not os.environ.get("GRADER_KEEP_WORKDIRS"):
                remove_tree(str(workdir))
    manual = {c.grade_id: {"max_points": c.points, "answered": bool(submission.answers.get(c.grade_id, "").strip())}
              for c in assignment.manual}
    return {
        "grader_version": GRADER_VERSION,
        "status": "graded",
        "assignment": assignment.name,
        "notebook": assignment.notebook,
        "hash": submission_hash(notebook, assignment, files),
        "score": sum(t["points"] for t in tests.values()),
        "max_score": sum(c.points for c in assignment.tests),
        "manual_max_score": sum(c.points for c in assignment.manual),
        "tests": tests,
        "manual": manual,
        "problems": problems,
        "review": review,
        "isolation": notes,
        "seconds": round(time.monotonic() - t0, 2),
    }


def _grade_steps(run: _Run, checker: CheckerProcess, tests: dict, problems: list, limits: Limits,
                 review: list) -> None:
    """Walk the plan: cells in the sandbox, tests in the checker; a sandbox that ends is
    restarted for the next test, except when top-level code ended it (as in Jupyter)."""
    stopped = ""  # why the checks after some point did not run
    for kind, ref in run.sub.steps:
        if stopped:
            if kind == "test":
                tests[ref]["message"] = f"not run: {stopped}"
            continue
        try:
            if run.sandbox is None or run.sandbox.dead:
                if run.starts > limits.attempts:
                    stopped = f"the submission stopped its sandbox {run.starts} times"
                    problems.append(stopped)
                    if kind == "test":
                        tests[ref]["message"] = f"not run: {stopped}"
                    continue
                run.start()
            if kind == "cell":
                error = run.run_cell(ref)
                if error is not None and len(problems) < 20:
                    number = run.sub.code[ref]["number"]
                    problems.append(f"cell {number} raised {str(error.get('type'))[:100]}: "
                                    f"{str(error.get('message', ''))[:200]}")
                continue
            verdict = checker.request({"op": "test", "key": ref}, relay=run.call)["verdict"]
            tests[ref].update({k: verdict[k] for k in ("passed", "points", "max_points", "message")})
            tests[ref]["hidden"] = bool(verdict.get("hidden"))
            if verdict.get("review"):
                review.append(f"{ref}: {str(verdict['review'])[:300]}")
        except SandboxDied as exc:  # top-level code (or a restart's replay of it) ended the sandbox
            stopped = f"{exc}; the checks after it did not run"
            problems.append(stopped)
            if run.remaining() <= 0:
                stopped = f"the submission used up its {limits.submission_timeout:.0f} s time limit"
        if run.remaining() <= 0 and not stopped:
            stopped = f"the submission used up its {limits.submission_timeout:.0f} s time limit"
            problems.append(stopped)


# ------------------------------------------------------------------------------ many submissions
@dataclass
class Task:
    """One submission to grade: its notebook, the files beside it and where its result goes."""

    assignment: Assignment
    notebook: Path
    student: str
    out: Path
    files: tuple = ()


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a result file is complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


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


def error_result(task: Task, reason: str) -> dict:
    """What a submission gets when the grader failed on it: not graded, never a zero."""
    return {"grader_version": GRADER_VERSION, "status": "error", "assignment": task.assignment.name,
            "notebook": task.assignment.notebook, "hash": "", "score": None,
            "max_score": sum(c.points for c in task.assignment.tests),
            "manual_max_score": sum(c.points for c in task.assignment.manual),
            "tests": {}, "manual": {}, "problems": [f"not graded: grader error ({reason[:300]})"], "seconds": 0}


def isolation_available(required: bool) -> bool:
    """Whether sandboxes run in bubblewrap; raises when ``required`` and it cannot work here.

    Raises:
        GraderFailure: this is not Linux (the sandbox is built of Linux namespaces, Landlock and
            seccomp), or bubblewrap is required and does not work here.
    """
    if sys.platform != "linux":
        raise GraderFailure(f"the grader's sandbox needs Linux and this is {sys.platform}: check and grade in WSL, "
                            "a Linux machine or a container; the notebook's own test cells work here as they are")
    why = bwrap_works()
    if why and required:
        raise GraderFailure(f"cannot isolate submissions: {why} (or pass --weak-isolation to grade with "
                          "Landlock and seccomp only, see grader/README.md)")
    return not why


class Worker:
    """One grading worker: its zygote and checker, kept from one submission to the next.

    The checker is replaced when the assignment (its source path or content) changes, and both
    are replaced after a failure of the grader itself. :func:`grade_many` runs one per thread;
    the self-check service (:mod:`grader.service`) keeps one for its whole life.

    Args:
        workroot: A private folder for the worker's slot and checker folders (the caller removes it).
        threads: TensorFlow threads of each sandbox.
        isolated: Run sandboxes inside bubblewrap.
        log_dir: Where the zygote's and checker's logs go (None: discarded).
    """

    def __init__(self, workroot: Path, threads: int, isolated: bool, log_dir: Path | None = None):
        self.workroot, self.threads, self.isolated, self.log_dir = workroot, threads, isolated, log_dir
        self.zygote: Zygote | None = None
        self.checker: CheckerProcess | None = None
        self.checker_key: tuple = ()
        self.starts = {"zygote": 0, "checker": 0}

    def _log(self, kind: str) -> Path | None:
        return (self.log_dir / f"{kind}-{threading.get_ident()}.log") if self.log_dir else None

    def _zygote(self) -> Zygote:
        if self.zygote is None or not self.zygote.alive():
            if self.zygote is not None:
                self.zygote.close()
            slot = Path(tempfile.mkdtemp(prefix="slot-", dir=self.workroot))
            self.zygote = Zygote(slot, self.threads, self.isolated, self._log("zygote"))
            self.starts["zygote"] += 1
        return self.zygote

    def _checker(self, assignment: Assignment) -> CheckerProcess:
        key = (assignment.path, assignment.digest)
        if self.checker is None or self.checker_key != key or not self.checker.alive():
            if self.checker is not None:
                self.checker.close()
            cwd = Path(tempfile.mkdtemp(prefix="checker-", dir=self.workroot))
            self.checker, self.checker_key = CheckerProcess(assignment.path, cwd, self._log("checker")), key
            self.starts["checker"] += 1
        return self.checker

    def grade(self, task: Task, limits: Limits) -> dict:
        """The result of one task; a failure of the grader is retried once with a new checker and
        zygote, then becomes ``status: "error"`` (never a score)."""
        reason = ""
        for _ in range(2):
            try:
                checker = self._checker(task.assignment)
                result = grade(task.assignment, task.notebook, checker, limits, self.workroot,
                               list(task.files), self.threads, self.isolated, self._zygote())
                break
            except Exception as exc:  # the grader's own failure, never the student's zero
                reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, GraderError) else str(exc)
                self.close()
        else:
            result = error_result(task, reason)
        result["student"] = task.student
        return result

    def close(self) -> None:
        for process in (self.checker, self.zygote):
            if process is not None:
                process.close()
        self.checker, self.zygote, self.checker_key = None, None, ()


def new_workroot() -> Path:
    """A private (0700) folder of the system's temporary folder for one run of the grader."""
    workroot = Path(tempfile.mkdtemp(prefix="grader-"))
    os.chmod(workroot, 0o700)
    return workroot


def sandbox_threads(jobs: int) -> int:
    """TensorFlow threads of each sandbox when ``jobs`` submissions are graded at a time."""
    return max(1, (os.cpu_count() or 1) // jobs)


def grade_many(tasks: list[Task], jobs: int = 1, limits: Limits | None = None, progress: bool = True,
               log_dir: Path | None = None, isolated: bool | None = None, write: bool = True) -> list[dict]:
    """Grade ``tasks`` with ``jobs`` submissions at a time; write each result to ``task.out``.

    One failing submission never stops the others, and every task ends with a result. A
    submission on which the grader failed is retried once with a new checker; if it fails
    again its result has ``status: "error"`` (not a score).

    Args:
        isolated: Require bubblewrap (True), never use it (False), or use it where it works (None).
    """
    limits = limits or Limits()
    if not tasks:
        return []
    if isolated is None:
        isolated = isolation_available(False)
    else:
        isolation_available(isolated)  # refuses when required and missing, and anywhere but Linux
    jobs = max(1, min(jobs, len(tasks)))
    threads = sandbox_threads(jobs)
    workroot = new_workroot()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    bar = Progress(len(tasks), enabled=progress)
    local = threading.local()
    workers, lock = [], threading.Lock()

    def one(task: Task) -> dict:
        if getattr(local, "worker", None) is None:
            local.worker = Worker(workroot, threads, isolated, log_dir)
            with lock:
                workers.append(local.worker)
        result = local.worker.grade(task, limits)
        if write:
            write_json(task.out, result)
        with lock:
            bar.step(f"{task.student}/{task.assignment.name}")
        return result

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, tasks))
    finally:
        for worker in workers:
            worker.close()
        if not os.environ.get("GRADER_KEEP_WORKDIRS"):
            remove_tree(str(workroot))
    return results


def canary(assignments: list[Assignment], limits: Limits, isolated: bool | None = None) -> None:
    """Grade each assignment's own solution notebook; it must get full autograded marks.

    Raises:
        GraderError: a solution lost points here, so this machine cannot grade fairly (names
            the checks that failed and what to look at).
    """
    with tempfile.TemporaryDirectory(prefix="canary-") as tmp:
        tasks = [Task(a, a.path, "canary", Path(tmp) / f"{a.name}.json") for a in assignments]
        for task, result in zip(tasks, grade_many(tasks, jobs=1, limits=limits, progress=False,
                                                  isolated=isolated, write=False)):
            if result["status"] == "graded" and result["score"] == result["max_score"]:
                continue
            failed = [f"{gid}: {t['message']}" for gid, t in result["tests"].items() if not t["passed"]]
            detail = "; ".join(failed or result["problems"])[:800]
            raise GraderFailure(
                f"the canary failed: the solution notebook of {task.assignment.name} scores "
                f"{result['score'] if result['score'] is not None else 'nothing'} of {result['max_score']:g} "
                f"on this machine ({detail}). Nothing was graded: the grading environment differs from the one "
                "the course was written for (the trained model cache in models/, the data in datasets/, the "
                "package versions of requirements.txt, bubblewrap); fix it and run autograde again."
            )


def limits_dict(limits: Limits) -> dict:
    return asdict(limits)
