"""The self-check service: a warm grader kept running between a learner's checks.

A check in fresh processes pays for TensorFlow's import and the checker's set-up every time
(9-13 s). The first ``check()`` of a session (cell or ``python -m grader check``) starts this
small local service instead; it keeps one :class:`grader.engine.Worker` (a zygote and a checker)
and later checks use it, so only the notebook's own cells and the checks run again. Every wall
of the sandbox stays: each check still gets a new sandbox forked from the zygote, which is
emptied and verified between checks exactly as between the students of a class.

It listens on a Unix socket in the user's runtime folder (``$XDG_RUNTIME_DIR/course-grader``,
else ``/tmp/course-grader-<uid>``; ``$GRADER_RUNTIME_DIR`` overrides both). That folder must be
the user's own with mode 0700, and the service also refuses any connection whose peer is
another user (``SO_PEERCRED``). The socket's name is a digest of everything a check depends on
(the grader's and the package's code, the interpreter, the model and data folders and their
files), so a change of any of them starts a new service and never uses stale code. It exits
by itself after ``$GRADER_SERVICE_IDLE`` seconds without a check (default 20 minutes).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from grader import engine
from grader.notebook import read_source

IDLE_SECONDS = 20 * 60
START_TIMEOUT = 30.0  # seconds for a new service to listen (it imports no TensorFlow before it does)
MAX_REQUEST = 2**20


class ServiceUnavailable(Exception):
    """The service cannot be used here: a sentence saying why (the check then runs in fresh processes)."""


def runtime_dir() -> Path:
    """The user's own folder for the service's socket, created 0700 if missing.

    Raises:
        ServiceUnavailable: it exists but belongs to another user or others may enter it.
    """
    base = os.environ.get("GRADER_RUNTIME_DIR")
    if base:
        folder = Path(base)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        folder = Path(os.environ["XDG_RUNTIME_DIR"]) / "course-grader"
    else:
        folder = Path(tempfile.gettempdir()) / f"course-grader-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
    except OSError as exc:
        raise ServiceUnavailable(f"its folder {folder} cannot be made ({exc.strerror})") from None
    mode = info.st_mode & 0o7777
    if info.st_uid != os.getuid() or mode != 0o700 or not os.path.isdir(folder) or os.path.islink(folder):
        raise ServiceUnavailable(
            f"its folder {folder} has owner uid {info.st_uid} and mode {mode:04o}, expected your own uid "
            f"{os.getuid()} and 0700 (remove the folder, or set GRADER_RUNTIME_DIR to a folder of your own)")
    return folder


def _files_digest(h, folder: Path) -> None:
    """Add the names, sizes and modification times of a folder's files (not their contents: speed)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        h.update(f"{folder}: none\n".encode())
        return
    for entry in entries:
        with contextlib.suppress(OSError):
            info = entry.stat()
            h.update(f"{entry.path} {info.st_size} {info.st_mtime_ns}\n".encode())


def service_key() -> str:
    """A digest of what a check depends on besides the notebook and its source."""
    import course

    h = hashlib.sha256(f"{engine.GRADER_VERSION} {engine.interpreter()} {sys.version}\n".encode())
    for folder in [Path(engine.__file__).parent, Path(course.__file__).parent]:
        _files_digest(h, folder)
    dirs = engine.course_dirs()
    h.update(json.dumps(dirs, sort_keys=True).encode())
    for folder in dirs.values():
        _files_digest(h, Path(folder))
    return h.hexdigest()[:20]


def socket_path() -> Path:
    """Where the service for this grader, package and data listens."""
    return runtime_dir() / f"check-{service_key()}.sock"


# ------------------------------------------------------------------------------ the client
def _send(connection: socket.socket, message: dict) -> None:
    connection.sendall((json.dumps(message) + "\n").encode())


def _receive(connection: socket.socket) -> dict:
    with connection.makefile("rb") as stream:
        line = stream.readline(64 * MAX_REQUEST)
    if not line:
        raise ServiceUnavailable("it closed the connection without an answer")
    return json.loads(line)


def _connect(path: Path) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        raise
    return connection


def _start(path: Path) -> None:
    """Start a detached service for ``path`` (it forks away, so that no one waits for it)."""
    code = f"import sys; sys.path.insert(0, {str(engine.ROOT)!r}); from grader.service import main; main()"
    with open(path.with_suffix(".log"), "ab") as log:
        subprocess.run([engine.interpreter(), "-c", code, str(path)], cwd=path.parent, stdin=subprocess.DEVNULL,
                       stdout=log, stderr=log, check=False, timeout=START_TIMEOUT, close_fds=True)


