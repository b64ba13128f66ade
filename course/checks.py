"""Checks for the notebooks' test cells: keep an exercise's own reference out of the answer, and
turn what a student's function raises or returns by mistake into a sentence.

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

The test cells call the student's functions inside :func:`student_code`: an error raised there
(TensorFlow's ``Computed output size would be negative``, numpy's ``UFuncTypeError``, a ``None``
gradient, ...) becomes an ``AssertionError`` whose message says what happened, what was expected
and what to do (:func:`explain_error`); :func:`describe_value` does the same for a returned value
that is not what the exercise asks for (``None``, a ``KerasTensor``, a tensor, a dict). The grader
runs the same test cells, so ``grader check`` and the notebook say the same sentence.
"""

from __future__ import annotations

import contextlib
import difflib
import re
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


#: (pattern searched in "ErrorType: message", what it means and what to do), first match wins.
_ERROR_HINTS: list[tuple[str, str]] = [
    (r"Full shape received: \(None, 28, 28\)",
     "the input declares no channel axis: one grey image is 28x28 with one channel, keras.Input(shape=(28, 28, 1))"),
    (r"Computed output size would be negative|Negative dimension size|expected min_ndim=4|"
     r"expected ndim=4|found ndim=3|is incompatible with the layer",
     "the model was given one image of shape (28, 28, 1) without a batch axis, but models work on batches: "
     "call it on image[np.newaxis] (shape (1, 28, 28, 1)) and take [0] of the result"),
    (r"divide by zero encountered|invalid value encountered",
     "a division by zero: a constant map has max == min; check for max == min before dividing and "
     "return zeros for it"),
    (r"UFuncTypeError|Cannot cast ufunc",
     "`images /= 255` divides inside the uint8 array, which cannot hold fractions (and it would change "
     "the caller's images): make a float copy first, images.astype(np.float32) / 255"),
    (r"has never been called and thus has no defined input|has no defined input",
     "on Keras 3 a Sequential model has no model.input: use model.inputs[0]"),
    (r"KerasTensor",
     "a KerasTensor (such as layer.output) is a symbolic placeholder without values: build "
     "keras.Model(inputs=model.inputs[0], outputs=...) and call that model on the images"),
    (r"Attempt to convert a value \(None\)|'NoneType' object|NoneType' and|and 'NoneType'",
     "a value was None; if it came from tape.gradient, the tape did not record how the score was "
     "computed: call the model (course.score_model(...)) inside the `with tf.GradientTape() as tape:` "
     "block, after tape.watch(batch), and take the gradient with respect to a tensor from that call"),
    (r"'dict' object has no attribute|^KeyError: 0$|array is 0-dimensional",
     "a model built with a dict of outputs (like course.activation_model) returns {layer name: tensor}: "
     "take the layer's entry, outputs[layer_name], before indexing or np.asarray"),
    (r"No such layer",
     "look the layer up with the layer_name argument the function is given; the error lists the model's layers"),
    (r"is not connected to|Graph disconnected",
     "the output must come from the model's own input: take model.inputs[0] and "
     "model.get_layer(layer_name).output of the same model, not a new keras.Input"),
    (r"EagerTensor object has no attribute|'(EagerTensor|Tensor)' object has no attribute",
     "a TensorFlow tensor has no numpy methods: convert it first with np.asarray(tensor)"),
]


