"""Numbers about feature maps and filters: statistics, dead filters, the strongest channels."""

from __future__ import annotations

import warnings

import numpy as np

from course import validate
from course.errors import InputError, InputShapeError, LayerError, OptionError
from course.normalize import NonFiniteWarning


def _batch_maps(maps) -> np.ndarray:
    return validate.batch_maps(maps)


def activation_stats(maps) -> dict:
    """Per-channel statistics over every image and position.

    Args:
        maps: (N, H, W, C) or (H, W, C), or a dict ``{layer: maps}``.

    Returns:
        ``{"mean", "std", "max", "active_fraction"}``, each an array of shape (C,);
        ``active_fraction`` is the share of positions with a value above 0. For a dict,
        a dict of these per layer.
    """
    if isinstance(maps, dict):
        return {name: activation_stats(m) for name, m in maps.items()}
    batch = _batch_maps(maps)
    flat = batch.reshape(-1, batch.shape[-1])
    return {
        "mean": flat.mean(axis=0),
        "std": flat.std(axis=0),
        "max": flat.max(axis=0),
        "active_fraction": (flat > 0).mean(axis=0),
    }


def dead_filters(maps, threshold: float = 0.0) -> np.ndarray:
    """Channels that never fire: their maximum over every image and position is <= threshold.

    Judge this over many images (hundreds): a filter silent on one digit may fire on another.

    Args:
        maps: (N, H, W, C) or (H, W, C).
        threshold: The activation a channel must exceed somewhere to count as alive.

    NaN values are ignored (with a warning naming their channels): a channel that is NaN
    everywhere never gives an activation, so it is dead; Inf counts as firing.

    Returns:
        The dead channels' indices, ascending (int array, possibly empty).
    """
    flat = _batch_maps(maps)
    threshold = validate.number(threshold, "threshold")
    broken = np.flatnonzero(np.isnan(flat).any(axis=(0, 1, 2)))
    if broken.size:
        warnings.warn(
            f"channels {broken.tolist()[:20]} contain NaN values, which are ignored here (a channel that is "
            "NaN everywhere counts as dead); a diverged model or broken input is the usual cause.",
            NonFiniteWarning,
            stacklevel=validate.outside_stacklevel(),
        )
    peaks = np.fmax.reduce(flat.reshape(-1, flat.shape[-1]), axis=0)  # NaN only where all are NaN
    return np.flatnonzero(np.isnan(peaks) | (peaks <= threshold))


def top_channels(maps, k: int = 5) -> np.ndarray:
    """The k channels with the strongest mean activation, strongest first.

    Args:
        maps: One image's maps (H, W, C) or (1, H, W, C), or a batch (N, H, W, C).
        k: How many channels (at most C).

    Returns:
        Shape (k,) for one image, (N, k) for a batch.
    """
    batch = _batch_maps(maps)
    array = np.asarray(maps)
    channels = batch.shape[-1]
    k = validate.integer(k, "k")
    if not 1 <= k <= channels:
        raise OptionError(f"k must be between 1 and the {channels} channels, got {k}.")
    means = batch.mean(axis=(1, 2))
    order = np.argsort(-means, axis=1, kind="stable")[:, :k]
    return order[0] if array.ndim == 3 or array.shape[0] == 1 else order


