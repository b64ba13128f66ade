"""Figures of feature maps and filters.

Every function returns a matplotlib ``Figure`` (or draws into the ``ax`` you give) and never
calls ``plt.show()`` or touches pyplot's global state, so it works headless, in scripts, in
notebooks (a returned Figure displays itself) and in the grader. Many maps are drawn as ONE
montage image with a single ``imshow``, which is about ten times faster than a grid of
subplots and scales to hundreds of channels.
"""

from __future__ import annotations

import math

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from course.normalize import normalize_maps

#: Colour of the gaps between tiles, distinct from every value of the usual colormaps.
GAP_COLOR = "#5a7bb5"
SHARED_SCALE_MODES = (None, "per_layer", "global")


def montage(maps: np.ndarray, ncols: int = 8, pad: int = 1) -> np.ndarray:
    """Tile maps of shape (H, W, C) into one 2-D image, row by row, channel 0 first.

    Args:
        maps: C maps of H x W.
        ncols: Tiles per row (fewer when there are fewer maps).
        pad: Pixels between tiles; they (and unused tiles) are NaN.

    Returns:
        A float32 array of shape (rows*(H+pad)-pad, cols*(W+pad)-pad).
    """
    height, width, count = maps.shape
    ncols = max(1, min(ncols, count))
    nrows = math.ceil(count / ncols)
    tiles = np.full((nrows * ncols, height + pad, width + pad), np.nan, np.float32)
    tiles[:count, :height, :width] = np.moveaxis(maps, -1, 0)
    grid = tiles.reshape(nrows, ncols, height + pad, width + pad).transpose(0, 2, 1, 3)
    grid = grid.reshape(nrows * (height + pad), ncols * (width + pad))
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad] if pad else grid


def _one_image_maps(maps, what: str = "maps") -> np.ndarray:
    maps = np.asarray(maps)
    if maps.ndim == 4 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim != 3:
        hint = (
            f"pick one image first, e.g. {what}[0]"
            if maps.ndim == 4
            else "a Dense or Flatten output is not a feature map"
        )
        raise ValueError(
            f"expected one image's feature maps of shape (H, W, C), got {maps.shape}: {hint}."
        )
    return maps


def _new_axes(ax, ncols: int, nrows: int, tile_aspect: float):
    if ax is not None:
        return ax.figure, ax
    width = min(16.0, max(3.0, 1.1 * ncols))
    height = max(1.5, width * nrows / ncols * tile_aspect + 0.6)
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _label_tiles(ax, count: int, ncols: int, height: int, width: int, pad: int) -> None:
    """Write each tile's channel index in its top-left corner."""
    fontsize = 8 if count <= 64 else 6 if count <= 256 else 4.5
    for channel in range(count):
        row, col = divmod(channel, ncols)
        ax.text(
            col * (width + pad) - 0.4, row * (height + pad) - 0.4, str(channel),
            fontsize=fontsize, color="yellow", va="top", ha="left",
            bbox={"boxstyle": "square,pad=0.1", "facecolor": "black", "alpha": 0.55, "linewidth": 0},
        )


def _draw_montage(ax, maps, ncols, cmap, vmin, vmax, labels, pad=1, gap_color=GAP_COLOR):
    height, width, count = maps.shape
    ncols = max(1, min(ncols, count))
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=gap_color)
    image = ax.imshow(
        montage(maps, ncols, pad), cmap=colormap, vmin=vmin, vmax=vmax, interpolation="nearest"
    )
    ax.set_axis_off()
    if labels:
        _label_tiles(ax, count, ncols, height, width, pad)
    return image


def plot_feature_maps(
    maps,
    ncols: int = 8,
    cmap: str = "gray",
    normalize: str | None = "per_map",
    title: str | None = None,
    ax=None,
    labels: bool = True,
) -> Figure:
    """Draw one image's feature maps as a single labelled montage.

    Args:
        maps: Shape (H, W, C), or (1, H, W, C) as returned for one image.
        ncols: Maps per row.
        cmap: A matplotlib colormap name.
        normalize: A mode of :func:`course.normalize_maps`, or None for raw values. A
            colorbar is drawn only when all maps share one scale (None, ``"per_layer"``,
            ``"global"``); with ``"per_map"`` or ``"robust"`` each map has its own scale,
            and the title says so instead.
        title: Text above the montage; default says the count and the scaling.
        ax: Draw into these axes instead of a new figure.
        labels: Write each map's channel index on it.

    Returns:
        The Figure holding the montage.

    Raises:
        ValueError: Maps that are not one image's (H, W, C) maps, or an unknown mode.
    """
    maps = _one_image_maps(maps)
    height, width, count = maps.shape
    shown = maps if normalize is None else normalize_maps(maps, normalize)
    vmin, vmax = (0.0, 1.0) if normalize is not None else (float(np.nanmin(maps)), float(np.nanmax(maps)))
    ncols = max(1, min(ncols, count))
    fig, ax = _new_axes(ax, ncols, math.ceil(count / ncols), height / width)
    image = _draw_montage(ax, shown, ncols, cmap, vmin, vmax, labels)
    shared = normalize in SHARED_SCALE_MODES
    if title is None:
        scale = "raw values" if normalize is None else f"scaled {normalize.replace('_', ' ')}"
        title = f"{count} feature maps of {height}x{width} ({scale})"
    ax.set_title(title, fontsize=10)
    if shared:
        label = "activation" if normalize is None else "activation (shared scale, 0 to 1)"
        fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    return fig


