"""Saliency, Grad-CAM, activation maximization and the class-level analysis, checked by their
mathematics: finite differences, a model where only one region matters, CAM's closed form,
activation gains, and brute-force references for the analysis functions."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import region_model, tiny_functional, tiny_linear, tiny_nested, tiny_sequential
from matplotlib.figure import Figure

import course
from course.errors import InputShapeError, LayerError, OptionError

REGION = ((2, 8), (8, 14))  # rows, cols of region_model's default region (off the diagonal)


def _region_mask(grow: int = 0, size: int = 16) -> np.ndarray:
    (top, bottom), (left, right) = REGION
    mask = np.zeros((size, size), bool)
    mask[max(0, top - grow) : bottom + grow, max(0, left - grow) : right + grow] = True
    return mask


def _float64_twin(model: keras.Model, linear_head: bool = False) -> keras.Model:
    """The same model and weights computing in float64 (finite differences need the precision),
    optionally with the last layer's softmax removed (its outputs are then the logits)."""

    def clone(layer):
        config = {**layer.get_config(), "dtype": "float64"}
        if linear_head and layer is model.layers[-1]:
            config["activation"] = "linear"
        return layer.__class__.from_config(config)

    inputs = keras.Input(model.inputs[0].shape[1:], dtype="float64")
    twin = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def _finite_difference_gradient(f, image: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f(batch) -> (N,)`` at every pixel, in float64."""
    flat = image.reshape(-1).astype(np.float64)
    steps = np.eye(flat.size) * eps
    plus = (flat + steps).reshape(-1, *image.shape)
    minus = (flat - steps).reshape(-1, *image.shape)
    return ((f(plus) - f(minus)) / (2 * eps)).reshape(image.shape)


# ------------------------------------------------------------------------------- saliency


def test_saliency_equals_finite_differences_of_the_score():
    model = tiny_sequential()
    image = np.random.default_rng(5).random((12, 12, 1), dtype=np.float32)
    saliency = course.saliency_map(model, image, class_index=1)
    twin = _float64_twin(model)
    numeric = _finite_difference_gradient(lambda b: twin(b, training=False).numpy()[:, 1], image)
    assert saliency.shape == (12, 12)
    assert saliency.max() > 0
    np.testing.assert_allclose(saliency, np.abs(numeric[..., 0]), atol=1e-4 * saliency.max(), rtol=1e-3)


def test_saliency_of_a_softmax_model_is_the_gradient_of_the_logit():
    """The course's architecture ends in softmax; saliency must differentiate the logit."""
    keras.utils.set_random_seed(7)
    model = course.build_model()
    image = np.random.default_rng(6).random((28, 28, 1), dtype=np.float32)
    # In float64 throughout, so that no max-pool tie or ReLU kink is decided differently.
    model64, logits64 = _float64_twin(model), _float64_twin(model, linear_head=True)
    saliency = course.saliency_map(model64, image, class_index=3)
    numeric = _finite_difference_gradient(lambda b: logits64(b, training=False).numpy()[:, 3], image)
    np.testing.assert_allclose(saliency, np.abs(numeric[..., 0]), atol=1e-4 * saliency.max(), rtol=1e-3)
    # The float32 model gives the same map up to float32 rounding near a few kinks.
    assert np.corrcoef(course.saliency_map(model, image, class_index=3).ravel(), saliency.ravel())[0, 1] > 0.99
    # The model's own softmax is untouched afterwards.
    assert model.layers[-1].activation.__name__ == "softmax"
    np.testing.assert_allclose(model(image[None]).numpy().sum(), 1.0, rtol=1e-5)


def test_smoothgrad_of_a_linear_model_equals_vanilla_and_is_reproducible(tiny_images):
    """A linear model's gradient is the same at every input, so averaging over noise changes nothing."""
    model = tiny_linear()
    vanilla = course.saliency_map(model, tiny_images[0], class_index=2)
    smooth = course.saliency_map(model, tiny_images[0], class_index=2, smooth_samples=40, seed=3)
    np.testing.assert_allclose(smooth, vanilla, rtol=1e-4, atol=1e-6)
    relu_model = tiny_sequential()
    first = course.saliency_map(relu_model, tiny_images[1], smooth_samples=40, seed=3)
    again = course.saliency_map(relu_model, tiny_images[1], smooth_samples=40, seed=3)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, course.saliency_map(relu_model, tiny_images[1]))


