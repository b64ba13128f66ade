"""Input validation at the public boundary, in one place.

Every public function of the package checks what it was given with these helpers before any
Keras, NumPy or matplotlib code sees it, so that a wrong call ends in ONE sentence of the
package's own error class (:class:`course.errors.CourseError`) that says what was given, what
was expected and what to do, never in a raw error of a dependency. TensorFlow-free.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
import warnings

import numpy as np

from course.errors import InputError, InputShapeError, LayerError, OptionError


def outside_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside the package."""
    import sys

    package = os.path.dirname(__file__)
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.dirname(frame.f_code.co_filename) == package:
        frame, level = frame.f_back, level + 1
    return level


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ------------------------------------------------------------------------------- options


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (either may be None), or an :class:`OptionError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and float(value).is_integer():
            value = int(value)
        else:
            raise OptionError(
                f"{name} must be a whole number, got {_shown(value)} ({type(value).__name__}): "
                f"pass an int{'' if low is None else f' >= {low}'}."
            )
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        if high is None:
            raise OptionError(f"{name} must be >= {low}, got {value}: choose a value >= {low}.")
        if low is None:
            raise OptionError(f"{name} must be <= {high}, got {value}: choose a value <= {high}.")
        raise OptionError(f"{name} must be in {low}..{high}, got {value}: choose a value in that range.")
    return value


def number(value, name: str, low: float | None = None, *, above: bool = False) -> float:
    """``value`` as a finite float ``>= low`` (``> low`` with ``above``), or an :class:`OptionError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise OptionError(f"{name} must be a finite number, got {_shown(value)}: pass a float.")
    value = float(value)
    if low is not None and (value <= low if above else value < low):
        relation = ">" if above else ">="
        raise OptionError(f"{name} must be {relation} {low}, got {value}: choose a value {relation} {low}.")
    return value


def value_range(pair, name: str = "value_range", example: str = "(0.0, 1.0)", what: str = "the model's input range"):
    """``(low, high)`` with finite ``low < high``, or an :class:`OptionError`."""
    try:
        low, high = pair
        low, high = number(low, f"{name}[0]"), number(high, f"{name}[1]")
    except (TypeError, ValueError):
        raise OptionError(
            f"{name} must be a pair (low, high) of finite numbers, got {_shown(pair)}: e.g. {example}."
        ) from None
    if not low < high:
        raise OptionError(f"{name} must have low < high, got {(low, high)}: give {what}, e.g. {example}.")
    return low, high


def percentiles(pair, name: str = "percentiles") -> tuple[float, float]:
    """``(low, high)`` percentiles with ``0 <= low < high <= 100``, or an :class:`OptionError`."""
    low, high = value_range(pair, name, "(1.0, 99.0)", "the percentiles to clip each map to")
    if low < 0 or high > 100:
        raise OptionError(
            f"{name} must lie in 0..100, got {(low, high)}: percentiles are in per cent, e.g. (1.0, 99.0)."
        )
    return low, high


def folder(value, name: str = "out_dir"):
    """A folder to write into (made when missing), as a ``Path``, or an :class:`OptionError`.

    An empty string is refused: it would silently mean the working folder.
    """
    from pathlib import Path

    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        raise OptionError(
            f"{name} must be a folder path (str or pathlib.Path), got {_shown(value)} ({type(value).__name__}): "
            "e.g. out_dir='maps' (use '.' for the working folder)."
        )
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{name} {str(path)!r} is an existing file, not a folder: choose a folder path.")
    return path


def choice(value, name: str, choices) -> object:
    """``value`` if it is one of ``choices``, else an :class:`OptionError` naming them."""
    try:
        if value in choices:
            return value
    except TypeError:
        pass
    raise OptionError(f"unknown {name} {_shown(value)}; choose one of {tuple(choices)}.")


def montage_grid(ncols, count: int) -> int:
    """The number of columns of a montage of ``count`` tiles: ``ncols``, at most ``count``.

    Raises:
        OptionError: ``ncols`` is not a positive integer.
    """
    return min(integer(ncols, "ncols", 1), max(count, 1))


# ------------------------------------------------------------------------------- arrays


def _is_real(dtype) -> bool:
    """Integers or floats (not bool, complex, strings or objects)."""
    return np.dtype(dtype) != np.bool_ and (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating))


