"""``python -m course``: the course's command line.

    python -m course run [--layer NAME ...] [--index I] [--out DIR]   the main job
    python -m course train [--retrain]                                train (or load) the model
    python -m course explain [--out DIR] [--no-mobilenet]             a figure of each interpretability tool
    python -m course figures [--out DIR] [--index I]                  the README's figures (docs/figures)
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

import course  # lazy: --help and argument errors never import TensorFlow, numpy or matplotlib
from course import _paths
from course.console import Progress, quiet_tensorflow, writable_folder

#: Exit codes: 0 done, 2 a bad argument (nothing was done), 3 could not run (data, disk, ...).
USAGE, COULD_NOT_RUN = 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m course",
        description="Seeing inside a CNN: train the MNIST CNN and draw its feature maps.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="load or train the model, report its accuracy, draw feature maps and filters",
        description="The main job: load MNIST, load the cached model (or train it, about a "
        "minute on 2 cores), report its test accuracy, extract the conv layers' feature maps "
        "for one test digit, and write figures and a summary under --out.",
    )
    run.add_argument(
        "--layer", action="append", metavar="NAME",
        help="a layer to draw (repeatable); default the first two conv layers",
    )
    run.add_argument("--index", type=int, default=0, help="which test image to look at (default 0)")
    run.add_argument(
        "--out", type=Path, default=None, help="output folder (default build/ in the project)"
    )
    train = commands.add_parser("train", help="train the model and cache it under models/")
    train.add_argument("--retrain", action="store_true", help="train even if a valid cache exists")
    explain_cmd = commands.add_parser(
        "explain",
        help="draw a figure of each interpretability tool (saliency, Grad-CAM, ...) under build/",
        description="Beyond feature maps: saliency and SmoothGrad, Grad-CAM, every conv filter's "
        "preferred image, maps and filters across a short training run (with TensorBoard logs), "
        "per-class activations, top-activating and misclassified digits, a PCA of the maps, and "
        "MobileNetV2 on a photo. About a minute on 2 cores with the cached model.",
    )
    explain_cmd.add_argument(
        "--out", type=Path, default=None, help="output folder (default build/explain in the project)"
    )
    explain_cmd.add_argument(
        "--no-mobilenet", action="store_true", help="skip the MobileNetV2 photo figures"
    )
    figures_cmd = commands.add_parser(
        "figures",
        help="draw the README's figures (small PNGs) into docs/figures",
        description="The figures the README shows, drawn at the size they are shown (880 pixels "
        "wide): one digit's first- and second-layer feature maps, the first layer's kernels and "
        "Grad-CAM on a few digits. A few seconds with the cached model.",
    )
    figures_cmd.add_argument(
        "--out", type=Path, default=None, help="output folder (default docs/figures in the project)"
    )
    figures_cmd.add_argument("--index", type=int, default=0, help="which test image to show (default 0)")
    return parser


def _save(fig, path: Path, written: list[Path]) -> None:
    fig.savefig(path, dpi=110)
    written.append(path)


def run(layers: list[str] | None, index: int, out: Path, progress: Progress | None = None) -> dict:
    """The main job; returns the summary it writes."""
    progress = progress or Progress(enabled=False)
    progress("loading MNIST")
    (_, _), (x_test, y_test) = course.load_mnist()
    if not 0 <= index < len(x_test):
        raise course.CourseError(
            f"--index {index} is out of range: the test set has images 0..{len(x_test) - 1}."
        )
    progress("loading TensorFlow and the cached model (or training it, about a minute)")
    model = course.load_or_train_model()
    start = time.perf_counter()
    progress("measuring test accuracy on 10,000 digits")
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    layers = layers or course.conv_layer_names(model)[:2]
    progress(f"extracting the feature maps of {', '.join(layers)}")
    image = x_test[index]
    maps = course.extract_feature_maps(model, image, layers)
    prediction = int(model(image[None], training=False).numpy().argmax())
    sample = course.extract_feature_maps(model, x_test[:1000], layers)

    progress(f"drawing the figures into {out}/")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, layer_maps in maps.items():
        fig = course.plot_feature_maps(
            layer_maps[0], title=f"'{name}' feature maps of test digit #{index} (label {y_test[index]})"
        )
        _save(fig, out / f"feature_maps_{name.replace('/', '_')}.png", written)
    _save(course.compare_layers(model, image, layers), out / "compare_layers.png", written)
    for name in layers:
        if name in course.conv_layer_names(model):
            _save(course.plot_filters(model, name), out / f"filters_{name.replace('/', '_')}.png", written)

    summary = {
        "test_accuracy": round(float(accuracy), 4),
        "image_index": index,
        "label": int(y_test[index]),
        "prediction": prediction,
        "layers": {
            name: {
                "shape": list(maps[name].shape[1:]),
                "dead_filters_over_1000_test_images": course.dead_filters(sample[name]).tolist(),
                "strongest_channels_for_this_image": course.top_channels(maps[name], 5).tolist(),
            }
            for name in layers
        },
        "figures": [p.name for p in written],
        "seconds_after_loading": round(time.perf_counter() - start, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print_summary(summary: dict, out: Path) -> None:
    print(f"Test accuracy: {summary['test_accuracy']:.2%}")
    print(
        f"Test digit #{summary['image_index']}: label {summary['label']}, "
        f"predicted {summary['prediction']}"
    )
    for name, info in summary["layers"].items():
        dead = info["dead_filters_over_1000_test_images"]
        print(
            f"  {name}: maps {tuple(info['shape'])}, dead filters over 1,000 test images: "
            f"{len(dead)}{f' {dead}' if dead else ''}, strongest here: {info['strongest_channels_for_this_image']}"
        )
    print(f"Wrote {len(summary['figures'])} figures and summary.json to {out}/")


def _explain_mobilenet(out: Path, written: list[Path]) -> dict:
    """MobileNetV2 on matplotlib's sample photo: feature maps of three layers and Grad-CAM."""
    import numpy as np
    from matplotlib.figure import Figure

    model, pretrained, note = course.load_mobilenet_v2()
    photo = course.sample_photo(224)
    image = course.mobilenet_input(photo)
    every = course.feature_map_layer_names(model)
    start = time.perf_counter()
    maps = course.extract_feature_maps(model, image, every)  # every map layer, one pass
    seconds = time.perf_counter() - start
    shown = [every[0], "block_6_expand_relu", every[-1]]
    fig = Figure(figsize=(18, 7.5), layout="constrained")
    panels = fig.subfigures(1, len(shown) + 1, width_ratios=[1.6, 3, 3, 3])
    ax = panels[0].add_subplot()
    ax.imshow(photo)
    ax.set_axis_off()
    ax.set_title("matplotlib's sample photo\n(224x224)", fontsize=9)
    for panel, name in zip(panels[1:], shown):
        one = maps[name][0]
        course.plot_feature_maps(
            one, ncols=int(np.ceil(np.sqrt(one.shape[-1]))), ax=panel.add_subplot(), labels=False,
            title=f"'{name}': {one.shape[-1]} maps of {one.shape[0]}x{one.shape[1]}",
        )
    fig.suptitle(textwrap.fill(f"MobileNetV2: {len(every)} feature-map layers extracted in one pass "
                               f"({seconds:.2f} s). {note}", 170), fontsize=10,
                 color="black" if pretrained else "darkred")
    _save(fig, out / "mobilenet_maps.png", written)
    cam = course.grad_cam(model, image)
    fig = course.plot_overlay(photo, cam, title=f"MobileNetV2 Grad-CAM ('{course.last_conv_layer(model)}')"
                              + ("" if pretrained else "\nRANDOM weights: no learned meaning"))
    _save(fig, out / "mobilenet_grad_cam.png", written)
    return {
        "pretrained": pretrained,
        "note": note,
        "feature_map_layers": len(every),
        "channels_in_all_maps": int(sum(m.shape[-1] for m in maps.values())),
        "seconds_to_extract_every_layer": round(seconds, 2),
    }


