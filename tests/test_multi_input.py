"""Models with several inputs (issue 22): an image and a vector of measurements, given as a dict
``{input name: array}`` or a list in ``model.inputs`` order. Every public function and the
explorer explain the image input and pass the other input through unchanged, checked against
the layers called by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.figure import Figure

import course
from course.errors import InputError, InputShapeError, ModelError, OptionError

layers = keras.layers
LABELS = np.array([0, 1, 2, 0, 1, 2])


def two_input_model(as_dict: bool) -> keras.Model:
    """conv 'm1' -> conv 'm2' on the image, a Dense 'meta_dense' on 3 measurements, merged into a softmax."""
    keras.utils.set_random_seed(11)
    image = keras.Input((12, 12, 1), name="image")
    meta = keras.Input((3,), name="meta")
    first = layers.Conv2D(4, 3, activation="relu", name="m1")(image)
    second = layers.Conv2D(5, 3, activation="relu", name="m2")(first)
    merged = layers.Concatenate(name="merge")([layers.Flatten(name="mflat")(second),
                                               layers.Dense(4, name="meta_dense")(meta)])
    out = layers.Dense(3, activation="softmax", name="mout")(merged)
    inputs = {"image": image, "meta": meta} if as_dict else [meta, image]  # the image second: found by shape
    return keras.Model(inputs, out, name="two_inputs")


@pytest.fixture(params=["dict", "list"])
def case(request):
    rng = np.random.default_rng(0)
    images = rng.random((6, 12, 12, 1), dtype=np.float32)
    meta = rng.random((6, 3), dtype=np.float32)
    model = two_input_model(request.param == "dict")
    feed = {"image": images, "meta": meta} if request.param == "dict" else [meta, images]
    return model, feed, images, meta


def _one(feed, i):
    return {k: v[i] for k, v in feed.items()} if isinstance(feed, dict) else [v[i] for v in feed]


def by_hand(model, images, meta):
    first = model.get_layer("m1")(images)
    second = model.get_layer("m2")(first)
    merged = model.get_layer("merge")([model.get_layer("mflat")(second), model.get_layer("meta_dense")(meta)])
    head = model.get_layer("mout")
    return {"m1": first, "m2": second, "logits": keras.ops.matmul(merged, head.kernel) + head.bias}


def test_maps_and_scores_equal_the_layers_by_hand(case):
    model, feed, images, meta = case
    assert course.tracing.input_shape(model) == (12, 12, 1)  # the image input, wherever it is
    maps = course.extract_feature_maps(model, feed, batch_size=4)
    expected = by_hand(model, images, meta)
    assert list(maps) == ["m1", "m2"]
    for name in ("m1", "m2"):
        np.testing.assert_allclose(maps[name], expected[name], atol=1e-6)
    scores = course.score_model(model, "m2")(feed)
    np.testing.assert_allclose(scores["scores"], expected["logits"], atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(scores["scores"]), model(feed), atol=1e-6)
    one = course.extract_feature_maps(model, _one(feed, 2), "m1")["m1"]  # one sample of each input
    np.testing.assert_allclose(one, expected["m1"][2:3], atol=1e-6)


def test_grad_cam_and_saliency_explain_the_image_input(case):
    model, feed, images, meta = case
    x, m = tf.convert_to_tensor(images[:1]), tf.convert_to_tensor(meta[:1])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        inner = by_hand(model, x, m)
        score = inner["logits"][0, 1]
    grads = tape.gradient(score, inner["m2"])[0]
    cam = tf.nn.relu(tf.reduce_sum(inner["m2"][0] * tf.reduce_mean(grads, axis=(0, 1)), axis=-1))
    cam = tf.image.resize(cam[None, :, :, None], (12, 12), method="bilinear")[0, :, :, 0].numpy()
    np.testing.assert_allclose(course.grad_cam(model, _one(feed, 0), "m2", 1), cam / cam.max(), atol=1e-5)
    saliency = np.abs(tape.gradient(score, x).numpy()[0]).max(axis=-1)
    np.testing.assert_allclose(course.saliency_map(model, _one(feed, 0), class_index=1), saliency, rtol=1e-5, atol=1e-7)
    smooth = course.saliency_map(model, _one(feed, 0), smooth_samples=3)
    assert smooth.shape == (12, 12) and np.isfinite(smooth).all()
    # The other input changes the scores, not the image's maps.
    other = {"image": images[:1], "meta": meta[:1] + 5} if isinstance(feed, dict) else [meta[:1] + 5, images[:1]]
    assert not np.allclose(course.score_model(model)(other)["scores"], course.score_model(model)(
        {"image": images[:1], "meta": meta[:1]} if isinstance(feed, dict) else [meta[:1], images[:1]])["scores"])


def test_every_other_public_function_and_the_explorer(case):
    model, feed, images, meta = case
    means = by_hand(model, images, meta)["m2"].numpy()[..., 3].mean(axis=(1, 2))
    order, values = course.top_activating_images(model, feed, "m2", 3, k=2)
    np.testing.assert_array_equal(order, np.argsort(-means, kind="stable")[:2])
    assert course.mean_activation_by_class(model, feed, LABELS, "m1").shape == (3, 4)
    wrong = course.misclassified(model, feed, LABELS)
    np.testing.assert_array_equal(wrong["images"], images[wrong["indices"]])
    if len(wrong["indices"]):
        assert isinstance(course.plot_misclassified(wrong), Figure)
    assert isinstance(course.compare_layers(model, _one(feed, 1)), Figure)
    assert isinstance(course.plot_grad_cam_examples(model, _one_batch(feed, 2), ["a", "b"]), Figure)
    assert isinstance(course.plot_saliency_examples(model, _one_batch(feed, 2), ["a", "b"], smooth_samples=2), Figure)
    preferred = course.maximize_activation(model, "m1", [0, 2], steps=3, start=_one(feed, 0))
    assert preferred.shape == (2, 12, 12, 1) and np.isfinite(preferred).all()
    assert isinstance(course.plot_filters(model, "m2"), Figure)

    explorer = course.explore(model, feed)
    explorer.image_index = 4  # the picked image comes with its own measurements
    expected = by_hand(model, images[4:5], meta[4:5])
    np.testing.assert_allclose(explorer.feature_maps["m2"], expected["m2"][0], atol=1e-6)
    np.testing.assert_allclose(explorer.probabilities, tf.nn.softmax(expected["logits"])[0], atol=1e-5)
    explorer.overlay = "saliency"
    assert explorer.overlay_png

    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    logger = course.FeatureMapLogger({"image": images[:2], "meta": meta[:2]} if isinstance(feed, dict)
                                     else {"meta": meta[:2], "image": images[:2]}, ["m1"])
    model.fit(feed, LABELS, epochs=1, verbose=0, callbacks=[logger])
    np.testing.assert_allclose(logger.snapshots[-1]["maps"]["m1"], by_hand(model, images[:2], meta[:2])["m1"],
                               atol=1e-6)


def _one_batch(feed, count):
    return {k: v[:count] for k, v in feed.items()} if isinstance(feed, dict) else [v[:count] for v in feed]


def test_wrong_inputs_are_refused_in_one_sentence(case):
    model, feed, images, meta = case
    for bad, error, words in [
        (images, InputError, r"takes 2 inputs .*got one ndarray: pass a dict \{"),
        ({"image": images}, InputError, r"got a dict with keys \['image'\]"),
        ([images], InputError, "got a list of 1"),
        ({"image": images, "meta": meta[:2]}, InputShapeError, r"\['meta'\] of shape \(2, 3\) do not fit"),
        ({"image": images, "meta": np.full((6, 3), np.nan)}, InputError, "NaN"),
        ({"image": images[..., 0, 0], "meta": meta}, InputShapeError, "do not fit the model"),
    ]:
        if isinstance(feed, list) and isinstance(bad, dict) and len(bad) == 2:
            bad = [bad["meta"], bad["image"]]
        with pytest.raises(error, match=words):
            course.extract_feature_maps(model, bad)
    with pytest.raises(OptionError, match="has 2 inputs: pass start= a dict"):
        course.maximize_activation(model, "m1", 0, steps=2)
    with pytest.raises(OptionError, match="has 2 inputs: pass images="):
        course.explore(model)
    a, b = keras.Input((3,)), keras.Input((2,))
    vectors = keras.Model([a, b], keras.layers.Concatenate()([a, b]), name="vectors")
    with pytest.raises(ModelError, match="none of them images"):
        course.conv_layer_names(vectors)


class SubclassedTwoInputs(keras.Model):
    """The same network written the PyTorch way: ``call(self, inputs)`` takes a dict or a list."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.m1 = layers.Conv2D(4, 3, activation="relu", name="m1")
        self.m2 = layers.Conv2D(5, 3, activation="relu", name="m2")
        self.mflat = layers.Flatten(name="mflat")
        self.meta_dense = layers.Dense(4, name="meta_dense")
        self.merge = layers.Concatenate(name="merge")
        self.mout = layers.Dense(3, activation="softmax", name="mout")

    def call(self, inputs):
        image, meta = (inputs["image"], inputs["meta"]) if isinstance(inputs, dict) else (inputs[1], inputs[0])
        return self.mout(self.merge([self.mflat(self.m2(self.m1(image))), self.meta_dense(meta)]))


