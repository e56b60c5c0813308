"""Defences: each trains, each changes what it should, combinations and bad input, resume."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from robustbench_lite import cli, models
from robustbench_lite import training as train_mod
from robustbench_lite.commands import train as train_command
from robustbench_lite.config import TrainConfig
from robustbench_lite.data import load
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.sources import checkpoints
from robustbench_lite.training import defences
from robustbench_lite.training.defences import DEFENCES, DefenceContext, DefenceOptions, Pipeline

NAMED = ["fgsm-rs", "pgd-at", "trades", "augmix", "autoaugment", "randaugment", "trivialaugment", "cutmix", "mixup",
         "gaussian-noise", "balanced-softmax", "class-balanced", "gce", "sce", "balanced-sampler"]
ADVERSARIAL = ["fgsm-rs", "pgd-at", "trades"]
IMAGE = ["augmix", "autoaugment", "randaugment", "trivialaugment"]
CTX = DefenceContext(num_classes=10, dataset="digits", seed=0)


@pytest.fixture(scope="module")
def digits_train():
    return load("digits", "train")


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return models.build("shufflenetv2_x0_5", 10, 1, 8, mean=(0.3,), std=(0.3,))


@pytest.fixture
def raw_batch(digits_train):
    idx = torch.arange(32)
    return digits_train.images[idx], digits_train.labels[idx], idx.tolist()


def options(names, **params) -> DefenceOptions:
    return DefenceOptions.from_mapping({"defence": names, **params})


def make_pipeline(names, **params) -> Pipeline:
    return Pipeline(options(names, **params), CTX)


def tiny_config(tmp_path, defence, defence_options=None, **kw) -> TrainConfig:
    base = dict(model="shufflenetv2_x0_5", dataset="digits", epochs=1, batch_size=64, lr=1e-2, limit=256,
                eval_limit=64, output=str(tmp_path / "m.pt"), device="cpu", show_progress=False,
                defences=options(defence, **(defence_options or {})))
    return TrainConfig(**{**base, **kw})


def test_registry_holds_every_named_defence():
    assert sorted(NAMED) == DEFENCES.list()
    assert [n for n in NAMED if DEFENCES.entry(n).adversarial] == ADVERSARIAL


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMED)
def test_each_defence_trains_and_records_its_recipe(name, tmp_path):
    model, meta, path = train_mod.train(tiny_config(tmp_path, name), log=lambda m: None)
    loaded, meta2 = checkpoints.load_checkpoint(path)
    assert meta2["defence"]["names"] == [name]
    assert name in meta2["defence"]["settings"]
    assert meta2["recipe"]["epochs"] == 1 and meta2["init"] == "scratch"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    if name in ADVERSARIAL:
        assert meta2["defence"]["settings"][name]["eps"] == pytest.approx(0.1)  # digits default
        assert "heldout_pgd10" in meta2["history"][0]


def _train_inputs(model, pipeline, batch):
    """The images the model sees in train mode while the pipeline computes its loss."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone())
                                             if m.training else None)
    try:
        model.train()
        loss, logits, labels = pipeline.loss(model, batch)
    finally:
        handle.remove()
        model.eval()
    return seen, loss, logits, labels


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_adversarial_examples_are_in_the_batch(name, tiny_model, raw_batch):
    pipeline = make_pipeline([name], eps=0.1)
    batch = pipeline.prepare(*raw_batch)
    seen, loss, _, labels = _train_inputs(tiny_model, pipeline, batch)
    adv = seen[-1]
    assert adv.shape == batch.x.shape
    gap = (adv - batch.x).abs().flatten(1).amax(1)
    assert float(gap.max()) <= 0.1 + 1e-6, "adversarial image outside the eps-ball"
    assert float(gap.min()) > 0.05, "some training images were not perturbed"
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(labels, batch.y)
    with torch.no_grad():
        clean_loss = F.cross_entropy(tiny_model(batch.x), batch.y)
        adv_loss = F.cross_entropy(tiny_model(adv), batch.y)
    if name == "trades":
        assert len(seen) == 2 and torch.equal(seen[0], batch.x), "TRADES trains on the clean and adversarial views"
    else:
        assert len(seen) == 1
        assert adv_loss > clean_loss, "the attack must raise the loss it trains on"
    assert torch.isfinite(loss)


