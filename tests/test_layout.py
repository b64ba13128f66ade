"""The package's layout: each piece in one home, the public API kept, ``import course`` cheap."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np

import course
from course import _paths

PACKAGE = Path(course.__file__).parent
#: The public names before the layout change: every one must still resolve.
PUBLIC_BEFORE = {
    "activation_model", "conv_layer_names", "extract_feature_maps", "feature_map_layer_names", "find_layer",
    "layer_output_shapes", "activation_stats", "dead_filters", "filter_weights", "top_channels",
    "mean_activation_by_class", "misclassified", "project_maps", "top_activating_images", "load_mnist",
    "SEED_RECIPE", "Recipe", "build_model", "load_or_train_model", "read_metadata", "train_model",
    "reference_off_limits", "normalize_maps", "to_uint8", "compare_layers", "montage", "plot_feature_maps",
    "plot_filters", "FeatureMapLogger", "plot_maps_across_epochs", "grad_cam", "last_conv_layer",
    "load_mobilenet_v2", "maximize_activation", "mobilenet_input", "plot_class_activation", "plot_examples",
    "plot_misclassified", "plot_overlay", "plot_preferred_images", "plot_projection", "sample_photo",
    "saliency_map", "score_model",
}


def _functions(module: str) -> list[str]:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]


def test_the_public_api_is_kept_and_every_name_resolves():
    assert PUBLIC_BEFORE <= set(course.__all__)
    for name in course.__all__:
        assert getattr(course, name) is not None, name
    # The old import paths still work.
    from course.callbacks import plot_maps_across_epochs
    from course.explain import grad_cam, saliency_map, score_model

    assert grad_cam is course.grad_cam and saliency_map is course.saliency_map
    assert score_model is course.score_model and plot_maps_across_epochs is course.plot_maps_across_epochs


def test_one_module_per_method_and_every_figure_in_the_plotting_layer():
    assert "saliency_map" in _functions("saliency") and "grad_cam" in _functions("gradcam")
    assert "maximize_activation" in _functions("maximize") and {"trace", "score_model"} <= set(_functions("tracing"))
    for module in PACKAGE.glob("*.py"):
        if module.stem in ("plotting", "__main__"):
            continue
        drawing = [name for name in _functions(module.stem) if name.startswith("plot_")]
        assert not drawing, f"course/{module.name} defines figure functions {drawing}: they belong in plotting.py"
        source = module.read_text()
        assert "from matplotlib.figure import" not in source, f"course/{module.name} draws figures"
    for module in ("saliency", "gradcam", "maximize", "tracing"):
        assert len((PACKAGE / f"{module}.py").read_text().splitlines()) < 300, module


def test_the_project_root_is_computed_in_one_place():
    found = [p.name for p in PACKAGE.glob("*.py") if "parent.parent" in p.read_text() or "parents[1]" in p.read_text()]
    assert found == ["_paths.py"], found
    assert _paths.checkout_root() == Path(__file__).resolve().parent.parent


def test_import_course_and_its_tf_free_modules_import_no_tensorflow():
    code = ("import sys, course, course._paths, course.validate, course.errors, course.notebook; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_setup_notebook_prints_versions_seeds_and_returns_a_generator(capsys):
    import keras

    rng = course.setup_notebook(seed=3)
    line = capsys.readouterr().out
    assert f"Keras {keras.__version__}" in line and f"course {course.__version__}" in line and "TensorFlow" in line
    first = (rng.random(), np.random.random(), float(keras.random.uniform((1,))[0]))
    rng = course.setup_notebook(seed=3, quiet=True)
    assert capsys.readouterr().out == ""
    assert (rng.random(), np.random.random(), float(keras.random.uniform((1,))[0])) == first
