"""The sandbox: runs one submission's code cells in a confined process and calls its functions.

``python -m grader.sandbox SCRATCH`` is started by the grader inside bubblewrap namespaces
(:mod:`grader.isolation`). It reads ``SCRATCH/program.json`` (the submission's own code cells,
made plain Python by the trusted side; no test code, no hidden test, no solution), imports the
heavy modules, confines itself (second wall: Landlock, seccomp, rlimits) and then serves the
grader over its standard input and output, one JSON line each way:

- ``{"op": "run", "id": n, "cell": i}``: run code cell ``i`` in the notebook's namespace, as
  *Restart and Run All* would; reply ``{"op": "ran", "id": n, "error": {...} | null}``;
- ``{"op": "call", "id": n, "name": f, "args": [...], "kwargs": {...}}``: call the student's
  ``f`` with arguments the trusted checker encoded (files in the read-only inbox); reply
  ``{"op": "return", "id": n, "value" | "error": ..., "mutated": {...}, "trace": {...}}``
  with the value encoded by :mod:`grader.codec` (files in ``SCRATCH/out``) and what the call
  ran (:class:`grader.references.CallTrace`; the checker decides whether a reference was used).

Every request carries a nonce that the reply must repeat: what the student's code writes into
the reply pipe ahead of a request cannot answer it.

Nothing here decides a grade and nothing the student's code writes is trusted: the grader keeps
its own clock, reads replies with size limits, and the checker decodes values strictly.
"""


from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import platform
import resource
import signal
import stat
import sys
from pathlib import Path

MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_PRINT_CHARS = 1_000_000
#: Exit code of a sandbox whose protocol pipes the student's code closed (e.g. ``os.close`` on 0-20).
PIPES_CLOSED = 71
PRELOAD = ("numpy", "matplotlib", "matplotlib.figure", "tensorflow", "keras", "course")

# ------------------------------------------------------------------------------------- seccomp
_SYSCALLS = {  # arch -> audit arch, {name: number}
    "x86_64": (0xC000003E, {"socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
                            "io_uring_setup": 425, "pidfd_send_signal": 424, "tkill": 200, "kill": 62,
                            "tgkill": 234, "clone": 56, "clone3": 435, "fork": 57, "vfork": 58,
                            "execve": 59, "execveat": 322, "memfd_create": 319, "prlimit64": 302,
                            "sched_setaffinity": 203, "sched_setscheduler": 144, "sched_setparam": 142,
                            "sched_setattr": 314, "setpriority": 141, "ioprio_set": 251}),
    "aarch64": (0xC00000B7, {"socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "io_uring_setup": 425, "pidfd_send_signal": 424, "tkill": 130, "kill": 129,
                             "tgkill": 131, "clone": 220, "clone3": 435, "execve": 221, "execveat": 281,
                             "memfd_create": 279, "prlimit64": 261, "sched_setaffinity": 122,
                             "sched_setscheduler": 119, "sched_setparam": 118, "sched_setattr": 274,
                             "setpriority": 140, "ioprio_set": 30}),
}
_CLONE_THREAD = 0x00010000


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def _bpf_program(arch: int, nr: dict, pid: int, extra: tuple = ()) -> list[tuple]:
    LD, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
    ALLOW, ERRNO_EPERM, ERRNO_ENOSYS = 0x7FFF0000, 0x00050001, 0x00050026
    JGE = 0x35
    # another architecture (e.g. 32-bit syscalls) or the x32 ABI: refuse everything
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ERRNO_EPERM), (LD, 0, 0, 0),
            (JGE, 0, 1, 0x40000000), (RET, 0, 0, ERRNO_EPERM)]
    deny = ["socket", "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup",
            "pidfd_send_signal", "tkill", "fork", "vfork", "execve", "execveat", "ioprio_set", *extra]
    for name in deny:
        if name in nr:
            prog += [(JEQ, 0, 1, nr[name]), (RET, 0, 0, ERRNO_EPERM)]
    # limits, priorities and CPUs of a process: only this one (0 or its pid in args[0], or in
    # setpriority's args[1]); the zygote that forked this sandbox lives on for the next submission
    for name, offset in (("prlimit64", 16), ("sched_setaffinity", 16), ("sched_setscheduler", 16),
                         ("sched_setparam", 16), ("sched_setattr", 16), ("setpriority", 24)):
        prog += [(JEQ, 0, 5, nr[name]), (LD, 0, 0, offset), (JEQ, 2, 0, 0), (JEQ, 1, 0, pid),
                 (RET, 0, 0, ERRNO_EPERM), (RET, 0, 0, ALLOW), (LD, 0, 0, 0)]
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