def test_saliency_defaults_to_the_predicted_class(tiny_images):
    model = tiny_sequential()
    predicted = int(np.argmax(model(tiny_images[:1]).numpy()))
    np.testing.assert_array_equal(
        course.saliency_map(model, tiny_images[0]),
        course.saliency_map(model, tiny_images[0], class_index=predicted),
    )


def test_saliency_of_the_trained_model_lies_on_and_around_the_strokes(trained_model, mnist):
    (_, _), (x_test, _) = mnist
    shares, areas = [], []
    for image in x_test[:20]:
        saliency = course.saliency_map(trained_model, image)
        near = np.zeros((28, 28), bool)
        strokes = image[..., 0] > 0.3
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                near |= np.roll(strokes, (dy, dx), axis=(0, 1))
        shares.append(saliency[near].sum() / saliency.sum())
        areas.append(near.mean())
    assert np.mean(shares) > 1.5 * np.mean(areas), (np.mean(shares), np.mean(areas))


def test_saliency_rejects_a_batch_and_a_bad_class(tiny_images):
    model = tiny_sequential()
    with pytest.raises(InputShapeError, match="one image"):
        course.saliency_map(model, tiny_images[:2])
    with pytest.raises(ValueError, match="class_index must be in 0..2"):
        course.saliency_map(model, tiny_images[0], class_index=3)


# ------------------------------------------------------------------------------- Grad-CAM


def test_grad_cam_concentrates_on_the_only_region_that_matters():
    model = region_model()
    rng = np.random.default_rng(0)
    inside, reach = _region_mask(), _region_mask(grow=1)
    for _ in range(3):
        image = rng.random((16, 16, 1), dtype=np.float32)
        cam = course.grad_cam(model, image)  # default: the last conv layer, 'feat'
        assert cam.shape == (16, 16) and cam.max() == pytest.approx(1.0)
        # Outside the region grown by the conv's reach, every map is 0, and so is the heatmap.
        assert cam[~reach].max() < 1e-6
        assert cam[inside].sum() / cam.sum() > 0.7  # the region is 14% of the image
        # A coarser layer (8x8, resized to 16x16) still lands on the region, not transposed.
        pooled = course.grad_cam(model, image, layer="pool")
        assert pooled[_region_mask(grow=2)].sum() / pooled.sum() > 0.95


def test_grad_cam_equals_cam_for_a_global_average_pooling_head():
    """With maps -> global average -> dense, Grad-CAM's weights are the dense weights / (h*w)
    (Selvaraju et al., 2017, section 3.1), so the heatmap is CAM: relu(sum_k w_kc A_k)."""
    layers = [layer for layer in region_model().layers if layer.name != "pool"]
    model = keras.Sequential([keras.Input((16, 16, 1)), *layers])
    image = np.random.default_rng(1).random((16, 16, 1), dtype=np.float32)
    maps = course.extract_feature_maps(model, image, "feat")["feat"][0]
    weights = model.get_layer("out").get_weights()[0]
    for class_index in (0, 1):
        cam = np.maximum(maps @ weights[:, class_index], 0)
        np.testing.assert_allclose(
            course.grad_cam(model, image, "feat", class_index), cam / cam.max(), atol=1e-5
        )


