"""``python -m course``: the course's command line.

    python -m course run [--layer NAME ...] [--index I] [--out DIR]   the main job
    python -m course train [--retrain]                                train (or load) the model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import course
from course import _paths


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
    return parser


def _save(fig, path: Path, written: list[Path]) -> None:
    fig.savefig(path, dpi=110)
    written.append(path)


def run(layers: list[str] | None, index: int, out: Path) -> dict:
    """The main job; returns the summary it writes."""
    (_, _), (x_test, y_test) = course.load_mnist()
    if not 0 <= index < len(x_test):
        raise course.CourseError(
            f"--index {index} is out of range: the test set has images 0..{len(x_test) - 1}."
        )
    model = course.load_or_train_model()
    start = time.perf_counter()
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    layers = layers or course.conv_layer_names(model)[:2]
    image = x_test[index]
    maps = course.extract_feature_maps(model, image, layers)
    prediction = int(model(image[None], training=False).numpy().argmax())
    sample = course.extract_feature_maps(model, x_test[:1000], layers)

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
            f"{len(dead)} {dead if dead else ''}, strongest here: {info['strongest_channels_for_this_image']}"
        )
    print(f"Wrote {len(summary['figures'])} figures and summary.json to {out}/")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            out = args.out or _paths.build_dir()
            _print_summary(run(args.layer, args.index, out), out)
        elif args.command == "train":
            course.load_or_train_model(retrain=args.retrain)
            meta = course.read_metadata()
            print(f"Model cached at {course.model.default_model_path()}; test accuracy "
                  f"{meta['test_accuracy']:.2%}, trained in {meta['train_seconds']:.0f} s.")
    except course.CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
