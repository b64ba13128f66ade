"""course.plotting: figures checked by content (image data, labels, colorbars), headless."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

import course
from course.plotting import montage


def images_in(ax):
    return ax.get_images()


def tile_labels(ax):
    return [text.get_text() for text in ax.texts]


@pytest.fixture
def maps():
    return np.random.default_rng(2).random((26, 26, 32), dtype=np.float32) * 5


def test_montage_places_channel_k_in_row_major_order():
    maps = np.stack([np.full((2, 3), k, np.float32) for k in range(5)], axis=-1)
    grid = montage(maps, ncols=2, pad=1)
    assert grid.shape == (3 * 3 - 1, 2 * 4 - 1)
    assert grid[0, 0] == 0 and grid[0, 4] == 1 and grid[3, 0] == 2 and grid[6, 0] == 4
    assert np.isnan(grid[2, 0]) and np.isnan(grid[0, 3])  # the gaps
    assert np.isnan(grid[6, 4])  # the unused sixth tile


def test_feature_maps_are_one_montage_image_with_labels(maps):
    fig = course.plot_feature_maps(maps, ncols=8)
    assert isinstance(fig, Figure) and len(fig.axes) == 1  # per-map scale: no colorbar
    ax = fig.axes[0]
    [image] = images_in(ax)
    expected = montage(course.normalize_maps(maps, "per_map"), 8)
    np.testing.assert_allclose(image.get_array().filled(np.nan), expected, equal_nan=True)
    assert tile_labels(ax) == [str(k) for k in range(32)]
    assert "32 feature maps of 26x26" in ax.get_title() and "per map" in ax.get_title()


@pytest.mark.parametrize("mode", [None, "per_layer", "global"])
def test_colorbar_only_for_a_shared_scale(maps, mode):
    fig = course.plot_feature_maps(maps, normalize=mode)
    assert len(fig.axes) == 2  # the montage and its colorbar
    [image] = images_in(fig.axes[0])
    low, high = image.get_clim()
    if mode is None:
        assert (low, high) == pytest.approx((maps.min(), maps.max()))
    else:
        assert (low, high) == (0.0, 1.0)


def test_robust_has_no_colorbar(maps):
    assert len(course.plot_feature_maps(maps, normalize="robust").axes) == 1


@pytest.mark.parametrize("channels", [1, 3, 512])
def test_any_number_of_channels(channels):
    maps = np.random.default_rng(0).random((14, 14, channels), dtype=np.float32)
    fig = course.plot_feature_maps(maps)
    ax = fig.axes[0]
    assert len(images_in(ax)) == 1 and len(tile_labels(ax)) == channels
    assert images_in(ax)[0].get_array().shape[1] == min(8, channels) * 15 - 1


def test_draws_into_given_axes_and_accepts_a_batch_of_one(maps):
    fig = Figure()
    ax = fig.add_subplot()
    assert course.plot_feature_maps(maps[np.newaxis], ax=ax) is fig
    assert len(images_in(ax)) == 1


def test_refuses_a_batch_and_dense_outputs(maps):
    with pytest.raises(ValueError, match=r"got \(2, 26, 26, 32\): pick one image first"):
        course.plot_feature_maps(np.stack([maps, maps]))
    with pytest.raises(ValueError, match="a Dense or Flatten output is not a feature map"):
        course.plot_feature_maps(np.zeros((1, 64)))


def test_filters_use_a_diverging_scale_centred_on_zero(tiny_model):
    fig = course.plot_filters(tiny_model, "c1")
    ax, colorbar_ax = fig.axes
    [image] = images_in(ax)
    low, high = image.get_clim()
    kernels = course.filter_weights(tiny_model, "c1")[:, :, 0, :]
    assert low == -high == pytest.approx(-np.abs(kernels).max())
    assert image.get_cmap().name.startswith("RdBu_r")
    np.testing.assert_allclose(image.get_array().filled(np.nan), montage(kernels, 8), equal_nan=True)
    assert tile_labels(ax) == ["0", "1", "2", "3"]


def test_filter_labels_sit_in_the_gaps_and_hide_no_weight(tiny_model):
    fig = course.plot_filters(tiny_model, "c1")  # 4 kernels of 3x3: a corner label would hide a weight
    ax = fig.axes[0]
    kernels = course.filter_weights(tiny_model, "c1")[:, :, 0, :]
    tiles = np.isfinite(montage(kernels, 8))  # True where a weight is drawn
    for text in ax.texts:
        x, y = text.get_position()
        col, row = int(round(x + 0.4)), int(round(y + 0.45))
        assert row >= tiles.shape[0] or not tiles[row, col], f"label {text.get_text()} is drawn over a weight"
    assert ax.get_ylim()[0] > tiles.shape[0] - 0.5  # the last row's labels are inside the axes


def test_filters_of_a_layer_with_many_inputs(tiny_model):
    kernels = course.filter_weights(tiny_model, "c2")
    mean = course.plot_filters(tiny_model, "c2")
    np.testing.assert_allclose(
        images_in(mean.axes[0])[0].get_array().filled(np.nan), montage(kernels.mean(axis=2), 8), equal_nan=True
    )
    assert "mean over 4 input channels" in mean.axes[0].get_title()
    one = course.plot_filters(tiny_model, "c2", in_channel=2)
    assert "input channel 2" in one.axes[0].get_title()
    with pytest.raises(ValueError, match="in_channel must be in 0..3 for layer 'c2', got 7"):
        course.plot_filters(tiny_model, "c2", in_channel=7)


def test_compare_layers_shows_the_image_and_both_layers(tiny_model, tiny_images):
    fig = course.compare_layers(tiny_model, tiny_images[0])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "input 12x12"
    assert any("'c1': 4 maps of 10x10" in t for t in titles)
    assert any("'c2': 6 maps of 3x3" in t for t in titles)
    np.testing.assert_allclose(images_in(fig.axes[0])[0].get_array(), tiny_images[0, ..., 0])


def test_figures_save_headless(maps, tmp_path):
    assert matplotlib.get_backend().lower() == "agg"
    course.plot_feature_maps(maps).savefig(tmp_path / "maps.png")
    assert (tmp_path / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------- every kind of kernel


def test_kernels_of_every_conv_kind_in_one_axis_order():
    from conftest import conv_kinds_model

    model = conv_kinds_model()
    assert set(course.conv_layer_names(model)) == {"depth", "sep", "up", "strip"}
    kind, parts = course.kernel_parts(model, "depth")
    assert kind == "DepthwiseConv2D" and parts["depthwise"].shape == (3, 3, 3, 2)
    kind, parts = course.kernel_parts(model, "sep")
    assert parts["depthwise"].shape == (3, 3, 6, 1) and parts["pointwise"].shape == (1, 1, 6, 5)
    kind, parts = course.kernel_parts(model, "up")
    stored = model.get_layer("up").kernel.numpy()  # Keras: (kh, kw, filters, inputs)
    assert stored.shape == (3, 2, 4, 5) and parts["kernel"].shape == (3, 2, 5, 4)
    np.testing.assert_array_equal(parts["kernel"][:, :, 1, 3], stored[:, :, 3, 1])
    assert course.kernel_parts(model, "strip")[1]["kernel"].shape == (5, 36, 7)


def test_depthwise_kernels_are_drawn_one_per_input_channel_not_averaged():
    from conftest import conv_kinds_model

    model = conv_kinds_model()
    fig = course.plot_filters(model, "depth")
    ax = fig.axes[0]
    kernel = model.get_layer("depth").kernel.numpy()  # (3, 3, 3 inputs, 2 multiplier)
    [image] = images_in(ax)
    np.testing.assert_allclose(image.get_array().filled(np.nan), montage(kernel.reshape(3, 3, 6), 8), equal_nan=True)
    assert "depthwise: one kernel per input channel (3 channels x 2 multiplier)" in ax.get_title()
    assert "mean over" not in ax.get_title() and tile_labels(ax) == [str(k) for k in range(6)]


def test_separable_kernels_show_the_depthwise_and_the_pointwise_part():
    from conftest import conv_kinds_model

    model = conv_kinds_model()
    layer = model.get_layer("sep")
    fig = course.plot_filters(model, "sep")
    left, right = [ax for ax in fig.axes if ax.get_images()]
    np.testing.assert_allclose(left.get_images()[0].get_array().filled(np.nan),
                               montage(layer.depthwise_kernel.numpy()[:, :, :, 0], 8), equal_nan=True)
    assert "SeparableConv2D" in left.get_title() and "depthwise" in left.get_title()
    np.testing.assert_allclose(right.get_images()[0].get_array(), layer.pointwise_kernel.numpy()[0, 0])
    assert right.get_title() == "pointwise: 6 x 5 weights of 1x1"
    low, high = right.get_images()[0].get_clim()
    limit = max(np.abs(layer.depthwise_kernel.numpy()).max(), np.abs(layer.pointwise_kernel.numpy()).max())
    assert (low, high) == pytest.approx((-limit, limit))  # one honest scale for both parts


def test_transposed_kernels_use_their_own_axis_order():
    from conftest import conv_kinds_model

    model = conv_kinds_model()
    stored = model.get_layer("up").kernel.numpy()  # (3, 2, 4 filters, 5 inputs)
    fig = course.plot_filters(model, "up", in_channel=4)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array().filled(np.nan), montage(stored[:, :, :, 4], 8),
                               equal_nan=True)
    assert "transposed conv, input channel 4" in ax.get_title() and "4 kernels of 3x2" in ax.get_title()
    with pytest.raises(ValueError, match="in_channel must be in 0..4"):
        course.plot_filters(model, "up", in_channel=5)


def test_conv1d_kernels_are_drawn_as_strips():
    from conftest import conv_kinds_model

    model = conv_kinds_model()
    kernel = model.get_layer("strip").kernel.numpy()  # (5, 36, 7)
    fig = course.plot_filters(model, "strip", ncols=1)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.get_images()[0].get_array().filled(np.nan),
                               montage(kernel.mean(axis=1)[np.newaxis], 1), rtol=1e-6, equal_nan=True)
    assert ax.get_images()[0].get_array().shape == (7 * 2 - 1, 5)  # 7 strips of 1x5, one per row
    assert "7 strips of 5 (1-D strips of 5, mean over 36 input channels)" in ax.get_title()


# ------------------------------------------- the explain command's figures, checked by content


def test_plot_class_activation_scales_each_row_to_its_maximum():
    matrix = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 1.5], [np.nan, np.nan, np.nan]], np.float32)
    fig = course.plot_class_activation(matrix, "conv2")
    ax = fig.axes[0]
    [image] = images_in(ax)
    shown = image.get_array()
    np.testing.assert_allclose(shown[0], [0.25, 0.5, 1.0])
    np.testing.assert_allclose(shown[1], [1.0, 0.0, 0.5])
    assert np.all(np.asarray(shown[2]) == 0)  # a class without images: no colour, not NaN
    assert image.get_clim() == (0, 1) and "'conv2'" in ax.get_title()
    assert ax.get_xlabel() == "channel" and list(ax.get_yticks()) == [0, 1, 2]


def test_plot_examples_draws_each_image_with_its_caption():
    images = np.random.default_rng(3).random((5, 12, 12, 1), dtype=np.float32)
    fig = course.plot_examples(images, [f"#{i}" for i in range(5)], ncols=3, title="five")
    drawn = [ax for ax in fig.axes if ax.get_images()]
    assert len(fig.axes) == 6 and len(drawn) == 5  # a 2 x 3 grid, the last tile empty
    for i, ax in enumerate(drawn):
        np.testing.assert_allclose(ax.get_images()[0].get_array(), images[i, ..., 0])
        assert ax.get_title() == f"#{i}"
    assert fig.get_suptitle() == "five"


def test_plot_misclassified_shows_each_mistake_and_its_maps(tiny_model, tiny_images):
    labels = np.array([0, 1, 2, 0, 1])
    predicted = tiny_model.predict(tiny_images, verbose=0).argmax(axis=1)
    labels[0] = (predicted[0] + 1) % 3  # at least one mistake
    wrong = course.misclassified(tiny_model, tiny_images, labels, "c1")
    count = min(2, len(wrong["indices"]))
    fig = course.plot_misclassified(wrong, tiny_images, count=count, ncols=4)
    digits = [ax for ax in fig.axes if ax.get_images() and ax.get_images()[0].get_array().shape == (12, 12)]
    montages = [ax for ax in fig.axes if ax.get_images() and ax.get_images()[0].get_array().shape == (10, 4 * 11 - 1)]
    assert len(digits) == len(montages) == count
    first = int(wrong["indices"][0])
    np.testing.assert_allclose(digits[0].get_images()[0].get_array(), tiny_images[first, ..., 0])
    assert f"#{first}: label {wrong['labels'][0]}" in digits[0].get_title()
    assert f"predicted {wrong['predictions'][0]}" in digits[0].get_title()
    expected = montage(course.normalize_maps(wrong["maps"][0], "per_map"), 4)
    np.testing.assert_allclose(montages[0].get_images()[0].get_array().filled(np.nan), expected, equal_nan=True)


def test_plot_projection_places_each_point_with_its_class():
    coords = np.array([[0.0, 1.0], [2.0, -1.0], [3.5, 0.5]])
    labels = np.array([3, 7, 3])
    fig = course.plot_projection(coords, labels, explained=np.array([0.6, 0.25]))
    ax = fig.axes[0]
    [points] = ax.collections
    np.testing.assert_allclose(points.get_offsets(), coords)
    np.testing.assert_array_equal(points.get_array(), labels)
    assert ax.get_xlabel() == "principal component 1 (60% of variance)"
    assert ax.get_ylabel() == "principal component 2 (25% of variance)"


def test_plot_saliency_examples_draws_the_image_and_both_maps(tiny_model, tiny_images):
    fig = course.plot_saliency_examples(tiny_model, tiny_images[:2], ["a", "b"], smooth_samples=4)
    rows = np.array(fig.axes).reshape(2, 3)
    for row, image, caption in zip(rows, tiny_images[:2], ["a", "b"]):
        np.testing.assert_allclose(row[0].get_images()[0].get_array(), image[..., 0])
        np.testing.assert_allclose(row[1].get_images()[0].get_array(), course.saliency_map(tiny_model, image))
        np.testing.assert_allclose(row[2].get_images()[0].get_array(),
                                   course.saliency_map(tiny_model, image, smooth_samples=4))
        assert [ax.get_title() for ax in row] == [caption, "saliency", "SmoothGrad (4)"]


def test_plot_grad_cam_examples_overlays_each_layers_heatmap(tiny_model, tiny_images):
    fig = course.plot_grad_cam_examples(tiny_model, tiny_images[:3], ["x", "y", "z"], colorbar=True)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == 6  # 2 conv layers x 3 images
    for ax, (layer, i) in zip(panels, [(layer, i) for layer in ("c1", "c2") for i in range(3)]):
        cam = course.grad_cam(tiny_model, tiny_images[i], layer)
        drawn = ax.get_images()
        np.testing.assert_allclose(drawn[0].get_array(), tiny_images[i, ..., 0])
        if cam.max() > 0:
            np.testing.assert_allclose(drawn[1].get_array(), cam)
        else:
            assert "all zero" in ax.get_title()
        assert ax.get_title().startswith(f"{'xyz'[i]} '{layer}'")
    assert len(fig.axes) == 7  # and one shared colorbar