def test_trades_beta_weights_the_kl_term(tiny_model, raw_batch):
    losses = []
    for beta in (0.0, 6.0):
        pipeline = make_pipeline(["trades"], eps=0.1, beta=beta)
        torch.manual_seed(0)
        batch = pipeline.prepare(*raw_batch)
        _, loss, _, _ = _train_inputs(tiny_model, pipeline, batch)
        losses.append(float(loss.detach()))
    model = copy.deepcopy(tiny_model).train()  # the loss is taken in train mode (batch statistics)
    with torch.no_grad():
        natural = float(F.cross_entropy(model(pipeline.prepare(*raw_batch).x), raw_batch[1]))
    assert losses[0] == pytest.approx(natural, rel=1e-4)  # beta 0: plain cross-entropy on clean images
    assert losses[1] > losses[0]


def test_adversarial_starts_change_with_the_epoch(tiny_model, raw_batch):
    pipeline = make_pipeline(["pgd-at"], eps=0.1, steps=1)
    batch = pipeline.prepare(*raw_batch)
    first = pipeline.loss_owner.adversarial_examples(tiny_model, batch)
    again = pipeline.loss_owner.adversarial_examples(tiny_model, batch)
    pipeline.start_epoch(1)
    other = pipeline.loss_owner.adversarial_examples(tiny_model, batch)
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("name", IMAGE)
def test_image_augmentations_keep_their_contract(name, raw_batch):
    raw, y, idx = raw_batch
    before = raw.clone()
    pipeline = make_pipeline([name])
    torch.manual_seed(0)
    batch = pipeline.prepare(raw, y, idx)
    assert torch.equal(raw, before), "input batch modified in place"
    assert batch.x.dtype == torch.float32 and batch.x.shape == raw.shape
    assert batch.x.min() >= 0 and batch.x.max() <= 1
    assert torch.equal(batch.y, y) and torch.equal(batch.targets, y), "augmentation must not touch labels"
    changed = (batch.x != raw.float() / 255).flatten(1).any(1)
    assert changed.float().mean() > 0.3, f"{name} changed only {int(changed.sum())} of 32 images"
    torch.manual_seed(0)
    assert torch.equal(pipeline.prepare(raw, y, idx).x, batch.x), "same seed, same augmentation"
    # Each image draws its own operations: the same image repeated is not augmented identically.
    same = pipeline.prepare(raw[:1].repeat(16, 1, 1, 1), y[:1].repeat(16), list(range(16))).x
    assert len({tuple(img.flatten().tolist()) for img in same}) > 1


def test_gaussian_noise_perturbs_a_fraction_with_the_given_std(digits_train):
    raw = digits_train.images[:400]
    pipeline = make_pipeline(["gaussian-noise"], noise_std=0.05, noise_p=0.5)
    torch.manual_seed(0)
    x = pipeline.prepare(raw, digits_train.labels[:400], range(400)).x
    clean = raw.float() / 255
    changed = (x != clean).flatten(1).any(1)
    assert 0.4 < changed.float().mean() < 0.6
    assert torch.equal(x[~changed], clean[~changed])
    diff = (x - clean)[changed]
    inside = ((clean[changed] > 0.2) & (clean[changed] < 0.8))  # away from the clamp at 0 and 1
    assert float(diff[inside].std()) == pytest.approx(0.05, rel=0.1)


@pytest.mark.parametrize("names", [["mixup"], ["cutmix"], ["cutmix", "mixup"]])
def test_mixed_labels_sum_to_one(names, raw_batch):
    raw, y, idx = raw_batch
    pipeline = make_pipeline(names)
    torch.manual_seed(1)
    batch = pipeline.prepare(raw, y, idx)
    assert batch.targets.shape == (32, 10)
    torch.testing.assert_close(batch.targets.sum(1), torch.ones(32))
    assert (batch.targets >= 0).all()
    assert (batch.targets.max(1).values < 1).any(), "labels were not mixed"
    assert torch.equal(batch.y, y)


def test_mixup_images_are_the_same_convex_combination_as_the_labels(raw_batch):
    raw, y, idx = raw_batch
    pipeline = make_pipeline(["mixup"])
    torch.manual_seed(3)
    batch = pipeline.prepare(raw, y, idx)
    clean = raw.float() / 255
    rolled = clean.roll(1, 0)  # torchvision pairs each image with the previous one
    i = next(i for i in range(1, 32) if y[i] != y[i - 1])
    lam = float(batch.targets[i, y[i]])
    assert 0 < lam < 1
    torch.testing.assert_close(batch.x[i], lam * clean[i] + (1 - lam) * rolled[i], atol=1e-5, rtol=0)
    torch.testing.assert_close(float(batch.targets[i, y[i - 1]]), 1 - lam)


