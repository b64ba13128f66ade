"""Generate the student notebooks (``notebooks/``) from the instructor sources (``solutions/``).

    python -m grader.release        (or: make release)

Every assignment folder ``solutions/NN_name/`` that holds ``NN_name.ipynb`` is released through
nbgrader's ``generate_assignment`` into ``notebooks/NN_name/``: solutions become stubs that
raise ``NotImplementedError``, hidden tests are removed, outputs cleared and the graded cells
locked and checksummed. Nobody edits ``notebooks/`` by hand; a test fails when it drifts.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

from traitlets.config import Config, PyFileConfigLoader

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = Path(__file__).with_name("nbgrader_config.py")
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"
_ASSIGNMENT = re.compile(r"\d\d_\w+")


def load_config() -> Config:
    """The course's nbgrader configuration (``grader/nbgrader_config.py``) as a traitlets Config."""
    return PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent)).load_config()


def assignments(source: str | os.PathLike = SOLUTIONS) -> list[str]:
    """The assignment names under ``source``: folders ``NN_name`` holding ``NN_name.ipynb``.

    Args:
        source: A folder of nbgrader source assignments.

    Returns:
        The names, sorted (so in course order).
    """
    source = Path(source)
    return sorted(
        folder.name
        for folder in source.iterdir()
        if folder.is_dir()
        and _ASSIGNMENT.fullmatch(folder.name)
        and (folder / f"{folder.name}.ipynb").is_file()
    )


def release(source: str | os.PathLike = SOLUTIONS, dest: str | os.PathLike = NOTEBOOKS) -> list[Path]:
    """Regenerate the student version of every assignment in ``source`` into ``dest``.

    Each ``dest/NN_name/`` is replaced as a whole; nothing is written to a gradebook.

    Args:
        source: The instructor sources (default ``solutions/``).
        dest: Where the student versions go (default ``notebooks/``).

    Returns:
        The generated notebook paths, in course order.

    Raises:
        RuntimeError: nbgrader rejected an assignment (its log is in the message), or
            ``source`` holds no assignment.
        ValueError: ``dest`` is, contains or is inside ``source``.
    """
    from nbgrader.converters import GenerateAssignment
    from nbgrader.coursedir import CourseDirectory

    source, dest = Path(source).resolve(), Path(dest).resolve()
    if source == dest or source in dest.parents or dest in source.parents:
        raise ValueError(
            f"the release folder {dest} overlaps the source folder {source}; a release replaces "
            "dest/<assignment> folders, so give two separate folders (solutions/ and notebooks/)."
        )
    names = assignments(source)
    if not names:
        raise RuntimeError(
            f"no assignment found in {source}: expected folders NN_name holding NN_name.ipynb "
            "(for example 01_train_cnn/01_train_cnn.ipynb)."
        )
    config = load_config()
    config.CourseDirectory.source_directory = str(source)
    config.CourseDirectory.release_directory = str(dest)
    config.GenerateAssignment.no_database = True  # a release never touches a gradebook
    config.SaveCells.enabled = False
    dest.mkdir(parents=True, exist_ok=True)
    generated = []
    for name in names:
        shutil.rmtree(dest / name, ignore_errors=True)
        coursedir = CourseDirectory(config=config)
        coursedir.assignment_id = name
        converter = GenerateAssignment(coursedir=coursedir, config=config)
        converter.force = True
        try:
            converter.start()
        except Exception as exc:  # nbgrader raises NbGraderException with details in its log
            raise RuntimeError(
                f"nbgrader could not release '{name}' from {source / name}: {exc}. Check that "
                "every nbgrader cell has a unique grade id and that solution and test regions "
                "are in cells marked as such."
            ) from exc
        notebook = dest / name / f"{name}.ipynb"
        if not notebook.is_file():
            raise RuntimeError(f"nbgrader did not write {notebook} for '{name}'.")
        generated.append(notebook)
    return generated


def main(argv: list[str] | None = None) -> int:
    """``python -m grader.release``: regenerate ``notebooks/`` and list what was written."""
    parser = argparse.ArgumentParser(prog="python -m grader.release", description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOLUTIONS, help="default: solutions/")
    parser.add_argument("--dest", type=Path, default=NOTEBOOKS, help="default: notebooks/")
    args = parser.parse_args(argv)
    for path in release(args.source, args.dest):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
