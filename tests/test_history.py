"""Run history: one row per finished run, listing and filters, runs as baselines and report sources."""

from __future__ import annotations

import json
import sqlite3

import pytest

from robustbench_lite import cli, history


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_EVAL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake(model="m", dataset="digits", suites=("clean",), acc=0.9) -> dict:
    return {"schema_version": 1, "model": model, "dataset": dataset, "n_examples": 10, "seed": 0,
            "suites": list(suites), "checkpoint": {"path": "/x.pt"}, "clean": {"accuracy": acc}, "config": {},
            "environment": {}, "timings": {}}


def test_record_list_filter_get(home):
    assert history.list_runs() == []
    a = history.record(fake("shufflenetv2", acc=0.8))
    b = history.record(fake("mobilenetv3_small", "fashion-mnist", ("clean", "corruptions")), json_path="r.json")
    assert (a, b) == (1, 2) and history.db_path() == home / "history.sqlite"
    assert [r.id for r in history.list_runs()] == [2, 1]  # newest first
    assert [r.id for r in history.list_runs(model="shuffle*")] == [1]
    assert [r.id for r in history.list_runs(dataset="fashion-mnist")] == [2]
    assert [r.id for r in history.list_runs(suite="corruptions")] == [2]
    assert [r.id for r in history.list_runs(limit=1)] == [2]
    r = history.list_runs(model="shuffle*")[0]
    assert r.headline["clean accuracy"] == [0.8, "fraction"] and r.suites == ["clean"]
    assert history.get(1)["clean"]["accuracy"] == 0.8
    assert history.load_results("run:2")[1] == "run:2" and history.load_results("2")[0]["model"] == "mobilenetv3_small"
    with pytest.raises(history.RobustEvalError, match="no run 9 in the history"):
        history.get(9)


def test_failed_insert_leaves_no_row(home):
    history.record(fake())
    bad = fake()
    bad["clean"]["accuracy"] = float("nan")  # not JSON: refused before the transaction commits
    with pytest.raises(ValueError):
        history.record(bad)
    with sqlite3.connect(history.db_path()) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1


def test_cli_runs_are_recorded_listed_and_used_as_baselines(digits_checkpoint, home, tmp_path, capsys, monkeypatch):
    args = ["--checkpoint", str(digits_checkpoint), "--suite", "clean", "--limit", "40", "--no-progress"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "history: run 1" in out
    code, out, err = run(capsys, *args, "--gate", "clean.accuracy >= baseline", "--baseline", "run:1")
    assert code == 0, err
    code, out, err = run(capsys, *args, "--gate", "clean.accuracy > baseline + 0.5", "--baseline", "1")
    assert code == 1 and "failed" in err
    code, out, err = run(capsys, *args, "--no-history")
    assert code == 0 and "history:" not in out

    code, out, err = run(capsys, "history")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["id", "date", "model", "dataset"] and len(lines) == 4  # header + 3 runs
    assert lines[1].split()[0] == "3" and "1 failed" in lines[1] and "pass" in lines[2] and "clean accuracy" in lines[1]
    code, out, _ = run(capsys, "history", "--model", "resnet*")
    assert code == 0 and "no runs match model resnet*" in out
    code, out, _ = run(capsys, "history", "--suite", "clean", "--limit", "1")
    assert len(out.strip().splitlines()) == 2
    code, out, _ = run(capsys, "history", "--show", "3")
    assert code == 0 and json.loads(out)["gates"]["failed"] == 1
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--baseline", "run:42", "--gate",
                       "clean.accuracy >= baseline")
    assert code == 2 and "no run 42" in err

    # An interrupted run leaves no row.
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("robustbench_lite.api.evaluate", interrupted)
    code, _, err = run(capsys, *args)
    assert code == 130
    assert [r.id for r in history.list_runs()] == [3, 2, 1]
