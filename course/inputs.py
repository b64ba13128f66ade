"""What input a model expects: images of its input shape, in the value range its own
preprocessing takes. Used by every tool that runs a model on images, so that the 0-255
warning means the same everywhere."""

from __future__ import annotations

import keras
import numpy as np

from course import validate
from course.tracing import input_shape, trace

__all__ = ["model_images", "range_note"]

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