def test_grad_cam_works_on_every_kind_of_model(tiny_images, trained_model, mnist):
    """The public recipe keras.Model(model.inputs, [layer.output, model.output]) breaks on
    Keras 3 Sequential models; ours works on Sequential (with or without keras.Input, loaded
    from a file), functional and nested models."""
    for model, layer in [
        (tiny_sequential(), "c2"),
        (tiny_sequential(with_input=False), "c1"),
        (tiny_functional(), "fb"),
        (tiny_nested(), "pre"),
        (keras.Sequential([keras.Input((12, 12, 1)), tiny_sequential(name="inner")]), "c2"),
    ]:
        cam = course.grad_cam(model, tiny_images[0], layer)
        assert cam.shape == (12, 12) and 0.0 <= cam.min() and cam.max() <= 1.0
    # A layer of a Sequential nested in a functional model is re-traced in the same pass as the
    # score: its heatmap equals the one of the same layers in a flat Sequential model.
    nested = tiny_nested()
    flat = keras.Sequential([keras.Input((12, 12, 1)), *nested.get_layer("body").layers, nested.get_layer("head")])
    np.testing.assert_allclose(
        course.grad_cam(nested, tiny_images[0], "c1"), course.grad_cam(flat, tiny_images[0], "c1"), atol=1e-6
    )
    (_, _), (x_test, _) = mnist
    assert course.last_conv_layer(trained_model) == "conv2"
    cam = course.grad_cam(trained_model, x_test[0])
    assert cam.shape == (28, 28) and cam.max() == pytest.approx(1.0)


def test_grad_cam_errors_name_the_problem(tiny_images):
    model = tiny_sequential()
    with pytest.raises(LayerError, match="not a feature map"):
        course.grad_cam(model, tiny_images[0], layer="flat")
    with pytest.raises(LayerError, match="did you mean 'c1'"):
        course.grad_cam(model, tiny_images[0], layer="c11")
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(LayerError, match="no convolution layer"):
        course.grad_cam(dense_only, np.zeros(4, np.float32))


def test_score_model_gives_logits_that_softmax_back_to_the_output(trained_model, mnist):
    (_, _), (x_test, _) = mnist
    outputs = course.score_model(trained_model, "conv1")(x_test[:16])
    np.testing.assert_allclose(
        tf.nn.softmax(outputs["scores"]).numpy(), trained_model(x_test[:16]).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        outputs["maps"].numpy(), course.extract_feature_maps(trained_model, x_test[:16], "conv1")["conv1"],
        atol=1e-6,
    )


def test_plot_overlay_draws_the_heatmap_on_the_image(tiny_images):
    cam = np.outer(np.linspace(0, 1, 12), np.linspace(0.5, 1, 12))
    fig = course.plot_overlay(tiny_images[0], cam, title="c1")
    assert isinstance(fig, Figure)
    images = fig.axes[0].get_images()
    assert len(images) == 2
    np.testing.assert_allclose(images[1].get_array(), cam, rtol=1e-6)
    assert images[1].get_clim() == (0.0, float(cam.max()))
    with pytest.raises(ValueError, match="does not match the image"):
        course.plot_overlay(tiny_images[0], cam[:5])
    zero = course.plot_overlay(tiny_images[0], np.zeros((12, 12)), title="t")
    assert "all zero" in zero.axes[0].get_title()


def test_nan_or_inf_input_is_refused_never_explained_as_an_all_zero_heatmap(tiny_images):
    """One NaN pixel used to give an all-zero Grad-CAM and saliency (and plot_overlay blamed Grad-CAM)."""
    model = tiny_sequential()
    for bad, words in ((np.nan, "1 NaN and 0 Inf"), (np.inf, "0 NaN and 1 Inf")):
        image = tiny_images[0].copy()
        image[3, 3, 0] = bad
        for explain in (course.grad_cam, course.saliency_map):
            with pytest.raises(course.errors.InputError, match=f"contain {words} values out of 144.*nan_to_num"):
                explain(model, image)
        with pytest.raises(course.errors.InputError, match="NaN"):
            course.extract_feature_maps(model, image)
    with pytest.raises(course.errors.InputError, match="NaN"):
        course.maximize_activation(model, "c1", 0, steps=2, start=np.full((12, 12, 1), np.nan))


