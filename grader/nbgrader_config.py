"""nbgrader configuration of the course.

The course directory is the repository: the instructor sources are in ``solutions/`` (one
assignment folder per notebook, ``solutions/NN_name/NN_name.ipynb``) and the student versions
are generated into ``notebooks/`` (``make release``, see ``grader/release.py``).

Load it with ``nbgrader <command> --NbGrader.config_file=grader/nbgrader_config.py`` (nbgrader
0.9.6 has no ``--config``: it would warn that no config was found and go on without this one) or
through ``grader.release.load_config()``.
"""

import os

c = get_config()  # noqa: F821  (traitlets provides get_config when it runs this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

c.CourseDirectory.root = ROOT
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"

# nbgrader's default stub: an exercise cell raises NotImplementedError until it is filled in,
# so an unanswered exercise fails its tests without stopping the rest of the notebook.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Seconds per cell. Every cell of the course runs in seconds with the cached model, but
# notebook 1 trains the model (about 2 minutes on 2 cores) when no cache exists.
c.Execute.timeout = 300

# nbgrader gives 0 points to a test cell that writes anything to stderr. TensorFlow writes
# C++ log lines there (even with TF_CPP_MIN_LOG_LEVEL set), and Keras and numpy emit Python
# warnings; none of that means a wrong answer (a failed check raises, which is an "error"
# output, not a stderr stream). IgnorePattern drops the stderr outputs that match this pattern
# before the grades are computed. It is disabled in nbgrader by default.
STDERR_IGNORE_PATTERN = "|".join(
    [
        r"WARNING: All log messages before absl::InitializeLog",  # absl's preamble
        r"(?m:^[IWE]\d{4} [\d:.]+ +\d+ \S+:\d+\])",  # absl C++ lines: "I0000 00:00:17953.84 4995 port.cc:153]"
        r"(?m:^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\])",  # TF's older C++ lines
        r"(?m:^(WARNING|INFO):(tensorflow|absl):)",  # TF's Python logger
        r"\b[A-Z]\w*Warning: ",  # the warnings module: "file.py:12: UserWarning: ..."
    ]
)
c.IgnorePattern.enabled = True
c.IgnorePattern.pattern = STDERR_IGNORE_PATTERN