def seccomp(block_memfd: bool = False) -> str:
    """Install the syscall filter (also refusing ``memfd_create`` when asked: memory that no
    cgroup counts). Returns a note on what was (not) done."""
    machine = platform.machine()
    if machine not in _SYSCALLS:
        return f"seccomp: not installed (no syscall table for {machine})"
    arch, nr = _SYSCALLS[machine]
    libc = _libc()
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"seccomp: not installed (no_new_privs: {os.strerror(ctypes.get_errno())})"
    rules = _bpf_program(arch, nr, os.getpid(), ("memfd_create",) if block_memfd else ())
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


def confine(workdir: str, read: list[str], block_memfd: bool = False, private_tmp: bool = False) -> list[str]:
    """Confine this process to ``workdir``; returns notes on each mechanism."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    writable = [workdir, "/dev/null", *(["/tmp", "/dev/shm"] if private_tmp else [])]  # bwrap's own tmpfs
    notes = [landlock(read, writable), seccomp(block_memfd)]
    return notes




# ------------------------------------------------------------------------------ the server
class _CappedText(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` replacement: keeps the first characters, drops the rest.

    It closes as a Jupyter kernel's stream does: ``close()`` works, later writes raise
    ``ValueError: I/O operation on closed file`` (the grader's own pipes are other descriptors).
    """

    def __init__(self, stream, limit: int):
        super().__init__()
        self.stream, self.left = stream, limit

    def write(self, text):
        if self.closed:
            raise ValueError("I/O operation on closed file.")
        text = str(text)
        if self.left > 0:
            self.stream.write(text[: self.left])
            self.left -= len(text)
            if self.left <= 0:
                self.stream.write("\n[output truncated by the grader]\n")
        return len(text)

    def flush(self):
        if not self.closed:
            self.stream.flush()

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self.stream.fileno()

    @property
    def encoding(self):
        return "utf-8"


