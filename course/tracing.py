"""The shared re-tracing core: run a model's own layers on a new ``keras.Input``, recording
every layer's output on the way. Every tool of the package (feature maps, saliency, Grad-CAM,
activation maximization) builds its models from one :func:`trace`.

Why re-trace? On Keras 3 ``keras.Model(model.inputs, layer.output)`` fails for every ``Sequential``
model ("never been called"), and for a layer of a nested model ("not connected to inputs").
Re-running the layers on one new input gives every layer's output, at any depth of nesting, as
tensors of ONE graph that also computes the model's output, so a gradient of the output with
respect to any of them exists. The layers (and trained weights) are shared: nothing is copied.

How: a ``Sequential`` model's layers are called in order; a functional model's graph is run
with ``keras.models.clone_model(model, clone_function=<the same layer>, call_function=...)``
(its public hook for calling each layer of the graph in order), and a nested model met on the
way is traced the same way, recursively. A layer called twice (a reused layer, or a nested
model used twice) is recorded once per call: ``name``, then ``"<model>/name"``, then
``"<model>/name#3"`` ...
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import keras

from course.errors import LayerError, ModelError
from course.logits import scores

__all__ = ["Trace", "image_input", "input_shape", "is_traceable", "model_inputs", "score_model", "tap_model",
           "trace"]

# model -> (ids of its layers when traced, Trace); weak so models can be freed. The Trace keeps
# those layers alive, so their ids cannot be reused while the entry exists.
_TRACES: weakref.WeakKeyDictionary[keras.Model, tuple] = weakref.WeakKeyDictionary()


@dataclass
class Trace:
    """What one re-trace recorded.

    Attributes:
        inputs: The new ``keras.Input`` tensor; None for a subclassed model, whose taps are
            recorded during its own call (:mod:`course.hooks`) and hold only their shapes.
        output: The model's output tensor, computed through the recorded tensors.
        taps: ``{name: output tensor}`` of every layer call, in the order data flows.
        layers: ``{name: layer}`` for the same names.
        calls: ``{name: (args, kwargs)}``: the tensors each layer was called on.
        models: What is built from this trace (activation and score models), dropped with it.
    """

    inputs: object
    output: object = None
    taps: dict = field(default_factory=dict)
    layers: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)

    def shapes(self) -> dict[str, tuple]:
        """``{name: output shape}`` (batch axis as None)."""
        return {name: tuple(tensor.shape) for name, tensor in self.taps.items()}

    def record(self, scope: str, layer, output, args, kwargs) -> None:
        name = layer.name if layer.name not in self.taps else f"{scope}/{layer.name}"
        base, count = name, 2
        while name in self.taps:
            name, count = f"{base}#{count}", count + 1
        self.taps[name], self.layers[name], self.calls[name] = output, layer, (args, kwargs)


def _is_functional(model) -> bool:
    # A functional model has a graph of operations (subclassed models do not).
    return isinstance(model, keras.Model) and not isinstance(model, keras.Sequential) and bool(
        getattr(model, "operations", None)
    ) and hasattr(model, "_run_through_graph")


def is_traceable(model) -> bool:
    """Whether ``model`` is a Sequential or functional Keras model (not a subclassed one)."""
    return isinstance(model, keras.Sequential) or _is_functional(model)


def check_model(model) -> None:
    """Refuse, with one sentence, what is not a Keras model the tools can see inside.

    Raises:
        ModelError: Not a Keras model (a path, a string, None ...), or one with channels_first layers.
    """
    if not isinstance(model, keras.Model):
        raise ModelError(
            f"expected a Keras model, got {type(model).__name__} ({str(model)[:60]!r}): "
            "pass a keras.Model, e.g. keras.models.load_model(path) for a saved one."
        )
    first = next((lay for lay in _all_layers(model) if getattr(lay, "data_format", "") == "channels_first"), None)
    if first is not None:
        raise ModelError(
            f"model '{model.name}' has channels_first layers (e.g. '{first.name}'): its images and maps are "
            "(channels, height, width), which the course's tools would draw as wrong pictures: rebuild it with "
            "data_format='channels_last' (the Keras default) and retrain it, or copy its conv kernels over."
        )


def _all_layers(model):
    """Every layer of ``model``, nested models' layers included."""
    for layer in model.layers:
        yield from [layer, *(_all_layers(layer) if isinstance(layer, keras.Model) else ())]


