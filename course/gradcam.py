"""Grad-CAM (Selvaraju et al., 2017): where in a conv layer's maps a class score comes from.

The maps and the class score (the logit) come from ONE forward pass of
:func:`course.tracing.score_model`, so the layer may sit at any depth of nesting (an
applications base inside a transfer-learning model, a Sequential reused in another model).
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from course.errors import CourseError, LayerError
from course.inputs import model_feed
from course.logits import class_index as _class_index
from course.tracing import score_model, trace


def _is_spatial(shape: tuple) -> bool:
    """Whether maps of ``shape`` (batch, H, W, C) have more than one position (None: any size)."""
    height, width = shape[1:3]
    return height is None or width is None or height * width > 1


def last_conv_layer(model: keras.Model) -> str:
    """The model's last convolution layer whose maps have more than one position (Grad-CAM's usual layer).

    A 1x1 convolution after global pooling (MobileNetV3's ``logits``) is skipped: its maps have
    one value per channel, so a heatmap of it is the same everywhere. When every conv layer's
    maps are 1x1, the last one is returned.

    Raises:
        LayerError: The model has no conv layer.
    """
    from course.activations import conv_layer_names

    names = conv_layer_names(model)
    if not names:
        raise LayerError(
            f"model '{model.name}' has no convolution layer; pass layer= a layer with feature maps."
        )
    shapes = trace(model).shapes()
    return next((name for name in reversed(names) if _is_spatial(shapes[name])), names[-1])


def grad_cam(model: keras.Model, image, layer=None, class_index: int | None = None) -> np.ndarray:
    """Grad-CAM: the class score's gradient-weighted sum of a conv layer's maps.

    Each channel k of the layer's maps A gets the weight ``alpha_k`` = the mean over positions of
    ``d score / d A_k``; the heatmap is ``relu(sum_k alpha_k A_k)``, resized (bilinear) to the
    input's resolution and divided by its maximum.

    Args:
        model: A built Keras model (the course's Sequential model included).
        image: One image (H, W, C), in the range the model was trained on; for a model with
            several inputs, a dict or list of one sample of each (its image input is explained).
        layer: The layer (name, index or object) whose maps are weighted; default
            :func:`last_conv_layer` (the last conv layer with maps larger than 1x1). Layers with
            1x1 maps give a warning.
        class_index: The class whose score is explained; default the predicted class.

    Returns:
        float32 array (H, W) in [0, 1]; all zeros when no position raises the score.

    Raises:
        LayerError: An unknown layer or one without feature maps, or a model without conv layers.
        InputShapeError: Not exactly one image of the model's input shape.
        InputError: NaN or Inf pixels (which would give an all-zero heatmap), or not numbers.
    """
    import tensorflow as tf

    from course.activations import resolve_layer

    feed = model_feed(model, image, "image", one=True)
    layer = last_conv_layer(model) if layer is None else layer
    scorer = score_model(model, layer)
    if not _is_spatial(trace(model).shapes()[resolve_layer(model, layer)]):
        warnings.warn(
            f"layer {layer!r} of model '{model.name}' has 1x1 maps: a Grad-CAM heatmap of it is the same at "
            "every position; choose a layer before the global pooling (course.last_conv_layer(model)).",
            UserWarning,
            stacklevel=2,
        )
    batch = tf.convert_to_tensor(feed.images)
    with tf.GradientTape() as tape:
        tape.watch(batch)  # records every op, also of layers without weights
        outputs = scorer(feed.value(batch), training=False)
        maps = outputs["maps"]
        index = _class_index(outputs["scores"], class_index)
        score = outputs["scores"][0, index]
    grads = tape.gradient(score, maps)
    if grads is None:
        raise LayerError(
            f"the score of model '{model.name}' does not depend on layer {layer!r}: choose a layer "
            "on the path from the input to the output."
        )
    weights = tf.reduce_mean(grads[0], axis=(0, 1))  # (k,)
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * weights, axis=-1))
    height, width = batch.shape[1:3]
    cam = tf.image.resize(cam[None, :, :, None], (height, width), method="bilinear")[0, :, :, 0]
    cam = cam.numpy().astype(np.float32)
    if not np.isfinite(cam).all():
        raise CourseError(
            f"Grad-CAM of model '{model.name}' is not finite for this image (NaN or Inf weights, or "
            "an overflow): check the model's weights and that the image is in its input range."
        )
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)
