"""course.normalize: every mode's scale, constant maps, NaN/Inf."""

from __future__ import annotations

import numpy as np
import pytest

import course
from course.normalize import NonFiniteWarning


@pytest.fixture
def maps():
    rng = np.random.default_rng(5)
    batch = rng.random((2, 6, 6, 3), dtype=np.float32)
    batch[..., 1] *= 10  # a strong channel
    return batch


def test_per_map_stretches_each_map_to_0_1(maps):
    scaled = course.normalize_maps(maps, "per_map")
    assert scaled.dtype == np.float32 and scaled.shape == maps.shape
    np.testing.assert_allclose(scaled.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled.max(axis=(1, 2)), 1.0, atol=1e-6)


def test_per_layer_keeps_which_maps_are_strong(maps):
    scaled = course.normalize_maps(maps, "per_layer")
    for image in scaled:
        assert image.max() == pytest.approx(1.0) and image.min() == pytest.approx(0.0)
        assert image[..., 1].mean() > 3 * image[..., 0].mean()


def test_global_uses_one_scale_for_everything(maps):
    scaled = course.normalize_maps(maps, "global")
    expected = (maps - maps.min()) / (maps.max() - maps.min())
    np.testing.assert_allclose(scaled, expected, rtol=1e-5, atol=1e-6)


def test_robust_is_not_flattened_by_one_hot_pixel():
    smooth = np.linspace(0, 1, 900, dtype=np.float32).reshape(30, 30, 1)
    spiked = smooth.copy()
    spiked[0, 0, 0] = 1000.0
    plain = course.normalize_maps(spiked, "per_map")
    robust = course.normalize_maps(spiked, "robust")
    assert plain[..., 0].mean() < 0.02  # the spike squeezes everything else to black
    assert 0.4 < robust[..., 0].mean() < 0.6


def test_constant_map_becomes_zeros_not_nan():
    maps = np.zeros((5, 5, 2), np.float32)
    maps[..., 1] = 3.0
    for mode in ("per_map", "robust"):  # each map on its own: both are constant
        scaled = course.normalize_maps(maps, mode)
        assert np.isfinite(scaled).all() and (scaled == 0).all(), mode
    for mode in course.normalize.MODES:  # everything constant: no scale at all
        scaled = course.normalize_maps(np.full((2, 5, 5, 2), 7.0), mode)
        assert np.isfinite(scaled).all() and (scaled == 0).all(), mode


def test_nan_and_inf_are_reported_and_ignored():
    maps = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    maps[0, 0, 0, 0] = np.nan
    maps[1, 0, 0, 0] = np.inf
    with pytest.warns(NonFiniteWarning, match="1 NaN and 1 Inf values out of 32"):
        scaled = course.normalize_maps(maps, "per_map")
    assert np.isfinite(scaled).all()
    assert scaled[0, 0, 0, 0] == 0 and scaled[0].max() == pytest.approx(1.0)


def test_dict_of_layers_is_normalized_per_layer_entry(maps):
    scaled = course.normalize_maps({"a": maps, "b": maps[0]}, "global")
    assert set(scaled) == {"a", "b"} and scaled["b"].shape == (6, 6, 3)


def test_unknown_mode_and_dense_outputs_are_refused(maps):
    with pytest.raises(ValueError, match="unknown normalization mode 'max'; choose one of"):
        course.normalize_maps(maps, "max")
    with pytest.raises(ValueError, match=r"got \(4, 64\): a Dense layer's output"):
        course.normalize_maps(np.zeros((4, 64)))


def test_to_uint8():
    result = course.to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0]))
    assert result.dtype == np.uint8 and result.tolist() == [0, 0, 128, 255, 255]