class Server:
    """Runs the submission's cells and calls its functions, as the grader asks."""

    def __init__(self, scratch: Path, program: dict, replies):
        from grader.codec import Encoder
        from grader.notebook import namespace

        self.scratch, self.program, self.replies = scratch, program, replies
        self.inbox = Path(program["inbox"])
        self.encoder = Encoder(scratch / "out", prefix=int(program.get("attempt", 0)))
        self.namespace = namespace()
        self.trace = _call_trace()
        self.models = {}  # the checker's models, loaded once per sandbox (by file content)

    def reply(self, **message) -> None:
        try:
            self.replies.write((json.dumps(message) + "\n").encode())
            self.replies.flush()
        except (OSError, ValueError):  # the student's code closed the grader's pipe (os.close(4))
            os._exit(PIPES_CLOSED)

    def run_cell(self, request: dict) -> None:
        from grader.codec import encode_exception

        cell = self.program["cells"][int(request["cell"])]
        error = None
        try:
            exec(compile(cell["source"], f"<cell {cell['number']}>", "exec"), self.namespace)
        except BaseException as exc:  # the notebook goes on, as Run All with errors allowed does
            error = encode_exception(exc)
        self.reply(op="ran", id=request["id"], nonce=request.get("nonce"), error=error)

    def _argument(self, data):
        from grader.codec import decode, model_digest

        if isinstance(data, dict) and data.get("t") == "keras":
            digest = model_digest(self.inbox, data["blob"])
            if digest not in self.models:
                self.models[digest] = decode(self.inbox, data)
            return self.models[digest]
        return decode(self.inbox, data)

    def call(self, request: dict) -> None:
        import numpy as np

        from grader.codec import encode_exception, fingerprint, shared_layers, unsupported

        name = str(request["name"])
        args = [self._argument(a) for a in request.get("args", [])]
        kwargs = {str(k): self._argument(v) for k, v in dict(request.get("kwargs", {})).items()}
        fn = self.namespace.get(name)
        message = {"op": "return", "id": request["id"], "nonce": request.get("nonce")}
        if fn is None or not callable(fn):
            what = "not defined" if fn is None else f"a {type(fn).__name__}, not a function"
            message["error"] = encode_exception(NameError(
                f"{name} is {what} after running the notebook's cells in order (Restart and Run All)"))
            self.reply(**message)
            return
        inputs = [*enumerate(args), *kwargs.items()]
        before = {str(k): fingerprint(v) for k, v in inputs}
        error, value, references = None, None, request.get("references")
        try:  # traced when its exercise has references (the checker decides from the trace)
            value = self.trace.run(fn, args, kwargs) if references else fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
        if references:
            message["trace"] = self.trace.report(references)
        changed = {str(k): self.encoder.array(v) for k, v in inputs
                   if isinstance(v, np.ndarray) and fingerprint(v) != before[str(k)]}
        if changed:
            message["mutated"] = changed  # replayed on the checker's arguments
        if error is not None:
            message["error"] = encode_exception(error)
        else:
            try:
                encoded = self.encoder.encode(value)
                if encoded.get("t") == "keras":
                    encoded["shared"] = shared_layers(value, args, kwargs)
            except BaseException as exc:  # a value whose conversion fails
                encoded = unsupported(value, f"a value that could not be converted ({type(exc).__name__})")
            message["value"] = encoded
        self.reply(**message)

    def serve(self, requests) -> None:
        for line in _protocol_lines(requests):
            request = json.loads(line)
            if request.get("op") == "run":
                self.run_cell(request)
            elif request.get("op") == "call":
                self.call(request)
            elif request.get("op") == "exit":
                break


def _protocol_lines(requests):
    """The grader's requests, one line each; the process ends with :data:`PIPES_CLOSED` when the
    student's code closed the pipe they come through."""
    while True:
        try:
            line = requests.readline()
        except (OSError, ValueError):
            os._exit(PIPES_CLOSED)
        if not line:
            return
        yield line