def explain(out: Path, mobilenet: bool = True, progress: Progress | None = None) -> dict:
    """A figure of each interpretability tool; returns the summary it writes."""
    progress = progress or Progress(enabled=False)
    progress("loading MNIST, TensorFlow and the cached model")
    import keras
    import numpy as np
    from matplotlib.figure import Figure

    (x_train, y_train), (x_test, y_test) = course.load_mnist()
    model = course.load_or_train_model()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    digits = [int(np.flatnonzero(y_test == label)[0]) for label in range(10)][:8]
    summary: dict = {}

    progress("saliency and SmoothGrad of 4 digits")
    fig = course.plot_saliency_examples(model, x_test[digits[:4]],
                                        [f"test #{i} (label {y_test[i]})" for i in digits[:4]], smooth_samples=30)
    _save(fig, out / "saliency.png", written)

    progress("Grad-CAM of 8 digits at both conv layers")
    fig = course.plot_grad_cam_examples(
        model, x_test[digits], [f"#{i}" for i in digits],
        title="Grad-CAM of the predicted class: the last conv layer (bottom) is the usual choice")
    _save(fig, out / "grad_cam.png", written)

    progress("activation maximization: the preferred image of every conv1 and conv2 filter")
    start = time.perf_counter()
    _save(course.plot_preferred_images(model), out / "preferred_images.png", written)
    summary["activation_maximization_seconds"] = round(time.perf_counter() - start, 1)

    progress("maps and filters across a 3-epoch training run, with TensorBoard logs")
    keras.utils.set_random_seed(0)
    fresh = course.build_model("watched_cnn")
    fresh.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    logger = course.FeatureMapLogger(x_test[digits[:2]], ["conv1", "conv2"], log_dir=out / "tensorboard")
    history = fresh.fit(x_train[:3000], y_train[:3000], epochs=3, batch_size=64, verbose=0, callbacks=[logger])
    _save(course.plot_maps_across_epochs(logger, "conv1"), out / "maps_across_epochs.png", written)
    _save(course.plot_maps_across_epochs(logger, "conv1", kind="filters"), out / "filters_across_epochs.png", written)
    summary["across_epochs_accuracy"] = [round(float(a), 3) for a in history.history["accuracy"]]

    progress("class-level analysis of 2,000 test digits: per-class means, top digits, mistakes, PCA")
    x, y = x_test[:2000], y_test[:2000]
    table = course.mean_activation_by_class(model, x, y, "conv2")
    _save(course.plot_class_activation(table, "conv2"), out / "class_activation.png", written)
    # The most class-selective channel among those that are not weak: best class's mean / overall mean.
    overall = np.nanmean(table, axis=0)
    channel = int(np.argmax(np.where(overall >= np.median(overall), np.nanmax(table, axis=0) / overall, 0.0)))
    top, values = course.top_activating_images(model, x, "conv2", channel, k=8)
    fig = course.plot_examples(x[top], [f"#{i} ({y[i]}) {v:.2f}" for i, v in zip(top, values)],
                               title=f"the 8 test digits that excite 'conv2' channel {channel} most "
                               "(its most class-selective channel)")
    _save(fig, out / "top_activating.png", written)
    wrong = course.misclassified(model, x, y)
    _save(course.plot_misclassified(wrong, x, count=4), out / "misclassified.png", written)
    fig = Figure(figsize=(11, 4.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    for ax, data, what in ((left, x, "pixels"), (right, course.extract_feature_maps(model, x, "conv2")["conv2"], "'conv2' maps")):
        coords, explained = course.project_maps(data)
        course.plot_projection(coords, y, explained, title=f"PCA of the {what}", ax=ax)
    _save(fig, out / "projection.png", written)
    summary |= {
        "selective_conv2_channel": channel,
        "misclassified_of_2000": int(len(wrong["indices"])),
    }

    if mobilenet:
        progress("MobileNetV2 on a photo: every feature-map layer and Grad-CAM")
        summary["mobilenet"] = _explain_mobilenet(out, written)
    summary["figures"] = [p.name for p in written]
    summary["tensorboard_logs"] = str(out / "tensorboard")
    (out / "explain_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


README_WIDTH = 8.8  # inches: 880 pixels at 100 dpi, shown unscaled in a README


def figures(out: Path, index: int = 0, progress: Progress | None = None) -> list[Path]:
    """The README's figures: small PNGs drawn at the size a README shows them.

    Args:
        out: The folder to write into (created if needed).
        index: The test digit whose feature maps are drawn.

    Returns:
        The paths written.
    """
    progress = progress or Progress(enabled=False)
    progress("loading MNIST, TensorFlow and the cached model")
    import numpy as np
    from matplotlib.figure import Figure

    (_, _), (x_test, y_test) = course.load_mnist()
    if not 0 <= index < len(x_test):
        raise course.CourseError(
            f"--index {index} is out of range: the test set has images 0..{len(x_test) - 1}."
        )
    model = course.load_or_train_model()
    image, label = x_test[index], int(y_test[index])
    progress(f"drawing 4 figures into {out}/")
    maps = course.extract_feature_maps(model, image, ["conv1", "conv2"])
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.savefig(out / name, dpi=100, bbox_inches="tight", pad_inches=0.05)
        written.append(out / name)

    def describe(name: str) -> str:
        height, width, count = maps[name][0].shape
        return f"'{name}': {count} maps of {height}x{width}, each scaled to its own range"

    fig = Figure(figsize=(README_WIDTH, 3.9), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 4.2])
    ax = left.add_subplot()
    ax.imshow(image[..., 0], cmap="gray", interpolation="nearest")
    ax.set_title(f"test digit #{index}: a {label}", fontsize=10)
    ax.set_axis_off()
    course.plot_feature_maps(maps["conv1"][0], ncols=8, ax=right.add_subplot(), title=describe("conv1"))
    save(fig, "first_layer_maps.png")

    fig = Figure(figsize=(README_WIDTH, 2.6), layout="constrained")
    course.plot_feature_maps(maps["conv2"][0], ncols=16, ax=fig.add_subplot(),
                             title=describe("conv2") + ", same digit")
    save(fig, "second_layer_maps.png")

    save(course.plot_filters(model, "conv1"), "conv1_filters.png")

    # Grad-CAM on the first test digit of several classes (skipping all-zero heatmaps), one colorbar.
    layer = course.last_conv_layer(model)
    firsts = (int(np.flatnonzero(y_test == digit)[0]) for digit in range(10))
    shown = [f for f in firsts if course.grad_cam(model, x_test[f], layer).max() > 0][:5]
    fig = course.plot_grad_cam_examples(
        model, x_test[shown], [f"test #{i}: a {y_test[i]}" for i in shown], [layer], colorbar=True,
        figsize=(README_WIDTH, 2.3), title=f"Grad-CAM at '{layer}': where the predicted class's score comes from")
    save(fig, "grad_cam.png")
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 2 bad argument, 3 could not run)."""
    args = _parser().parse_args(argv)
    quiet_tensorflow()
    progress = Progress()
    try:
        if args.command == "run":
            out = writable_folder(args.out or _paths.build_dir())
            _print_summary(run(args.layer, args.index, out, progress), out)
        elif args.command == "train":
            progress("loading MNIST and TensorFlow")
            course.load_or_train_model(retrain=args.retrain)
            meta = course.read_metadata()
            print(f"Model cached at {course.model.default_model_path()}; test accuracy "
                  f"{meta['test_accuracy']:.2%}, trained in {meta['train_seconds']:.0f} s.")
        elif args.command == "explain":
            out = writable_folder(args.out or _paths.build_dir() / "explain")
            summary = explain(out, mobilenet=not args.no_mobilenet, progress=progress)
            if "mobilenet" in summary:
                print(summary["mobilenet"]["note"])
            print(f"Wrote {len(summary['figures'])} figures to {out}/ and TensorBoard logs to "
                  f"{summary['tensorboard_logs']} (view: tensorboard --logdir {summary['tensorboard_logs']})")
        elif args.command == "figures":
            out = writable_folder(args.out or _paths.base() / "docs" / "figures")
            written = figures(out, args.index, progress)
            print(f"Wrote {len(written)} figures to {out}/: " + ", ".join(p.name for p in written))
    except course.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return COULD_NOT_RUN
    except course.CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE
    except OSError as exc:  # a full disk, a folder removed while writing: not the user's argument
        print(f"error: could not write {exc.filename or 'the output'}: {exc.strerror or exc}; "
              "free some space or choose another --out.", file=sys.stderr)
        return COULD_NOT_RUN
    except KeyboardInterrupt:
        print("interrupted: nothing more was written.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
