"""Beyond feature maps: why did the network decide? Saliency, Grad-CAM, activation maximization.

Feature maps show what a layer responds to; these tools connect that to the decision:

* :func:`saliency_map`: how much each input pixel changes the class score (the input gradient;
  SmoothGrad averages it over noisy copies, which removes most of its speckle).
* :func:`grad_cam`: which places of a conv layer's maps the class score depends on, at input
  resolution; coarser than saliency but far less noisy.
* :func:`maximize_activation`: the input a filter responds to most (gradient ascent on the
  image), with jitter, blur and an L2 penalty so the result is an image rather than noise.

All of them need a conv layer's output and the class score of the *same* forward pass. They
get both from :func:`score_model`, built with the re-tracing machinery of
:mod:`course.activations`, so they work on Keras 3 ``Sequential`` models (with or without
``keras.Input``, or loaded from a ``.keras`` file) where the public Grad-CAM recipe
``keras.Model(model.inputs, [layer.output, model.output])`` raises. The class score is the
*logit* (the value before softmax): softmax saturates for a confident prediction, and in
float32 the gradient of a probability of 0.99999 is mostly rounding error.
"""

from __future__ import annotations

import math
import weakref

import keras
import numpy as np
from matplotlib.figure import Figure

from course.activations import (
    _as_batch,
    _check_layer_names,
    _input_shape,
    _trace,
    activation_model,
    conv_layer_names,
)
from course.errors import InputShapeError, LayerError

# model -> {layer name or None: score model}; weak so that models can be freed.
_SCORE_MODELS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# One model for maps and class scores
# --------------------------------------------------------------------------------------------


