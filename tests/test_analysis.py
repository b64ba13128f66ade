"""course.analysis: statistics, dead filters, strongest channels, kernels."""

from __future__ import annotations

import numpy as np
import pytest

import course
from course.errors import LayerError


@pytest.fixture
def maps():
    batch = np.zeros((3, 4, 4, 4), np.float32)
    batch[0, 0, 0, 0] = 2.0       # channel 0 fires once
    batch[:, :, :, 1] = 1.0       # channel 1 always fires
    batch[1, :2, :, 2] = -1.0     # channel 2 never exceeds 0
    batch[2, 1, 1, 3] = 1e-7      # channel 3 barely fires
    return batch


def test_activation_stats_per_channel(maps):
    stats = course.activation_stats(maps)
    np.testing.assert_allclose(stats["max"], [2.0, 1.0, 0.0, 1e-7])
    np.testing.assert_allclose(stats["active_fraction"], [1 / 48, 1.0, 0.0, 1 / 48])
    np.testing.assert_allclose(stats["mean"][1], 1.0)
    assert set(course.activation_stats({"x": maps})["x"]) == {"mean", "std", "max", "active_fraction"}


def test_dead_filters_across_the_batch(maps):
    assert course.dead_filters(maps).tolist() == [2]
    assert course.dead_filters(maps, threshold=1e-6).tolist() == [2, 3]
    assert course.dead_filters(maps[1]).tolist() == [0, 2, 3]  # one image is not enough to judge


def test_top_channels_for_one_image_and_a_batch(maps):
    assert course.top_channels(maps[0], 2).tolist() == [1, 0]
    assert course.top_channels(maps[:1], 1).tolist() == [1]
    assert course.top_channels(maps, 1).shape == (3, 1)
    with pytest.raises(ValueError, match="between 1 and the 4 channels, got 9"):
        course.top_channels(maps, 9)


def test_filter_weights(tiny_model):
    kernels = course.filter_weights(tiny_model, "c2")
    assert kernels.shape == (3, 3, 4, 6) and kernels.dtype == np.float32
    np.testing.assert_array_equal(kernels, tiny_model.get_layer("c2").get_weights()[0])
    with pytest.raises(LayerError, match="'p1' has no convolution kernel.*conv layers: \\['c1', 'c2'\\]"):
        course.filter_weights(tiny_model, "p1")
