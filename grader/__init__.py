"""Grading for the course: ``python -m grader --help``; in a notebook, ``from grader import check``."""


def check(path=None, **kwargs):
    """Check the saved notebook (default: the current one); see :func:`grader.selfcheck.check_notebook`.

    Returns the report without printing it: as a cell's last line, ``check()`` shows it once
    (printing it as well showed it twice). ``print(check())`` prints it anywhere.
    """
    from grader.selfcheck import check_notebook

    kwargs.setdefault("echo", False)
    return check_notebook(path, **kwargs)
