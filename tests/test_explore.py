"""course.explore's Python side, driven without a browser: the traits the page would set, and what comes back.

The widget's state is plain traits: the page sets ``drawing``, ``image_index``, ``upload``,
``normalization``, ``overlay``, ``selected`` and ``epoch``; Python answers with ``bars``, ``maps``
(one montage PNG per layer), ``input_png``/``overlay_png`` and ``detail``. Real Keras models only.
"""

from __future__ import annotations

import base64
import io

import keras
import numpy as np
import pytest
from conftest import MODEL_KINDS, transfer_model
from PIL import Image

import course
from course._explore_widget import MAX_MAPS, RASTER, mnist_digit
from course.errors import InputError, InputShapeError, LayerError, ModelError, OptionError


def decoded(data_url: str) -> np.ndarray:
    """The pixels of a PNG data URL."""
    assert data_url.startswith("data:image/png;base64,"), data_url[:40]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def stroke(rows: slice, cols: slice) -> bytes:
    """A canvas raster (RASTER x RASTER grey bytes) with one white rectangle, as the page sends it."""
    raster = np.zeros((RASTER, RASTER), np.uint8)
    raster[rows, cols] = 255
    return raster.tobytes()


@pytest.fixture(scope="module")
def digits(mnist):
    (_, _), (x_test, y_test) = mnist
    return x_test[:20], y_test[:20]


@pytest.fixture
def explorer(trained_model, digits):
    return course.explore(trained_model, digits[0])


def test_opens_on_the_first_test_image_with_every_conv_layer(explorer, trained_model, digits):
    x, y = digits
    assert explorer.layers == ["conv1", "conv2"]
    assert [m["layer"] for m in explorer.maps] == ["conv1", "conv2"]
    np.testing.assert_array_equal(explorer.image, x[0])
    assert explorer.bars[0][0] == str(y[0]), explorer.bars[:3]  # the trained model gets test digit 0 right
    expected = course.extract_feature_maps(trained_model, x[0], ["conv1", "conv2"])
    for name in ("conv1", "conv2"):
        np.testing.assert_allclose(explorer.feature_maps[name], expected[name][0], rtol=1e-5, atol=1e-5)
    conv1 = explorer.maps[0]
    assert (conv1["count"], conv1["height"], conv1["width"], conv1["ncols"]) == (32, 26, 26, 8)
    assert decoded(conv1["png"]).shape == (4 * 27 - 1, 8 * 27 - 1, 3)  # ONE montage image for 32 maps


def test_drawing_a_stroke_changes_prediction_and_maps(explorer):
    before_png, before_bars, updates = explorer.maps[0]["png"], explorer.bars, explorer.updates
    # as the page sends it: a binary buffer in a comm message (a vertical bar: a 1)
    explorer.set_state({"drawing": memoryview(stroke(slice(10, 100), slice(50, 62)))})
    assert explorer.updates > updates
    assert explorer.bars[0][0] == "1", explorer.bars[:3]
    assert explorer.bars != before_bars and explorer.maps[0]["png"] != before_png
    assert abs(sum(p for _, p in explorer.bars) - 1.0) < 1e-3  # the ten classes' probabilities
    explorer.drawing = bytes(RASTER * RASTER)  # "Clear": an empty canvas is an all-black input
    assert not explorer.image.any()


def test_a_drawing_is_centred_the_mnist_way():
    raster = np.zeros((RASTER, RASTER), np.float32)
    raster[5:25, 80:90] = 1.0  # small, tall, in the top-right corner
    digit = mnist_digit(raster)
    rows, cols = np.nonzero(digit > 0.05)
    assert rows.max() - rows.min() + 1 in (20, 21) and cols.max() - cols.min() + 1 < 20  # 20-pixel box, aspect kept
    centre = np.array(np.nonzero(digit)) @ digit[digit > 0] / digit.sum()
    assert np.allclose(centre, 13.5, atol=1.0), centre
    assert not mnist_digit(np.zeros((RASTER, RASTER))).any()


def test_the_normalization_switch_changes_the_montage(explorer):
    shown = {}
    for mode in ("per_map", "per_layer", "robust"):
        explorer.normalization = mode
        shown[mode] = explorer.maps[0]["png"]
    assert len(set(shown.values())) == 3, "each scaling shows the maps differently"
    with pytest.raises(OptionError, match="normalization"):
        explorer.normalization = "log"


def test_clicking_a_map_shows_it_beside_its_kernel(explorer, trained_model):
    explorer.selected = ["conv1", 4]
    detail = explorer.detail
    assert (detail["layer"], detail["channel"]) == ("conv1", 4)
    assert "3x3 kernel" in detail["text"]
    big = decoded(detail["map_png"])
    assert big.shape[0] >= 26 * 4  # enlarged
    kernel = course.filter_weights(trained_model, "conv1")[..., 4].mean(axis=2)
    np.testing.assert_allclose(explorer.kernel("conv1", 4), kernel)
    assert decoded(detail["kernel_png"]).shape[:2] == (3 * 32, 3 * 32)
    explorer.selected = ["conv1", 999]  # outside the montage: nothing enlarged
    assert explorer.detail == {}


