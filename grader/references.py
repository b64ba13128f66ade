"""Is an exercise's own reference in the answer? Decided by the trusted checker, from evidence.

Each exercise names the package functions that solve it (``get_feature_maps`` ->
``course.extract_feature_maps``). The visible test cells refuse them inside the student's
kernel (:func:`course.checks.reference_off_limits`), which keeps honest students honest; the
grader does not rely on anything that runs in the student's process to decide:

* **What ran** (:class:`CallTrace`, in the sandbox): while a graded function runs, a profile
  hook records every code object that starts. The package's own code objects are known by
  identity from before any student code ran (a frozen set); for each of them the trace says
  whether the student's code (not the package, nor a library it calls back from) called it.
  Every other code object is reported by its *fingerprint* (:func:`fingerprint`: bytecode,
  names and constants; not the names of the function, its variables, its file or its lines).
* **The decision** (:func:`verdict`, in the checker): the checker fingerprints the reference
  functions it imported itself. The package's code called by the student's code is a use of
  the reference; code with a reference's fingerprint that is *not* the package's is a copy
  (``exec`` of the package's source, ``importlib.reload``, a pasted body): the check fails
  and the submission is marked *needs review* with the reason. A trace that is missing or
  was switched off is marked the same way.
* **What the code says** (:func:`scan`, in the grader, on the submission's cells): uses of
  the tools that reach into the sandbox's own machinery (``gc``, ``ctypes``, frames, profile
  and trace hooks, ``__code__``, raw file descriptors, ``exec``) mark the submission *needs
  review*, with the cell and the name, whatever they did at run time.

Together these catch rebinding ``course.checks.reference_off_limits``, clearing the grader's
lists through ``gc``, re-executing or reloading the package's modules and copying a function's
``__code__``; code that forges the trace itself (writing raw memory) remains possible in the
student's process, and is what the scan is for: it cannot be written without such tools.
"""

from __future__ import annotations

import ast
import hashlib
import sys
import threading
import types

#: Marks of code that reaches into the sandbox's own machinery: attribute or module name -> why.
_TAMPER_NAMES = {
    "gc": "the garbage collector's view of every object",
    "ctypes": "raw memory and C functions",
    "_ctypes": "raw memory and C functions",
    "setprofile": "profile hooks",
    "settrace": "trace hooks",
    "_getframe": "the interpreter's frames",
    "_current_frames": "the interpreter's frames",
    "f_back": "the interpreter's frames",
    "f_globals": "the interpreter's frames",
    "f_locals": "the interpreter's frames",
    "gi_frame": "the interpreter's frames",
    "cr_frame": "the interpreter's frames",
    "tb_frame": "the interpreter's frames",
    "currentframe": "the interpreter's frames",
    "getouterframes": "the interpreter's frames",
    "getinnerframes": "the interpreter's frames",
    "__code__": "a function's code object",
    "__globals__": "a function's global namespace",
    "__closure__": "a function's closure cells",
    "reload": "re-executing modules",
    "getsource": "the package's source",
    "dup2": "raw file descriptors",
    "fdopen": "raw file descriptors",
    "closerange": "raw file descriptors",
    "write": None,  # only os.write (see _is_tamper)
    "checks": None,  # only course.checks
}
_TAMPER_BUILTINS = {"exec", "eval", "compile", "__import__"}
#: Names whose appearance as a string means ``getattr(sys, "setprofile")`` and the like.
_TAMPER_STRINGS = {"gc", "ctypes", "setprofile", "settrace", "_getframe", "_current_frames", "f_back", "f_globals",
                   "f_locals", "gi_frame", "__code__", "__globals__", "__closure__", "dup2", "fdopen", "closerange"}


def fingerprint(code: types.CodeType) -> str:
    """A code object's fingerprint: its bytecode, the names it uses and its constants (nested
    code by fingerprint), not its name, variable names, file, lines or docstring. A copy of a
    function (its source executed again, a reloaded module, a pasted body) has the same one."""
    h = hashlib.sha256()
    h.update(code.co_code)
    h.update(repr((code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_names)).encode())
    consts = code.co_consts[1:] if code.co_consts and isinstance(code.co_consts[0], str) else code.co_consts
    for const in consts:
        if isinstance(const, types.CodeType):
            h.update(b"code:" + fingerprint(const).encode())
        else:
            h.update(repr((type(const).__name__, const)).encode()[:10_000])
    return h.hexdigest()[:32]