def explain_error(exercise: str, error: BaseException) -> str:
    """The sentence a test cell shows for an error raised inside the student's function.

    Args:
        exercise: The function the exercise asks for, e.g. ``"get_feature_maps"``.
        error: What it raised.

    Returns:
        ``"<exercise> raised <Type>: <first line of the message>; <what to do>"``, one line.
    """
    kind = type(error).__name__
    lines = [line.strip() for line in str(error).replace("\x1b[1m", "").replace("\x1b[0m", "").splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered when calling")]
    first = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", lines[0] if lines else "")
    first = " ".join(first.split())
    if len(first) > 120:  # keep whole sentences, or whole words
        cut = first[:120]
        first = cut[: cut.rfind(". ") + 1] if cut.rfind(". ") > 40 else cut[: cut.rfind(" ")] + " [...]"
    text = f"{kind}: {error}"
    if str(error).startswith("returned "):  # the grader could not send the returned value back
        for name, module in (("KerasTensor", "keras"), ("Variable", "keras")):
            if f".{name}" in str(error):
                return describe_value(exercise, type(name, (), {"__module__": module})())
        return f"{exercise} {error}"
    hint = next((advice for pattern, advice in _ERROR_HINTS if re.search(pattern, text, re.M)), None)
    if hint is None:
        hint = (f"the error happened inside your {exercise}; call it in a cell of its own to see the line "
                "(the last lines of the traceback point at your code)")
    first = first.rstrip(".")
    return f"{exercise} raised {kind}" + (f": {first}" if first else "") + f"; {hint}"


def describe_value(exercise: str, value: object, expected: str = "a numpy array") -> str | None:
    """A sentence for a returned value of a typical wrong kind, else None.

    Args:
        exercise: The function the exercise asks for.
        value: What it returned.
        expected: What the exercise asks for, e.g. ``"a numpy array"`` or ``"a keras.Model"``.

    Returns:
        The sentence for ``None``, a ``KerasTensor``, a TensorFlow tensor, a dict, a list or tuple,
        or an object array; ``None`` for any other value (the caller's own checks go on).
    """
    kind = type(value).__name__
    if value is None:
        return (f"{exercise} returned None, expected {expected}: end the function with `return ...` "
                "(a function without a return statement gives None)")
    if kind == "KerasTensor":
        return (f"{exercise} returned a KerasTensor: a KerasTensor (such as layer.output) "
                "is a symbolic placeholder without values; wrap it in keras.Model(inputs=model.inputs[0], "
                "outputs=...) and call that model on the images")
    module = type(value).__module__ or ""
    if module.startswith("tensorflow") and expected == "a numpy array":
        return (f"{exercise} returned a TensorFlow tensor ({kind}), expected {expected}: "
                "convert the tensor with np.asarray(...)")
    if isinstance(value, dict) and "dict" not in expected:
        return (f"{exercise} returned a dict with keys {list(value)[:6]}, expected {expected}: a model with a dict "
                "of outputs (like course.activation_model) returns {layer name: tensor}; take the entry you need, "
                "outputs[layer_name]")
    if isinstance(value, (list, tuple)) and "list" not in expected:
        todo = ("pass the layers to keras.Sequential([...]) and return the model" if "model" in expected
                else "return the one array itself (np.asarray(...) of the one result)")
        return f"{exercise} returned a {kind} of {len(value)} items, expected {expected}: {todo}"
    if module.startswith("keras") and kind == "Variable":
        return (f"{exercise} returned a Keras variable, expected {expected}: convert it with np.asarray(...) "
                "(or take the arrays from layer.get_weights())")
    if getattr(getattr(value, "dtype", None), "kind", "") == "O":
        return (f"{exercise} returned a numpy array of Python objects (shape {value.shape}), expected {expected} "
                "of numbers: np.asarray of a dict or of a list of tensors gives this; convert the one tensor you need")
    return None


def expect_array(exercise: str, value: object) -> None:
    """Fail with a sentence unless ``value`` is a numpy array.

    Raises:
        AssertionError: ``value`` is not a numpy array (what it is, and what to do).
    """
    import numpy as np

    if not isinstance(value, np.ndarray) or value.dtype.kind == "O":
        raise AssertionError(
            describe_value(exercise, value)
            or f"{exercise} returned {type(value).__name__}, expected a numpy array: "
            "return np.asarray(...) of the result"
        )


@contextlib.contextmanager
def student_code(exercise: str, references: Iterable[str] = ()) -> Iterator[list[str]]:
    """Run the student's function(s) in the block: references refused, errors made sentences.

    An ``AssertionError`` (a check, or :class:`ReferenceNotAllowed`) and ``NotImplementedError``
    (an exercise not done yet) pass unchanged; any other error raised in the block becomes an
    ``AssertionError`` with :func:`explain_error`'s sentence.

    Args:
        exercise: The function the exercise asks for.
        references: The ``course`` functions off limits in the block (see :func:`reference_off_limits`).

    Yields:
        The references called in the block.
    """
    with reference_off_limits(exercise, references) as called:
        try:
            yield called
        except (AssertionError, NotImplementedError):
            raise
        except Exception as error:  # noqa: BLE001 (every other failure gets a sentence)
            raise AssertionError(explain_error(exercise, error)) from None


__all__ = ["ReferenceNotAllowed", "describe_value", "expect_array", "explain_error", "guarded_functions",
           "reference_off_limits", "student_code"]