def test_options_that_used_to_ruin_activation_maximization_are_refused(tiny_images):
    model = tiny_sequential()
    for options, words in [
        ({"blur_sigma": 0}, "blur_sigma must be > 0.0"), ({"value_range": (1.0, 0.0)}, "low < high"),
        ({"steps": -1}, "steps must be >= 1"), ({"channel": 1.7}, "channel must be a whole number"),
    ]:
        with pytest.raises(OptionError, match=words):
            course.maximize_activation(model, "c1", **{"channel": 0, "steps": 3, **options})
    # A whole float channel is that channel; blur_sigma is irrelevant without blurring.
    np.testing.assert_array_equal(
        course.maximize_activation(model, "c1", 1.0, steps=3),
        course.maximize_activation(model, "c1", 1, steps=3),
    )
    assert course.maximize_activation(model, "c1", 1, steps=3, blur_every=0, blur_sigma=0).shape == (12, 12, 1)


# ------------------------------------------------------------------ activation maximization


def test_maximize_activation_raises_the_channel_far_above_random_and_real_inputs(trained_model, mnist):
    (_, _), (x_test, _) = mnist
    rng = np.random.default_rng(1)
    # Measured on two trainings of the course's model: against random noise conv1 gains 1.9x to 14x
    # (median 2.5x to 3x: a 3x3 pattern cannot be matched at every position of one image at
    # once), conv2 2.3x to 10^5x (median 25x); against the best of 500 real digits, every
    # channel's optimum is higher, by a median factor of 2.5 to 3.
    for layer, median_gain in (("conv1", 2.0), ("conv2", 10.0)):
        preferred = course.maximize_activation(trained_model, layer, None)
        count = len(preferred)
        assert preferred.shape == (count, 28, 28, 1)
        assert preferred.min() >= 0.0 and preferred.max() <= 1.0
        channels = np.arange(count)

        def own_channel(images, layer=layer, channels=channels):
            maps = course.extract_feature_maps(trained_model, images, layer)[layer]
            return maps[channels, :, :, channels].mean(axis=(1, 2))

        optimized = own_channel(preferred)
        random = own_channel(rng.random(preferred.shape, dtype=np.float32))
        digits = course.extract_feature_maps(trained_model, x_test[:500], layer)[layer].mean(axis=(1, 2))
        responsive = digits.mean(axis=0) > 0.01  # channels that respond to digits at all
        assert responsive.sum() > count // 2
        gain = optimized[responsive] / np.maximum(random[responsive], 1e-6)
        assert gain.min() > 1.5, (layer, np.round(gain, 1))
        assert np.median(gain) > median_gain, (layer, np.median(gain))
        best_digit = digits.max(axis=0)[responsive]
        assert np.mean(optimized[responsive] > best_digit) > 0.9, (layer, optimized[responsive] / best_digit)
        assert np.median(optimized[responsive] / best_digit) > 1.5


def test_maximize_activation_one_channel_and_options(tiny_images):
    model = tiny_sequential()
    one = course.maximize_activation(model, "c1", 2, steps=20, seed=1)
    assert one.shape == (12, 12, 1)
    np.testing.assert_array_equal(one, course.maximize_activation(model, "c1", [2], steps=20, seed=1)[0])
    # One step of a small ascent from a given start: both channels start from that image.
    started = course.maximize_activation(model, "c1", [0, 1], steps=1, learning_rate=1e-4, jitter=0, l2=0,
                                         start=tiny_images[0])
    np.testing.assert_allclose(started[1], tiny_images[0], atol=1e-3)
    assert not np.array_equal(started[0], started[1])
    with pytest.raises(OptionError, match="steps must be >= 1, got 0"):
        course.maximize_activation(model, "c1", [0, 1], steps=0)
    with pytest.raises(ValueError, match="channel must be in 0..3"):
        course.maximize_activation(model, "c1", 4)
    with pytest.raises(LayerError):
        course.maximize_activation(model, "out", 0)