def test_overlay_toggles_grad_cam_and_saliency(explorer):
    assert explorer.overlay_png == ""
    explorer.overlay = "grad_cam"
    cam = explorer.overlay_png
    explorer.overlay = "saliency"
    assert cam and explorer.overlay_png and cam != explorer.overlay_png
    assert decoded(cam).shape == (28, 28, 3)
    explorer.overlay = "none"
    assert explorer.overlay_png == ""


def test_picker_and_upload(explorer, digits):
    x, y = digits
    explorer.image_index = 3
    np.testing.assert_array_equal(explorer.image, x[3])
    # a photo of digit 0 written dark on light paper, larger than the input
    paper = Image.fromarray(np.round(255 * (1 - x[0][..., 0])).astype(np.uint8)).resize((90, 90))
    buffer = io.BytesIO()
    paper.save(buffer, format="PNG")
    explorer.upload = buffer.getvalue()
    assert explorer.image.shape == (28, 28, 1) and explorer.image.max() > 0.9
    assert explorer.image[0, 0, 0] == 0.0, "the paper becomes MNIST's black background"
    assert explorer.bars[0][0] == str(y[0])
    explorer.upload = b"not an image"
    assert "not an image that can be read" in explorer.message and explorer.bars[0][0] == str(y[0])


def test_epoch_slider_scrubs_the_logged_maps_and_filters(digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = course.build_model("explored")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    logger = course.FeatureMapLogger(x[:2], layers=["conv1"])
    model.fit(x, y, epochs=1, batch_size=10, verbose=0, callbacks=[logger])
    explorer = course.explore(model, x, logger=logger)
    assert explorer.epochs == [0, 1] and explorer.logged_count == 2
    live = explorer.maps[0]["png"]
    explorer.epoch = 0
    assert explorer.bars == [] and "initialisation" in explorer.message
    assert [m["layer"] for m in explorer.maps] == ["conv1"]  # conv2 was not logged
    assert explorer.maps[0]["png"] != live
    explorer.selected = ["conv1", 2]
    np.testing.assert_allclose(explorer.kernel("conv1", 2), logger.snapshots[0]["filters"]["conv1"][..., 2])
    explorer.epoch = -1
    assert explorer.maps[0]["png"] == live and explorer.bars


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_model_kind(kind):
    model = MODEL_KINDS[kind]()
    explorer = course.explore(model)
    assert explorer.layers == course.conv_layer_names(model)
    explorer.drawing = stroke(slice(20, 90), slice(30, 80))
    expected = course.extract_feature_maps(model, explorer.image, explorer.layers)
    for name in explorer.layers:
        np.testing.assert_allclose(explorer.feature_maps[name], expected[name][0], rtol=1e-5, atol=1e-5)
    assert len(explorer.maps) == len(explorer.layers) and explorer.bars


def test_keras_applications_models_nested_and_alone():
    nested = course.explore(transfer_model(size=32), labels=list("abcd"))
    assert len(nested.layers) > 30 and {label for label, _ in nested.bars} == set("abcd")
    assert all(m["shown"] == min(m["count"], MAX_MAPS) for m in nested.maps)
    photo = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=5)
    explorer = course.explore(photo, layers=["Conv1", "block_16_project"], preprocess=course.mobilenet_input)
    assert [m["count"] for m in explorer.maps] == [32, 320]
    explorer.drawing = stroke(slice(0, 60), slice(0, 60))
    assert explorer.image.shape == (32, 32, 3) and explorer.image.max() == pytest.approx(1.0)
    expected = course.extract_feature_maps(photo, course.mobilenet_input(explorer.image), "Conv1")["Conv1"][0]
    np.testing.assert_allclose(explorer.feature_maps["Conv1"], expected, rtol=1e-4, atol=1e-5)


def test_a_model_without_conv_layers_gets_one_sentence():
    dense = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)], name="mlp")
    with pytest.raises(LayerError, match=r"^model 'mlp' has no convolution layer, so it has no feature maps"):
        course.explore(dense)


def test_bad_calls_get_the_package_errors(trained_model, digits):
    with pytest.raises(ModelError, match="expected a Keras model"):
        course.explore("models/cnn.keras")
    with pytest.raises(InputShapeError):
        course.explore(trained_model, np.zeros((3, 12, 12, 1), np.float32))
    with pytest.raises(LayerError, match="not a feature map"):
        course.explore(trained_model, layers="dense")
    with pytest.raises(OptionError, match="preprocess must be a function"):
        course.explore(trained_model, preprocess="mobilenet")
    with pytest.raises(OptionError, match="labels has 3 names"):
        course.explore(trained_model, labels=["a", "b", "c"])
    with pytest.raises(InputError, match="logger must be a FeatureMapLogger that has trained"):
        course.explore(trained_model, logger=course.FeatureMapLogger(digits[0][:1]))
