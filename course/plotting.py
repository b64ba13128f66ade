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
import os

import matplotlib
import matplotlib.axes
import matplotlib.colors
import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.path import Path
from matplotlib.text import Text
from matplotlib.textpath import TextPath
from matplotlib.transforms import IdentityTransform

from course import validate
from course.errors import InputError, InputShapeError, LayerError, OptionError
from course.normalize import MODES, normalize_maps

#: Colour of the gaps between tiles, distinct from every value of the usual colormaps.
GAP_COLOR = "#5a7bb5"
#: The tallest figure a montage gets (inches; 2,000 pixels at 100 dpi): many maps in few
#: columns (2,048 channels, 8 per row) shrink their tiles instead of making a 28,000-pixel PNG.
MAX_FIGURE_HEIGHT = 20.0
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
    maps = validate.one_image_maps(maps)
    height, width, count = maps.shape
    ncols = validate.montage_grid(ncols, count)
    pad = validate.integer(pad, "pad", 0)
    nrows = math.ceil(count / ncols)
    tiles = np.full((nrows * ncols, height + pad, width + pad), np.nan, np.float32)
    tiles[:count, :height, :width] = np.moveaxis(maps, -1, 0)
    grid = tiles.reshape(nrows, ncols, height + pad, width + pad).transpose(0, 2, 1, 3)
    grid = grid.reshape(nrows * (height + pad), ncols * (width + pad))
    return grid[: grid.shape[0] - pad, : grid.shape[1] - pad] if pad else grid


