"""robust-eval monitor: drift tests at their nominal false-positive rate, label-free accuracy estimates that
hold where their assumptions do, and the fit/check commands from a profile file to a verdict."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_lite import cli, data
from robustbench_lite.analysis import drift, labelfree
from robustbench_lite.analysis import monitor as monitor_mod
from robustbench_lite.monitoring import monitor_check, monitor_fit


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the tests themselves ------------------------------------------------------------------------


def test_mmd_equals_the_direct_sum_and_its_permutation_p_value_the_exact_one():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 2, generator=gen).double(), torch.randn(3, 2, generator=gen).double() + 1.0
    sigma = 1.3

    def k(a, b):
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * sigma * sigma))

    def mmd2(a, b):
        n, m = len(a), len(b)
        xx = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        xy = sum(k(a[i], b[j]) for i in range(n) for j in range(m)) / (n * m)
        return xx + yy - 2 * xy

    result = drift.mmd_test(x, y, bandwidth=sigma, permutations=20000, seed=1)
    assert result.statistic == pytest.approx(mmd2(x, y), rel=1e-9)
    # every split of the 6 points into 3 + 3 is equally likely under no drift: the exact p-value
    z = torch.cat([x, y])
    splits = [mmd2(z[list(s)], z[[i for i in range(6) if i not in s]]) for s in itertools.combinations(range(6), 3)]
    exact = sum(v >= mmd2(x, y) - 1e-12 for v in splits) / len(splits)
    assert result.p_value == pytest.approx(exact, abs=0.01)


def test_ks_p_values_follow_scipy():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    for n, m, shift in [(100, 100, 0.3), (500, 400, 0.1), (1000, 200, 0.15), (300, 300, 0.0)]:
        a, b = torch.randn(n, generator=gen), torch.randn(m, generator=gen) + shift
        ours = drift.ks_test(a, b)
        ref = stats.ks_2samp(a.numpy(), b.numpy(), method="asymp")
        assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
        assert ours.p_value == pytest.approx(ref.pvalue, rel=0.05, abs=1e-4)


def test_tests_reject_at_their_nominal_rate_without_drift_and_detect_a_shift():
    gen = torch.Generator().manual_seed(0)
    trials = 200
    rejected = {"mmd": 0, "ks-features": 0}
    for t in range(trials):
        x, y = torch.randn(40, 4, generator=gen), torch.randn(30, 4, generator=gen)
        rejected["mmd"] += drift.mmd_test(x, y, permutations=99, seed=t).detected()
        rejected["ks-features"] += drift.ks_features(x, y).detected()
    # binomial(200, 0.05): 10 expected, 3-19 covers 99.8%; Bonferroni makes KS conservative (at most alpha)
    assert 3 <= rejected["mmd"] <= 19, rejected
    assert rejected["ks-features"] <= 19, rejected
    x, y = torch.randn(60, 4, generator=gen), torch.randn(60, 4, generator=gen) + 0.8
    assert drift.mmd_test(x, y, permutations=99).detected() and drift.ks_features(x, y).detected()


# -- label-free estimates ------------------------------------------------------------------------


def test_atc_threshold_leaves_the_accuracy_above_it():
    rng = np.random.default_rng(0)
    scores, correct = rng.random(1000), rng.random(1000) < 0.73
    t = labelfree.atc_threshold(scores, correct)
    assert labelfree.atc_estimate(scores, t) == pytest.approx(correct.mean(), abs=1e-3)
    assert labelfree.atc_estimate(scores, labelfree.atc_threshold(scores, np.ones(1000, bool))) == 1.0
    assert labelfree.atc_estimate(scores, labelfree.atc_threshold(scores, np.zeros(1000, bool))) == 0.0


def test_atc_recovers_the_accuracy_of_shifted_data_built_for_it():
    """Correct exactly when a latent margin clears a cut; the score is that margin plus noise. A shift moves the
    margins: ATC's threshold transfers, and the truth lies inside its interval."""
    rng = np.random.default_rng(1)

    def sample(n, centre):
        margin = rng.normal(centre, 1.0, n)
        return margin + rng.normal(0, 0.05, n), margin > 0

    ref_scores, ref_correct = sample(3000, 1.2)  # ~88% accurate
    new_scores, new_correct = sample(2000, 0.3)  # shifted: ~62%
    confidence = 1 / (1 + np.exp(-new_scores))
    est = labelfree.estimate_accuracy(ref_scores, ref_correct, new_scores, confidence, bootstrap=300)
    atc, truth = est["atc"], new_correct.mean()
    assert atc.interval[0] <= truth <= atc.interval[1], (atc, truth)
    assert abs(atc.value - truth) < 0.02 and atc.interval[1] - atc.interval[0] < 0.06


