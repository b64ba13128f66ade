"""Subclassed models: each layer's output recorded during the model's own call, the way
PyTorch's forward hooks record it.

A subclassed ``keras.Model`` has no graph of layers to re-run (its ``call`` is Python code), so
:func:`course.tracing.trace` cannot re-trace it. Instead, while the model runs, the ``call`` of
each of its layers (at any depth) is wrapped: an instance attribute over the class's method that
records the output and returns it unchanged, removed again in a ``finally``. Nothing of the
model changes: not its weights, not its layers, not its code. A layer called twice is recorded
once per call and named as the re-trace names it: ``name``, then ``"<model>/name"``, then
``"<model>/name#3"``. The model always runs with ``training=False``.
"""

from __future__ import annotations

import contextlib
import weakref

import keras
import numpy as np

from course.errors import LayerError, ModelError
from course.logits import logits_of, squashes

#: A leaf of :class:`Recorder`'s outputs: the model's output, or its class scores (logits).
OUTPUT, SCORES = "<output>", "<scores>"
_NO_OWN_CALL = object()


def sublayers(model: keras.Model) -> list:
    """Every layer inside ``model`` (nested ones included), each once."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def build_inputs(model: keras.Model) -> tuple[list, object]:
    """The inputs of a built subclassed model, from the shapes it was built with.

    Returns:
        ``(inputs, keys)``: KerasTensors (batch axis None) in order, and ``keys`` as
        :class:`course.inputs.Feed` has them: None for one input, ``[]`` for a list, ``{key:
        position}`` for a dict (a ``call(self, inputs)`` that takes several inputs as one list or dict).

    Raises:
        LayerError: The model was never built (called on data, or ``model.build(shape)``).
        ModelError: Its ``call`` takes several arguments.
    """
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if not model.built or not shapes:
        raise LayerError(
            f"model '{model.name}' has not been built, so its layers have no outputs yet: call it once on a "
            "batch of images (model(x[:1])) or model.build((None, height, width, channels))."
        )
    if len(shapes) != 1 or _required_inputs(model) > 1:
        raise ModelError(
            f"model '{model.name}' takes several arguments in its call: the course's tools call a model on one "
            "argument; take several inputs as one list or dict (def call(self, inputs)), as functional models do."
        )
    shape = next(iter(shapes.values()))
    if isinstance(shape, dict):
        keys = list(shape)
        return [keras.KerasTensor((None, *shape[k][1:]), name=k) for k in keys], {k: i for i, k in enumerate(keys)}
    if shape and isinstance(shape[0], (list, tuple)):
        return [keras.KerasTensor((None, *s[1:]), name=f"input_{i}") for i, s in enumerate(shape)], []
    return [keras.KerasTensor((None, *shape[1:]))], None


def _required_inputs(model: keras.Model) -> int:
    """How many arguments without a default the model's ``call`` takes (``training`` and ``mask`` aside)."""
    import inspect

    parameters = inspect.signature(model.call).parameters.values()
    return sum(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               and p.name not in ("training", "mask") for p in parameters)


def _is_tensor(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


@contextlib.contextmanager
def recording(model: keras.Model, on_call):
    """While inside, every sublayer's ``call(*args, **kwargs)`` becomes ``on_call(layer, call, args, kwargs)``.

    ``call`` is the layer's own call; ``on_call`` must return what it returns.
    """
    wrapped = []

    def wrapper(layer, call):
        return lambda *args, **kwargs: on_call(layer, call, args, kwargs)

    try:
        for layer in sublayers(model):
            own = layer.__dict__.get("call", _NO_OWN_CALL)
            # object.__setattr__: past Keras's attribute tracking, which would track the function.
            object.__setattr__(layer, "call", wrapper(layer, layer.call))
            wrapped.append((layer, own))
        yield
    finally:
        for layer, own in wrapped:
            if own is _NO_OWN_CALL:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)


def run_recorded(model: keras.Model, x, record, head=None):
    """Run ``model(x, training=False)``, recording each tensor-valued layer call into ``record``
    (a :class:`course.tracing.Trace`). With ``head`` (the layer that computes the output), its
    logits are recorded too, as ``record.models["logits"]``.

    Returns:
        The model's output.
    """

    def on_call(layer, call, args, kwargs):
        if layer is head and "logits" not in record.models:
            record.models["logits"] = logits_of(layer, call, args, kwargs)
        output = call(*args, **kwargs)
        if _is_tensor(output):
            record.record(model.name, layer, output, args, kwargs)
        return output

    with recording(model, on_call):
        return model(x, training=False)


def trace_subclassed(model: keras.Model, record):
    """Fill ``record`` (a new :class:`course.tracing.Trace`) from one recorded call of ``model`` on
    a random batch of one: the names, layers and shapes (batch axis as None) of every layer call,
    the output's shape, and the head whose activation :func:`course.logits.logits_of` removes.

    Raises:
        LayerError: Not built, or built for images of any size (no size to run it on).
    """
    from course.inputs import pack

    inputs, keys = build_inputs(model)
    shapes = [tuple(t.shape[1:]) for t in inputs]
    if any(None in shape for shape in shapes):
        raise LayerError(
            f"model '{model.name}' was built for inputs of any size {shapes}: build it for one size "
            "(model.build((None, height, width, channels))) to list and explain its layers."
        )
    rng = np.random.default_rng(0)
    probe = pack([rng.random((1, *shape)).astype(np.float32) for shape in shapes], keys)
    output = run_recorded(model, probe, record)
    spec = lambda tensor: keras.KerasTensor((None, *tensor.shape[1:]), dtype=tensor.dtype)  # noqa: E731
    record.output = spec(output) if _is_tensor(output) else [spec(o) for o in keras.tree.flatten(output)]
    names = list(record.taps)
    last = names[-1] if names else None
    # The head: the last call, when its output is the model's (a softmax or sigmoid to take off).
    if last is not None and _is_tensor(output) and squashes(record.layers[last]) and np.array_equal(
        np.asarray(record.taps[last]), np.asarray(output)
    ):
        record.models["head"] = record.layers[last]
    record.taps = {name: spec(tensor) for name, tensor in record.taps.items()}
    record.calls = {}
    return record


class Recorder(keras.Model):
    """A model from a subclassed model's input to what the re-trace would give: ``outputs`` is a
    (nested) dict whose leaves are layer-call names, :data:`OUTPUT` or :data:`SCORES`.

    It shares ``model`` (its layers and weights): nothing is copied.
    """

    def __init__(self, model: keras.Model, outputs: dict, head=None, **kwargs):
        super().__init__(**kwargs)
        # A weak reference: the Recorder is cached with the model's trace, which must not keep
        # the model alive (the trace cache is keyed weakly on the model).
        self._inner = weakref.ref(model)
        self.wanted, self.head = outputs, head

    def call(self, x, training=False):
        from course.tracing import Trace

        record = Trace(inputs=None)
        output = run_recorded(self._inner(), x, record, self.head)
        scores = record.models.get("logits", output)

        def leaf(name):
            return output if name == OUTPUT else scores if name == SCORES else record.taps[name]

        return keras.tree.map_structure(leaf, self.wanted)