def _colormap(cmap, name: str = "cmap") -> matplotlib.colors.Colormap:
    """A colormap given by name or as a ``Colormap``, or an :class:`OptionError` naming close ones."""
    if isinstance(cmap, matplotlib.colors.Colormap):
        return cmap
    if isinstance(cmap, str) and cmap in matplotlib.colormaps:
        return matplotlib.colormaps[cmap]
    import difflib

    close = difflib.get_close_matches(str(cmap), list(matplotlib.colormaps), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise OptionError(
        f"{name} {cmap!r} is not a matplotlib colormap: {hint}pass a name such as 'gray', 'viridis' or "
        "'RdBu_r' (list(matplotlib.colormaps) has them all), or a Colormap."
    )


def _check_axes(ax) -> None:
    """``ax`` must be None or a matplotlib ``Axes``."""
    if ax is not None and not isinstance(ax, matplotlib.axes.Axes):
        raise OptionError(
            f"ax must be matplotlib Axes to draw into, got {type(ax).__name__} ({str(ax)[:40]!r}): "
            "e.g. fig, ax = plt.subplots(), or leave ax=None for a new figure."
        )


def _one_image_maps(maps, what: str = "maps") -> np.ndarray:
    return validate.one_image_maps(maps, what)


def _figure_for(ax, figsize: tuple[float, float]):
    """``(figure, axes)``: the caller's axes and their figure, or a new figure of ``figsize`` with one axes."""
    _check_axes(ax)
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


class MontageFigure(Figure):
    """The Figure of a montage: its PNGs are written with fast compression (zlib level 1).

    A montage PNG is mostly flat colour; zlib's default level 6 spent about half the time of
    ``savefig`` to make the file a little smaller. The pixels are the same; give
    ``pil_kwargs={"compress_level": 6}`` for the smallest file.
    """

    def savefig(self, fname, *args, **kwargs):
        """``Figure.savefig``, with ``compress_level=1`` unless ``pil_kwargs`` says otherwise."""
        fmt = kwargs.get("format")
        if fmt is None and isinstance(fname, (str, os.PathLike)):
            fmt = os.path.splitext(os.fspath(fname))[1][1:] or None
        if str(fmt or matplotlib.rcParams["savefig.format"]).lower() == "png":
            kwargs["pil_kwargs"] = {"compress_level": 1, **(kwargs.get("pil_kwargs") or {})}
        return super().savefig(fname, *args, **kwargs)


def _new_axes(ax, ncols: int, nrows: int, tile: tuple[int, int], colorbar: bool):
    """``(figure, axes, colorbar axes or None)`` for a montage of ``nrows x ncols`` tiles.

    With ``ax`` given, draw there (a colorbar then takes room from ``ax``). Otherwise make a
    figure sized to the montage, placed by hand: a layout engine makes savefig draw
    everything twice (once only to measure), a third of the time of a PNG.
    """
    _check_axes(ax)
    if ax is not None:
        return ax.figure, ax, None
    height, width = tile
    rows, cols = nrows * (height + 1) - 1, ncols * (width + 1) - 1  # the montage, in pixels
    fig_width = min(16.0, max(3.0, 1.1 * ncols))
    fig_height = max(1.5, fig_width * nrows / ncols * height / width + 0.6)
    if fig_height > MAX_FIGURE_HEIGHT:  # too tall: keep the height, narrow the montage to fit
        fig_width = max(3.0, fig_width * MAX_FIGURE_HEIGHT / fig_height)
        fig_height = MAX_FIGURE_HEIGHT
    margin, title, bar = 0.05, 0.35, 1.0 if colorbar else 0.0  # inches
    fig_width += bar
    room_w, room_h = fig_width - 2 * margin - bar, fig_height - margin - title
    image_w = min(room_w, room_h * cols / rows)
    image_h = image_w * rows / cols
    left, bottom = margin + (room_w - image_w) / 2, margin + (room_h - image_h) / 2
    fig = MontageFigure(figsize=(fig_width, fig_height))
    ax = fig.add_axes((left / fig_width, bottom / fig_height, image_w / fig_width, image_h / fig_height))
    if not colorbar:
        return fig, ax, None
    bar_box = (left + image_w + 0.1, bottom + 0.1 * image_h, 0.15, 0.8 * image_h)
    left_, bottom_, width_, height_ = bar_box
    cax = fig.add_axes((left_ / fig_width, bottom_ / fig_height, width_ / fig_width, height_ / fig_height))
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
            low, high = bottom - pad, top + pad
            boxes.append([(left - pad, low), (pen + pad, low), (pen + pad, high), (left - pad, high), (0, 0)])
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
    colormap = _colormap(cmap).with_extremes(bad=gap_color)
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
        cmap: A matplotlib colormap name, or a ``Colormap``.
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
        InputShapeError: Maps that are not one image's (H, W, C) maps.
        OptionError: An unknown mode, a ``cmap`` that is not a colormap, an ``ax`` that is not
            matplotlib Axes, or ``ncols`` not a positive integer.
    """
    maps = _one_image_maps(maps)
    _colormap(cmap)
    _check_axes(ax)
    height, width, count = maps.shape
    if normalize is not None:
        validate.choice(normalize, "normalization mode", MODES)
    ncols = validate.montage_grid(ncols, count)
    shown = maps if normalize is None else normalize_maps(maps, normalize)
    if normalize is None:
        finite = maps[np.isfinite(maps)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        vmin, vmax = 0.0, 1.0
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


def _kernel_montage(ax, cax, fig, shown, ncols, labels, cmap, limit):
    """Draw kernels (kh, kw, n) with black gaps and each index in the gap below its tile."""
    count = shown.shape[-1]
    image = _draw_montage(ax, shown, ncols, cmap, -limit, limit, False, gap_color="black")
    if labels:  # under each kernel, in the gap: on a 3x3 kernel a corner label hides a weight
        height, width = shown.shape[:2]
        rows = math.ceil(count / ncols) * (height + 1) - 1
        ax.add_patch(matplotlib.patches.Rectangle((-0.5, rows - 0.5), ncols * (width + 1) - 1, 1, color="black"))
        ax.set_ylim(rows + 0.5, -0.5)  # room for the last row's labels
        _label_tiles(ax, count, ncols, height, width, 1, below=True)
    _colorbar(fig, ax, cax, image, "weight")
    return image


def plot_filters(
    model,
    layer,
    in_channel: int | None = None,
    ncols: int = 8,
    cmap: str = "RdBu_r",
    ax=None,
    labels: bool = True,
) -> Figure:
    """Draw a conv layer's kernels with a diverging colormap centred on 0, labelled as what they are.

    Red weights excite, blue ones inhibit; white is 0. All kernels share one symmetric scale,
    so the colorbar is honest. Each kind is drawn as what it is (see
    :func:`course.analysis.kernel_parts`):

    * ``Conv2D`` / ``Conv2DTranspose``: one tile per filter (of one input channel, or the mean
      over input channels);
    * ``DepthwiseConv2D``: one tile per input channel (times the depth multiplier): each
      kernel sees only its own channel, so nothing is averaged;
    * ``SeparableConv2D``: the depthwise kernels, and next to them the pointwise part as a
      (depthwise outputs x filters) matrix of 1x1 weights;
    * ``Conv1D``: each filter as a 1-D strip (one row per filter).

    Args:
        model: A built Keras model.
        layer: A conv layer: name, index or layer object.
        in_channel: For Conv2D-like layers with several input channels, show the kernels of
            this input channel; default the mean over input channels.
        ncols: Kernels per row.
        cmap: A diverging matplotlib colormap.
        ax: Draw into these axes instead of a new figure (not for separable layers, which
            need two panels).
        labels: Write each kernel's index under it.

    Returns:
        The Figure.

    Raises:
        LayerError: No such layer, or one without a kernel.
        OptionError: ``in_channel`` out of range, or ``ncols`` not a positive integer.
    """
    from course.analysis import kernel_parts

    _colormap(cmap)
    _check_axes(ax)
    kind, parts = kernel_parts(model, layer)
    name = layer if isinstance(layer, str) else getattr(layer, "name", str(layer))
    if "depthwise" in parts:
        depthwise = parts["depthwise"]  # (kh, kw, in, multiplier)
        kh, kw, inputs, multiplier = depthwise.shape
        shown = depthwise.reshape(kh, kw, inputs * multiplier)
        times = f" x {multiplier} multiplier" if multiplier > 1 else ""
        which = f"depthwise: one kernel per input channel ({inputs} channels{times})"
    elif parts["kernel"].ndim == 3:  # Conv1D: (width, in, filters) -> strips (1, width, filters)
        kernel = parts["kernel"]
        width, inputs, _ = kernel.shape
        chosen, which = _input_choice(kernel, in_channel, inputs, name, axis=1)
        shown = chosen[np.newaxis]
        which = f"1-D strips of {width}, {which}"
    else:
        kernel = parts["kernel"]
        inputs = kernel.shape[2]
        shown, which = _input_choice(kernel, in_channel, inputs, name, axis=2)
        if kind == "Conv2DTranspose":
            which = f"transposed conv, {which}"
    count = shown.shape[-1]
    ncols = validate.montage_grid(ncols, count)
    pointwise = parts.get("pointwise")
    limit = float(np.abs(shown).max()) or 1.0
    if pointwise is not None:
        limit = max(limit, float(np.abs(pointwise).max())) or 1.0
        fig = Figure(figsize=(min(16.0, 2.0 + 1.1 * ncols + 0.25 * pointwise.shape[-1]), 4.0), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=[max(1, ncols), max(1, pointwise.shape[-1] // 2)])
        _kernel_montage(left, None, fig, shown, ncols, labels, cmap, limit)
        left.set_title(f"'{name}' {kind}: {count} kernels of {shown.shape[0]}x{shown.shape[1]} ({which})", fontsize=9)
        matrix = pointwise[0, 0]  # (depthwise outputs, filters)
        right.imshow(matrix, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto", interpolation="nearest")
        right.set_xlabel("filter")
        right.set_ylabel("depthwise output")
        right.set_title(f"pointwise: {matrix.shape[0]} x {matrix.shape[1]} weights of 1x1", fontsize=9)
        return fig
    fig, ax, cax = _new_axes(ax, ncols, math.ceil(count / ncols), shown.shape[:2], True)
    _kernel_montage(ax, cax, fig, shown, ncols, labels, cmap, limit)
    size = f"{shown.shape[0]}x{shown.shape[1]}" if shown.shape[0] > 1 else f"{shown.shape[1]}"
    noun = "kernels" if shown.shape[0] > 1 else "strips"
    title = f"'{name}': {count} {noun} of {size} ({which})"
    ax.set_title(title if kind in ("Conv2D", "Conv1D") else f"{title} [{kind}]", fontsize=10, y=1.0)
    return fig


def _input_choice(kernel, in_channel, inputs: int, name: str, axis: int):
    """The kernels of one input channel, or their mean over inputs, and a phrase saying which."""
    if in_channel is not None:
        whole = isinstance(in_channel, (int, np.integer)) and not isinstance(in_channel, bool)
        if not whole or not 0 <= in_channel < inputs:
            raise OptionError(f"in_channel must be in 0..{inputs - 1} for layer '{name}', got {in_channel!r}.")
        return np.take(kernel, int(in_channel), axis=axis), f"input channel {in_channel}"
    if inputs == 1:
        return np.take(kernel, 0, axis=axis), "one input channel"
    return kernel.mean(axis=axis), f"mean over {inputs} input channels"


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
    from course.activations import conv_layer_names, extract_feature_maps, resolve_layers
    from course.inputs import model_feed

    layers = conv_layer_names(model)[:2] if layers is None else resolve_layers(model, layers)
    if not layers:
        raise InputShapeError(f"model '{model.name}' has no conv layer to compare: pass layers=.")
    feed = model_feed(model, image, "image", one=True)
    image = feed.images[0]
    maps = extract_feature_maps(model, feed, layers)
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


# --------------------------------------------------------------------------------------------
# Interpretability: heatmaps over images, preferred images (computed in course.saliency,
# course.gradcam, course.maximize)
# --------------------------------------------------------------------------------------------


def _display_image(image, name: str = "image") -> tuple[np.ndarray, str | None]:
    """An image for imshow: grey (H, W) with a grey colormap, or RGB scaled to [0, 1]."""
    picture = validate.array(image, name).astype(np.float32)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    if picture.ndim == 2:
        return picture, "gray"
    if picture.ndim != 3 or picture.shape[-1] not in (3, 4):
        raise InputShapeError(
            f"{name} of shape {picture.shape} cannot be drawn: expected (H, W), (H, W, 1) or (H, W, 3)."
        )
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
    cmap = _colormap(cmap)
    _check_axes(ax)
    heatmap = validate.array(heatmap, "heatmap").astype(np.float32)
    if heatmap.shape != picture.shape[:2]:
        raise InputShapeError(
            f"heatmap of shape {heatmap.shape} does not match the image's {picture.shape[:2]}: "
            "compute it at input resolution (grad_cam and saliency_map do)."
        )
    fig, ax = _figure_for(ax, (3.2, 3.4))
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


def plot_preferred_images(
    model, layers=None, ncols: int = 16, **options
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
    from course.activations import conv_layer_names, resolve_layers
    from course.maximize import maximize_activation

    layers = conv_layer_names(model)[:2] if layers is None else resolve_layers(model, layers)
    ncols = validate.integer(ncols, "ncols", 1)
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
# The class-level analysis (course.analysis computes the numbers)
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
    matrix = validate._maps_array(matrix, "matrix").astype(np.float32)
    if matrix.ndim != 2:
        raise InputShapeError(
            f"matrix of shape {matrix.shape}: expected (classes, channels) from mean_activation_by_class."
        )
    with np.errstate(all="ignore"):
        peak = np.nanmax(np.where(np.isnan(matrix), -np.inf, matrix), axis=1, keepdims=True)
    rows = np.divide(matrix, peak, out=np.zeros_like(matrix), where=peak > 0)
    fig, ax = _figure_for(ax, (min(16.0, 3 + 0.18 * matrix.shape[1]), 4.2))
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
    images = validate.array(images, "images")
    count = len(images)
    if images.ndim not in (3, 4):
        raise InputShapeError(f"images of shape {images.shape}: expected (n, H, W) or (n, H, W, C).")
    if isinstance(captions, str) or len(captions) != count:
        raise InputShapeError(f"got {count} images but {len(captions)} captions: give one per image.")
    ncols = validate.montage_grid(ncols, count)
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


def plot_misclassified(result: dict, images=None, count: int = 4, ncols: int = 16) -> Figure:
    """Wrongly classified digits next to their feature maps (from :func:`course.misclassified`).

    Args:
        result: The dict returned by :func:`course.misclassified`.
        images: The images that were passed to it (indexed by ``result["indices"]``); default
            ``result["images"]``, the wrong images themselves.
        count: How many mistakes to show (the first ones).
        ncols: Maps per row.

    Returns:
        A Figure with one row per mistake: the digit, then its maps.

    Raises:
        ValueError: There are no mistakes to show.
    """
    if not isinstance(result, dict) or "indices" not in result or (images is None and "images" not in result):
        raise InputError("result must be the dict returned by course.misclassified(model, x, y).")
    count = min(validate.integer(count, "count", 1), len(result["indices"]))
    if count == 0:
        raise InputError("there are no misclassified images to show.")
    fig = Figure(figsize=(11, 2.2 * count), layout="constrained")
    rows = fig.subfigures(count, 1, squeeze=False)[:, 0]
    for row, i in zip(rows, range(count)):
        left, right = row.subfigures(1, 2, width_ratios=[1, 4])
        index = int(result["indices"][i])
        picture, cmap = _display_image(result["images"][i] if images is None else np.asarray(images)[index])
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
    coords, labels = validate.array(coords, "coords"), validate.array(labels, "labels")
    if coords.ndim != 2 or coords.shape[1] < 2 or len(labels) != len(coords):
        raise InputShapeError(
            f"coords of shape {coords.shape} and {len(labels)} labels: expected (N, 2) and N labels "
            "(from course.project_maps)."
        )
    fig, ax = _figure_for(ax, (6, 5))
    points = ax.scatter(coords[:, 0], coords[:, 1], c=labels, cmap="tab10", s=6, vmin=-0.5, vmax=9.5)
    fig.colorbar(points, ax=ax, ticks=range(10), label="class")
    for axis, k in ((ax.set_xlabel, 0), (ax.set_ylabel, 1)):
        share = f" ({explained[k]:.0%} of variance)" if explained is not None else ""
        axis(f"principal component {k + 1}{share}")
    ax.set_title(title or "feature maps projected to 2-D (PCA)", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Maps and filters across training epochs (course.callbacks.FeatureMapLogger records them)
# --------------------------------------------------------------------------------------------


def plot_maps_across_epochs(
    snapshots,
    layer: str,
    kind: str = "maps",
    image_index: int = 0,
    channels=None,
) -> Figure:
    """The same feature maps (or filters) at initialisation and after every epoch, one row each.

    Args:
        snapshots: ``FeatureMapLogger.snapshots``, or the logger itself.
        layer: One of the logged layers.
        kind: ``"maps"`` (each map scaled on its own, to compare patterns) or ``"filters"``
            (one symmetric scale over all epochs, so you see the weights grow).
        image_index: Which logged image's maps to show.
        channels: Channel indices to show; default the first 8.

    Returns:
        A Figure with one row per snapshot and one column per channel.

    Raises:
        ValueError: No snapshots, an unknown layer or kind, or an image index out of range.
    """
    snapshots = getattr(snapshots, "snapshots", snapshots)
    if not snapshots:
        raise InputError("no snapshots yet: train with the FeatureMapLogger callback first.")
    if not isinstance(snapshots, (list, tuple)) or not all(
        isinstance(s, dict) and {"epoch", "maps", "filters"} <= set(s) for s in snapshots
    ):
        raise InputError(
            f"snapshots must be a FeatureMapLogger or its .snapshots list, got {type(snapshots).__name__}: "
            "pass the logger you trained with."
        )
    if kind not in ("maps", "filters"):
        raise OptionError(f"kind must be 'maps' or 'filters', got {kind!r}.")
    available = list(snapshots[0][kind])
    if layer not in available:
        raise LayerError(f"layer '{layer}' has no logged {kind}; logged layers: {available}.")
    if kind == "maps":
        count = len(snapshots[0]["maps"][layer])
        if not 0 <= image_index < count:
            raise OptionError(f"image_index must be in 0..{count - 1}, got {image_index}.")
        rows = [normalize_maps(s["maps"][layer][image_index], "per_map") for s in snapshots]
        cmap, gap, vmin, vmax = "gray", GAP_COLOR, 0.0, 1.0
    else:
        rows = [s["filters"][layer] for s in snapshots]
        limit = max(float(np.abs(r).max()) for r in rows) or 1.0
        cmap, gap, vmin, vmax = "RdBu_r", "black", -limit, limit
    total = rows[0].shape[-1]
    if channels is None:
        channels = list(range(min(8, total)))
    else:
        try:
            given = list(np.atleast_1d(channels).tolist()) if not isinstance(channels, str) else None
        except TypeError:
            given = None
        if not given or any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < total for c in given):
            raise OptionError(f"channels must be in 0..{total - 1}, got {channels!r}.")
        channels = given
    height, width = rows[0].shape[:2]
    fig = Figure(
        figsize=(1.1 * len(channels) + 1.6, 1.1 * len(rows) * height / width + 0.8),
        layout="constrained",
    )
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    colormap = matplotlib.colormaps[cmap].with_extremes(bad=gap)
    for ax, snapshot, row in zip(axes, snapshots, rows):
        shown = ax.imshow(
            montage(row[..., channels], ncols=len(channels)), cmap=colormap, vmin=vmin, vmax=vmax,
            interpolation="nearest",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        label = "init" if snapshot["epoch"] == 0 else f"epoch {snapshot['epoch']}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    for col, channel in enumerate(channels):
        axes[0].text(col * (width + 1) + width / 2 - 0.5, -1, str(channel), ha="center", va="bottom", fontsize=8)
    what = "feature maps (each scaled on its own)" if kind == "maps" else "filters (one shared scale)"
    fig.suptitle(f"'{layer}' {what}: initialisation, then after each epoch", fontsize=10)
    if kind == "filters":
        fig.colorbar(shown, ax=list(axes), shrink=0.8, label="weight")
    return fig


# --------------------------------------------------------------------------------------------
# Grids of explanations (the `python -m course explain` figures)
# --------------------------------------------------------------------------------------------


def plot_saliency_examples(model, images, captions, smooth_samples: int = 30) -> Figure:
    """One row per image: the image, its saliency and its SmoothGrad (see :func:`course.saliency_map`).

    Args:
        model: A built Keras model.
        images: Images (n, H, W, C) in the range the model was trained on.
        captions: n strings, shown above each image.
        smooth_samples: SmoothGrad's noisy copies.

    Returns:
        A Figure of n rows x 3 columns; the heatmaps use the "hot" colormap.
    """
    from course.inputs import model_feed
    from course.saliency import saliency_map

    feed = model_feed(model, images)
    if isinstance(captions, str) or len(captions) != len(feed):
        raise InputShapeError(f"got {len(feed)} images but {len(captions)} captions: give one per image.")
    fig = Figure(figsize=(7.5, 2.0 * len(feed)), layout="constrained")
    axes = fig.subplots(len(feed), 3, squeeze=False)
    for i, (row, caption) in enumerate(zip(axes, captions)):
        vanilla = saliency_map(model, feed[i : i + 1])
        smooth = saliency_map(model, feed[i : i + 1], smooth_samples=smooth_samples)
        picture, cmap = _display_image(feed.images[i])
        for ax, shown, colours, title in zip(
            row, (picture, vanilla, smooth), (cmap, "hot", "hot"),
            (caption, "saliency", f"SmoothGrad ({smooth_samples})"),
        ):
            ax.imshow(shown, cmap=colours, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    fig.suptitle("|d logit / d pixel| of the predicted class", fontsize=10)
    return fig


def plot_grad_cam_examples(model, images, captions, layers=None, colorbar: bool = False,
                           title: str | None = None, figsize: tuple[float, float] | None = None) -> Figure:
    """Grad-CAM of each image (columns) at each layer (rows), drawn over the image.

    Args:
        model: A built Keras model.
        images: Images (n, H, W, C).
        captions: n strings; each panel's title is the caption and the layer.
        layers: Layers (names, indices or objects); default every conv layer.
        colorbar: One shared colorbar (0 to 1: each heatmap is divided by its maximum).
        title: The figure's title; default names the layers.
        figsize: The figure's size in inches; default 2.4 x 2.5 per panel.

    Returns:
        A Figure of len(layers) rows x n columns.
    """
    from course.activations import conv_layer_names, resolve_layers
    from course.gradcam import grad_cam
    from course.inputs import model_feed

    feed = model_feed(model, images)
    if isinstance(captions, str) or len(captions) != len(feed):
        raise InputShapeError(f"got {len(feed)} images but {len(captions)} captions: give one per image.")
    layers = conv_layer_names(model) if layers is None else resolve_layers(model, layers)
    fig = Figure(figsize=figsize or (2.4 * len(feed), 2.5 * len(layers)), layout="constrained")
    axes = fig.subplots(len(layers), len(feed), squeeze=False)
    for row, layer in zip(axes, layers):
        for i, (ax, caption) in enumerate(zip(row, captions)):
            label = f"{caption} '{layer}'" if len(layers) > 1 else caption
            heat = grad_cam(model, feed[i : i + 1], layer)
            plot_overlay(feed.images[i], heat, ax=ax, title=label, colorbar=False)
    if colorbar:
        scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, 1.0), "jet")  # plot_overlay's colours
        fig.colorbar(scale, ax=axes.ravel().tolist(), shrink=0.8, label="share of the maximum")
    fig.suptitle(title or f"Grad-CAM of the predicted class at {', '.join(repr(n) for n in layers)}", fontsize=10)
    return fig
