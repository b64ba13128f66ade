"""Every public function on every kind of model: Sequential, functional, nested at any depth
(reused layers included), loaded from a ``.keras`` file, and the transfer-learning shape (an
applications base nested in a functional model). Checked against the layers called by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import MODEL_KINDS, reused_sequential, sequential_base_model, transfer_model
from matplotlib.figure import Figure

import course
from course.errors import CourseError


def _loaded(model, tmp_path):
    path = tmp_path / f"{model.name}.keras"
    model.save(path)
    return keras.models.load_model(path, safe_mode=True)


def _reference_cam(model, layer_output_model, image, class_index):
    """Grad-CAM by hand: a model from the input to (maps, logits) built from the layers directly."""
    with tf.GradientTape() as tape:
        maps, scores = layer_output_model(image[None])
        score = scores[0, class_index]
    grads = tape.gradient(score, maps)[0]
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * tf.reduce_mean(grads, axis=(0, 1)), axis=-1))
    cam = tf.image.resize(cam[None, :, :, None], image.shape[:2], method="bilinear")[0, :, :, 0].numpy()
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
@pytest.mark.parametrize("loaded", [False, True], ids=["built", "loaded"])
def test_every_public_function_on_every_kind_of_model(kind, loaded, tmp_path):
    model = MODEL_KINDS[kind]()
    if loaded:
        model = _loaded(model, tmp_path)
    image = np.random.default_rng(0).random((12, 12, 1), dtype=np.float32)
    conv = course.conv_layer_names(model)
    assert conv, kind
    maps = course.extract_feature_maps(model, image, conv)
    assert all(m.ndim == 4 and m.shape[0] == 1 for m in maps.values())
    last = course.last_conv_layer(model)
    assert last == conv[-1]
    cam = course.grad_cam(model, image)  # the default layer, wherever it is nested
    assert cam.shape == (12, 12) and np.isfinite(cam).all() and 0 <= cam.min() and cam.max() <= 1
    saliency = course.saliency_map(model, image)
    assert saliency.shape == (12, 12) and saliency.max() > 0
    preferred = course.maximize_activation(model, conv[0], 0, steps=3)
    assert preferred.shape == (12, 12, 1) and np.isfinite(preferred).all()
    assert isinstance(course.plot_filters(model, conv[0]), Figure)
    assert isinstance(course.compare_layers(model, image, conv[:2]), Figure)
    assert course.filter_weights(model, conv[0]).ndim == 4
    # The same layers given by index and as objects.
    names = list(course.layer_output_shapes(model))
    by_index = course.extract_feature_maps(model, image, names.index(conv[0]))
    by_object = course.extract_feature_maps(model, image, course.find_layer(model, conv[0]))
    np.testing.assert_array_equal(by_index[conv[0]], maps[conv[0]])
    np.testing.assert_array_equal(by_object[conv[0]], maps[conv[0]])


def test_reused_sequential_is_recorded_once_per_call_and_matches_by_hand():
    model = reused_sequential()
    body = model.get_layer("middle").get_layer("shared_body")
    image = np.random.default_rng(1).random((1, 12, 12, 1), dtype=np.float32)
    names = course.conv_layer_names(model)
    assert names == ["c1", "c2", "shared_body/c1", "shared_body/c2"]
    maps = course.extract_feature_maps(model, image, names)
    first = body.get_layer("c1")(image)
    second = body.get_layer("c1")(image * 0.5)
    np.testing.assert_allclose(maps["c1"], first, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["shared_body/c1"], second, rtol=1e-5, atol=1e-6)
    # The score goes through both calls: a heatmap for each.
    for layer in ("c2", "shared_body/c2"):
        assert course.grad_cam(model, image[0], layer).max() == pytest.approx(1.0)


def test_sequential_base_grad_cam_equals_the_layers_by_hand():
    model = sequential_base_model()
    base = model.get_layer("base")
    image = np.random.default_rng(2).random((12, 12, 1), dtype=np.float32)
    x = keras.Input((12, 12, 1))
    maps = base.get_layer("b2")(base.get_layer("b1")(x))
    head = model.get_layer("probs")
    logits = keras.ops.matmul(model.get_layer("gap")(maps), head.kernel) + head.bias
    by_hand = keras.Model(x, [maps, logits])
    peaks = []
    for class_index in range(3):
        cam = course.grad_cam(model, image, class_index=class_index)
        np.testing.assert_allclose(cam, _reference_cam(model, by_hand, image, class_index), atol=1e-5)
        peaks.append(cam.max())
    assert max(peaks) == pytest.approx(1.0)  # not every class's heatmap is empty


@pytest.mark.slow
def test_transfer_learning_shape_with_an_applications_base(tmp_path):
    """MobileNetV2 (weights=None) nested in a functional model with a pooling + Dense head:
    the shape that gave Keras's raw 'not connected to inputs' before."""
    model = transfer_model()
    image = np.random.default_rng(3).random((32, 32, 3), dtype=np.float32)
    names = course.conv_layer_names(model)
    assert len(names) == 52 and names[-1] == "Conv_1"
    maps = course.extract_feature_maps(model, image, ["Conv1", "Conv_1"])
    backbone = model.get_layer("mobilenetv2_1.00_32")
    expected = keras.Model(backbone.inputs, backbone.get_layer("Conv_1").output)(image[None])
    np.testing.assert_allclose(maps["Conv_1"], expected, rtol=1e-4, atol=1e-5)
    scores = course.score_model(model, "Conv_1")(image[None])
    np.testing.assert_allclose(tf.nn.softmax(scores["scores"]).numpy(), model(image[None]).numpy(), atol=1e-6)
    cam = course.grad_cam(model, image)
    assert cam.shape == (32, 32) and cam.max() == pytest.approx(1.0)
    assert course.saliency_map(model, image).max() > 0
    loaded = _loaded(model, tmp_path)
    np.testing.assert_allclose(course.grad_cam(loaded, image), cam, atol=1e-5)


def test_models_the_tools_cannot_trace_are_refused_with_one_sentence(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    # A built subclassed model works (tests/test_subclassed.py), and so does a model with several
    # inputs (tests/test_multi_input.py); a subclassed one that was never called cannot.
    never_called = Subclassed()
    for bad, words in [
        (never_called, "has not been built.*call it once"), ("model.keras", "expected a Keras model"),
        (tmp_path / "model.keras", "expected a Keras model"), (None, "expected a Keras model"),
    ]:
        with pytest.raises(CourseError, match=words):
            course.conv_layer_names(bad)
        with pytest.raises(CourseError, match=words):
            course.grad_cam(bad, np.zeros((8, 8, 1), np.float32), layer=0)
