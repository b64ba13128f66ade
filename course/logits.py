"""The class scores a tool explains: the logits, before the softmax or sigmoid of the layer that
computes a model's output.

Both saturate: for a confident prediction the gradient of a probability of 1 - 1e-7 is about
1e-7 times that of its logit (and exactly 0 once float32 rounds it to 1), so saliency and
Grad-CAM would see almost nothing. The model is never changed: the activation is switched off
only for the duration of the head's own call, and back on before it returns (also on an error).
"""

from __future__ import annotations

import keras
import numpy as np

from course import validate


def squashes(layer) -> bool:
    """Whether ``layer`` ends in a softmax or a sigmoid (the logits are its input to that)."""
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    return isinstance(layer, keras.layers.Softmax) or activation in ("softmax", "sigmoid")


def logits_of(head, call, args, kwargs):
    """The head's output without its softmax or sigmoid: ``call(*args, **kwargs)`` (the head's
    own call, or the head itself) run with a linear activation."""
    if isinstance(head, keras.layers.Softmax):
        return args[0]
    saved = head.activation
    head.activation = keras.activations.linear
    try:
        return call(*args, **kwargs)
    finally:
        head.activation = saved


class WithoutSquashing(keras.layers.Layer):
    """Runs a layer of the model (shared, with its trained weights) as :func:`logits_of` does,
    as a layer of a functional graph."""

    def __init__(self, head, **kwargs):
        # The head's dtype policy, so that a float64 (or mixed-precision) model is not cast.
        super().__init__(name=f"{head.name}_logits", dtype=head.dtype_policy, **kwargs)
        self.head = head

    def call(self, *args, **kwargs):
        return logits_of(self.head, self.head, args, kwargs)


def scores(traced):
    """The class scores of a re-trace (:class:`course.tracing.Trace`): the logits when the layer
    that computes the output applies softmax or sigmoid (at any depth of nesting), else the output."""
    for name, tensor in traced.taps.items():  # inner layers are recorded before their model
        if tensor is traced.output and not isinstance(traced.layers[name], keras.Model):
            layer = traced.layers[name]
            if not squashes(layer):
                return traced.output
            args, kwargs = traced.calls[name]
            return WithoutSquashing(layer)(*args, **kwargs)
    return traced.output


def class_index(scores, index) -> int:
    """The class to explain: ``index`` checked against the scores, or the predicted class."""
    classes = int(scores.shape[-1])
    if index is None:
        return int(np.argmax(np.asarray(scores)[0]))
    return validate.integer(index, "class_index", 0, classes - 1)
