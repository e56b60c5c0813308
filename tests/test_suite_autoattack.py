"""`--attack autoattack` end to end: the ensemble on a checkpoint, TorchScript and (gradient-free) ONNX."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from masked_models import InputRounded

from robustbench_lite import cli
from robustbench_lite.sources import checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("aa")
    net, _ = checkpoints.load_checkpoint(str(digits_checkpoint))
    net.eval()
    torch.jit.trace(net, torch.rand(2, 1, 8, 8)).save(str(out / "digits_ts.pt"))
    torch.onnx.export(net, torch.rand(2, 1, 8, 8), str(out / "digits.onnx"), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "b"}})
    return {"checkpoint": digits_checkpoint, "torchscript": out / "digits_ts.pt", "onnx": out / "digits.onnx"}


def run(capsys, tmp_path, model, *flags) -> tuple[int, dict, str]:
    out = tmp_path / "r.json"
    out.unlink(missing_ok=True)
    code = cli.main(["--checkpoint", str(model), "--dataset", "digits", "--suite", "adversarial", "--limit", "80",
                     "--json", str(out), "--no-history", "--no-progress", *flags])
    err = capsys.readouterr().err
    return code, json.loads(out.read_text())["adversarial"] if out.exists() else {}, err


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["checkpoint", "torchscript"])
def test_autoattack_is_at_least_as_strong_as_pgd_and_says_who_broke_each_image(files, tmp_path, capsys, kind):
    html = tmp_path / "r.html"
    code, block, _ = run(capsys, tmp_path, files[kind], "--attack", "pgd,autoattack", "--steps", "10",
                         "--queries", "300", "--eps", "0.05", "--html", str(html))
    assert code == 0
    robust = {r["attack"]: r["robust_accuracy"] for r in block["results"]}
    assert robust["autoattack"] <= robust["pgd"]
    ensemble = block["settings"]["ensembles"]["autoattack"]
    assert ensemble == {"components": ["apgd-ce", "apgd-t", "square"], "left_out": ["fab-t"]}
    per_image = block["broken_by"]["autoattack.Linf"]
    assert len(per_image["indices"]) == len(per_image["component"]) == 80
    assert set(per_image["component"]) <= {None, *ensemble["components"]}
    counts = next(r["broken_by"] for r in block["results"] if r["attack"] == "autoattack")
    fooled = round((block["clean_accuracy"] - robust["autoattack"]) * 80)
    assert sum(counts.values()) == fooled == sum(c is not None for c in per_image["component"])
    assert "Which attack broke the images" in html.read_text()


def test_a_model_without_gradients_gets_the_score_based_part(files, tmp_path, capsys):
    code, block, _ = run(capsys, tmp_path, files["onnx"], "--attack", "autoattack,square", "--eps", "0.05",
                           "--queries", "300")
    assert code == 0
    assert block["settings"]["ensembles"]["autoattack"] == {"components": ["square"],
                                                            "left_out": ["apgd-ce", "apgd-t", "fab-t"]}
    assert set(block["broken_by"]["autoattack.Linf"]["component"]) <= {None, "square"}
    assert "no input gradients" in block["settings"]["masking_checks"]["skipped"]
    robust = {r["attack"]: r["robust_accuracy"] for r in block["results"]}
    assert robust["autoattack"] == robust["square"] < block["clean_accuracy"]  # the same Square, same seeds

    code, block, err = run(capsys, tmp_path, files["onnx"], "--attack", "pgd,square")
    assert code == 2 and not block
    assert err.count("\n") == 1 and "pgd needs input gradients" in err and "--attack square" in err


@pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None, reason="torchattacks not installed")
def test_torchattacks_autoattack_says_what_it_is(files, tmp_path, capsys):
    code, block, _ = run(capsys, tmp_path, files["checkpoint"], "--attack", "torchattacks:AutoAttack", "--limit", "16")
    assert code == 0
    assert any("not AutoAttack" in w and "'autoattack'" in w for w in block["warnings"])


@pytest.mark.slow
def test_masked_gradients_are_caught_by_square(digits_checkpoint, tmp_path):
    import robustbench_lite

    net, _ = checkpoints.load_checkpoint(str(digits_checkpoint))
    run = robustbench_lite.evaluate(InputRounded(net.eval(), 7), "digits", suites=["adversarial"], limit=100,
                                    attack="pgd,square", queries=300, eps=0.1)
    robust = {r.attack: r.robust_accuracy for r in run.suites["adversarial"].results}
    assert robust["pgd"] > robust["square"] + 0.3, robust  # PGD sees no gradient; Square does not need one
    warnings = run.suites["adversarial"].warnings
    assert any("Square (score-based) leaves" in w and "masking" in w for w in warnings), warnings
    assert any("all-zero input gradient" in w for w in warnings)
    assert "Square (score-based) leaves" in run.write_html(tmp_path / "r.html").read_text()
