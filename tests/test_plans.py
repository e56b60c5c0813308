"""The run's forward path: faster only where it answers as eager does; the precision a user chose, recorded."""

from __future__ import annotations

import json

import fixed_run
import pytest
import torch
from torch import nn

from robustbench_lite import cli, data
from robustbench_lite.api import evaluate
from robustbench_lite.distributed import map_units
from robustbench_lite.engine import plans, predict


@pytest.fixture(scope="module")
def net():
    return fixed_run.load()


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", "test")


def probe(digits, n=128):
    return digits.float_images(slice(0, n))


def test_a_long_run_gets_the_traced_graph_a_short_one_does_not(net, digits):
    long = plans.build_plan(net, probe(digits), images=plans.TRACE_MIN_IMAGES, threads=2)
    assert long.path == "traced" and long.batch == plans.CPU_BATCH and long.workers == 2 and long.threads == 1
    short = plans.build_plan(net, probe(digits), images=plans.TRACE_MIN_IMAGES - 1, threads=2)
    assert short.path == "channels-last"
    assert any("traced: not tried" in n for n in short.notes)
    none = plans.build_plan(net, probe(digits), images=0, threads=2)  # efficiency or attacks alone: nothing to gain
    assert none.path == "eager" and "no full pass" in none.notes[0]
    # predictions of every path are eager's; logits to float32's last bits
    eager = predict(net, digits, 256, torch.device("cpu"))
    for plan in (long, short):
        got = predict(net, digits, 256, torch.device("cpu"), plan=plan)
        assert torch.equal(got.argmax(1), eager.argmax(1))
        assert torch.allclose(got, eager, atol=1e-4, rtol=1e-4)


def test_a_path_that_disagrees_or_fails_is_passed_over_and_said(net, digits, monkeypatch):
    def wrong(model, x):
        return lambda images: model(images).flip(1)  # another class order: other predictions

    def broken(model, x):
        raise RuntimeError("cannot trace this")

    monkeypatch.setattr(plans, "BUILDERS", {"traced": (broken, 0), "channels-last": (wrong, 0)})
    plan = plans.build_plan(net, probe(digits), images=10**6, threads=2)
    assert plan.path == "eager" and plan.workers == 1
    assert any("traced: could not be built (cannot trace this)" in n for n in plan.notes)
    assert any(n.startswith("channels-last: differs from eager") and "predictions changed" in n for n in plan.notes)


def test_a_module_with_forward_hooks_runs_as_given(digits):
    model = fixed_run.load()
    calls = []
    model.features.register_forward_hook(lambda *args: calls.append(1))
    plan = plans.build_plan(model, probe(digits), images=10**6)
    assert plan.path == "eager" and "forward hooks" in plan.notes[0]
    predict(model, digits, 100, torch.device("cpu"), plan=plan)
    assert len(calls) == 5  # 450 images in batches of 100: the hook saw every one


def test_images_of_another_shape_go_to_the_module_itself(net, digits):
    # natural-shift sets may come at another size; the traced graph only knows the probe's
    plan = plans.build_plan(net, probe(digits), images=10**6)
    assert plan.path == "traced"
    other = torch.rand(5, 1, 12, 12)
    with torch.inference_mode():
        assert torch.allclose(plan(other), net(other), atol=1e-5)


def test_parallel_units_keep_their_order_and_restore_the_threads():
    before = torch.get_num_threads()
    seen = []

    def work(k):
        seen.append(torch.get_num_threads())
        return k * k

    assert map_units(work, range(9), parallel=2, threads=1) == [k * k for k in range(9)]
    assert set(seen) == {1} and torch.get_num_threads() == before


def test_an_error_in_one_unit_stops_the_queued_ones():
    done = []

    def work(k):
        if k == 0:
            raise KeyboardInterrupt
        done.append(k)
        return k

    with pytest.raises(KeyboardInterrupt):
        map_units(work, range(200), parallel=2, threads=1)
    assert len(done) < 199  # the queue was dropped, not run to its end


def test_precision_is_recorded_with_its_agreement_with_fp32(net, digits):
    fp32 = evaluate(net, digits, "clean,efficiency")
    assert fp32.inference["precision"] == "fp32" and "agreement_with_fp32" not in fp32.inference
    assert fp32.suites["clean"].agreement_with_fp32 is None
    bf16 = evaluate(net, digits, "clean,efficiency", precision="bf16")
    # the efficiency suite measures the model the run computes with: its weights take half the bytes (and the
    # serialised file's per-tensor overhead the same)
    assert bf16.suites["efficiency"].size_mb < 0.6 * fp32.suites["efficiency"].size_mb
    agreement = bf16.inference["agreement_with_fp32"]
    assert bf16.inference["precision"] == "bf16" == bf16.suites["clean"].precision
    assert agreement["images"] == len(digits) and 0 <= agreement["changed"] <= 10
    assert agreement["agreement"] == pytest.approx(1 - agreement["changed"] / len(digits))
    assert bf16.suites["clean"].agreement_with_fp32 == agreement["agreement"]
    assert all(p.dtype == torch.float32 for p in net.parameters()), "the user's module is not cast"
    with pytest.raises(Exception, match="valid: fp32, bf16, fp16"):
        evaluate(net, digits, "clean", precision="int4")


def test_precision_of_a_model_in_its_own_runtime_is_refused_before_any_work(net, tmp_path, capsys):
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(net, torch.rand(1, 1, 8, 8), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    out = tmp_path / "r.json"
    code = cli.main(["--checkpoint", str(path), "--dataset", "digits", "--suite", "clean", "--precision", "bf16",
                     "--json", str(out), "--no-progress", "--no-history"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--precision bf16 casts a PyTorch model" in err[0]
    assert not out.exists()
    code = cli.main(["--checkpoint", str(path), "--dataset", "digits", "--suite", "clean", "--json", str(out),
                     "--no-progress", "--no-history"])
    assert code == 0
    recorded = json.loads(out.read_text())["inference"]
    assert recorded["path"] == "eager" and "onnxruntime" in recorded["notes"][0]


class _Cast16(nn.Module):
    def forward(self, x):
        return x


def test_precision_of_returns_the_weights_dtype(net):
    assert plans.precision_of(net) == "fp32"
    assert plans.precision_of(plans.cast(net, "fp16")) == "fp16"
    assert plans.precision_of(_Cast16()) == "fp32"  # no weights: fp32
