"""Timing, isolated child processes, and the table of results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    """One benchmark item: ours against the naive baseline, and the goal.

    ``ours`` and ``baseline`` are in ``unit``; ``ratio`` is baseline / ours (how many times
    better ours is); ``measured`` is the number the goal is about (shown as ``shown``),
    ``goal`` says how it is judged, and ``met`` is the verdict (None: not measured). ``why``
    says, for a goal that is missed, what this run measured that keeps it out of reach and what
    was tried (printed under the table).
    """

    name: str
    unit: str
    ours: float | None
    baseline: float | None
    baseline_name: str
    goal: str
    measured: float | None
    shown: str
    met: bool | None
    details: dict = field(default_factory=dict)
    why: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.ours or self.baseline is None:
            return None
        return self.baseline / self.ours

    def as_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio}


def interleaved(functions: dict, repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each call, alternating between the functions so drift hits all alike.

    Args:
        functions: ``{name: zero-argument callable}``.
        repeat: Timed calls of each.
        warmup: Untimed calls of each first (tracing, caches).

    Returns:
        ``{name: [seconds, ...]}``.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    times = {name: [] for name in functions}
    for _ in range(repeat):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return times


def run_child(*args: str, timeout: float = 1800) -> dict:
    """Run ``python -m benchmarks.child <args>`` in a fresh process; return its JSON answer.

    A fresh process gives an honest peak RSS and keeps process-wide TensorFlow settings
    (op determinism) out of the other measurements.
    """
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise RuntimeError(f"child {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1])


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s" and value < 1:
        return f"{value * 1000:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "GB":
        return f"{value:.2f} GB"
    return f"{value:.4g} {unit}"


def format_table(rows: list[Row], quick: bool = False) -> str:
    """The results as an aligned text table, one line per item (verdicts marked in quick mode)."""
    header = ("item", "ours", "baseline", "ratio", "goal", "measured", "result")
    lines = [
        (
            row.name,
            _number(row.ours, row.unit),
            f"{_number(row.baseline, row.unit)} ({row.baseline_name})",
            "-" if row.ratio is None else f"{row.ratio:.1f}x",
            row.goal,
            row.shown,
            {True: "met", False: "MISSED", None: "not measured"}[row.met] + (" (quick)" if quick else ""),
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    render = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    missed = list(dict.fromkeys(f"MISSED {row.name}: {row.why}" for row in rows if row.met is False and row.why))
    return "\n".join([render(header), render(["-" * w for w in widths]), *map(render, lines), *missed])


def write_json(rows: list[Row], path: Path, extra: dict) -> None:
    """Write the rows (and run information) as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = extra | {"rows": [row.as_dict() for row in rows]}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
