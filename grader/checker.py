"""The trusted checker: replays the instructor's tests against what the sandbox recorded.

It runs only the instructor's cells (set-up, demonstrations, tests with their hidden parts).
Each graded name (``get_feature_maps``, ...) is bound to a *stub* that returns, call by call,
the value the student's function returned in the sandbox, rebuilt from plain data by
:mod:`grader.codec` (or raises the exception it raised). No student code ever runs here, so
patched libraries, odd ``__eq__`` methods or tricks with the sandbox's memory cannot change a
verdict: a check passes only when the values the student's code produced pass it.

``python -m grader.checker`` serves requests (JSON lines) so that one checker process can grade
many submissions of one assignment: the set-up before the first exercise runs once.
"""

from __future__ import annotations

import collections
import json
import os
import random
import re
import sys
import traceback
from pathlib import Path

from grader.codec import SubmissionError, Unsupported, decode, rebuild_exception
from grader.notebook import namespace, read_source

_HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)


def _visible_lines(source: str) -> set[int]:
    """Line numbers (1-based) of a test cell that students see (outside hidden regions)."""
    hidden = set()
    for match in _HIDDEN.finditer(source):
        first = source.count("\n", 0, match.start()) + 1
        hidden.update(range(first, first + match.group(0).count("\n") + 1))
    return set(range(1, source.count("\n") + 2)) - hidden


def describe_failure(exc: BaseException, source: str, filename: str) -> str:
    """One readable line for a failed test: the check's own message, or the failing line."""
    message = str(exc).strip()
    if isinstance(exc, (SubmissionError, Unsupported)):
        return message
    line = None
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename:
            line = frame.lineno
            break
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    called = getattr(exc, "grader_call", None)
    if isinstance(exc, NotImplementedError) and called:
        return f"{called} is not done yet (it raises NotImplementedError)"
    if called:
        text = f"{called} raised {text}"
    elif isinstance(exc, AssertionError) and message:
        text = message
    if line is not None and line in _visible_lines(source) and (not message or not isinstance(exc, AssertionError)):
        code = source.splitlines()[line - 1].strip()
        text += f" (in `{code[:120]}`)"
    elif line is not None and not message:
        text += " (in a hidden test)"
    return text


def _fresh(value):
    """A per-submission copy of set-up state that tests may change: arrays and random generators."""
    import copy

    import numpy as np

    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (np.random.Generator, np.random.RandomState, random.Random)):
        return copy.deepcopy(value)
    return value


