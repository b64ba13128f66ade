"""Seeing inside a CNN: the course's helper package.

Data flows one way: ``load_mnist`` -> ``load_or_train_model`` -> ``extract_feature_maps``
-> ``normalize_maps`` -> ``plot_feature_maps`` / ``activation_stats``. Nothing in it uses pyplot's global state
or calls ``plt.show()``: figures are returned, so they work headless and in notebooks.
"""

import os

# TensorFlow's C++ start-up lines are noise for students (and nbgrader zeroes a test cell that
# writes to stderr); keep warnings and errors. Set before TensorFlow is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from course.activations import (  # noqa: E402
    activation_model,
    conv_layer_names,
    extract_feature_maps,
    feature_map_layer_names,
    find_layer,
    layer_output_shapes,
)
from course.analysis import activation_stats, dead_filters, filter_weights, top_channels  # noqa: E402
from course.data import load_mnist  # noqa: E402
from course.errors import (  # noqa: E402
    CourseError,
    DatasetError,
    InputShapeError,
    LayerError,
    ReferenceNotAllowed,
)
from course.model import (  # noqa: E402
    SEED_RECIPE,
    Recipe,
    build_model,
    load_or_train_model,
    read_metadata,
    train_model,
)
from course.checks import reference_off_limits  # noqa: E402  (test cells use course.checks.reference_off_limits)
from course.normalize import normalize_maps, to_uint8  # noqa: E402
from course.plotting import compare_layers, montage, plot_feature_maps, plot_filters  # noqa: E402

# Beyond feature maps (notebook 6): saliency, Grad-CAM, activation maximization, class-level
# analysis, and maps across training epochs.
from course.analysis import (  # noqa: E402
    mean_activation_by_class,
    misclassified,
    project_maps,
    top_activating_images,
)
from course.callbacks import FeatureMapLogger, plot_maps_across_epochs  # noqa: E402
from course.explain import (  # noqa: E402
    grad_cam,
    last_conv_layer,
    load_mobilenet_v2,
    maximize_activation,
    mobilenet_input,
    plot_class_activation,
    plot_examples,
    plot_misclassified,
    plot_overlay,
    plot_preferred_images,
    plot_projection,
    sample_photo,
    saliency_map,
    score_model,
)

__version__ = "0.1.0"

__all__ = [
    "CourseError",
    "DatasetError",
    "InputShapeError",
    "LayerError",
    "Recipe",
    "ReferenceNotAllowed",
    "SEED_RECIPE",
    "__version__",
    "activation_model",
    "activation_stats",
    "build_model",
    "compare_layers",
    "conv_layer_names",
    "dead_filters",
    "extract_feature_maps",
    "feature_map_layer_names",
    "filter_weights",
    "find_layer",
    "layer_output_shapes",
    "load_mnist",
    "load_or_train_model",
    "montage",
    "normalize_maps",
    "plot_feature_maps",
    "plot_filters",
    "read_metadata",
    "reference_off_limits",
    "to_uint8",
    "top_channels",
    "train_model",
    # beyond feature maps
    "FeatureMapLogger",
    "grad_cam",
    "last_conv_layer",
    "load_mobilenet_v2",
    "maximize_activation",
    "mean_activation_by_class",
    "misclassified",
    "mobilenet_input",
    "plot_class_activation",
    "plot_examples",
    "plot_maps_across_epochs",
    "plot_misclassified",
    "plot_overlay",
    "plot_preferred_images",
    "plot_projection",
    "project_maps",
    "sample_photo",
    "saliency_map",
    "score_model",
    "top_activating_images",
]