def kernel_parts(model, layer) -> tuple[str, dict[str, np.ndarray]]:
    """A conv layer's kernels, named by what they are, in one axis order.

    Every kind is returned as (kernel height, kernel width, inputs, outputs) (1-D: (width,
    inputs, outputs)), whatever order Keras stores it in:

    * ``Conv2D`` (and ``Conv3D`` sliced at its middle depth): ``{"kernel": (kh, kw, in, filters)}``;
    * ``DepthwiseConv2D``: ``{"depthwise": (kh, kw, in, multiplier)}``: one kernel per input
      channel (and per multiplier), each seeing only its own channel;
    * ``SeparableConv2D``: ``{"depthwise": (kh, kw, in, multiplier), "pointwise": (1, 1, in *
      multiplier, filters)}``: a depthwise part, then a 1x1 mixing of channels;
    * ``Conv2DTranspose``: ``{"kernel": (kh, kw, in, filters)}``: Keras stores it as
      (kh, kw, filters, in), and it is swapped back here;
    * ``Conv1D``: ``{"kernel": (width, in, filters)}``: 1-D strips.

    Args:
        model: A built Keras model.
        layer: The conv layer: name, index or layer object (nested models' layers included).

    Returns:
        ``(kind, parts)``: the layer's class name and its float32 kernel arrays.

    Raises:
        LayerError: No such layer, or a layer without a convolution kernel.
    """
    import keras

    from course.activations import conv_layer_names, find_layer

    found = find_layer(model, layer)
    kind = type(found).__name__
    name = getattr(found, "name", layer)
    if isinstance(found, keras.layers.SeparableConv2D):
        parts = {"depthwise": found.depthwise_kernel, "pointwise": found.pointwise_kernel}
    elif isinstance(found, keras.layers.DepthwiseConv2D):
        parts = {"depthwise": found.kernel}
    elif isinstance(found, keras.layers.Conv2DTranspose):
        parts = {"kernel": np.swapaxes(np.asarray(found.kernel), 2, 3)}
    elif isinstance(found, keras.layers.Conv3D):
        kernel = np.asarray(found.kernel)
        parts = {"kernel": kernel[kernel.shape[0] // 2]}
    elif isinstance(found, (keras.layers.Conv1D, keras.layers.Conv2D)):
        parts = {"kernel": found.kernel}
    else:
        raise LayerError(
            f"layer '{name}' has no convolution kernel (a {kind}); conv layers: {conv_layer_names(model)}"
        )
    return kind, {part: np.asarray(value, dtype=np.float32) for part, value in parts.items()}


def filter_weights(model, layer) -> np.ndarray:
    """A conv layer's kernels (for a separable layer, its depthwise part).

    Args:
        model: A built Keras model.
        layer: The conv layer: name, index or layer object (nested models' layers included).

    Returns:
        float32 array (kernel height, kernel width, input channels, filters) (see
        :func:`kernel_parts` for each kind's axes; Conv1D gives (width, inputs, filters)).

    Raises:
        LayerError: No such layer, or a layer without a convolution kernel.
    """
    _, parts = kernel_parts(model, layer)
    return parts.get("kernel", parts.get("depthwise"))


# --------------------------------------------------------------------------------------------
# Class-level analysis: which channels fire for which digits, and where the model goes wrong
# --------------------------------------------------------------------------------------------


def _per_image(model, x, layer: str, reduce, batch_size: int) -> np.ndarray:
    """``reduce(maps)`` of one layer, batch by batch, so memory stays bounded by ``batch_size``."""
    from course.activations import extract_feature_maps

    batch_size = validate.integer(batch_size, "batch_size", 1)
    if len(x) == 0:
        raise InputShapeError("the set of images is empty: give at least one image.")
    parts = [
        reduce(extract_feature_maps(model, x[start : start + batch_size], layer, batch_size)[layer])
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def _images_and_labels(model, x, y):
    """Images checked against the model (a :class:`course.inputs.Feed`) and integer labels, one per image."""
    from course.inputs import model_feed

    x = model_feed(model, x, "x")
    labels = validate.array(y, "y")
    if not np.issubdtype(labels.dtype, np.integer) and not np.all(np.mod(labels, 1) == 0):
        raise InputError(f"y must hold integer class labels, got values such as {labels.ravel()[:3]}.")
    labels = labels.astype(int).ravel()
    if labels.min() < 0:
        raise InputError(f"y holds negative labels (min {labels.min()}): class labels are 0, 1, 2, ...")
    if len(x) != len(labels):
        raise InputShapeError(f"got {len(x)} images but {len(labels)} labels: give one label per image.")
    return x, labels


def mean_activation_by_class(model, x, y, layer: str, batch_size: int = 512) -> np.ndarray:
    """The mean activation of every channel over the images of each class.

    Args:
        model: A built Keras model.
        x: Images (N, H, W, C) in the range the model was trained on.
        y: Integer labels (N,).
        layer: A layer with feature maps.
        batch_size: Images per forward pass.

    Returns:
        float32 array (classes, channels), classes ``0..max(y)``; the mean over images and
        positions. A class without images is a row of NaN.

    Raises:
        ValueError: ``x`` and ``y`` of different lengths, or no images.
        LayerError: An unknown layer, or one without feature maps.
    """
    x, y = _images_and_labels(model, x, y)
    means = _per_image(model, x, layer, lambda maps: maps.mean(axis=(1, 2)), batch_size)
    table = np.full((int(y.max()) + 1, means.shape[1]), np.nan, np.float32)
    for label in np.unique(y):
        table[label] = means[y == label].mean(axis=0)
    return table


def top_activating_images(
    model, x, layer: str, channel: int, k: int = 9, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """The k images on which a channel responds most: the largest mean activation over its map.

    The mean (the same objective as :func:`course.maximize_activation`) rather than the single
    strongest position: on MNIST's saturated strokes many digits reach the same maximum, so
    ranking by it would be mostly ties.

    Args:
        model: A built Keras model.
        x: Images (N, H, W, C).
        layer: A layer with feature maps.
        channel: The channel's index.
        k: How many images (at most N).
        batch_size: Images per forward pass.

    Returns:
        ``(indices, values)``: the images' indices into ``x``, strongest first, and the
        channel's mean activation on each.

    Raises:
        ValueError: A channel or k out of range.
        LayerError: An unknown layer, or one without feature maps.
    """
    from course.inputs import model_feed

    x = model_feed(model, x, "x")
    k = validate.integer(k, "k")
    if not 1 <= k <= len(x):
        raise OptionError(f"k must be between 1 and the {len(x)} images, got {k}.")
    channel = validate.integer(channel, "channel", 0)

    def channel_mean(maps):
        if not 0 <= channel < maps.shape[-1]:
            raise OptionError(
                f"layer '{layer}' has channels 0..{maps.shape[-1] - 1}, got channel {channel}."
            )
        return maps[..., channel].mean(axis=(1, 2))

    values = _per_image(model, x, layer, channel_mean, batch_size)
    order = np.argsort(-values, kind="stable")[:k]
    return order, values[order]


def misclassified(model, x, y, layer: str | None = None, batch_size: int = 512) -> dict:
    """The images the model gets wrong, with its prediction and their feature maps.

    Args:
        model: A built Keras classifier.
        x: Images (N, H, W, C).
        y: Integer labels (N,).
        layer: The layer whose maps are returned; default the first conv layer.
        batch_size: Images per forward pass.

    Returns:
        A dict of arrays, one entry per wrong image, in the order of ``x``: ``"indices"``
        (into ``x``), ``"labels"``, ``"predictions"``, ``"confidence"`` (the model's output for
        the predicted class: a probability for a softmax model), ``"maps"`` (M, H, W, C) and
        ``"layer"`` (the layer's name) and ``"images"`` (the wrong images; for a model with
        several inputs, of its image input).

    Raises:
        ValueError: ``x`` and ``y`` of different lengths.
    """
    from course.activations import conv_layer_names, extract_feature_maps

    x, y = _images_and_labels(model, x, y)
    layer = conv_layer_names(model)[0] if layer is None else layer
    outputs = np.asarray(model.predict(x.value(), batch_size=batch_size, verbose=0))
    predictions = outputs.argmax(axis=1)
    wrong = np.flatnonzero(predictions != y)
    maps = extract_feature_maps(model, x[wrong], layer, batch_size)[layer] if len(wrong) else None
    return {
        "indices": wrong,
        "labels": y[wrong],
        "predictions": predictions[wrong],
        "confidence": outputs[wrong, predictions[wrong]],
        "maps": maps,
        "layer": layer,
        "images": x.images[wrong],
    }


def project_maps(maps, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA of per-image activations: each image becomes a point in ``n_components`` dimensions.

    The principal components come from numpy's SVD of the centred (N, features) matrix, exact
    when the smaller side is at most 500. A full SVD of, say, 2,000 images x 7,744 conv2 values
    takes minutes on 2 cores, so for larger matrices the SVD is taken of the matrix's projection
    onto a small subspace that captures its top components (a randomized range finder with 10
    extra dimensions and 7 power iterations, Halko et al. 2011, as scikit-learn does): accurate
    unless two components explain almost the same variance, in which case which of the two
    comes first is arbitrary anyway. Each axis's sign is fixed so that its largest loading is
    positive, so the result does not flip between runs.

    Args:
        maps: (N, H, W, C) feature maps, or any (N, ...) array (flattened per image).
        n_components: How many principal components.

    Returns:
        ``(coords, explained)``: float32 (N, n_components), the images' coordinates along the
        components (the centred data times the axes), and the share of the total variance
        each component explains (n_components,).

    Raises:
        ValueError: Fewer than 2 images, or more components than images or features.
    """
    values = validate.array(maps, "maps")
    if values.ndim == 3:
        raise InputShapeError(
            f"maps of shape {values.shape} look like ONE image's (H, W, C) maps; PCA needs many images: "
            "pass a batch (N, H, W, C), e.g. extract_feature_maps(model, x_test[:500], layer)[layer]."
        )
    if values.ndim < 2:
        raise InputShapeError(f"PCA needs (N, features) or (N, H, W, C) values, got shape {values.shape}.")
    flat = values.astype(np.float64).reshape(len(values), -1)
    count, features = flat.shape
    n_components = validate.integer(n_components, "n_components")
    if count < 2:
        raise InputShapeError(f"PCA needs at least 2 images, got {count}.")
    if not 1 <= n_components <= min(count, features):
        raise OptionError(
            f"n_components must be between 1 and {min(count, features)} "
            f"(images: {count}, features: {features}), got {n_components}."
        )
    centred = flat - flat.mean(axis=0)
    if min(count, features) <= 500:
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
    else:
        basis = centred @ np.random.default_rng(0).standard_normal((features, n_components + 10))
        for _ in range(7):
            basis, _ = np.linalg.qr(basis)
            basis = centred @ (centred.T @ basis)
        basis, _ = np.linalg.qr(basis)
        _, s, vt = np.linalg.svd(basis.T @ centred, full_matrices=False)
    axes = vt[:n_components]
    axes *= np.where(axes[np.arange(n_components), np.abs(axes).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    total = float(np.square(centred).sum())
    explained = s[:n_components] ** 2 / total if total > 0 else np.zeros(n_components)
    return (centred @ axes.T).astype(np.float32), explained