class Checker:
    """Replays one assignment's tests; :meth:`check` grades one submission's records."""

    def __init__(self, source: str | os.PathLike):
        self.assignment = read_source(source)
        self.graded = self.assignment.graded_names
        self.replay = None
        self.base = namespace()
        for name in self.graded:
            self.base[name] = self._stub(name)
        from grader.notebook import Submission, program

        self.steps = program(self.assignment, Submission())
        first = next(i for i, s in enumerate(self.steps) if s["kind"] == "student")
        self.setup, self.rest = self.steps[:first], self.steps[first + 1:]
        self.setup_errors = []
        for step in self.setup:
            try:
                exec(compile(step["source"], f"<{step['key']}>", "exec"), self.base)
            except Exception as exc:
                self.setup_errors.append(f"set-up cell {step['key']} failed: {type(exc).__name__}: {exc}")
        import numpy as np

        self.random_state = (random.getstate(), np.random.get_state())

    def _stub(self, name: str):
        def call(*args, **kwargs):
            return self.replay.next(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def check(self, records: dict, aborts: dict, blob_dir: str, skip: list | None = None) -> dict:
        """Grade one submission.

        Args:
            records: step key -> the sandbox's events for it (``call`` and ``cellerror``).
            aborts: step key -> why the sandbox stopped during it (timeout, memory, exit).
            blob_dir: where the sandbox wrote arrays and models.
            skip: keys of context cells the sandbox did not run (not needed by any test).

        Returns:
            ``{"tests": {grade_id: {"passed", "points", "max_points", "message"}}, "notes": [...]}``.
        """
        import numpy as np

        random.setstate(self.random_state[0])
        np.random.set_state(self.random_state[1])
        self.replay = _Replay(records, aborts, Path(blob_dir))
        # fresh copies of the set-up's arrays: a replayed in-place change must not leak into
        # the next submission
        namespace = {k: _fresh(v) for k, v in self.base.items()}
        tests, notes, context_failure = {}, list(self.setup_errors), ""
        skip = set(skip or [])
        for step in self.rest:
            key, source = step["key"], step["source"]
            if step["kind"] == "context" and key in skip:
                continue
            self.replay.key = key
            filename = f"<{key}>"
            try:
                exec(compile(source, filename, "exec"), namespace)
                error = None
            except Exception as exc:
                error = exc
            if step["kind"] == "context":
                if error is not None:
                    context_failure = describe_failure(error, source, filename)
                continue
            cell = next(c for c in self.assignment.tests if c.grade_id == key)
            if error is None:
                tests[key] = {"passed": True, "points": cell.points, "max_points": cell.points, "message": ""}
                continue
            message = describe_failure(error, source, filename)
            if isinstance(error, NameError) and context_failure:
                message += f" (an earlier cell failed: {context_failure})"
            tests[key] = {"passed": False, "points": 0.0, "max_points": cell.points, "message": message[:1000]}
        return {"tests": tests, "notes": notes}


class _Replay:
    """The recorded calls of one submission, consumed in order per step."""

    def __init__(self, records: dict, aborts: dict, blob_dir: Path):
        self.calls = {k: collections.deque(e for e in v if e.get("event") == "call") for k, v in records.items()}
        self.cell_errors = {k: e["error"] for k, v in records.items() for e in v if e.get("event") == "cellerror"}
        self.aborts, self.blob_dir, self.key = aborts, blob_dir, ""

    def next(self, name: str, args: tuple, kwargs: dict):
        from grader.codec import fingerprint

        queue = self.calls.get(self.key)
        if not queue:
            if self.key in self.aborts:
                raise SubmissionError(str(self.aborts[self.key]))
            error = self.cell_errors.get(self.key)
            if error:
                raise SubmissionError(
                    f"this check stopped early in the sandbox ({error.get('type')}: {error.get('message', '')[:300]})"
                )
            raise SubmissionError(f"{name} was not run in the sandbox for this check")
        event = queue.popleft()
        if event.get("name") != name:
            raise SubmissionError(f"the sandbox ran {event.get('name')!r} where the checks call {name!r}")
        inputs = dict([(str(k), v) for k, v in [*enumerate(args), *kwargs.items()]])
        mine = {k: fingerprint(v) for k, v in inputs.items()}
        if "args" in event and mine != event["args"]:
            raise SubmissionError(
                f"{name} got other inputs in the sandbox than in the checks: does an earlier function "
                "change shared data in place (its inputs, a global array or the random generator `rng`)?"
            )
        for where, data in dict(event.get("mutated") or {}).items():
            target = inputs.get(where)
            new = decode(self.blob_dir, data)
            if target is not None and getattr(target, "shape", None) == new.shape and target.flags.writeable:
                target[...] = new  # the student's function changed this input in place
        if "error" in event:
            exc = rebuild_exception(event["error"])
            exc.grader_call = name
            raise exc
        return decode(self.blob_dir, event["value"], (args, kwargs))


def serve() -> int:
    """JSON-lines server: ``{"source": path}`` once, then ``{"records", "aborts", "blob_dir"}``."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of the tests go to the log, not into the protocol
    sys.stdout = sys.stderr
    checker = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if "source" in request:
                checker = Checker(request["source"])
                reply = {"ok": True, "notes": checker.setup_errors}
            else:
                reply = {"ok": True, **checker.check(request["records"], request["aborts"], request["blob_dir"],
                                                     request.get("skip"))}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        print(json.dumps(reply), file=replies)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(serve())