def _refuse_masked(values, name: str) -> None:
    """A masked array with masked values is refused: ``np.asarray`` would drop its mask."""
    if np.ma.isMaskedArray(values):
        hidden = int(np.ma.getmaskarray(values).sum())
        if hidden:
            raise InputError(
                f"{name} are a masked array with {hidden} masked values out of {values.size}; the tools would "
                f"use the values under the mask: fill them first, e.g. {name}.filled(0), or pass "
                f"{name}.data to use them as they are."
            )


def array(values, name: str = "images") -> np.ndarray:
    """A real-valued, finite, non-empty array, or an :class:`InputError` that says why not."""
    if values is None or isinstance(values, (str, bytes, dict)):
        raise InputError(f"{name} must be an array of numbers, got {type(values).__name__}: pass a NumPy array.")
    _refuse_masked(values, name)
    try:
        result = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{name} cannot be read as one array ({_shown(values)}: {exc}): pass a NumPy array of one shape."
        ) from None
    if not _is_real(result.dtype):
        raise InputError(
            f"{name} have dtype {result.dtype}; expected real numbers (float32, or uint8 0-255): "
            "convert them with .astype('float32')."
        )
    if result.size == 0:
        raise InputShapeError(f"{name} are empty (shape {result.shape}): give at least one value.")
    if np.issubdtype(result.dtype, np.floating) and not np.isfinite(result).all():
        nan, inf = int(np.isnan(result).sum()), int(np.isinf(result).sum())
        raise InputError(
            f"{name} contain {nan} NaN and {inf} Inf values out of {result.size}: every result computed "
            "from them would be meaningless; replace them first, e.g. np.nan_to_num(x)."
        )
    return result


def fits(shape: tuple, expected: tuple) -> bool:
    """Whether ``shape`` is ``expected``, where a None in ``expected`` takes any size."""
    return len(shape) == len(expected) and all(want is None or got == want for got, want in zip(shape, expected))


def images(values, expected: tuple, name: str = "images", *, range_note: str | None = "") -> np.ndarray:
    """Images as a float32 batch of shape (N, *expected); one image gets a batch axis.

    Grey images may omit their channel axis. uint8 images, or values above 1.5, give a warning
    unless ``range_note`` is None (a model whose own preprocessing takes 0-255 values).

    Args:
        values: One image or a batch.
        expected: One image's shape; None for a size the model takes at any value.
        name: What the values are called in messages.
        range_note: Why [0, 1] is expected, for the warning; None for no warning.

    Raises:
        InputError: Not numbers, NaN or Inf values, values beyond float32, a masked array.
        InputShapeError: A shape that does not fit ``expected``, or no image at all.
    """
    result = array(values, name)
    given = result.shape
    grey = expected[-1] == 1 and result.ndim in (len(expected) - 1, len(expected))
    if grey and fits(given[-(len(expected) - 1):], expected[:-1]) and not fits(given, expected):
        result = result[..., np.newaxis]  # grey image(s) without their channel axis
    if fits(result.shape, expected):
        result = result[np.newaxis]
    if result.ndim != len(expected) + 1 or not fits(result.shape[1:], expected):
        shape = ", ".join("?" if s is None else str(s) for s in expected)
        raise InputShapeError(
            f"{name} of shape {given} do not fit the model, which expects a batch (N, {shape}) "
            f"or one image ({shape}): reshape them, or pick the model they were made for."
        )
    largest = float(np.abs(result).max())
    if largest > np.finfo(np.float32).max:
        raise InputError(
            f"{name} hold values up to {largest:.3g}, beyond float32 (at most {np.finfo(np.float32).max:.3g}), "
            "which the model computes in: they would become Inf; scale them to the model's input range."
        )
    if range_note is not None and (result.dtype == np.uint8 or float(result.max()) > 1.5):
        warnings.warn(
            f"the {name} {'look' if name.endswith('s') else 'looks'} like 0-255 values (dtype {result.dtype}, "
            f"max {float(result.max()):.3g}), "
            f"but {range_note or 'the model expects [0, 1]'}: divide by 255 first, or every activation "
            "will be far too large.",
            UserWarning,
            stacklevel=outside_stacklevel(),
        )
    return result.astype(np.float32, copy=False)


def one_image(values, expected: tuple, name: str = "image", *, range_note: str | None = "") -> np.ndarray:
    """Exactly one image as a batch of one (1, *expected) (see :func:`images`)."""
    batch = images(values, expected, name, range_note=range_note)
    if len(batch) != 1:
        raise InputShapeError(
            f"expected one image, got a batch of {len(batch)} (shape {np.shape(values)}): "
            "pass images[i] for one image at a time."
        )
    return batch


