"""Transfer attacks (``--surrogate``): a model without gradients (ONNX Runtime) attacked through a surrogate.

The key property: with the very network an ONNX file was exported from as the surrogate, the
transfer attack is the white-box attack (same seed, same robust accuracy, up to ONNX Runtime's
float differences); a different surrogate is weaker. Decisions are always the target's.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustbench_lite import cli, gates, models
from robustbench_lite.api import evaluate
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.results import EvaluationResult
from robustbench_lite.sources import Transfer, checkpoints
from robustbench_lite.suites.adversarial import TRANSFER_SKIPS_CHECKS, AdversarialResult

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

LIMIT = 100
ATTACKS = {"attack": "fgsm,pgd"}


pytestmark = pytest.mark.usefixtures("one_thread")


class _Pool16(nn.Module):
    """Takes 16x16 images and hands the 8x8 network a 2x2-pooled copy (an ONNX graph at another input size)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(nn.functional.avg_pool2d(x, 2))


def _export(net: nn.Module, path, side: int) -> None:
    torch.onnx.export(net.eval(), torch.rand(2, 1, side, side), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "b"}})


@pytest.fixture(scope="module")
def files(digits_checkpoint, tmp_path_factory):
    """The digits network as ONNX (8x8 and behind a 16x16 input), a 16x16 TorchScript twin, and bad surrogates."""
    out = tmp_path_factory.mktemp("transfer")
    net, _ = checkpoints.load_checkpoint(str(digits_checkpoint))
    net.eval()
    _export(net, out / "digits.onnx", 8)
    _export(_Pool16(net), out / "digits16.onnx", 16)
    torch.jit.trace(_Pool16(net).eval(), torch.rand(2, 1, 16, 16)).save(str(out / "digits16_ts.pt"))
    torch.manual_seed(0)
    for name, classes in (("random.pt", 10), ("three.pt", 3)):
        fresh = models.build("shufflenetv2_x0_5", num_classes=classes, in_channels=1, input_size=8).eval()
        meta = checkpoints.architecture_meta(fresh, "shufflenetv2_x0_5", classes, 8, False)
        checkpoints.save_checkpoint(out / name, fresh, {**meta, "dataset": "digits"})
        if classes == 3:
            torch.save(fresh.state_dict(), out / "weights_only.pt")
            torch.jit.trace(fresh, torch.rand(2, 1, 8, 8)).save(str(out / "three_ts.pt"))  # says no class count
    return out


def _run(model, **options) -> EvaluationResult:
    return evaluate(model, "digits", "adversarial", limit=LIMIT, **ATTACKS, **options)


def _adversarial(model, **options) -> AdversarialResult:
    return _run(model, **options).suites["adversarial"]


# ---------------------------------------------------------------------------------------------
# The key property


