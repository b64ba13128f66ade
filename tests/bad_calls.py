"""A broad, fixed table of wrong calls of the public API (wrong types, dtypes, shapes, NaN/Inf,
empty inputs, layers that do not exist or are given oddly, options out of range), shared by
tests/test_api_properties.py and by ``python tests/bad_calls.py``, which prints the tally:
how many end in the package's own error, in a raw error of a dependency, or in no error.

Only calls that are wrong in every version of the package are listed (no new features).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from conftest import tiny_sequential  # noqa: E402

import course  # noqa: E402

NAN = np.float32("nan")


def _image(value=None, shape=(12, 12, 1)):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    if value is not None:
        image[3, 4, 0] = value
    return image


def bad_calls() -> list[tuple[str, object]]:
    """``[(description, zero-argument callable)]``: every one is a wrong call."""
    model = tiny_sequential()
    other = tiny_sequential(name="other")
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    unbuilt = keras.Sequential([keras.layers.Conv2D(2, 3)])
    image = _image()
    batch = np.stack([image, image])
    maps = np.random.default_rng(1).random((10, 10, 4), dtype=np.float32)
    calls: list[tuple[str, object]] = []

    def add(name, fn):
        calls.append((name, fn))

    bad_models = {"None": None, "str": "model.keras", "Path": Path("model.keras"), "int": 42,
                  "unbuilt": unbuilt, "array": np.zeros(3)}
    for label, bad in bad_models.items():
        for fn in ("conv_layer_names", "feature_map_layer_names", "layer_output_shapes", "last_conv_layer"):
            add(f"{fn}(model={label})", lambda fn=fn, bad=bad: getattr(course, fn)(bad))
        add(f"extract_feature_maps(model={label})", lambda bad=bad: course.extract_feature_maps(bad, image))
        add(f"grad_cam(model={label})", lambda bad=bad: course.grad_cam(bad, image, "c1"))
        add(f"saliency_map(model={label})", lambda bad=bad: course.saliency_map(bad, image))
        add(f"plot_filters(model={label})", lambda bad=bad: course.plot_filters(bad, "c1"))
    add("last_conv_layer(dense only)", lambda: course.last_conv_layer(dense_only))

    bad_images = {
        "NaN pixel": _image(NAN), "Inf pixel": _image(np.inf), "-Inf pixel": _image(-np.inf),
        "all NaN": np.full((12, 12, 1), NAN), "None": None, "str": "digit.png", "list of str": ["a", "b"],
        "empty": np.zeros((0, 12, 12, 1), np.float32), "wrong shape": np.zeros((28, 28, 1), np.float32),
        "5-D": np.zeros((1, 1, 12, 12, 1), np.float32), "bool": np.ones((12, 12, 1), bool),
        "complex": np.ones((12, 12, 1), complex), "object": np.array([None] * 144).reshape(12, 12, 1),
        "ragged list": [[0.0, 1.0], [0.0]], "dict": {"x": image}, "scalar": 0.5,
    }
    for label, bad in bad_images.items():
        add(f"extract_feature_maps(images={label})", lambda bad=bad: course.extract_feature_maps(model, bad, "c1"))
        add(f"grad_cam(image={label})", lambda bad=bad: course.grad_cam(model, bad))
        add(f"saliency_map(image={label})", lambda bad=bad: course.saliency_map(model, bad))
        add(f"compare_layers(image={label})", lambda bad=bad: course.compare_layers(model, bad))
        if bad is not None:  # start=None is the default
            add(f"maximize_activation(start={label})",
                lambda bad=bad: course.maximize_activation(model, "c1", 0, steps=2, start=bad))
    add("grad_cam(a batch of 2)", lambda: course.grad_cam(model, batch))
    add("saliency_map(a batch of 2)", lambda: course.saliency_map(model, batch))

    foreign = other.get_layer("c1")
    bad_layers = {"unknown name": "c9", "float": 1.5, "index out of range": 99, "negative out of range": -99,
                  "list with a float": ["c1", 2.5], "empty list": [], "dict": {"c1": 1}, "None item": [None],
                  "foreign layer object": foreign, "dense": "out", "flatten": "flat", "bytes": b"c1"}
    for label, bad in bad_layers.items():
        add(f"extract_feature_maps(layers={label})", lambda bad=bad: course.extract_feature_maps(model, image, bad))
        add(f"activation_model(layers={label})", lambda bad=bad: course.activation_model(model, bad))
        add(f"grad_cam(layer={label})", lambda bad=bad: course.grad_cam(model, image, bad))
        add(f"score_model(layer={label})", lambda bad=bad: course.score_model(model, bad))
        add(f"maximize_activation(layer={label})", lambda bad=bad: course.maximize_activation(model, bad, 0, steps=2))
        add(f"compare_layers(layers={label})", lambda bad=bad: course.compare_layers(model, image, bad))
        add(f"plot_preferred_images(layers={label})",
            lambda bad=bad: course.plot_preferred_images(model, bad, steps=2))
        if not isinstance(bad, list) and label not in ("dense", "flatten"):  # find_layer finds any layer
            add(f"find_layer({label})", lambda bad=bad: course.find_layer(model, bad))
            add(f"filter_weights({label})", lambda bad=bad: course.filter_weights(model, bad))
            add(f"plot_filters({label})", lambda bad=bad: course.plot_filters(model, bad))
    add("filter_weights(pooling layer)", lambda: course.filter_weights(model, "p1"))

    for value in (0, -1, 2.5, "8", None):
        add(f"extract_feature_maps(batch_size={value!r})",
            lambda value=value: course.extract_feature_maps(model, image, "c1", batch_size=value))
        add(f"plot_feature_maps(ncols={value!r})", lambda value=value: course.plot_feature_maps(maps, ncols=value))
        add(f"plot_filters(ncols={value!r})", lambda value=value: course.plot_filters(model, "c1", ncols=value))
        add(f"compare_layers(ncols={value!r})", lambda value=value: course.compare_layers(model, image, ncols=value))
        add(f"plot_examples(ncols={value!r})",
            lambda value=value: course.plot_examples(batch, ["a", "b"], ncols=value))
        add(f"plot_preferred_images(ncols={value!r})",
            lambda value=value: course.plot_preferred_images(model, ["c1"], ncols=value, steps=2))
        add(f"montage(ncols={value!r})", lambda value=value: course.montage(maps, ncols=value))
    for value in (3, -1, 1.5, "2", [0]):
        add(f"grad_cam(class_index={value!r})", lambda value=value: course.grad_cam(model, image, class_index=value))
        add(f"saliency_map(class_index={value!r})",
            lambda value=value: course.saliency_map(model, image, class_index=value))
    for value in (-1, 2.5, "3"):
        add(f"saliency_map(smooth_samples={value!r})",
            lambda value=value: course.saliency_map(model, image, smooth_samples=value))
    for value in (-0.1, float("nan"), "0.1"):
        add(f"saliency_map(noise_level={value!r})",
            lambda value=value: course.saliency_map(model, image, smooth_samples=2, noise_level=value))

    maximize_options = {
        "channel=1.7": {"channel": 1.7}, "channel=-1": {"channel": -1}, "channel=4": {"channel": 4},
        "channel='a'": {"channel": "a"}, "channel=[]": {"channel": []}, "channel=[0, 9]": {"channel": [0, 9]},
        "steps=0": {"steps": 0}, "steps=-3": {"steps": -3}, "steps=2.5": {"steps": 2.5},
        "blur_sigma=0": {"blur_sigma": 0}, "blur_sigma=-1": {"blur_sigma": -1.0},
        "value_range=(1, 0)": {"value_range": (1.0, 0.0)}, "value_range=(0, 0)": {"value_range": (0.0, 0.0)},
        "value_range=(0,)": {"value_range": (0.0,)}, "value_range='ab'": {"value_range": "ab"},
        "value_range=(0, nan)": {"value_range": (0.0, float("nan"))},
        "learning_rate=0": {"learning_rate": 0.0}, "learning_rate=-1": {"learning_rate": -1.0},
        "jitter=-1": {"jitter": -1}, "jitter=1.5": {"jitter": 1.5}, "l2=-0.1": {"l2": -0.1},
        "blur_every=-1": {"blur_every": -1}, "start of 2 for 3 channels": {"channel": [0, 1, 2], "start": batch},
    }
    for label, options in maximize_options.items():
        options = {"channel": 0, "steps": 3, **options}
        add(f"maximize_activation({label})",
            lambda options=options: course.maximize_activation(model, "c1", **options))

    bad_maps = {"2-D": np.zeros((4, 64)), "batch of 2": np.stack([maps, maps]), "empty": np.zeros((0, 10, 4)),
                "str": "maps", "None": None, "1-D": np.zeros(5), "object": np.array([None, 1.0]),
                "ragged": [[1.0, 2.0], [1.0]]}
    for label, bad in bad_maps.items():
        add(f"plot_feature_maps(maps={label})", lambda bad=bad: course.plot_feature_maps(bad))
        add(f"montage(maps={label})", lambda bad=bad: course.montage(bad))
        if label != "batch of 2":  # a batch is fine for these
            add(f"normalize_maps(maps={label})", lambda bad=bad: course.normalize_maps(bad))
            add(f"activation_stats(maps={label})", lambda bad=bad: course.activation_stats(bad))
            add(f"dead_filters(maps={label})", lambda bad=bad: course.dead_filters(bad))
            add(f"top_channels(maps={label})", lambda bad=bad: course.top_channels(bad))
    for mode in ("max", 3, ["per_map"]):
        add(f"normalize_maps(mode={mode!r})", lambda mode=mode: course.normalize_maps(maps, mode))
        add(f"plot_feature_maps(normalize={mode!r})", lambda mode=mode: course.plot_feature_maps(maps, normalize=mode))
    for k in (0, 9, 1.5, "2"):
        add(f"top_channels(k={k!r})", lambda k=k: course.top_channels(maps, k))
    add("dead_filters(threshold='a')", lambda: course.dead_filters(maps, threshold="a"))
    for value in (9, -1, 1.5):
        add(f"plot_filters(in_channel={value!r})",
            lambda value=value: course.plot_filters(model, "c2", in_channel=value))

    heat = np.random.default_rng(2).random((12, 12))
    add("plot_overlay(heatmap of another shape)", lambda: course.plot_overlay(image, heat[:5]))
    add("plot_overlay(heatmap=None)", lambda: course.plot_overlay(image, None))
    add("plot_overlay(heatmap='x')", lambda: course.plot_overlay(image, "x"))
    add("plot_overlay(image=None)", lambda: course.plot_overlay(None, heat))
    add("plot_overlay(image 1-D)", lambda: course.plot_overlay(np.zeros(12), heat))
    add("plot_overlay(NaN heatmap)", lambda: course.plot_overlay(image, np.full((12, 12), np.nan)))
    add("plot_examples(captions of another length)", lambda: course.plot_examples(batch, ["a"]))
    add("plot_examples(images=None)", lambda: course.plot_examples(None, []))
    add("plot_examples(images 2-D)", lambda: course.plot_examples(np.zeros((3, 4)), ["a", "b", "c"]))
    add("plot_class_activation(1-D)", lambda: course.plot_class_activation(np.zeros(4)))
    add("plot_class_activation(None)", lambda: course.plot_class_activation(None))
    add("plot_class_activation(empty)", lambda: course.plot_class_activation(np.zeros((0, 3))))
    add("plot_projection(coords 1-D)", lambda: course.plot_projection(np.zeros(5), np.zeros(5)))
    add("plot_projection(labels of another length)", lambda: course.plot_projection(np.zeros((5, 2)), np.zeros(3)))
    add("plot_projection(None)", lambda: course.plot_projection(None, None))
    add("plot_misclassified(result=None)", lambda: course.plot_misclassified(None, batch))
    add("plot_misclassified(result={})", lambda: course.plot_misclassified({}, batch))

    x = np.random.default_rng(3).random((6, 12, 12, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    add("mean_activation_by_class(y of another length)", lambda: course.mean_activation_by_class(model, x, y[:3], "c1"))
    add("mean_activation_by_class(float labels)", lambda: course.mean_activation_by_class(model, x, y + 0.5, "c1"))
    add("mean_activation_by_class(negative labels)", lambda: course.mean_activation_by_class(model, x, y - 5, "c1"))
    add("mean_activation_by_class(x None)", lambda: course.mean_activation_by_class(model, None, y, "c1"))
    add("mean_activation_by_class(NaN x)", lambda: course.mean_activation_by_class(model, x * NAN, y, "c1"))
    add("mean_activation_by_class(layer 'nope')", lambda: course.mean_activation_by_class(model, x, y, "nope"))
    add("mean_activation_by_class(batch_size=0)",
        lambda: course.mean_activation_by_class(model, x, y, "c1", batch_size=0))
    add("mean_activation_by_class(empty)",
        lambda: course.mean_activation_by_class(model, x[:0], y[:0], "c1"))
    for channel in (99, -1, 1.5):
        add(f"top_activating_images(channel={channel!r})",
            lambda channel=channel: course.top_activating_images(model, x, "c1", channel))
    for k in (0, 99, 1.5):
        add(f"top_activating_images(k={k!r})", lambda k=k: course.top_activating_images(model, x, "c1", 0, k=k))
    add("top_activating_images(x None)", lambda: course.top_activating_images(model, None, "c1", 0))
    add("misclassified(y of another length)", lambda: course.misclassified(model, x, y[:2]))
    add("misclassified(x None)", lambda: course.misclassified(model, None, y))
    add("misclassified(NaN x)", lambda: course.misclassified(model, x * NAN, y))
    add("misclassified(layer 'nope')", lambda: course.misclassified(model, x, y, "nope"))

    add("project_maps(one image's (H, W, C) maps)", lambda: course.project_maps(maps))
    add("project_maps(one image)", lambda: course.project_maps(maps[np.newaxis]))
    add("project_maps(n_components=0)", lambda: course.project_maps(x, n_components=0))
    add("project_maps(n_components=1.5)", lambda: course.project_maps(x, n_components=1.5))
    add("project_maps(None)", lambda: course.project_maps(None))
    add("project_maps(str)", lambda: course.project_maps("maps"))
    add("project_maps(NaN)", lambda: course.project_maps(x * NAN))

    for snapshots in (None, [], "logger", [{"epoch": 0}]):
        add(f"plot_maps_across_epochs({snapshots!r})",
            lambda snapshots=snapshots: course.plot_maps_across_epochs(snapshots, "c1"))
    for label, bad in {"NaN": _image(NAN), "None": None, "str": "x", "2-D": np.zeros((4, 4))}.items():
        add(f"FeatureMapLogger(images={label})", lambda bad=bad: course.FeatureMapLogger(bad))
    add("FeatureMapLogger(ncols=0)", lambda: course.FeatureMapLogger(image, ncols=0))

    # Issue 23's classes: options that were not checked, models the tools cannot explain, and
    # values that gave silently wrong results.
    for value in [(99, 1), (5, 5), (1,), "ab", (1, 200), (-1, 50), None, (np.nan, 99), 50]:
        add(f"normalize_maps(robust, percentiles={value!r})",
            lambda value=value: course.normalize_maps(maps, "robust", value))
    for value in ("nope", 3, None, ["gray"]):
        add(f"plot_feature_maps(cmap={value!r})", lambda value=value: course.plot_feature_maps(maps, cmap=value))
        add(f"plot_filters(cmap={value!r})", lambda value=value: course.plot_filters(model, "c1", cmap=value))
        add(f"plot_overlay(cmap={value!r})", lambda value=value: course.plot_overlay(image, heat, cmap=value))
    for value in ("x", 3, Path("ax"), np.zeros(2)):
        add(f"plot_feature_maps(ax={value!r})", lambda value=value: course.plot_feature_maps(maps, ax=value))
        add(f"plot_filters(ax={value!r})", lambda value=value: course.plot_filters(model, "c1", ax=value))
        add(f"plot_overlay(ax={value!r})", lambda value=value: course.plot_overlay(image, heat, ax=value))
        add(f"plot_class_activation(ax={value!r})",
            lambda value=value: course.plot_class_activation(np.ones((3, 4)), ax=value))
    a_file = Path(__file__)
    for value in (3, "", a_file, b"maps"):
        add(f"extract_feature_maps(out_dir={value!r})",
            lambda value=value: course.extract_feature_maps(model, image, "c1", out_dir=value))
    for value in (["c1", "c2"], ("c1",)):
        add(f"grad_cam(layer={value!r})", lambda value=value: course.grad_cam(model, image, value))
        add(f"score_model(layer={value!r})", lambda value=value: course.score_model(model, value))
        add(f"find_layer({value!r})", lambda value=value: course.find_layer(model, value))
        add(f"maximize_activation(layer={value!r})",
            lambda value=value: course.maximize_activation(model, value, 0, steps=2))
    explorer = course.explore(model)
    for value in (["nope", 0], ["c1"], ["c1", "a"], ["c1", -1], ["c1", 1.5], "c1"):
        add(f"explore().selected = {value!r}", lambda value=value: setattr(explorer, "selected", value))
    masked_image = np.ma.masked_greater(image, 0.5)
    masked_maps = np.ma.masked_greater(maps, 0.5)
    add("extract_feature_maps(masked images)", lambda: course.extract_feature_maps(model, masked_image))
    add("grad_cam(masked image)", lambda: course.grad_cam(model, masked_image))
    add("saliency_map(masked image)", lambda: course.saliency_map(model, masked_image))
    for fn in ("normalize_maps", "plot_feature_maps", "dead_filters", "top_channels", "activation_stats"):
        add(f"{fn}(masked maps)", lambda fn=fn: getattr(course, fn)(masked_maps))
    beyond = np.full((12, 12, 1), 1e39)
    huge = np.full((12, 12, 1), 3e38, np.float32)
    add("extract_feature_maps(float64 beyond float32)", lambda: course.extract_feature_maps(model, beyond))
    add("grad_cam(float64 beyond float32)", lambda: course.grad_cam(model, beyond))
    add("saliency_map(float64 beyond float32)", lambda: course.saliency_map(model, beyond))
    add("extract_feature_maps(maps that overflow)", lambda: course.extract_feature_maps(model, huge))
    segmenter = keras.Sequential([keras.Input((12, 12, 1)), keras.layers.Conv2D(2, 3, name="seg")])
    add("grad_cam(a model returning maps)", lambda: course.grad_cam(segmenter, image, "seg"))
    add("saliency_map(a model returning maps)", lambda: course.saliency_map(segmenter, image))
    add("score_model(a model returning maps)", lambda: course.score_model(segmenter))
    first = keras.Sequential([keras.Input((1, 12, 12)), keras.layers.Conv2D(2, 3, data_format="channels_first",
                                                                             name="cf")])
    cf_image = np.zeros((1, 12, 12), np.float32)
    for fn, call in {"extract_feature_maps": lambda: course.extract_feature_maps(first, cf_image),
                     "grad_cam": lambda: course.grad_cam(first, cf_image, "cf"),
                     "saliency_map": lambda: course.saliency_map(first, cf_image),
                     "plot_filters": lambda: course.plot_filters(first, "cf"),
                     "explore": lambda: course.explore(first)}.items():
        add(f"{fn}(a channels_first model)", call)
    any_size = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(2, 3, name="v")])
    add("maximize_activation(any-size model, no start)",
        lambda: course.maximize_activation(any_size, "v", 0, steps=2))
    add("explore(any-size model, no images)", lambda: course.explore(any_size))

    # Issue 22: a model with an image and a vector input takes a dict or a list of both.
    pixels, vector = keras.Input((12, 12, 1), name="pixels"), keras.Input((3,), name="vector")
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="mc")(pixels)), vector])
    two = keras.Model({"pixels": pixels, "vector": vector}, keras.layers.Dense(2)(merged), name="two")
    vec = np.zeros((1, 3), np.float32)
    wrong_inputs = {"one array": image, "a dict without 'vector'": {"pixels": image},
                    "a dict with an unknown key": {"pixels": image, "vector": vec, "extra": vec},
                    "a list of 1": [image], "a list of 3": [image, vec, vec], "None": None,
                    "vector of another size": {"pixels": image, "vector": np.zeros((1, 4))},
                    "vectors for another batch": {"pixels": batch, "vector": np.zeros((3, 3))},
                    "NaN vector": {"pixels": image, "vector": vec * NAN},
                    "str vector": {"pixels": image, "vector": "v"}}
    for label, bad in wrong_inputs.items():
        add(f"extract_feature_maps(two inputs, {label})", lambda bad=bad: course.extract_feature_maps(two, bad))
        add(f"grad_cam(two inputs, {label})", lambda bad=bad: course.grad_cam(two, bad, "mc"))
        add(f"saliency_map(two inputs, {label})", lambda bad=bad: course.saliency_map(two, bad))
    add("grad_cam(two inputs, a batch of 2)",
        lambda: course.grad_cam(two, {"pixels": batch, "vector": np.zeros((2, 3))}, "mc"))
    add("maximize_activation(two inputs, no start)", lambda: course.maximize_activation(two, "mc", 0, steps=2))
    add("explore(two inputs, no images)", lambda: course.explore(two))
    a, b = keras.Input((3,)), keras.Input((2,))
    vectors_only = keras.Model([a, b], keras.layers.Concatenate()([a, b]), name="vectors_only")
    add("conv_layer_names(two inputs, none an image)", lambda: course.conv_layer_names(vectors_only))
    return calls


def outcome(fn) -> tuple[str, str]:
    """``(kind, message)``: kind is "own" (a CourseError), "package" (another error raised by
    the package's own code), "raw" (an error raised inside a dependency) or "none"."""
    try:
        fn()
    except course.CourseError as exc:
        return "own", str(exc)
    except Exception as exc:  # the tally: what escapes, and from where
        frames = traceback.extract_tb(exc.__traceback__)
        package = str(Path(course.__file__).parent)
        where = frames[-1].filename if frames else ""
        kind = "package" if where.startswith(package) else "raw"
        return kind, f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
    return "none", ""


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    tally: dict[str, list[str]] = {"own": [], "package": [], "raw": [], "none": []}
    for name, fn in bad_calls():
        kind, message = outcome(fn)
        tally[kind].append(f"{name}: {message}")
    total = sum(len(v) for v in tally.values())
    print(f"{total} bad calls: {len(tally['own'])} the package's own error, {len(tally['package'])} another "
          f"error from the package, {len(tally['raw'])} a raw dependency error, {len(tally['none'])} no error")
    for kind in ("raw", "none", "package"):
        for line in tally[kind]:
            print(f"  [{kind}] {line}")
