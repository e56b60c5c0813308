"""The README's "Evaluate your own model" examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def example(kind: str) -> str:
    """The code block right after ``<!-- readme-example: KIND -->``."""
    match = re.search(rf"<!-- readme-example: {kind} -->\s*```\w+\n(.*?)```", README.read_text(), re.S)
    assert match, f"README has no '{kind}' example"
    return match.group(1)


def test_python_example_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = example("python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    run = namespace["run"]
    assert run.n_examples == 500 and run.suites.keys() == {"clean", "corruptions"}
    assert 0 <= run["corruptions.mean_accuracy"] <= 1
    report = (tmp_path / "my-model.html").read_text()
    assert "Corruptions" in report and "Model" in report


@pytest.mark.slow
def test_cli_example_runs_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    script = example("cli").replace("python -c", f"{sys.executable} -c")
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "onnx.html").is_file()
    assert "onnx model, run in onnxruntime" in (tmp_path / "onnx.html").read_text()
    assert "crafted on the surrogate" in done.stderr


def test_statistics_example_runs_as_written(capsys):
    exec(compile(example("statistics"), "README.md", "exec"), {})  # noqa: S102 - the README's own example
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("(0.892") and lines[1] == "3461" and lines[2].startswith("0.0054")
    assert lines[3].startswith("0.75 (")