def test_plot_preferred_images_has_a_tile_per_filter():
    model = tiny_sequential()
    fig = course.plot_preferred_images(model, steps=5)
    montages = [ax.get_images()[0].get_array() for ax in fig.axes if ax.get_images()]
    assert len(montages) == 2  # c1 and c2
    # c1: 4 tiles of 12x12 in one row with 1-pixel gaps; c2: 6 tiles of 12x12.
    assert montages[0].shape == (12, 4 * 13 - 1)
    assert montages[1].shape == (12, 6 * 13 - 1)


# --------------------------------------------------------------------- class-level analysis


def test_mean_activation_by_class_matches_a_direct_computation(tiny_images):
    model = tiny_sequential()
    images = np.concatenate([tiny_images, tiny_images[::-1] * 0.5])
    labels = np.array([0, 2, 2, 0, 2, 0, 0, 2, 2, 0])
    table = course.mean_activation_by_class(model, images, labels, "c1", batch_size=3)
    maps = course.extract_feature_maps(model, images, "c1")["c1"]
    assert table.shape == (3, 4)
    for label in (0, 2):
        np.testing.assert_allclose(table[label], maps[labels == label].mean(axis=(0, 1, 2)), rtol=1e-5)
    assert np.isnan(table[1]).all()  # no image of class 1
    with pytest.raises(ValueError, match="one label per image"):
        course.mean_activation_by_class(model, images, labels[:3], "c1")


def test_top_activating_images_are_the_strongest(tiny_images):
    model = tiny_sequential()
    images = np.concatenate([tiny_images, np.random.default_rng(9).random((7, 12, 12, 1), dtype=np.float32)])
    indices, values = course.top_activating_images(model, images, "c2", 3, k=4, batch_size=5)
    strongest = course.extract_feature_maps(model, images, "c2")["c2"][..., 3].mean(axis=(1, 2))
    np.testing.assert_array_equal(indices, np.argsort(-strongest, kind="stable")[:4])
    np.testing.assert_allclose(values, strongest[indices])
    assert np.all(np.diff(values) <= 0)
    with pytest.raises(ValueError, match="channels 0..5"):
        course.top_activating_images(model, images, "c2", 6)


def test_misclassified_returns_exactly_the_wrong_predictions_with_their_maps(trained_model, mnist):
    (_, _), (x_test, y_test) = mnist
    x, y = x_test[:1000], y_test[:1000]
    wrong = course.misclassified(trained_model, x, y)
    predicted = trained_model.predict(x, verbose=0).argmax(axis=1)
    np.testing.assert_array_equal(wrong["indices"], np.flatnonzero(predicted != y))
    assert 0 < len(wrong["indices"]) < 50  # a ~99% accurate model
    np.testing.assert_array_equal(wrong["predictions"], predicted[wrong["indices"]])
    np.testing.assert_array_equal(wrong["labels"], y[wrong["indices"]])
    assert wrong["layer"] == "conv1"
    np.testing.assert_allclose(
        wrong["maps"], course.extract_feature_maps(trained_model, x[wrong["indices"]], "conv1")["conv1"]
    )
    assert np.all((wrong["confidence"] > 0.1) & (wrong["confidence"] <= 1.0))
    assert isinstance(course.plot_misclassified(wrong, x, count=2), Figure)


