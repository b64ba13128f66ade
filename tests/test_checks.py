"""course.checks.reference_off_limits: an exercise's own reference is refused, visibly, and only
while the block runs; the package's internal calls are untouched. Real calls, no mocks."""

from __future__ import annotations

import pickle
import types

import numpy as np
import pytest

import course
import course.activations
import course.normalize
from course import normalize_maps as normalize_alias  # an alias bound long before any block
from course.checks import guarded_functions, reference_off_limits
from course.errors import CourseError, ReferenceNotAllowed

from conftest import tiny_sequential


def message(exercise: str, reference: str) -> str:
    return (f"this exercise asks you to write `{exercise}` yourself; `course.{reference}` does it for you, "
            "so it is not allowed here")


def run_as(module: str, source: str, **names):
    """Run ``source`` as code of the module called ``module``; return its ``result``."""
    namespace = {"__name__": module, "course": course, "np": np, **names}
    exec(compile(source, f"<{module}>", "exec"), namespace)  # noqa: S102 (our own test code)
    return namespace.get("result")


MAPS = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)


@pytest.mark.parametrize("call", [
    lambda: course.normalize_maps(MAPS),
    lambda: course.normalize.normalize_maps(MAPS, "global"),
    lambda: normalize_alias(MAPS),
    lambda: run_as("__main__", "result = course.normalize_maps(np.ones((2, 2, 1)))"),
    lambda: run_as("__main__", "from course.normalize import normalize_maps as n\nresult = n(np.ones((2, 2, 1)))"),
    lambda: run_as("coursework", "result = course.normalize_maps(np.ones((2, 2, 1)))"),  # not the package
], ids=["course.X", "course.module.X", "alias-bound-before", "notebook-cell", "import-in-block", "coursework-module"])
def test_every_access_form_is_refused_with_the_sentence(call):
    with reference_off_limits("normalize_map", ["normalize_maps"]):
        with pytest.raises(ReferenceNotAllowed) as caught:
            call()
    assert str(caught.value) == message("normalize_map", "normalize_maps")
    assert (caught.value.exercise, caught.value.reference) == ("normalize_map", "normalize_maps")


def test_a_student_function_defined_before_the_block_is_refused(tiny_images):
    model = tiny_sequential()
    efm = course.extract_feature_maps  # the student's earlier cell

    def get_feature_maps(model, image, layer_name):
        return efm(model, image, layer_name)[layer_name][0]

    with reference_off_limits("get_feature_maps", ["extract_feature_maps", "activation_model"]):
        with pytest.raises(ReferenceNotAllowed, match="`course.extract_feature_maps` does it for you"):
            get_feature_maps(model, tiny_images[0], "c1")
        with pytest.raises(AssertionError, match="write `get_feature_maps` yourself; `course.activation_model`"):
            course.activations.activation_model(model, "c1")
    assert get_feature_maps(model, tiny_images[0], "c1").shape == (10, 10, 4)


def test_the_error_is_a_failed_check_and_survives_pickling():
    error = ReferenceNotAllowed("to_uint8", "to_uint8")
    assert isinstance(error, CourseError) and isinstance(error, AssertionError)
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), str(again), again.reference) == (ReferenceNotAllowed, str(error), "to_uint8")


def test_the_package_calls_its_own_functions_inside_the_block(tiny_images):
    model = tiny_sequential(name="fresh")  # a new model: extract_feature_maps must build its sub-model
    with reference_off_limits("get_feature_maps", ["activation_model", "normalize_maps"]) as called:
        maps = course.extract_feature_maps(model, tiny_images, ["c1", "c2"])  # calls activation_model
        figure = course.plot_feature_maps(maps["c2"][0], normalize="per_map")  # calls normalize_maps
        helper = run_as("course.helpers", "result = course.normalize_maps(maps)", maps=MAPS)
    assert maps["c1"].shape == (5, 10, 10, 4) and maps["c2"].shape == (5, 3, 3, 6)
    assert figure.axes and np.allclose(helper.max(axis=(0, 1)), 1)  # the default mode="per_map" applies
    assert called == [], f"internal calls are not the student's: {called}"