def test_augmix_jsd_trains_on_three_views(tiny_model, raw_batch):
    pipeline = make_pipeline(["augmix"], jsd=True)
    torch.manual_seed(0)
    batch = pipeline.prepare(*raw_batch)
    assert torch.equal(batch.x, raw_batch[0].float() / 255), "with --jsd the first view is the clean image"
    seen, loss, logits, _ = _train_inputs(tiny_model, pipeline, batch)
    assert len(seen) == 1 and seen[0].shape[0] == 3 * 32
    assert logits.shape == (32, 10)
    with torch.no_grad():
        plain = F.cross_entropy(tiny_model(batch.x), batch.y)
    assert float(loss) > float(plain)  # plus a non-negative consistency term


def test_combined_defences_apply_in_stage_order(tiny_model, raw_batch):
    pipeline = make_pipeline(["pgd-at", "augmix", "gaussian-noise"], eps=0.1)
    assert [d.name for d in pipeline.image_stage] == ["augmix"]
    assert pipeline.loss_owner.name == "pgd-at" and pipeline.label == "pgd-at,augmix,gaussian-noise"
    batch = pipeline.prepare(*raw_batch)
    seen, _, _, _ = _train_inputs(tiny_model, pipeline, batch)
    assert (seen[-1] - batch.x).abs().max() <= 0.1 + 1e-6  # attacked around the augmented image


