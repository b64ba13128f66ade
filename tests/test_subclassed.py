"""Subclassed models (issue 22): each layer's output recorded during the model's own call, like
PyTorch's forward hooks (course/hooks.py). Every public function and the explorer, checked against
the layers called by hand, on a model with a layer called twice and a ``training`` flag; and the
model is left exactly as it was."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import subclassed_cnn
from matplotlib.figure import Figure

import course
from course.errors import LayerError


@pytest.fixture
def model():
    return subclassed_cnn()


@pytest.fixture
def images():
    return np.random.default_rng(0).random((6, 12, 12, 1), dtype=np.float32)


def by_hand(model, x):
    """The subclassed model's inner outputs, calling its layers directly (inference mode)."""
    first = model.conv(x)
    shared_1 = model.shared(first)
    shared_2 = model.shared(shared_1)
    features = model.flat(model.pool(shared_2))
    logits = keras.ops.matmul(features, model.head.kernel) + model.head.bias
    return {"s1": first, "shared": shared_1, "subclassed/shared": shared_2, "logits": logits}


def test_layers_are_named_per_call_and_maps_equal_each_call_by_hand(model, images):
    shapes = course.layer_output_shapes(model)
    assert list(shapes) == ["s1", "shared", "subclassed/shared", "spool", "sflat", "sdrop", "sout"]
    assert shapes["subclassed/shared"] == (None, 10, 10, 4) and shapes["sout"] == (None, 3)
    assert course.conv_layer_names(model) == ["s1", "shared", "subclassed/shared"]
    assert course.last_conv_layer(model) == "subclassed/shared"  # the second call of the reused layer
    maps = course.extract_feature_maps(model, images, batch_size=4)
    assert list(maps) == ["s1", "shared", "subclassed/shared", "spool"]
    expected = by_hand(model, images)
    for name in ("s1", "shared", "subclassed/shared"):
        np.testing.assert_allclose(maps[name], expected[name], atol=1e-6, err_msg=name)
    assert not np.allclose(maps["shared"], maps["subclassed/shared"])  # two calls, two different maps
    by_object = course.extract_feature_maps(model, images, course.find_layer(model, "shared"))
    np.testing.assert_array_equal(by_object["shared"], maps["shared"])
    assert course.find_layer(model, "subclassed/shared") is model.shared


def test_scores_are_the_logits_in_inference_mode(model, images):
    scores = course.score_model(model, "shared")(images)
    np.testing.assert_allclose(scores["scores"], by_hand(model, images)["logits"], atol=1e-5)
    np.testing.assert_allclose(scores["maps"], by_hand(model, images)["shared"], atol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(scores["scores"]), model(images), atol=1e-6)
    again = course.score_model(model, "shared")(images)  # training=False: dropout stays off
    np.testing.assert_array_equal(again["scores"], scores["scores"])


def _grad_cam_by_hand(model, image, layer, class_index):
    x = tf.convert_to_tensor(image[None])
    with tf.GradientTape() as tape:
        inner = by_hand(model, x)
        score = inner["logits"][0, class_index]
    maps = inner[layer]
    grads = tape.gradient(score, maps)[0]
    cam = tf.nn.relu(tf.reduce_sum(maps[0] * tf.reduce_mean(grads, axis=(0, 1)), axis=-1))
    cam = tf.image.resize(cam[None, :, :, None], (12, 12), method="bilinear")[0, :, :, 0].numpy()
    return cam / cam.max() if cam.max() > 0 else cam


def test_grad_cam_and_saliency_equal_the_layers_by_hand(model, images):
    for layer in ("shared", "subclassed/shared"):
        for class_index in range(3):
            cam = course.grad_cam(model, images[0], layer, class_index)
            np.testing.assert_allclose(cam, _grad_cam_by_hand(model, images[0], layer, class_index), atol=1e-5)
    x = tf.convert_to_tensor(images[:1])
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = by_hand(model, x)["logits"][0, 1]
    expected = np.abs(tape.gradient(score, x).numpy()[0]).max(axis=-1)
    np.testing.assert_allclose(course.saliency_map(model, images[0], class_index=1), expected, rtol=1e-5, atol=1e-7)


