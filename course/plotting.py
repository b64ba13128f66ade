"""Figures of feature maps and filters.

Every function returns a matplotlib ``Figure`` (or draws into the ``ax`` you give) and never
calls ``plt.show()`` or touches pyplot's global state, so it works headless, in scripts, in
notebooks (a returned Figure displays itself) and in the grader. Many maps are drawn as ONE
montage image with a single ``imshow``, which is about ten times faster than a grid of
subplots and scales to hundreds of channels.
"""

from __future__ import annotations

import functools
import math

import matplotlib
import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.textpath import TextPath
from matplotlib.transforms import IdentityTransform

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


def _new_axes(ax, ncols: int, nrows: int, tile: tuple[int, int], colorbar: bool):
    """``(figure, axes, colorbar axes or None)`` for a montage of ``nrows x ncols`` tiles.

    With ``ax`` given, draw there (a colorbar then takes room from ``ax``). Otherwise make a
    figure sized to the montage, placed by hand: a layout engine makes savefig draw
    everything twice (once only to measure), a third of the time of a PNG.
    """
    if ax is not None:
        return ax.figure, ax, None
    height, width = tile
    rows, cols = nrows * (height + 1) - 1, ncols * (width + 1) - 1  # the montage, in pixels
    fig_width = min(16.0, max(3.0, 1.1 * ncols))
    fig_height = max(1.5, fig_width * nrows / ncols * height / width + 0.6)
    margin, title, bar = 0.05, 0.35, 1.0 if colorbar else 0.0  # inches
    fig_width += bar
    room_w, room_h = fig_width - 2 * margin - bar, fig_height - margin - title
    image_w = min(room_w, room_h * cols / rows)
    image_h = image_w * rows / cols
    left, bottom = margin + (room_w - image_w) / 2, margin + (room_h - image_h) / 2
    fig = Figure(figsize=(fig_width, fig_height))
    ax = fig.add_axes((left / fig_width, bottom / fig_height, image_w / fig_width, image_h / fig_height))
    if not colorbar:
        return fig, ax, None
    bar_box = (left + image_w + 0.1, bottom + 0.1 * image_h, 0.15, 0.8 * image_h)
    cax = fig.add_axes((bar_box[0] / fig_width, bar_box[1] / fig_height, bar_box[2] / fig_width, bar_box[3] / fig_height))
    return fig, ax, cax


def _colorbar(fig, ax, cax, image, label: str) -> None:
    if cax is None:  # drawing into the caller's axes: take the colorbar's room from them
        fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    else:
        fig.colorbar(image, cax=cax, label=label)


class _TileLabel(Text):
    """A tile's channel index: a real ``Text`` in ``ax.texts``, drawn by :class:`_TileLabels`."""

    def draw(self, renderer):
        """Nothing: the axes' :class:`_TileLabels` draws every tile label in one pass."""


@functools.lru_cache(maxsize=512)
def _glyph(char: str, font: FontProperties) -> tuple[np.ndarray, np.ndarray, float]:
    """The outline of ``char`` in ``font`` (baseline at 0) and its advance, in points."""
    outline = TextPath((0, 0), char, prop=font)
    zero = TextPath((0, 0), "0", prop=font).vertices
    after = TextPath((0, 0), char + "0", prop=font).vertices[len(outline.vertices) :]
    return outline.vertices, outline.codes, float(after[:, 0].min() - zero[:, 0].min())


@functools.lru_cache(maxsize=32)
def _line_metrics(font: FontProperties) -> tuple[float, float]:
    """Ascent and descent of a line of text in ``font`` (as Text measures "lp"), in points."""
    y = TextPath((0, 0), "lp", prop=font).vertices[:, 1]
    return float(y.max()), float(-y.min())


