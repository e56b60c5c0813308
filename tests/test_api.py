"""The Python front door: robustbench_lite.evaluate(model, data, suites, **options) and what it returns."""

from __future__ import annotations

import json

import pytest
import torch

import robustbench_lite
from robustbench_lite import data
from robustbench_lite.errors import GateFailure, RobustEvalError
from robustbench_lite.sources import checkpoints


@pytest.fixture(scope="module")
def trained(digits_checkpoint):
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    return net


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "test").limit(120)


def test_any_kind_of_data_gives_the_same_numbers(trained, digits):
    images, labels = digits.float_images(), digits.labels
    by_name = robustbench_lite.evaluate(trained, "digits", suites="clean", limit=120)
    by_tensors = robustbench_lite.evaluate(trained, (images, labels, digits.classes), suites=["clean"])
    by_dataset = robustbench_lite.evaluate(trained, torch.utils.data.TensorDataset(images, labels), suites=["clean"])
    by_images = robustbench_lite.evaluate(trained, digits, suites=["clean"])
    accuracies = {r["clean.accuracy"] for r in (by_name, by_tensors, by_dataset, by_images)}
    assert len(accuracies) == 1 and accuracies.pop() > 0.5
    assert by_name.n_examples == by_dataset.n_examples == 120
    assert by_tensors.source["format"] == "module"


def test_file_and_checkpoint_paths_are_models(digits_checkpoint, tmp_path):
    run = robustbench_lite.evaluate(str(digits_checkpoint), "digits", suites=["clean"], limit=60)
    assert run.source["format"] == "checkpoint" and run.model == "shufflenetv2_x0_5"
    with pytest.raises(RobustEvalError, match="does not exist"):
        robustbench_lite.evaluate(str(tmp_path / "missing.onnx"), "digits", suites=["clean"])


def test_suite_options_by_their_cli_names(trained, digits):
    run = robustbench_lite.evaluate(trained, digits, suites=["clean", "corruptions"],
                                    corruptions="gaussian_noise,fog", severities="2,4")
    assert set(run.suites["corruptions"].accuracy) == {"gaussian_noise", "fog"}
    assert run.config["suite_options"]["corruptions"]["severities"] == [2, 4]
    with pytest.raises(RobustEvalError, match=r"unknown option 'severity'.*valid: .*severities"):
        robustbench_lite.evaluate(trained, digits, suites=["clean", "corruptions"], severity=3)
    with pytest.raises(RobustEvalError, match="needs data"):
        robustbench_lite.evaluate(trained, suites=["clean"])


def test_the_result_checks_gates_and_writes_its_outputs(trained, digits, tmp_path):
    run = robustbench_lite.evaluate(trained, digits, suites=["clean"])
    passed = run.check("clean.accuracy >= 0.5")
    assert [o.passed for o in passed] == [True]
    with pytest.raises(GateFailure, match=r"(?s)FAIL  clean.accuracy >= 0.999.*short by"):
        run.check("clean.accuracy >= 0.999")
    with pytest.raises(RobustEvalError, match="clean.acc"):
        run["clean.acc"]
    saved = json.loads(run.write_json(tmp_path / "r.json").read_text())
    assert saved["clean"]["accuracy"] == run["clean.accuracy"] and saved["source"]["format"] == "module"
    assert "<html" in run.write_html(tmp_path / "r.html").read_text()[:300].lower()
    later = robustbench_lite.evaluate(trained, digits, suites=["clean"])
    later.check("clean.accuracy >= baseline - 0.01", baseline=run)  # a run is a baseline for the next


def test_the_input_contract_adapts_an_in_memory_model(trained, digits):
    # A network that expects 16 px RGB input with its own normalisation, given as flags.
    class Expects16pxRgb(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            assert x.shape[1:] == (3, 16, 16), x.shape
            grey = x[:, :1] * 2.0 + 0.5  # undo the normalisation the adapter applies
            return self.inner(torch.nn.functional.interpolate(grey, size=(8, 8), mode="bilinear",
                                                              antialias=True, align_corners=False))

    net = Expects16pxRgb(trained).eval()
    run = robustbench_lite.evaluate(net, digits, suites=["clean"], input_size=16, channels=3, mean=0.5, std=2.0)
    assert run.source["adaptations"] == ["grey -> RGB (the channel repeated 3 times)",
                                         "resized 8x8 -> 16x16 (bilinear)", "normalised with mean (0.5) std (2)"]
    x = torch.nn.functional.interpolate(digits.float_images().repeat(1, 3, 1, 1), size=(16, 16), mode="bilinear",
                                        align_corners=False)
    with torch.no_grad():
        by_hand = (net((x - 0.5) / 2.0).argmax(1) == digits.labels).float().mean().item()
    assert run["clean.accuracy"] == pytest.approx(by_hand, abs=1e-9) and by_hand > 0.3