def reference_fingerprints(names: list[str]) -> dict[str, str]:
    """``fingerprint -> name`` of the package functions ``names`` (``course.X``), as imported here."""
    import course

    out = {}
    for name in names:
        function = getattr(course, name, None)
        function = getattr(function, "__wrapped__", function)
        if isinstance(function, types.FunctionType):
            out[fingerprint(function.__code__)] = name
    return out


def package_code(package: str = "course") -> frozenset[int]:
    """The ids of every code object of the package's functions and classes (nested ones
    included). By identity: code objects compare equal by value, so a re-executed copy of the
    package's source would be "in" a set of the code objects themselves. They stay alive (the
    modules hold them), so their ids are not reused."""
    found: dict[int, types.CodeType] = {}

    def add(code):
        if id(code) not in found:
            found[id(code)] = code
            for const in code.co_consts:
                if isinstance(const, types.CodeType):
                    add(const)

    for name, module in list(sys.modules.items()):
        if module is None or not (name == package or name.startswith(package + ".")):
            continue
        for value in list(vars(module).values()):
            members = vars(value).values() if isinstance(value, type) else [value]
            for member in members:
                member = getattr(member, "__func__", member)
                code = getattr(member, "__code__", None)
                if isinstance(code, types.CodeType):
                    add(code)
    return frozenset(found)


class CallTrace:
    """Records what one graded call runs (see the module's docstring); in the sandbox.

    Everything is kept by code-object identity (``id``): code objects compare equal by value.

    Args:
        course_code: :func:`package_code` of the course, taken before any student code ran.
        library_dirs: Folders of the installed libraries: their frames (a library calling back)
            are skipped when looking for who called the package's code.
    """

    def __init__(self, course_code: frozenset, library_dirs: tuple[str, ...]):
        self.course_code, self.library_dirs = course_code, tuple(library_dirs)
        self.started: dict[int, types.CodeType] = {}  # id -> code: kept alive until the report
        self.from_student: dict[int, types.CodeType] = {}
        self.intact = False

    def _caller_is_student(self, frame) -> bool:
        caller = frame.f_back
        while caller is not None and caller.f_code is not _RUN_CODE:
            code = caller.f_code
            if id(code) in self.course_code:
                return False
            if not code.co_filename.startswith(self.library_dirs):
                return True
            caller = caller.f_back
        return True  # called straight by the grader: the graded name is bound to the package's function

    def _profile(self, frame, event, arg):
        if event == "call":
            code = frame.f_code
            key = id(code)
            self.started[key] = code
            if key in self.course_code and key not in self.from_student and self._caller_is_student(frame):
                self.from_student[key] = code

    def run(self, function, args, kwargs):
        """``function(*args, **kwargs)`` with the hook on, in this thread and the threads it starts."""
        self.started, self.from_student, self.intact = {}, {}, False
        previous = sys.getprofile()
        threading.setprofile(self._profile)
        sys.setprofile(self._profile)
        try:
            return function(*args, **kwargs)
        finally:
            self.intact = sys.getprofile() == self._profile
            sys.setprofile(previous)
            threading.setprofile(None)

    def report(self, wanted) -> dict:
        """Plain data for the checker: which of the fingerprints ``wanted`` (sent with the call)
        ran as the package's own code called by the student's code, and which as other code."""
        try:
            wanted = {str(w) for w in wanted or []}
            package = {_fingerprint(c) for c in self.from_student.values()} & wanted
            other = {_fingerprint(c) for k, c in self.started.items() if k not in self.course_code} & wanted
            report = {"intact": self.intact is True, "package": sorted(package), "other": sorted(other)}
        except Exception:  # noqa: BLE001 (the student's code took the trace apart: nothing to report)
            report = {"intact": False, "package": [], "other": []}
        self.started, self.from_student = {}, {}
        return report


_RUN_CODE = CallTrace.run.__code__
_FINGERPRINTS: dict[int, tuple[types.CodeType, str]] = {}  # id -> (code kept alive, fingerprint)


def _fingerprint(code: types.CodeType) -> str:
    known = _FINGERPRINTS.get(id(code))
    if known is None or known[0] is not code:
        known = _FINGERPRINTS[id(code)] = (code, fingerprint(code))
    return known[1]