def model_inputs(model: keras.Model) -> list:
    """The model's inputs (KerasTensors, batch axis None), in the order ``model.inputs`` lists them.

    Raises:
        ModelError: Not a Keras model the tools can see inside.
        LayerError: The model is not built.
    """
    check_model(model)
    if not is_traceable(model):
        from course.hooks import build_inputs

        return build_inputs(model)[0]
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise LayerError(
            f"model '{model.name}' has not been built, so its layers have no outputs yet: "
            "start it with keras.Input(shape=...) or call it once on a batch of images."
        )
    return list(inputs)


def image_input(model: keras.Model) -> int:
    """The position in ``model.inputs`` of the input the tools explain: the only one, or the
    first whose samples are images (height, width, channels).

    Raises:
        ModelError: Several inputs, none of them images.
    """
    inputs = model_inputs(model)
    found = next((i for i, t in enumerate(inputs) if len(t.shape) == 4), None)
    if len(inputs) > 1 and found is None:
        shapes = [tuple(t.shape[1:]) for t in inputs]
        raise ModelError(
            f"model '{model.name}' has {len(inputs)} inputs of shapes {shapes}, none of them images "
            "(height, width, channels): the course's tools explain an image input."
        )
    return found or 0


def input_shape(model: keras.Model) -> tuple:
    """The shape of one image of the model's image input (:func:`image_input`), without the batch axis.

    Raises:
        ModelError: Not a Keras model the tools can see inside, or several inputs and no image.
        LayerError: The model is not built.
    """
    return tuple(model_inputs(model)[image_input(model)].shape[1:])


def _fresh_inputs(model: keras.Model):
    """New ``keras.Input`` tensors in the structure of ``model.input`` (one, a list or a dict)."""
    if len(model_inputs(model)) == 1:
        return keras.Input(shape=input_shape(model))
    image_input(model)  # several inputs and no image: refused here
    return keras.tree.map_structure(lambda t: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=t.name),
                                    model.input)


def _call(layer, args, kwargs, record: Trace, scope: str):
    if isinstance(layer, keras.layers.InputLayer):
        return layer.output
    if is_traceable(layer):
        inner = args[0] if len(args) == 1 else list(args)
        output = _run(layer, inner, record)
    else:
        output = layer(*args, **kwargs)
    record.record(scope, layer, output, args, kwargs)
    return output


def _run(model, inputs, record: Trace):
    if isinstance(model, keras.Sequential):
        x = inputs
        for layer in model.layers:
            x = _call(layer, (x,), {}, record, model.name)
        return x
    outputs = []

    def call_function(layer, *args, **kwargs):
        result = _call(layer, args, kwargs, record, model.name)
        outputs.append(result)
        return result

    structure = model.input if isinstance(model.input, (list, tuple, dict)) else None
    if structure is not None and not isinstance(inputs, type(structure)):
        inputs = type(structure)([inputs]) if isinstance(structure, (list, tuple)) else inputs
    clone = keras.models.clone_model(
        model, input_tensors=inputs, clone_function=lambda layer: layer, call_function=call_function
    )
    return clone.outputs[0] if len(clone.outputs) == 1 else clone.outputs