def test_bbse_recovers_shifted_class_priors():
    rng = np.random.default_rng(2)
    classes = 4
    confusion = np.full((classes, classes), 0.05) + np.eye(classes) * 0.8  # columns sum to 1
    priors = np.array([0.55, 0.25, 0.15, 0.05])
    labels = rng.choice(classes, 20000, p=priors)
    predictions = np.array([rng.choice(classes, p=confusion[:, y]) for y in labels])
    estimated = labelfree.bbse_priors(confusion, predictions)
    assert np.abs(estimated - priors).max() < 0.02
    reference = labelfree.confusion_given_class(predictions, labels, classes)
    assert np.allclose(reference.sum(0), 1) and np.abs(reference - confusion).max() < 0.02


# -- the whole monitor on a model ----------------------------------------------------------------


class _Tiny(nn.Module):
    """A fixed linear classifier on 2x2 grey images with a one-unit hidden layer for features."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(x.flatten(1))))


def test_the_monitors_decision_keeps_its_false_positive_rate_on_in_distribution_data():
    net = _Tiny().eval()
    gen = torch.Generator().manual_seed(3)
    pool = torch.rand(20000, 1, 2, 2, generator=gen)
    with torch.no_grad():
        labels = net(pool).argmax(1)
    flip = torch.rand(len(pool), generator=gen) < 0.2  # the model is wrong on a fifth
    labels = torch.where(flip, (labels + 1) % 3, labels)
    trials, detected, covered = 40, 0, 0
    for t in range(trials):  # a fresh reference and fresh new images each time: independent trials
        ref, new = slice(t * 500, t * 500 + 400), slice(t * 500 + 400, (t + 1) * 500)
        profile = monitor_mod.fit(net, pool[ref], labels[ref], ["a", "b", "c"])
        report = monitor_mod.check(profile, net, pool[new], labels[new], permutations=99, seed=t)
        detected += report["drift"]
        atc = report["accuracy"]["atc"]
        covered += atc["ci"][0] <= 0.8 <= atc["ci"][1]  # the population's accuracy: a fifth of labels flipped
    assert detected <= 6, detected  # alpha 0.05 of 40 is 2; 7 or more has probability < 0.01
    assert covered >= 34, covered  # a 95% interval: 38 expected, 33 or fewer has probability < 0.01
    shifted = (pool[-200:] * 0.5 + 0.5).clamp(0, 1)  # brighter images
    assert monitor_mod.check(profile, net, shifted, permutations=99)["drift"]


def test_a_model_without_pytorch_layers_is_profiled_on_its_softmax():
    class Fixed(nn.Module):
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), 1 - x.mean((1, 2, 3))], 1) * 5

    images = torch.rand(100, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    labels = (images.mean((1, 2, 3)) < 0.5).long()
    profile = monitor_mod.fit(Fixed(), images, labels, ["bright", "dark"])
    assert profile.meta["features"] == "softmax" and profile.meta["components"] == 2
    report = monitor_mod.check(profile, Fixed(), images * 0.3, permutations=49)
    assert report["drift"] and report["priors"]["estimated"][1] > 0.9


# -- the commands --------------------------------------------------------------------------------


def _write_folder(folder, images):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im[0].numpy()).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Held-out digits test images (not in the profile) as a folder, and the same images under heavy noise."""
    test = data.load("digits", "test")
    root = tmp_path_factory.mktemp("monitor")
    held = test.images[200:]
    gen = torch.Generator().manual_seed(0)
    noisy = (held.float() + torch.randn(held.shape, generator=gen) * 90).clamp(0, 255).round().to(torch.uint8)
    return {"clean": _write_folder(root / "clean", held), "noisy": _write_folder(root / "noisy", noisy),
            "empty": _write_folder(root / "empty", []), "root": root}


