"""Grading for the course: ``python -m grader --help``; in a notebook, ``from grader import check``."""


def check(path=None, **kwargs):
    """The self-check cell: check the saved notebook (default: the current one); see :func:`grader.selfcheck.check`.

    In Jupyter the report is shown as the cell's output (a progress line first) wherever the call
    stands in the cell, and not a second time as the cell's value; run by nbgrader or the grader
    it does nothing. Elsewhere it returns the report without printing it (``print(check(path))``).
    """
    from grader.selfcheck import check as self_check

    return self_check(path, **kwargs)
