"""``python -m course``: the main job end to end, as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from course import _paths


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "course", *args], capture_output=True, text=True,
        cwd=_paths.PROJECT_ROOT, timeout=600, **kwargs,
    )


NOISE_MARKS = ("absl::InitializeLog", "oneDNN custom operations", "use_unbounded_threadpool", "I0000 ")


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    # each command opens its own line of the COMMAND list (a word in a description does not count)
    listed = re.findall(r"^    (\w+) {2,}\S", result.stdout, flags=re.M)
    assert listed == ["run", "train", "explain", "figures"], result.stdout
    run_help = run_cli("run", "--help").stdout
    for option in ("--layer", "--index", "--out"):
        assert option in run_help


@pytest.mark.slow
def test_run_writes_figures_and_summary(trained_model, tmp_path):
    result = run_cli("run", "--index", "3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    # progress on stderr, one line per stage, and none of TensorFlow's start-up lines
    stages = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert len(stages) == 5 and "loading MNIST" in stages[0], result.stderr
    assert not any(mark in result.stderr for mark in NOISE_MARKS), result.stderr
    assert "Test accuracy: 98." in result.stdout or "Test accuracy: 99." in result.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["image_index"] == 3 and summary["label"] == 0
    assert summary["layers"]["conv1"]["shape"] == [26, 26, 32]
    assert summary["layers"]["conv2"]["shape"] == [11, 11, 64]
    for name in summary["figures"]:
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert {"feature_maps_conv1.png", "feature_maps_conv2.png", "compare_layers.png",
            "filters_conv1.png"} <= set(summary["figures"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--index", "10000"], "--index 10000 is out of range: the test set has images 0..9999"),
        (["--layer", "dense"], "layer 'dense' has output shape (None, 64): it is not a feature map"),
        (["--layer", "conv3"], "no layer named 'conv3'; did you mean 'conv2'?"),
    ],
)
def test_bad_input_is_one_sentence_not_a_traceback(trained_model, tmp_path, args, message):
    result = run_cli("run", "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_help_imports_neither_tensorflow_nor_numpy():
    """`--help` must answer at once: `-X importtime` lists every module the process imported."""
    for args in (["--help"], ["run", "--help"], ["explain", "--help"]):
        result = run_cli(*args, env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
        assert result.returncode == 0
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "argparse" in imported  # the listing works
        assert not imported & {"tensorflow", "keras", "numpy", "matplotlib"}, (args, imported)


@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: tmp / "a_file.txt", "is a file, not a folder: give a folder to write into"),
    (lambda tmp: tmp / "a_file.txt" / "inside", "cannot be written (Not a directory): choose a folder"),
])
@pytest.mark.parametrize("command", ["run", "explain", "figures"])
def test_output_folder_is_checked_before_any_work(tmp_path, command, make_out, message):
    (tmp_path / "a_file.txt").write_text("not a folder")
    out = make_out(tmp_path)
    result = run_cli(command, "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: --out {out} {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert "loading" not in result.stderr  # no stage started


QUIET_PROBE = r"""
import os, sys
from course.console import quiet_tensorflow
quiet_tensorflow()
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
print("python line 1", file=sys.stderr)
os.write(2, b"I0000 00:00:1796127199.646571    3414 port.cc:153] oneDNN custom operations are on.\n")
os.write(2, b"E0000 00:00:1796.1  77 op_level_cost.cc:1] NodeDef mentions attribute use_unbounded_threadpool\n")
os.write(2, b"E0000 00:00:1796.1  77 other.cc:1] a real error\n")
import tensorflow
print("after tensorflow", file=sys.stderr)
os.write(2, b"prompt without newline: ")
"""


def test_tensorflow_start_up_lines_are_filtered_and_everything_else_kept():
    result = subprocess.run([sys.executable, "-c", QUIET_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("python line 1\nE0000 00:00:1796.1  77 other.cc:1] a real error\n"
                             "after tensorflow\nprompt without newline: ")


def test_damaged_data_is_could_not_run_not_a_bad_argument(tmp_path):
    """A truncated mnist.npz where the package looks first: refused, exit 3, one sentence."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.npz").write_bytes((_paths.PROJECT_ROOT / "datasets" / "mnist.npz").read_bytes()[:5000])
    env = {**os.environ, "COURSE_DATA_DIR": str(tmp_path / "data")}
    result = run_cli("run", "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "mnist.npz" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "drawing" not in result.stderr
