"""The sandbox: runs one submission's program in a confined process and records its calls.

``python -m grader.sandbox WORKDIR`` (or a fork of the zygote, ``python -m grader.sandbox
--zygote``, which imports TensorFlow once and forks one sandbox per submission) reads
``WORKDIR/program.json``, deletes it, confines itself and runs the program: the instructor's
set-up and test cells with the student's definitions. Every call from a cell to one of the
graded functions is recorded in ``WORKDIR/records.jsonl`` (its return value encoded by
:mod:`grader.codec`, or its exception). Nothing here decides a grade: the records are only
*data* for the trusted checker, which replays the tests against them.

Confinement (Linux; each part is skipped with a note when the kernel lacks it):

- Landlock: the file system is read-only except the working folder, and only the Python
  installation, the ``course`` package, the model and data folders are readable at all: not
  the sources (``solutions/``), hidden tests, gradebook or other students' files.
- seccomp: no sockets (no network), no new processes or programs (``fork``/``exec``), no
  signals to other processes, no ``ptrace`` or reading other processes' memory.
- Limits: no core dumps, files of at most 64 MB (so output is capped); the parent watches
  resident memory, time per cell and per submission, and kills the process when one is over.
"""

from __future__ import annotations

import builtins
import ctypes
import json
import os
import platform
import resource
import select
import signal
import sys
import time
import traceback
from pathlib import Path

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PRINT_CHARS = 1_000_000
PRELOAD = ("numpy", "matplotlib", "matplotlib.figure", "tensorflow", "keras", "course")

# ------------------------------------------------------------------------------------- seccomp
_SYSCALLS = {  # arch -> audit arch, {name: number}
    "x86_64": (0xC000003E, {"socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
                            "io_uring_setup": 425, "pidfd_send_signal": 424, "tkill": 200, "kill": 62,
                            "tgkill": 234, "clone": 56, "clone3": 435, "fork": 57, "vfork": 58,
                            "execve": 59, "execveat": 322}),
    "aarch64": (0xC00000B7, {"socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "io_uring_setup": 425, "pidfd_send_signal": 424, "tkill": 130, "kill": 129,
                             "tgkill": 131, "clone": 220, "clone3": 435, "execve": 221, "execveat": 281}),
}
_CLONE_THREAD = 0x00010000


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _bpf_program(arch: int, nr: dict, pid: int) -> list[tuple]:
    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, ERRNO_EPERM, ERRNO_ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026
    JGE = 0x35
    # another architecture (e.g. 32-bit syscalls) or the x32 ABI: refuse everything
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ERRNO_EPERM), (LD, 0, 0, 0),
            (JGE, 0, 1, 0x40000000), (RET, 0, 0, ERRNO_EPERM)]
    deny = ["socket", "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup",
            "pidfd_send_signal", "tkill", "fork", "vfork", "execve", "execveat"]
    for name in deny:
        if name in nr:
            prog += [(JEQ, 0, 1, nr[name]), (RET, 0, 0, ERRNO_EPERM)]
    prog += [(JEQ, 0, 1, nr["clone3"]), (RET, 0, 0, ERRNO_ENOSYS)]  # glibc falls back to clone
    # clone: threads only (flags in args[0], low word at offset 16)
    prog += [(JEQ, 0, 4, nr["clone"]), (LD, 0, 0, 16), (JSET, 1, 0, _CLONE_THREAD),
             (RET, 0, 0, ERRNO_EPERM), (RET, 0, 0, ALLOW)]
    # kill / tgkill: only this process (pid in args[0])
    for name in ("kill", "tgkill"):
        prog += [(JEQ, 0, 4, nr[name]), (LD, 0, 0, 16), (JEQ, 1, 0, pid),
                 (RET, 0, 0, ERRNO_EPERM), (RET, 0, 0, ALLOW), (LD, 0, 0, 0)]
    prog += [(RET, 0, 0, ALLOW)]
    return prog


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def seccomp() -> str:
    """Install the syscall filter. Returns a note on what was (not) done."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        return f"seccomp: not installed (no syscall table for {machine})"
    arch, nr = _SYSCALLS[machine]
    libc = _libc()
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"seccomp: not installed (no_new_privs: {os.strerror(ctypes.get_errno())})"
    rules = _bpf_program(arch, nr, os.getpid())
    filters = (_Filter * len(rules))(*[_Filter(*r) for r in rules])
    prog = _Prog(len(rules), filters)
    if libc.prctl(22, 2, ctypes.byref(prog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
        return f"seccomp: not installed ({os.strerror(ctypes.get_errno())})"
    return "seccomp: on"


# ------------------------------------------------------------------------------------ landlock
_READ_FILE, _READ_DIR, _EXECUTE, _WRITE_FILE, _TRUNCATE = 1 << 2, 1 << 3, 1 << 0, 1 << 1, 1 << 14


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(read: list[str], write: list[str]) -> str:
    """Make everything outside ``read`` (read-only) and ``write`` (read-write) unreachable."""
    libc = _libc()
    libc.syscall.restype = ctypes.c_long
    abi = libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
    if abi < 1:
        return "landlock: not available on this kernel (files are not confined)"
    handled = (1 << 13) - 1  # ABI 1: execute .. make_sym
    if abi >= 2:
        handled |= 1 << 13  # refer
    if abi >= 3:
        handled |= _TRUNCATE
    attr = _RulesetAttr(handled, 0, 0b11 if abi >= 6 else 0)  # scope: abstract sockets, signals
    size = ctypes.sizeof(attr) if abi >= 6 else 8
    ruleset = libc.syscall(444, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return f"landlock: not installed ({os.strerror(ctypes.get_errno())})"
    file_rights = _READ_FILE | _EXECUTE
    dir_rights = file_rights | _READ_DIR
    write_rights = handled & ~((1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12))  # no devices, sockets, fifos, symlinks
    for paths, rights in ((read, dir_rights), (write, write_rights)):
        for path in paths:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            is_dir = os.path.isdir(path)
            allowed = rights if is_dir else rights & (file_rights | _WRITE_FILE | _TRUNCATE)
            rule = _PathBeneath(allowed, fd)
            libc.syscall(445, ruleset, 1, ctypes.byref(rule), 0)
            os.close(fd)
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.syscall(446, ruleset, 0) != 0:
        return f"landlock: not installed ({os.strerror(ctypes.get_errno())})"
    os.close(ruleset)
    return f"landlock: on (ABI {abi})"


def confine(workdir: str, read: list[str]) -> list[str]:
    """Confine this process to ``workdir``; returns notes on each mechanism."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    notes = [landlock(read, [workdir, "/dev/null"]), seccomp()]
    return notes


