"""``python -m benchmarks [--quick] [--only ITEM ...]``: run the benchmarks, print the table
and write it to ``build/benchmarks.json``."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

from benchmarks import items  # noqa: E402
from benchmarks.harness import format_table, write_json  # noqa: E402


def cpu_peak() -> dict:
    """The CPU's float32 peak from its SIMD flags, clock and core count.

    Two FMA units per core are assumed for AVX-512 server parts (and for AVX2 ones); a
    fused multiply-add counts as two floating-point operations.
    """
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = next((float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 0.0)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma_units = 2 if "fma" in flags else 1
    cores = len(os.sched_getaffinity(0))
    per_cycle = lanes * 2 * fma_units
    return {
        "cores": cores,
        "ghz": mhz / 1000,
        "simd": "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE",
        "flop_per_cycle_per_core": per_cycle,
        "peak_gflops": cores * mhz / 1000 * per_cycle,
    }


def measured_sgemm_gflops(n: int) -> float:
    """What a large float32 matrix product actually reaches (BLAS on every core)."""
    import numpy as np

    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(3))
    return 2 * n**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def forward_mflop(model) -> float:
    """Multiply-adds x 2 of the model's Conv2D and Dense layers for one image, in MFLOP."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * h * w * kh * kw * cin * cout
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total / 1e6


def throughput_notes(rows, peak: dict, sgemm: float, mflop: float) -> list[str]:
    """Training images/s and GFLOP/s next to the CPU's peak."""
    training = next((row for row in rows if row.name == "training on MNIST"), None)
    if training is None:
        return []
    step = 3 * mflop  # forward, and backward through activations and weights
    lines = [
        f"CPU: {peak['cores']} cores x {peak['ghz']:.2f} GHz x {peak['flop_per_cycle_per_core']} "
        f"float32 FLOP/cycle ({peak['simd']} FMA) = {peak['peak_gflops']:.0f} GFLOP/s peak; "
        f"measured float32 matmul: {sgemm:.0f} GFLOP/s",
        f"model: {mflop:.2f} MFLOP per image forward, ~{step:.1f} MFLOP per image per training step",
    ]
    for key, label in (("ours", "course recipe"), ("seed", "seed recipe")):
        run = training.details[key]
        rate = run["images_per_second"]
        gflops = rate * step / 1000
        lines.append(
            f"{label}: {rate:,.0f} images/s = {gflops:.0f} GFLOP/s = "
            f"{gflops / peak['peak_gflops']:.0%} of peak, {gflops / sgemm:.0%} of matmul "
            f"({run['seconds']:.1f} s wall, {run['cpu_seconds']:.1f} s CPU)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shrink every size (CI smoke run)")
    parser.add_argument("--only", nargs="+", choices=list(items.ITEMS), help="run these items only")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default build/benchmarks.json)")
    args = parser.parse_args(argv)

    import course
    from course import _paths

    sizes = items.QUICK if args.quick else items.FULL
    out = args.out or _paths.build_dir() / "benchmarks.json"
    (_, _), (x_test, _) = course.load_mnist()
    model = course.load_or_train_model()
    started = time.perf_counter()
    rows = []
    for name in args.only or list(items.ITEMS):
        print(f"[{time.perf_counter() - started:6.1f} s] {name}...", file=sys.stderr, flush=True)
        rows += items.ITEMS[name](sizes, model, x_test)
    peak = cpu_peak()
    sgemm = measured_sgemm_gflops(1024 if args.quick else 4096)
    mflop = forward_mflop(model)
    table = format_table(rows, args.quick)
    notes = throughput_notes(rows, peak, sgemm, mflop)
    if args.quick:
        notes.append("QUICK MODE: sizes are shrunk, so the verdicts do not judge the goals.")
    load = os.getloadavg()
    notes.append(f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {peak['cores']} cores")
    print(table)
    print("\n".join(notes))
    info = {
        "quick": args.quick,
        "seconds": time.perf_counter() - started,
        "load_average": load,
        "python": platform.python_version(),
        "cpu": peak,
        "sgemm_gflops": sgemm,
        "model_forward_mflop": mflop,
        "notes": notes,
        "table": table,
    }
    write_json(rows, out, info)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
