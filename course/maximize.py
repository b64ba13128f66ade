"""Activation maximization: the input a filter prefers (Erhan et al., 2009; Olah et al., 2017).

Gradient ascent on the image to raise one channel's mean activation, with jitter, blur and an
L2 decay so that the result is an image rather than noise. Many channels are optimized together
as one batch. The layer may sit at any depth of nesting (see :mod:`course.tracing`).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from course import validate
from course.activations import activation_model, resolve_layer
from course.errors import CourseError, InputShapeError, OptionError
from course.inputs import Feed, model_feed
from course.tracing import input_shape, model_inputs, trace


def _gaussian_kernel(sigma: float, channels: int) -> np.ndarray:
    radius = max(1, math.ceil(2 * sigma))
    line = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    square = np.outer(line, line) / np.outer(line, line).sum()
    return np.repeat(square[:, :, None, None], channels, axis=2).astype(np.float32)


def maximize_activation(
    model: keras.Model,
    layer: str,
    channel,
    steps: int = 150,
    learning_rate: float = 0.05,
    jitter: int = 2,
    blur_every: int = 4,
    blur_sigma: float = 0.5,
    l2: float = 0.005,
    value_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
    start=None,
) -> np.ndarray:
    """The input a filter prefers: gradient ascent on the image to raise one channel's mean activation.

    A ReLU channel that is silent on the start image has zero gradient and would never move,
    so by default each channel starts from whichever of three noise images (uniform, sparse
    bright dots, coarse blobs) excites it most; ``start`` gives your own (a real digit, say).
    Each step then shifts the image by a random offset of up to
    ``jitter`` pixels (so that no single pixel arrangement wins), follows the gradient of the
    channel's mean activation (normalized to unit RMS per image), applies the L2 penalty as a
    decay (every pixel shrinks towards 0 by the fraction ``l2``, so pixels that do not help
    fade), and clips to ``value_range``; every ``blur_every`` steps a Gaussian blur removes the
    high-frequency patterns that a CNN responds to but a person cannot see. Many channels are
    optimized together as one batch, which costs little more than one.

    Args:
        model: A built Keras model.
        layer: A layer with feature maps (a conv layer, usually): name, index or object.
        channel: A channel index, or a sequence of them (or None for every channel).
        steps: Gradient-ascent steps.
        learning_rate: Step size, as a fraction of the value range.
        jitter: Largest random shift in pixels (0 to switch off).
        blur_every: Blur every this many steps (0 to switch off).
        blur_sigma: The blur's standard deviation in pixels.
        l2: The L2 decay per step (0 to switch off).
        value_range: The model's input range; the image stays inside it.
        seed: Seed of the start images and the shifts.
        start: Start image(s), (H, W, C) for all channels or (n, H, W, C) one per channel;
            default the best of three noise images per channel. A model with several inputs
            needs a dict (or list) of them: the image entry is the start, the others stay fixed.

    Returns:
        float32 image (H, W, C) for one channel; (n, H, W, C) for a sequence or None.

    Raises:
        LayerError: An unknown layer or one without feature maps.
        OptionError: A channel index out of range or not a whole number, ``steps < 1``,
            ``blur_sigma <= 0`` (with blurring on), a reversed ``value_range``, or another
            option out of its range.
    """
    import tensorflow as tf

    layer = resolve_layer(model, layer)
    steps = validate.integer(steps, "steps", 1)
    learning_rate = validate.number(learning_rate, "learning_rate", 0.0, above=True)
    jitter = validate.integer(jitter, "jitter", 0)
    blur_every = validate.integer(blur_every, "blur_every", 0)
    if blur_every:
        blur_sigma = validate.number(blur_sigma, "blur_sigma", 0.0, above=True)
    l2 = validate.number(l2, "l2", 0.0)
    seed = validate.integer(seed, "seed", 0)
    low, high = validate.value_range(value_range)
    maps_model = activation_model(model, layer)
    count = int(trace(model).shapes()[layer][-1])
    single = channel is not None and np.ndim(channel) == 0
    if channel is None:
        channels = np.arange(count)
    else:
        try:
            given = [channel] if single else list(channel)
        except TypeError:
            raise OptionError(f"channel must be an index, a list of indices or None, got {channel!r}.") from None
        if not given:
            raise OptionError(f"the list of channels is empty: give indices in 0..{count - 1}, or None for all.")
        channels = np.array([validate.integer(c, "channel", 0, count - 1) for c in given], int)
    shape = input_shape(model)
    fixed = Feed(np.empty(0))  # a model with several inputs: the other inputs, held fixed
    if len(model_inputs(model)) > 1:
        if start is None:
            raise OptionError(
                f"model '{model.name}' has {len(model_inputs(model))} inputs: pass start= a dict (or list) of them, "
                "whose image entry is the start image and whose other entries are held fixed."
            )
        fixed = model_feed(model, start, "start")
        start = fixed.images
    if None in shape and start is None:
        raise OptionError(
            f"model '{model.name}' takes images of any size {shape}, so there is no size to start from: pass "
            f"start= an image of the size to optimize, e.g. start=np.full((64, 64, {shape[-1] or 3}), 0.5)."
        )
    rng = np.random.default_rng(seed)
    select = tf.one_hot(channels, count)[:, None, None, :]

    def channel_means(batch):
        maps = maps_model(fixed.value(tf.convert_to_tensor(batch, tf.float32)), training=False)[layer]
        return tf.reduce_mean(tf.reduce_sum(maps * select, axis=-1), axis=(1, 2)).numpy()

    if start is None:
        n, (height, width, depth) = len(channels), shape
        coarse = rng.random((n, -(-height // 4), -(-width // 4), depth))
        candidates = np.stack([
            rng.random((n, *shape)),  # uniform noise
            (rng.random((n, *shape)) < 0.2).astype(float),  # sparse bright dots
            np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :height, :width],  # coarse blobs
        ])
        candidates = (low + (high - low) * candidates).astype(np.float32)
        best = np.argmax([channel_means(c) for c in candidates], axis=0)
        first = candidates[best, np.arange(n)]
    else:
        starts = validate.images(start, shape, "start", range_note=None)
        shape = starts.shape[1:]
        if len(starts) not in (1, len(channels)):
            raise InputShapeError(
                f"start holds {len(starts)} images for {len(channels)} channels: give one image "
                "for all, or one per channel."
            )
        first = np.broadcast_to(starts, (len(channels), *shape))
    images = tf.Variable(np.array(first, np.float32))
    kernel = tf.constant(_gaussian_kernel(blur_sigma if blur_every else 1.0, shape[-1]))
    step_size = learning_rate * (high - low)

    @tf.function(reduce_retracing=True)
    def ascend(shift, blur):
        shifted = tf.roll(images, shift, axis=[1, 2])
        with tf.GradientTape() as tape:
            tape.watch(shifted)
            maps = maps_model(fixed.value(shifted), training=False)[layer]
            # Each image's own channel: the images do not interact, so one sum serves all.
            objective = tf.reduce_sum(tf.reduce_mean(tf.reduce_sum(maps * select, axis=-1), axis=(1, 2)))
        grads = tape.gradient(objective, shifted)
        grads /= tf.sqrt(tf.reduce_mean(tf.square(grads), axis=(1, 2, 3), keepdims=True)) + 1e-8
        updated = tf.roll(shifted + step_size * grads - l2 * shifted, -shift, axis=[1, 2])
        if blur:
            updated = tf.nn.depthwise_conv2d(updated, kernel, [1, 1, 1, 1], "SAME")
        images.assign(tf.clip_by_value(updated, low, high))

    for step in range(steps):
        shift = rng.integers(-jitter, jitter + 1, size=2) if jitter else np.zeros(2, int)
        blur = bool(blur_every) and (step + 1) % blur_every == 0 and step + 1 < steps
        ascend(tf.constant(shift, tf.int32), tf.constant(blur))
    result = images.numpy()
    if not np.isfinite(result).all():
        raise CourseError(
            f"activation maximization of layer '{layer}' diverged (NaN or Inf pixels): lower "
            "learning_rate, or check the model's weights."
        )
    return result[0] if single else result
