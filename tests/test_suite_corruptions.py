"""The corruption suite end to end on real digits: JSON keys, scores, determinism, bad input."""

from __future__ import annotations

import json
import statistics

import pytest

from robustbench_lite import cli
from robustbench_lite.api import evaluate
from robustbench_lite.config import RunConfig
from robustbench_lite.suites.corruptions import resolve_corruptions, resolve_severities, scores


def corr_run(ckpt, limit=60, batch_size=256, **opts):
    cfg = RunConfig(checkpoint=str(ckpt), suites=["corruptions"], limit=limit, batch_size=batch_size,
                    show_progress=False, suite_options={"corruptions": opts})
    return evaluate(cfg, log=lambda m: None).suites["corruptions"]


def test_every_corruption_runs_on_8px_digits(digits_checkpoint, digits_test):
    import torch

    from corruptions import CORRUPTIONS
    from robustbench_lite.sources import checkpoints

    r = corr_run(digits_checkpoint, corruptions="all", severities="5")
    assert r.profile == "cifar"
    assert set(r.corruptions) | set(r.unavailable) == set(resolve_corruptions("all"))
    # Each score is the accuracy of the model on the whole set corrupted in one call, image i seeded by (0, i):
    # the suite's batching and per-image seeding must not change a single prediction.
    net, _ = checkpoints.load_checkpoint(digits_checkpoint)
    dataset = digits_test.limit(60)
    images, labels = dataset.float_images(), dataset.labels
    with torch.inference_mode():
        assert r.clean_accuracy == float((net(images).argmax(1) == labels).float().mean())
        for name in r.corruptions:
            assert 0 <= r.accuracy[name]["5"] <= 1
            corrupted = CORRUPTIONS.get(name, severity=5, profile="cifar", seed=0)(images, dataset.indices)
            corrupted = corrupted.mul(255).round().clamp(0, 255).div(255)  # scored as 8-bit images
            assert r.accuracy[name]["5"] == float((net(corrupted).argmax(1) == labels).float().mean()), name
    # the strongest severity costs accuracy on average
    assert r.mean_accuracy < r.clean_accuracy


