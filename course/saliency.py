"""Saliency (Simonyan et al., 2014) and SmoothGrad (Smilkov et al., 2017): how much each input
pixel changes a class score.

The score is the *logit* (the value before softmax, from :func:`course.tracing.score_model`):
softmax saturates for a confident prediction, and in float32 the gradient of a probability of
0.99999 is mostly rounding error. Works on every model :func:`course.tracing.trace` re-traces.
"""

from __future__ import annotations

import keras
import numpy as np

from course import validate
from course.errors import CourseError
from course.inputs import model_feed
from course.logits import class_index as _class_index
from course.tracing import score_model


def saliency_map(
    model: keras.Model,
    image,
    class_index: int | None = None,
    smooth_samples: int = 0,
    noise_level: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """How strongly each pixel changes the class score: ``max_c |d score / d pixel|``.

    Vanilla saliency is the gradient of the class's logit with respect to the input, taken with
    ``tf.GradientTape``; its absolute value is maxed over the colour channels. SmoothGrad
    averages the gradient over ``smooth_samples`` copies of the image with Gaussian noise of
    standard deviation ``noise_level`` times the image's value range, before taking the
    absolute value.

    Args:
        model: A built Keras model.
        image: One image (H, W, C), in the range the model was trained on; for a model with
            several inputs, a dict or list of one sample of each (the gradient is taken with
            respect to its image input only).
        class_index: The class whose score is explained; default the predicted class.
        smooth_samples: 0 for vanilla gradients, else the number of noisy copies (20-50).
        noise_level: SmoothGrad's noise as a fraction of the image's value range.
        seed: Seed of SmoothGrad's noise.

    Returns:
        float32 array (H, W), >= 0, in units of score per pixel value (not normalized).

    Raises:
        InputShapeError: Not exactly one image of the model's input shape.
        InputError: NaN or Inf pixels, or not numbers.
        OptionError: A class index out of range or a negative number of samples.
    """
    import tensorflow as tf

    smooth_samples = validate.integer(smooth_samples, "smooth_samples", 0)
    noise_level = validate.number(noise_level, "noise_level", 0.0)
    seed = validate.integer(seed, "seed", 0)
    scorer = score_model(model)
    feed = model_feed(model, image, "image", one=True)
    batch = feed.images
    index = _class_index(scorer(feed.value(), training=False)["scores"], class_index)
    if smooth_samples:
        spread = noise_level * float(batch.max() - batch.min() or 1.0)
        noise = np.random.default_rng(seed).normal(0.0, spread, (smooth_samples, *batch.shape[1:]))
        batch = (batch + noise).astype(np.float32)
    total = np.zeros(batch.shape[1:], np.float32)
    for start in range(0, len(batch), 32):
        chunk = tf.convert_to_tensor(batch[start : start + 32])
        with tf.GradientTape() as tape:
            tape.watch(chunk)
            score = tf.reduce_sum(scorer(feed.value(chunk), training=False)["scores"][:, index])
        total += tape.gradient(score, chunk).numpy().sum(axis=0)
    result = np.abs(total / len(batch)).max(axis=-1)
    if not np.isfinite(result).all():
        raise CourseError(
            f"the gradient of model '{model.name}' is not finite for this image (NaN or Inf weights, "
            "or an overflow): check the model's weights and that the image is in its input range."
        )
    return result
