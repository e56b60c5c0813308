"""robust-eval compress: int8 (ONNX Runtime), fp16 and bf16 artefacts of the session's digits checkpoint.

Each artefact must load through the model-source layer like any shipped file, stay close to its
parent's accuracy, and carry its provenance (parent path and sha256, method, settings, the
calibration images). Bad input is one line, exit 2, and leaves no file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from masked_models import InputRounded

from robustbench_lite import cli, data, sources
from robustbench_lite.files import sha256_file
from robustbench_lite.sources import checkpoints
from robustbench_lite.training.compression import CompressConfig, CompressOptions, compress

pytest.importorskip("onnxruntime")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def accuracy(model: torch.nn.Module, test) -> float:
    with torch.no_grad():
        return float((model(test.float_images()).argmax(1) == test.labels).float().mean())


def load(path: Path, test):
    info = sources.inspect_file(path)
    loaded = sources.load_file(path, info, architecture=None, contract=sources.InputContract(), device="cpu",
                               num_classes=test.num_classes, channels=test.channels, size=tuple(test.size),
                               classes=tuple(test.classes))
    return info, sources.finish(loaded, what=path.name, device=torch.device("cpu"), num_classes=test.num_classes,
                                channels=test.channels, size=tuple(test.size), classes=tuple(test.classes))


@pytest.fixture(scope="module")
def int8(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "digits.int8.onnx"
    artefact = compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(out), seed=3, show_progress=False,
                                       options=CompressOptions(method="int8", calibration=256)), log=lambda m: None)
    return artefact


def test_int8_is_an_onnx_graph_close_to_its_parent_with_its_provenance(int8, digits_checkpoint):
    test = data.load("digits", "test")
    parent, meta = checkpoints.load_checkpoint(digits_checkpoint)
    info, loaded = load(int8.path, test)
    assert info.format == "onnx" and not info.differentiable and loaded.runtime.startswith("onnxruntime")
    assert info.contract.classes == tuple(test.classes), "the graph names its classes"
    assert int8.facts["quantized_ops"].get("Conv", 0) > 10, int8.facts
    # 7-bit weights: no pair sum saturates in the 16-bit multiply-adds of x86 CPUs without VNNI
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(int8.path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.INT8}
    dequantized = [weights[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert len(dequantized) > 10 and max(int(abs(w.astype(int)).max()) for w in dequantized) <= 64
    parent_acc, child_acc = accuracy(parent, test), accuracy(loaded.model, test)
    assert abs(parent_acc - child_acc) <= 0.03, (parent_acc, child_acc)
    with torch.no_grad():
        agree = (parent(test.float_images()).argmax(1) == loaded.model(test.float_images()).argmax(1)).float().mean()
    assert agree >= 0.95
    # The provenance is inside the file, and it is what was done.
    record = info.meta["artefact"]
    assert record == int8.record and loaded.meta["artefact"] == record
    assert record["parent"]["sha256"] == sha256_file(digits_checkpoint)
    assert record["parent"]["path"] == str(Path(digits_checkpoint).resolve())
    assert record["method"] == "int8" and record["settings"] == {"calibration": 256, "calibration_method": "minmax"}
    cal = record["calibration"]
    assert (cal["dataset"], cal["split"], cal["images"], cal["seed"]) == ("digits", "train", 256, 3)
    assert int8.bytes < 0.5 * int8.parent_bytes, "int8 weights: well under half the float checkpoint"
    assert int8.bytes < 0.5 * int8.facts["float_onnx_bytes"], "and under half the float ONNX graph"


@pytest.mark.slow
def test_calibration_never_uses_test_images_and_follows_the_seed(int8, digits_checkpoint, tmp_path):
    # Same seed: the same images, the same graph; another seed: other images.
    again = compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(tmp_path / "a.onnx"), seed=3,
                                    options=CompressOptions(method="int8", calibration=256)), log=lambda m: None)
    other = compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(tmp_path / "b.onnx"), seed=4,
                                    options=CompressOptions(method="int8", calibration=256)), log=lambda m: None)
    assert again.record["calibration"] == int8.record["calibration"]
    assert other.record["calibration"]["indices_sha256"] != int8.record["calibration"]["indices_sha256"]
    assert int8.record["calibration"]["split"] == "train"


@pytest.mark.parametrize(("method", "dtype"), [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_reduced_precision_checkpoint_runs_in_its_type_and_is_attackable(method, dtype, digits_checkpoint, tmp_path):
    test = data.load("digits", "test")
    out = tmp_path / f"child.{method}.pt"
    artefact = compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(out),
                                       options=CompressOptions(method=method)), log=lambda m: None)
    assert artefact.record["calibration"] is None and artefact.facts["dtype"] == str(dtype).split(".")[1]
    child, meta = checkpoints.load_checkpoint(out)
    assert meta["precision"] == method and meta["artefact"]["parent"]["sha256"] == sha256_file(digits_checkpoint)
    assert "clean_accuracy" not in meta, "the parent's measured accuracy is not the child's"
    assert {p.dtype for p in child.parameters()} == {dtype}
    assert artefact.bytes < 0.6 * artefact.parent_bytes
    parent, _ = checkpoints.load_checkpoint(digits_checkpoint)
    x = test.float_images()
    assert child(x).dtype == torch.float32, "float32 images in, float32 logits out"
    assert abs(accuracy(child, test) - accuracy(parent, test)) <= 0.02
    # Attackable: a white-box attack on the child, through its own reduced-precision gradient, hurts it as
    # much as the same attack hurts the parent. (The gradient itself only roughly follows the parent's:
    # its cosine with it measured 0.94-0.96 here for bf16, whose 8-bit mantissa rounds every activation,
    # and 0.89 on an AVX-512 CPU; 0.99 for fp16.)
    def grad(model):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), test.labels), xg)
        return g

    g, gp = grad(child), grad(parent)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.nn.functional.cosine_similarity(g.flatten(), gp.flatten(), dim=0) > 0.75

    def fgsm_accuracy(model, gradient):
        adv = (x + 0.1 * gradient.sign()).clamp(0, 1)
        with torch.no_grad():
            return (model(adv).argmax(1) == test.labels).float().mean().item()

    child_fgsm, parent_fgsm = fgsm_accuracy(child, g), fgsm_accuracy(parent, gp)
    assert child_fgsm < accuracy(child, test) - 0.3, "FGSM through the child's gradient breaks it"
    assert child_fgsm <= parent_fgsm + 0.05, (child_fgsm, parent_fgsm)


def test_the_artefact_evaluates_and_its_results_name_the_parent(int8, digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, _, err = run(capsys, "--checkpoint", str(int8.path), "--dataset", "digits", "--suite", "clean", "--json",
                       str(out), "--no-history", "--no-progress")
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["source"]["format"] == "onnx"
    assert result["checkpoint"]["artefact"]["parent"]["sha256"] == sha256_file(digits_checkpoint)


def test_a_gradient_free_artefact_is_attacked_through_its_parent(int8, digits_checkpoint, tmp_path, capsys):
    """No --surrogate: the int8 graph has no gradients, so its recorded float parent crafts the attacks."""
    out = tmp_path / "r.json"
    code, log, err = run(capsys, "--checkpoint", str(int8.path), "--dataset", "digits", "--suite", "adversarial",
                         "--limit", "64", "--json", str(out), "--no-history", "--no-progress")
    assert code == 0, err
    assert "crafted on its float parent digits.pt" in log + err
    result = json.loads(out.read_text())
    assert Path(result["adversarial"]["settings"]["transfer_from"]).resolve() == Path(digits_checkpoint).resolve()
    assert result["config"]["surrogate"] == str(Path(digits_checkpoint).resolve())
    # A parent that is gone (or changed since) is not guessed at: the run asks for a surrogate, before any work.
    import onnx

    from robustbench_lite.sources.onnx import ARTEFACT_KEY

    graph = onnx.load(str(int8.path))
    for prop in graph.metadata_props:
        if prop.key == ARTEFACT_KEY:
            record = json.loads(prop.value)
            record["parent"]["path"] = str(tmp_path / "gone.pt")
            prop.value = json.dumps(record)
    orphan = tmp_path / "orphan.onnx"
    onnx.save(graph, str(orphan))
    code, _, err = run(capsys, "--checkpoint", str(orphan), "--dataset", "digits", "--suite", "adversarial",
                       "--limit", "64", "--no-history")
    assert code == 2 and "input gradients" in err and "--surrogate PATH" in err and len(err.splitlines()) == 1


def test_list_compression(capsys):
    code, out, _ = run(capsys, "list", "compression")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "bf16", "distill", "fp16", "int8", "prune", "prune-channels"]


@pytest.mark.parametrize(("argv", "needles"), [
    (["--method", "int9"], ["unknown compression method 'int9'", "int8", "robust-eval list compression"]),
    (["--method", "fp16:3"], ["takes no argument", "--method fp16"]),
    (["--method", "fp16", "--output", "OUT/x.onnx"], ["must end in .pt", "x.pt"]),
    (["--method", "int8", "--output", "OUT/x.pt"], ["must end in .onnx"]),
    (["--method", "int8", "--calibration", "8"], ["--calibration must be an integer >= 16, got 8"]),
    (["--method", "int8", "--calibration", "5000", "--output", "OUT/x.onnx"],
     ["--calibration 5000 is more than the 1347 training images of digits"]),
    (["--method", "int8", "--calibration-method", "kl"], ["--calibration-method 'kl' is not valid", "entropy"]),
    (["--method", "bf16", "--output", "PARENT"], ["is the parent checkpoint"]),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, needles, digits_checkpoint, tmp_path, capsys):
    argv = [str(tmp_path / a[4:]) if a.startswith("OUT/") else str(digits_checkpoint) if a == "PARENT" else a
            for a in argv]
    before = set(Path(digits_checkpoint).parent.iterdir())
    code, out, err = run(capsys, "compress", "--checkpoint", str(digits_checkpoint), *argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    assert list(tmp_path.iterdir()) == [] and set(Path(digits_checkpoint).parent.iterdir()) == before


def test_a_parent_that_is_not_a_checkpoint_is_refused(tmp_path, capsys):
    bogus = tmp_path / "net.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    code, _, err = run(capsys, "compress", "--checkpoint", str(bogus), "--method", "bf16")
    assert code == 2 and "not a robustbench_lite checkpoint" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]


def test_flip_set_of_parent_and_int8_child_equals_a_direct_recount(int8, digits_checkpoint, tmp_path, capsys):
    from robustbench_lite import records
    from robustbench_lite.flips import flip_sets

    runs = {}
    for name, path in (("parent", digits_checkpoint), ("child", int8.path)):
        code, _, err = run(capsys, "--checkpoint", str(path), "--dataset", "digits", "--suite", "clean,corruptions",
                           "--corruptions", "gaussian_noise,fog", "--severities", "3", "--records",
                           str(tmp_path / f"{name}.npz"), "--no-history", "--no-progress")
        assert code == 0, err
        runs[name] = records.load(tmp_path / f"{name}.npz")
    found = {f.path: f for f in flip_sets(runs["parent"], runs["child"])}
    assert {"clean.accuracy", "corruptions.accuracy.fog.3", "corruptions.accuracy.gaussian_noise.3"} <= set(found)
    test = data.load("digits", "test")
    parent, _ = checkpoints.load_checkpoint(digits_checkpoint)
    _, child = load(int8.path, test)
    with torch.no_grad():
        before, after = parent(test.float_images()).argmax(1), child.model(test.float_images()).argmax(1)
    changed = (before != after).numpy()
    clean = found["clean.accuracy"]
    assert clean.by == "prediction" and clean.count == int(changed.sum()) and clean.images == len(test)
    assert clean.flipped.tolist() == test.indices[torch.from_numpy(changed)].tolist()
    right_before, right_after = (before == test.labels).numpy(), (after == test.labels).numpy()
    assert clean.lost == int((changed & right_before & ~right_after).sum())
    assert clean.gained == int((changed & ~right_before & right_after).sum())
    assert sum(v["flips"] for v in clean.per_class.values()) == clean.count


def test_a_differentiable_artefact_is_also_attacked_through_its_parent(digits_checkpoint, tmp_path, capsys):
    """fp16 keeps gradients: attacked white-box, and on the first images by the same attack crafted on the
    parent, both numbers recorded; a parent gone since is said in the log, not guessed at."""
    child = tmp_path / "child.fp16.pt"
    compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(child),
                            options=CompressOptions(method="fp16")), log=lambda m: None)
    out = tmp_path / "r.json"
    code, log, err = run(capsys, "--checkpoint", str(child), "--dataset", "digits", "--suite", "adversarial",
                         "--attack", "fgsm,pgd", "--limit", "48", "--json", str(out), "--no-history", "--no-progress")
    assert code == 0, err
    assert "is compressed from digits.pt" in log + err
    block = json.loads(out.read_text())["adversarial"]
    assert "transfer_from" not in block["settings"], "the headline numbers stay white-box"
    check = block["settings"]["masking_checks"]["from_parent"]
    assert Path(check["source"]).resolve() == Path(digits_checkpoint).resolve() and check["images"] == 48
    key = block["results"][-1]["key"]
    assert set(check["attacks"]) == {r["key"] for r in block["results"]}
    assert check["attacks"][key]["white_box"] == pytest.approx(block["robust_accuracy"][key])
    # fp16 rounding moves the gradients a little: crafted on the parent, PGD does about as well, not far better.
    assert abs(check["attacks"][key]["from_parent"] - check["attacks"][key]["white_box"]) <= 0.1
    Path(digits_checkpoint).rename(tmp_path / "moved.pt")
    try:
        code, log, err = run(capsys, "--checkpoint", str(child), "--dataset", "digits", "--suite", "adversarial",
                             "--limit", "16", "--json", str(out), "--no-history", "--no-progress")
    finally:
        (tmp_path / "moved.pt").rename(digits_checkpoint)
    assert code == 0, err
    assert "recorded parent is gone or changed" in log + err
    assert "from_parent" not in json.loads(out.read_text())["adversarial"]["settings"]["masking_checks"]


@pytest.mark.parametrize("masked", [True, False])
def test_masked_gradients_of_an_artefact_are_flagged_against_its_parent(masked, digits_checkpoint):
    from robustbench_lite.api import run_suites
    from robustbench_lite.config import RunConfig
    from robustbench_lite.sources.runtimes import Transfer

    parent, _ = checkpoints.load_checkpoint(digits_checkpoint)
    parent.eval()
    child = InputRounded(parent, 255) if masked else parent
    test = data.load("digits", "test").limit(64)
    config = RunConfig(dataset="digits", suites=["adversarial"], show_progress=False,
                       suite_options={"adversarial": {"attack": "pgd", "eps": 0.1}})
    result = run_suites(child, test, config, torch.device("cpu"), log=lambda m: None,
                        parent_transfer=Transfer(child, parent, "parent.pt")).to_dict()["adversarial"]
    check = result["settings"]["masking_checks"]["from_parent"]["attacks"]["pgd.Linf[0.1]"]
    flags = [w for w in result["warnings"] if "crafted on the parent" in w]
    if masked:  # rounding stops the white-box gradient; the parent's still finds the way
        assert check["from_parent"] < check["white_box"] - 0.1, check
        assert len(flags) == 1 and "masked" in flags[0] and f"{check['from_parent']:.3f}" in flags[0]
    else:  # the parent is the model: the same gradients, the same images fooled
        assert check["from_parent"] == check["white_box"] and flags == []


@pytest.mark.slow
def test_an_attack_weaker_through_masked_gradients_is_not_flagged_when_another_breaks_those_images(
        digits_checkpoint):
    """Square (no gradients) breaks on the rounded child what its PGD cannot: the run's worst case is not
    overstated, so the parent's stronger PGD is recorded but not flagged."""
    from robustbench_lite.api import run_suites
    from robustbench_lite.config import RunConfig
    from robustbench_lite.sources.runtimes import Transfer

    parent, _ = checkpoints.load_checkpoint(digits_checkpoint)
    child = InputRounded(parent.eval(), 255)
    test = data.load("digits", "test").limit(64)
    config = RunConfig(dataset="digits", suites=["adversarial"], show_progress=False,
                       suite_options={"adversarial": {"attack": "pgd,square", "eps": 0.1, "queries": 1000}})
    result = run_suites(child, test, config, torch.device("cpu"), log=lambda m: None,
                        parent_transfer=Transfer(child, parent, "parent.pt")).to_dict()["adversarial"]
    check = result["settings"]["masking_checks"]["from_parent"]["attacks"]
    assert check["pgd.Linf[0.1]"]["from_parent"] < check["pgd.Linf[0.1]"]["white_box"] - 0.1, check
    assert "square.Linf[0.1]" not in check  # score-based: no gradients to compare
    assert result["worst_case"]["Linf[0.1]"] <= check["pgd.Linf[0.1]"]["from_parent"] + 2 / 64, result["worst_case"]
    assert not [w for w in result["warnings"] if "crafted on the parent" in w]
