"""Scale feature maps for display.

Raw activations are unbounded (ReLU outputs from 0 to anything), so shown with a fixed
colour range most maps look black and a few look white. Each mode answers another question:

* ``per_map``: every map stretched to [0, 1] on its own; shows each map's *pattern* best,
  hides which maps are strong.
* ``per_layer``: one scale for all maps of one image; shows which maps are strong, at the
  price of weak maps looking black.
* ``global``: one scale for the whole array (all images); compares images too.
* ``robust``: like ``per_map`` after clipping each map to its 1st-99th percentiles, so one
  hot pixel cannot flatten the rest.

A constant map (a dead filter gives all zeros) has no pattern: it becomes zeros, never NaN.
NaN or Inf values are reported with a warning, ignored when scaling, and shown as 0.
"""

from __future__ import annotations

import warnings

import numpy as np

from course import validate
from course.errors import InputShapeError

MODES = ("per_map", "per_layer", "global", "robust")


class NonFiniteWarning(RuntimeWarning):
    """Feature maps contained NaN or Inf values."""


def _scale(maps: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    span = high - low
    safe = np.where(span > 0, span, 1.0)
    scaled = np.where(span > 0, (maps - low) / safe, 0.0)
    return np.clip(np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0), 0.0, 1.0)


def normalize_maps(maps, mode: str = "per_map", percentiles: tuple[float, float] = (1.0, 99.0)):
    """Scale feature maps to [0, 1] for display.

    Args:
        maps: Maps of shape (H, W, C) for one image or (N, H, W, C) for a batch, or a dict
            ``{layer: maps}`` as returned by :func:`course.extract_feature_maps`.
        mode: One of ``"per_map"``, ``"per_layer"``, ``"global"``, ``"robust"`` (see the
            module docstring for what each shows and hides).
        percentiles: The clip range of ``"robust"``: ``(low, high)`` in 0..100, ``low < high``.

    Returns:
        float32 array(s) of the same shape, in [0, 1]; a dict for a dict.

    Raises:
        OptionError: An unknown mode, or percentiles that are not ``0 <= low < high <= 100``.
        InputError: Maps that are not numbers, or empty.
        InputShapeError: Maps that are not 3-D or 4-D.
    """
    if isinstance(maps, dict):
        return {name: normalize_maps(m, mode, percentiles) for name, m in maps.items()}
    validate.choice(mode, "normalization mode", MODES)
    if mode == "robust":
        percentiles = validate.percentiles(percentiles)
    maps = validate.maps_array(maps).astype(np.float32)
    if maps.ndim not in (3, 4):
        raise InputShapeError(
            f"feature maps must have shape (H, W, C) or (N, H, W, C), got {maps.shape}: "
            "a Dense layer's output (N, units) is not a feature map."
        )
    finite = np.isfinite(maps)
    if not finite.all():
        nan, inf = int(np.isnan(maps).sum()), int(np.isinf(maps).sum())
        warnings.warn(
            f"the maps contain {nan} NaN and {inf} Inf values out of {maps.size}: they are "
            "ignored for scaling and shown as 0. A diverged model or broken input is the "
            "usual cause.",
            NonFiniteWarning,
            stacklevel=2,
        )
        maps = np.where(finite, maps, np.nan)

    spatial = (-3, -2)  # height and width: one (low, high) per map
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN bounds
        if mode == "per_map":
            low = np.nanmin(maps, axis=spatial, keepdims=True)
            high = np.nanmax(maps, axis=spatial, keepdims=True)
        elif mode == "per_layer":
            axes = (-3, -2, -1)
            low = np.nanmin(maps, axis=axes, keepdims=True)
            high = np.nanmax(maps, axis=axes, keepdims=True)
        elif mode == "global":
            low, high = np.nanmin(maps), np.nanmax(maps)
        else:
            low, high = np.nanpercentile(maps, percentiles, axis=spatial, keepdims=True)
            maps = np.clip(maps, low, high)
    return _scale(maps, low, high).astype(np.float32)


def to_uint8(maps) -> np.ndarray:
    """Maps already in [0, 1] as uint8 0..255 (for saving as PNG); values outside are clipped."""
    values = validate.maps_array(maps).astype(np.float32)
    return np.round(np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