def trace(model: keras.Model) -> Trace:
    """Re-run ``model``'s layers on a new ``keras.Input``, recording every layer's output.

    Args:
        model: A built Keras model: Sequential (with ``keras.Input`` or ``input_shape=``, or
            loaded from a ``.keras`` file) or functional, containing nested models at any depth
            (reused layers included).

    Returns:
        A :class:`Trace`; nested models' layers are included (the nested model's own name maps
        to its output).

    Raises:
        ModelError: Not a Keras model, or one with several inputs.
        LayerError: The model is not built.
    """
    check_model(model)
    layers = tuple(map(id, _all_layers(model)))  # after pop(); add(...) the count is the same, the head is not
    cached = _TRACES.get(model)
    if cached is not None and cached[0] == layers:
        return cached[1]
    if is_traceable(model):
        record = Trace(inputs=_fresh_inputs(model))
        record.output = _run(model, record.inputs, record)
    else:  # subclassed: record each layer's output during the model's own call
        from course.hooks import trace_subclassed

        record = trace_subclassed(model, Trace(inputs=None))
    _TRACES[model] = (layers, record)
    return record


def tap_model(model: keras.Model, outputs: dict, name: str) -> keras.Model:
    """A model from ``model``'s input to ``outputs``: a (nested) dict whose leaves are traced
    layer names, :data:`course.hooks.OUTPUT` (the model's output) or :data:`course.hooks.SCORES`
    (its class scores, see :mod:`course.logits`). It shares the layers: nothing is copied."""
    from course import hooks

    traced = trace(model)
    if traced.inputs is None:
        return hooks.Recorder(model, outputs, traced.models.get("head"), name=name)
    special = {hooks.OUTPUT: traced.output}
    if hooks.SCORES in keras.tree.flatten(outputs):
        special[hooks.SCORES] = scores(traced)
    return keras.Model(traced.inputs, keras.tree.map_structure(lambda leaf: special.get(leaf, traced.taps.get(leaf)),
                                                               outputs), name=name)


# --------------------------------------------------------------------------------------------
# Class scores (logits) and maps of one forward pass: what saliency and Grad-CAM differentiate
# --------------------------------------------------------------------------------------------


def score_model(model: keras.Model, layer=None) -> keras.Model:
    """One model that returns the class scores (logits) and, optionally, a layer's maps.

    Both come from the same forward pass (one :func:`trace`), so a ``tf.GradientTape`` can
    differentiate the score with respect to the input or to the maps, for a layer at any depth
    of nesting. The layers (and trained weights) are shared with ``model``; nothing is copied
    or retrained.

    Args:
        model: A built Keras model (Sequential, functional or nested).
        layer: A layer (name, index or object) whose output is a feature map, or None for
            scores only.

    Returns:
        A ``keras.Model`` whose output is ``{"scores": (N, classes)}`` plus
        ``"maps": (N, H, W, C)`` when ``layer`` is given. The scores are the logits when the
        layer that computes the model's output applies softmax (as the course's model and
        keras.applications models do), else the model's output.

    Raises:
        LayerError: An unknown layer, or one whose output is not a feature map.
        ModelError: Not a Keras model, or one whose output is not one (N, classes) tensor.
    """
    from course.activations import resolve_layer

    traced = trace(model)
    name = None if layer is None else resolve_layer(model, layer, traced)
    cached = traced.models
    if ("scores", name) not in cached:
        output = traced.output
        if not hasattr(output, "shape") or len(output.shape) != 2:
            # Not getattr(output, "shape", <default>): the default would be evaluated every time.
            shape = tuple(output.shape) if hasattr(output, "shape") else f"{len(output)} outputs"
            raise ModelError(
                f"model '{model.name}' returns {shape}, not one (batch, classes) tensor of scores: "
                "saliency and Grad-CAM explain a classifier's class scores."
            )
        from course.hooks import SCORES

        outputs = {"scores": SCORES} if name is None else {"scores": SCORES, "maps": name}
        cached["scores", name] = tap_model(model, outputs, f"{model.name}_scores")
    return cached["scores", name]