def connect(start: bool = True, path: Path | None = None) -> socket.socket:
    """A connection to the running service (at ``path``, default :func:`socket_path`), started
    first if there is none and ``start``.

    Raises:
        ServiceUnavailable: it could not be reached or started.
    """
    path = path or socket_path()
    try:
        return _connect(path)
    except OSError as exc:
        if not start:
            raise ServiceUnavailable(f"none is running ({exc.strerror})") from None
    _start(path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            return _connect(path)
        except OSError:
            time.sleep(0.05)
    said = path.with_suffix(".log").read_text(errors="replace").strip().splitlines()[-2:]
    raise ServiceUnavailable(f"it did not start within {START_TIMEOUT:.0f} s (its log says: {' | '.join(said)})")


def request(message: dict, start: bool = True, path: Path | None = None) -> dict:
    """Send one request to the service and return its answer.

    Raises:
        ServiceUnavailable: no service, or it failed (the answer's ``error``).
    """
    try:
        with connect(start, path) as connection:
            _send(connection, message)
            answer = _receive(connection)
    except (OSError, ValueError) as exc:
        raise ServiceUnavailable(f"the connection failed ({exc})") from None
    if "error" in answer:
        raise ServiceUnavailable(str(answer["error"]))
    return answer


def check(notebook: Path, source: Path, files: list[Path], limits: engine.Limits) -> dict:
    """The grader's result for ``notebook`` checked against ``source`` by the service."""
    message = {"op": "check", "notebook": str(notebook.resolve()), "source": str(source.resolve()),
               "files": [str(f.resolve()) for f in files], "limits": asdict(limits)}
    return request(message)["result"]


def status(path: Path | None = None) -> dict:
    """The running service's pid, number of checks and zygote and checker starts.

    Raises:
        ServiceUnavailable: none is running.
    """
    return request({"op": "status"}, start=False, path=path)


def stop(path: Path | None = None) -> bool:
    """Stop the service (at ``path``, default: of this grader, package and data); False if none ran."""
    try:
        request({"op": "stop"}, start=False, path=path)
    except ServiceUnavailable:
        return False
    return True


def stop_all() -> int:
    """Stop every service of this user's runtime folder (other code or data too); how many were running."""
    return sum(stop(path) for path in sorted(runtime_dir().glob("check-*.sock")))


# ------------------------------------------------------------------------------ the service
class Service:
    """The running service: one worker, one request at a time, gone after ``idle`` quiet seconds."""

    def __init__(self, idle: float):
        self.idle = idle
        self.workroot = engine.new_workroot()
        self.worker: engine.Worker | None = None  # made by the first check (bubblewrap is tried then)
        self.checks, self.stopping = 0, False

    def answer(self, message: dict) -> dict:
        op = message.get("op")
        if op == "status":
            return {"pid": os.getpid(), "checks": self.checks,
                    "starts": dict(self.worker.starts) if self.worker else {"zygote": 0, "checker": 0}}
        if op == "stop":
            self.stopping = True
            return {"stopped": os.getpid()}
        if op != "check":
            return {"error": f"unknown request {str(op)[:40]!r} (expected check, status or stop)"}
        if self.worker is None:
            self.worker = engine.Worker(self.workroot, engine.sandbox_threads(1), engine.isolation_available(False))
        limits = engine.Limits(**message.get("limits", {}))
        with tempfile.TemporaryDirectory(prefix="check-", dir=self.workroot) as tmp:
            task = engine.Task(read_source(Path(message["source"])), Path(message["notebook"]), "me",
                               Path(tmp) / "result.json", tuple(Path(f) for f in message.get("files", [])))
            result = self.worker.grade(task, limits)
        self.checks += 1
        return {"result": result}

    def handle(self, connection: socket.socket) -> None:
        """Answer one connection: only from this user, one request, one answer."""
        try:
            _pid, uid, _gid = struct.unpack("3i", connection.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if uid != os.getuid():
                _send(connection, {"error": f"refused: uid {uid} is not this service's user ({os.getuid()})"})
                return
            with connection.makefile("rb") as stream:
                message = json.loads(stream.readline(MAX_REQUEST) or b"{}")
            try:
                reply = self.answer(message if isinstance(message, dict) else {})
            except Exception as exc:  # the grader's own failure: the client checks in fresh processes
                reply = {"error": f"the service failed: {type(exc).__name__}: {exc}"}
            _send(connection, reply)
        except (OSError, ValueError):
            pass  # the client went away (an interrupted cell): nothing to tell it

    def run(self, listener: socket.socket) -> None:
        listener.settimeout(1.0)
        last = time.monotonic()
        while not self.stopping and time.monotonic() - last < self.idle:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(None)
                self.handle(connection)
            last = time.monotonic()

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        engine.remove_tree(str(self.workroot))


def serve(path: Path) -> None:
    """Listen at ``path`` until idle; a second service for the same path leaves at once."""
    lock = open(path.with_suffix(".lock"), "w")  # held for the service's whole life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another one is starting or running
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a service that died
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(16)
    service = Service(float(os.environ.get("GRADER_SERVICE_IDLE") or IDLE_SECONDS))
    print(f"[{time.strftime('%H:%M:%S')}] pid {os.getpid()} listening at {path}", file=sys.stderr, flush=True)
    try:
        service.run(listener)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener.close()
        service.close()
        print(f"[{time.strftime('%H:%M:%S')}] pid {os.getpid()} stopped after {service.checks} check(s)",
              file=sys.stderr, flush=True)


def main() -> None:
    """``python -c '...main()' SOCKET``: fork away from the caller, then serve."""
    path = Path(sys.argv[1])
    if os.fork():
        os._exit(0)  # the caller waits only for this
    os.setsid()
    serve(path)


__all__ = ["ServiceUnavailable", "check", "connect", "request", "runtime_dir", "socket_path", "status", "stop",
           "stop_all"]