def _applies_softmax(layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    return getattr(getattr(layer, "activation", None), "__name__", None) == "softmax"


class _WithoutSoftmax(keras.layers.Layer):
    """Runs the model's last layer (shared, with its trained weights) without its softmax."""

    def __init__(self, head, **kwargs):
        # The head's dtype policy, so that a float64 (or mixed-precision) model is not cast.
        super().__init__(name=f"{head.name}_logits", dtype=head.dtype_policy, **kwargs)
        self.head = head

    def call(self, inputs):
        if isinstance(self.head, keras.layers.Softmax):
            return inputs
        saved = self.head.activation
        self.head.activation = keras.activations.linear
        try:
            return self.head(inputs)
        finally:
            self.head.activation = saved


def _scores_and_maps(model: keras.Model, layer: str | None):
    """The class scores (logits when the last layer applies softmax) and ``layer``'s maps,
    as tensors of ONE graph on a new input, so that the scores can be differentiated with
    respect to the maps.

    Returns:
        ``(input tensor, scores tensor, maps tensor or None)``.

    Raises:
        LayerError: An unknown layer, or one whose output is not a feature map.
    """
    x = keras.Input(shape=_input_shape(model))
    taps, layers = {}, {}
    output = _trace(model, x, taps, layers)
    if layer is not None:
        _check_layer_names([layer], {name: tuple(t.shape) for name, t in taps.items()})
    maps = taps[layer] if layer is not None else None
    head = model.layers[-1] if model.layers else None
    if head is None or isinstance(head, keras.Model) or not _applies_softmax(head):
        return x, output, maps
    if isinstance(model, keras.Sequential):
        # A Sequential model's last layer is fed by the tensor traced just before it.
        before = list(taps.values())
        return x, _WithoutSoftmax(head)(before[-2] if len(before) > 1 else x), maps
    # A functional model: take the last layer's input from the model's own graph, together
    # with the maps (a layer of this model, not of a nested one) so both share one pass.
    direct = {sub.name for sub in model.layers}
    if len(model.outputs) != 1 or head.output is not model.outputs[0] or (
        layer is not None and layer not in direct
    ):
        return x, output, maps
    wanted = [head.input] + ([model.get_layer(layer).output] if layer is not None else [])
    head_input, *rest = keras.Model(model.inputs, wanted)(x)
    return x, _WithoutSoftmax(head)(head_input), (rest[0] if rest else None)


def score_model(model: keras.Model, layer: str | None = None) -> keras.Model:
    """One model that returns the class scores (logits) and, optionally, a layer's maps.

    Both come from the same forward pass, so a ``tf.GradientTape`` can differentiate the score
    with respect to the input or to the maps. The layers (and trained weights) are shared with
    ``model``; nothing is copied or retrained.

    Args:
        model: A built Keras model (Sequential, functional or nested).
        layer: The name of a layer whose output is a feature map, or None for scores only.

    Returns:
        A ``keras.Model`` whose output is ``{"scores": (N, classes)}`` plus
        ``"maps": (N, H, W, C)`` when ``layer`` is given. The scores are the logits when the
        model's last layer applies softmax (as the course's model and keras.applications
        models do), else the model's output (for a softmax inside a nested model too).

    Raises:
        LayerError: An unknown layer, or one whose output is not a feature map.
    """
    cached = _SCORE_MODELS.setdefault(model, {})
    if layer not in cached:
        x, scores, maps = _scores_and_maps(model, layer)
        outputs = {"scores": scores} if maps is None else {"scores": scores, "maps": maps}
        cached[layer] = keras.Model(x, outputs, name=f"{model.name}_scores")
    return cached[layer]


def _one_image(model: keras.Model, image) -> np.ndarray:
    """One image as a batch of one (1, H, W, C), or a clear error."""
    batch = _as_batch(image, _input_shape(model))
    if len(batch) != 1:
        raise InputShapeError(
            f"expected one image, got a batch of {len(batch)} (shape {np.shape(image)}): "
            "pass images[i] for one image at a time."
        )
    return batch


def _class_index(scores, class_index: int | None) -> int:
    classes = int(scores.shape[-1])
    if class_index is None:
        return int(np.argmax(np.asarray(scores)[0]))
    if not 0 <= class_index < classes:
        raise ValueError(f"class_index must be in 0..{classes - 1}, got {class_index}.")
    return int(class_index)


# --------------------------------------------------------------------------------------------
# Saliency
# --------------------------------------------------------------------------------------------


def saliency_map(
    model: keras.Model,
    image,
    class_index: int | None = None,
    smooth_samples: int = 0,
    noise_level: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """How strongly each pixel changes the class score: ``max_c |d score / d pixel|``.

    Vanilla saliency (Simonyan et al., 2014) is the gradient of the class's logit with respect
    to the input, taken with ``tf.GradientTape``; its absolute value is maxed over the colour
    channels. SmoothGrad (Smilkov et al., 2017) averages the gradient over ``smooth_samples``
    copies of the image with Gaussian noise of standard deviation ``noise_level`` times the
    image's value range, before taking the absolute value.

    Args:
        model: A built Keras model.
        image: One image (H, W, C), in the range the model was trained on.
        class_index: The class whose score is explained; default the predicted class.
        smooth_samples: 0 for vanilla gradients, else the number of noisy copies (20-50).
        noise_level: SmoothGrad's noise as a fraction of the image's value range.
        seed: Seed of SmoothGrad's noise.

    Returns:
        float32 array (H, W), >= 0, in units of score per pixel value (not normalized).

    Raises:
        InputShapeError: Not exactly one image of the model's input shape.
        ValueError: A class index out of range or a negative number of samples.
    """
    import tensorflow as tf

    if smooth_samples < 0:
        raise ValueError(f"smooth_samples must be 0 (vanilla) or positive, got {smooth_samples}.")
    scorer = score_model(model)
    batch = _one_image(model, image)
    index = _class_index(scorer(batch, training=False)["scores"], class_index)
    if smooth_samples:
        spread = noise_level * float(batch.max() - batch.min() or 1.0)
        noise = np.random.default_rng(seed).normal(0.0, spread, (smooth_samples, *batch.shape[1:]))
        batch = (batch + noise).astype(np.float32)
    total = np.zeros(batch.shape[1:], np.float32)
    for start in range(0, len(batch), 32):
        chunk = tf.convert_to_tensor(batch[start : start + 32])
        with tf.GradientTape() as tape:
            tape.watch(chunk)
            score = tf.reduce_sum(scorer(chunk, training=False)["scores"][:, index])
        total += tape.gradient(score, chunk).numpy().sum(axis=0)
    return np.abs(total / len(batch)).max(axis=-1)


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


def last_conv_layer(model: keras.Model) -> str:
    """The name of the model's last convolution layer (Grad-CAM's usual layer).

    Raises:
        LayerError: The model has no conv layer.
    """
    names = conv_layer_names(model)
    if not names:
        raise LayerError(
            f"model '{model.name}' has no convolution layer; pass layer= a layer with feature maps."
        )
    return names[-1]


def grad_cam(
    model: keras.Model, image, layer: str | None = None, class_index: int | None = None
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017): where in a conv layer's maps the class score comes from.

    Each channel k of the layer's maps A gets the weight ``alpha_k`` = the mean over positions of
    ``d score / d A_k``; the heatmap is ``relu(sum_k alpha_k A_k)``, resized (bilinear) to the
    input's resolution and divided by its maximum.

    Args:
        model: A built Keras model (the course's Sequential model included).
        image: One image (H, W, C), in the range the model was trained on.
        layer: The layer whose maps are weighted; default the last conv layer.
        class_index: The class whose score is explained; default the predicted class.

    Returns:
        float32 array (H, W) in [0, 1]; all zeros when no position raises the score.

    Raises:
        LayerError: An unknown layer or one without feature maps, or a model without conv layers.
        InputShapeError: Not exactly one image of the model's input shape.
    """
    import tensorflow as tf

    layer = last_conv_layer(model) if layer is None else layer
    scorer = score_model(model, layer)
    batch = tf.convert_to_tensor(_one_image(model, image))
    with tf.GradientTape() as tape:
        tape.watch(batch)  # records every op, also of layers without weights
        outputs = scorer(batch, training=False)
        maps = outputs["maps"]
        index = _class_index(outputs["scores"], class_index)
        score = outputs["scores"][0, index]
    grads = tape.gradient(score, maps)
    if grads is None:
        raise LayerError(
            f"the score of model '{model.name}' is not computed through the traced output of "
            f"layer '{layer}' (a layer inside a model nested in a functional model): choose a "
            "layer of the outer model, or wrap the nested model in a Sequential one."
        )
    grads = grads[0]  # (h, w, k)
    weights = tf.reduce_mean(grads, axis=(0, 1))  # (k,)
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * weights, axis=-1))
    height, width = batch.shape[1:3]
    cam = tf.image.resize(cam[None, :, :, None], (height, width), method="bilinear")[0, :, :, 0]
    cam = cam.numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else np.zeros_like(cam)


def _display_image(image) -> tuple[np.ndarray, str | None]:
    """An image for imshow: grey (H, W) with a grey colormap, or RGB scaled to [0, 1]."""
    picture = np.asarray(image, dtype=np.float32)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    if picture.ndim == 2:
        return picture, "gray"
    low, high = float(picture.min()), float(picture.max())
    return (picture - low) / (high - low or 1.0), None


def plot_overlay(
    image,
    heatmap,
    ax=None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    colorbar: bool = True,
) -> Figure:
    """Draw a heatmap (Grad-CAM, saliency) over the image it explains.

    The colours run from 0 to the heatmap's maximum; an all-zero heatmap (Grad-CAM when no
    position raises the score) is said so in the title rather than drawn as a flat colour.

    Args:
        image: The image (H, W), (H, W, 1) or (H, W, 3).
        heatmap: (H, W) values >= 0, e.g. from :func:`grad_cam` or :func:`saliency_map`.
        ax: Draw into these axes instead of a new figure.
        alpha: Opacity of the heatmap.
        cmap: The heatmap's colormap.
        title: Text above the image.
        colorbar: Draw a colorbar next to it.

    Returns:
        The Figure.

    Raises:
        ValueError: The heatmap's shape differs from the image's height and width.
    """
    picture, picture_cmap = _display_image(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != picture.shape[:2]:
        raise ValueError(
            f"heatmap of shape {heatmap.shape} does not match the image's {picture.shape[:2]}: "
            "compute it at input resolution (grad_cam and saliency_map do)."
        )
    if ax is None:
        fig = Figure(figsize=(3.2, 3.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.imshow(picture, cmap=picture_cmap, interpolation="nearest")
    peak = float(np.nanmax(heatmap))
    if peak > 0:
        shown = ax.imshow(heatmap, cmap=cmap, alpha=alpha, vmin=0.0, vmax=peak, interpolation="bilinear")
        if colorbar:
            fig.colorbar(shown, ax=ax, shrink=0.75)
    else:
        title = f"{title}\n(heatmap all zero)" if title else "heatmap all zero"
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


# --------------------------------------------------------------------------------------------
# Activation maximization
# --------------------------------------------------------------------------------------------


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
        layer: The name of a layer with feature maps (a conv layer, usually).
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
            default the best of three noise images per channel.

    Returns:
        float32 image (H, W, C) for one channel; (n, H, W, C) for a sequence or None.

    Raises:
        LayerError: An unknown layer or one without feature maps.
        ValueError: A channel index out of range.
    """
    import tensorflow as tf

    maps_model = activation_model(model, layer)
    count = int(maps_model.output[layer].shape[-1])
    single = channel is not None and np.ndim(channel) == 0
    channels = np.arange(count) if channel is None else np.atleast_1d(channel).astype(int)
    if channels.size == 0 or channels.min() < 0 or channels.max() >= count:
        raise ValueError(f"layer '{layer}' has channels 0..{count - 1}; got {channel!r}.")
    low, high = value_range
    shape = _input_shape(model)
    rng = np.random.default_rng(seed)
    select = tf.one_hot(channels, count)[:, None, None, :]

    def channel_means(batch):
        maps = maps_model(tf.convert_to_tensor(batch, tf.float32), training=False)[layer]
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
        first = np.broadcast_to(_as_batch(start, shape), (len(channels), *shape))
    images = tf.Variable(np.array(first, np.float32))
    kernel = tf.constant(_gaussian_kernel(blur_sigma, shape[-1]))
    step_size = learning_rate * (high - low)

    @tf.function(reduce_retracing=True)
    def ascend(shift, blur):
        shifted = tf.roll(images, shift, axis=[1, 2])
        with tf.GradientTape() as tape:
            tape.watch(shifted)
            maps = maps_model(shifted, training=False)[layer]
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
    return result[0] if single else result


def plot_preferred_images(
    model: keras.Model, layers: list[str] | None = None, ncols: int = 16, **options
) -> Figure:
    """Every filter's preferred image (see :func:`maximize_activation`), one montage per layer.

    Args:
        model: A built Keras model.
        layers: Conv layer names; default the first two conv layers.
        ncols: Images per row.
        **options: Passed to :func:`maximize_activation` (steps, jitter, l2, ...).

    Returns:
        A Figure with one panel per layer; tile k is the image that channel k prefers.
    """
    from course.plotting import plot_feature_maps

    layers = conv_layer_names(model)[:2] if layers is None else list(layers)
    preferred = {name: maximize_activation(model, name, None, **options) for name in layers}
    heights = [math.ceil(images.shape[0] / ncols) for images in preferred.values()]
    fig = Figure(figsize=(min(16.0, 1.0 * ncols), 1.0 * sum(heights) + 1.0 * len(layers)), layout="constrained")
    panels = fig.subfigures(len(layers), 1, height_ratios=heights, squeeze=False)[:, 0]
    for panel, (name, images) in zip(panels, preferred.items()):
        grey = images.mean(axis=-1)  # (n, H, W): colour inputs shown as their mean
        plot_feature_maps(
            np.moveaxis(grey, 0, -1), ncols=ncols, normalize="per_map", ax=panel.add_subplot(),
            title=f"'{name}': the input each of its {len(images)} filters responds to most",
        )
    return fig


# --------------------------------------------------------------------------------------------
# Figures for the class-level analysis (course.analysis computes the numbers)
# --------------------------------------------------------------------------------------------


def plot_class_activation(matrix, layer: str = "", ax=None) -> Figure:
    """The classes x channels mean activation (from :func:`course.mean_activation_by_class`).

    Args:
        matrix: Array (classes, channels).
        layer: The layer's name, for the title.
        ax: Draw into these axes instead of a new figure.

    Returns:
        The Figure; each row is scaled to its own maximum so that rows compare by pattern.
    """
    matrix = np.asarray(matrix, dtype=np.float32)
    peak = np.nanmax(matrix, axis=1, keepdims=True)
    rows = np.divide(matrix, peak, out=np.zeros_like(matrix), where=peak > 0)
    if ax is None:
        fig = Figure(figsize=(min(16.0, 3 + 0.18 * matrix.shape[1]), 4.2), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    shown = ax.imshow(rows, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xlabel("channel")
    ax.set_ylabel("class (true label)")
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_title(f"mean activation of '{layer}' per class (each row / its max)", fontsize=10)
    fig.colorbar(shown, ax=ax, label="relative mean activation")
    return fig


def plot_examples(images, captions, ncols: int = 8, title: str | None = None) -> Figure:
    """A grid of images with a caption under each (top-activating digits, mistakes...).

    Args:
        images: Array (n, H, W) or (n, H, W, C).
        captions: n strings.
        ncols: Images per row.
        title: Text above the grid.

    Returns:
        The Figure.
    """
    images = np.asarray(images)
    count = len(images)
    if len(captions) != count:
        raise ValueError(f"got {count} images but {len(captions)} captions: give one per image.")
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    fig = Figure(figsize=(1.5 * ncols, 1.7 * nrows + (0.4 if title else 0)), layout="constrained")
    for i, axis in enumerate(fig.subplots(nrows, ncols, squeeze=False).ravel()):
        axis.set_axis_off()
        if i < count:
            picture, cmap = _display_image(images[i])
            axis.imshow(picture, cmap=cmap, interpolation="nearest")
            axis.set_title(captions[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_misclassified(result: dict, images, count: int = 4, ncols: int = 16) -> Figure:
    """Wrongly classified digits next to their feature maps (from :func:`course.misclassified`).

    Args:
        result: The dict returned by :func:`course.misclassified`.
        images: The images that were passed to it (indexed by ``result["indices"]``).
        count: How many mistakes to show (the first ones).
        ncols: Maps per row.

    Returns:
        A Figure with one row per mistake: the digit, then its maps.

    Raises:
        ValueError: There are no mistakes to show.
    """
    from course.plotting import plot_feature_maps

    count = min(count, len(result["indices"]))
    if count == 0:
        raise ValueError("there are no misclassified images to show.")
    fig = Figure(figsize=(11, 2.2 * count), layout="constrained")
    rows = fig.subfigures(count, 1, squeeze=False)[:, 0]
    for row, i in zip(rows, range(count)):
        left, right = row.subfigures(1, 2, width_ratios=[1, 4])
        index = int(result["indices"][i])
        picture, cmap = _display_image(np.asarray(images)[index])
        ax = left.add_subplot()
        ax.imshow(picture, cmap=cmap, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(
            f"#{index}: label {result['labels'][i]}\npredicted {result['predictions'][i]} "
            f"({result['confidence'][i]:.0%})",
            fontsize=8,
        )
        plot_feature_maps(
            result["maps"][i], ncols=ncols, ax=right.add_subplot(), labels=False,
            title=f"'{result['layer']}' maps of test digit #{index}",
        )
    return fig


def plot_projection(coords, labels, explained=None, title: str | None = None, ax=None) -> Figure:
    """Images as points in 2-D (from :func:`course.project_maps`), coloured by class.

    Args:
        coords: Array (N, 2).
        labels: Array (N,) of integer classes.
        explained: The components' explained-variance ratios, for the axis labels.
        title: Text above the plot.
        ax: Draw into these axes instead of a new figure.

    Returns:
        The Figure.
    """
    coords, labels = np.asarray(coords), np.asarray(labels)
    if ax is None:
        fig = Figure(figsize=(6, 5), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="class")
    for axis, k in ((ax.set_xlabel, 0), (ax.set_ylabel, 1)):
        share = f" ({explained[k]:.0%} of variance)" if explained is not None else ""
        axis(f"principal component {k + 1}{share}")
    ax.set_title(title or "feature maps projected to 2-D (PCA)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# A bigger network on a real photo
# --------------------------------------------------------------------------------------------


def sample_photo(size: int = 224) -> np.ndarray:
    """The photo matplotlib ships in its sample data (Grace Hopper), square, as RGB in [0, 1].

    Args:
        size: Height and width after a centre crop and resize.

    Returns:
        float32 array (size, size, 3).
    """
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = Image.open(handle).convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    return np.asarray(photo, dtype=np.float32) / 255.0


def load_mobilenet_v2(weights: str | None = "imagenet") -> tuple[keras.Model, bool, str]:
    """``keras.applications.MobileNetV2`` (224 x 224 RGB), pretrained when the weights are available.

    ImageNet weights come from keras' cache (``~/.keras/models``) or a download. Offline, with
    no cached copy, the model gets random weights instead: it still has the same layers, shapes
    and 150-odd feature-map layers, but its maps then show no learned features.

    Args:
        weights: ``"imagenet"``, a path to a weights file, or None for random weights.

    Returns:
        ``(model, pretrained, note)``: the model, whether it has learned weights, and a sentence
        to print or put in a figure title saying which.
    """
    try:
        model = keras.applications.MobileNetV2(weights=weights)
        pretrained = weights is not None
    except Exception as exc:  # offline, blocked, or a bad file: fall back, and say so
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None)
        pretrained = False
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
        note = (
            f"RANDOM weights: the ImageNet weights could not be loaded ({reason}). "
            "The maps show no learned features, only the network's structure."
        )
        return model, pretrained, note
    if pretrained:
        return model, True, "ImageNet weights: the maps show learned features."
    return model, False, "RANDOM weights (asked for): the maps show no learned features."


def mobilenet_input(photo) -> np.ndarray:
    """A photo in [0, 1] as MobileNetV2 expects it: values scaled to [-1, 1]."""
    return np.asarray(photo, dtype=np.float32) * 2.0 - 1.0