def _call_trace():
    """What records the code a graded call runs (:mod:`grader.references`), made before any
    student code runs: the package's code objects are taken now."""
    from grader.references import CallTrace, package_code

    libraries = {os.path.join(os.path.abspath(p), "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    return CallTrace(package_code("course"), tuple(sorted(libraries)))


def _prepare_child(scratch: Path):
    """In the new sandbox process: read the program, keep the protocol pipes, redirect output."""
    os.chdir(scratch)
    program = json.loads((scratch / "program.json").read_text(encoding="utf-8"))
    (scratch / "program.json").unlink()
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    out = os.open(scratch / "output.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    sys.stdout = _CappedText(open(1, "w", buffering=1, closefd=False), MAX_PRINT_CHARS)
    sys.stderr = _CappedText(open(2, "w", buffering=1, closefd=False), MAX_PRINT_CHARS)
    os.environ["HOME"] = os.environ["TMPDIR"] = str(scratch)
    import tempfile

    tempfile.tempdir = str(scratch)
    return program, requests, replies


def _preload() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import matplotlib

    matplotlib.use("Agg")
    import grader.codec  # noqa: F401  (used after confinement)
    import grader.notebook  # noqa: F401
    import grader.references  # noqa: F401

    import course

    course.import_everything()  # `import course` is lazy; student cells must not pay the imports
    from course import data

    try:  # numpy only (fork-safe): each sandbox's load_mnist() skips reading and verifying the file
        data.preload()
    except course.DatasetError:
        pass  # not on this machine: the student's own cells say so


def child_main(scratch: str, preloaded: bool = False) -> int:
    """The sandbox process: prepare, confine, say ready, serve until the grader is done."""
    scratch = Path(scratch)
    program, requests, replies = _prepare_child(scratch)
    if not preloaded:
        _preload()
    notes = confine(str(scratch), program.get("read", []), block_memfd=not program.get("cgroup"),
                    private_tmp=bool(program.get("private_tmp")))
    print("[grader]", "; ".join(notes), file=sys.stderr)
    sys.path.insert(0, str(scratch))  # modules handed in beside the notebook, as in Jupyter
    replies.write((json.dumps({"op": "ready", "notes": notes}) + "\n").encode())
    replies.flush()
    Server(scratch, program, replies).serve(requests)
    return 0


def _mount_points() -> list[str]:
    """The mount points of this mount namespace (from ``/proc/self/mountinfo``)."""
    with open("/proc/self/mountinfo") as info:
        return [line.split()[4].replace("\\040", " ") for line in info]


#: The zygote's private tmpfs folders, reset to their first state between two sandboxes.
PRIVATE_TMP = ("/tmp", "/dev/shm")


def _state(folder: str, mounts: set[str]) -> dict[str, tuple]:
    """What a private tmpfs folder holds: path -> (mode, owner, group, extended attributes,
    content digest of a file) of every entry; the folders bound in (scratch, inbox, read-only
    folders) only as being there, as the grader, not the sandbox, owns what they hold."""
    import hashlib

    out = {}
    stack = [folder]
    while stack:
        path = stack.pop()
        if path != folder and path in mounts:  # its mode and files are the grader's (scratch, inbox)
            out[path] = ("bound in",)
            continue
        info = os.lstat(path)
        try:
            xattrs = tuple(sorted(os.listxattr(path, follow_symlinks=False)))
        except OSError:
            xattrs = ()
        digest = ""
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
        out[path] = (info.st_mode, info.st_uid, info.st_gid, xattrs, digest)
        if os.path.isdir(path) and not os.path.islink(path):
            stack += [entry.path for entry in os.scandir(path)]
    return out


def _free_blocks(folder: str) -> int:
    return os.statvfs(folder).f_bfree


class PrivateTmp:
    """The zygote's private ``/tmp`` and ``/dev/shm`` (bubblewrap's tmpfs): what they held before
    the first sandbox, restored after each one.

    A sandbox may leave anything there: files in folders it made read-only (``0555``), a full
    file system, changed modes or extended attributes of the folders bubblewrap made. The
    zygote (the same user as every sandbox, so the owner of all of it) makes what it finds
    writable, deletes everything that was not there at the start, restores the modes and
    attributes of what was, and then checks that the state and the free space are exactly the
    first ones. When they are not, :meth:`reset` says what is left and the grader replaces the
    zygote (a new bubblewrap, new tmpfs folders) before the next submission: nothing survives.
    """

    def __init__(self):
        self.mounts = set(_mount_points())
        self.first = {folder: _state(folder, self.mounts) for folder in PRIVATE_TMP}
        self.free = {folder: _free_blocks(folder) for folder in PRIVATE_TMP}

    def _restore(self, folder: str) -> None:
        from grader.isolation import remove_tree

        first = self.first[folder]
        stack = [folder]
        while stack:
            path = stack.pop()
            if (path != folder and path in self.mounts) or not os.path.isdir(path) or os.path.islink(path):
                continue
            with contextlib.suppress(OSError):
                os.chmod(path, 0o700)  # list and delete even what the sandbox made read-only
            for entry in list(os.scandir(path)):
                if entry.path in first:
                    stack.append(entry.path)
                else:
                    remove_tree(entry.path)
        for path, entry in first.items():
            if path != folder and path in self.mounts:
                continue
            mode, _, _, xattrs, _ = entry
            with contextlib.suppress(OSError):
                for name in os.listxattr(path, follow_symlinks=False):
                    if name not in xattrs:
                        os.removexattr(path, name, follow_symlinks=False)
                os.chmod(path, mode & 0o7777)

    def reset(self) -> str:
        """Restore both folders; returns ``""`` when they are as they were first, else what is left."""
        left = []
        for folder in PRIVATE_TMP:
            try:
                self._restore(folder)
                now = _state(folder, self.mounts)
            except OSError as exc:
                left.append(f"{folder}: {exc}")
                continue
            extra = sorted(set(now) - set(self.first[folder]))
            changed = sorted(p for p in now.keys() & self.first[folder].keys() if now[p] != self.first[folder][p])
            if extra or changed:
                left.append(f"{folder}: {len(extra)} entries left ({', '.join(extra[:3])}), "
                            f"{len(changed)} changed ({', '.join(changed[:3])})")
            elif _free_blocks(folder) < self.free[folder]:
                left.append(f"{folder}: {self.free[folder] - _free_blocks(folder)} blocks still in use")
        return "; ".join(left)


def _fork_sandbox(request: dict, fds: list[int], control) -> int:
    """Fork one sandbox; in the child, serve it on the two pipes ``fds`` and never return."""
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        control.close()
        os.setsid()  # its own process group: the grader stops it with killpg
        _libc().prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: ends with the zygote
        os.dup2(fds[0], 0)
        os.dup2(fds[1], 1)
        for fd in fds:
            os.close(fd)
        code = child_main(request["scratch"], preloaded=True)
    except BaseException:  # noqa: BLE001 (reported on stderr; the grader sees the exit code)
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def zygote_main() -> int:
    """``python -m grader.sandbox --zygote``: import the heavy modules once, then fork one fresh
    sandbox per request of the grader (on the AF_UNIX socket that is standard input).

    TensorFlow is imported, never run, before a fork: no op has run, so the child starts from a
    clean library (TensorFlow is not fork-safe once an op ran). The zygote runs no student code;
    it is not dumpable (no sandbox can read or write its memory), and a sandbox's seccomp filter
    keeps signals, limits and priorities away from it. Each sandbox is forked only after the
    previous one ended, into an empty private /tmp and /dev/shm. Requests (JSON, one per
    message): ``{"op": "fork", "scratch"}`` with the two pipe ends (requests, replies) attached,
    answered ``{"pid"}``; ``{"op": "wait", "pid", "timeout"}`` answered ``{"code"}`` (None: still
    running).
    """
    import socket
    import time

    control = socket.socket(fileno=os.dup(0))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    _preload()
    _libc().prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: no /proc/PID/mem, no ptrace of the zygote
    tmp = PrivateTmp() if os.environ.get("GRADER_PRIVATE_TMP") == "1" else None
    children: set[int] = set()
    control.send(json.dumps({"op": "ready"}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 1 << 16, 2)
        except OSError:
            break
        if not message:
            break
        request = json.loads(message)
        if request.get("op") == "fork" and len(fds) == 2:
            for pid in list(children):  # the grader has stopped the previous sandbox
                os.waitpid(pid, 0)
                children.discard(pid)
            left = tmp.reset() if tmp is not None else ""
            if left:  # refuse: the grader starts a new zygote, with new tmpfs folders
                for fd in fds:
                    os.close(fd)
                control.send(json.dumps({"error": f"the private /tmp or /dev/shm cannot be emptied ({left})"}).encode())
                continue
            pid = _fork_sandbox(request, fds, control)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            answer = {"pid": pid}
        elif request.get("op") == "reset":  # after a submission: empty and check its /tmp, /dev/shm now
            for pid in list(children):
                os.waitpid(pid, 0)
                children.discard(pid)
            answer = {"left": tmp.reset() if tmp is not None else ""}
        elif request.get("op") == "wait" and int(request.get("pid", 0)) in children:
            pid, code = int(request["pid"]), None
            deadline = time.monotonic() + float(request.get("timeout", 0))
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children.discard(pid)
                    code = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.01)
            answer = {"code": code}
        else:
            for fd in fds:
                os.close(fd)
            answer = {"error": f"unknown request {str(request)[:100]}"}
        control.send(json.dumps(answer).encode())
    return 0


def main() -> None:
    """``python -m grader.sandbox SCRATCH`` or ``--zygote`` (the grader starts it; not for use by hand)."""
    if sys.argv[1:] == ["--zygote"]:
        sys.exit(zygote_main())
    if len(sys.argv) != 2:
        sys.exit("usage: python -m grader.sandbox SCRATCH | --zygote")
    sys.exit(child_main(sys.argv[1]))


if __name__ == "__main__":
    main()
