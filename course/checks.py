"""Checks for the notebooks' test cells: keep an exercise's own reference out of the answer.

Each exercise asks for something the package already does (``get_feature_maps`` is what
``course.extract_feature_maps`` does). While a test cell runs the student's function inside
:func:`reference_off_limits`, a call of that package function from the student's code fails
with a sentence instead of quietly passing the test.

How: for the duration of the block, each guarded function's ``__code__`` is swapped for a
small guard's code, so every way of reaching the function object (``course.X``,
``course.module.X``, an alias bound earlier) runs the guard. The guard has no free variables;
it finds its state in a module-level registry keyed by its own code object. A call whose
immediate caller belongs to the ``course`` package runs the original code (the package's
functions call each other); any other caller gets :class:`~course.errors.ReferenceNotAllowed`.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from course.errors import ReferenceNotAllowed


@dataclass(eq=False)
class _Scope:
    """One active block: the exercise it checks and the references called inside it."""

    exercise: str
    called: list[str] = field(default_factory=list)


@dataclass(eq=False)
class _Guard:
    """The state of one guarded package function."""

    reference: str
    function: types.FunctionType
    original: types.CodeType
    guard: types.CodeType
    run_original: types.FunctionType
    scopes: list[_Scope] = field(default_factory=list)


#: guard code object -> its state; entries stay, so a stray guard always finds its original.
_REGISTRY: dict[types.CodeType, _Guard] = {}
#: guarded function -> its state (one compiled guard per function).
_BY_FUNCTION: dict[types.FunctionType, _Guard] = {}
_LOCK = threading.RLock()

_GUARD_SOURCE = '''\
def {name}(*args, **kwargs):
    """Guard of course.{reference} (course.checks.reference_off_limits); {serial}."""
    import sys
    from course.checks import _guarded_call
    refused, result = _guarded_call(sys._getframe(), args, kwargs)
    if refused:
        raise result  # raised here, so the student's traceback ends at the call they wrote
    return result
'''


def _is_course_module(name: object) -> bool:
    return isinstance(name, str) and (name == "course" or name.startswith("course."))


def _guarded_call(frame: types.FrameType, args: tuple, kwargs: dict) -> tuple[bool, object]:
    """Run by every guard: ``(False, result)`` of the original code for the package's own calls,
    else ``(True, the ReferenceNotAllowed to raise)``."""
    state = _REGISTRY[frame.f_code]
    caller = frame.f_back
    module = caller.f_globals.get("__name__") if caller is not None else None
    del frame, caller
    with _LOCK:
        scopes = list(state.scopes)
    if not scopes or _is_course_module(module):
        return False, state.run_original(*args, **kwargs)
    for scope in scopes:
        if state.reference not in scope.called:
            scope.called.append(state.reference)
    return True, ReferenceNotAllowed(scopes[-1].exercise, state.reference)


def _known_functions(package: types.ModuleType) -> list[str]:
    return sorted(
        name for name in getattr(package, "__all__", dir(package))
        if isinstance(getattr(package, name, None), types.FunctionType)
        and _is_course_module(getattr(package, name).__module__)
        and getattr(package, name).__module__ != __name__
    )


def _resolve(reference: str) -> types.FunctionType:
    """The package function called ``reference``, or a clear error."""
    import course

    known = _known_functions(course)
    target = getattr(course, reference, None) if isinstance(reference, str) else None
    if reference not in known:
        module = getattr(target, "__module__", None)
        if hasattr(target, "__wrapped__") and _is_course_module(module) and module != __name__:
            raise TypeError(
                f"course.{reference} is a decorated function ({type(target).__name__}): "
                "reference_off_limits can only guard plain functions; list the function it wraps"
            )
        close = difflib.get_close_matches(str(reference), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{reference!r} is not a function of the course package{hint}; known functions: {known}")
    if target.__closure__ or target.__code__.co_freevars:
        raise TypeError(
            f"course.{reference} is a closure or a decorator's wrapper (it uses variables of an "
            "enclosing function): reference_off_limits can only guard plain module-level functions"
        )
    return target


def _guard_for(reference: str, function: types.FunctionType) -> _Guard:
    """The function's guard state, compiled on first use (caller holds the lock)."""
    state = _BY_FUNCTION.get(function)
    if state is not None:
        return state
    source = _GUARD_SOURCE.format(name=function.__name__, reference=reference, serial=len(_BY_FUNCTION))
    namespace: dict = {}
    exec(compile(source, f"<guard of course.{reference}>", "exec"), namespace)  # noqa: S102 (our template)
    guard = namespace[function.__name__].__code__
    run_original = types.FunctionType(
        function.__code__, function.__globals__, function.__name__, function.__defaults__, function.__closure__
    )
    run_original.__kwdefaults__ = function.__kwdefaults__
    run_original.__qualname__ = function.__qualname__
    state = _Guard(reference, function, function.__code__, guard, run_original)
    _REGISTRY[guard] = state
    _BY_FUNCTION[function] = state
    return state


@contextlib.contextmanager
def reference_off_limits(exercise: str, references: Iterable[str]) -> Iterator[list[str]]:
    """Refuse the package functions that solve ``exercise`` while the block runs.

    A call of one of them from code outside the ``course`` package (a student's function)
    raises :class:`~course.errors.ReferenceNotAllowed`; the package's own calls work as usual.
    Everything is restored when the block ends, also after an exception. Blocks may nest.

    Args:
        exercise: The function the student writes, e.g. ``"get_feature_maps"``.
        references: Names of ``course`` functions that do the exercise's job,
            e.g. ``["extract_feature_maps", "activation_model"]``.

    Yields:
        The list of references that were called in the block (even when the student's code
        caught the error), in the order of their first call.

    Raises:
        ValueError: A name that is not a function of the ``course`` package.
        TypeError: A function that cannot be guarded (a closure or a decorated function).
    """
    names = list(dict.fromkeys(references))
    functions = [_resolve(name) for name in names]  # every name is checked before anything changes
    scope = _Scope(str(exercise))
    entered: list[_Guard] = []
    try:
        with _LOCK:
            for name, function in zip(names, functions):
                state = _guard_for(name, function)
                if not state.scopes:  # first block on this function: take its current code
                    state.original = function.__code__
                    state.run_original.__code__ = function.__code__
                    state.run_original.__defaults__ = function.__defaults__
                    state.run_original.__kwdefaults__ = function.__kwdefaults__
                    function.__code__ = state.guard
                state.scopes.append(scope)
                entered.append(state)
        yield scope.called
    finally:
        with _LOCK:
            for state in entered:
                state.scopes.remove(scope)
                if not state.scopes:
                    state.function.__code__ = state.original


def guarded_functions() -> list[str]:
    """The names of the package functions refused right now (empty outside every block)."""
    with _LOCK:
        return sorted(state.reference for state in _BY_FUNCTION.values() if state.scopes)


__all__ = ["ReferenceNotAllowed", "guarded_functions", "reference_off_limits"]