def plot_filters(
    model,
    layer: str,
    in_channel: int | None = None,
    ncols: int = 8,
    cmap: str = "RdBu_r",
    ax=None,
    labels: bool = True,
) -> Figure:
    """Draw a conv layer's kernels with a diverging colormap centred on 0.

    Red weights excite, blue ones inhibit; white is 0. All kernels share one symmetric scale,
    so the colorbar is honest.

    Args:
        model: A built Keras model.
        layer: The name of a conv layer.
        in_channel: For layers with several input channels, show the kernels of this input
            channel; default the mean over input channels.
        ncols: Kernels per row.
        cmap: A diverging matplotlib colormap.
        ax: Draw into these axes instead of a new figure.
        labels: Write each filter's index on it.

    Returns:
        The Figure.
    """
    from course.analysis import filter_weights

    kernels = filter_weights(model, layer)  # (kh, kw, in, out)
    inputs = kernels.shape[2]
    if in_channel is not None:
        if not 0 <= in_channel < inputs:
            raise ValueError(f"in_channel must be in 0..{inputs - 1} for layer '{layer}', got {in_channel}.")
        shown, which = kernels[:, :, in_channel, :], f"input channel {in_channel}"
    elif inputs == 1:
        shown, which = kernels[:, :, 0, :], "one input channel"
    else:
        shown, which = kernels.mean(axis=2), f"mean over {inputs} input channels"
    limit = float(np.abs(shown).max()) or 1.0
    count = shown.shape[-1]
    ncols = max(1, min(ncols, count))
    fig, ax = _new_axes(ax, ncols, math.ceil(count / ncols), 1.0)
    # Black gaps: the diverging colormap uses blue and white for weights.
    image = _draw_montage(ax, shown, ncols, cmap, -limit, limit, labels, gap_color="black")
    size = f"{kernels.shape[0]}x{kernels.shape[1]}"
    ax.set_title(f"'{layer}': {count} kernels of {size} ({which})", fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    return fig


def compare_layers(model, image, layers=None, ncols: int = 8, normalize: str = "per_map") -> Figure:
    """The input image next to the feature maps of two (or more) layers for it.

    Args:
        model: A built Keras model.
        image: One image (H, W, C) in the range the model was trained on.
        layers: Layer names; default the first two conv layers.
        ncols: Maps per row in each montage.
        normalize: The scaling of every montage (see :func:`plot_feature_maps`).

    Returns:
        A Figure with one panel for the image and one per layer.
    """
    from course.activations import conv_layer_names, extract_feature_maps

    layers = conv_layer_names(model)[:2] if layers is None else list(layers)
    maps = extract_feature_maps(model, image, layers)
    fig = Figure(figsize=(4 + 6 * len(layers), 6.5), layout="constrained")
    panels = fig.subfigures(1, len(layers) + 1, width_ratios=[1] + [3] * len(layers))
    picture = np.asarray(image, dtype=np.float32)
    picture = picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture
    image_ax = panels[0].add_subplot()
    image_ax.imshow(picture, cmap="gray", interpolation="nearest")
    image_ax.set_title(f"input {picture.shape[0]}x{picture.shape[1]}", fontsize=10)
    image_ax.set_axis_off()
    for panel, name in zip(panels[1:], layers):
        one = maps[name][0]
        plot_feature_maps(
            one, ncols=ncols, normalize=normalize, ax=panel.add_subplot(),
            title=f"'{name}': {one.shape[-1]} maps of {one.shape[0]}x{one.shape[1]}",
        )
    fig.suptitle("Early layers respond to edges and strokes; deeper ones to larger parts", fontsize=11)
    return fig
