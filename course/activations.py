"""See inside a trained model without retraining it: one multi-output model over the layers
you choose, and batched extraction of their feature maps.

Why not the classic ``keras.Model(inputs=model.input, outputs=layer.output)``? On Keras 3
every ``Sequential`` model raises "The layer sequential has never been called and thus has no
defined input" there, whether or not it starts with ``keras.Input``, and so does a Sequential
model freshly loaded from a ``.keras`` file. Instead, this module uses the re-tracing core of
:mod:`course.tracing`: the model's own layers re-run on a new ``keras.Input``, each layer's
output recorded on the way. The layers (and so the trained weights) are shared, nothing is
copied or retrained, and the same code works for Sequential models (built with
``input_shape=`` or ``keras.Input``, or loaded), functional models, and models nested inside
other models at any depth. Layers may be given by name, by index or as layer objects.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras
import numpy as np

from course import validate
from course.errors import InputError, LayerError
from course.inputs import input_signature, model_feed
from course.tracing import check_model, tap_model, trace

_CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
#: At most this many bytes of maps per forward pass (``batch_size`` is lowered to fit): 1,024
#: MNIST images' conv maps (117 KB each), the batch at which the compiled forward pass is fastest
#: here; 256 per pass cost a quarter more time for the same maps.
_BATCH_BYTES = 128 * 2**20


def _map_names(shapes: dict[str, tuple]) -> list[str]:
    return [name for name, shape in shapes.items() if len(shape) == 4]


def resolve_layers(model: keras.Model, layers, traced=None, *, maps_only: bool = True) -> list[str]:
    """Layers given by name, index or object (one or a list) as the traced names, checked.

    Args:
        model: A built Keras model.
        layers: A layer name, an index (into :func:`layer_output_shapes`' order), a layer
            object, or a list of these.
        traced: A :class:`course.tracing.Trace` of ``model`` (made when not given).
        maps_only: Refuse layers whose output is not a feature map (batch, height, width, channels).

    Raises:
        LayerError: An unknown layer (the closest name is suggested) or, with ``maps_only``, a
            layer whose output is not a feature map.
    """
    traced = traced or trace(model)
    shapes = traced.shapes()
    conv = _map_names(shapes)
    names = validate.layer_list(layers, list(shapes), traced.layers, conv)
    if maps_only:
        for name in names:
            if len(shapes[name]) != 4:
                raise LayerError(
                    f"layer '{name}' has output shape {shapes[name]}: it is not a feature map "
                    f"(that needs (batch, height, width, channels)); layers with feature maps: {conv}"
                )
    return names


def resolve_layer(model: keras.Model, layer, traced=None, *, maps_only: bool = True) -> str:
    """One layer (name, index or object) as its traced name, checked; a list is refused.

    Raises:
        LayerError: A list or tuple of layers, or what :func:`resolve_layers` refuses.
    """
    if isinstance(layer, (list, tuple)):
        raise LayerError(
            f"this function takes one layer, got a {type(layer).__name__} of {len(layer)} ({str(layer)[:60]}): "
            "call it once per layer, e.g. [f(model, image, name) for name in names]."
        )
    return resolve_layers(model, layer, traced, maps_only=maps_only)[0]


def layer_output_shapes(model: keras.Model) -> dict[str, tuple]:
    """Every layer's output shape (batch axis as None), in the order data flows.

    Args:
        model: A built Keras model.

    Returns:
        ``{layer name: shape}``, nested models' layers included.
    """
    return trace(model).shapes()


def feature_map_layer_names(model: keras.Model) -> list[str]:
    """Names of the layers whose output is a spatial map (batch, height, width, channels)."""
    return _map_names(layer_output_shapes(model))


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the convolution layers, in the order data flows through them.

    Args:
        model: A built Keras model (Sequential, functional or nested).

    Returns:
        The names, nested models' conv layers included.
    """
    return [name for name, layer in trace(model).layers.items() if isinstance(layer, _CONV_TYPES)]


def find_layer(model: keras.Model, name):
    """The layer called ``name`` (or at that index, or that object), searching nested models too.

    Raises:
        LayerError: No such layer (the closest name is suggested).
    """
    traced = trace(model)
    return traced.layers[resolve_layer(model, name, traced, maps_only=False)]


def activation_model(model: keras.Model, layers=None) -> keras.Model:
    """One model that returns the chosen layers' outputs in a single forward pass.

    It shares the trained layers (and weights) of ``model``; nothing is retrained.

    Args:
        model: A built Keras model: Sequential (with ``keras.Input`` or ``input_shape=``, or
            loaded from a ``.keras`` file), functional, or containing nested models.
        layers: A layer (name, index or object) or a list of them; default every layer whose
            output is a spatial feature map.

    Returns:
        A ``keras.Model`` whose outputs are a dict ``{layer name: tensor}``.

    Raises:
        LayerError: A name is unknown (the closest is suggested), or names a layer whose
            output is not a feature map (Dense, Flatten), or the model is not built.
        ModelError: Not a Keras model, or one with several inputs and none of them images.
    """
    traced = trace(model)
    if layers is None:
        names = _map_names(traced.shapes())
    else:
        names = resolve_layers(model, layers, traced)
    if not names:
        raise LayerError(f"model '{model.name}' has no layer whose output is a feature map.")
    return tap_model(model, {name: name for name in names}, f"{model.name}_maps")


def _cached_activation_model(model: keras.Model, names: tuple[str, ...] | None):
    """The activation model for ``names`` and its compiled forward pass, built once per model.

    The compiled pass takes batches of any size (one trace), always in inference mode; it
    reads the layers' variables, so later weight changes are seen.
    """
    per_model = trace(model).models
    if ("maps", names) not in per_model:
        import tensorflow as tf

        maps_model = activation_model(model, None if names is None else list(names))
        compiled = tf.function(lambda x: maps_model(x, training=False), input_signature=[input_signature(model)])
        per_model["maps", names] = (maps_model, compiled)
    return per_model["maps", names]


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


def extract_feature_maps(
    model: keras.Model,
    images,
    layers: list[str] | str | None = None,
    batch_size: int = 1024,
    out_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The chosen layers' feature maps for one image or a batch, in one pass per batch.

    Args:
        model: A built Keras model (see :func:`activation_model`).
        images: One image (H, W, C) or a batch (N, H, W, C), float in the range the model
            was trained on ([0, 1] for the course's model). Grey images may omit C. For a model
            with several inputs, a dict ``{input name: array}`` or a list in ``model.inputs``
            order (see :mod:`course.inputs`). A model
            that takes any image size (``keras.Input((None, None, 3))``, an ``include_top=False``
            base) gives maps of the size that follows from the images.
        layers: A layer (name, index or object) or a list of them; default every feature-map layer.
        batch_size: At most this many images per forward pass; fewer when one image's maps
            are large, so that a batch's maps stay under 128 MB. Memory stays bounded by it.
        out_dir: Stream the maps into ``<out_dir>/<layer>.npy`` instead of memory, batch by
            batch, for extractions too large for RAM.

    Returns:
        ``{layer name: array (N, H, W, C)}`` (N is 1 for one image), in the order given.
        With ``out_dir`` the arrays are read-only memory maps of the written files.

    Raises:
        LayerError: Unknown layer, or a layer that is not a feature map.
        InputShapeError: Images of the wrong shape, or an empty batch.
        InputError: Images that are not numbers, or contain NaN or Inf, or maps that overflow
            float32 (Inf or NaN) for them.
        OptionError: ``batch_size`` is not a positive integer, or ``out_dir`` is not a folder
            path (an existing file, an empty string, a number).
    """
    check_model(model)
    batch_size = validate.integer(batch_size, "batch_size", 1)
    names = None if layers is None else tuple(resolve_layers(model, layers))
    out_dir = None if out_dir is None else validate.folder(out_dir)
    maps_model, compiled = _cached_activation_model(model, names)
    batch = model_feed(model, images)
    count = len(batch)
    traced = trace(model).shapes()
    shapes = {name: (count, *traced[name][1:]) for name in (names or _map_names(traced))}
    if any(None in shape for shape in shapes.values()):
        # A model that takes any image size: the maps' sizes follow from the images given.
        shapes = {name: (count, *t.shape[1:]) for name, t in compiled(batch[:1].value()).items()}
    # Large maps (e.g. 224x224x64 = 12.8 MB per image) get smaller batches.
    image_bytes = sum(4 * math.prod(shape[1:]) for shape in shapes.values())
    step = max(1, min(batch_size, _BATCH_BYTES // image_bytes))

    def batches():
        for start in range(0, count, step):
            for name, tensor in compiled(batch[start : start + step].value()).items():
                values = _as_numpy(tensor)
                if not np.isfinite(values).all():
                    raise InputError(
                        f"the maps of layer '{name}' are not finite (Inf or NaN) for images {start}.."
                        f"{min(start + step, count) - 1}: the model's float32 arithmetic overflowed; check that "
                        "the images are in the model's input range and that its weights are finite."
                    )
                yield start, name, values

    if out_dir is not None:
        # Written with plain file writes, not through a memory map: mapped pages that were
        # written stay in this process's resident memory, written ones go to the page cache.
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {name: out_dir / f"{name.replace('/', '__')}.npy" for name in shapes}
        files = {name: _open_npy(paths[name], shape) for name, shape in shapes.items()}
        try:
            for _, name, values in batches():
                files[name].write(values.data)
        finally:
            for handle in files.values():
                handle.close()
        return {name: np.load(paths[name], mmap_mode="r") for name in shapes}

    result = {name: np.empty(shape, np.float32) for name, shape in shapes.items()}
    for start, name, values in batches():
        result[name][start : start + step] = values
    return result
