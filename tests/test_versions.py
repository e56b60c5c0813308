"""The version floors are the versions CI tests: pyproject's floors equal constraints/minimum.txt's pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _floors() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in ("dev", "onnx", "timm", "imagecorruptions"):
        specs += project["optional-dependencies"][extra]
    floors = {}
    for spec in specs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", spec.strip())
        if m:
            floors[_name(m[1])] = m[2]
    return floors


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "minimum.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_name(name)] = version
    return pins


def test_every_floor_is_the_version_the_minimum_job_installs():
    from packaging.version import Version

    floors, pins = _floors(), _pins()
    untested = sorted(set(floors) - set(pins) - {"ruff", "imagecorruptions", "torchattacks"})
    assert not untested, f"floors no minimum job tests: {untested}; pin them in constraints/minimum.txt"
    assert not sorted(set(pins) - set(floors)), "a pin without a floor in pyproject.toml"
    differ = {n: (floors[n], pins[n]) for n in pins if Version(floors[n]) != Version(pins[n])}
    assert not differ, f"pyproject floor != tested minimum: {differ}"
