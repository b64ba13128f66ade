"""See inside a trained model without retraining it: one multi-output model over the layers
you choose, and batched extraction of their feature maps.

Why not the classic ``keras.Model(inputs=model.input, outputs=layer.output)``? On Keras 3
every ``Sequential`` model raises "The layer sequential has never been called and thus has no
defined input" there, whether or not it starts with ``keras.Input``, and so does a Sequential
model freshly loaded from a ``.keras`` file. Instead, this module re-runs the model's own
layers on a new ``keras.Input``, recording each layer's output on the way. The layers (and so
the trained weights) are shared, nothing is copied or retrained, and the same code works for
Sequential models (built with ``input_shape=`` or ``keras.Input``, or loaded), functional
models, and models nested inside other models.
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
import weakref
from pathlib import Path

import keras
import numpy as np

from course.errors import InputShapeError, LayerError

_CONV_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
# model -> {layer names -> (activation model, compiled call)}; weak so models can be freed.
_CACHE: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()
#: At most this many bytes of maps per forward pass (``batch_size`` is lowered to fit).
_BATCH_BYTES = 64 * 2**20


def _input_shape(model: keras.Model) -> tuple:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        raise LayerError(
            f"model '{model.name}' has not been built, so its layers have no outputs yet: "
            "start it with keras.Input(shape=...) or call it once on a batch of images."
        ) from None
    if len(inputs) != 1:
        raise LayerError(
            f"model '{model.name}' has {len(inputs)} inputs; feature maps are extracted "
            "from single-input image models only."
        )
    return tuple(inputs[0].shape[1:])


def _trace(model: keras.Model, x, taps: dict, layers: dict):
    """Re-run ``model`` on the symbolic tensor ``x`` layer by layer.

    Records each layer's output tensor in ``taps`` and the layer itself in ``layers`` (by
    name; a nested model's layers are prefixed with its name only when a name repeats).

    Returns:
        The model's output tensor for ``x``.
    """

    def record(layer, tensor):
        name = layer.name if layer.name not in taps else f"{model.name}/{layer.name}"
        taps[name], layers[name] = tensor, layer

    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                x = _trace(layer, x, taps, layers)
            else:
                x = layer(x)
            record(layer, x)
        return x

    # A functional model: its own graph gives every direct layer's output; a nested model's
    # inner layers are re-run on the tensor that feeds it in this graph.
    inner_taps, inner_layers = {}, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            _trace(layer, layer.input, inner_taps, inner_layers)
        inner_taps.setdefault(layer.name, layer.output)
        inner_layers.setdefault(layer.name, layer)
    names = list(inner_taps)
    graph = keras.Model(model.inputs, [model.outputs[0]] + [inner_taps[n] for n in names])
    output, *tensors = graph(x)
    for name, tensor in zip(names, tensors):
        taps[name if name not in taps else f"{model.name}/{name}"] = tensor
        layers[name if name not in layers else f"{model.name}/{name}"] = inner_layers[name]
    return output


def _traced(model: keras.Model):
    """``(input tensor, {name: output tensor}, {name: layer})`` for every layer, in order."""
    x = keras.Input(shape=_input_shape(model))
    taps, layers = {}, {}
    _trace(model, x, taps, layers)
    return x, taps, layers


def layer_output_shapes(model: keras.Model) -> dict[str, tuple]:
    """Every layer's output shape (batch axis as None), in the order data flows.

    Args:
        model: A built Keras model.

    Returns:
        ``{layer name: shape}``, nested models' layers included.
    """
    _, taps, _ = _traced(model)
    return {name: tuple(tensor.shape) for name, tensor in taps.items()}


def feature_map_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose output is a spatial map (batch, height, width, channels)."""
    return [name for name, shape in layer_output_shapes(model).items() if len(shape) == 4]


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the convolution layers, in the order data flows through them.

    Args:
        model: A built Keras model (Sequential, functional or nested).

    Returns:
        The names, nested models' conv layers included.
    """
    _, _, layers = _traced(model)
    return [name for name, layer in layers.items() if isinstance(layer, _CONV_TYPES)]


def find_layer(model: keras.Model, name: str):
    """The layer called ``name``, searching nested models too.

    Raises:
        LayerError: No such layer (the closest name is suggested).
    """
    _, taps, layers = _traced(model)
    if name not in layers:
        _check_layer_names([name], {n: tuple(t.shape) for n, t in taps.items()})
    return layers[name]


def _check_layer_names(requested: list[str], shapes: dict[str, tuple]) -> None:
    conv = [name for name, shape in shapes.items() if len(shape) == 4]
    for name in requested:
        if name not in shapes:
            close = difflib.get_close_matches(name, list(shapes), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LayerError(
                f"the model has no layer named '{name}'; {hint}layers with feature maps: {conv}"
            )
        if len(shapes[name]) != 4:
            raise LayerError(
                f"layer '{name}' has output shape {shapes[name]}: it is not a feature map "
                f"(that needs (batch, height, width, channels)); layers with feature maps: {conv}"
            )


def activation_model(model: keras.Model, layers: list[str] | str | None = None) -> keras.Model:
    """One model that returns the chosen layers' outputs in a single forward pass.

    It shares the trained layers (and weights) of ``model``; nothing is retrained.

    Args:
        model: A built Keras model: Sequential (with ``keras.Input`` or ``input_shape=``, or
            loaded from a ``.keras`` file), functional, or containing nested models.
        layers: A layer name or a list of them; default every layer whose output is a
            spatial feature map.

    Returns:
        A ``keras.Model`` whose outputs are a dict ``{layer name: tensor}``.

    Raises:
        LayerError: A name is unknown (the closest is suggested), or names a layer whose
            output is not a feature map (Dense, Flatten), or the model is not built.
    """
    x, taps, _ = _traced(model)
    shapes = {name: tuple(t.shape) for name, t in taps.items()}
    if layers is None:
        names = [name for name, shape in shapes.items() if len(shape) == 4]
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        _check_layer_names(names, shapes)
    if not names:
        raise LayerError(f"model '{model.name}' has no layer whose output is a feature map.")
    return keras.Model(x, {name: taps[name] for name in names}, name=f"{model.name}_maps")


def _cached_activation_model(model: keras.Model, names: tuple[str, ...] | None):
    """The activation model for ``names`` and its compiled forward pass, built once per model.

    The compiled pass takes batches of any size (one trace), always in inference mode; it
    reads the layers' variables, so later weight changes are seen.
    """
    per_model = _CACHE.setdefault(model, {})
    if names not in per_model:
        import tensorflow as tf

        maps_model = activation_model(model, None if names is None else list(names))
        spec = tf.TensorSpec((None, *_input_shape(model)), tf.float32)
        compiled = tf.function(lambda x: maps_model(x, training=False), input_signature=[spec])
        per_model[names] = (maps_model, compiled)
    return per_model[names]


def _as_numpy(tensor) -> np.ndarray:
    """A tensor's values as a NumPy array: a read-only view (no copy) when it is on the CPU."""
    try:
        return np.from_dlpack(tensor)
    except (BufferError, RuntimeError, TypeError, ValueError):  # e.g. a tensor on a GPU
        return np.asarray(tensor)


