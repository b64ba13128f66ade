"""The seed CNN: build it, train it reproducibly, and cache the trained model.

Training is deterministic: the same seed gives bit-identical weights (fixed seeds plus
TensorFlow's op determinism). The trained model is cached under ``models/`` with a JSON
sidecar describing exactly what produced it; a cache whose description no longer matches
(other data, architecture, recipe or Keras version, or a model file changed behind our back)
is retrained, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import keras

from course import _paths, data
from course.errors import OptionError

MODEL_FILENAME = "seed_cnn.keras"
CACHE_FORMAT = 1


def build_model(name: str = "seed_cnn") -> keras.Sequential:
    """Build the course's CNN: Conv32-Pool-Conv64-Pool-Dense64-Dense10.

    It starts with an explicit ``keras.Input`` so that ``model.inputs`` exists before the
    model has seen data, and every layer has a stable name used throughout the course.

    Args:
        name: The model's name.

    Returns:
        An uncompiled ``keras.Sequential`` for (28, 28, 1) images and 10 classes.
    """
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name="image"),
            layers.Conv2D(32, 3, activation="relu", name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(64, 3, activation="relu", name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", name="dense"),
            layers.Dense(10, activation="softmax", name="predictions"),
        ],
        name=name,
    )


@dataclass(frozen=True)
class Recipe:
    """How the model is trained; part of the cache's identity.

    The defaults are the course's recipe: batches of 256 (a CPU does four times fewer,
    better-parallelised steps than with 64) and Adam's step size warmed up over the first
    tenth of the steps, then decayed to zero along a cosine, so that four epochs reach
    99% test accuracy. :data:`SEED_RECIPE` is the seeds' original one.

    Attributes:
        epochs: Passes over the training set.
        batch_size: Images per gradient step.
        learning_rate: Adam's step size (its peak, with the cosine schedule).
        schedule: ``"cosine"`` (warm-up, then cosine decay to 0) or ``"constant"``.
        warmup: Fraction of the steps spent warming up from a tenth of ``learning_rate``
            (cosine schedule only).
        validation_split: Fraction of the training set held out (the last images, as keras does).
        seed: Seed of every random choice (initial weights, shuffling).
    """

    epochs: int = 4
    batch_size: int = 256
    learning_rate: float = 3e-3
    schedule: str = "cosine"
    warmup: float = 0.1
    validation_split: float = 0.1
    seed: int = 0


#: The seeds' recipe: Adam at a constant 1e-3, batches of 64, 3 epochs (about 98.7%).
SEED_RECIPE = Recipe(epochs=3, batch_size=64, learning_rate=1e-3, schedule="constant", warmup=0.0)


def learning_rate(recipe: Recipe, train_images: int):
    """Adam's step size for ``recipe``: a number, or a schedule over the training steps.

    Args:
        recipe: The training settings.
        train_images: Images trained on per epoch (after the validation split).

    Raises:
        OptionError: An unknown ``recipe.schedule`` (a ValueError).
    """
    if recipe.schedule == "constant":
        return recipe.learning_rate
    if recipe.schedule != "cosine":
        raise OptionError(
            f"Recipe.schedule must be 'cosine' or 'constant', got {recipe.schedule!r}."
        )
    steps = math.ceil(train_images / recipe.batch_size) * recipe.epochs
    warmup = int(steps * recipe.warmup)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(recipe.learning_rate, steps)
    return keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate / 10, steps - warmup,
        warmup_target=recipe.learning_rate, warmup_steps=warmup,
    )


def _progress_verbosity() -> int:
    """A live progress bar in a terminal or notebook; one line per epoch in logs."""
    interactive = sys.stdout.isatty() or "ipykernel" in sys.modules
    return 1 if interactive else 2


def train_model(x_train, y_train, recipe: Recipe = Recipe(), *, verbose: int | None = None):
    """Train a fresh seed CNN, deterministically.

    Args:
        x_train: Images, float32 in [0, 1], shape (N, 28, 28, 1).
        y_train: Integer labels, shape (N,).
        recipe: The training settings.
        verbose: Keras verbosity; default a progress bar when interactive, else one line
            per epoch.

    Returns:
        ``(model, history)``: the trained, compiled model and its keras ``History``.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(recipe.seed)
    # Irreversible for this process; it makes the same seed give bit-identical weights.
    tf.config.experimental.enable_op_determinism()
    model = build_model()
    train_images = len(x_train) - int(len(x_train) * recipe.validation_split)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(recipe, train_images)),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train,
        y_train,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        validation_split=recipe.validation_split,
        shuffle=True,
        verbose=_progress_verbosity() if verbose is None else verbose,
    )
    return model, history


