"""What input a model expects: images of its input shape, in the value range its own
preprocessing takes, and for a model with several inputs its other inputs too. Used by every
tool that runs a model on images, so that the checks and the 0-255 warning mean the same
everywhere.

A model with several inputs (say an image and a vector of measurements) takes a dict
``{input name: array}`` or a list in ``model.inputs`` order; the tools explain its image input
(:func:`course.tracing.image_input`: the first whose samples are (height, width, channels)) and
pass the other inputs through unchanged (:class:`Feed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import keras
import numpy as np

from course import validate
from course.errors import InputError, InputShapeError
from course.tracing import image_input, input_shape, is_traceable, model_inputs, trace

__all__ = ["Feed", "input_signature", "model_feed", "model_images", "range_note"]

_PREPROCESSING = (keras.layers.Rescaling, keras.layers.Normalization)


def range_note(model: keras.Model) -> str | None:
    """What the model's input range is, for the 0-255 warning; None when it takes 0-255 values.

    The model's own preprocessing decides: the Rescaling and Normalization layers before its
    first layer with weights. A model that maps a pixel of 255 to at most 5 (EfficientNet's
    ``Rescaling(1/255)``, MobileNetV3's ``Rescaling(1/127.5, offset=-1)``, ConvNeXt's
    ``Normalization`` with ImageNet's 0-255 mean) takes 0-255 values: no warning. A model
    without preprocessing layers (the course's own) is taken to expect [0, 1].
    """
    traced = trace(model)
    if "range_note" not in traced.models:
        value, seen = 255.0, []
        for name, layer in traced.layers.items():
            if isinstance(layer, _PREPROCESSING):
                value, seen = _preprocess(layer, value), [*seen, name]
            elif layer.weights and not isinstance(layer, keras.Model):
                break
        if not seen:
            note = f"model '{model.name}' has no preprocessing layer, and the course's models take [0, 1]"
        elif value <= 5.0:
            note = None
        else:
            note = f"the preprocessing of model '{model.name}' ({', '.join(seen)}) maps 255 to {value:.3g}"
        traced.models["range_note"] = note
    return traced.models["range_note"]


def _preprocess(layer, value: float) -> float:
    """The largest magnitude a pixel ``value`` becomes after a Rescaling or Normalization layer."""
    if isinstance(layer, keras.layers.Rescaling):
        scale, offset = np.asarray(layer.scale, float), np.asarray(layer.offset, float)
        return float(np.abs(value * scale + offset).max())
    if getattr(layer, "mean", None) is None or getattr(layer, "invert", False):
        return value  # not adapted yet, or undoing a normalization: says nothing about the input
    mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), float)
    spread = np.sqrt(np.maximum(np.asarray(keras.ops.convert_to_numpy(layer.variance), float), 1e-12))
    return float(np.abs((value - mean) / spread).max())


def model_images(model: keras.Model, values, name: str = "images", *, one: bool = False):
    """Images for ``model``: :func:`course.validate.images` (or ``one_image``) with its input
    shape, warning about 0-255 values only where :func:`range_note` says [0, 1]."""
    check = validate.one_image if one else validate.images
    return check(values, input_shape(model), name, range_note=range_note(model))


@dataclass
class Feed:
    """A batch for a model: the images of its image input (the input that is explained) and
    its other inputs, which are passed through unchanged.

    Attributes:
        images: (N, H, W, C) float32, checked against the model.
        others: ``{position in model.inputs: array (N or 1, ...)}``; empty for a single-input model.
        index: The image input's position in ``model.inputs``.
        keys: ``{key: position}`` when the model takes a dict, ``[]`` for a list, None for one input.
    """

    images: np.ndarray
    others: dict = field(default_factory=dict)
    index: int = 0
    keys: object = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows) -> Feed:
        """The same inputs for some rows (a slice or indices) only."""
        others = {i: a if len(a) == 1 else a[rows] for i, a in self.others.items()}
        return Feed(self.images[rows], others, self.index, self.keys)

    def value(self, images=None):
        """What the model is called on: ``images`` (default :attr:`images`; a tensor is kept as it
        is) in the image input's place, the other inputs repeated to as many rows."""
        images = self.images if images is None else images
        if self.keys is None:
            return images
        rows = int(images.shape[0])
        # Keras refuses a mix of arrays and tensors in one call: the others follow the images.
        as_given = (lambda a: a) if isinstance(images, np.ndarray) else keras.ops.convert_to_tensor
        parts = {self.index: images}
        parts.update({i: as_given(np.repeat(a, rows, axis=0) if len(a) == 1 else a) for i, a in self.others.items()})
        return pack([parts[position] for position in range(len(parts))], self.keys)


def pack(parts: list, keys):
    """Inputs in order as the model takes them: ``keys`` None (one input), ``[]`` (a list) or
    ``{key: position}`` (a dict)."""
    if keys is None:
        return parts[0]
    return {key: parts[position] for key, position in keys.items()} if isinstance(keys, dict) else list(parts)


def model_feed(model: keras.Model, values, name: str = "images", *, one: bool = False) -> Feed:
    """Everything a model is called on, checked: images (see :func:`model_images`) for a
    single-input model; for several inputs a dict ``{input name: array}`` or a list in
    ``model.inputs`` order. A :class:`Feed` is returned as it is.

    Args:
        model: A built Keras model.
        values: Images, or the inputs of a model with several.
        name: What ``values`` are called in messages.
        one: Exactly one sample.

    Raises:
        InputError: Not the model's inputs (a missing or unknown name, another number of
            inputs), or values that :func:`course.validate.array` refuses.
        InputShapeError: An input of the wrong shape, or inputs of different lengths.
    """
    if isinstance(values, Feed):
        return values
    inputs = model_inputs(model)
    if len(inputs) == 1:
        return Feed(model_images(model, values, name, one=one))
    index, positions = image_input(model), _keys(model, inputs)
    names = [t.name for t in inputs] if not positions else sorted(positions, key=positions.get)
    if isinstance(values, dict) and sorted(values) == sorted(names):
        given = [values[n] for n in names]
    elif isinstance(values, (list, tuple)) and len(values) == len(inputs):
        given = list(values)
    else:
        shown = (f"a dict with keys {sorted(values)}" if isinstance(values, dict) else
                 f"a {type(values).__name__} of {len(values)}" if isinstance(values, (list, tuple)) else
                 f"one {type(values).__name__}")
        raise InputError(
            f"model '{model.name}' takes {len(inputs)} inputs {names}, got {shown}: pass a dict "
            f"{{{', '.join(repr(n) + ': ...' for n in names)}}} or a list in that order (the image input "
            f"'{names[index]}' is the one explained)."
        )
    images = model_images(model, given[index], f"{name}['{names[index]}']", one=one)
    others = {i: _other_input(given[i], inputs[i], f"{name}['{names[i]}']", len(images))
              for i in range(len(inputs)) if i != index}
    return Feed(images, others, index, positions)


def _keys(model: keras.Model, inputs: list):
    """How a model with several inputs takes them: ``[]`` for a list, ``{key: position}`` for a dict."""
    if not is_traceable(model):
        from course.hooks import build_inputs

        return build_inputs(model)[1]
    structure = model.input
    if not isinstance(structure, dict):
        return []
    return {key: next(i for i, t in enumerate(inputs) if t is tensor) for key, tensor in structure.items()}


def _other_input(values, spec, name: str, count: int) -> np.ndarray:
    """A non-image input: one sample or ``count`` (or 1, shared by all), of ``spec``'s shape and dtype."""
    array = validate.array(values, name)
    expected = tuple(spec.shape[1:])
    if validate.fits(array.shape, expected):
        array = array[np.newaxis]
    if not validate.fits(array.shape[1:], expected) or len(array) not in (1, count):
        shape = ", ".join("?" if s is None else str(s) for s in expected)
        raise InputShapeError(
            f"{name} of shape {np.shape(values)} do not fit: the input takes ({count} or 1, {shape}), one row per "
            "image (or one row for all)."
        )
    dtype = np.dtype(keras.backend.standardize_dtype(spec.dtype))
    return array.astype(dtype, copy=False)


def input_signature(model: keras.Model):
    """``tf.TensorSpec`` s of everything the model is called on (batch axis None), in its structure."""
    import tensorflow as tf

    def spec(tensor):
        return tf.TensorSpec((None, *tensor.shape[1:]), keras.backend.standardize_dtype(tensor.dtype))

    traced = trace(model)
    if traced.inputs is not None:
        return keras.tree.map_structure(spec, traced.inputs)
    inputs = model_inputs(model)
    return pack([spec(t) for t in inputs], None if len(inputs) == 1 else _keys(model, inputs))