# ------------------------------------------------------------------------------ the recorder
class _CappedText:
    """``sys.stdout``/``sys.stderr`` replacement: keeps the first characters, drops the rest."""

    def __init__(self, stream, limit: int):
        self.stream, self.left = stream, limit

    def write(self, text):
        text = str(text)
        if self.left > 0:
            self.stream.write(text[: self.left])
            self.left -= len(text)
            if self.left <= 0:
                self.stream.write("\n[output truncated by the grader]\n")
        return len(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()


class Recorder:
    """Runs the program's steps and writes the event log (``records.jsonl``)."""

    def __init__(self, workdir: Path, program: dict):
        from grader.codec import Encoder

        self.program = program
        self.log = open(workdir / "records.jsonl", "a", buffering=1, encoding="utf-8")
        self.encoder = Encoder(workdir / "blobs", prefix=int(program.get("attempt", 0)))
        self.key = ""
        self.depth = 0  # graded functions called by graded functions are not recorded
        self.graded = list(program["graded_names"])
        from grader.notebook import namespace

        self.namespace = namespace()
        self.student = None  # the student's own namespace (their functions' globals)
        self.student_names: set[str] = set()

    def emit(self, **event) -> None:
        event["time"] = round(time.monotonic(), 3)
        self.log.write(json.dumps(event) + "\n")

    def wrapper(self, name: str):
        from grader.codec import encode_exception, fingerprint, shared_layers, unsupported

        def call(*args, **kwargs):
            key = self.key
            fn = self.student.get(name) if self.student is not None else None
            if self.depth:
                return fn(*args, **kwargs)
            if fn is None or not callable(fn):
                what = "not defined" if fn is None else f"a {type(fn).__name__}, not a function"
                exc = NameError(f"{name} is {what} in the submission")
                self.emit(event="call", key=key, name=name, error=encode_exception(exc))
                raise exc
            # names the notebook defined later (not the graded ones: those are the student's own)
            self.student.update({k: v for k, v in self.namespace.items()
                                 if k not in self.student_names and k not in self.graded})
            inputs = [*enumerate(args), *kwargs.items()]
            before = {str(k): fingerprint(v) for k, v in inputs}
            self.emit(event="begin", key=key, name=name, args=before)
            self.depth += 1
            try:
                value = fn(*args, **kwargs)
                error = None
            except BaseException as exc:
                error = exc
            finally:
                self.depth -= 1
            event = {"event": "call", "key": key, "name": name, "args": before}
            import numpy as np

            changed = {str(k): self.encoder.array(v) for k, v in inputs
                       if isinstance(v, np.ndarray) and fingerprint(v) != before[str(k)]}
            if changed:
                event["mutated"] = changed  # replayed on the checker's arguments
            if error is not None:
                self.emit(**event, error=encode_exception(error))
                raise error
            try:
                encoded = self.encoder.encode(value)
                if encoded.get("t") == "keras":
                    encoded["shared"] = shared_layers(value, args, kwargs)
            except BaseException as exc:  # a value whose conversion fails
                encoded = unsupported(value, f"a value that could not be converted ({type(exc).__name__})")
            self.emit(**event, value=encoded)
            return value

        call.__name__ = call.__qualname__ = name
        return call

    def define(self, definitions: list, skip: set) -> None:
        from grader.codec import encode_exception

        self.student = dict(self.namespace)
        for j, (label, code) in enumerate(definitions):
            key = f"student:{j}"
            if key in skip:
                continue
            self.key = key
            self.emit(event="start", key=key)
            try:
                exec(compile(code, f"<{label}>", "exec"), self.student)
            except BaseException as exc:
                self.emit(event="deferror", key=key, label=label, error=encode_exception(exc))
        self.student_names = {k for k, v in self.student.items() if self.namespace.get(k, self) is not v}
        for name in self.graded:
            self.namespace[name] = self.wrapper(name)

    def run(self) -> None:
        from grader.codec import encode_exception

        skip = set(self.program.get("skip", []))
        for step in self.program["steps"]:
            if step["kind"] == "student":
                self.define(step["definitions"], skip)
                continue
            if step["key"] in skip:
                continue
            self.key = step["key"]
            self.emit(event="start", key=self.key)
            try:
                exec(compile(step["source"], f"<{self.key}>", "exec"), self.namespace)
            except BaseException as exc:
                self.emit(event="cellerror", key=self.key, error=encode_exception(exc))
            self.emit(event="end", key=self.key)
        self.emit(event="done")


def _prepare_child(workdir: Path) -> dict:
    """In the freshly started/forked sandbox process: read the program, redirect output, confine."""
    os.chdir(workdir)
    program_file = workdir / "program.json"
    program = json.loads(program_file.read_text(encoding="utf-8"))
    program_file.unlink()
    out = os.open(workdir / "output.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.closerange(3, 65536)
    sys.stdout = _CappedText(open(1, "w", buffering=1, closefd=False), MAX_PRINT_CHARS)
    sys.stderr = _CappedText(open(2, "w", buffering=1, closefd=False), MAX_PRINT_CHARS)
    os.environ["HOME"] = os.environ["TMPDIR"] = str(workdir)
    import tempfile

    tempfile.tempdir = str(workdir)
    notes = confine(str(workdir), program.get("read", []))
    print("[grader]", "; ".join(notes), file=sys.stderr)
    return program


def child_main(workdir: str) -> int:
    """The sandbox process: prepare, run the program, exit 0 (even when cells failed)."""
    workdir = Path(workdir)
    program = _prepare_child(workdir)
    import matplotlib

    matplotlib.use("Agg")
    try:
        Recorder(workdir, program).run()
    except BaseException:  # the grader's own failure: say so in the output
        traceback.print_exc()
        return 3
    return 0


def _preload() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import grader.codec  # noqa: F401  (used after confinement)


def zygote_main() -> int:
    """Import the heavy modules once, then fork one sandbox per request.

    Protocol (JSON lines): stdin ``{"id": n, "workdir": path}``; stdout ``{"id": n, "pid": p}``
    once forked and ``{"id": n, "status": s}`` when it ended (``s`` as ``os.waitstatus_to_exitcode``).
    """
    _preload()
    requests, pids = sys.stdin.buffer, {}
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    print(json.dumps({"ready": True}), file=reply)
    buffer = b""
    while True:
        ready, _, _ = select.select([requests], [], [], 0.05)
        if ready:
            chunk = os.read(requests.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    code = 3
                    try:
                        os.setsid()
                        code = child_main(request["workdir"])
                    finally:
                        os._exit(code)
                pids[pid] = request["id"]
                print(json.dumps({"id": request["id"], "pid": pid}), file=reply)
        while pids:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            print(json.dumps({"id": pids.pop(pid), "status": os.waitstatus_to_exitcode(status)}), file=reply)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--zygote"]:
        sys.exit(zygote_main())
    if len(sys.argv) == 2:
        _preload()
        sys.exit(child_main(sys.argv[1]))
    sys.exit("usage: python -m grader.sandbox WORKDIR | --zygote")
