"""One call at the top of every notebook: versions, seeds and headless-safe figures.

``rng = course.setup_notebook()`` replaces the copied set-up and version cells of the
notebooks: it prints the versions, checks that Keras is version 3, seeds Python, NumPy and
TensorFlow (``keras.utils.set_random_seed``) and returns the notebook's own NumPy generator.
"""

from __future__ import annotations

import sys

from course.errors import CourseError


def setup_notebook(seed: int = 0, quiet: bool = False):
    """Print the versions, check Keras 3, seed everything; return a seeded NumPy generator.

    Args:
        seed: The seed of Python's, NumPy's and TensorFlow's random numbers, and of the
            returned generator.
        quiet: Do not print the versions line.

    Returns:
        ``numpy.random.Generator`` seeded with ``seed`` (the notebook's own random choices).

    Raises:
        CourseError: Keras older than 3 (the course uses the Keras 3 API).
    """
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import matplotlib
    import numpy as np
    import tensorflow as tf

    import course
    from course import validate

    seed = validate.integer(seed, "seed", 0)
    if int(keras.__version__.split(".")[0]) < 3:
        raise CourseError(
            f"this course needs Keras 3, found Keras {keras.__version__}: install the versions in "
            "requirements.txt (make setup)."
        )
    if not quiet:
        print(f"Python {sys.version.split()[0]} | TensorFlow {tf.__version__} | Keras {keras.__version__} | "
              f"NumPy {np.__version__} | matplotlib {matplotlib.__version__} | course {course.__version__}")
    keras.utils.set_random_seed(seed)  # seeds Python, NumPy and TensorFlow at once
    return np.random.default_rng(seed)
