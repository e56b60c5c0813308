"""Adversarial suite: CLI flags and JSON shape, sweeps and curves, determinism, masking checks, one-line errors."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from scipy.integrate import trapezoid
from torch import nn

import attacks
from robustbench_lite import cli, data
from robustbench_lite.api import evaluate
from robustbench_lite.config import RunConfig
from robustbench_lite.sources import checkpoints
from robustbench_lite.suites.adversarial import AdversarialResult, AdversarialSuite, _curve, eps_key, result_key
from robustbench_lite.suites.base import EvalContext

pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def base_args(checkpoint, limit: int) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--dataset", "digits", "--suite", "adversarial",
            "--limit", str(limit), "--no-progress"]


def test_defaults_through_the_cli(digits_checkpoint, tmp_path, capsys):
    path = tmp_path / "out.json"
    code, out, err = run(capsys, *base_args(digits_checkpoint, 64), "--json", str(path))
    assert code == 0, err
    adv = json.loads(path.read_text())["adversarial"]
    eps = data.default_eps("digits", "Linf")
    assert [(r["attack"], r["norm"], r["eps"], r["steps"]) for r in adv["results"]] == [
        ("fgsm", "Linf", eps, 1), ("pgd", "Linf", eps, 10)]
    net, _ = checkpoints.load_checkpoint(str(digits_checkpoint))
    test = data.load("digits", "test").limit(64)
    with torch.inference_mode():
        assert adv["clean_accuracy"] == float((net(test.float_images()).argmax(1) == test.labels).float().mean())
    for r in adv["results"]:
        assert 0 <= r["robust_accuracy"] <= adv["clean_accuracy"] <= 1
        assert r["attack_success_rate"] is None or 0 <= r["attack_success_rate"] <= 1
        # success rate is over the correctly classified images: robust = clean x (1 - success)
        assert r["attack_success_rate"] is not None  # the model gets most digits right
        assert r["robust_accuracy"] == pytest.approx(adv["clean_accuracy"] * (1 - r["attack_success_rate"]))
        assert r["mean_perturbation"] is None or 0 < r["mean_perturbation"] <= eps + 1e-6
        assert adv["robust_accuracy"][r["key"]] == r["robust_accuracy"]
    assert set(adv["robust_accuracy"]) == {"fgsm.Linf[0.1]", "pgd.Linf[0.1]"}
    assert set(adv["worst_case"]) == {"Linf[0.1]"}
    assert adv["worst_case"]["Linf[0.1]"] <= min(adv["robust_accuracy"].values())
    assert adv["curve"] == {} and isinstance(adv["warnings"], list)
    assert set(adv["passes"]) == {"fgsm.Linf", "pgd.Linf", "total"}
    for p in adv["passes"].values():
        assert 0 < p["floor"] <= p["total"] == p["forward"] + p["backward"]
    s = adv["settings"]
    assert s["attacks"] == ["fgsm", "pgd"] and s["norms"] == ["Linf"] and s["eps"] == {"Linf": [eps]}
    assert s["eps_source"].startswith("attacks.default_eps") and s["steps"] == 10 and s["restarts"] == 1
    assert s["alpha"] is None and s["masking_checks"]["images"] == 64
    assert "adversarial" in out and "pgd.Linf[0.1]" in out


def test_eps_sweep_gives_a_non_increasing_curve(digits_checkpoint, tmp_path, capsys):
    path = tmp_path / "out.json"
    code, _, err = run(capsys, *base_args(digits_checkpoint, 64), "--attack", "pgd", "--eps", "0.2,1/255,0.05,0.1",
                       "--steps", "3", "--json", str(path))
    assert code == 0, err
    adv = json.loads(path.read_text())["adversarial"]
    budgets = [1 / 255, 0.05, 0.1, 0.2]
    assert [r["eps"] for r in adv["results"]] == budgets and all(r["steps"] == 3 for r in adv["results"])
    accs = [r["robust_accuracy"] for r in adv["results"]]
    assert accs == sorted(accs, reverse=True) and accs[0] > accs[-1]
    assert list(adv["robust_accuracy"]) == ["pgd.Linf[0.00392157]", "pgd.Linf[0.05]", "pgd.Linf[0.1]", "pgd.Linf[0.2]"]
    curve = adv["curve"]["pgd.Linf"]
    assert curve["eps"] == budgets and curve["robust_accuracy"] == accs
    area = trapezoid([adv["clean_accuracy"], *accs], [0.0, *budgets])
    assert curve["auc"] == pytest.approx(area / budgets[-1]) and 0 <= curve["auc"] <= 1
    assert accs[-1] < curve["auc"] < adv["clean_accuracy"]  # the mean of a falling curve lies between its ends
    m = curve["min_eps"]
    assert m["attacked"] == round(adv["clean_accuracy"] * 64)
    assert sum(m["histogram"]["count"]) + m["histogram"]["not_fooled"] == m["attacked"]
    assert m["fooled"] == sum(m["histogram"]["count"]) and m["histogram"]["eps"] == budgets
    assert m["median"] is None or m["median"] in budgets
    per = m["per_image"]
    assert per["indices"] == list(range(64)) and len(per["min_eps"]) == 64
    # an image first fooled at eps counts as not robust from eps on
    for j, e in enumerate(budgets):
        fooled_by_e = sum(v is not None and 0 < v <= e for v in per["min_eps"])
        assert accs[j] == pytest.approx((m["attacked"] - fooled_by_e) / 64)


def test_curve_of_a_hand_made_evaluation():
    # 4 images over budgets 0.1 and 0.3: #0 misclassified, #1 fooled at 0.1, #2 at 0.3, #3 never fooled
    nan = math.nan
    ev = attacks.AttackEvaluation(
        attack="pgd", norm="Linf", eps=(0.1, 0.3), clean_correct=torch.tensor([False, True, True, True]),
        fooled=torch.tensor([[False, False], [True, True], [False, True], [False, False]]),
        min_eps=torch.tensor([0.0, 0.1, 0.3, nan], dtype=torch.float64), linf=torch.zeros(4), l2=torch.zeros(4),
        forward_passes=0, backward_passes=0, floor_passes=0, robust_accuracy=(0.5, 0.25),
        attack_success_rate=(1 / 3, 2 / 3), mean_perturbation=(nan, nan), seconds=0.0)
    curve = _curve(ev, torch.tensor([10, 11, 12, 13]))
    # by hand: accuracy 0.75, 0.5, 0.25 at eps 0, 0.1, 0.3: (0.1 * 0.625 + 0.2 * 0.375) / 0.3
    assert curve.auc == pytest.approx(0.1375 / 0.3, abs=1e-15)
    assert curve.auc == pytest.approx(trapezoid([0.75, 0.5, 0.25], [0.0, 0.1, 0.3]) / 0.3, abs=1e-15)
    assert curve.eps == [0.1, 0.3] and curve.robust_accuracy == [0.5, 0.25]
    m = curve.min_eps
    assert (m["attacked"], m["fooled"]) == (3, 2)
    assert m["median"] == 0.3  # of 0.1, 0.3 and never (infinite)
    assert m["histogram"] == {"eps": [0.1, 0.3], "count": [1, 1], "not_fooled": 1}
    assert m["per_image"] == {"indices": [10, 11, 12, 13], "min_eps": [0.0, 0.1, 0.3, None]}


def _run(checkpoint, batch_size: int, **options):
    config = RunConfig(checkpoint=str(checkpoint), dataset="digits", suites=["adversarial"], limit=80,
                       batch_size=batch_size, show_progress=False, suite_options={"adversarial": options})
    result = evaluate(config, log=lambda m: None).suites["adversarial"]
    assert isinstance(result, AdversarialResult)
    out = result.to_dict()
    for p in out["passes"].values():
        p.pop("seconds", None)
    out["settings"].pop("batch_size")
    return out


@pytest.mark.slow
def test_same_seed_same_numbers_whatever_the_batch_size(digits_checkpoint):
    options = {"attack": ["fgsm", "pgd"], "eps": [2 / 255, 0.1], "steps": 3}  # YAML-style values
    small, large, again = (_run(digits_checkpoint, bs, **options) for bs in (16, 80, 80))
    assert large == again
    # Backward passes spent on images the same forward had just shown fooled depend on batching; the rest does not.
    floors = [{k: (p["forward"], p["floor"]) for k, p in r.pop("passes").items()} for r in (small, large)]
    assert floors[0] == floors[1]
    # Decisions must agree exactly; perturbation norms only to float precision (conv kernels vary with batch shape).
    perts = [[r.pop("mean_perturbation") for r in out["results"]] for out in (small, large)]
    assert perts[0] == pytest.approx(perts[1], rel=1e-5, nan_ok=True)
    assert small == large
    assert len(large["results"]) == 4 and set(large["curve"]) == {"fgsm.Linf", "pgd.Linf"}


def test_yaml_config_values_and_the_command_line_wins(digits_checkpoint, tmp_path, capsys):
    config = tmp_path / "adv.yaml"
    config.write_text("attack: pgd\neps: [0.05, 0.1]\nsteps: 4\nrestarts: 2\n")
    path = tmp_path / "out.json"
    code, _, err = run(capsys, *base_args(digits_checkpoint, 16), "--config", str(config), "--steps", "2",
                       "--json", str(path))
    assert code == 0, err
    r = json.loads(path.read_text())
    assert r["config"]["suite_options"]["adversarial"] == {"attack": ["pgd"], "eps": [0.05, 0.1], "steps": 2,
                                                           "restarts": 2}
    assert [(e["key"], e["steps"], e["restarts"]) for e in r["adversarial"]["results"]] == [
        ("pgd.Linf[0.05]", 2, 2), ("pgd.Linf[0.1]", 2, 2)]


def test_l2_and_a_torchattacks_attack(digits_checkpoint):
    pytest.importorskip("torchattacks")
    out = _run(digits_checkpoint, 64, attack="fgsm,torchattacks:PGDL2", norm="l2", steps=2)
    eps = data.default_eps("digits", "L2")
    assert set(out["robust_accuracy"]) == {result_key("fgsm", "L2", eps), result_key("torchattacks:PGDL2", "L2", eps)}
    ta = next(r for r in out["results"] if r["attack"] == "torchattacks:PGDL2")
    assert ta["norm"] == "L2" and ta["eps"] == eps and ta["steps"] == 2
    assert ta["mean_perturbation"] is None or ta["mean_perturbation"] <= eps * (1 + 1e-5)
    assert out["settings"]["attack_params"]["L2"]["torchattacks:PGDL2"] == {"norm": "L2", "steps": 2}


class Saturated(nn.Module):
    """Logits x1000: softmax saturates and input gradients underflow to exactly zero (gradient masking)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 1000 * self.inner(x)


