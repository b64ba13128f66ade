"""What the command lines print around their work: TensorFlow's start-up noise taken out of
stderr, a progress line per stage, output folders checked before any work. No TensorFlow here.

TensorFlow 2.21 logs its start-up lines through absl before absl is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not reach them: each process prints the absl preamble and the
oneDNN line (twice: once for TensorFlow, once for its bundled XLA), and ``tf.data`` adds
``E0000 ... use_unbounded_threadpool`` lines while training. None of them is an error. The
only way to drop them is at the file descriptor, so :func:`quiet_tensorflow` puts a filter
between file descriptor 2 and the terminal for the rest of the process.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from course.errors import CourseError

#: Lines of TensorFlow's that say nothing to a learner (each checked against TensorFlow 2.21).
NOISE = re.compile(
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "  # absl INFO lines: oneDNN, CPU features
    rb"|E0000 [^\n]*NodeDef mentions attribute use_unbounded_threadpool"
)
# a partial line that may still become noise is held until its end
_NOISE_STARTS = (b"WARNING: All log messages", b"I", b"E0000 ")

_filter: threading.Thread | None = None


def quiet_tensorflow() -> None:
    """Drop TensorFlow's start-up lines from this process's stderr from now on.

    Call it before TensorFlow is imported. Everything else written to stderr (Python's and
    C++'s, warnings and errors included) still reaches it, in order. Calling it again does
    nothing.
    """
    global _filter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if _filter is not None:
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    _filter = threading.Thread(target=_pump, args=(read_end, terminal), name="stderr-filter", daemon=True)
    _filter.start()
    atexit.register(_stop, terminal)


def _pump(read_end: int, terminal: int) -> None:
    pending = b""
    while chunk := os.read(read_end, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not NOISE.match(line))
        if pending and not any(start.startswith(pending[: len(start)]) for start in _NOISE_STARTS):
            kept, pending = kept + pending, b""  # a prompt or a progress bar: show it now
        if kept:
            os.write(terminal, kept)
    if pending and not NOISE.match(pending):
        os.write(terminal, pending)
    os.close(read_end)


def _stop(terminal: int) -> None:
    """At exit: give stderr back to the terminal, and let the filter write what it holds."""
    sys.stderr.flush()
    os.dup2(terminal, 2)  # closes the pipe's last write end here, so the filter sees its end
    if _filter is not None:
        _filter.join(timeout=5)


class Progress:
    """One line on stderr per stage of a long command, with the time since it started::

        [  0.0 s] loading MNIST
        [  1.9 s] loading the cached model
    """

    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream
        self.start = time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:5.1f} s] {stage}", file=self.stream or sys.stderr, flush=True)


def writable_folder(path: Path, option: str = "--out") -> Path:
    """Make sure, before any work, that ``path`` is a folder this process can write into.

    The folder is created when missing (the command would create it anyway), and a file is
    created and removed in it: the only test that holds for every user, root included.

    Raises:
        CourseError: ``path`` is a file, or it cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CourseError(f"{option} {path} is a file, not a folder: give a folder to write into "
                          "(it is created when missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CourseError(f"{option} {path} cannot be written ({exc.strerror or exc}): choose a folder "
                          "you may write into.") from None
    return path