@pytest.fixture(scope="module")
def profile_file(digits_checkpoint, folders):
    path = folders["root"] / "digits.monitor.safetensors"
    assert cli.main(["monitor", "fit", "--checkpoint", str(digits_checkpoint), "--images", "200", "-o", str(path),
                     "--device", "cpu"]) == 0
    return path


def test_fit_then_check_from_the_command_line(profile_file, folders, tmp_path, capsys):
    code, out, err = run(capsys, "monitor", "check", "--profile", str(profile_file), "--data",
                         f"imagefolder:{folders['clean']}", "--permutations", "199", "--gate")
    assert code == 0, err
    assert "drift: not detected on 250 images" in out and "estimated accuracy:" in out
    report_path = tmp_path / "noisy.json"
    code, out, err = run(capsys, "monitor", "check", "--profile", str(profile_file), "--data",
                         f"imagefolder:{folders['noisy']}", "--permutations", "199", "--json", str(report_path),
                         "--gate")
    assert code == 1 and "drift: DETECTED on 250 images" in out and "drift detected" in err
    report = json.loads(report_path.read_text())  # written before the gate's exit
    assert report["drift"] and report["tests"]["mmd"]["p_value"] <= 0.05 / 3
    assert report["features"].startswith("penultimate") and "true" not in report["accuracy"]
    # the noise costs accuracy, and the estimate sees it fall below the reference's
    assert report["accuracy"]["atc"]["value"] < report["accuracy"]["reference"] - 0.1


def test_python_api_with_labelled_data_reports_the_true_accuracy(digits_checkpoint):
    test = data.load("digits", "test")
    profile = monitor_fit(digits_checkpoint, "digits", images=200, device="cpu")
    report = monitor_check(profile, (test.images[200:], test.labels[200:], test.classes), permutations=99)
    acc = report["accuracy"]
    assert not report["drift"] and 0 <= acc["true"] <= 1
    assert acc["atc"]["error"] == pytest.approx(acc["atc"]["value"] - acc["true"])
    assert abs(acc["atc"]["error"]) < 0.1 and len(report["priors"]["estimated"]) == 10


@pytest.mark.parametrize(("case", "needle"), [
    ("garbage", "is not a monitor profile"),
    ("other-safetensors", "is a safetensors file but not a monitor profile"),
    ("missing", "does not exist; make one with 'robust-eval monitor fit'"),
    ("empty-folder", "holds no images"),
    ("wrong-model", "this model is not the one the profile was fitted on"),
    ("alpha", "--alpha 1.5 must be a probability in (0, 1)"),
])
def test_bad_profiles_wrong_models_and_empty_folders_get_one_line(case, needle, profile_file, folders, tmp_path,
                                                                  capsys):
    from safetensors.torch import save_file

    from robustbench_lite.sources import architectures, checkpoints

    profile, data_spec, extra = str(profile_file), f"imagefolder:{folders['clean']}", []
    if case == "garbage":
        profile = str(tmp_path / "p.safetensors")
        (tmp_path / "p.safetensors").write_bytes(b"\x00" * 64)
    elif case == "other-safetensors":
        profile = str(tmp_path / "w.safetensors")
        save_file({"w": torch.zeros(2)}, profile)
    elif case == "missing":
        profile = str(tmp_path / "none.safetensors")
    elif case == "empty-folder":
        data_spec = f"imagefolder:{folders['empty']}"
    elif case == "wrong-model":
        other = tmp_path / "other.pt"
        torch.manual_seed(5)
        net = architectures.build("shufflenetv2_x0_5", 10, 1, 8)
        checkpoints.save_checkpoint(other, net, {**checkpoints.architecture_meta(net, "shufflenetv2_x0_5", 10, 8,
                                                                                 False), "dataset": "digits"})
        extra = ["--checkpoint", str(other)]
    elif case == "alpha":
        extra = ["--alpha", "1.5"]
    out_json = tmp_path / "r.json"
    code, out, err = run(capsys, "monitor", "check", "--profile", profile, "--data", data_spec, *extra,
                         "--json", str(out_json))
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not out_json.exists()


