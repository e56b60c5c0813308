"""The label audit: confident learning against cleanlab, the out-of-fold probe, the command end to end."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch

from robustbench_lite import cli
from robustbench_lite.analysis import labels as labels_mod
from robustbench_lite.sources.checkpoints import load_checkpoint


def noisy_case(seed: int, n: int = 600, classes: int = 6, rate: float = 0.25, sharp: float = 3.0):
    """(true labels, given labels with ``rate`` of them resampled, probabilities peaked at the true class)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    given = true.copy()
    flip = rng.random(n) < rate
    given[flip] = rng.integers(0, classes, int(flip.sum()))
    logits = rng.normal(size=(n, classes))
    logits[np.arange(n), true] += sharp
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return true, given, probs


@pytest.mark.parametrize("filter_by", labels_mod.FILTERS)
def test_confident_learning_flags_what_cleanlab_flags(filter_by):
    cleanlab_filter = pytest.importorskip("cleanlab.filter")
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        _, given, probs = noisy_case(seed, n=int(rng.integers(40, 900)), classes=int(rng.integers(2, 11)),
                                     rate=float(rng.uniform(0, 0.45)), sharp=float(rng.uniform(0.5, 5)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cleanlab_filter.find_label_issues(given, probs, filter_by=filter_by, n_jobs=1)
        got = labels_mod.find_label_issues(given, probs, filter_by)
        assert np.array_equal(got.mask, expected), (seed, int(got.mask.sum()), int(expected.sum()))


def test_confident_learning_finds_resampled_labels():
    true, given, probs = noisy_case(0, n=3000, rate=0.3, sharp=4.0)
    issues = labels_mod.find_label_issues(given, probs)
    wrong = true != given
    found = labels_mod.detection(issues.mask, wrong, issues.score)
    assert found["precision"] > 0.9 and found["recall"] > 0.8
    assert issues.estimated_noise_rate == pytest.approx(wrong.mean(), abs=0.05)
    assert np.array_equal(issues.suggested[issues.mask], probs.argmax(1)[issues.mask])
    assert found["injected"] == wrong.sum() and found["true_positives"] == (issues.mask & wrong).sum()


def test_the_probe_is_scikit_learns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 8, generator=gen, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(300, generator=gen, dtype=torch.float64) > 0).long() + \
        (x[:, 2] > 1).long()
    l2 = 0.01
    w, b = labels_mod.fit_logistic(x, y, 3, l2=l2, iterations=500)
    ours = torch.softmax(x @ w + b, 1).numpy()
    theirs = LogisticRegression(C=1 / (len(x) * l2), tol=1e-10, max_iter=5000).fit(x.numpy(), y.numpy())
    assert np.abs(ours - theirs.predict_proba(x.numpy())).max() < 1e-4


def test_an_images_out_of_fold_probability_never_sees_its_label():
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(200) % 4
    features = torch.randn(200, 16, generator=gen) + torch.nn.functional.one_hot(labels, 16).float() * 4
    fold = labels_mod.stratified_folds(labels, 4)
    probs = labels_mod.out_of_fold_probe(features, labels, 4, folds=4, fold=fold)
    changed = labels.clone()
    changed[7] = (changed[7] + 1) % 4
    other = labels_mod.out_of_fold_probe(features, changed, 4, folds=4, fold=fold)
    assert torch.allclose(probs[7], other[7], atol=1e-6), "image 7's probabilities moved with its own label"
    assert not torch.allclose(probs[fold != fold[7]], other[fold != fold[7]], atol=1e-6)
    assert torch.bincount(fold).tolist() == [50, 50, 50, 50]
    assert float((probs.argmax(1) == labels).float().mean()) > 0.9


@pytest.fixture(scope="module")
def noisy_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "noisy.pt"
    assert cli.main(["train", "--model", "shufflenetv2_x0_5", "--dataset", "digits", "--epochs", "6",
                     "--batch-size", "128", "--lr", "0.01", "--label-noise", "pair:0.3", "--output", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    return out


def test_audit_labels_reports_precision_and_recall_against_the_injected_noise(noisy_checkpoint, tmp_path, capsys):
    paths = {k: tmp_path / f"audit.{k}" for k in ("csv", "json", "html")}
    assert cli.main(["audit-labels", "--checkpoint", str(noisy_checkpoint), "--folds", "3", "-o", str(paths["csv"]),
                     "--json", str(paths["json"]), "--html", str(paths["html"]), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "against the injected noise" in printed and "precision" in printed
    report = json.loads(paths["json"].read_text())
    _, meta = load_checkpoint(noisy_checkpoint)
    injected = set(meta["stress"]["changed_indices"])
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == report["flagged"] == report["detection"]["flagged"] > 0
    hits = sum(int(r["index"]) in injected for r in rows)
    assert report["detection"]["true_positives"] == hits
    assert report["detection"]["injected"] == len(injected)
    assert report["detection"]["precision"] == pytest.approx(hits / len(rows))
    assert report["detection"]["recall"] == pytest.approx(hits / len(injected))
    assert all((r["injected"] == "True") == (int(r["index"]) in injected) for r in rows)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores), "suspects are listed lowest score first"
    assert report["images"] == meta["train_images"] and report["true_noise_rate"] == pytest.approx(
        len(injected) / meta["train_images"])
    page = paths["html"].read_text()
    assert "Against the injected noise" in page and page.count("<figure") == min(48, len(rows))


def test_the_audited_labels_are_the_ones_the_checkpoint_trained_on(noisy_checkpoint):
    from robustbench_lite.auditing import training_set

    _, meta = load_checkpoint(noisy_checkpoint)
    dataset, wrong, record = training_set(meta)
    from robustbench_lite.data import load

    original = load("digits", "train").labels[dataset.indices]
    assert torch.equal(wrong, original != dataset.labels)
    assert int(wrong.sum()) == record["noise"]["changed"]
    assert torch.bincount(original, minlength=10).tolist() == record["class_counts"]
    tampered = {**meta, "stress": {**meta["stress"], "changed_indices": meta["stress"]["changed_indices"][1:]}}
    with pytest.raises(Exception, match="does not reproduce on this copy of digits"):
        training_set(tampered)


@pytest.mark.parametrize(("flags", "needle"), [
    (["--folds", "1"], "need at least 2 folds"),
    (["--method", "vote"], "invalid choice: 'vote'"),
    (["--filter", "both"], "invalid choice: 'both'"),
    (["--checkpoint", "{tmp}/missing.pt"], "does not exist"),
    (["--limit", "4"], "needs at least 10 images for 5 folds"),
    (["--html", "{tmp}"], "--html"),
    (["--json", "{tmp}/s.csv"], "is also the path of --suspects"),
])
def test_bad_audit_input_is_one_line_and_writes_nothing(flags, needle, noisy_checkpoint, tmp_path, capsys):
    argv = ["audit-labels", "--checkpoint", str(noisy_checkpoint), "-o", str(tmp_path / "s.csv"), "--device", "cpu"]
    argv += [f.format(tmp=tmp_path) for f in flags]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "s.csv").exists()


def test_a_model_without_a_training_record_needs_data(tmp_path, digits_checkpoint, capsys):
    from robustbench_lite.sources import checkpoints

    payload = checkpoints.read_checkpoint(digits_checkpoint)
    sd = tmp_path / "weights.pt"
    torch.save(payload["state_dict"], sd)
    argv = ["audit-labels", "--checkpoint", str(sd), "--model", "shufflenetv2_x0_5", "-o", str(tmp_path / "s.csv"),
            "--device", "cpu"]
    assert cli.main(argv) == 2
    assert "pass the labelled images to audit with --data" in capsys.readouterr().err
    assert cli.main([*argv, "--data", "digits", "--limit", "300", "--folds", "3"]) == 0
    assert "detection" not in capsys.readouterr().out
    assert (tmp_path / "s.csv").read_text().startswith("index,given,given_name,suggested,suggested_name,score\n")
