"""The walls around a sandbox: bubblewrap namespaces and a memory cgroup.

A sandbox process is started as ``bwrap ... python -m grader.sandbox SCRATCH`` (Debian's
``bubblewrap``): its own mount namespace that shows only an allow-list of folders (read-only)
and its scratch folder (read-write), whatever the grader's current directory; its own PID,
IPC, UTS, network and (where the kernel allows) user and cgroup namespaces; no capabilities,
even when the grader runs as root; a new session (no terminal). Inside, the sandbox adds
Landlock and seccomp as a second wall (:mod:`grader.sandbox`).

Memory is counted by a child *memory cgroup* per sandbox where the machine offers a writable
one (cgroup v1 ``memory`` or cgroup v2 with the memory controller): it counts everything the
sandbox holds, memfds, shared memory, tmpfs files and dirtied page cache included. Without one,
the parent watches resident memory and the sandbox blocks ``memfd_create``; its tmpfs folders
have a fixed size.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

#: Size of the sandbox's private /tmp and /dev/shm (both count towards the memory cgroup).
TMPFS_BYTES = 256 * 2**20


def remove_tree(path: str) -> bool:
    """Delete ``path`` and everything under it, also folders a sandbox made read-only or
    unreadable (``0555``, ``0000``; their owner may open them again), without following links.

    Returns:
        Whether ``path`` is gone.
    """
    if os.path.isdir(path) and not os.path.islink(path):
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        for root, dirs, _ in os.walk(path):
            for name in dirs:
                with contextlib.suppress(OSError):
                    if not os.path.islink(os.path.join(root, name)):
                        os.chmod(os.path.join(root, name), 0o700)
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)
    return not os.path.lexists(path)


class IsolationError(Exception):
    """The machine cannot isolate sandboxes as asked (e.g. no bubblewrap, no user namespaces)."""


def bwrap_path() -> str | None:
    """The ``bwrap`` executable, or None."""
    return shutil.which("bwrap")


_PROBE: dict[str, str] = {}


def bwrap_works() -> str:
    """Check once that bubblewrap can create its namespaces here.

    Returns:
        ``""`` when it works, else a sentence saying why not and what to do.
    """
    if "result" in _PROBE:
        return _PROBE["result"]
    exe = bwrap_path()
    if exe is None:
        result = ("bubblewrap (bwrap) is not installed: install it (Debian/Ubuntu: apt-get install bubblewrap) "
                  "to grade submissions in isolated namespaces")
    else:
        proc = subprocess.run([exe, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "--new-session",
                               "--cap-drop", "ALL", "--proc", "/proc", "--dev", "/dev", "true"],
                              capture_output=True, text=True, timeout=30)
        result = "" if proc.returncode == 0 else (
            f"bubblewrap cannot create namespaces on this machine ({proc.stderr.strip()[:200]}): enable "
            "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1) or run the grader as root")
    _PROBE["result"] = result
    return result


def bwrap_argv(command: list[str], scratch: Path, inbox: Path, read_only: list[str], env: dict) -> list[str]:
    """The command line that runs ``command`` (the sandbox's Python) in fresh namespaces.

    Args:
        command: What to run inside.
        scratch: The sandbox's only writable folder (its current directory and home).
        inbox: Read-only folder where the trusted side puts call arguments.
        read_only: Folders and files the sandbox may read (bound read-only at the same paths).
        env: The sandbox's whole environment (nothing else of the grader's is passed).
    """
    argv = [bwrap_path() or "bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", "sandbox", "--clearenv"]
    for key, value in sorted(env.items()):
        argv += ["--setenv", key, value]
    # mounts in order: the private /tmp first, so that allowed folders under /tmp stay visible
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--size", str(TMPFS_BYTES), "--tmpfs", "/tmp",
             "--size", str(TMPFS_BYTES), "--tmpfs", "/dev/shm"]
    for path in read_only:
        argv += ["--ro-bind-try", path, path]
    argv += ["--bind", str(scratch), str(scratch),
             "--ro-bind", str(inbox), str(inbox),
             "--chdir", str(scratch), *command]
    return argv


def _own_memory_cgroup() -> tuple[Path, str] | None:
    """(folder of this process's memory cgroup, "v1" or "v2"), if one is mounted."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            if (folder / "memory.limit_in_bytes").exists():
                return folder, "v1"
    for line in lines:
        if line.startswith("0::"):
            folder = Path("/sys/fs/cgroup") / line[3:].lstrip("/")
            if (folder / "cgroup.controllers").exists() and "memory" in (folder / "cgroup.subtree_control").read_text():
                return folder, "v2"
    return None


def _remove_stale(parent: Path, age: float = 600.0) -> None:
    """Delete empty sandbox groups left by a grader that was killed (a group still in use is not empty)."""
    for folder in parent.glob("grader-*"):
        try:
            if time.time() - folder.stat().st_mtime > age and not (folder / "cgroup.procs").read_text().strip():
                folder.rmdir()
        except OSError:
            pass


class MemoryCgroup:
    """A child memory cgroup holding one sandbox; :meth:`create` returns None where none can be made."""

    def __init__(self, folder: Path, version: str):
        self.folder, self.version = folder, version

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> "MemoryCgroup | None":
        own = _own_memory_cgroup()
        if own is None:
            return None
        parent, version = own
        _remove_stale(parent)
        folder = parent / name
        try:
            folder.mkdir()
            group = cls(folder, version)
            if version == "v1":
                (folder / "memory.limit_in_bytes").write_text(str(limit_bytes))
                try:  # no swap either, where swap accounting exists
                    (folder / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
                except OSError:
                    pass
            else:
                (folder / "memory.max").write_text(str(limit_bytes))
                (folder / "memory.swap.max").write_text("0")
            return group
        except OSError:
            try:
                folder.rmdir()
            except OSError:
                pass
            return None

    def add(self, pid: int) -> None:
        """Move a process (and so its future children) into the group."""
        (self.folder / "cgroup.procs").write_text(str(pid))

    def over_limit(self) -> bool:
        """Whether the kernel had to refuse memory to the group (its limit was reached)."""
        try:
            if self.version == "v1":  # kernels differ in which of these counters they keep
                control = (self.folder / "memory.oom_control").read_text().split()
                kills = int(dict(zip(control[::2], control[1::2])).get("oom_kill", 0))
                peak = int((self.folder / "memory.max_usage_in_bytes").read_text())
                limit = int((self.folder / "memory.limit_in_bytes").read_text())
                return kills > 0 or int((self.folder / "memory.failcnt").read_text()) > 0 or peak >= limit
            events = (self.folder / "memory.events").read_text().split()
            values = dict(zip(events[::2], events[1::2]))
            return int(values.get("oom_kill", 0)) > 0 or int(values.get("max", 0)) > 0
        except (OSError, ValueError):
            return False

    def remove(self) -> None:
        """Kill what is left in the group and delete it."""
        for _ in range(50):
            try:
                pids = [int(p) for p in (self.folder / "cgroup.procs").read_text().split()]
            except OSError:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            try:
                self.folder.rmdir()
                return
            except OSError:
                time.sleep(0.05)
