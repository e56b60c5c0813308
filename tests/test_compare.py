"""robust-eval compare: checkpoints evaluated alike, saved results read back, one table with deltas."""

from __future__ import annotations

import csv
import json

import pytest

from robustbench_lite import cli, compare
from robustbench_lite.config import TrainConfig
from robustbench_lite.training import train
from robustbench_lite.training.defences import DefenceOptions


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def noisy_checkpoint(tmp_path_factory):
    """A second digits model, trained with a defence, so the table has something to compare."""
    out = tmp_path_factory.mktemp("ckpt") / "noise.pt"
    train(TrainConfig(model="shufflenetv2_x0_5", dataset="digits", epochs=4, batch_size=128, lr=1e-2,
                      output=str(out), device="cpu", show_progress=False,
                      defences=DefenceOptions.from_mapping({"defence": "gaussian-noise"})),
          log=lambda m: None)
    return out


def test_compare_checkpoints_one_table_with_deltas(digits_checkpoint, noisy_checkpoint, tmp_path, capsys):
    table_md, all_json = tmp_path / "t.md", tmp_path / "all.json"
    code, out, err = run(capsys, "compare", str(digits_checkpoint), str(noisy_checkpoint),
                         "--suite", "clean,efficiency", "--limit", "120", "-o", str(table_md),
                         "--json", str(all_json), "--no-progress", "--no-history")
    assert code == 0, err
    data = json.loads(all_json.read_text())
    a, b = data["runs"]
    assert a["n_examples"] == b["n_examples"] == 120 and a["suites"] == b["suites"] == ["clean", "efficiency"]
    assert b["checkpoint"]["defence"]["label"] == "gaussian-noise"
    metrics = {m["path"]: m for m in data["comparison"]["metrics"]}
    acc = metrics["clean.accuracy"]
    assert acc["values"] == [a["clean"]["accuracy"], b["clean"]["accuracy"]]
    assert acc["deltas"] == [pytest.approx(b["clean"]["accuracy"] - a["clean"]["accuracy"])]
    assert data["comparison"]["info"]["defence"] == ["standard", "gaussian-noise"]
    text = table_md.read_text()
    assert "| clean accuracy |" in text and "pts)" in text and "gaussian-noise" in text
    assert "clean accuracy" in out and str(table_md.resolve()) in out


def test_compare_reads_results_files_and_writes_csv(digits_checkpoint, tmp_path, capsys):
    paths = []
    for limit in ("100", "200"):
        p = tmp_path / f"r{limit}.json"
        assert run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "clean", "--limit", limit,
                   "--json", str(p), "--no-progress", "--no-history")[0] == 0
        paths.append(p)
    table = tmp_path / "t.csv"
    code, out, err = run(capsys, "compare", *map(str, paths), "-o", str(table), "--labels", "small,large")
    assert code == 0, err
    rows = {r["metric"]: r for r in csv.DictReader(table.open())}
    r100, r200 = (json.loads(p.read_text()) for p in paths)
    assert float(rows["clean accuracy"]["small"]) == pytest.approx(r100["clean"]["accuracy"])
    assert float(rows["clean accuracy"]["delta large"]) == pytest.approx(
        r200["clean"]["accuracy"] - r100["clean"]["accuracy"])
    assert rows["test images"]["small"] == "100" and rows["test images"]["large"] == "200"


@pytest.mark.parametrize(("argv", "needle"), [
    (["missing.pt"], "missing.pt does not exist"),
    (["{ckpt}", "-o", "table.xlsx"], "use a table file ending in"),
    (["{ckpt}", "--labels", "a,b"], "--labels has 2 names for 1 inputs"),
    (["{ckpt}", "--suite", "nope"], "unknown suite 'nope'"),
])
def test_compare_bad_input_exits_2_and_writes_nothing(argv, needle, digits_checkpoint, tmp_path, capsys,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{ckpt}", str(digits_checkpoint)) for a in argv]
    code, out, err = run(capsys, "compare", *argv, "--no-history")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not any(tmp_path.iterdir())


def test_compare_in_a_precision_and_its_refusals_before_any_run(digits_checkpoint, tmp_path, capsys):
    import torch

    from robustbench_lite.sources import checkpoints

    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    onnx_file = tmp_path / "net.onnx"
    torch.onnx.export(net.eval(), torch.rand(1, 1, 8, 8), str(onnx_file), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    table = tmp_path / "t.md"
    # the ONNX file is second: its refusal comes before the first checkpoint is evaluated
    code, _, err = run(capsys, "compare", str(digits_checkpoint), str(onnx_file), "--precision", "bf16",
                       "--suite", "clean", "--limit", "50", "-o", str(table), "--no-history")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--precision bf16 casts a PyTorch model" in err
    assert not table.exists()
    all_json = tmp_path / "all.json"
    code, _, err = run(capsys, "compare", str(digits_checkpoint), "--precision", "bf16", "--inference", "eager",
                       "--suite", "clean", "--limit", "100", "-o", str(table), "--json", str(all_json),
                       "--no-progress", "--no-history")
    assert code == 0, err
    (result,) = json.loads(all_json.read_text())["runs"]
    assert result["inference"]["precision"] == "bf16" and result["inference"]["path"] == "eager"
    assert result["clean"]["precision"] == "bf16" and 0.9 <= result["clean"]["agreement_with_fp32"] <= 1


def test_labels_are_unique_and_deltas_skip_missing_values():
    runs = [{"model": "m", "dataset": "d", "n_examples": 10, "suites": ["clean"], "clean": {"accuracy": 0.5}},
            {"model": "m", "dataset": "d", "n_examples": 10, "suites": ["clean", "efficiency"],
             "clean": {"accuracy": 0.75}, "efficiency": {"latency_ms": 2.0}}]
    table = compare.compare(runs, ["m", "m"])
    assert table.labels == ["m", "m #2"]
    rows = {r.path: r for r in table.rows}
    assert rows["clean.accuracy"].delta(1) == pytest.approx(0.25)
    assert rows["efficiency.latency_ms"].values == [None, 2.0] and rows["efficiency.latency_ms"].delta(1) is None
    assert "+25.0 pts" in table.to_text() and "n/a" in table.to_text()