class _TileLabels(Artist):
    """Draws all the tile labels of an axes at once: one path of dark boxes, one of glyphs.

    Hundreds of ``Text`` artists each doing their own layout, box and glyph rendering took
    about 1 s for 512 tiles; outlines of cached glyphs take a few milliseconds. Each label's
    own text, position, colour, font and visibility are honoured.
    """

    def __init__(self):
        super().__init__()
        self.set_in_layout(False)
        self.set_zorder(3)  # where Text artists are drawn

    def draw(self, renderer):
        labels = [t for t in self.axes.texts if isinstance(t, _TileLabel) and t.get_visible()]
        if not self.get_visible() or not labels:
            return
        scale = renderer.points_to_pixels(1.0)
        corners = self.axes.transData.transform([label.get_position() for label in labels])
        boxes, glyphs = [], {}
        for (left, top), label in zip(corners, labels):
            font = label.get_fontproperties()
            ascent, descent = _line_metrics(font)
            pad, baseline, pen = 0.1 * font.get_size_in_points() * scale, top - ascent * scale, left
            color = matplotlib.colors.to_rgba(label.get_color(), label.get_alpha())
            for char in label.get_text():
                vertices, codes, advance = _glyph(char, font)
                glyphs.setdefault(color, []).append((vertices * scale + (pen, baseline), codes))
                pen += advance * scale
            bottom = baseline - descent * scale
            boxes.append([(left - pad, bottom - pad), (pen + pad, bottom - pad), (pen + pad, top + pad), (left - pad, top + pad), (0, 0)])
        gc = renderer.new_gc()
        gc.set_linewidth(0)
        box_codes = np.tile([Path.MOVETO, Path.LINETO, Path.LINETO, Path.LINETO, Path.CLOSEPOLY], len(boxes))
        renderer.draw_path(gc, Path(np.concatenate(boxes), box_codes), IdentityTransform(), (0, 0, 0, 0.55))
        for color, parts in glyphs.items():
            path = Path(np.concatenate([v for v, _ in parts]), np.concatenate([c for _, c in parts]))
            renderer.draw_path(gc, path, IdentityTransform(), color)
        gc.restore()


def _label_tiles(ax, count: int, ncols: int, height: int, width: int, pad: int, below: bool = False) -> None:
    """Write each tile's channel index in its top-left corner (or in the gap just below the
    tile, where it hides no data), yellow on a dark box."""
    fontsize = 8 if count <= 64 else 6 if count <= 256 else 4.5
    clip = matplotlib.transforms.TransformedPatchPath(ax.patch)  # one for all: cheap to add
    top = height - 0.45 if below else -0.4
    for channel in range(count):
        row, col = divmod(channel, ncols)
        label = _TileLabel(
            col * (width + pad) - 0.4, row * (height + pad) + top, str(channel),
            fontsize=fontsize, color="yellow", va="top", ha="left", clip_path=clip,
        )
        label.set_in_layout(False)
        ax.add_artist(label)
    if not any(isinstance(child, _TileLabels) for child in ax.get_children()):
        ax.add_artist(_TileLabels())


def _draw_montage(ax, maps, ncols, cmap, vmin, vmax, labels, pad=1, gap_color=GAP_COLOR):
    height, width, count = maps.shape
    ncols = max(1, min(ncols, count))
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=gap_color)
    # Colour after resampling ("data"): the same pixels as "rgba" with nearest, but faster.
    image = ax.imshow(
        montage(maps, ncols, pad), cmap=colormap, vmin=vmin, vmax=vmax,
        interpolation="nearest", interpolation_stage="data",
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
    shared = normalize in SHARED_SCALE_MODES
    fig, ax, cax = _new_axes(ax, ncols, math.ceil(count / ncols), (height, width), shared)
    image = _draw_montage(ax, shown, ncols, cmap, vmin, vmax, labels)
    if title is None:
        scale = "raw values" if normalize is None else f"scaled {normalize.replace('_', ' ')}"
        title = f"{count} feature maps of {height}x{width} ({scale})"
    ax.set_title(title, fontsize=10, y=1.0)  # a fixed y skips measuring the hidden ticks
    if shared:
        label = "activation" if normalize is None else "activation (shared scale, 0 to 1)"
        _colorbar(fig, ax, cax, image, label)
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
    fig, ax, cax = _new_axes(ax, ncols, math.ceil(count / ncols), shown.shape[:2], True)
    # Black gaps: the diverging colormap uses blue and white for weights.
    image = _draw_montage(ax, shown, ncols, cmap, -limit, limit, False, gap_color="black")
    if labels:  # under each kernel, in the gap: on a 3x3 kernel a corner label hides a weight
        height, width = shown.shape[:2]
        rows = math.ceil(count / ncols) * (height + 1) - 1
        ax.add_patch(matplotlib.patches.Rectangle((-0.5, rows - 0.5), ncols * (width + 1) - 1, 1, color="black"))
        ax.set_ylim(rows + 0.5, -0.5)  # room for the last row's labels
        _label_tiles(ax, count, ncols, height, width, 1, below=True)
    size = f"{kernels.shape[0]}x{kernels.shape[1]}"
    ax.set_title(f"'{layer}': {count} kernels of {size} ({which})", fontsize=10, y=1.0)
    _colorbar(fig, ax, cax, image, "weight")
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
