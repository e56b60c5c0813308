"""Training-data stress: exact per-class counts, noise at its rate and in its pattern, seeded, recorded in the
checkpoint; impossible settings refused in one line before any training."""

from __future__ import annotations

import json

import pytest
import torch

from robustbench_lite import cli
from robustbench_lite.sources.checkpoints import load_checkpoint
from robustbench_lite.training.stressors import StressOptions, apply

LABELS = torch.arange(10).repeat_interleave(100)  # 10 classes x 100 images


def counts(stress):
    return torch.bincount(LABELS[stress.indices], minlength=10).tolist()


def test_small_data_and_imbalance_keep_exact_counts():
    assert counts(apply(LABELS, 10, StressOptions(fraction=0.1), 0)) == [10] * 10
    assert counts(apply(LABELS, 10, StressOptions(per_class=7), 0)) == [7] * 10
    # exp: 100 * 100 ** (-c / 9): the first class keeps its images, the last 1/100 of them
    exp = counts(apply(LABELS, 10, StressOptions(imbalance=100), 0))
    assert exp == [int(100 * 100 ** (-c / 9) + 1e-9) for c in range(10)] and exp[0] == 100 and exp[-1] == 1
    assert counts(apply(LABELS, 10, StressOptions(imbalance=10, profile="step"), 0)) == [100] * 5 + [10] * 5
    # combined: a fifth of the data, then long-tailed on what is left
    assert counts(apply(LABELS, 10, StressOptions(fraction=0.2, imbalance=4), 0))[::9] == [20, 5]
    stress = apply(LABELS, 10, StressOptions(fraction=0.3), 0)
    assert stress.record["class_counts"] == [30] * 10 and stress.record["images"] == 300
    assert torch.equal(stress.indices, stress.indices.sort().values) and len(set(stress.indices.tolist())) == 300


def test_noise_has_its_rate_and_pattern_and_is_seeded(tmp_path):
    labels = torch.arange(10).repeat(3000)
    sym = apply(labels, 10, StressOptions(label_noise="sym:0.2"), 0)
    flipped = sym.labels != labels
    assert abs(float(flipped.float().mean()) - 0.2) < 0.01
    assert sym.record["changed_indices"] == torch.nonzero(flipped).flatten().tolist()
    offsets = torch.bincount((sym.labels[flipped] - labels[flipped]) % 10, minlength=10)
    assert offsets[0] == 0 and (offsets[1:].float() / flipped.sum() - 1 / 9).abs().max() < 0.015  # uniform
    pair = apply(labels, 10, StressOptions(label_noise="pair:0.3"), 0)
    moved = pair.labels != labels
    assert abs(float(moved.float().mean()) - 0.3) < 0.01
    assert torch.equal(pair.labels[moved], (labels[moved] + 1) % 10)  # systematic: always the next class
    matrix = torch.eye(10) * 0.6
    matrix[:, 3] += 0.4  # everything confused with class 3 (class 3 stays itself)
    path = tmp_path / "confusion.json"
    path.write_text(json.dumps(matrix.tolist()))
    conf = apply(labels, 10, StressOptions(label_noise=f"confusion:{path}"), 0)
    empirical = torch.zeros(10, 10)
    empirical.index_put_((labels, conf.labels), torch.ones(len(labels)), accumulate=True)
    assert (empirical / empirical.sum(1, keepdim=True) - matrix).abs().max() < 0.03
    again, other = apply(labels, 10, StressOptions(label_noise="sym:0.2"), 0), apply(
        labels, 10, StressOptions(label_noise="sym:0.2"), 1)
    assert torch.equal(again.labels, sym.labels) and not torch.equal(other.labels, sym.labels)