def test_json_keys_and_accuracy_falls_with_severity(digits_checkpoint, tmp_path, capsys):
    out = tmp_path / "c.json"
    code = cli.main(["--checkpoint", str(digits_checkpoint), "--suite", "corruptions", "--limit", "150",
                     "--corruptions", "gaussian_noise,contrast,impulse_noise,pixelate", "--severities", "1,5",
                     "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    c = json.loads(out.read_text())["corruptions"]
    assert c["profile"] == "cifar" and c["normalised"] is False
    assert set(c["accuracy"]) == {"gaussian_noise", "contrast", "impulse_noise", "pixelate"}
    assert set(c["accuracy"]["contrast"]) == {"1", "5"}
    assert c["mean_accuracy"] == pytest.approx(statistics.fmean(v for d in c["accuracy"].values() for v in d.values()))
    assert c["accuracy_by_severity"]["5"] < c["accuracy_by_severity"]["1"]
    assert c["mce"] == pytest.approx(1 - c["mean_accuracy"])  # unnormalised mCE is the mean error
    assert "relative_mce" in c and c["corruption_seconds"] >= 0


def test_batch_size_does_not_change_results(digits_checkpoint):
    a = corr_run(digits_checkpoint, limit=50, batch_size=50, corruptions="noise,glass_blur", severities="3")
    b = corr_run(digits_checkpoint, limit=50, batch_size=7, corruptions="noise,glass_blur", severities="3")
    assert a.accuracy == b.accuracy


def test_mce_against_a_reference(digits_checkpoint, tmp_path, capsys):
    ref = tmp_path / "ref.json"
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "corruptions", "--limit", "80",
            "--corruptions", "gaussian_noise,contrast", "--severities", "2,4", "--no-progress"]
    assert cli.main([*argv, "--json", str(ref)]) == 0
    out = tmp_path / "o.json"
    assert cli.main([*argv, "--mce-reference", str(ref), "--json", str(out)]) == 0
    c = json.loads(out.read_text())["corruptions"]
    # the model against itself: every CE is exactly 1
    assert c["normalised"] is True and c["mce"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in c["ce"].values())
    code = cli.main([*argv, "--severities", "1", "--mce-reference", str(ref)])
    assert code == 2 and "lacks gaussian_noise@1" in capsys.readouterr().err


def test_scores_by_hand():
    acc = {"a": {"1": 0.8, "2": 0.6}, "b": {"1": 0.9, "2": 0.7}}
    ref = ({"a": {"1": 0.6, "2": 0.2}, "b": {"1": 0.8, "2": 0.4}}, 0.9)
    s = scores(acc, 0.95, ["a", "b"], [1, 2], ref)
    assert s["ce"]["a"] == pytest.approx((0.2 + 0.4) / (0.4 + 0.8))
    assert s["ce"]["b"] == pytest.approx((0.1 + 0.3) / (0.2 + 0.6))
    assert s["relative_ce"]["a"] == pytest.approx((0.15 + 0.35) / (0.3 + 0.7))
    assert s["mce"] == pytest.approx((s["ce"]["a"] + s["ce"]["b"]) / 2)


def test_groups_and_severities():
    assert resolve_corruptions(None)[:3] == ["gaussian_noise", "shot_noise", "impulse_noise"]
    assert len(resolve_corruptions(None)) == 15 and len(resolve_corruptions("all")) == 19
    assert resolve_corruptions("noise") == ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"]
    assert resolve_severities("5,1,1") == [1, 5]


@pytest.mark.parametrize("argv,needle", [
    (["--corruptions", "gausian_noise"], "Did you mean 'gaussian_noise'"),
    (["--severities", "0"], "--severities must be an integer in 1..5, got 0"),
    (["--severities", "x"], "--severities takes an integer, got 'x'"),
    (["--profile", "tiny"], "--profile 'tiny' is not valid; choose one of auto, cifar, imagenet"),
    (["--corruption-backend", "imagecorruptions", "--profile", "cifar"], "imagenet profile only"),
    (["--mce-reference", "/nonexistent.json"], "does not exist"),
])
def test_bad_input_exits_2(digits_checkpoint, capsys, argv, needle):
    code = cli.main(["--checkpoint", str(digits_checkpoint), "--suite", "corruptions", "--limit", "10", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err


def test_cache_writes_cifar10c_layout_and_reuses_it(digits_checkpoint, tmp_path):
    import numpy as np

    cache = tmp_path / "cache"
    opts = dict(corruptions="gaussian_noise,contrast", severities="2,3", cache=str(cache))
    first = corr_run(digits_checkpoint, limit=40, **opts)
    assert first.cache["misses"] == 4 and first.cache["hits"] == 0
    folder = next(cache.iterdir())
    assert (folder / "labels.npy").is_file()
    second = corr_run(digits_checkpoint, limit=40, **opts)
    assert second.cache["hits"] == 4 and second.accuracy == first.accuracy
    # all five severities present -> the CIFAR-10-C file layout: <name>.npy, 5N x H x W x C uint8
    corr_run(digits_checkpoint, limit=40, corruptions="contrast", cache=str(cache))
    arr = np.load(folder / "contrast.npy")
    assert arr.shape == (5 * 40, 8, 8, 1) and arr.dtype == np.uint8
    # a damaged file is detected and rebuilt, never used
    (folder / "contrast.npy").write_bytes(b"garbage")
    third = corr_run(digits_checkpoint, limit=40, corruptions="contrast", severities="2,3", cache=str(cache))
    assert third.cache["misses"] == 2 and third.accuracy["contrast"] == first.accuracy["contrast"]
    fourth = corr_run(digits_checkpoint, limit=40, corruptions="contrast", severities="2,3", cache=str(cache))
    assert fourth.cache["hits"] == 2 and fourth.accuracy == third.accuracy


def test_published_c_directory_is_scored_as_is(tmp_path, capsys):
    """cifar10-c:PATH: the suite scores the files, not its own corruptions."""
    import json
    import pickle

    import numpy as np
    import torch

    from robustbench_lite import models
    from robustbench_lite.sources import checkpoints

    rng = np.random.default_rng(0)
    clean_dir = tmp_path / "data" / "cifar-10-batches-py"
    clean_dir.mkdir(parents=True)
    imgs = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
    labels = (np.arange(12) % 10).tolist()
    (clean_dir / "test_batch").write_bytes(pickle.dumps({b"data": imgs, b"labels": labels}, protocol=2))
    cdir = tmp_path / "CIFAR-10-C"
    cdir.mkdir()
    nhwc = imgs.reshape(12, 3, 32, 32).transpose(0, 2, 3, 1)
    np.save(cdir / "fog.npy", np.concatenate([nhwc] * 5))
    np.save(cdir / "labels.npy", np.array(labels * 5, dtype=np.uint8))
    torch.manual_seed(0)
    m = models.build("shufflenetv2_x0_5", 10, 3, 32)
    meta = {**checkpoints.architecture_meta(m, "shufflenetv2_x0_5", 10, 32, False), "dataset": "cifar10"}
    ckpt = checkpoints.save_checkpoint(tmp_path / "m.pt", m, meta)
    out = tmp_path / "o.json"
    code = cli.main(["--checkpoint", str(ckpt), "--dataset", f"cifar10-c:{cdir}", "--data-dir", str(tmp_path / "data"),
                     "--suite", "clean,corruptions", "--json", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    c = r["corruptions"]
    assert c["profile"] == "precomputed" and c["corruptions"] == ["fog"]
    # the "corrupted" copies are the clean images, so every severity scores the clean accuracy
    assert all(v == pytest.approx(r["clean"]["accuracy"]) for v in c["accuracy"]["fog"].values())
