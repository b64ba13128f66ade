"""course.activations on every kind of model, checked against the layers called by hand."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import tiny_functional, tiny_nested, tiny_sequential

import course
from course.errors import InputShapeError, LayerError


def by_hand_sequential(model, images):
    """conv1 and conv2 outputs computed by calling the layers directly."""
    c1 = model.get_layer("c1")(images)
    c2 = model.get_layer("c2")(model.get_layer("p1")(c1))
    return np.asarray(c1), np.asarray(c2)


def test_classic_model_input_line_fails_on_keras3_sequential(tiny_model):
    """The reason the package re-traces: this line breaks on every Keras 3 Sequential model."""
    with pytest.raises(AttributeError, match="never been called"):
        keras.Model(inputs=tiny_model.input, outputs=tiny_model.get_layer("c1").output)


@pytest.mark.parametrize("with_input", [True, False], ids=["keras.Input", "input_shape"])
def test_sequential_maps_equal_the_layers_called_by_hand(with_input, tiny_images):
    model = tiny_sequential(with_input=with_input)
    maps = course.extract_feature_maps(model, tiny_images, ["c1", "c2"])
    c1, c2 = by_hand_sequential(model, tiny_images)
    assert maps["c1"].shape == (5, 10, 10, 4) and maps["c2"].shape == (5, 3, 3, 6)
    np.testing.assert_allclose(maps["c1"], c1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["c2"], c2, rtol=1e-5, atol=1e-6)


def test_model_loaded_from_keras_file(tiny_model, tiny_images, tmp_path):
    tiny_model.save(tmp_path / "tiny.keras")
    loaded = keras.models.load_model(tmp_path / "tiny.keras")
    maps = course.extract_feature_maps(loaded, tiny_images, "c2")
    np.testing.assert_allclose(maps["c2"], by_hand_sequential(tiny_model, tiny_images)[1], rtol=1e-5, atol=1e-6)


def test_functional_model_with_a_branch(tiny_images):
    model = tiny_functional()
    assert course.conv_layer_names(model) == ["fa", "fb"]
    maps = course.extract_feature_maps(model, tiny_images)
    assert list(maps) == ["fa", "fb", "add"]
    expected = keras.Model(model.inputs, model.get_layer("add").output)(tiny_images)
    np.testing.assert_allclose(maps["add"], np.asarray(expected), rtol=1e-5, atol=1e-6)


def test_model_nested_inside_another(tiny_images):
    model = tiny_nested()
    body = model.get_layer("body")
    assert course.conv_layer_names(model) == ["c1", "c2"]
    maps = course.extract_feature_maps(model, tiny_images, ["c1", "c2"])
    c1, c2 = by_hand_sequential(body, tiny_images)  # the Rescaling(1.0) changes nothing
    np.testing.assert_allclose(maps["c1"], c1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps["c2"], c2, rtol=1e-5, atol=1e-6)


def test_course_model_shapes(trained_model, mnist):
    (_, _), (x_test, _) = mnist
    assert course.conv_layer_names(trained_model) == ["conv1", "conv2"]
    assert course.feature_map_layer_names(trained_model) == ["conv1", "pool1", "conv2", "pool2"]
    maps = course.extract_feature_maps(trained_model, x_test[0])
    shapes = {name: m.shape for name, m in maps.items()}
    assert shapes == {
        "conv1": (1, 26, 26, 32), "pool1": (1, 13, 13, 32),
        "conv2": (1, 11, 11, 64), "pool2": (1, 5, 5, 64),
    }
    assert (maps["conv1"] >= 0).all() and maps["conv1"].max() > 0  # ReLU maps of a real digit


def test_activation_model_shares_the_trained_weights(tiny_model, tiny_images):
    maps_model = course.activation_model(tiny_model, ["c1"])
    before = np.asarray(maps_model(tiny_images)["c1"])
    kernel, bias = tiny_model.get_layer("c1").get_weights()
    tiny_model.get_layer("c1").set_weights([kernel * 2, bias * 2])
    after = np.asarray(maps_model(tiny_images)["c1"])
    np.testing.assert_allclose(after, 2 * before, rtol=1e-5, atol=1e-6)


def test_extraction_sees_weight_changes_after_caching(tiny_model, tiny_images):
    first = course.extract_feature_maps(tiny_model, tiny_images, "c1")["c1"]
    kernel, bias = tiny_model.get_layer("c1").get_weights()
    tiny_model.get_layer("c1").set_weights([kernel * 3, bias * 3])
    again = course.extract_feature_maps(tiny_model, tiny_images, "c1")["c1"]
    np.testing.assert_allclose(again, 3 * first, rtol=1e-5, atol=1e-6)


def test_batches_give_the_same_maps_as_one_pass(tiny_model):
    images = np.random.default_rng(3).random((23, 12, 12, 1), dtype=np.float32)
    whole = course.extract_feature_maps(tiny_model, images, "c2", batch_size=256)["c2"]
    chunked = course.extract_feature_maps(tiny_model, images, "c2", batch_size=5)["c2"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_one_image_with_or_without_channel_axis(tiny_model, tiny_images):
    with_axis = course.extract_feature_maps(tiny_model, tiny_images[0], "c1")["c1"]
    without = course.extract_feature_maps(tiny_model, tiny_images[0, ..., 0], "c1")["c1"]
    assert with_axis.shape == (1, 10, 10, 4)
    np.testing.assert_array_equal(with_axis, without)


def test_streaming_to_npy_files(tiny_model, tiny_images, tmp_path):
    streamed = course.extract_feature_maps(tiny_model, tiny_images, ["c1", "c2"], batch_size=2, out_dir=tmp_path)
    in_memory = course.extract_feature_maps(tiny_model, tiny_images, ["c1", "c2"])
    for name in ("c1", "c2"):
        assert (tmp_path / f"{name}.npy").is_file()
        # What is returned is a read-only memory map OF the written file (not a copy in memory) ...
        assert isinstance(streamed[name], np.memmap) and not streamed[name].flags.writeable
        assert Path(streamed[name].filename) == tmp_path / f"{name}.npy"
        # ... and the file holds the maps (batches of 2 vs 5 may round differently in the last bit).
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), in_memory[name], rtol=1e-5, atol=1e-6)


def test_dense_layer_is_not_a_feature_map(tiny_model, tiny_images):
    with pytest.raises(LayerError) as error:
        course.extract_feature_maps(tiny_model, tiny_images, "out")
    message = str(error.value)
    assert "layer 'out' has output shape (None, 3): it is not a feature map" in message
    assert "['c1', 'p1', 'c2']" in message


def test_flatten_layer_is_not_a_feature_map(tiny_model):
    with pytest.raises(LayerError, match="'flat' has output shape \\(None, 54\\)"):
        course.activation_model(tiny_model, "flat")


def test_unknown_layer_suggests_the_closest(tiny_model, tiny_images):
    with pytest.raises(LayerError, match="no layer named 'c_1'; did you mean 'c1'\\?"):
        course.extract_feature_maps(tiny_model, tiny_images, "c_1")


def test_wrong_image_shape_names_both_shapes(tiny_model):
    with pytest.raises(InputShapeError, match=r"shape \(28, 28, 1\).*\(N, 12, 12, 1\)"):
        course.extract_feature_maps(tiny_model, np.zeros((28, 28, 1), np.float32))


def test_empty_batch(tiny_model):
    with pytest.raises(InputShapeError, match="empty"):
        course.extract_feature_maps(tiny_model, np.zeros((0, 12, 12, 1), np.float32))


def test_warns_on_0_255_images(tiny_model, tiny_images):
    with pytest.warns(UserWarning, match="0-255 values.*divide by 255"):
        course.extract_feature_maps(tiny_model, (tiny_images * 255).astype(np.uint8), "c1")


def test_unbuilt_model_gets_a_clear_error():
    model = keras.Sequential([keras.layers.Conv2D(2, 3, name="c")])
    with pytest.raises(LayerError, match="has not been built.*keras.Input"):
        course.conv_layer_names(model)


def test_find_layer_and_output_shapes(tiny_model):
    assert course.find_layer(tiny_model, "c2") is tiny_model.get_layer("c2")
    assert course.layer_output_shapes(tiny_model)["p1"] == (None, 5, 5, 4)
    with pytest.raises(LayerError, match="did you mean 'c2'"):
        course.find_layer(tiny_model, "c3")
