"""The errors the course raises on purpose: each message says what was given, what was
expected and what to do, so a student never needs a traceback to act on it."""


class CourseError(Exception):
    """Base class of every error the course raises on purpose."""


class DatasetError(CourseError):
    """The MNIST file is missing, truncated or not the real MNIST."""


class LayerError(CourseError, ValueError):
    """A layer name that does not exist, or a layer whose output is not a feature map."""


class InputError(CourseError, ValueError, TypeError):
    """Input data (images, maps, heatmaps) of the wrong type, dtype or values (NaN, Inf, empty)."""


class InputShapeError(InputError):
    """Images (or maps) whose shape does not fit the model (or the function)."""


class ModelError(CourseError, ValueError, TypeError):
    """Not a Keras model, or one the tools cannot see inside (channels_first, several inputs and no image)."""


class OptionError(CourseError, ValueError, TypeError):
    """An option out of its range or of the wrong type (``steps=0``, ``ncols=-1``, ``channel=1.7``)."""


class ReferenceNotAllowed(CourseError, AssertionError):
    """A student's function called the package function that solves its exercise.

    It is an ``AssertionError`` too: for a test cell (and a grader) it is a failed check of
    the student's work, with a sentence that says what to do.

    Args:
        exercise: The function the exercise asks for, e.g. ``"get_feature_maps"``.
        reference: The ``course`` function that was called, e.g. ``"extract_feature_maps"``.
    """

    def __init__(self, exercise: str, reference: str):
        self.exercise, self.reference = exercise, reference
        super().__init__(
            f"this exercise asks you to write `{exercise}` yourself; `course.{reference}` does it for you, "
            "so it is not allowed here"
        )

    def __reduce__(self):
        return type(self), (self.exercise, self.reference)