def test_noise_from_a_models_own_confusions_at_a_chosen_rate(digits_checkpoint, tmp_path):
    results = tmp_path / "base.json"  # what a user has: robust-eval --suite clean --json of their model
    assert cli.main(["--checkpoint", str(digits_checkpoint), "--dataset", "digits", "--suite", "clean",
                     "--limit", "400", "--json", str(results), "--no-progress"]) == 0
    cm = torch.tensor(json.loads(results.read_text())["clean"]["confusion_matrix"], dtype=torch.float64)
    labels = torch.arange(10).repeat_interleave(3000)
    as_is = apply(labels, 10, StressOptions(label_noise=f"confusion:{results}"), 0)
    recorded = torch.tensor(as_is.record["noise"]["matrix"], dtype=torch.float64)
    assert torch.allclose(recorded, cm / cm.sum(1, keepdim=True))
    assert as_is.record["noise"]["rate"] is None
    at = apply(labels, 10, StressOptions(label_noise=f"confusion:{results}@0.3"), 0)
    off = cm - torch.diag(torch.diag(cm))
    confused = off.sum(1) > 0  # a class the model never confuses keeps its labels
    assert 0 < int(confused.sum()) <= 10
    expected = torch.eye(10, dtype=torch.float64)
    expected[confused] = 0.3 * off[confused] / off[confused].sum(1, keepdim=True)
    expected[confused, torch.arange(10)[confused]] = 0.7
    assert torch.allclose(torch.tensor(at.record["noise"]["matrix"], dtype=torch.float64), expected)
    moved = at.labels != labels
    assert at.record["noise"]["rate"] == 0.3 and at.record["changed_indices"] == torch.nonzero(moved).flatten().tolist()
    per_class = torch.zeros(10).index_add_(0, labels, moved.float()) / 3000
    assert (per_class[confused] - 0.3).abs().max() < 0.03 and per_class[~confused].sum() == 0
    assert StressOptions(label_noise=f"confusion:{results}@0.3").label() == "confusion0.3"


