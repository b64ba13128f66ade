"""Shared fixtures: the tiny model factories live here, and only here."""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import course  # noqa: E402


def tiny_sequential(with_input: bool = True, name: str = "tiny") -> keras.Sequential:
    """A small untrained CNN for (12, 12, 1) images: conv(4) -> pool -> conv(6) -> dense(3)."""
    layers = keras.layers
    first = [keras.Input((12, 12, 1))] if with_input else []
    conv_kwargs = {} if with_input else {"input_shape": (12, 12, 1)}
    keras.utils.set_random_seed(1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Do not pass an `input_shape`", UserWarning)
        return keras.Sequential(
            first
            + [
                layers.Conv2D(4, 3, activation="relu", name="c1", **conv_kwargs),
                layers.MaxPooling2D(2, name="p1"),
                layers.Conv2D(6, 3, activation="relu", name="c2"),
                layers.Flatten(name="flat"),
                layers.Dense(3, name="out"),
            ],
            name=name,
        )


def tiny_functional() -> keras.Model:
    """The same layers as :func:`tiny_sequential`, with a skip branch, as a functional model."""
    layers = keras.layers
    keras.utils.set_random_seed(2)
    inputs = keras.Input((12, 12, 1), name="img")
    a = layers.Conv2D(4, 3, activation="relu", padding="same", name="fa")(inputs)
    b = layers.Conv2D(4, 3, activation="relu", padding="same", name="fb")(a)
    merged = layers.Add(name="add")([a, b])
    out = layers.Dense(3, name="fout")(layers.Flatten(name="fflat")(merged))
    return keras.Model(inputs, out, name="tiny_functional")


def tiny_nested() -> keras.Model:
    """A functional model whose body is a Sequential sub-model (a common transfer pattern)."""
    body = tiny_sequential(with_input=False, name="body")
    inputs = keras.Input((12, 12, 1), name="outer_in")
    scaled = keras.layers.Rescaling(1.0, name="pre")(inputs)
    out = keras.layers.Dense(2, name="head")(body(scaled))
    return keras.Model(inputs, out, name="outer")


class RegionMask(keras.layers.Layer):
    """Multiplies the image by a fixed 0/1 mask: only the pixels inside ``region`` get through."""

    def __init__(self, shape, region, **kwargs):
        super().__init__(**kwargs)
        (top, bottom), (left, right) = region
        mask = np.zeros(shape, np.float32)
        mask[top:bottom, left:right] = 1.0
        self.mask = mask

    def call(self, inputs):
        return inputs * self.mask


def region_model(region=((2, 8), (8, 14)), size: int = 16) -> keras.Sequential:
    """A CNN whose output depends only on the pixels in ``region`` ((rows), (cols)) of a
    size x size image: mask -> conv 'feat' (3x3, same, no bias, ReLU) -> pool -> global
    average -> dense(2) with positive weights. Outside the region grown by the conv's 1-pixel
    reach, every feature map is exactly 0."""
    layers = keras.layers
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((size, size, 1)),
            RegionMask((size, size, 1), region, name="mask"),
            layers.Conv2D(
                6, 3, padding="same", activation="relu", use_bias=False, name="feat",
                kernel_initializer=keras.initializers.RandomUniform(-0.3, 1.0),
            ),
            layers.MaxPooling2D(2, name="pool"),
            layers.GlobalAveragePooling2D(name="gap"),
            layers.Dense(2, kernel_initializer=keras.initializers.RandomUniform(0.1, 1.0), name="out"),
        ],
        name="region",
    )


def tiny_linear() -> keras.Sequential:
    """conv -> flatten -> dense with no nonlinearity: its input gradient is the same everywhere."""
    keras.utils.set_random_seed(4)
    return keras.Sequential(
        [
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(3, 3, name="lin_conv"),
            keras.layers.Flatten(name="lin_flat"),
            keras.layers.Dense(3, name="lin_out"),
        ],
        name="tiny_linear",
    )


@pytest.fixture(scope="session", autouse=True)
def check_services(tmp_path_factory):
    """The self-check services the tests start (grader/service.py): in a folder of this run, idle
    for at most two minutes, and all stopped when the run ends."""
    from grader import service

    folder = tmp_path_factory.mktemp("services")
    folder.chmod(0o700)
    os.environ.update(GRADER_RUNTIME_DIR=str(folder), GRADER_SERVICE_IDLE="120")
    yield folder
    service.stop_all()


@pytest.fixture
def tiny_model():
    return tiny_sequential()


@pytest.fixture
def tiny_images():
    rng = np.random.default_rng(0)
    return rng.random((5, 12, 12, 1), dtype=np.float32)


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST (from datasets/, COURSE_DATA_DIR or keras' cache)."""
    return course.load_mnist()


@pytest.fixture(scope="session")
def trained_model():
    """The course's trained model: loaded from models/ or trained once (about a minute)."""
    return course.load_or_train_model()


def transfer_model(base: str = "mobilenet", size: int = 32) -> keras.Model:
    """The standard transfer-learning shape: an applications base (``weights=None``) nested in a
    functional model, then pooling and a Dense softmax head."""
    keras.utils.set_random_seed(5)
    if base == "mobilenet":
        backbone = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(size, size, 3))
    else:
        backbone = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))
    inputs = keras.Input((size, size, 3), name="photo")
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(backbone(inputs))
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(pooled), name="transfer")