# -- the monitor suite ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def suite_run(digits_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    argv = ["--checkpoint", str(digits_checkpoint), "--suite", "clean,monitor", "--monitor-corruptions",
            "gaussian_noise,contrast", "--monitor-severities", "1,5", "--monitor-sizes", "50,150",
            "--monitor-shifts", "covariate/rotation,label/dirichlet",
            "--monitor-trials", "4", "--json", str(out / "r.json"), "--html", str(out / "r.html"), "--no-history",
            "--no-progress", "--device", "cpu", "--gate", "monitor.power >= 0.5"]
    assert cli.main(argv) == 0
    return json.loads((out / "r.json").read_text()), (out / "r.html").read_text()


def test_monitor_suite_measures_detection_and_estimation_per_condition(suite_run):
    results, html = suite_run
    block = results["monitor"]
    assert block["reference_images"] == 225 and block["pool_images"] == 225 and block["sizes"] == [50, 150]
    assert list(block["conditions"]) == ["clean", "gaussian_noise.1", "gaussian_noise.5", "contrast.1", "contrast.5",
                                         "covariate/rotation.1", "covariate/rotation.5", "label/dirichlet.alpha=0.1",
                                         "label/dirichlet.alpha=1", "label/dirichlet.alpha=10"]
    worst = block["conditions"]["contrast.5"]
    assert worst["accuracy"] < block["conditions"]["clean"]["accuracy"] - 0.1  # low contrast costs accuracy
    assert worst["sizes"]["150"]["detection_rate"] == 1.0  # and a monitor sees it from 150 images
    for c in block["conditions"].values():
        for size in c["sizes"].values():
            assert 0 <= size["detection_rate"] <= 1 and 0 <= size["atc_mae"] <= 1
            # the mean absolute error is at least the error of the means
            assert size["atc_mae"] >= abs(size["atc_mean"] - size["true_mean"]) - 1e-9
    assert block["false_positive_rate"] == {n: block["conditions"]["clean"]["sizes"][n]["detection_rate"]
                                            for n in ("50", "150")}
    for n in ("50", "150"):  # each rate with its Wilson interval over the 4 checks
        low, high = block["false_positive_ci"][n]
        assert low <= block["false_positive_rate"][n] <= high and high - low > 0.3
    assert block["power"] == pytest.approx(np.mean([block["conditions"][k]["sizes"]["150"]["detection_rate"]
                                                    for k in block["conditions"] if k != "clean"]))
    # label shift: BBSE's class priors are scored against the drawn ones (total variation, in [0, 1])
    skewed = block["conditions"]["label/dirichlet.alpha=0.1"]["sizes"]["150"]
    assert 0 <= skewed["prior_error"] < 0.5 and "prior_error" not in worst["sizes"]["150"]
    assert "Monitor: would drift be noticed?" in html and "gaussian_noise.5" in html


def test_monitor_suite_is_not_in_full_and_its_options_are_checked_first(digits_checkpoint, tmp_path, capsys):
    from robustbench_lite.suites import expand_suites

    assert "monitor" not in expand_suites(["full"])
    for bad, needle in ((["--monitor-sizes", "1"], "--monitor-sizes"), (["--monitor-alpha", "2"], "--monitor-alpha 2"),
                        (["--monitor-corruptions", "smog"], "smog"), (["--monitor-shifts", "covariate/tilt"], "tilt"),
                        (["--limit", "30"], "at least 40 test images")):
        code, _, err = run(capsys, "--checkpoint", str(digits_checkpoint), "--suite", "monitor", *bad,
                           "--json", str(tmp_path / "r.json"), "--no-history")
        assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "r.json").exists()
