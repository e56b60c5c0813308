"""robust-eval compress methods that train: prune (global magnitude), prune-channels (structured), distill.

Each artefact is a robust-eval checkpoint that loads like any other (the pruned network rebuilt
from its recorded shapes), stays close to its parent after the fine-tune, and records what was
done (sparsity or channels, the fine-tune's recipe and defences, the teacher's settings).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_lite import cli, data
from robustbench_lite.files import sha256_file
from robustbench_lite.sources import architectures, checkpoints
from robustbench_lite.training.compression import CompressConfig, CompressOptions, compress
from robustbench_lite.training.compression.prune import channel_chains, prune_channels, sparsity

pytest_plugins = ["pytester"]
QUIET = {"show_progress": False}


def accuracy(model: nn.Module, test) -> float:
    with torch.no_grad():
        return float((model(test.float_images()).argmax(1) == test.labels).float().mean())


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def test_set():
    return data.load("digits", "test")


@pytest.fixture(scope="module")
def parent(digits_checkpoint, test_set):
    model, meta = checkpoints.load_checkpoint(digits_checkpoint)
    return model, meta, accuracy(model, test_set)


@pytest.fixture(scope="module")
def pruned(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "digits.prune.pt"
    return compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(out), seed=1, **QUIET,
                                   options=CompressOptions(method="prune:0.5")), log=lambda m: None)


@pytest.fixture(scope="module")
def channels(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("channels") / "digits.channels.pt"
    return compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(out), seed=1, **QUIET,
                                   options=CompressOptions(method="prune-channels:0.5", epochs=4, lr=0.01)),
                    log=lambda m: None)


def test_global_magnitude_pruning_keeps_its_zeros_through_the_fine_tune(pruned, parent, test_set, digits_checkpoint):
    model, meta = checkpoints.load_checkpoint(pruned.path)
    parent_model, parent_meta, parent_acc = parent
    # Half of all conv/linear weights are zero after fine-tuning (the masks held them there).
    assert 0.5 <= sparsity(model) < 0.52 and meta["sparsity"] == pytest.approx(sparsity(model), abs=1e-6)
    assert sparsity(parent_model) < 0.01
    # Global, not per layer: the layers end at different sparsities.
    per_layer = [float((m.weight == 0).float().mean()) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert max(per_layer) - min(per_layer) > 0.2
    acc = accuracy(model, test_set)
    assert acc >= parent_acc - 0.05, (parent_acc, acc)
    assert meta["clean_accuracy"] == pytest.approx(acc, abs=1e-6)
    record = meta["artefact"]
    assert record["method"] == "prune" and record["settings"]["sparsity"] == 0.5
    assert record["parent"]["sha256"] == sha256_file(digits_checkpoint)
    training = record["training"]
    # The parent's recipe at a tenth of its rate, one epoch, the parent's (no) defences.
    assert training["recipe"]["epochs"] == 1
    assert training["recipe"]["lr"] == pytest.approx(parent_meta["recipe"]["lr"] / 10)
    assert training["defence"]["label"] == "standard" and len(training["history"]) == 1
    assert record["settings"]["epochs"] == 1 and record["settings"]["lr"] == training["recipe"]["lr"]
    assert pruned.facts["sparsity"] == pytest.approx(meta["sparsity"], abs=1e-4)


def test_channel_pruning_shrinks_the_network_and_loads_from_its_shapes(channels, parent, test_set):
    model, meta = checkpoints.load_checkpoint(channels.path)  # the zoo network rebuilt with the recorded shapes
    parent_model, _, parent_acc = parent
    # half of every branch's internal channels: ShuffleNetV2 x0.5 keeps its 1024-channel head, so ~0.82x in all
    assert params(model) < 0.85 * params(parent_model), (params(model), params(parent_model))
    assert channels.bytes < 0.9 * channels.parent_bytes
    assert meta["shapes"] and all(path.startswith("net.") for path in meta["shapes"])
    record = meta["artefact"]
    assert record["channels"]["parameters"] == params(model)
    assert record["channels"]["removed"] == record["channels"]["of"] // 2
    acc = accuracy(model, test_set)
    assert acc >= parent_acc - 0.08, (parent_acc, acc)
    assert record["training"]["recipe"]["epochs"] == 4 and record["training"]["recipe"]["lr"] == 0.01


def test_channel_pruning_of_dead_channels_changes_nothing():
    """Channels whose filters and batch-norm scale are zero contribute nothing: removing them keeps every logit."""
    torch.manual_seed(0)
    net = architectures.build("resnet18", num_classes=10, in_channels=1, input_size=28).net.eval()
    chains = channel_chains(net)
    # ResNet's basic blocks: conv1 -> bn1 -> relu -> conv2, one chain each, nothing else.
    assert sorted((c.producer, c.consumer) for c in chains) == sorted(
        (f"layer{i}.{j}.conv1", f"layer{i}.{j}.conv2") for i in range(1, 5) for j in range(2))
    with torch.no_grad():
        for c in chains:
            conv, bn = net.get_submodule(c.producer), net.get_submodule(c.norms[0])
            dead = torch.arange(0, conv.out_channels, 4)  # a quarter of the channels
            conv.weight[dead] = 0
            bn.weight[dead] = 0
            bn.bias[dead] = 0
    widths = {c.producer: net.get_submodule(c.producer).out_channels for c in chains}
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        before = net(x)
        shapes, removed, total = prune_channels(net, 0.25)
        after = net(x)
    assert total == sum(widths.values()) and removed == total // 4
    for c in chains:
        kept = widths[c.producer] * 3 // 4
        assert net.get_submodule(c.producer).out_channels == kept == shapes[c.consumer]["in_channels"]
        assert shapes[c.norms[0]] == {"num_features": kept}
    assert torch.allclose(before, after, atol=1e-5)


def test_shufflenet_and_mobilenet_chains():
    """The internal channels of ShuffleNetV2's branches (through the depthwise conv); MobileNetV3 blocks with
    squeeze-excitation are left alone."""
    shuffle = architectures.build("shufflenetv2_x0_5", num_classes=10, in_channels=1, input_size=28).net
    chains = channel_chains(shuffle)
    assert len(chains) == 16  # one per block: 4 + 8 + 4
    assert all(c.producer.endswith("branch2.0") and c.depthwise.endswith("branch2.3")
               and c.consumer.endswith("branch2.5") for c in chains)
    # MobileNetV3: where squeeze-excitation reads the depthwise output too, the expansion channels have two users
    # and stay; the squeeze's own bottleneck (fc1 -> fc2) and the blocks without it are pruned.
    mobile = architectures.build("mobilenetv3_small", num_classes=10, in_channels=1, input_size=28).net
    found = channel_chains(mobile)
    se_blocks = {n for n, m in mobile.named_modules() if type(m).__name__ == "SqueezeExcitation"}
    assert {c.producer.rsplit(".", 1)[0] for c in found if c.producer.endswith("fc1")} == se_blocks
    expansions_read_by_se = {se.rsplit(".", 1)[0] + ".0.0" for se in se_blocks}  # features.N.block.0.0
    assert not expansions_read_by_se & {c.producer for c in found}
    assert any(c.depthwise is not None for c in found)  # blocks without squeeze-excitation: expansion pruned


@pytest.mark.slow
def test_distillation_learns_from_the_teacher_alone(digits_checkpoint, parent, test_set, tmp_path):
    """With weight 1 the labels are never used: the student's accuracy comes from the teacher's soft targets."""
    out = tmp_path / "student.pt"
    artefact = compress(CompressConfig(checkpoint=str(digits_checkpoint), output=str(out), seed=0, **QUIET,
                                       options=CompressOptions(method="distill:shufflenetv2_x0_5", distill_weight=1.0,
                                                               temperature=2.0, epochs=8)), log=lambda m: None)
    model, meta = checkpoints.load_checkpoint(out)
    teacher, _, teacher_acc = parent
    acc = accuracy(model, test_set)
    assert acc >= 0.75 and acc >= teacher_acc - 0.15, (teacher_acc, acc)
    record = meta["artefact"]
    assert record["settings"]["student"] == "shufflenetv2_x0_5" and record["settings"]["temperature"] == 2.0
    assert record["settings"]["distill_weight"] == 1.0 and record["training"]["recipe"]["epochs"] == 8
    assert meta["model"] == "shufflenetv2_x0_5" and meta["init"] == "scratch"
    assert artefact.facts["student"] == "shufflenetv2_x0_5"


def test_distillation_with_an_adversarial_defence(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "robust-student.pt"
    code = cli.main(["compress", "--checkpoint", str(digits_checkpoint), "--method", "distill", "--student",
                     "shufflenetv2_x0_5", "--epochs", "1", "--defence", "fgsm-rs", "--eps", "0.05", "--output",
                     str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    meta = checkpoints.read_checkpoint(out)["meta"]
    assert meta["defence"]["label"] == "fgsm-rs" and meta["defence"]["settings"]["fgsm-rs"]["eps"] == 0.05
    assert meta["artefact"]["training"]["defence"]["label"] == "fgsm-rs"
    assert "held-out" in captured.out + captured.err  # the adversarial defence watched its held-out accuracy


@pytest.mark.parametrize(("argv", "expect"), [
    (["--method", "prune"], "needs the fraction of weights to zero"),
    (["--method", "prune:1.5"], "must be a number in (0, 1)"),
    (["--method", "prune-channels:0"], "must be a number in (0, 1)"),
    (["--method", "distill"], "needs a student"),
    (["--method", "distill:nosuchnet"], "nosuchnet"),
    (["--method", "distill:shufflenetv2_x0_5", "--student", "resnet18"], "name different students"),
    (["--method", "int8", "--epochs", "2"], "--epochs is not used by --method int8"),
    (["--method", "bf16", "--student", "resnet18"], "--student is not used by --method bf16"),
    (["--method", "prune:0.5", "--temperature", "2"], "--temperature is not used by --method prune"),
    (["--method", "fp16", "--calibration", "64"], "--calibration is not used by --method fp16"),
    (["--method", "int8", "--defence", "pgd-at"], "apply to methods that train"),
    (["--method", "prune:0.5", "--epochs", "0"], "--epochs must be an integer >= 1"),
    (["--method", "prune:0.5", "--lr", "-1"], "--lr must be a number > 0"),
    (["--method", "distill:shufflenetv2_x0_5", "--distill-weight", "2"], "--distill-weight must be a number in [0, 1]"),
])
def test_bad_input_is_one_line_and_writes_nothing(argv, expect, digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "child.pt"
    code = cli.main(["compress", "--checkpoint", str(digits_checkpoint), "--output", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and expect in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_pruned_artefacts_evaluate_through_the_cli(channels, pruned, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = cli.main(["--checkpoint", str(channels.path), "--dataset", "digits", "--suite", "clean", "--limit", "200",
                     "--json", str(out), "--no-progress", "--no-history"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(Path(out).read_text())
    assert result["checkpoint"]["artefact"]["method"] == "prune-channels"
    # The efficiency suite reports the sparsity of a magnitude-pruned model, and the checkpoint says it too.
    code = cli.main(["--checkpoint", str(pruned.path), "--dataset", "digits", "--suite", "efficiency", "--json",
                     str(out), "--no-progress", "--no-history", "--latency-runs", "2"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(Path(out).read_text())
    assert result["efficiency"]["sparsity"] == pytest.approx(result["checkpoint"]["sparsity"], abs=1e-4)
    assert result["efficiency"]["sparsity"] >= 0.5


def test_compare_gives_the_flip_set_of_parent_and_child(pruned, digits_checkpoint, test_set, tmp_path, capsys):
    """compare's flip set of parent and pruned child equals a direct recount of the two models' predictions."""
    table, html = tmp_path / "cmp.json", tmp_path / "cmp.html"
    code = cli.main(["compare", str(digits_checkpoint), str(pruned.path), "--suite", "clean", "--limit", "300",
                     "--labels", "parent,pruned", "-o", str(table), "--html", str(html), "--no-history",
                     "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "flip set of pruned against parent" in captured.out
    flips = json.loads(table.read_text())["flips"]["pruned"]
    clean = next(f for f in flips if f["path"] == "clean.accuracy")
    parent_model, _ = checkpoints.load_checkpoint(digits_checkpoint)
    child, _ = checkpoints.load_checkpoint(pruned.path)
    x, y = test_set.float_images()[:300], test_set.labels[:300]
    with torch.no_grad():
        before, after = parent_model(x).argmax(1), child(x).argmax(1)
    changed = before != after
    assert clean["images"] == 300 and clean["by"] == "prediction"
    assert clean["flips"] == int(changed.sum())
    assert clean["lost"] == int((changed & (before == y) & (after != y)).sum())
    assert clean["gained"] == int((changed & (before != y) & (after == y)).sum())
    assert [e["index"] for e in clean["examples"]] == changed.nonzero().squeeze(1).tolist()[:20]
    # The report shows the flip set and the flipped images, lost ones first.
    page = html.read_text()
    assert 'data-flips="pruned"' in page and "Flip set: pruned against parent" in page
    shown = page.count("alt=\"test image ")
    assert shown == min(int(changed.sum()), 12)
    lost = changed & (before == y) & (after != y)
    if int(lost.sum()):
        first = int(lost.nonzero()[0])
        assert f"alt=\"test image {first}," in page


def test_the_pytest_plugin_gates_an_artefact_against_its_parent(pytester, pruned, digits_checkpoint):
    """A user's CI test: evaluate the shipped artefact beside its parent; a drop past the margin fails the test."""
    pytester.makepyfile(test_artefact=f"""
        import pytest

        PARENT, CHILD = {str(digits_checkpoint)!r}, {str(pruned.path)!r}

        @pytest.mark.robustness
        def test_within_margin(robustness):
            parent = robustness.evaluate(checkpoint=PARENT, suites="clean", limit=120)
            child = robustness.evaluate(checkpoint=CHILD, suites="clean", limit=120)
            assert child.to_dict()["checkpoint"]["artefact"]["method"] == "prune"
            child.check("clean.accuracy >= baseline - 0.2", baseline=parent)

        @pytest.mark.robustness
        def test_past_margin(robustness):
            parent = robustness.evaluate(checkpoint=PARENT, suites="clean", limit=120)
            child = robustness.evaluate(checkpoint=CHILD, suites="clean", limit=120)
            child.check("clean.accuracy >= baseline + 0.5", baseline=parent)
    """)
    result = pytester.runpytest("--robustness", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*clean.accuracy*baseline*"])


def test_artefacts_compose_prune_then_half_precision(channels, tmp_path, test_set):
    """fp16 of a channel-pruned checkpoint keeps its layer shapes; its record names both steps."""
    out = tmp_path / "channels.fp16.pt"
    compress(CompressConfig(checkpoint=str(channels.path), output=str(out), **QUIET,
                            options=CompressOptions(method="fp16")), log=lambda m: None)
    model, meta = checkpoints.load_checkpoint(out)
    pruned_model, pruned_meta = checkpoints.load_checkpoint(channels.path)
    assert meta["shapes"] == pruned_meta["shapes"] and meta["precision"] == "fp16"
    assert "sparsity" not in meta and next(model.parameters()).dtype == torch.float16
    assert meta["artefact"]["parent"]["artefact"]["method"] == "prune-channels"
    assert abs(accuracy(model, test_set) - accuracy(pruned_model, test_set)) <= 0.02