def test_the_checkpoint_records_the_stress(tmp_path):
    out = tmp_path / "m.pt"
    assert cli.main(["train", "--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "1",
                     "--imbalance", "10", "--label-noise", "sym:0.2", "--output", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    _, meta = load_checkpoint(out)
    stress = meta["stress"]
    assert stress["imbalance"] == 10 and stress["profile"] == "exp" and stress["label_noise"] == "sym:0.2"
    assert stress["class_counts"][0] > stress["class_counts"][-1] == stress["class_counts"][0] // 10
    assert meta["train_images"] == stress["images"] == sum(stress["class_counts"])
    assert stress["noise"]["changed"] == len(stress["changed_indices"]) > 0
    # the clean suite splits the classes by training images: frequent, medium and rare thirds
    from robustbench_lite.api import evaluate

    evaluated = evaluate(str(out), "digits", "clean,corruptions,adversarial,shift", device="cpu", corruptions="fog",
                         severities="1,5", attack="fgsm", eps="0.1", shift_splits="covariate/rotation",
                         shift_intensities="1,5")
    result = evaluated.to_dict()
    clean = result["clean"]
    # the printed summary lines name the worst class and give each group's accuracy
    summary = evaluated.suites["clean"].summary()
    assert summary["worst class"] == f"{clean['worst_class']} {clean['worst_class_accuracy']:.4f}"
    assert summary["rare classes"] == round(clean["group_accuracy"]["rare"], 4)
    corrupted = result["corruptions"]
    assert evaluated.suites["corruptions"].summary()["worst class"] == (
        f"{corrupted['worst_class']} {corrupted['worst_class_mean_accuracy']:.4f}")
    assert clean["groups"] == {"frequent": ["0", "1", "2"], "medium": ["3", "4", "5", "6"], "rare": ["7", "8", "9"]}
    assert set(clean["group_accuracy"]) == {"frequent", "medium", "rare"}
    low, high = clean["ci"]["group_accuracy.rare"]
    assert low <= clean["group_accuracy"]["rare"] <= high
    present = [a for a in clean["per_class_accuracy"] if a == a]
    assert clean["worst_class_accuracy"] == min(present)
    from sklearn.metrics import precision_score

    cm = torch.tensor(clean["confusion_matrix"])  # rows: true class, columns: prediction
    y_true = torch.arange(10).repeat_interleave(cm.sum(1))
    y_pred = torch.cat([torch.arange(10).repeat_interleave(row) for row in cm])
    expected = precision_score(y_true.numpy(), y_pred.numpy(), labels=list(range(10)), average=None, zero_division=0)
    got = [p if p is not None and p == p else 0.0 for p in clean["per_class_precision"]]  # never predicted
    assert got == pytest.approx(expected.tolist())
    assert clean["worst_class"] == str(clean["per_class_accuracy"].index(min(present)))
    # beside the corruption and adversarial headlines: the same groups' accuracy under each
    groups = result["corruptions"]["group_mean_accuracy"]
    assert set(groups) == {"frequent", "medium", "rare"} and all(0 <= v <= 1 for v in groups.values())
    corrupted = result["corruptions"]
    per_class = corrupted["per_class_mean_accuracy"]
    assert corrupted["worst_class_mean_accuracy"] == min(per_class)
    assert corrupted["worst_class"] == str(per_class.index(min(per_class)))
    assert sum(per_class) / 10 == pytest.approx(corrupted["mean_accuracy"], abs=0.05)  # digits' classes near-balanced
    low, high = corrupted["ci"]["worst_class_mean_accuracy"]
    assert low <= corrupted["worst_class_mean_accuracy"] <= high
    low, high = clean["ci"]["worst_class_accuracy"]
    assert low <= clean["worst_class_accuracy"] <= high
    shifted = result["shift"]["splits"]["covariate/rotation"]
    assert set(shifted["group_accuracy"]) == {"frequent", "medium", "rare"}
    per_class = [sum(lv["per_class_accuracy"][int(c)] for lv in shifted["levels"]) / len(shifted["levels"])
                 for c in clean["groups"]["rare"]]
    assert shifted["group_accuracy"]["rare"] == pytest.approx(sum(per_class) / 3)
    assert result["shift"]["group_mean_accuracy"] == shifted["group_accuracy"]  # one split in the summary
    worst = result["adversarial"]["worst_class_robust_accuracy"]["fgsm.Linf[0.1]"]
    assert worst["accuracy"] <= min(robust_group for robust_group in
                                    result["adversarial"]["group_robust_accuracy"]["fgsm.Linf[0.1]"].values())
    robust = result["adversarial"]["group_robust_accuracy"]["fgsm.Linf[0.1]"]
    assert set(robust) == {"frequent", "medium", "rare"}
    for group in robust:  # an attack never raises a group's accuracy above its clean accuracy
        assert robust[group] <= clean["group_accuracy"][group] + 1e-9
        low, high = result["adversarial"]["ci"][f"group_robust_accuracy.fgsm.Linf[0.1].{group}"]
        assert low <= robust[group] <= high


@pytest.mark.parametrize(("flags", "needle"), [
    (["--imbalance", "0.5"], "--imbalance 0.5 must be a ratio >= 1"),
    (["--label-noise", "sym:0.9"], "leaves the labels no information with 10 classes"),
    (["--label-noise", "pair:0.5"], "give a rate below 0.5"),
    (["--label-noise", "flip:0.1"], "write sym:RATE, pair:RATE or confusion:FILE"),
    (["--label-noise", "confusion:{tmp}/square.json"], "a 2x2 matrix, the data has 10 classes"),
    (["--label-noise", "confusion:{tmp}/rows.json"], "row 0 sums to 0.5"),
    (["--label-noise", "confusion:{tmp}/rows.json@1.5"], "the rate after '@' must be in (0, 1)"),
    (["--label-noise", "confusion:{tmp}/gone.json@0.3"], "no such file"),
    (["--label-noise", "confusion:{tmp}/results.json"], "without a clean confusion matrix"),
    (["--train-fraction", "0.001"], "leaves class 0 with no training image"),
    (["--train-fraction", "1.5"], "--train-fraction 1.5 must be in (0, 1]"),
    (["--train-fraction", "0.5", "--train-per-class", "3"], "pass one"),
    (["--imbalance-profile", "linear", "--imbalance", "5"], "valid: exp, step"),
])
def test_impossible_stress_is_one_line_before_any_training(flags, needle, tmp_path, capsys):
    (tmp_path / "square.json").write_text(json.dumps([[1, 0], [0, 1]]))
    rows = torch.eye(10)
    rows[0, 0] = 0.5
    (tmp_path / "rows.json").write_text(json.dumps(rows.tolist()))
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "corruptions": {"mean_accuracy": 0.5}}))
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    code = cli.main(["train", "--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "1",
                     "--output", str(tmp_path / "m.pt"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "m.pt").exists()


def test_class_groups_need_unequal_training_counts():
    from robustbench_lite.analysis.groups import class_groups

    classes = [str(c) for c in range(6)]
    assert class_groups({"stress": {"class_counts": [600, 300, 150, 80, 40, 20]}}, classes) == {
        "frequent": ["0", "1"], "medium": ["2", "3"], "rare": ["4", "5"]}
    assert class_groups({"stress": {"class_counts": [20, 600, 40, 300, 80, 150]}}, classes)["rare"] == ["2", "0"]
    # label noise or a stratified subset leaves the classes balanced: no frequent or rare classes to compare
    assert class_groups({"stress": {"class_counts": [600] * 6}}, classes) is None
    assert class_groups({"stress": {"class_counts": [60, 61, 60, 59, 60, 60]}}, classes) is None
    assert class_groups({}, classes) is None
