"""The package on real models at the edges (issue 23): every point either works, checked against
the layers called by hand, or ends in one sentence of the package's own error; never a raw
dependency error and never a silently wrong picture or number."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_sequential

import course
from course.errors import InputError, LayerError, ModelError, OptionError
from course.normalize import NonFiniteWarning

layers = keras.layers


def _rng(seed=0):
    return np.random.default_rng(seed)


def _no_warnings(fn, label: str = ""):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    assert not caught, f"{label}: {[str(w.message) for w in caught]}"
    return result


# ------------------------------------------------------------------ variable-size inputs


def fully_convolutional() -> keras.Sequential:
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((None, None, 1)),
        layers.Conv2D(4, 3, activation="relu", name="fc1"),
        layers.MaxPooling2D(2, name="fpool"),
        layers.Conv2D(6, 3, activation="relu", name="fc2"),
        layers.GlobalAveragePooling2D(name="fgap"),
        layers.Dense(3, name="fout"),
    ], name="fully_convolutional")


@pytest.mark.parametrize("size", [(20, 24), (33, 17)])
def test_a_fully_convolutional_model_gives_maps_for_the_image_given(size, tmp_path):
    model = fully_convolutional()
    images = _rng().random((3, *size, 1), dtype=np.float32)
    maps = course.extract_feature_maps(model, images, ["fc1", "fc2"], batch_size=2)
    first = model.get_layer("fc1")(images)
    second = model.get_layer("fc2")(model.get_layer("fpool")(first))
    np.testing.assert_allclose(maps["fc1"], first, atol=1e-6)
    np.testing.assert_allclose(maps["fc2"], second, atol=1e-6)
    streamed = course.extract_feature_maps(model, images, ["fc1", "fc2"], batch_size=2, out_dir=tmp_path)
    np.testing.assert_allclose(streamed["fc2"], maps["fc2"], atol=1e-6)
    grey = course.extract_feature_maps(model, images[0, ..., 0], "fc1")  # a grey image without its channel axis
    np.testing.assert_allclose(grey["fc1"], maps["fc1"][:1], atol=1e-6)
    assert course.grad_cam(model, images[0]).shape == size
    assert course.saliency_map(model, images[0]).shape == size
    assert isinstance(course.compare_layers(model, images[0]), course.plotting.Figure)


def test_an_include_top_false_base_gives_maps_equal_to_its_layer_by_hand():
    base = keras.applications.MobileNetV2(include_top=False, weights=None)
    assert course.tracing.input_shape(base) == (None, None, 3)
    by_hand = keras.Model(base.inputs, base.get_layer("block_3_expand_relu").output)
    for size in (48, 64):
        image = _rng(size).random((size, size, 3), dtype=np.float32)
        maps = course.extract_feature_maps(base, image, ["Conv1", "block_3_expand_relu"])
        assert maps["Conv1"].shape == (1, size // 2, size // 2, 32)
        np.testing.assert_allclose(maps["block_3_expand_relu"], by_hand(image[None]), atol=1e-6)


def test_any_size_models_need_a_size_where_the_tool_makes_the_image():
    model = fully_convolutional()
    with pytest.raises(OptionError, match=r"any size .*pass start="):
        course.maximize_activation(model, "fc1", 0, steps=2)
    start = np.full((16, 16, 1), 0.5, np.float32)
    assert course.maximize_activation(model, "fc1", 0, steps=2, start=start).shape == (16, 16, 1)
    with pytest.raises(OptionError, match="pass images="):
        course.explore(model)
    explorer = course.explore(model, _rng().random((2, 20, 24, 1), dtype=np.float32))
    assert explorer.feature_maps["fc1"].shape == (18, 22, 4)


# ------------------------------------------------------------------ one-sentence refusals


def test_a_model_whose_output_is_not_class_scores_is_refused_in_one_sentence():
    keras.utils.set_random_seed(6)
    inputs = keras.Input((8, 8, 1))
    maps = layers.Conv2D(2, 3, padding="same", name="seg")(inputs)
    segmenter = keras.Model(inputs, maps, name="segmenter")
    two_heads = keras.Model(inputs, [layers.Flatten()(maps), layers.GlobalAveragePooling2D()(maps)], name="two")
    image = _rng().random((8, 8, 1), dtype=np.float32)
    for model, shown in [(segmenter, r"\(None, 8, 8, 2\)"), (two_heads, "2 outputs")]:
        with pytest.raises(ModelError, match=f"returns {shown}, not one .* tensor of scores"):
            course.grad_cam(model, image, "seg")
        with pytest.raises(ModelError, match=f"returns {shown}, not one .* tensor of scores"):
            course.saliency_map(model, image)
    assert course.extract_feature_maps(segmenter, image, "seg")["seg"].shape == (1, 8, 8, 2)


def channels_first_model() -> keras.Sequential:
    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((1, 28, 28)),
        layers.Conv2D(5, 3, data_format="channels_first", activation="relu", name="cf1"),
        layers.Flatten(),
        layers.Dense(3),
    ], name="channels_first")


def test_channels_first_models_are_refused_everywhere_never_drawn_wrong():
    model = channels_first_model()
    nested = keras.Sequential([keras.Input((1, 28, 28)), model], name="outer")
    image = _rng().random((1, 28, 28), dtype=np.float32)
    calls = {
        "extract_feature_maps": lambda m: course.extract_feature_maps(m, image),
        "grad_cam": lambda m: course.grad_cam(m, image, "cf1"),
        "saliency_map": lambda m: course.saliency_map(m, image),
        "compare_layers": lambda m: course.compare_layers(m, image),
        "plot_filters": lambda m: course.plot_filters(m, "cf1"),
        "maximize_activation": lambda m: course.maximize_activation(m, "cf1", 0, steps=2),
        "explore": lambda m: course.explore(m),
        "conv_layer_names": course.conv_layer_names,
    }
    for m in (model, nested):
        for name, call in calls.items():
            with pytest.raises(ModelError, match="channels_first layers \\(e.g. 'cf1'\\).*channels_last"):
                call(m)
                pytest.fail(f"{name} accepted the channels_first model '{m.name}'")


def test_a_list_given_where_one_layer_is_used_is_refused():
    model = tiny_sequential()
    image = _rng().random((12, 12, 1), dtype=np.float32)
    for call in (
        lambda: course.grad_cam(model, image, ["c2", "c1"]),
        lambda: course.score_model(model, ("c1",)),
        lambda: course.maximize_activation(model, ["c1", "c2"], 0, steps=2),
        lambda: course.find_layer(model, ["c1"]),
    ):
        with pytest.raises(LayerError, match="takes one layer, got a (list|tuple) of"):
            call()


# ------------------------------------------------------------------ Grad-CAM's default layer


def test_the_default_grad_cam_layer_has_spatial_maps_and_1x1_layers_warn():
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(64, 64, 3))
    shapes = course.layer_output_shapes(model)
    assert shapes["logits"][1:3] == (1, 1)  # a conv layer after the global pooling
    chosen = course.last_conv_layer(model)
    assert chosen != "logits" and shapes[chosen][1] * shapes[chosen][2] > 1
    assert chosen == [n for n in course.conv_layer_names(model) if shapes[n][1] > 1][-1]
    image = _rng().random((64, 64, 3), dtype=np.float32) * 255
    cam = _no_warnings(lambda: course.grad_cam(model, image))
    assert cam.shape == (64, 64)
    with pytest.warns(UserWarning, match="'logits'.* has 1x1 maps.*same at every position"):
        course.grad_cam(model, image, "logits")


# ------------------------------------------------------------------ the 0-255 warning


def _normalizing_model(mean, variance, name):
    keras.utils.set_random_seed(8)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.Normalization(mean=mean, variance=variance, name="norm"),
        layers.Conv2D(2, 3, name="nc"), layers.Flatten(), layers.Dense(2),
    ], name=name)


def test_the_0_255_warning_follows_the_models_own_preprocessing():
    pixels = (_rng().random((16, 16, 3)) * 255).astype(np.float32)
    takes_0_255 = {
        "EfficientNetB0 (Rescaling 1/255, Normalization)": keras.applications.EfficientNetB0(
            weights=None, input_shape=(32, 32, 3)),
        "MobileNetV3Small (Rescaling 1/127.5, offset -1)": keras.applications.MobileNetV3Small(
            weights=None, input_shape=(32, 32, 3)),
        "ImageNet's 0-255 mean and variance": _normalizing_model(
            [123.7, 116.3, 103.5], [58.4**2, 57.1**2, 57.4**2], "imagenet_norm"),
    }
    for label, model in takes_0_255.items():
        size = course.tracing.input_shape(model)[:2]
        image = np.resize(pixels, (*size, 3))
        _no_warnings(lambda model=model, image=image: course.extract_feature_maps(model, image, 1), label)
        _no_warnings(lambda model=model, image=image: course.saliency_map(model, image), label)
    takes_0_1 = [  # the course's kind (no preprocessing), and a Normalization with a [0, 1] mean
        (tiny_sequential(), "has no preprocessing layer"),
        (_normalizing_model([0.5] * 3, [0.25**2] * 3, "unit_norm"), r"preprocessing of model 'unit_norm' \(norm\)"),
    ]
    for model, words in takes_0_1:
        shape = course.tracing.input_shape(model)
        image = np.resize(pixels, shape)
        with pytest.warns(UserWarning, match=f"look(s)? like 0-255 values.*{words}.*divide by 255"):
            course.extract_feature_maps(model, image, 0)


# ------------------------------------------------------------------ silently wrong values


def test_images_that_overflow_float32_are_refused_everywhere():
    model = tiny_sequential()
    huge32 = np.full((12, 12, 1), 3e38, np.float32)  # finite, but the convolution overflows
    beyond = np.full((12, 12, 1), 1e39)  # float64 values that float32 cannot hold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 0-255 warning
        with pytest.raises(InputError, match="maps of layer 'c1' are not finite.*overflowed"):
            course.extract_feature_maps(model, huge32)
        for call in (course.extract_feature_maps, course.grad_cam, course.saliency_map, course.compare_layers):
            with pytest.raises(InputError, match="beyond float32"):
                call(model, beyond)


def test_a_nan_channel_is_reported_dead_with_a_warning():
    maps = _rng().random((4, 6, 6, 5), dtype=np.float32)
    maps[..., 1] = np.nan  # NaN everywhere: never fires
    maps[0, 0, 0, 3] = np.nan  # one NaN in a live channel
    maps[..., 4] = 0.0
    with pytest.warns(NonFiniteWarning, match=r"channels \[1, 3\] contain NaN"):
        dead = course.dead_filters(maps)
    assert dead.tolist() == [1, 4]


def test_masked_arrays_are_refused_rather_than_unmasked():
    model = tiny_sequential()
    image = _rng().random((12, 12, 1), dtype=np.float32)
    masked = np.ma.masked_greater(image, 0.9)
    maps = np.ma.masked_less(_rng(1).random((6, 6, 4), dtype=np.float32), 0.1)
    for call in (
        lambda: course.extract_feature_maps(model, masked),
        lambda: course.grad_cam(model, masked),
        lambda: course.saliency_map(model, masked),
        lambda: course.normalize_maps(maps),
        lambda: course.plot_feature_maps(maps),
        lambda: course.dead_filters(maps),
    ):
        with pytest.raises(InputError, match=r"masked array with \d+ masked values.*\.filled\(0\)"):
            call()
    nothing_hidden = np.ma.masked_array(image, mask=False)
    np.testing.assert_array_equal(
        course.extract_feature_maps(model, nothing_hidden, "c1")["c1"],
        course.extract_feature_maps(model, image, "c1")["c1"],
    )


def test_after_pop_and_add_the_new_head_is_used():
    model = tiny_sequential()
    image = _rng().random((12, 12, 1), dtype=np.float32)
    assert course.score_model(model)(image[None])["scores"].shape == (1, 3)
    before = course.extract_feature_maps(model, image, "c2")["c2"]
    model.pop()
    model.add(layers.Dense(5, name="new_head"))
    scores = course.score_model(model)(image[None])["scores"]
    np.testing.assert_allclose(scores, model(image[None]), atol=1e-6)
    assert scores.shape == (1, 5)
    assert "new_head" in course.layer_output_shapes(model) and "out" not in course.layer_output_shapes(model)
    np.testing.assert_array_equal(course.extract_feature_maps(model, image, "c2")["c2"], before)
    assert course.grad_cam(model, image, class_index=4).shape == (12, 12)


def test_a_sigmoid_head_is_explained_by_its_logit():
    keras.utils.set_random_seed(9)
    inputs = keras.Input((12, 12, 1))
    features = layers.Flatten()(layers.Conv2D(4, 3, activation="relu", name="sc")(inputs))
    logit_layer = layers.Dense(1, kernel_initializer=keras.initializers.Constant(0.5), name="logit_dense")
    model = keras.Model(inputs, layers.Activation("sigmoid", name="prob")(logit_layer(features)), name="sig")
    own_sigmoid = layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.Constant(0.5))
    fused = keras.Sequential([keras.Input((12, 12, 1)), model.get_layer("sc"), layers.Flatten(), own_sigmoid])
    image = _rng().random((12, 12, 1), dtype=np.float32)
    batch = tf.convert_to_tensor(image[None])
    with tf.GradientTape() as tape:
        tape.watch(batch)
        logit = logit_layer(layers.Flatten()(model.get_layer("sc")(batch)))
    by_hand = np.abs(tape.gradient(logit, batch).numpy()[0]).max(axis=-1)
    assert float(model(image[None])[0, 0]) > 1 - 1e-6  # saturated: the probability's gradient vanishes
    for m in (model, fused):  # an Activation layer, and a Dense layer's own sigmoid
        saliency = course.saliency_map(m, image)
        np.testing.assert_allclose(saliency, by_hand, rtol=1e-5, atol=1e-6)
        assert saliency.max() > 0.1
        assert course.grad_cam(m, image, "sc").max() == pytest.approx(1.0)