@pytest.mark.parametrize("as_dict", [True, False], ids=["dict", "list"])
def test_a_subclassed_model_taking_a_dict_or_a_list(as_dict):
    keras.utils.set_random_seed(12)
    rng = np.random.default_rng(1)
    images, meta = rng.random((4, 12, 12, 1), dtype=np.float32), rng.random((4, 3), dtype=np.float32)
    feed = {"image": images, "meta": meta} if as_dict else [meta, images]
    model = SubclassedTwoInputs(name="sub_two")
    model(feed)
    assert course.tracing.input_shape(model) == (12, 12, 1)
    maps = course.extract_feature_maps(model, feed)
    expected = by_hand(model, images, meta)
    np.testing.assert_allclose(maps["m2"], expected["m2"], atol=1e-6)
    np.testing.assert_allclose(course.score_model(model)(feed)["scores"], expected["logits"], atol=1e-5)
    cam = course.grad_cam(model, _one(feed, 0))
    assert cam.shape == (12, 12) and cam.max() == pytest.approx(1.0)
    assert course.saliency_map(model, _one(feed, 0)).max() > 0
    explorer = course.explore(model, feed)
    explorer.image_index = 3
    np.testing.assert_allclose(explorer.feature_maps["m1"], expected["m1"][3], atol=1e-6)
    with pytest.raises(InputError, match="takes 2 inputs"):
        course.extract_feature_maps(model, images)
