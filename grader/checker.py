"""The trusted checker: runs the instructor's tests and calls the student's functions in the sandbox.

It runs only the instructor's cells (set-up, the demonstration cells the tests need, the tests
with their hidden parts); no student code ever runs here. Each graded name
(``get_feature_maps``, ...) is bound to a *stub*: a call encodes its arguments as plain data
(:mod:`grader.codec`, files in the sandbox's read-only inbox), asks the grader to call the
student's function in the sandbox, and rebuilds the returned value from plain data, strictly
(or raises the exception the student's function raised). So the hidden tests never enter the
sandbox, and patched libraries, odd ``__eq__`` methods or tricks with the sandbox's memory
cannot change a verdict: a check passes only when the values the student's code returned pass it.

``python -m grader.checker`` serves the grader over JSON lines (see :func:`serve`); one
checker grades many submissions of one assignment, running the set-up once.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

from grader.codec import Encoder, SubmissionError, Unsupported, decode, rebuild_exception
from grader.notebook import HIDDEN_TESTS, namespace, read_source
from grader.references import reference_fingerprints, verdict


def _visible_lines(source: str) -> set[int]:
    """Line numbers (1-based) of a test cell that students see (outside hidden regions)."""
    hidden = set()
    for match in HIDDEN_TESTS.finditer(source):
        start = match.start() + match.group(0).startswith("\n")
        first = source.count("\n", 0, start) + 1
        hidden.update(range(first, first + source.count("\n", start, match.end()) + 1))
    return set(range(1, source.count("\n") + 2)) - hidden


def failing_line(exc: BaseException, filename: str) -> int | None:
    """The line of ``filename`` (a test cell's code) where ``exc`` was raised, if it was raised there."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename == filename:
            return frame.lineno
    return None


def describe_failure(exc: BaseException, source: str, filename: str) -> str:
    """One readable line for a failed test: the check's own message, or the failing line."""
    message = str(exc).strip()
    if isinstance(exc, (SubmissionError, Unsupported)):
        return message
    line = failing_line(exc, filename)
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


def _names(code: str) -> tuple[set, set]:
    """(names read, names written) anywhere in a cell: a safe over-approximation."""
    import ast

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set(), set()
    reads, writes = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (writes if isinstance(node.ctx, (ast.Store, ast.Del)) else reads).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            writes.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            writes |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return reads, writes


class Checker:
    """One assignment's tests; :meth:`begin`, then :meth:`run_test` per test, grade one submission.

    Args:
        source: The instructor's source notebook.
        relay: ``relay(request) -> reply``: asks the grader to call a student function in the
            sandbox (``request`` is ``{"name", "args", "kwargs"}``; the reply is the sandbox's
            ``return`` message, or ``{"failure": reason}`` when the sandbox could not answer).
    """

    def __init__(self, source: str | os.PathLike, relay):
        from grader.notebook import to_python

        self.assignment = read_source(source)
        self.relay = relay
        self.graded = self.assignment.graded_names
        self.base = namespace()
        for name in self.graded:
            self.base[name] = self._stub(name)
        steps = []
        for cell in self.assignment.cells:
            if cell.kind in ("context", "test", "solution", "manual"):
                try:
                    code = to_python(cell.source) if cell.kind in ("context", "test") else ""
                except Exception:
                    code = cell.source
                steps.append((cell.kind, cell.grade_id, code))
        first = next(i for i, s in enumerate(steps) if s[0] in ("solution", "manual"))
        self.setup_errors = []
        for kind, _, code in steps[:first]:
            if kind == "context":
                try:
                    exec(compile(code, "<set-up>", "exec"), self.base)
                except Exception as exc:
                    self.setup_errors.append(f"a set-up cell failed: {type(exc).__name__}: {exc}")
        # the demonstration cells after the first exercise that a later test needs, before that test
        self.before_test: dict[str, list[str]] = {}
        needed, pending = set(), []
        for kind, gid, code in reversed(steps[first:]):
            reads, writes = _names(code)
            if kind == "test":
                needed |= reads
                self.before_test[gid] = pending = []
            elif kind == "context" and writes & needed:
                pending.insert(0, code)
                needed |= reads
        import numpy as np

        self.random_state = (random.getstate(), np.random.get_state())
        self.cache = Path(tempfile.mkdtemp(prefix="models-", dir="."))  # the grader removes this folder
        self.models: dict[int, tuple] = {}
        self.namespace, self.encoder, self.outbox, self.failure, self.review = None, None, None, "", []
        # graded name -> {fingerprint: reference}: of the functions this process imported itself
        self.references = {name: reference_fingerprints(refs) for name, refs in self.assignment.references.items()}

    def close(self) -> None:
        shutil.rmtree(self.cache, ignore_errors=True)

    def begin(self, inbox: str, outbox: str) -> None:
        """Start grading one submission: fresh state, arguments go to ``inbox``, values come from ``outbox``."""
        import numpy as np

        random.setstate(self.random_state[0])
        np.random.set_state(self.random_state[1])
        self.namespace = {k: _fresh(v) for k, v in self.base.items()}
        self.encoder = Encoder(inbox, models=self.models, model_cache=self.cache)
        self.outbox = Path(outbox)

    def _stub(self, name: str):
        def call(*args, **kwargs):
            return self._call(name, args, kwargs)

        call.__name__ = call.__qualname__ = name
        return call

    def _call(self, name: str, args: tuple, kwargs: dict):
        encoded = [self.encoder.encode(a) for a in args]
        named = {k: self.encoder.encode(v) for k, v in kwargs.items()}
        for value in [*encoded, *named.values()]:
            if value.get("t") == "unsupported":
                raise RuntimeError(f"the checks pass {name} an argument the grader cannot send to the sandbox "
                                   f"({value.get('type')}): the source notebook needs a plain-data argument")
        references = self.references.get(name, {})
        reply = self.relay({"name": name, "args": encoded, "kwargs": named, "references": sorted(references)})
        if reply.get("failure"):
            self.failure = self.failure or str(reply["failure"])[:500]
            raise SubmissionError(str(reply["failure"])[:500])
        # (a reply without a trace is an error the sandbox raised before calling: nothing ran)
        traced = "trace" in reply or "error" not in reply
        message, review = verdict(name, reply.get("trace"), references) if traced else ("", "")
        if review and review not in self.review:
            self.review.append(review)
        if message:
            self.failure = self.failure or message
            raise SubmissionError(message)
        inputs = dict([(str(k), v) for k, v in [*enumerate(args), *kwargs.items()]])
        for where, data in dict(reply.get("mutated") or {}).items():
            target = inputs.get(str(where))
            new = decode(self.outbox, data)
            if getattr(target, "shape", None) == getattr(new, "shape", ()) and target.flags.writeable:
                target[...] = new  # the student's function changed this input in place
        if "error" in reply:
            exc = rebuild_exception(dict(reply["error"]))
            exc.grader_call = name
            raise exc
        if "value" not in reply:
            raise SubmissionError(f"the sandbox gave no value for {name}")
        return decode(self.outbox, reply["value"], (args, kwargs))

    def run_test(self, grade_id: str) -> dict:
        """Run one test (after the demonstration cells it needs); its verdict."""
        cell = next(c for c in self.assignment.tests if c.grade_id == grade_id)
        context_failure = ""
        for code in self.before_test.get(grade_id, []):
            try:
                exec(compile(code, "<context>", "exec"), self.namespace)
            except Exception as exc:
                context_failure = describe_failure(exc, code, "<context>")
        from grader.notebook import to_python

        source = to_python(cell.source)
        filename = f"<{grade_id}>"
        self.failure, self.review = "", []
        try:
            exec(compile(source, filename, "exec"), self.namespace)
            error = None
        except Exception as exc:
            error = exc
        review = "; ".join(self.review)
        if error is None and not self.failure:
            return {"passed": True, "points": cell.points, "max_points": cell.points, "message": "", "review": review}
        # a sandbox failure counts even when the test's own code caught the exception
        message = self.failure if self.failure and not isinstance(error, SubmissionError) else describe_failure(error, source, filename)
        if isinstance(error, NameError) and context_failure:
            message += f" (an earlier cell failed: {context_failure})"
        line = failing_line(error, filename) if error is not None else None
        hidden = line is not None and line not in _visible_lines(source)  # exports keep such messages back
        return {"passed": False, "points": 0.0, "max_points": cell.points, "message": message[:1000], "hidden": hidden,
                "review": review}


def serve() -> int:
    """JSON lines over stdin/stdout.

    Requests: ``{"op": "source", "path"}`` once; then per submission ``{"op": "begin", "inbox",
    "outbox"}`` and ``{"op": "test", "key"}`` for each test. While a test runs the checker
    writes ``{"op": "call", ...}`` and reads the grader's ``{"op": "reply", ...}``; it ends
    each request with ``{"op": "done", "ok": true, ...}`` (or ``"ok": false`` and the error).
    """
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # prints of the tests go to the log, not into the protocol
    sys.stdout = sys.stderr
    requests = sys.stdin

    def relay(request: dict) -> dict:
        print(json.dumps({"op": "call", **request}), file=replies)
        reply = json.loads(requests.readline())
        return reply.get("reply") or {}

    checker = None
    crash_after = int(os.environ.get("GRADER_TEST_CHECKER_CRASH_AFTER") or 0)  # fault injection for tests
    tests_run = 0
    for line in requests:
        request = json.loads(line)
        try:
            op = request["op"]
            if op == "test" and crash_after:
                tests_run += 1
                if tests_run > crash_after:
                    os._exit(70)
            if op == "source":
                checker = Checker(request["path"], relay)
                reply = {"notes": checker.setup_errors}
            elif op == "begin":
                if checker.setup_errors:  # the grader's environment, not the student: never a zero
                    raise RuntimeError("; ".join(checker.setup_errors))
                checker.begin(request["inbox"], request["outbox"])
                reply = {}
            elif op == "test":
                reply = {"verdict": checker.run_test(request["key"])}
            else:
                raise ValueError(f"unknown request {op!r}")
            reply = {"op": "done", "ok": True, **reply}
        except Exception as exc:
            reply = {"op": "done", "ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()[-3000:]}
        print(json.dumps(reply), file=replies)
    if checker is not None:
        checker.close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(serve())
