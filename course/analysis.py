"""Numbers about feature maps and filters: statistics, dead filters, the strongest channels."""

from __future__ import annotations

import numpy as np

from course.errors import LayerError


def _batch_maps(maps) -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim == 3:
        maps = maps[np.newaxis]
    if maps.ndim != 4:
        raise ValueError(
            f"expected feature maps of shape (N, H, W, C) or (H, W, C), got {maps.shape}: "
            "a Dense layer's output is not a feature map."
        )
    return maps


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
    flat = _batch_maps(maps).reshape(-1, np.shape(maps)[-1])
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

    Returns:
        The dead channels' indices, ascending (int array, possibly empty).
    """
    flat = _batch_maps(maps)
    return np.flatnonzero(flat.max(axis=(0, 1, 2)) <= threshold)


def top_channels(maps, k: int = 5) -> np.ndarray:
    """The k channels with the strongest mean activation, strongest first.

    Args:
        maps: One image's maps (H, W, C) or (1, H, W, C), or a batch (N, H, W, C).
        k: How many channels (at most C).

    Returns:
        Shape (k,) for one image, (N, k) for a batch.
    """
    array = np.asarray(maps)
    batch = _batch_maps(array)
    channels = batch.shape[-1]
    if not 1 <= k <= channels:
        raise ValueError(f"k must be between 1 and the {channels} channels, got {k}.")
    means = batch.mean(axis=(1, 2))
    order = np.argsort(-means, axis=1, kind="stable")[:, :k]
    return order[0] if array.ndim == 3 or array.shape[0] == 1 else order


def filter_weights(model, layer: str) -> np.ndarray:
    """A conv layer's kernels.

    Args:
        model: A built Keras model.
        layer: The conv layer's name (nested models' layers included).

    Returns:
        float32 array (kernel height, kernel width, input channels, filters).

    Raises:
        LayerError: No such layer, or a layer without a 4-D kernel.
    """
    from course.activations import conv_layer_names, find_layer

    found = find_layer(model, layer)
    weights = found.get_weights()
    if not weights or np.ndim(weights[0]) != 4:
        raise LayerError(
            f"layer '{layer}' has no convolution kernel (a {type(found).__name__}); "
            f"conv layers: {conv_layer_names(model)}"
        )
    return np.asarray(weights[0], dtype=np.float32)
