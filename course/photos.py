"""A bigger network on a real photo: MobileNetV2 and matplotlib's sample photo."""

from __future__ import annotations

import keras
import numpy as np


def sample_photo(size: int = 224) -> np.ndarray:
    """The photo matplotlib ships in its sample data (Grace Hopper), square, as RGB in [0, 1].

    Args:
        size: Height and width after a centre crop and resize.

    Returns:
        float32 array (size, size, 3).
    """
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = Image.open(handle).convert("RGB")
    side = min(photo.size)
    left, top = (photo.width - side) // 2, (photo.height - side) // 2
    photo = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.BILINEAR)
    return np.asarray(photo, dtype=np.float32) / 255.0


def load_mobilenet_v2(weights: str | None = "imagenet") -> tuple[keras.Model, bool, str]:
    """``keras.applications.MobileNetV2`` (224 x 224 RGB), pretrained when the weights are available.

    ImageNet weights come from keras' cache (``~/.keras/models``) or a download. Offline, with
    no cached copy, the model gets random weights instead: it still has the same layers, shapes
    and 150-odd feature-map layers, but its maps then show no learned features.

    Args:
        weights: ``"imagenet"``, a path to a weights file, or None for random weights.

    Returns:
        ``(model, pretrained, note)``: the model, whether it has learned weights, and a sentence
        to print or put in a figure title saying which.
    """
    try:
        model = keras.applications.MobileNetV2(weights=weights)
        pretrained = weights is not None
    except Exception as exc:  # offline, blocked, or a bad file: fall back, and say so
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(weights=None)
        pretrained = False
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:240]
        note = (
            f"RANDOM weights: the ImageNet weights could not be loaded ({reason}). "
            "The maps show no learned features, only the network's structure."
        )
        return model, pretrained, note
    if pretrained:
        return model, True, "ImageNet weights: the maps show learned features."
    return model, False, "RANDOM weights (asked for): the maps show no learned features."


def mobilenet_input(photo) -> np.ndarray:
    """A photo in [0, 1] as MobileNetV2 expects it: values scaled to [-1, 1]."""
    return np.asarray(photo, dtype=np.float32) * 2.0 - 1.0