def test_every_other_public_function_on_a_subclassed_model(model, images, tmp_path):
    y = np.array([0, 1, 2, 0, 1, 2])
    preferred = course.maximize_activation(model, "subclassed/shared", [0, 1], steps=3)
    assert preferred.shape == (2, 12, 12, 1) and np.isfinite(preferred).all()
    assert isinstance(course.plot_filters(model, "shared"), Figure)
    np.testing.assert_array_equal(course.filter_weights(model, "shared"), model.shared.kernel.numpy())
    assert isinstance(course.compare_layers(model, images[0], ["s1", "subclassed/shared"]), Figure)
    assert isinstance(course.plot_preferred_images(model, ["s1"], steps=2), Figure)
    assert isinstance(course.plot_grad_cam_examples(model, images[:2], ["a", "b"]), Figure)
    assert course.mean_activation_by_class(model, images, y, "shared").shape == (3, 4)
    order, values = course.top_activating_images(model, images, "subclassed/shared", 2, k=3)
    means = by_hand(model, images)["subclassed/shared"].numpy()[..., 2].mean(axis=(1, 2))
    np.testing.assert_array_equal(order, np.argsort(-means, kind="stable")[:3])
    np.testing.assert_allclose(values, means[order], rtol=1e-5)
    wrong = course.misclassified(model, images, y, "s1")
    np.testing.assert_array_equal(wrong["predictions"], np.argmax(model(images), axis=1)[wrong["indices"]])
    streamed = course.extract_feature_maps(model, images, "shared", out_dir=tmp_path)
    np.testing.assert_allclose(streamed["shared"], by_hand(model, images)["shared"], atol=1e-6)
    assert course.feature_map_layer_names(model) == ["s1", "shared", "subclassed/shared", "spool"]
    maps_model = course.activation_model(model, ["s1", "subclassed/shared"])
    assert isinstance(maps_model, keras.Model)
    np.testing.assert_allclose(maps_model(images)["subclassed/shared"], by_hand(model, images)["subclassed/shared"],
                               atol=1e-6)
    assert isinstance(course.plot_saliency_examples(model, images[:2], ["a", "b"], smooth_samples=2), Figure)
    if len(wrong["indices"]):
        assert isinstance(course.plot_misclassified(wrong, images), Figure)


def test_the_explorer_and_the_logger_on_a_subclassed_model(model, images):
    explorer = course.explore(model, images)
    expected = by_hand(model, images[:1])
    for name in ("s1", "subclassed/shared"):
        np.testing.assert_allclose(explorer.feature_maps[name], expected[name][0], atol=1e-6)
    np.testing.assert_allclose(explorer.probabilities, model(images[:1])[0], atol=1e-6)
    explorer.overlay = "grad_cam"
    assert explorer.overlay_png
    explorer.selected = ["subclassed/shared", 2]
    assert explorer.detail["layer"] == "subclassed/shared"
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    logger = course.FeatureMapLogger(images[:2], ["shared"])
    model.fit(images, np.array([0, 1, 2, 0, 1, 2]), epochs=1, verbose=0, callbacks=[logger])
    assert [s["epoch"] for s in logger.snapshots] == [0, 1]
    np.testing.assert_allclose(logger.snapshots[-1]["maps"]["shared"], by_hand(model, images[:2])["shared"],
                               atol=1e-6)


def test_the_model_is_left_as_it_was(model, images):
    weights = [w.numpy().copy() for w in model.weights]
    before = model(images).numpy()
    course.extract_feature_maps(model, images)
    course.grad_cam(model, images[0])
    course.saliency_map(model, images[0], smooth_samples=2)
    for layer in [model, *model._flatten_layers(include_self=False)]:
        assert "call" not in vars(layer), f"{layer.name} kept a recording hook"
    assert model.head.activation is keras.activations.softmax
    for old, new in zip(weights, model.weights):
        np.testing.assert_array_equal(old, new.numpy())
    np.testing.assert_array_equal(model(images).numpy(), before)
    assert len(model.layers) == 6


def test_what_cannot_work_is_refused_in_one_sentence():
    class TwoInputs(keras.Model):
        def __init__(self):
            super().__init__(name="two_inputs")
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, image, other):
            return self.conv(image * other)

    two = TwoInputs()
    two(np.zeros((1, 8, 8, 1), np.float32), np.ones((1, 8, 8, 1), np.float32))
    with pytest.raises(course.errors.ModelError, match="several arguments in its call.*one list or dict"):
        course.conv_layer_names(two)
    unbuilt = keras.Model.__new__(type(subclassed_cnn()))
    unbuilt.__init__(name="unbuilt")
    with pytest.raises(LayerError, match="has not been built.*call it once on a batch"):
        course.extract_feature_maps(unbuilt, np.zeros((12, 12, 1), np.float32))
