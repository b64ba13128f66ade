"""The grader's errors. The library raises them; only ``python -m grader`` turns them into exit codes."""


class GraderError(Exception):
    """The grader cannot do what was asked; the message says why and what to do."""


class GraderFailure(GraderError):
    """The grader itself failed on a submission (never the student's fault)."""
