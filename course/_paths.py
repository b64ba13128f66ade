"""Where the course keeps its data, its trained models and its generated files.

One place for every default location, so that the CLI, the notebooks and the tests agree.
Each can be moved with an environment variable (useful on shared machines and in CI).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root when the package is used from a checkout (``pip install -e .``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _base() -> Path:
    """The checkout root if this is a checkout, else the current directory."""
    if (PROJECT_ROOT / "pyproject.toml").is_file():
        return PROJECT_ROOT
    return Path.cwd()


def data_dir() -> Path:
    """Folder searched for ``mnist.npz``: ``$COURSE_DATA_DIR`` or ``<project>/datasets``."""
    return Path(os.environ.get("COURSE_DATA_DIR") or _base() / "datasets")


def model_dir() -> Path:
    """Folder of trained-model caches: ``$COURSE_MODEL_DIR`` or ``<project>/models``."""
    return Path(os.environ.get("COURSE_MODEL_DIR") or _base() / "models")


def build_dir() -> Path:
    """Folder of generated figures and reports: ``$COURSE_BUILD_DIR`` or ``<project>/build``."""
    return Path(os.environ.get("COURSE_BUILD_DIR") or _base() / "build")