@pytest.mark.parametrize(("names", "params", "needle"), [
    (["mixup", "pgd-at"], {}, "incompatible combination"),
    (["fgsm-rs", "trades"], {}, "incompatible combination"),
    (["augmix", "pgd-at"], {"jsd": True}, "incompatible combination"),
    (["pgd-at"], {"beta": 3.0}, "--beta is not used"),
    (["trades"], {"beta": -1.0}, "--beta must be a number >= 0"),
    (["pgd-at"], {"eps": 0.0}, "--eps must be in (0, 1]"),
    (["pgd-at"], {"eps": -0.1}, "--eps must be in (0, 1]"),
    (["pgd-at"], {"steps": 0}, "--steps must be"),
    (["augmix"], {"severity": 11}, "--severity must be in (0, 10]"),
    (["mixup"], {"mix_alpha": 0.0}, "--mix-alpha must be"),
])
def test_bad_combinations_and_values_raise_one_line(names, params, needle):
    with pytest.raises(RobustEvalError) as exc:
        make_pipeline(names, **params)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(("argv", "needle"), [
    (["--defence", "pgd-att"], "unknown defence 'pgd-att'"),
    (["--defence", "pgd-at", "--eps", "0"], "eps"),
    (["--defence", "pgd-at", "--eps", "-0.1"], "eps"),
    (["--defence", "trades", "--beta", "-1"], "--beta must be a number >= 0"),
    (["--defence", "cutmix,trades"], "incompatible combination"),
    (["--defence", "augmix", "--eps", "0.1"], "--eps is not used"),
    (["--pretrained", "--from-scratch"], "not allowed with argument"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(argv, needle, tmp_path, capsys):
    out = tmp_path / "m.pt"
    code = cli.main(["train", "--dataset", "digits", "--epochs", "1", "--output", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_trains_combined_defences_and_lists_them(tmp_path, capsys):
    out = tmp_path / "m.pt"
    code = cli.main(["train", "--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "1",
                     "--limit", "200", "--eval-limit", "50", "--defence", "augmix", "--defence", "pgd-at",
                     "--eps", "8/255", "--steps", "2", "--output", str(out), "--no-progress"])
    assert code == 0
    meta = checkpoints.read_checkpoint(out)["meta"]
    assert meta["defence"]["names"] == ["augmix", "pgd-at"]
    assert meta["defence"]["settings"]["pgd-at"]["eps"] == pytest.approx(8 / 255)
    assert meta["defence"]["settings"]["pgd-at"]["steps"] == 2
    capsys.readouterr()
    assert cli.main(["list", "defences"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in NAMED)


def test_defended_run_never_overwrites_the_cached_baseline(cache_home):
    recipe = train_mod.resolve_recipe(TrainConfig())
    cfg = TrainConfig()
    assert train_mod.default_output(cfg, recipe, "standard") == train_mod.baseline_path(
        cfg.model, cfg.dataset, cfg.seed)
    assert train_mod.default_output(cfg, recipe, "pgd-at").parent.name == "checkpoints"
    custom = train_mod.resolve_recipe(TrainConfig(epochs=1))
    assert custom.name == "custom"
    assert train_mod.default_output(cfg, custom, "standard") != train_mod.baseline_path(cfg.model, cfg.dataset, 0)
    assert train_mod.resolve_recipe(TrainConfig(epochs=train_mod.QUICK.epochs)).name == "quick"


class _Stop(KeyboardInterrupt):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("defence", ["augmix,pgd-at", "mixup,gaussian-noise", "balanced-sampler,gce"])
def test_resumed_run_equals_uninterrupted_run(defence, tmp_path):
    kw = dict(epochs=2, limit=320, batch_size=64)
    _, meta_full, full = train_mod.train(tiny_config(tmp_path / "a", defence, **kw), log=lambda m: None)

    cfg = tiny_config(tmp_path / "b", defence, **kw)
    calls = []

    def interrupt(epoch, step):
        calls.append((epoch, step))
        if (epoch, step) == (1, 1):  # mid-way through the second epoch
            raise _Stop

    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, log=lambda m: None, on_step=interrupt)
    state = train_mod.state_path(tmp_path / "b" / "m.pt")
    assert state.is_file() and not (tmp_path / "b" / "m.pt").exists()

    cfg.resume = True
    logs = []
    _, meta_resumed, resumed = train_mod.train(cfg, log=logs.append)
    assert any("resuming from" in line and "step 2" in line for line in logs), logs
    assert not state.exists(), "the state file is removed once the checkpoint is written"
    a, b = checkpoints.read_checkpoint(full)["state_dict"], checkpoints.read_checkpoint(resumed)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resuming"
    assert meta_full["history"] == meta_resumed["history"]


def test_resume_refuses_a_state_from_other_settings(tmp_path):
    cfg = tiny_config(tmp_path, "pgd-at", epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(cfg, log=lambda m: None, on_step=lambda e, s: (_ for _ in ()).throw(_Stop))
    other = tiny_config(tmp_path, "pgd-at", epochs=2, resume=True, seed=1)
    with pytest.raises(RobustEvalError, match="other settings"):
        train_mod.train(other, log=lambda m: None)
    assert train_mod.state_path(tmp_path / "m.pt").is_file(), "a refused resume must keep the state"


class Readings(train_mod.Trainer):
    """A trainer whose held-out check returns fixed (clean, robust) readings, through the monitor seam."""

    def __init__(self, cfg, readings, log=lambda m: None):
        super().__init__(cfg, log)
        self.readings = iter(readings)
        self.watched = []  # the weights at each check

    def monitor(self):
        self.watched.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return next(self.readings)


def test_fgsm_rs_stops_at_catastrophic_overfitting_and_keeps_the_best_epoch(tmp_path):
    logs = []
    trainer = Readings(tiny_config(tmp_path, "fgsm-rs", epochs=3), [(0.9, 0.6), (0.95, 0.05), (0.95, 0.0)],
                       log=logs.append)
    model, meta, _ = trainer.run()
    kept = {"epoch1": trainer.watched[0]}
    assert meta["defence"]["stopped_early"] and meta["defence"]["selected_epoch"] == 1
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["history"][1]["catastrophic_overfitting"]
    assert any("catastrophic overfitting" in line for line in logs)
    for key, value in kept["epoch1"].items():
        assert torch.equal(model.state_dict()[key], value), f"{key}: the best epoch's weights were not kept"


def test_fine_tuning_pretrained_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    spec = models.MODELS.entry("shufflenetv2_x0_5")
    _, path = models.weights_file(spec)
    torch.manual_seed(1)
    stock = spec.builder(weights=None)
    path.parent.mkdir(parents=True)
    torch.save(stock.state_dict(), path)
    _, meta, out = train_mod.train(tiny_config(tmp_path, "augmix", pretrained=True), log=lambda m: None)
    assert meta["init"] == "imagenet" and meta["pretrained"]
    assert checkpoints.load_checkpoint(out)[1]["defence"]["names"] == ["augmix"]


def test_defence_names_parse():
    assert defences.parse_names("augmix, pgd-at") == ["augmix", "pgd-at"]
    assert defences.parse_names(None) == defences.parse_names("none") == []
    with pytest.raises(RobustEvalError, match="listed twice"):
        defences.parse_names("mixup,mixup")


@pytest.mark.slow
def test_ctrl_c_saves_state_and_resume_finishes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m.pt"
    argv = [sys.executable, "-m", "robustbench_lite", "train", "--model", "shufflenetv2_x0_5", "--dataset", "digits",
            "--epochs", "3", "--batch-size", "16", "--defence", "pgd-at", "--steps", "3", "--output", str(out),
            "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait until the loop runs
        lines.append(line)
        if line.startswith("watching PGD-10"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, rest
    assert "state saved to" in rest and "--resume" in rest
    state = train_mod.state_path(out)
    assert state.is_file() and not out.exists()
    done = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stderr
    assert out.is_file() and not state.exists()
    assert checkpoints.read_checkpoint(out)["meta"]["defence"]["names"] == ["pgd-at"]


def test_defences_from_a_yaml_config(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("defence: augmix,gaussian-noise\nnoise-std: 0.05\nepochs: 1\nlimit: 128\n")
    out = tmp_path / "m.pt"
    code = cli.main(["train", "--config", str(config), "--model", "shufflenetv2_x0_5", "--dataset", "digits",
                     "--output", str(out), "--no-progress", "--eval-limit", "32"])
    assert code == 0, capsys.readouterr().err
    settings = checkpoints.read_checkpoint(out)["meta"]["defence"]["settings"]
    assert list(settings) == ["augmix", "gaussian-noise"] and settings["gaussian-noise"]["noise_std"] == 0.05


@pytest.mark.parametrize(("last", "kept"), [(0.65, 2), (0.5, 1)])
def test_last_epoch_is_kept_unless_clearly_less_robust(last, kept, tmp_path):
    """25 held-out images: one standard error at 70% is 9 points; 65% is a tie, 50% a real drop."""
    cfg = tiny_config(tmp_path, "pgd-at", epochs=2, defence_options={"steps": 1})
    _, meta, _ = Readings(cfg, [(0.9, 0.7), (0.9, last)]).run()
    assert meta["defence"]["heldout_images"] == 25
    assert meta["defence"]["selected_epoch"] == kept and not meta["defence"]["stopped_early"]


@pytest.mark.parametrize("argv", [
    [],
    ["--defence", "pgd-at", "--eps", "8/255", "--steps", "3"],
    ["--defence", "fgsm-rs", "--alpha", "0.05"],
    ["--defence", "augmix,gaussian-noise", "--jsd", "--severity", "4", "--noise-std", "0.05"],
    ["--defence", "trades", "--beta", "2", "--monitor-images", "50"],
])
def test_defence_options_round_trip_through_their_flags(argv):
    parser = train_command.parser()
    opts = DefenceOptions.from_args(parser.parse_args(argv))
    assert DefenceOptions.from_args(parser.parse_args(opts.to_args())) == opts


def test_a_shared_flag_is_given_once_and_reaches_each_defence_that_uses_it():
    opts = DefenceOptions.from_args(train_command.parser().parse_args(["--defence", "pgd-at", "--eps", "8/255"]))
    assert opts.params["pgd-at"].eps == pytest.approx(8 / 255)
    for name in ADVERSARIAL:
        assert "eps" in DEFENCES.entry(name).Params.flags()
    assert list(defences.FLAGS).count("eps") == 1


def test_a_flag_declared_differently_raises_at_registration():
    @dataclasses.dataclass(frozen=True)
    class OtherEps(defences.Params):
        eps: float = defences.param(0.1, defences.Flag("another budget", float))

    class Clash(defences.Defence):
        name = "clash"
        stage = "loss"
        Params = OtherEps

    with pytest.raises(ValueError, match="--eps differently"):
        defences.register_defence(Clash)
    assert "clash" not in DEFENCES and defences.FLAGS["eps"].help.startswith("adversarial training budget")


@pytest.mark.parametrize("name", ADVERSARIAL)
def test_only_fgsm_rs_stops_at_catastrophic_overfitting(name):
    pipeline = make_pipeline([name])
    best = {"epoch": 1, "robust_accuracy": 0.6}
    collapsed = [{"epoch": 1}, {"epoch": 2, "catastrophic_overfitting": True}]
    assert (pipeline.early_stop(collapsed, best) is not None) == (name == "fgsm-rs")
    assert pipeline.early_stop(collapsed[:1], best) is None


def test_typed_params_check_themselves_and_configs_take_only_typed_options():
    with pytest.raises(RobustEvalError, match="--steps must be"):
        DEFENCES.entry("pgd-at").Params(steps=0)
    with pytest.raises(RobustEvalError, match="unknown defence option 'epz'.*valid: defence, eps"):
        options("pgd-at", epz=0.1)
    with pytest.raises(RobustEvalError, match="defences must be DefenceOptions"):
        TrainConfig(defences="pgd-at").validate()