def reused_sequential() -> keras.Model:
    """A Sequential CNN used twice inside a functional model (a reused model: shared weights),
    itself nested in a second functional model: three levels deep."""
    body = tiny_sequential(name="shared_body")
    inputs = keras.Input((12, 12, 1), name="x")
    twice = keras.layers.Add(name="sum")([body(inputs), body(keras.layers.Rescaling(0.5, name="half")(inputs))])
    middle = keras.Model(inputs, twice, name="middle")
    outer_in = keras.Input((12, 12, 1), name="outer_x")
    return keras.Model(outer_in, keras.layers.Dense(2, name="final")(middle(outer_in)), name="deep")


def sequential_base_model() -> keras.Sequential:
    """A Sequential conv base inside a Sequential classifier (the default Grad-CAM layer lives in the base)."""
    keras.utils.set_random_seed(6)
    base = keras.Sequential(
        [keras.Input((12, 12, 1)), keras.layers.Conv2D(4, 3, activation="relu", name="b1"),
         keras.layers.Conv2D(5, 3, activation="relu", name="b2")], name="base",
    )
    return keras.Sequential(
        [keras.Input((12, 12, 1)), base, keras.layers.GlobalAveragePooling2D(name="gap"),
         keras.layers.Dense(3, activation="softmax", name="probs")], name="on_base",
    )


@keras.saving.register_keras_serializable(package="course_tests")
class SubclassedCNN(keras.Model):
    """A subclassed CNN the way PyTorch users write one: layers made in ``__init__``, wired in
    ``call``, one conv layer called twice (``shared``, then ``"subclassed/shared"``), and a
    ``training`` flag that switches dropout on."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        layers = keras.layers
        self.conv = layers.Conv2D(4, 3, activation="relu", name="s1")
        self.shared = layers.Conv2D(4, 3, activation="relu", padding="same", name="shared")
        self.pool = layers.MaxPooling2D(2, name="spool")
        self.flat = layers.Flatten(name="sflat")
        self.drop = layers.Dropout(0.5, name="sdrop")
        self.head = layers.Dense(3, activation="softmax", name="sout")

    def call(self, x, training=False):
        x = self.shared(self.shared(self.conv(x)))
        return self.head(self.drop(self.flat(self.pool(x)), training=training))


def subclassed_cnn() -> keras.Model:
    """A built :class:`SubclassedCNN` for (12, 12, 1) images."""
    keras.utils.set_random_seed(7)
    model = SubclassedCNN(name="subclassed")
    model(np.zeros((1, 12, 12, 1), np.float32))
    return model


#: name -> factory of every model kind the public API must handle (shared by the tests).
MODEL_KINDS = {
    "sequential": tiny_sequential,
    "sequential_input_shape": lambda: tiny_sequential(with_input=False),
    "functional": tiny_functional,
    "nested_sequential_in_functional": tiny_nested,
    "reused_sequential_3_deep": reused_sequential,
    "sequential_base": sequential_base_model,
    "subclassed_reused_layer": subclassed_cnn,
}


def conv_kinds_model() -> keras.Model:
    """One layer of every conv kind: depthwise (multiplier 2), separable, transposed, and a Conv1D
    branch over the image's rows."""
    layers = keras.layers
    keras.utils.set_random_seed(8)
    inputs = keras.Input((12, 12, 3), name="rgb")
    depth = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depth")(inputs)  # 3 inputs x 2 = 6 maps
    sep = layers.SeparableConv2D(5, 3, name="sep")(depth)  # depthwise 3x3 on 6, then 6 -> 5 pointwise
    up = layers.Conv2DTranspose(4, (3, 2), name="up")(sep)  # kernel stored (3, 2, 4 filters, 5 inputs)
    rows = layers.Reshape((12, 36), name="rows")(inputs)
    strip = layers.Conv1D(7, 5, name="strip")(rows)  # kernel (5, 36, 7)
    merged = layers.Concatenate(name="cat")([layers.GlobalAveragePooling2D(name="gap")(up),
                                             layers.GlobalAveragePooling1D(name="gap1")(strip)])
    return keras.Model(inputs, layers.Dense(2, name="kinds_out")(merged), name="conv_kinds")


# ----------------------------------------------------------------------------- browser tests
@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright, for the browser tests (tests/browser_kit.py)."""
    from browser_kit import launched_chromium

    with launched_chromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser, lab, request):
    """A fresh page on the requesting module's ``lab`` (its own JupyterLab), saved as a screenshot at the end."""
    from browser_kit import fresh_page

    with fresh_page(browser, lab, request.node.name) as page:
        yield page
