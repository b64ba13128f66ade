"""See inside, live: draw a digit (or pick or upload an image) and watch every layer answer.

:func:`explore` returns a Jupyter widget (anywidget, so it renders in JupyterLab 4, Notebook 7 and
VS Code) with a drawing canvas, a picker over test images, a photo upload, the class
probabilities as bars and one feature-map montage per chosen layer. The browser side
(``course/_explore.js``) only draws and sends pixels, throttled; everything else happens here, with
the package's own pieces: :func:`course.tracing.trace` for any Sequential, functional or nested
model, :func:`course.normalize.normalize_maps` for the scaling, :func:`course.plotting.montage` for
the tiles, :func:`course.grad_cam` / :func:`course.saliency_map` for the overlay and
:class:`course.callbacks.FeatureMapLogger`'s snapshots for the epoch slider.

One update is one forward pass (maps and prediction together) plus one PNG per layer.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

import anywidget
import numpy as np
import traitlets
from ipywidgets.widgets.trait_types import bytes_serialization

from course import validate
from course.activations import conv_layer_names, feature_map_layer_names, resolve_layers
from course.analysis import filter_weights
from course.callbacks import _kernels
from course.errors import CourseError, InputError, LayerError, OptionError
from course.hooks import OUTPUT
from course.inputs import Feed, input_signature, model_feed, model_images, range_note
from course.normalize import normalize_maps
from course.plotting import GAP_COLOR, montage
from course.tracing import input_shape, model_inputs, tap_model, trace

#: The normalizations the switch offers (see :mod:`course.normalize` for what each hides).
NORMALIZATIONS = ("per_map", "per_layer", "robust")
OVERLAYS = ("none", "grad_cam", "saliency")
#: At most this many maps per montage (a 1,280-channel layer shows its first 64).
MAX_MAPS = 64
#: Side of the square raster the canvas sends (pixels): 4x MNIST, enough for the centring.
RASTER = 112
_GAP = tuple(int(GAP_COLOR[i : i + 2], 16) for i in (1, 3, 5))


def _png(pixels: np.ndarray) -> str:
    """A uint8 (H, W) or (H, W, 3) array as a PNG data URL (fast zlib level: drawn often)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grey_rgb(values: np.ndarray, gap=_GAP) -> np.ndarray:
    """Values in [0, 1] (NaN: gaps between tiles) as grey RGB uint8, gaps in the montage colour."""
    grey = np.round(np.clip(np.nan_to_num(values, nan=0.0), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb[np.isnan(values)] = gap
    return rgb


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    """Values in [0, 1] through a matplotlib colormap, as RGB uint8."""
    import matplotlib

    return np.round(matplotlib.colormaps[name](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _columns(count: int) -> int:
    return min(count, 8 if count <= 32 else 16)


def mnist_digit(raster, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """A drawing centred the way MNIST digits were: fitted into 20x20, centre of mass in the middle.

    LeCun et al. size-normalized each digit to a 20x20 box (keeping its aspect ratio, with
    anti-aliasing), then placed it in a 28x28 image so that its centre of mass is the centre.

    Args:
        raster: The drawing (H, W), float in [0, 1] or uint8, strokes bright on dark.
        size: The output (height, width); the box is 20/28 of it.

    Returns:
        float32 (height, width) in [0, 1]; all zeros for an empty drawing.
    """
    from PIL import Image

    values = validate.array(raster, "raster").astype(np.float32)
    if values.ndim != 2:
        raise InputError(f"a drawing must be one grey raster (H, W), got shape {values.shape}.")
    if values.max() > 1.0:
        values = values / 255.0
    height, width = size
    out = np.zeros(size, np.float32)
    rows, cols = np.nonzero(values > 0.05)
    if not len(rows):
        return out
    crop = values[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = max(1, round(20 * min(height, width) / 28))
    scale = box / max(crop.shape)
    new = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    small = np.asarray(Image.fromarray(crop).resize(new, Image.LANCZOS), np.float32).clip(0, 1)
    total = small.sum()
    if total <= 0:
        return out
    grid_r, grid_c = np.indices(small.shape)
    centre_r, centre_c = (grid_r * small).sum() / total, (grid_c * small).sum() / total
    top = int(round(height / 2 - centre_r - 0.5))
    left = int(round(width / 2 - centre_c - 0.5))
    top = min(max(top, 0), height - small.shape[0])
    left = min(max(left, 0), width - small.shape[1])
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def photo_input(data: bytes, shape: tuple) -> np.ndarray:
    """An uploaded photo (PNG, JPEG ... bytes) as one image of ``shape`` (H, W, C) in [0, 1].

    Centre-cropped to the input's aspect ratio and resized. For a grey model it is made
    MNIST-like: dark ink on light paper is inverted and the digit centred (:func:`mnist_digit`).

    Raises:
        InputError: The bytes are not an image PIL can read.
    """
    from PIL import Image, UnidentifiedImageError

    height, width, channels = shape
    try:
        photo = Image.open(io.BytesIO(bytes(data)))
        photo = photo.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(
            f"the uploaded file ({len(data)} bytes) is not an image that can be read ({exc}): "
            "upload a PNG or JPEG photo."
        ) from None
    aspect = width / height
    crop_w, crop_h = min(photo.width, round(photo.height * aspect)), min(photo.height, round(photo.width / aspect))
    left, top = (photo.width - crop_w) // 2, (photo.height - crop_h) // 2
    photo = photo.crop((left, top, left + crop_w, top + crop_h))
    if channels != 1:
        resized = photo.resize((width, height), Image.BILINEAR)
        return np.asarray(resized, np.float32).reshape(height, width, channels) / 255.0
    grey = np.asarray(photo.resize((RASTER, RASTER), Image.BILINEAR), np.float32) / 255.0
    if grey.mean() > 0.5:  # dark ink on light paper; MNIST is light on dark
        grey = 1.0 - grey
    background = float(np.median(grey))
    grey = np.clip((grey - background) / max(float(grey.max()) - background, 1e-6), 0, 1)
    return mnist_digit(grey, (height, width))[..., None]


def _snapshots(logger) -> list[dict]:
    """A ``FeatureMapLogger``'s snapshots (or the list itself), checked."""
    snapshots = getattr(logger, "snapshots", logger)
    if not isinstance(snapshots, (list, tuple)) or not snapshots or not all(
        isinstance(s, dict) and {"epoch", "maps", "filters"} <= set(s) for s in snapshots
    ):
        raise InputError(
            f"logger must be a FeatureMapLogger that has trained (or its .snapshots list), got "
            f"{type(logger).__name__}: train with callbacks=[logger] first, then pass logger=logger."
        )
    return list(snapshots)


class Explorer(anywidget.AnyWidget):
    """The widget :func:`explore` returns; its state is plain traits, so it can be driven from Python.

    Python -> browser: ``input_png``, ``overlay_png``, ``bars``, ``maps``, ``detail``, ``message``.
    Browser -> Python: ``drawing`` (a RASTER x RASTER grey raster), ``image_index``, ``upload``,
    ``normalization``, ``overlay``, ``selected`` ([layer, channel]), ``epoch`` (-1: the live model).
    """

    _esm = Path(__file__).with_name("_explore.js")

    # browser -> Python
    # the page sends binary buffers (memoryviews): ipywidgets' own serialization turns them into bytes
    drawing = traitlets.Bytes(b"").tag(sync=True, **bytes_serialization)
    upload = traitlets.Bytes(b"").tag(sync=True, **bytes_serialization)
    image_index = traitlets.Int(-1).tag(sync=True)
    normalization = traitlets.Unicode("per_map").tag(sync=True)
    overlay = traitlets.Unicode("none").tag(sync=True)
    selected = traitlets.List([]).tag(sync=True)
    epoch = traitlets.Int(-1).tag(sync=True)
    logged_image = traitlets.Int(0).tag(sync=True)
    # Python -> browser
    shape = traitlets.List([]).tag(sync=True)
    raster = traitlets.Int(RASTER).tag(sync=True)
    image_count = traitlets.Int(0).tag(sync=True)
    epochs = traitlets.List([]).tag(sync=True)
    logged_count = traitlets.Int(0).tag(sync=True)
    input_png = traitlets.Unicode("").tag(sync=True)
    overlay_png = traitlets.Unicode("").tag(sync=True)
    bars = traitlets.List([]).tag(sync=True)
    maps = traitlets.List([]).tag(sync=True)
    detail = traitlets.Dict({}).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    updates = traitlets.Int(0).tag(sync=True)

    def __init__(self, model, images=None, layers=None, *, logger=None, labels=None, preprocess=None):
        super().__init__()
        traced = trace(model)
        self.model = model
        self.input_shape = input_shape(model)
        self._feed, self._row = None, 0  # a model with several inputs: all of them, and the row shown
        if len(model_inputs(model)) > 1:
            if images is None:
                raise OptionError(
                    f"model '{model.name}' has {len(model_inputs(model))} inputs: pass images= a dict (or list) of "
                    "them; the explorer shows its image input and keeps the other inputs of the image picked."
                )
            self._feed = model_feed(model, images)
            images = self._feed.images
        if len(self.input_shape) != 3:
            raise InputError(
                f"model '{model.name}' takes inputs of shape {self.input_shape}: the explorer needs an "
                "image model (height, width, channels)."
            )
        if None in self.input_shape:  # a model for any image size: explore it at the images' size
            if images is None:
                raise OptionError(
                    f"model '{model.name}' takes images of any size {self.input_shape}, and the explorer needs "
                    "one: pass images= some images of the size to explore."
                )
            self.input_shape = model_images(model, images).shape[1:]
        if layers is None:
            names = conv_layer_names(model)
            if not names:
                raise LayerError(
                    f"model '{model.name}' has no convolution layer, so it has no feature maps to explore; "
                    f"pass layers= some of its feature-map layers {feature_map_layer_names(model)}, "
                    "or explore a CNN."
                )
        else:
            names = resolve_layers(model, layers, traced)
        if preprocess is not None and not callable(preprocess):
            raise OptionError(
                f"preprocess must be a function from images in [0, 1] to the model's input, got "
                f"{type(preprocess).__name__}: e.g. preprocess=course.mobilenet_input."
            )
        self.layers = list(names)
        self.preprocess = preprocess
        self.images = None if images is None else validate.images(
            images, self.input_shape, range_note=range_note(model))
        self.snapshots = None if logger is None else _snapshots(logger)
        outputs = {"maps": {name: name for name in names}, "output": OUTPUT}
        forward = tap_model(model, outputs, f"{model.name}_explorer")
        self._forward = self._compile(forward)
        classes = int(np.prod(traced.output.shape[1:]))
        self.labels = [str(label) for label in (labels if labels is not None else range(classes))]
        if len(self.labels) != classes:
            raise OptionError(f"labels has {len(self.labels)} names but the model has {classes} outputs: "
                              "give one name per class.")
        self._kernels = {}
        self.image = np.zeros(self.input_shape, np.float32)
        self.probabilities = np.zeros(classes, np.float32)
        self.feature_maps: dict[str, np.ndarray] = {}
        self.shape = list(self.input_shape)
        self.image_count = 0 if self.images is None else len(self.images)
        if self.snapshots is not None:
            self.epochs = [int(s["epoch"]) for s in self.snapshots]
            self.logged_count = len(next(iter(self.snapshots[0]["maps"].values()), []))
            logged = getattr(logger, "images", None)
            self.logged_images = (np.zeros((self.logged_count, *self.input_shape), np.float32) if logged is None
                                  else np.asarray(logged, np.float32))
        if self.image_count:
            self.image_index = 0  # shows the first test image
        else:
            self.show(self.image)

    def _compile(self, forward):
        import tensorflow as tf

        spec = tf.TensorSpec((None, *self.input_shape), tf.float32) if self._feed is None else input_signature(
            self.model)
        return tf.function(lambda x: forward(x, training=False), input_signature=[spec])

    def _with_other_inputs(self, batch):
        """What the model is called on for ``batch`` of images: the other inputs of the image picked."""
        if self._feed is None:
            return batch
        row = self._feed[self._row : self._row + 1]
        return Feed(batch, row.others, row.index, row.keys)

    # ---------------------------------------------------------------- inputs
    def show(self, image) -> None:
        """Make ``image`` (H, W, C) in [0, 1] the current input and update everything."""
        self.image = validate.one_image(image, self.input_shape, range_note=range_note(self.model))[0]
        self.compute()
        self.render()

    @traitlets.observe("drawing")
    def _on_drawing(self, change) -> None:
        raster = np.frombuffer(change["new"], np.uint8)
        if raster.size != RASTER * RASTER:
            self.message = f"the canvas sent {raster.size} pixels, expected {RASTER * RASTER}: reload the widget."
            return
        raster = raster.reshape(RASTER, RASTER).astype(np.float32) / 255.0
        height, width, channels = self.input_shape
        if channels == 1:
            grey = mnist_digit(raster, (height, width))
        else:
            from PIL import Image

            grey = np.asarray(Image.fromarray(raster).resize((width, height), Image.BILINEAR), np.float32)
        self.epoch = -1
        self.show(np.repeat(grey[..., None], channels, axis=-1))

    @traitlets.observe("image_index")
    def _on_pick(self, change) -> None:
        if self.images is not None and 0 <= change["new"] < len(self.images):
            self.epoch = -1
            self._row = change["new"] if self._feed is not None else 0
            self.show(self.images[change["new"]])

    @traitlets.observe("upload")
    def _on_upload(self, change) -> None:
        if not change["new"]:
            return
        try:
            image = photo_input(change["new"], self.input_shape)
        except CourseError as exc:
            self.message = str(exc)
            return
        self.epoch = -1
        self.show(image)

    @traitlets.validate("selected")
    def _valid_selection(self, proposal):
        selected = list(proposal["value"])
        if not selected:
            return selected
        layers = getattr(self, "layers", [])
        shown = f"{selected!r}"[:60]
        if len(selected) != 2 or selected[0] not in layers:
            raise OptionError(
                f"selected must be [layer, channel] with a layer of the explorer {layers}, got {shown}: "
                "e.g. explorer.selected = [explorer.layers[0], 3], or [] for none."
            )
        try:  # a channel past the last map is a click beside the montage: it shows nothing
            channel = validate.integer(selected[1], "the selected channel", 0)
        except CourseError as exc:
            raise OptionError(f"selected {shown}: {exc}") from None
        return [selected[0], channel]

    @traitlets.observe("normalization", "overlay", "selected", "epoch", "logged_image")
    def _on_view(self, change) -> None:
        if change["name"] == "normalization":
            validate.choice(change["new"], "normalization", NORMALIZATIONS)
        if change["name"] == "overlay":
            validate.choice(change["new"], "overlay", OVERLAYS)
        self.render()

    # ---------------------------------------------------------------- compute and draw
    def compute(self) -> None:
        """One forward pass: the chosen layers' maps and the prediction for ``self.image``."""
        batch = self.image[None]
        if self.preprocess is not None:
            batch = np.asarray(self.preprocess(batch), np.float32)
        inputs = self._with_other_inputs(batch)
        result = self._forward(inputs if self._feed is None else inputs.value())
        self.feature_maps = {name: np.asarray(t)[0] for name, t in result["maps"].items()}
        scores = np.asarray(result["output"], np.float64).reshape(-1)
        if scores.min() < 0 or not math.isclose(scores.sum(), 1.0, abs_tol=1e-3):  # logits
            scores = np.exp(scores - scores.max())
            scores /= scores.sum()
        self.probabilities = scores.astype(np.float32)

    def _shown_maps(self) -> tuple[dict[str, np.ndarray], np.ndarray, str]:
        """The maps on display (live, or logged at the chosen epoch), their input, and a note."""
        if self.epoch < 0 or self.snapshots is None:
            return self.feature_maps, self.image, ""
        index = min(max(self.epoch, 0), len(self.snapshots) - 1)
        snapshot = self.snapshots[index]
        image = min(max(self.logged_image, 0), self.logged_count - 1)
        logged = {name: maps[image] for name, maps in snapshot["maps"].items()}
        when = "initialisation" if snapshot["epoch"] == 0 else f"after epoch {snapshot['epoch']}"
        note = (f"maps of logged image {image} at {when} (FeatureMapLogger); no bars: only the maps and filters "
                "of that epoch were kept, not its weights. Drag the slider to the right end for the live model.")
        return logged, self.logged_images[image], note

    def render(self) -> None:
        """Turn the current maps into one montage PNG per layer, the bars, the input and the detail."""
        maps, image, note = self._shown_maps()
        mode = self.normalization
        montages = []
        self._scaled = {}
        for name in self.layers:
            if name not in maps:
                continue
            layer_maps = maps[name]
            count = layer_maps.shape[-1]
            shown = min(count, MAX_MAPS)
            scaled = normalize_maps(layer_maps, mode)[..., :shown]
            self._scaled[name] = scaled
            ncols = _columns(shown)
            grid = montage(scaled, ncols)
            montages.append({
                "layer": name, "png": _png(_grey_rgb(grid)), "ncols": ncols, "count": count, "shown": shown,
                "height": int(scaled.shape[0]), "width": int(scaled.shape[1]), "pad": 1,
            })
        self.maps = montages
        order = np.argsort(self.probabilities)[::-1][:10]
        self.bars = [] if note else [[self.labels[i], float(self.probabilities[i])] for i in order]
        self._render_input(image)
        self._render_detail()
        self.message = note
        self.updates += 1

    def _display(self, image: np.ndarray) -> np.ndarray:
        return np.clip(image if image.shape[-1] == 3 else image[..., 0], 0, 1)

    def _render_input(self, image: np.ndarray) -> None:
        shown = self._display(image)
        rgb = np.round(shown * 255).astype(np.uint8)
        self.input_png = _png(rgb if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, -1))
        if self.overlay == "none" or self.epoch >= 0:
            self.overlay_png = ""
            return
        from course.gradcam import grad_cam
        from course.saliency import saliency_map

        model_input = image if self.preprocess is None else np.asarray(self.preprocess(image[None]))[0]
        model_input = self._with_other_inputs(model_input[None]) if self._feed is not None else model_input
        if self.overlay == "grad_cam":
            heat = grad_cam(self.model, model_input)
        else:
            heat = saliency_map(self.model, model_input)
            heat = heat / heat.max() if heat.max() > 0 else heat
        base = rgb if rgb.ndim == 3 else np.repeat(rgb[..., None], 3, -1)
        blended = 0.5 * base + 0.5 * _colormap(heat, "jet")
        self.overlay_png = _png(np.round(blended).astype(np.uint8))

    def kernel(self, layer: str, channel: int) -> np.ndarray | None:
        """The filter behind ``layer``'s map ``channel`` (kh, kw; mean over input channels), or None."""
        if self.epoch >= 0 and self.snapshots is not None:
            filters = self.snapshots[min(self.epoch, len(self.snapshots) - 1)]["filters"].get(layer)
        else:
            if layer not in self._kernels:
                try:
                    weights = filter_weights(self.model, layer)
                    self._kernels[layer] = _kernels(weights) if weights.ndim == 4 else None
                except (CourseError, ValueError):  # pooling, Add ...: no kernel
                    self._kernels[layer] = None
            filters = self._kernels[layer]
        if filters is None or channel >= filters.shape[-1]:
            return None
        return filters[..., channel]

    def _render_detail(self) -> None:
        if len(self.selected) != 2 or self.selected[0] not in getattr(self, "_scaled", {}):
            self.detail = {}
            return
        layer, channel = self.selected[0], int(self.selected[1])
        scaled = self._scaled[layer]
        if not 0 <= channel < scaled.shape[-1]:
            self.detail = {}
            return
        one = scaled[..., channel]
        zoom = max(1, 160 // max(one.shape))
        big = np.kron(one, np.ones((zoom, zoom), np.float32))
        raw = self._shown_maps()[0][layer][..., channel]
        text = f"{layer}, map {channel}: values {float(raw.min()):.3g} to {float(raw.max()):.3g}"
        detail = {"layer": layer, "channel": channel, "map_png": _png(_grey_rgb(big)), "kernel_png": ""}
        kernel = self.kernel(layer, channel)
        if kernel is None:
            text += "; this layer has no kernel of its own (pooling or merging)"
        else:
            limit = float(np.abs(kernel).max()) or 1.0
            kzoom = max(1, 96 // max(kernel.shape))
            colours = _colormap(0.5 + 0.5 * kernel / limit, "RdBu_r")
            detail["kernel_png"] = _png(np.kron(colours, np.ones((kzoom, kzoom, 1), np.uint8)))
            text += (f"; its {kernel.shape[0]}x{kernel.shape[1]} kernel (mean over input channels): "
                     f"red excites, blue inhibits, up to {limit:.3g}")
        detail["text"] = text
        self.detail = detail


def explore(model, images=None, layers=None, *, logger=None, labels=None, preprocess=None) -> Explorer:
    """A live view inside ``model``: draw, pick or upload an image and watch the feature maps answer.

    The widget shows a drawing canvas (drawn large and centred the way MNIST digits were), a
    picker over ``images``, a photo upload, the class probabilities as bars and one montage of
    feature maps per layer, updated while you draw (throttled). Click a map to see it large next
    to its filter's kernel; switch the normalization (per map, per layer, robust) to see what each
    hides; overlay Grad-CAM or saliency on the input; with ``logger=``, scrub the logged maps and
    filters across training epochs.

    Args:
        model: A built Keras image model: Sequential, functional, nested, subclassed, or a
            ``keras.applications`` model.
        images: Test images (N, H, W, C) in [0, 1] for the picker (e.g. ``x_test[:100]``). For a
            model with several inputs (required then), a dict ``{input name: array}`` or a list
            in ``model.inputs`` order: the explorer shows the image input, and a drawn or
            uploaded image is given the other inputs of the image picked.
        layers: The layers to show (names, indices or objects); default every conv layer.
        logger: A :class:`course.FeatureMapLogger` the model was trained with (or its
            ``.snapshots``): adds the epoch slider.
        labels: One name per class for the bars; default the class indices.
        preprocess: The model's own preprocessing, from images in [0, 1] to its input (e.g.
            :func:`course.mobilenet_input`); default none (the course's model takes [0, 1]).

    Returns:
        An :class:`Explorer` widget (display it as a cell's last value).

    Raises:
        LayerError: A model without conv layers (one sentence says so), or unknown layers.
        ModelError: Not a Keras model, or one with several inputs and none of them images.
        InputShapeError: ``images`` that do not fit the model's input.
        InputError: A ``logger`` that has recorded nothing.
    """
    return Explorer(model, images, layers, logger=logger, labels=labels, preprocess=preprocess)