def verdict(exercise: str, trace, references: dict[str, str]) -> tuple[str, str]:
    """``(why the check fails, why it needs review)`` from a call's trace; ``("", "")`` when clean.

    Args:
        exercise: The graded function's name (``get_feature_maps``), for the student's sentence.
        trace: The sandbox's :meth:`CallTrace.report` (anything: it is not trusted to be well formed).
        references: :func:`reference_fingerprints` of the exercise's references (the checker's own).
    """
    if not references:
        return "", ""
    asks = f"this exercise asks you to write `{exercise}` yourself"
    if not isinstance(trace, dict) or trace.get("intact") is not True:
        return (f"the grader could not see what `{exercise}` ran (its record of the call was switched off or "
                "removed), so this check cannot pass; your instructor will look at it",
                "the grader's record of what the function ran is missing or was switched off")
    for fp in trace.get("other") or []:  # a copy first: it also calls the package's own functions
        if fp in references:
            name = references[fp]
            return (f"{asks}; it runs a copy of `course.{name}`'s code (the package's source executed again, a "
                    "reloaded module or a pasted function), so it is not allowed here; your instructor will look "
                    "at it", f"it runs a copy of `course.{name}`'s code (the package's source executed again, "
                    "a reloaded module or a pasted function)")
    for fp in trace.get("package") or []:
        if fp in references:
            return f"{asks}; `course.{references[fp]}` does it for you, so it is not allowed here", ""
    return "", ""


_TAMPER_MODULES = ("gc", "ctypes", "_ctypes", "course.checks")


def _is_tamper(node: ast.AST) -> str:
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in _TAMPER_MODULES or alias.name == "course.checks":
                return f"import of {alias.name}"
        return ""
    if isinstance(node, ast.ImportFrom):
        module = node.module or ""
        if module.split(".")[0] in _TAMPER_MODULES or module == "course.checks":
            return f"import of {module}"
        for alias in node.names:
            if alias.name in ("reload", "setprofile", "settrace", "_getframe", "_current_frames", "checks"):
                return f"import of {alias.name} from {module}"
        return ""
    if isinstance(node, ast.Attribute):
        why = _TAMPER_NAMES.get(node.attr, "")
        base = node.value.id if isinstance(node.value, ast.Name) else ""
        if node.attr == "write":
            return "os.write (raw file descriptors)" if base == "os" else ""
        if node.attr == "checks":
            return "course.checks (the notebooks' reference guard)" if base == "course" else ""
        if node.attr == "close" and base == "os":
            return "os.close (raw file descriptors)"
        if node.attr in ("stack", "trace") and base == "inspect":
            return f"inspect.{node.attr} (the interpreter's frames)"
        return f"{node.attr} ({why})" if why else ""
    if isinstance(node, ast.Name):
        if node.id in _TAMPER_BUILTINS:
            return f"{node.id} (code built at run time)"
        if node.id in ("gc", "ctypes"):
            return f"{node.id} ({_TAMPER_NAMES[node.id]})"
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return ""
    if "/proc/" in node.value and "mem" in node.value:
        return f"{node.value[:40]!r} (the process's raw memory)"
    if node.value in _TAMPER_STRINGS:
        return f"the name {node.value!r} as a string (getattr of {_TAMPER_NAMES[node.value] or node.value})"
    return ""


def scan(cells: list[dict], given: set[str], files: dict[str, str] | None = None) -> list[str]:
    """Why a submission's code needs a human look: one reason per cell or file, else ``[]``.

    Args:
        cells: The submission's code cells (``{"number", "source"}``, plain Python).
        given: Sources of the instructor's cells: a cell left as given is not scanned.
        files: Python files handed in beside the notebook: name -> text.
    """
    reasons = []
    where = [(f"cell {c['number']}", c["source"]) for c in cells if c["source"] not in given]
    where += [(name, text) for name, text in sorted((files or {}).items())]
    for label, source in where:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError):
            continue
        found = []
        for node in ast.walk(tree):
            why = _is_tamper(node)
            if why and why not in found:
                found.append(why)
        if found:
            reasons.append(f"{label} uses {', '.join(found[:4])}: code that can reach into the grader's own "
                           "machinery, so the grade needs a human look")
    return reasons
