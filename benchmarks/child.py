"""Measurements that need a fresh process; each prints one JSON line.

    python -m benchmarks.child stream --way ours|baseline --images N --size S [--out DIR]
    python -m benchmarks.child train course|seed ... [--images N] [--epochs E]
    python -m benchmarks.child plot --maps N --out PNG
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import resource
import time
from pathlib import Path


def _peak_rss_gb() -> float:
    """This process's peak resident memory, in GB.

    ``/proc/self/status`` VmHWM belongs to this program image. ``ru_maxrss`` is no good
    here: Linux carries it over from the parent through fork and exec, so a child of a big
    benchmark process would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        line = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024 / 1e9  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def stream(way: str, images: int, size: int, out: str | None) -> dict:
    """VGG16's block1_conv2 maps: streamed to ``out`` (ours) or one ``predict`` (baseline)."""
    import keras
    import numpy as np

    import course

    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    x = np.random.default_rng(0).random((images, size, size, 3), dtype=np.float32)
    before = _peak_rss_gb()
    start = time.perf_counter()
    if way == "ours":
        maps = course.extract_feature_maps(vgg, x, "block1_conv2", out_dir=out)["block1_conv2"]
    else:
        maps = keras.Model(vgg.inputs, vgg.get_layer("block1_conv2").output).predict(x, verbose=0)
    seconds = time.perf_counter() - start
    peak = _peak_rss_gb()
    check = course.extract_feature_maps(vgg, x[:2], "block1_conv2")["block1_conv2"]
    return {
        "seconds": seconds,
        "peak_rss_gb": peak,
        "rss_before_gb": before,
        "shape": list(maps.shape),
        "first_maps_match": bool(np.allclose(maps[:2], check, rtol=1e-4, atol=1e-5)),
    }


def train(recipes: list[str], images: int | None, epochs: int | None) -> dict:
    """Train with each named recipe in turn; time, test accuracy and a hash of the weights."""
    import numpy as np

    import course

    (x_train, y_train), (x_test, y_test) = course.load_mnist()
    if images:
        x_train, y_train = x_train[:images], y_train[:images]
    runs = []
    for name in recipes:
        recipe = course.Recipe() if name == "course" else course.SEED_RECIPE
        if epochs:
            recipe = dataclasses.replace(recipe, epochs=epochs)
        start, cpu = time.perf_counter(), time.process_time()
        model, _ = course.train_model(x_train, y_train, recipe, verbose=0)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        _, accuracy = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
        digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in model.get_weights()))
        trained_on = len(x_train) - int(len(x_train) * recipe.validation_split)
        runs.append(
            {
                "recipe": name,
                "settings": dataclasses.asdict(recipe),
                "seconds": seconds,
                "cpu_seconds": cpu,
                "test_accuracy": float(accuracy),
                "weights_sha256": digest.hexdigest(),
                "images_per_second": trained_on * recipe.epochs / seconds,
            }
        )
    return {"runs": runs}


def plot(maps: int, out: str) -> dict:
    """``plot_feature_maps`` of ``maps`` 14x14 maps and a default ``savefig``: the first call of a
    new process (what a script pays beyond importing the package's plotting), then the second."""
    import numpy as np

    import course

    start = time.perf_counter()
    course.plot_feature_maps  # noqa: B018 (`import course` is lazy: this imports matplotlib's figure)
    imports = time.perf_counter() - start
    values = np.maximum(np.random.default_rng(0).standard_normal((14, 14, maps)), 0).astype(np.float32)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        course.plot_feature_maps(values, ncols=32).savefig(out)
        seconds.append(time.perf_counter() - start)
    return {"first_seconds": seconds[0], "second_seconds": seconds[1], "import_seconds": imports,
            "png_bytes": Path(out).stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("stream")
    one.add_argument("--way", choices=["ours", "baseline"], required=True)
    one.add_argument("--images", type=int, required=True)
    one.add_argument("--size", type=int, required=True)
    one.add_argument("--out")
    two = commands.add_parser("train")
    two.add_argument("recipes", nargs="+", choices=["course", "seed"])
    two.add_argument("--images", type=int)
    two.add_argument("--epochs", type=int)
    three = commands.add_parser("plot")
    three.add_argument("--maps", type=int, required=True)
    three.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "stream":
        answer = stream(args.way, args.images, args.size, args.out)
    elif args.command == "plot":
        answer = plot(args.maps, args.out)
    else:
        answer = train(args.recipes, args.images, args.epochs)
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