@pytest.mark.slow
def test_cli_transfer_from_the_exported_network_equals_white_box(digits_checkpoint, files, tmp_path, capsys):
    white, transfer = tmp_path / "white.json", tmp_path / "transfer.json"
    common = ["--dataset", "digits", "--suite", "adversarial", "--attack", "fgsm,pgd", "--eps", "0.05,0.1",
              "--limit", str(LIMIT), "--no-progress"]
    assert cli.main(["--checkpoint", str(digits_checkpoint), *common, "--json", str(white)]) == 0
    capsys.readouterr()
    code = cli.main(["--checkpoint", str(files / "digits.onnx"), "--surrogate", str(digits_checkpoint), *common,
                     "--json", str(transfer), "--html", str(tmp_path / "report.html")])
    out, err = capsys.readouterr()
    assert code == 0, err
    a, b = (json.loads(p.read_text())["adversarial"] for p in (white, transfer))
    assert b["clean_accuracy"] == pytest.approx(a["clean_accuracy"])
    # ONNX Runtime and PyTorch differ in the last float bits: allow one image either way, per budget.
    for key, value in a["robust_accuracy"].items():
        assert abs(b["robust_accuracy"][key] - value) <= 1 / LIMIT + 1e-9, key
    for key, value in a["worst_case"].items():
        assert abs(b["worst_case"][key] - value) <= 1 / LIMIT + 1e-9, key
    for key, curve in a["curve"].items():
        fooled = [e is not None for e in curve["min_eps"]["per_image"]["min_eps"]]
        theirs = [e is not None for e in b["curve"][key]["min_eps"]["per_image"]["min_eps"]]
        assert sum(x != y for x, y in zip(fooled, theirs, strict=True)) <= 1, key
    assert b["settings"]["transfer_from"] == str(digits_checkpoint) and "transfer_from" not in a["settings"]
    assert b["settings"]["masking_checks"]["skipped"] == TRANSFER_SKIPS_CHECKS
    assert "skipped" not in a["settings"]["masking_checks"]
    # visible: the console line, the report section, the example grid
    (line,) = [s for s in out.splitlines() if s.strip().startswith("adversarial ")]
    assert line.rsplit("[", 1)[0].rstrip().endswith(f"transferred from {digits_checkpoint.name}")
    html = (tmp_path / "report.html").read_text()
    assert f"Transfer attacks: crafted on the gradients of the surrogate {digits_checkpoint.name}" in html
    assert "zero-gradient checks skipped" in html and "raised no warning" not in html
    rows = json.loads(transfer.read_text())["examples"]["rows"]
    (pgd,) = [r for r in rows if r["kind"] == "adversarial"]
    assert pgd["transfer_from"] == digits_checkpoint.name and "(transfer)" in pgd["title"]


def test_a_different_surrogate_transfers_weaker_and_is_labelled(digits_checkpoint, files):
    white = _adversarial(str(digits_checkpoint))
    run = _run(str(files / "digits.onnx"), surrogate=str(files / "random.pt"))
    weak = run.suites["adversarial"]
    assert weak.clean_accuracy == pytest.approx(white.clean_accuracy)  # decisions are the target's
    for key, value in white.robust_accuracy.items():
        assert weak.robust_accuracy[key] >= value, key
    assert weak.robust_accuracy["pgd.Linf[0.1]"] >= white.robust_accuracy["pgd.Linf[0.1]"] + 0.1
    assert weak.settings["transfer_from"] == str(files / "random.pt")
    assert weak.summary()["transferred from"] == "random.pt"
    # scorecard, comparison and history label transfer numbers apart from white-box ones
    (head,) = [h for h in gates.headline(run.to_dict()) if h.suite == "adversarial"]
    assert head.label == "transfer robust acc Linf 0.1 (all attacks)" and head.value == weak.worst_case["Linf[0.1]"]
    (white_head,) = [h for h in gates.headline(_run(str(digits_checkpoint)).to_dict()) if h.suite == "adversarial"]
    assert white_head.label == "robust acc Linf 0.1 (all attacks)"


@pytest.mark.slow
def test_a_target_at_another_input_size_keeps_the_surrogate_path(digits_checkpoint, files):
    """The ONNX graph takes 16x16 (the adapter resizes the 8x8 digits); each surrogate gets the images it takes."""
    onnx16 = str(files / "digits16.onnx")
    # a robust-eval checkpoint normalises inside: the model's --input-size is not passed on to it
    plain = _adversarial(onnx16, input_size=16, surrogate=str(digits_checkpoint))
    assert plain.settings["transfer_from"] == str(digits_checkpoint)
    assert plain.robust_accuracy["pgd.Linf[0.1]"] < plain.clean_accuracy  # it transfers: the networks agree
    # a TorchScript twin that says nothing about its input takes the model's 16x16 and equals white-box on itself
    twin = str(files / "digits16_ts.pt")
    white = _adversarial(twin, input_size=16)
    transfer = _adversarial(onnx16, surrogate=twin)  # the ONNX file itself says 16x16
    assert transfer.clean_accuracy == pytest.approx(white.clean_accuracy)
    for key, value in white.robust_accuracy.items():
        assert abs(transfer.robust_accuracy[key] - value) <= 1 / LIMIT + 1e-9, key


# ---------------------------------------------------------------------------------------------
# The Transfer module


