"""Where the course keeps its data, its trained models and its generated files.

The one place for every default location, and for the project root, so that the package, the
CLI, the notebooks, the tests and the grader agree. Each can be moved with an environment
variable (useful on shared machines and in CI). TensorFlow-free and import-free (standard
library only): the grader loads this file on its own, without importing the package.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The folder above the package: the repository root when the package is used from a checkout
#: (``pip install -e .``); for an installed package, the site-packages folder (not a project).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def checkout_root() -> Path | None:
    """The repository root if the package runs from a checkout (it has ``pyproject.toml``), else None."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else None


def base() -> Path:
    """The project folder: the checkout root if this is a checkout, else the current directory."""
    return checkout_root() or Path.cwd()


_base = base  # the name the command line used


def data_dir() -> Path:
    """Folder searched first for ``mnist.npz``: ``$COURSE_DATA_DIR`` or ``<project>/datasets``."""
    return Path(os.environ.get("COURSE_DATA_DIR") or base() / "datasets")


def data_folders() -> list[Path]:
    """Every folder searched for ``mnist.npz`` before keras' cache, in order, without repeats:
    ``$COURSE_DATA_DIR``, then ``<project>/datasets`` (``./datasets`` outside a checkout)."""
    folders = [data_dir(), base() / "datasets"]
    return [folder for i, folder in enumerate(folders) if folder not in folders[:i]]


def keras_home() -> Path:
    """Keras' own folder: ``$KERAS_HOME`` or ``~/.keras`` (as Keras itself decides)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def keras_datasets_dir() -> Path:
    """Where ``keras.datasets.mnist.load_data()`` keeps its copy: ``<keras home>/datasets``."""
    return keras_home() / "datasets"


def model_dir() -> Path:
    """Folder of trained-model caches: ``$COURSE_MODEL_DIR`` or ``<project>/models``."""
    return Path(os.environ.get("COURSE_MODEL_DIR") or base() / "models")


def build_dir() -> Path:
    """Folder of generated figures and reports: ``$COURSE_BUILD_DIR`` or ``<project>/build``."""
    return Path(os.environ.get("COURSE_BUILD_DIR") or base() / "build")


def read_dirs() -> list[Path]:
    """The folders a grading sandbox reads the course's models and data from."""
    return [model_dir(), *data_folders(), keras_datasets_dir()]
