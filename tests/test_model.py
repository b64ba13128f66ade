"""course.model: the architecture, deterministic training, the trusted cache."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import course
from course import model as model_module


def test_seed_architecture():
    model = course.build_model()
    assert isinstance(model, keras.Sequential)
    assert [(layer.name, type(layer).__name__) for layer in model.layers] == [
        ("conv1", "Conv2D"), ("pool1", "MaxPooling2D"), ("conv2", "Conv2D"), ("pool2", "MaxPooling2D"),
        ("flatten", "Flatten"), ("dense", "Dense"), ("predictions", "Dense"),
    ]
    assert model.inputs[0].shape[1:] == (28, 28, 1)  # an explicit keras.Input
    assert [tuple(layer.output.shape) for layer in model.layers] == [
        (None, 26, 26, 32), (None, 13, 13, 32), (None, 11, 11, 64), (None, 5, 5, 64),
        (None, 1600), (None, 64), (None, 10),
    ]
    assert model.count_params() == 320 + 18_496 + 102_464 + 650


def test_same_seed_gives_bit_identical_weights(mnist):
    (x_train, y_train), _ = mnist
    recipe = course.Recipe(epochs=1, seed=3)
    subset = slice(0, 1500)
    first, _ = course.train_model(x_train[subset], y_train[subset], recipe, verbose=0)
    second, _ = course.train_model(x_train[subset], y_train[subset], recipe, verbose=0)
    other, _ = course.train_model(
        x_train[subset], y_train[subset], course.Recipe(epochs=1, seed=4), verbose=0
    )
    for a, b in zip(first.get_weights(), second.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first.get_weights(), other.get_weights()))


def test_trained_model_reaches_the_accuracy_goal(trained_model, mnist):
    _, (x_test, y_test) = mnist
    predictions = trained_model.predict(x_test, batch_size=1024, verbose=0).argmax(axis=1)
    accuracy = float((predictions == y_test).mean())
    assert accuracy >= 0.985, f"test accuracy {accuracy:.4f} is below the 98.5% goal"
    meta = course.read_metadata()
    assert meta["test_accuracy"] == pytest.approx(accuracy, abs=1e-3)
    assert meta["keras"] == keras.__version__ and meta["data"] == course.data.content_hash()


@pytest.mark.slow
def test_cache_is_written_trusted_and_retrained_when_stale(tmp_path):
    path = tmp_path / "cnn.keras"
    recipe = course.Recipe(epochs=1)
    course.load_or_train_model(path, recipe, verbose=0)
    meta_file = model_module.metadata_path(path)
    meta = json.loads(meta_file.read_text())
    assert meta["recipe"]["epochs"] == 1 and meta["test_accuracy"] > 0.95
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.json", "cnn.keras"]  # no temp files

    written = path.stat().st_mtime_ns
    loaded = course.load_or_train_model(path, recipe)
    assert path.stat().st_mtime_ns == written  # trusted, not retrained
    assert loaded.count_params() == course.build_model().count_params()

    assert "recipe" in model_module.stale_reason(path, course.Recipe(epochs=2))
    meta_file.write_text(json.dumps(meta | {"keras": "3.0.0"}))
    assert "keras='3.0.0'" in model_module.stale_reason(path, recipe)
    meta_file.write_text(json.dumps(meta))
    assert model_module.stale_reason(path, recipe) is None
    with open(path, "ab") as handle:
        handle.write(b"tampered")
    assert "changed since it was trained" in model_module.stale_reason(path, recipe)

    course.load_or_train_model(path, recipe, verbose=0)  # the tampered cache is retrained
    assert model_module.stale_reason(path, recipe) is None
    assert path.stat().st_mtime_ns != written


def test_missing_or_corrupt_metadata_is_stale(tmp_path):
    path = tmp_path / "m.keras"
    assert "no cached model" in model_module.stale_reason(path, course.Recipe())
    course.build_model().save(path)
    assert "missing or unreadable" in model_module.stale_reason(path, course.Recipe())
    model_module.metadata_path(path).write_text("{not json")
    assert "missing or unreadable" in model_module.stale_reason(path, course.Recipe())
