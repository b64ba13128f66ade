"""Grading for the course: ``python -m grader --help``; in a notebook, ``from grader import check``."""


def check(path=None, **kwargs):
    """Check the saved notebook (default: the current one); see :func:`grader.selfcheck.check_notebook`."""
    from grader.selfcheck import check_notebook

    return check_notebook(path, **kwargs)
