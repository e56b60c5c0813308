"""--records as a user meets it: beside the JSON, pointed to and checked, pairing gates; and robust-eval plan."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from robustbench_lite import cli, gates, outputs, records, statistics
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.files import sha256_file
from robustbench_lite.results import EvaluationResult

FOG = ["--suite", "clean,corruptions", "--corruptions", "fog", "--severities", "1", "--limit", "100",
       "--no-progress", "--no-history"]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_records_are_written_before_the_json_and_round_trip(digits_checkpoint, tmp_path, capsys, monkeypatch):
    kept = {}
    real = outputs.write_records

    def spy(result, path):  # the run's in-memory records, to compare with the file
        kept["records"] = result.records
        return real(result, path)

    monkeypatch.setattr(outputs, "write_records", spy)
    npz, out_json = tmp_path / "deep" / "r.npz", tmp_path / "r.json"
    code, out, err = run(capsys, "--checkpoint", str(digits_checkpoint), *FOG, "--records", str(npz),
                         "--json", str(out_json))
    assert code == 0, err
    half = 100 * statistics.wilson_half_width(0.9, 100)
    assert (f"100 images: a 95% interval on an accuracy near 90% is about +-{half:.1f} points "
            "(robust-eval plan --margin 0.01") in err
    data = json.loads(out_json.read_text())
    loaded = records.load(npz)
    assert data["records"] == {"path": str(npz.resolve()), "sha256": sha256_file(npz), "conditions": len(loaded)}
    assert f"records: {npz.resolve()}" in out and npz.stat().st_mtime_ns <= out_json.stat().st_mtime_ns
    # the file is the run's records, array for array
    mem = kept["records"]
    assert list(loaded.conditions) == list(mem.conditions) and len(loaded) >= 4
    for name, s in mem.image_sets.items():
        assert np.array_equal(loaded.image_sets[name].indices, s.indices)
        assert np.array_equal(loaded.image_sets[name].labels, s.labels)
    for cond in mem:
        for field in ("correct", "predicted", "weights", "min_eps", "broken_by"):
            a, b = getattr(cond, field), getattr(loaded[cond.path], field)
            assert (a is None and b is None) or (np.array_equal(a, b) and a.dtype == b.dtype), (cond.path, field)
    # every condition recomputes its number in the JSON
    paths = gates.metric_paths(data)
    for cond in loaded:  # (the suites sum in float32)
        assert loaded.accuracy(cond.path) == pytest.approx(paths[cond.path], abs=1e-6), cond.path
    assert {"clean.accuracy", "corruptions.clean_accuracy", "corruptions.accuracy.fog.1"} <= set(loaded.conditions)
    assert records.load_records_for(data, str(out_json))[0] is not None


def tiny_result() -> EvaluationResult:
    rec = records.Records()
    rec.add_images("test", np.arange(5), np.array([0, 1, 0, 1, 1]))
    rec.add("clean.accuracy", predicted=[0, 1, 1, 1, 0])
    return EvaluationResult(model="m", dataset="digits", n_examples=5, seed=0, config={}, environment={},
                            records=rec)


def test_a_records_write_failure_warns_and_keeps_the_json(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    bad = blocker / "r.npz"
    with pytest.raises(RobustEvalError, match="its folder cannot be created.*is a file"):
        records.check_path(bad)  # what the CLI refuses before any work
    out_json = tmp_path / "r.json"
    outputs.write(tiny_result(), outputs.OutputSpec(json=str(out_json), records=str(bad), history=False))
    out, err = capsys.readouterr()
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and f"could not be written to {bad}" in warning[0]
    data = json.loads(out_json.read_text())  # the completed run is not thrown away
    assert "records" not in data and data["model"] == "m"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "r.json"]


@pytest.mark.parametrize("name, needle", [("r.json", "pass a path ending in .npz"), ("folder.npz", "is a folder"),
                                          ("f.txt/r.npz", "is a file")])
def test_a_bad_records_path_exits_2_before_any_work(digits_checkpoint, tmp_path, capsys, name, needle):
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "f.txt").write_text("x")
    before = sorted(tmp_path.iterdir())
    code, out, err = run(capsys, "--checkpoint", str(digits_checkpoint), *FOG, "--records", str(tmp_path / name),
                         "--json", str(tmp_path / "o.json"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robust-eval: error: --records") and needle in err
    assert sorted(tmp_path.iterdir()) == before  # nothing evaluated, nothing written


def test_load_records_for_finds_moved_files_and_refuses_changed_ones(tmp_path):
    result = tiny_result()
    first = tmp_path / "a" / "r.npz"
    assert outputs.write_records(result, first) == first.resolve()
    data = result.to_dict()
    got, why = records.load_records_for(data, None)
    assert why == "" and got.accuracy("clean.accuracy") == pytest.approx(0.6)
    moved = tmp_path / "b"
    moved.mkdir()
    first.rename(moved / "r.npz")  # results and records moved together: found beside the JSON
    assert records.load_records_for(data, None)[0] is None and "missing" in records.load_records_for(data, None)[1]
    assert records.load_records_for(data, str(moved / "r.json"))[0] is not None
    relative = {**data, "records": {**data["records"], "path": "r.npz"}}
    assert records.load_records_for(relative, str(moved / "r.json"))[0] is not None
    other = tiny_result()
    other.records.add("clean.accuracy", predicted=[0, 0, 0, 0, 0])
    other.records.save(moved / "r.npz")  # the file changed since the run
    got, why = records.load_records_for(data, str(moved / "r.json"))
    assert got is None and "changed since the run" in why
    assert records.load_records_for({"model": "m"}, None) == (None, "the results hold no per-image records "
                                                                   "(run with --records PATH)")


def test_baseline_gates_pair_runs_through_their_records(digits_checkpoint, tmp_path, capsys):
    base, mine = tmp_path / "base.json", tmp_path / "mine.json"
    code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), *FOG, "--records", str(tmp_path / "base.npz"),
                       "--json", str(base))
    assert code == 0, err
    # another seed draws other fog: the same images, some predictions change
    gate = "corruptions.accuracy.fog.1 >= baseline - 0.5"
    code, out, err = run(capsys, "--checkpoint", str(digits_checkpoint), *FOG, "--seed", "1", "--json", str(mine),
                         "--records", str(tmp_path / "mine.npz"), "--baseline", str(base), "--gate", gate,
                         "--gate", "corruptions.mean_accuracy >= baseline - 0.5", "--gate-mode", "strict",
                         "--junit", str(tmp_path / "j.xml"))
    assert code == 0, err
    cell, mean = json.loads(mine.read_text())["gates"]["results"]
    assert cell["test"] == "mcnemar" and 0 <= cell["p_value"] <= 1 and cell["decided_by"] == "paired ci_low"
    assert mean["test"] == "paired bootstrap" and "paired, same images" in mean["note"]
    assert "McNemar" in out and "strict mode" in out
    case = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase/system-out").text
    assert "[" in case and "McNemar" in case
    # the same gate on the saved results, records found through the JSONs
    code, out, err = run(capsys, "gate", str(mine), "--baseline", str(base), "--gate", gate, "--gate-mode", "lenient")
    assert code == 0 and "McNemar" in out, err
    (tmp_path / "base.npz").unlink()  # the baseline's records are gone: said, and each run's own interval decides
    code, out, err = run(capsys, "gate", str(mine), "--baseline", str(base), "--gate", gate, "--gate-mode", "strict")
    assert code == 0 and "not paired with the baseline" in out and "missing" in out, err


def test_plan_prints_the_images_a_margin_needs(capsys):
    code, out, err = run(capsys, "plan", "--margin", "0.01", "--accuracy", "0.9")
    assert code == 0, err
    assert f"{statistics.sample_size(0.01, 0.9):,} test images at an accuracy near 90%" in out
    assert f"{statistics.sample_size(0.01, 0.5):,} test images at 50%" in out
    for m in (0.005, 0.02, 0.05):  # the short table
        assert f"{statistics.sample_size(m, 0.9):,}" in out and f"{statistics.sample_size(m, 0.5):,}" in out
    code, out, _ = run(capsys, "plan", "--margin", "2%")
    assert code == 0 and f"{statistics.sample_size(0.02, 0.9):,} test images" in out


@pytest.mark.parametrize("argv, needle", [(["--margin", "0.7"], "--margin 0.7: the half-width"),
                                          (["--margin", "0"], "--margin 0:"),
                                          (["--margin", "0.01", "--accuracy", "1.5"], "--accuracy 1.5")])
def test_plan_bad_values_exit_2_with_one_line(capsys, argv, needle):
    code, out, err = run(capsys, "plan", *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robust-eval: error:") and needle in lines[0]
    assert out == ""
