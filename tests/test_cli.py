"""``python -m course``: the main job end to end, as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from course import _paths


def run_cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "course", *args], capture_output=True, text=True,
        cwd=_paths.PROJECT_ROOT, timeout=600, **kwargs,
    )


def test_help_lists_the_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("run", "train"):
        assert command in result.stdout
    run_help = run_cli("run", "--help").stdout
    for option in ("--layer", "--index", "--out"):
        assert option in run_help


@pytest.mark.slow
def test_run_writes_figures_and_summary(trained_model, tmp_path):
    result = run_cli("run", "--index", "3", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
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