def one_image_maps(values, name: str = "maps") -> np.ndarray:
    """One image's feature maps (H, W, C) (a batch of one is accepted), finite NaN allowed.

    NaN and Inf are allowed here: :func:`course.normalize_maps` reports and ignores them.
    """
    result = _maps_array(values, name)
    if result.ndim == 4 and result.shape[0] == 1:
        result = result[0]
    if result.ndim != 3:
        hint = (
            f"pick one image first, e.g. {name}[0]" if result.ndim == 4
            else "a Dense or Flatten output is not a feature map"
        )
        raise InputShapeError(f"expected one image's feature maps of shape (H, W, C), got {result.shape}: {hint}.")
    return result


def batch_maps(values, name: str = "maps") -> np.ndarray:
    """Feature maps (N, H, W, C) or one image's (H, W, C) as a batch."""
    result = _maps_array(values, name)
    if result.ndim == 3:
        result = result[np.newaxis]
    if result.ndim != 4:
        raise InputShapeError(
            f"expected feature maps of shape (N, H, W, C) or (H, W, C), got {result.shape}: "
            "a Dense layer's output is not a feature map."
        )
    return result


def maps_array(values, name: str = "maps") -> np.ndarray:
    """Real-valued, non-empty maps of any shape (NaN and Inf allowed: the caller reports them)."""
    return _maps_array(values, name)


def _maps_array(values, name: str) -> np.ndarray:
    if values is None or isinstance(values, (str, bytes, dict)):
        raise InputError(f"{name} must be an array of feature maps, got {type(values).__name__}: pass a NumPy array.")
    _refuse_masked(values, name)
    try:
        result = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} cannot be read as one array ({exc}): pass a NumPy array.") from None
    if not _is_real(result.dtype):
        raise InputError(f"{name} have dtype {result.dtype}; expected real numbers: pass float32 maps.")
    if result.size == 0:
        raise InputShapeError(f"{name} are empty (shape {result.shape}): give at least one map.")
    return result


# ------------------------------------------------------------------------------- layers


def layer_name(layer, names: list[str], layers: dict, feature_maps: list[str]) -> str:
    """The traced name of a layer given by name, by index (into ``names``) or as a Layer object.

    Args:
        layer: A name, an int index into ``names``, or a layer object of the model.
        names: Every traced layer name, in the order data flows.
        layers: ``{name: layer}`` of the trace.
        feature_maps: The names of layers whose output is a feature map (for the hint).

    Raises:
        LayerError: An unknown name (the closest is suggested), an index out of range, or a
            layer object that is not part of the model.
    """
    if isinstance(layer, str):
        if layer in layers:
            return layer
        close = difflib.get_close_matches(layer, names, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise LayerError(f"the model has no layer named '{layer}'; {hint}layers with feature maps: {feature_maps}")
    if isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        if -len(names) <= int(layer) < len(names):
            return names[int(layer)]
        raise LayerError(
            f"layer index {int(layer)} is out of range: the model has {len(names)} layers "
            f"(0..{len(names) - 1}); layers with feature maps: {feature_maps}"
        )
    for name, candidate in layers.items():
        if candidate is layer:
            return name
    if hasattr(layer, "name") and hasattr(layer, "weights"):
        raise LayerError(
            f"layer object '{layer.name}' is not a layer of this model: pass one of its layers "
            f"(or its name); layers with feature maps: {feature_maps}"
        )
    raise LayerError(
        f"a layer is given by name, index or layer object, got {_shown(layer)} "
        f"({type(layer).__name__}); layers with feature maps: {feature_maps}"
    )


def layer_list(layers, names: list[str], traced_layers: dict, feature_maps: list[str]) -> list[str]:
    """One layer or a list of them (names, indices, objects) as traced names, in the order given."""
    if isinstance(layers, (dict, set, bytes)):
        raise LayerError(
            f"layers must be a layer (name, index or object) or a list of them, got a {type(layers).__name__} "
            f"({_shown(layers)}); layers with feature maps: {feature_maps}"
        )
    single = isinstance(layers, (str, numbers.Integral)) or (hasattr(layers, "name") and hasattr(layers, "weights"))
    if single:
        layers = [layers]
    try:
        given = list(layers)
    except TypeError:
        raise LayerError(
            f"layers must be a layer (name, index or object) or a list of them, got {_shown(layers)}."
        ) from None
    if not given:
        raise LayerError(f"the list of layers is empty: give at least one; layers with feature maps: {feature_maps}")
    return [layer_name(item, names, traced_layers, feature_maps) for item in given]