def test_everything_is_restored_after_the_block_and_after_an_exception():
    originals = {name: getattr(course, name).__code__ for name in ("normalize_maps", "to_uint8")}
    with reference_off_limits("to_uint8", ["normalize_maps", "to_uint8"]):
        assert guarded_functions() == ["normalize_maps", "to_uint8"]
        assert course.to_uint8.__code__ is not originals["to_uint8"]
    assert guarded_functions() == []
    assert {name: getattr(course, name).__code__ for name in originals} == originals
    with pytest.raises(ZeroDivisionError):
        with reference_off_limits("to_uint8", ["to_uint8"]):
            1 / 0  # noqa: B018 (any error in the block)
    with pytest.raises(ReferenceNotAllowed):
        with reference_off_limits("to_uint8", ["to_uint8"]):
            course.to_uint8(np.zeros(3))
    assert guarded_functions() == [] and course.to_uint8.__code__ is originals["to_uint8"]
    assert course.to_uint8(np.array([0.0, 1.0])).tolist() == [0, 255]
    assert normalize_alias(MAPS, "global").max() == 1.0


def test_the_yielded_list_names_what_was_called_even_when_caught():
    def careful_student(x):
        try:
            return course.to_uint8(x)
        except Exception:  # noqa: BLE001 (a student swallowing the refusal)
            return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)

    with reference_off_limits("to_uint8", ["normalize_maps", "to_uint8"]) as called:
        assert called == []
        careful_student(np.zeros(2))
        careful_student(np.ones(2))
        with pytest.raises(ReferenceNotAllowed):
            course.normalize_maps(MAPS)
    assert called == ["to_uint8", "normalize_maps"]


def test_blocks_nest_and_reenter():
    with reference_off_limits("outer", ["to_uint8", "normalize_maps"]) as outer:
        with reference_off_limits("inner", ["to_uint8"]) as inner:
            with reference_off_limits("inner", ["to_uint8"]) as again:
                with pytest.raises(ReferenceNotAllowed, match="write `inner` yourself"):
                    course.to_uint8(0.5)
            assert guarded_functions() == ["normalize_maps", "to_uint8"]
            with pytest.raises(ReferenceNotAllowed, match="write `outer` yourself; `course.normalize_maps`"):
                course.normalize_maps(MAPS)
        with pytest.raises(ReferenceNotAllowed, match="write `outer` yourself; `course.to_uint8`"):
            course.to_uint8(0.5)
    assert (outer, inner, again) == (["to_uint8", "normalize_maps"], ["to_uint8"], ["to_uint8"])
    assert guarded_functions() == [] and course.to_uint8(0.5) == 128


def test_bad_names_are_refused_before_anything_is_guarded():
    for bad in ["normalise_maps", "Recipe", "SEED_RECIPE", "CourseError", "reference_off_limits", "np"]:
        with pytest.raises(ValueError) as caught:
            with reference_off_limits("x", ["to_uint8", bad]):
                pass
        text = str(caught.value)
        assert repr(bad) in text and "not a function of the course package" in text
        assert "'extract_feature_maps'" in text and "'to_uint8'" in text, f"the known functions are missing: {text}"
        assert guarded_functions() == []
    with pytest.raises(ValueError, match="did you mean 'normalize_maps'"):
        with reference_off_limits("x", ["normalise_maps"]):
            pass


def test_closures_are_refused_with_a_reason(monkeypatch):
    def make():
        scale = 2.0

        def doubled(x):
            return scale * x

        return doubled

    closure = make()
    closure.__module__ = "course.normalize"
    monkeypatch.setattr(course, "doubled", closure, raising=False)
    monkeypatch.setattr(course, "__all__", [*course.__all__, "doubled"])
    with pytest.raises(TypeError, match=r"course.doubled is a closure"):
        with reference_off_limits("x", ["doubled"]):
            pass
    assert closure(1.0) == 2.0 and guarded_functions() == []


