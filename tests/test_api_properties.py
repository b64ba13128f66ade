"""The public API on what people pass it: every call returns a correct result or raises the
package's own error (:class:`course.errors.CourseError`) with a sentence, never a raw error of
Keras, NumPy, matplotlib or difflib, and never a silently wrong result.

Two parts: a broad fixed table of wrong calls (tests/bad_calls.py; ``python tests/bad_calls.py``
prints its tally), and property-based tests with hypothesis over random shapes, dtypes, NaN/Inf,
channel counts 1-2048, layer specifications and the model kinds of the shared factories.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from bad_calls import bad_calls, outcome
from conftest import MODEL_KINDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import course
from course.errors import CourseError
from course.plotting import MAX_FIGURE_HEIGHT

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
_MODELS = {}


def model_of(kind: str):
    """One model per kind for the whole module (built once: hypothesis calls the tests many times)."""
    if kind not in _MODELS:
        _MODELS[kind] = MODEL_KINDS[kind]()
    return _MODELS[kind]


def is_sentence(message: str) -> bool:
    """At least six words, and no traceback or object repr dumped in place of a sentence."""
    return len(message.split()) >= 6 and "Traceback" not in message and "<" not in message[:1]


def test_every_wrong_call_in_the_table_raises_the_packages_own_error_with_a_sentence():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = [(name, *outcome(fn)) for name, fn in bad_calls()]
    assert len(results) >= 531
    escaped = [f"{name}: [{kind}] {message}" for name, kind, message in results if kind != "own"]
    assert not escaped, f"{len(escaped)} of {len(results)} wrong calls escaped:\n" + "\n".join(escaped)
    short = [f"{name}: {message}" for name, _, message in results if len(message.split()) < 6]
    assert not short, short


DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.uint8, np.int64, np.bool_, np.complex64])


@st.composite
def arrays(draw, max_dims=5, max_side=14):
    dtype = draw(DTYPES)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    elements = None
    if np.issubdtype(dtype, np.floating):
        bits = np.finfo(dtype).bits
        elements = st.one_of(st.floats(-3, 300, width=bits), st.sampled_from([np.nan, np.inf, -np.inf]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@SETTINGS
@given(images=arrays(), kind=st.sampled_from(list(MODEL_KINDS)))
def test_extract_feature_maps_on_random_arrays(images, kind):
    model = model_of(kind)
    layer = course.conv_layer_names(model)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 0-255 warning
        try:
            maps = course.extract_feature_maps(model, images, layer)[layer]
        except CourseError as exc:
            assert is_sentence(str(exc)), str(exc)
            return
    # Accepted: only finite real images of a fitting shape, and the maps are the layer's.
    batch = np.asarray(images, np.float32).reshape(-1, 12, 12, 1)
    assert np.isfinite(batch).all() and images.dtype.kind in "fiu"
    expected = course.activation_model(model, layer)(batch)[layer]
    np.testing.assert_allclose(maps, np.asarray(expected), rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(batch).max())))


@SETTINGS
@given(
    kind=st.sampled_from(list(MODEL_KINDS)),
    layer_spec=st.sampled_from(["last", "name", "index", "object", "unknown", "dense", None]),
    class_index=st.one_of(st.none(), st.integers(-2, 4), st.floats(-1, 4)),
    bad_pixel=st.sampled_from([None, np.nan, np.inf, -np.inf, 5.0]),
)
def test_grad_cam_and_saliency_on_every_model_kind(kind, layer_spec, class_index, bad_pixel):
    model = model_of(kind)
    image = np.random.default_rng(0).random((12, 12, 1), dtype=np.float32)
    if bad_pixel is not None:
        image[4, 5, 0] = bad_pixel
    names = list(course.layer_output_shapes(model))
    conv = course.conv_layer_names(model)
    layer = {
        "last": conv[-1], "name": conv[0], "index": names.index(conv[0]), "object": course.find_layer(model, conv[0]),
        "unknown": "no_such_layer", "dense": names[-1], None: None,
    }[layer_spec]
    classes = int(course.score_model(model)(image[None])["scores"].shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            cam = course.grad_cam(model, image, layer, class_index)
        except CourseError as exc:
            assert is_sentence(str(exc))
            valid_class = class_index is None or (float(class_index).is_integer() and 0 <= class_index < classes)
            assert not (bad_pixel in (None, 5.0) and layer_spec in ("last", "name", "index", "object", None)
                        and valid_class), f"a valid call was refused: {exc}"
            return
        assert np.isfinite(image).all(), "NaN/Inf input must be refused, not explained"
        assert cam.shape == (12, 12) and cam.dtype == np.float32 and 0 <= cam.min() and cam.max() <= 1
        saliency = course.saliency_map(model, image, class_index)
        assert saliency.shape == (12, 12) and np.isfinite(saliency).all() and saliency.min() >= 0


@SETTINGS
@given(low=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 105)),
       high=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 105)))
def test_robust_percentiles_are_checked_or_clip_each_map_to_them(low, high):
    maps = np.random.default_rng(4).random((6, 6, 3), dtype=np.float32) ** 3
    try:
        scaled = course.normalize_maps(maps, "robust", (low, high))
    except CourseError as exc:
        assert is_sentence(str(exc))
        valid = all(math.isfinite(v) for v in (low, high)) and 0 <= low < high <= 100
        assert not valid, f"valid percentiles {(low, high)} were refused: {exc}"
        return
    assert 0 <= low < high <= 100
    assert scaled.shape == maps.shape and 0 <= scaled.min() and scaled.max() <= 1
    bounds = np.percentile(maps, [low, high], axis=(0, 1))
    expected = np.clip((np.clip(maps, bounds[0], bounds[1]) - bounds[0]) / np.where(
        bounds[1] > bounds[0], bounds[1] - bounds[0], 1.0), 0, 1)
    np.testing.assert_allclose(scaled, np.where(bounds[1] > bounds[0], expected, 0.0), atol=1e-5)


@st.composite
def many_channel_maps(draw):
    channels = draw(st.sampled_from([1, 2, 3, 7, 64, 513, 2048]))
    side = draw(st.integers(1, 6 if channels > 64 else 14))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.uint8]))
    maps = draw(hnp.arrays(dtype, (side, side, channels), elements=st.integers(0, 9)))
    return maps


@SETTINGS
@given(maps=many_channel_maps(), ncols=st.one_of(st.integers(-2, 70), st.floats(0, 9)),
       mode=st.sampled_from([None, *course.normalize.MODES, "bogus"]))
def test_montages_of_1_to_2048_channels(maps, ncols, mode):
    try:
        fig = course.plot_feature_maps(maps, ncols=ncols, normalize=mode, labels=maps.shape[-1] <= 64)
    except CourseError as exc:
        assert is_sentence(str(exc))
        assert mode == "bogus" or not float(ncols).is_integer() or ncols < 1, str(exc)
        return
    height, width, count = maps.shape
    columns = min(int(ncols), count)
    [image] = fig.axes[0].get_images()
    rows = math.ceil(count / columns)
    assert image.get_array().shape == (rows * (height + 1) - 1, columns * (width + 1) - 1)
    assert fig.get_size_inches()[1] <= MAX_FIGURE_HEIGHT + 1e-9  # never a 28,000-pixel figure
    if mode is not None:
        scaled = course.normalize_maps(maps, mode)
        assert scaled.shape == maps.shape and scaled.min() >= 0 and scaled.max() <= 1


@SETTINGS
@given(
    steps=st.integers(-2, 3), blur_sigma=st.sampled_from([-1.0, 0.0, 0.3, 1.0]),
    value_range=st.sampled_from([(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (0.5, 0.5)]),
    channel=st.one_of(st.integers(-1, 5), st.floats(0, 4), st.lists(st.integers(0, 3), max_size=3)),
)
def test_maximize_activation_options(steps, blur_sigma, value_range, channel):
    model = model_of("sequential")
    try:
        result = course.maximize_activation(model, "c1", channel, steps=steps, blur_sigma=blur_sigma,
                                            blur_every=1, value_range=value_range)
    except CourseError as exc:
        assert is_sentence(str(exc))
        whole = isinstance(channel, int) or (isinstance(channel, float) and channel.is_integer())
        valid_channel = (whole and 0 <= channel < 4) or (isinstance(channel, list) and channel)
        assert not (steps >= 1 and blur_sigma > 0 and value_range[0] < value_range[1] and valid_channel), str(exc)
        return
    low, high = value_range
    assert steps >= 1 and blur_sigma > 0 and low < high
    assert np.isfinite(result).all() and result.min() >= low and result.max() <= high
    expected = (12, 12, 1) if np.ndim(channel) == 0 else (len(channel), 12, 12, 1)
    assert result.shape == expected


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_layers_by_name_index_and_object_agree(kind):
    model = model_of(kind)
    names = list(course.layer_output_shapes(model))
    image = np.random.default_rng(1).random((12, 12, 1), dtype=np.float32)
    for name in course.feature_map_layer_names(model):
        layer = course.find_layer(model, name)
        by_name = course.extract_feature_maps(model, image, name)[name]
        by_index = course.extract_feature_maps(model, image, names.index(name))[name]
        np.testing.assert_array_equal(by_name, by_index)
        if list(course.layer_output_shapes(model)).count(name) == 1 and sum(
            course.find_layer(model, other) is layer for other in names
        ) == 1:
            np.testing.assert_array_equal(course.extract_feature_maps(model, image, layer)[name], by_name)