def _open_npy(path: Path, shape: tuple) -> object:
    """A file open for writing float32 rows of ``shape`` after an ``.npy`` header."""
    handle = open(path, "wb")
    np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return handle


def _as_batch(images, expected: tuple) -> np.ndarray:
    """Images as a float32 batch of shape (N, *expected); one image gets a batch axis."""
    array = np.asarray(images)
    given = array.shape
    if array.ndim == len(expected) - 1 and expected[-1] == 1 and given == expected[:-1]:
        array = array[..., np.newaxis]  # one grey image without its channel axis
    elif array.ndim == len(expected) + 1 and expected[-1] == 1 and given[1:] == expected[:-1]:
        array = array[..., np.newaxis]  # a batch of grey images without the channel axis
    if array.shape == expected:
        array = array[np.newaxis]
    if array.ndim != len(expected) + 1 or any(
        want is not None and got != want for got, want in zip(array.shape[1:], expected)
    ):
        raise InputShapeError(
            f"images of shape {given} do not fit the model, which expects a batch "
            f"(N, {', '.join(map(str, expected))}) or one image {expected}."
        )
    if array.shape[0] == 0:
        raise InputShapeError(
            f"the batch of images is empty (shape {given}): give at least one image."
        )
    if array.dtype == np.uint8 or (array.size and np.nanmax(array) > 1.5):
        warnings.warn(
            f"the images look like 0-255 values (dtype {array.dtype}, max "
            f"{np.nanmax(array):.0f}), but the course's model was trained on [0, 1]: "
            "divide by 255 first, or every activation will be far too large.",
            UserWarning,
            stacklevel=3,
        )
    return array.astype(np.float32, copy=False)


def extract_feature_maps(
    model: keras.Model,
    images,
    layers: list[str] | str | None = None,
    batch_size: int = 256,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The chosen layers' feature maps for one image or a batch, in one pass per batch.

    Args:
        model: A built Keras model (see :func:`activation_model`).
        images: One image (H, W, C) or a batch (N, H, W, C), float in the range the model
            was trained on ([0, 1] for the course's model). Grey images may omit C.
        layers: A layer name or list of names; default every feature-map layer.
        batch_size: At most this many images per forward pass; fewer when one image's maps
            are large, so that a batch's maps stay under 64 MB. Memory stays bounded by it.
        out_dir: Stream the maps into ``<out_dir>/<layer>.npy`` instead of memory, batch by
            batch, for extractions too large for RAM.

    Returns:
        ``{layer name: array (N, H, W, C)}`` (N is 1 for one image), in the order given.
        With ``out_dir`` the arrays are read-only memory maps of the written files.

    Raises:
        LayerError: Unknown layer, or a layer that is not a feature map.
        InputShapeError: Images of the wrong shape, or an empty batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
    names = None if layers is None else tuple([layers] if isinstance(layers, str) else layers)
    maps_model, compiled = _cached_activation_model(model, names)
    batch = _as_batch(images, _input_shape(model))
    count = len(batch)
    shapes = {name: (count, *t.shape[1:]) for name, t in maps_model.output.items()}
    # Large maps (e.g. 224x224x64 = 12.8 MB per image) get smaller batches.
    image_bytes = sum(4 * math.prod(shape[1:]) for shape in shapes.values())
    step = max(1, min(batch_size, _BATCH_BYTES // image_bytes))

    if out_dir is not None:
        # Written with plain file writes, not through a memory map: mapped pages that were
        # written stay in this process's resident memory, written ones go to the page cache.
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: out_dir / f"{name.replace('/', '__')}.npy" for name in shapes}
        files = {name: _open_npy(paths[name], shape) for name, shape in shapes.items()}
        try:
            for start in range(0, count, step):
                for name, tensor in compiled(batch[start : start + step]).items():
                    files[name].write(_as_numpy(tensor).data)
        finally:
            for handle in files.values():
                handle.close()
        return {name: np.load(paths[name], mmap_mode="r") for name in shapes}

    result = {name: np.empty(shape, np.float32) for name, shape in shapes.items()}
    for start in range(0, count, step):
        for name, tensor in compiled(batch[start : start + step]).items():
            result[name][start : start + step] = _as_numpy(tensor)
    return result
