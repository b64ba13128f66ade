"""The errors the course raises on purpose: each message says what was given, what was
expected and what to do, so a student never needs a traceback to act on it."""


class CourseError(Exception):
    """Base class of every error the course raises on purpose."""


class DatasetError(CourseError):
    """The MNIST file is missing, truncated or not the real MNIST."""


class LayerError(CourseError, ValueError):
    """A layer name that does not exist, or a layer whose output is not a feature map."""


class InputShapeError(CourseError, ValueError):
    """Images whose shape does not fit the model."""