class _Counting(nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(64, 10).to(dtype)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.linear(x.flatten(1).to(self.linear.weight.dtype))


def test_transfer_returns_the_target_and_the_surrogate_gradient_at_the_targets_logits():
    torch.manual_seed(0)
    target = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    surrogate = _Counting()
    model = Transfer(target, surrogate, "s.pt")
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 3, 5, 9])
    with torch.no_grad():
        assert torch.equal(model(x), target(x)) and surrogate.calls == 0  # no gradient asked: target only
    x.requires_grad_(True)
    out = model(x)
    assert torch.equal(out.detach(), target(x).detach()) and surrogate.calls == 1
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(out, y, reduction="sum"), x)
    # d CE / d logits at the target's logits, pulled back through the surrogate's Jacobian
    delta = (target(x).softmax(1) - nn.functional.one_hot(y, 10)).detach()
    expected = (delta @ surrogate.linear.weight).view_as(x)
    torch.testing.assert_close(grad, expected)
    assert model.source == "s.pt" and Transfer(target, surrogate).source == "_Counting"


def test_a_half_precision_surrogate_leaves_the_targets_logits_exact():
    torch.manual_seed(0)
    target = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    model = Transfer(target, _Counting(torch.bfloat16))
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    out = model(x)
    assert out.dtype == torch.float32 and torch.equal(out.detach(), target(x).detach())
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0


def test_a_surrogate_for_other_classes_is_refused_when_attacked():
    model = Transfer(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), nn.Sequential(nn.Flatten(), nn.Linear(64, 3)))
    with pytest.raises(RobustEvalError, match="surrogate returns \\(3,\\) logits"):
        model(torch.rand(2, 1, 8, 8, requires_grad=True))


# ---------------------------------------------------------------------------------------------
# One-line errors and the surrogate outside the adversarial suite


def _error(capsys, *argv) -> str:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, out + err
    (line,) = [s for s in err.splitlines() if "error" in s]
    assert line == err.strip().splitlines()[-1]  # the last line: nothing after it, no traceback
    return line


def test_an_onnx_surrogate_is_refused_before_any_data_is_read(files, capsys):
    # cifar10 is not available offline: reading it would fail with another message
    line = _error(capsys, "--checkpoint", str(files / "digits.onnx"), "--surrogate", str(files / "digits.onnx"),
                  "--dataset", "cifar10", "--suite", "adversarial", "--no-progress")
    assert "--surrogate digits.onnx" in line and "without input gradients" in line and "TorchScript" in line


@pytest.mark.parametrize(("surrogate", "expected"), [
    ("three.pt", "--surrogate three.pt predicts 3 classes but digits has 10"),
    ("weights_only.pt", "--surrogate weights_only.pt holds weights only"),
    ("three_ts.pt", "the surrogate three_ts.pt returns (2, 3) for 2 images but the dataset has 10 classes"),
])
def test_a_wrong_surrogate_is_one_line_before_the_suites(files, capsys, surrogate, expected):
    line = _error(capsys, "--checkpoint", str(files / "digits.onnx"), "--surrogate", str(files / surrogate),
                  "--dataset", "digits", "--suite", "adversarial", "--limit", "8", "--no-progress")
    assert expected in line


def test_without_the_adversarial_suite_the_surrogate_is_unused_with_one_warning(files, tmp_path, capsys):
    path = tmp_path / "out.json"
    code = cli.main(["--checkpoint", str(files / "digits.onnx"), "--surrogate", str(files / "three.pt"),
                     "--dataset", "digits", "--suite", "clean", "--limit", "16", "--no-progress", "--json", str(path),
                     "--html", str(tmp_path / "r.html"), "--examples", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    text = out + err
    # not loaded: the 3-class surrogate would be refused if it were
    assert text.count("warning: --surrogate three.pt is not used") == 1 and "crafted on the surrogate" not in text
    # no gradients, no surrogate: the example grid keeps its other rows and has no attacked one
    rows = json.loads(path.read_text())["examples"]["rows"]
    assert rows and all(r["kind"] != "adversarial" for r in rows) and "grid was left out" not in text