def test_one_guard_per_function_with_no_free_variables():
    with reference_off_limits("a", ["to_uint8", "normalize_maps"]):
        guards = [course.to_uint8.__code__, course.normalize_maps.__code__]
    assert all(isinstance(code, types.CodeType) and not code.co_freevars for code in guards)
    assert guards[0] != guards[1]
    with reference_off_limits("b", ["to_uint8"]):
        assert course.to_uint8.__code__ is guards[0], "the guard is compiled once per function"


# --- student_code / explain_error / describe_value: what a student's function raises or returns -----

RAW = ("Traceback", "{{function_node", "Exception encountered when calling", "\x1b[")


def sentence_of(exercise: str, call) -> str:
    """The AssertionError message student_code makes of what ``call`` raises."""
    from course.checks import student_code

    with pytest.raises(AssertionError) as caught:
        with student_code(exercise):
            call()
    text = str(caught.value)
    assert text.startswith(f"{exercise} raised ") and "\n" not in text and not any(r in text for r in RAW), text
    return text


def test_a_missing_batch_axis_the_uint8_division_and_a_none_gradient_become_sentences(tiny_model):
    import tensorflow as tf

    text = sentence_of("get_feature_maps", lambda: tiny_model(np.zeros((12, 12, 1), np.float32)))
    assert "without a batch axis" in text and "image[np.newaxis]" in text, text

    def divide_in_place():
        images = np.zeros((2, 28, 28), np.uint8)
        images /= 255

    text = sentence_of("prepare_images", divide_in_place)
    assert "UFuncTypeError" in text and "images.astype(np.float32) / 255" in text, text

    def gradient_outside_the_tape():
        batch = tf.zeros((1, 12, 12, 1))
        score = tiny_model(batch)[0, 0]  # the forward pass before the tape: nothing is recorded
        with tf.GradientTape() as tape:
            tape.watch(batch)
        return tape.gradient(score, batch).numpy()

    text = sentence_of("saliency", gradient_outside_the_tape)
    assert "inside the `with tf.GradientTape() as tape:` block" in text, text


def test_an_unknown_error_still_names_the_exercise_and_what_to_do():
    text = sentence_of("to_uint8", lambda: {}.pop("missing"))
    assert text.startswith("to_uint8 raised KeyError: 'missing'; ") and "call it in a cell of its own" in text, text


def test_checks_failures_unfinished_exercises_and_refusals_pass_unchanged():
    from course.checks import student_code

    for error in (AssertionError("expected 3"), NotImplementedError(), ReferenceNotAllowed("a", "b")):
        with pytest.raises(type(error)) as caught:
            with student_code("a"):
                raise error
        assert caught.value is error


def test_returned_values_of_the_wrong_kind_are_named(tiny_model):
    import tensorflow as tf

    from course.checks import describe_value, expect_array

    cases = [
        (None, "returned None"),
        (tiny_model.layers[0].output, "returned a KerasTensor"),
        (tf.zeros(3), "convert the tensor with np.asarray"),
        ({"c1": np.zeros(2)}, "returned a dict with keys ['c1']"),
        ([np.zeros(2), np.zeros(2)], "returned a list of 2 items"),
        (np.asarray({"c1": 1}, dtype=object), "numpy array of Python objects"),
    ]
    for value, expected in cases:
        with pytest.raises(AssertionError) as caught:
            expect_array("get_feature_maps", value)
        assert expected in str(caught.value), (expected, str(caught.value))
    assert describe_value("x", np.zeros(3)) is None
    expect_array("x", np.zeros(3))  # an array passes
    assert "keras.Sequential" in describe_value("build_cnn", [1, 2], "a keras model")


def test_the_graders_wording_for_a_returned_kerastensor_is_the_notebooks(tiny_model):
    """In the grader a KerasTensor cannot be sent back: its refusal gets the notebook's sentence."""
    from course.checks import describe_value, explain_error

    symbolic = tiny_model.layers[0].output
    kind = type(symbolic)
    refusal = Exception(f"returned an object of type {kind.__module__}.{kind.__qualname__}, which the grader "
                        "cannot compare: return numpy arrays, numbers, strings, lists, tuples, dicts, ...")
    assert explain_error("make_activation_model", refusal) == describe_value("make_activation_model", symbolic)
