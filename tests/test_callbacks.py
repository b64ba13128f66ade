"""The feature-map callback: in-memory snapshots at initialisation and after every epoch, event
files that TensorBoard's own reader reads back, and the across-epochs figure."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from conftest import tiny_sequential
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import course
from course.normalize import normalize_maps
from course.plotting import montage


def _fit(model, logger, epochs=2):
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 1), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0, callbacks=[logger])


def test_snapshots_hold_the_maps_and_filters_at_init_and_after_each_epoch(tiny_images):
    model = tiny_sequential()
    initial_maps = course.extract_feature_maps(model, tiny_images[:2], ["c1", "c2"])
    initial_kernels = course.filter_weights(model, "c2").mean(axis=2)
    logger = course.FeatureMapLogger(tiny_images[:2])  # default: every conv layer, no files
    _fit(model, logger, epochs=2)
    assert [s["epoch"] for s in logger.snapshots] == [0, 1, 2]
    first, last = logger.snapshots[0], logger.snapshots[-1]
    assert list(first["maps"]) == ["c1", "c2"]
    for name in ("c1", "c2"):
        np.testing.assert_allclose(first["maps"][name], initial_maps[name], rtol=1e-6)
    np.testing.assert_allclose(first["filters"]["c2"], initial_kernels, rtol=1e-6)
    # After training the snapshot is the trained model's, and it differs from the start.
    final_maps = course.extract_feature_maps(model, tiny_images[:2], "c1")["c1"]
    np.testing.assert_allclose(last["maps"]["c1"], final_maps, rtol=1e-6)
    np.testing.assert_allclose(last["filters"]["c1"], course.filter_weights(model, "c1").mean(axis=2), rtol=1e-6)
    assert not np.allclose(first["filters"]["c1"], last["filters"]["c1"])
    assert last["maps"]["c2"].shape == (2, 3, 3, 6) and last["filters"]["c2"].shape == (3, 3, 6)


def test_event_files_read_back_with_tensorboards_reader(tmp_path, tiny_images):
    model = tiny_sequential()
    logger = course.FeatureMapLogger(tiny_images[:2], layers=["c1", "p1"], log_dir=tmp_path, ncols=2)
    _fit(model, logger, epochs=2)
    reader = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    reader.Reload()
    tags = set(reader.Tags()["tensors"])
    # Pooling has maps but no kernel: no filters tag for it.
    assert tags == {"feature_maps/c1", "feature_maps/p1", "filters/c1"}
    for tag in tags:
        events = reader.Tensors(tag)
        assert [event.step for event in events] == [0, 1, 2]
        assert reader.SummaryMetadata(tag).plugin_data.plugin_name == "images"
    # An image summary is [width, height, png, png, ...]: one PNG per logged image.
    last = reader.Tensors("feature_maps/c1")[-1].tensor_proto.string_val
    width, height, *pngs = last
    assert len(pngs) == 2
    expected = normalize_maps(logger.snapshots[-1]["maps"]["c1"][1], "per_map")
    grid = np.nan_to_num(montage(expected, 2), nan=0.0)  # 4 maps of 10x10 as 2x2 tiles
    assert (int(width), int(height)) == (grid.shape[1], grid.shape[0]) == (21, 21)
    decoded = np.asarray(Image.open(io.BytesIO(pngs[1]))).astype(float) / 255.0
    assert decoded.shape[:2] == grid.shape
    np.testing.assert_allclose(decoded.reshape(grid.shape), grid, atol=1 / 255 + 1e-6)


def test_a_second_fit_continues_the_epoch_numbers(tmp_path, tiny_images):
    model = tiny_sequential()
    logger = course.FeatureMapLogger(tiny_images[0], layers="c1", log_dir=tmp_path)
    _fit(model, logger, epochs=1)
    _fit(model, logger, epochs=2)
    assert [s["epoch"] for s in logger.snapshots] == [0, 1, 2, 3]
    assert logger.snapshots[0]["maps"]["c1"].shape == (1, 10, 10, 4)
    reader = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    reader.Reload()
    assert [event.step for event in reader.Tensors("filters/c1")] == [0, 1, 2, 3]


def test_without_log_dir_nothing_is_written(tmp_path, tiny_images, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fit(tiny_sequential(), course.FeatureMapLogger(tiny_images[:1]), epochs=1)
    assert list(tmp_path.iterdir()) == []


def test_plot_maps_across_epochs_has_a_row_per_snapshot(tiny_images):
    model = tiny_sequential()
    logger = course.FeatureMapLogger(tiny_images[:2], layers=["c1", "c2"])
    _fit(model, logger, epochs=2)
    fig = course.plot_maps_across_epochs(logger, "c1", image_index=1)
    assert isinstance(fig, Figure)
    rows = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_ylabel() for ax in rows] == ["init", "epoch 1", "epoch 2"]
    # Each row: the first 4 channels (all of c1) side by side, each map scaled on its own.
    first_row = rows[0].get_images()[0].get_array()
    expected = montage(normalize_maps(logger.snapshots[0]["maps"]["c1"][1], "per_map"), 4)
    np.testing.assert_allclose(np.ma.filled(first_row, np.nan), expected, rtol=1e-6)
    filters = course.plot_maps_across_epochs(logger.snapshots, "c2", kind="filters", channels=[0, 5])
    clims = {ax.get_images()[0].get_clim() for ax in filters.axes if ax.get_images()}
    assert len(clims) == 1  # one shared, symmetric scale across epochs
    low, high = clims.pop()
    assert low == -high and high == pytest.approx(max(np.abs(s["filters"]["c2"]).max() for s in logger.snapshots))


def test_plot_maps_across_epochs_errors_say_what_to_do(tiny_images):
    with pytest.raises(ValueError, match="train with the FeatureMapLogger"):
        course.plot_maps_across_epochs([], "c1")
    model = tiny_sequential()
    logger = course.FeatureMapLogger(tiny_images[:1], layers=["c1"])
    _fit(model, logger, epochs=1)
    with pytest.raises(ValueError, match=r"logged layers: \['c1'\]"):
        course.plot_maps_across_epochs(logger, "c2")
    with pytest.raises(ValueError, match="kind must be"):
        course.plot_maps_across_epochs(logger, "c1", kind="weights")
    with pytest.raises(ValueError, match="image_index must be in 0..0"):
        course.plot_maps_across_epochs(logger, "c1", image_index=1)
    with pytest.raises(ValueError, match="channels must be in 0..3"):
        course.plot_maps_across_epochs(logger, "c1", channels=[4])