def architecture_id(model: keras.Model) -> str:
    """A short hash of the model's layer configuration (names, sizes, activations)."""
    config = json.dumps(model.get_config(), sort_keys=True, default=str)
    return hashlib.sha256(config.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_model_path() -> Path:
    """``models/seed_cnn.keras`` in the project (or ``$COURSE_MODEL_DIR``)."""
    return _paths.model_dir() / MODEL_FILENAME


def metadata_path(model_path: Path) -> Path:
    """The JSON sidecar that describes a cached model."""
    return model_path.with_suffix(".json")


def expected_identity(recipe: Recipe) -> dict:
    """What a cached model's metadata must say for the cache to be trusted."""
    return {
        "format": CACHE_FORMAT,
        "data": data.content_hash(),
        "architecture": architecture_id(build_model()),
        "keras": keras.__version__,
        "recipe": asdict(recipe),
    }


def read_metadata(model_path: str | os.PathLike | None = None) -> dict | None:
    """The metadata of a cached model, or None when there is no readable sidecar."""
    path = metadata_path(Path(model_path or default_model_path()))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def stale_reason(model_path: Path, recipe: Recipe) -> str | None:
    """Why a cached model cannot be trusted, or None when it can."""
    if not model_path.is_file():
        return f"no cached model at {model_path}"
    meta = read_metadata(model_path)
    if meta is None:
        return f"{metadata_path(model_path)} is missing or unreadable"
    for key, value in expected_identity(recipe).items():
        if meta.get(key) != value:
            return f"the cache was made with {key}={meta.get(key)!r}, now {value!r}"
    if meta.get("model_sha256") != file_sha256(model_path):
        return f"{model_path} changed since it was trained"
    return None


def _write_atomically(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``, so readers never see half a file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_train_model(
    path: str | os.PathLike | None = None,
    recipe: Recipe = Recipe(),
    *,
    data_path: str | os.PathLike | None = None,
    retrain: bool = False,
    verbose: int | None = None,
) -> keras.Model:
    """Load the cached trained model, or train it (under a minute on 2 idle cores) and cache it.

    Args:
        path: The ``.keras`` file of the cache; default ``models/seed_cnn.keras``.
        recipe: The training settings; a cache trained otherwise is retrained.
        data_path: Where MNIST is (see :func:`course.load_mnist`).
        retrain: Train even when the cache is valid.
        verbose: Keras verbosity while training (see :func:`train_model`).

    Returns:
        The trained, compiled model. Its metadata (including the test accuracy) is in
        :func:`read_metadata`.
    """
    model_path = Path(path or default_model_path())
    reason = "retraining was asked for" if retrain else stale_reason(model_path, recipe)
    if reason is None:
        return keras.models.load_model(model_path)

    print(f"Training the seed CNN ({reason}); {recipe.epochs} epochs...", flush=True)
    (x_train, y_train), (x_test, y_test) = data.load_mnist(data_path)
    start = time.perf_counter()
    model, _ = train_model(x_train, y_train, recipe, verbose=verbose)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    print(f"Trained in {seconds:.1f} s; test accuracy {accuracy:.4f}.", flush=True)

    model_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(model_path, model.save)
    meta = expected_identity(recipe) | {
        "test_accuracy": round(float(accuracy), 6),
        "train_seconds": round(seconds, 2),
        "model_sha256": file_sha256(model_path),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_atomically(metadata_path(model_path), lambda p: p.write_text(json.dumps(meta, indent=2)))
    return model
