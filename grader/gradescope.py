"""The Gradescope autograder bundle: one zip that Gradescope builds its container from
("Configure Autograder" > "Zip file upload") and runs once per submission.

Gradescope's contract: at build time it runs ``setup.sh`` from ``/autograder/source`` (the
zip's contents), as root, with internet; for each submission it runs
``/autograder/run_autograder`` (copied from the zip), which finds the student's files in
``/autograder/submission/`` and must leave ``/autograder/results/results.json``.

The bundle holds the package (``course/``, ``grader/``), the assignment's instructor source
(hidden tests included), the install files and the trained model (so no container trains it).
``run_autograder`` grades the one submission with the same engine as ``python -m grader
autograde`` and writes the result in Gradescope's format (:func:`grader.exports.gradescope_results`).

Isolation: Gradescope's containers do not always allow user namespaces, which bubblewrap needs.
``run_autograder`` passes ``--weak-isolation``: the submission runs in bubblewrap where it works,
and otherwise with Landlock and seccomp only (no namespaces: see grader/README.md's threat
model). Either way ``results.json`` is written by the grader after the submission has finished,
from the trusted checker's verdicts, so a submission that writes its own file there is overwritten.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

from grader.errors import GraderError

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
set -euo pipefail
cd /autograder/source
apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null ||
  echo "note: no bubblewrap: submissions will run with Landlock and seccomp only"
python3 -m pip install --quiet uv==0.13.8
python3 -m uv venv --quiet --python 3.11 /autograder/venv   # the course needs Python 3.11-3.13
python3 -m uv pip install --quiet --python /autograder/venv/bin/python -r requirements.txt -e .
/autograder/venv/bin/python -c "import course; course.load_mnist()"   # downloads MNIST into datasets/
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grade it, leave results/results.json.
set -euo pipefail
root="${{AUTOGRADER_ROOT:-/autograder}}"
source="$root/source"
python="${{GRADER_PYTHON:-$root/venv/bin/python}}"
assignment={assignment}
course="$(mktemp -d)"
mkdir -p "$course/submitted/student/$assignment" "$root/results"
notebook="$root/submission/$assignment.ipynb"
if [ ! -f "$notebook" ]; then  # the student may have renamed it: take the one notebook handed in
  shopt -s nullglob; found=("$root"/submission/*.ipynb)
  if [ "${{#found[@]}}" -ne 1 ]; then
    printf '{{"score": 0, "output": "Hand in one notebook, %s.ipynb (found %d .ipynb files).", "tests": []}}\\n' \\
      "$assignment" "${{#found[@]}}" > "$root/results/results.json"
    exit 0
  fi
  notebook="${{found[0]}}"
fi
cp "$notebook" "$course/submitted/student/$assignment/$assignment.ipynb"
for extra in "$root"/submission/*.py; do [ -f "$extra" ] && cp "$extra" "$course/submitted/student/$assignment/"; done
cd "$course"
"$python" -m grader --course-dir "$course" --source "$source/solutions" autograde "$assignment" \\
    --jobs 1 --quiet --no-canary --weak-isolation
"$python" -m grader --course-dir "$course" --source "$source/solutions" export --format gradescope --out "$course/out"
cp "$course/out/$assignment/student/results.json" "$root/results/results.json"
"""

#: What the bundle carries from the checkout, besides the assignment's source folder.
CARRIED = ("course", "grader", "pyproject.toml", "requirements.txt", "README.md")


def bundle(root: Path, source: Path, assignment: str, out: Path) -> list[str]:
    """Write the autograder zip of ``assignment`` to ``out``.

    Args:
        root: The course checkout (``course/``, ``grader/``, ``models/``).
        source: The instructor sources (``solutions/``).
        assignment: The assignment's name (a folder of ``source``).
        out: The zip to write.

    Returns:
        The names written into the zip.

    Raises:
        GraderError: No such assignment, or ``out`` is a folder.
    """
    folder = source / assignment
    if not (folder / f"{assignment}.ipynb").is_file():
        known = sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
        raise GraderError(f"no assignment '{assignment}' in {source}; known assignments: {', '.join(known) or 'none'}")
    if out.is_dir():
        raise GraderError(f"--out {out} is a folder: give the zip file to write, e.g. {out / 'autograder.zip'}")
    files = {f"solutions/{assignment}/{p.relative_to(folder)}": p for p in sorted(folder.rglob("*")) if p.is_file()}
    for name in CARRIED:
        path = root / name
        for p in ([path] if path.is_file() else sorted(path.rglob("*"))):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                files[str(p.relative_to(root))] = p
    models = sorted((root / "models").glob("*")) if (root / "models").is_dir() else []
    if not models:
        print("note: models/ holds no trained model: each Gradescope run would train it first (about 2 minutes); "
              "run make run (or course.load_or_train_model()) before bundling", flush=True)
    files.update({f"models/{p.name}": p for p in models if p.is_file()})
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in (("setup.sh", SETUP), ("run_autograder", RUN.format(assignment=assignment))):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16  # executable: Gradescope runs them as they are
            z.writestr(info, text)
        for name, path in sorted(files.items()):
            z.write(path, name)
    return ["setup.sh", "run_autograder", *sorted(files)]


def extract(archive: Path, dest: Path) -> None:
    """Unpack a bundle the way Gradescope does, keeping the scripts executable (for the tests)."""
    with zipfile.ZipFile(archive) as z:
        for info in z.infolist():
            target = z.extract(info, dest)
            mode = info.external_attr >> 16
            if mode & 0o111:
                os.chmod(target, mode & 0o777)