def test_project_maps_finds_the_planted_directions():
    rng = np.random.default_rng(0)
    count = 400
    strong, weak = rng.normal(0, 5.0, count), rng.normal(0, 2.0, count)
    axis_a = np.zeros((6, 6, 3))
    axis_a[1, 2, 0] = 1.0
    axis_b = np.zeros((6, 6, 3))
    axis_b[4, 4, 2] = 1.0
    maps = strong[:, None, None, None] * axis_a + weak[:, None, None, None] * axis_b
    maps += rng.normal(0, 0.1, maps.shape) + 3.0
    coords, explained = course.project_maps(maps)
    assert coords.shape == (count, 2)
    assert abs(np.corrcoef(coords[:, 0], strong)[0, 1]) > 0.999
    assert abs(np.corrcoef(coords[:, 1], weak)[0, 1]) > 0.99
    # The explained shares are the top eigenvalues of the covariance over their sum.
    eigenvalues = np.linalg.eigvalsh(np.cov(maps.reshape(count, -1), rowvar=False))[::-1]
    np.testing.assert_allclose(explained, eigenvalues[:2] / eigenvalues.sum(), rtol=1e-6)
    np.testing.assert_allclose(coords.mean(axis=0), 0.0, atol=1e-4)  # centred


def test_project_maps_on_large_inputs_matches_the_full_svd():
    """Above 500 on the smaller side the SVD is taken in a sketched subspace: same answer."""
    rng = np.random.default_rng(2)
    latent = rng.normal(size=(600, 4)) * np.array([9.0, 6.0, 4.0, 3.0])
    data = latent @ rng.normal(size=(4, 700)) + rng.normal(0, 0.5, (600, 700))
    coords, explained = course.project_maps(data, n_components=3)
    centred = data - data.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :3] * s[:3]
    np.testing.assert_allclose(np.abs(coords), np.abs(reference), atol=1e-3 * np.abs(reference).max())
    np.testing.assert_allclose(explained, s[:3] ** 2 / (s**2).sum(), rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        course.project_maps(data[:1])
    with pytest.raises(ValueError, match="n_components must be between 1 and 600"):
        course.project_maps(data, n_components=601)


# ------------------------------------------------------------------- a bigger network


@pytest.mark.slow
def test_mobilenet_falls_back_to_random_weights_and_everything_scales_to_its_channels(tmp_path):
    model, pretrained, note = course.load_mobilenet_v2(weights=str(tmp_path / "missing.h5"))
    assert not pretrained and "RANDOM weights" in note and "no learned features" in note
    photo = course.sample_photo(224)
    assert photo.shape == (224, 224, 3) and 0.0 <= photo.min() and photo.max() <= 1.0
    image = course.mobilenet_input(photo)
    names = course.feature_map_layer_names(model)
    maps = course.extract_feature_maps(model, image, names)
    assert len(maps) > 100 and maps[names[-1]].shape == (1, 7, 7, 1280)
    fig = course.plot_feature_maps(maps[names[-1]], ncols=36, labels=False)
    assert fig.axes[0].get_images()[0].get_array().shape == (36 * 8 - 1, 36 * 8 - 1)
    # Functional model with a softmax head: scores are its logits, Grad-CAM and saliency work.
    scores = course.score_model(model)(image[None])["scores"]
    np.testing.assert_allclose(tf.nn.softmax(scores).numpy(), model(image[None]).numpy(), atol=1e-6)
    cam = course.grad_cam(model, image)
    assert cam.shape == (224, 224)
    assert course.saliency_map(model, image).shape == (224, 224)


@pytest.mark.slow
def test_the_explain_command_writes_a_figure_of_each_tool(tmp_path, trained_model, capsys):
    from course.__main__ import main

    # MobileNetV2 is tested above; here it would try to download ImageNet weights.
    assert main(["explain", "--out", str(tmp_path), "--no-mobilenet"]) == 0
    expected = {
        "saliency.png", "grad_cam.png", "preferred_images.png", "maps_across_epochs.png",
        "filters_across_epochs.png", "class_activation.png", "top_activating.png",
        "misclassified.png", "projection.png",
    }
    assert expected <= {path.name for path in tmp_path.glob("*.png")}
    assert all((tmp_path / name).stat().st_size > 10_000 for name in expected)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "Wrote 9 figures" in capsys.readouterr().out
