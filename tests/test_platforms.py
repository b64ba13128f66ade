"""Where the course installs: ``requirements.txt`` resolved for every platform learners bring.

``uv pip compile --python-platform T --python-version V`` evaluates the file's environment
markers for target T and finds a wheel of every pinned package there, without that machine.
The same list renders the README's "Supported platforms" table, so the two cannot drift.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PYTHONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class Platform:
    """One target: its name for people, uv's name for it and what the course says of it."""

    name: str
    target: str
    supported: bool
    note: str


PLATFORMS = (
    Platform("Linux x86-64", "x86_64-manylinux_2_28", True, "`tensorflow-cpu` (no CUDA download); CI runs here"),
    Platform("Linux aarch64 (ARM)", "aarch64-manylinux_2_28", True, "`tensorflow` (its only 2.21 wheel there; CPU)"),
    Platform("macOS arm64 (Apple silicon)", "aarch64-apple-darwin", True, "`tensorflow` (CPU)"),
    Platform("Windows x86-64", "x86_64-pc-windows-msvc", True,
             "`tensorflow-cpu`; run the commands of [Windows](#windows) in PowerShell, or use WSL"),
    Platform("macOS x86-64 (Intel)", "x86_64-apple-darwin", False,
             "TensorFlow 2.21 ships no wheel for it (its last was 2.16); use Google Colab or a Linux machine"),
    Platform("Windows arm64", "aarch64-pc-windows-msvc", False,
             "TensorFlow ships no wheel for it; use WSL's Linux aarch64"),
)


def readme_table() -> str:
    """The README's "Supported platforms" table, rendered from :data:`PLATFORMS`."""
    rows = ["| platform | Python | TensorFlow build |", "|---|---|---|"]
    for p in PLATFORMS:
        pythons = ", ".join(PYTHONS) if p.supported else "not supported"
        rows.append(f"| {p.name} | {pythons} | {p.note} |")
    return "\n".join(rows)


def compile_for(target: str, python: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "uv", "pip", "compile", str(ROOT / "requirements.txt"), "--quiet",
         "--no-header", "--no-annotate", "--python-platform", target, "--python-version", python,
         # resolve with this interpreter's tags swapped for the target's; never look for or fetch others
         "--python", sys.executable, "--no-python-downloads"],
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def resolutions() -> dict[tuple[str, str], subprocess.CompletedProcess]:
    """Every (target, Python) resolution, a few at a time (uv waits on the registry, not the CPU)."""
    pairs = [(p.target, v) for p in PLATFORMS for v in PYTHONS]
    with ThreadPoolExecutor(6) as pool:
        return dict(zip(pairs, pool.map(lambda pair: compile_for(*pair), pairs)))


def pinned(lock: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, flags=re.M))


@pytest.mark.parametrize("platform", [p for p in PLATFORMS if p.supported], ids=lambda p: p.target)
def test_requirements_resolve_on_every_supported_platform(resolutions, platform):
    for python in PYTHONS:
        result = resolutions[platform.target, python]
        assert result.returncode == 0, f"{platform.name}, Python {python}:\n{result.stderr}"
        lock = pinned(result.stdout)
        # exactly one TensorFlow build, at the pinned version, plus the course's own stack
        builds = {name for name in lock if name in ("tensorflow", "tensorflow-cpu")}
        assert len(builds) == 1 and lock[builds.pop()] == "2.21.0", (platform.target, python, builds)
        for name in ("keras", "numpy", "matplotlib", "nbgrader", "jupyterlab", "pytest"):
            assert name in lock, (platform.target, python, name)


@pytest.mark.parametrize("platform", [p for p in PLATFORMS if not p.supported], ids=lambda p: p.target)
def test_unsupported_platforms_fail_for_the_reason_the_readme_gives(resolutions, platform):
    """When TensorFlow ships a wheel there again, this fails: move the platform to supported."""
    for python in PYTHONS:
        result = resolutions[platform.target, python]
        assert result.returncode != 0, f"{platform.name} now resolves on Python {python}: support it"
        assert "tensorflow" in result.stderr and "Wheels are available" in result.stderr, result.stderr


def test_python_3_14_is_refused_by_the_resolver():
    result = compile_for("x86_64-manylinux_2_28", "3.14")
    assert result.returncode != 0 and "cp314" in result.stderr


def test_readme_table_is_rendered_from_the_same_list():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- platforms:start -->\n(.*?)\n<!-- platforms:end -->", readme, flags=re.S)
    assert block, "README.md lacks the <!-- platforms:start/end --> block"
    assert block.group(1).strip() == readme_table(), "regenerate the table: tests/test_platforms.py readme_table()"


def _requirements(lines: list[str]) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split(" #")[0].strip()
        if line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            found[requirement.name] = requirement
    return found


def test_pyproject_and_environment_yml_carry_the_same_markers():
    """The three install routes name the same packages with the same platform markers."""
    import tomllib

    txt = _requirements((ROOT / "requirements.txt").read_text().splitlines())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    toml = _requirements(project["dependencies"] + [d for group in project["optional-dependencies"].values()
                                                    for d in group if not d.startswith("course[")])
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(d["pip"] for d in conda if isinstance(d, dict))
    yml = _requirements(pip_section)
    for name in ("tensorflow", "tensorflow-cpu"):
        assert str(txt[name].marker) == str(toml[name].marker) == str(yml[name].marker), name
    assert set(toml) == set(txt), set(toml) ^ set(txt)
    for name, requirement in txt.items():
        version = next(iter(requirement.specifier)).version
        assert toml[name].specifier.contains(version), (name, version, toml[name].specifier)
    assert project["requires-python"] == ">=3.11,<3.14"