def test_masking_checks_reuse_fgsm_and_pgd_and_flag_zero_gradients(digits_checkpoint, monkeypatch):
    net, meta = checkpoints.load_checkpoint(str(digits_checkpoint))
    dataset = data.load("digits", "test").limit(60)
    config = RunConfig(dataset="digits", batch_size=64, show_progress=False,
                       suite_options={"adversarial": {"steps": 2}})
    ctx = EvalContext(model=Saturated(net).eval(), dataset=dataset, config=config, device=torch.device("cpu"),
                      meta=meta, log=lambda m: None)
    calls = []
    real = attacks.gradient_masking_checks

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(attacks, "gradient_masking_checks", spy)
    result = AdversarialSuite().run(ctx)
    assert len(calls) == 1 and calls[0]["fgsm_result"] is not None and calls[0]["pgd_result"] is not None
    assert any("all-zero input gradient" in w for w in result.warnings), result.warnings
    assert all("\n" not in w for w in result.warnings)
    assert result.summary()["warnings"] == len(result.warnings)


@pytest.mark.parametrize("argv, needle", [
    (["--eps", "-0.1"], "must be > 0"),
    (["--eps", "2"], "is 2 > 1 for Linf"),
    (["--eps", "1/0"], "divides by zero"),
    (["--steps", "0"], "--steps must be an integer >= 1, got 0"),
    (["--restarts", "0"], "--restarts must be an integer >= 1"),
    (["--alpha", "fast"], "--alpha must be a positive step size"),
    (["--attack", "pgdd"], "unknown attack 'pgdd'. Did you mean 'pgd'?"),
    (["--attack", "fgsm", "--steps", "5"], "--steps does not apply to fgsm"),
    (["--norm", "L3"], "unknown norm 'L3'; valid norms: Linf, L2"),
    (["--norm", "Linf,L2", "--eps", "0.1"], "ambiguous with several norms"),
    (["--norm", "L2", "--eps", "9"], "larger than any L2 perturbation"),
])
def test_bad_input_is_one_line_and_exit_2(digits_checkpoint, capsys, argv, needle):
    code, _, err = run(capsys, *base_args(digits_checkpoint, 8), *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robust-eval: error:"), err
    assert needle in lines[0]


def test_missing_torchattacks_is_one_line_and_exit_2(digits_checkpoint, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # import fails as if not installed
    code, _, err = run(capsys, *base_args(digits_checkpoint, 8), "--attack", "torchattacks:APGD")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "pip install" in lines[0] and "torchattacks" in lines[0], err


def test_flags_on_the_cli_and_only_set_ones_become_options():
    parser = cli.eval_parser()
    assert AdversarialSuite.Options.from_args(parser.parse_args([])).to_dict() == {}
    args = parser.parse_args(["--attack", "pgd", "--eps", "1/255,2/255", "--steps", "5"])
    assert AdversarialSuite.Options.from_args(args).to_dict() == {"attack": ["pgd"], "eps": [1 / 255, 2 / 255],
                                                                  "steps": 5}
    text = parser.format_help()
    for flag in ("--attack", "--norm", "--eps", "--steps", "--alpha", "--restarts"):
        assert flag in text


def test_eps_key_format():
    assert [eps_key(e) for e in (0.1, 8 / 255, 1.5, 2.0, 1e-5)] == ["0.1", "0.0313725", "1.5", "2", "1e-05"]
    assert result_key("pgd", "Linf", 8 / 255) == "pgd.Linf[0.0313725]"
