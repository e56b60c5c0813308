"""The label audit's Python API: which training labels are probably wrong.

Example:
    >>> from robustbench_lite.auditing import audit_labels
    >>> report = audit_labels("noisy.pt")                # the checkpoint's own training set
    >>> report["detection"]["precision"], report["suspects"][0]

The images audited are the ones the checkpoint trained on: its dataset's training split, cut to
the recorded ``train_limit`` and stressed as its ``stress`` record says (same seed, same noise
matrix), so the labels audited are the labels it saw; the reproduction is checked against the
recorded changed indices. When the checkpoint records injected noise, the report scores the
detector against it (precision, recall). ``data=`` audits other labelled images instead (a
dataset name, ``imagefolder:PATH``), with any model file.

Out-of-fold probabilities (``method="probe"``, the default): the model's penultimate features of
every image, then a logistic regression fitted on K-1 folds predicts the K-th, so no image's
probability comes from a classifier that saw its label (the features did: the frozen network was
trained on all of them). ``method="model"`` takes the model's own softmax instead (in-sample: it
has fitted the wrong labels it memorised, so it finds fewer).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_lite import data as data_mod
from robustbench_lite.analysis import labels as labels_mod
from robustbench_lite.errors import RobustEvalError

Log = Callable[[str], None]
METHODS = ("probe", "model")
#: Suspects kept in the report (all flagged images go to the suspects file).
SHOWN = 48


def check_options(method: str, filter_by: str, folds: int) -> None:
    """The audit's own options, checked before anything is read."""
    if method not in METHODS:
        raise RobustEvalError(f"--method {method!r} is not a method; valid: {', '.join(METHODS)}")
    if filter_by not in labels_mod.FILTERS:
        raise RobustEvalError(f"--filter {filter_by!r} is not a filter; valid: {', '.join(labels_mod.FILTERS)}")
    if not isinstance(folds, int) or folds < 2:
        raise RobustEvalError(f"--folds {folds}: out-of-fold probabilities need at least 2 folds, e.g. 5")


def _checkpoint_meta(model: Any) -> dict[str, Any] | None:
    """The robust-eval checkpoint's metadata when ``model`` is one (None: another kind of model)."""
    if not isinstance(model, (str, Path)) or Path(model).suffix not in (".pt", ".pth"):
        return None
    from robustbench_lite.sources import checkpoints

    try:
        return checkpoints.read_checkpoint(model)["meta"]
    except RobustEvalError:
        return None  # a state_dict or TorchScript file: the model loader says what it is


def training_set(meta: dict[str, Any], data_dir: str | None = None,
                 ) -> tuple[data_mod.ImageDataset, torch.Tensor | None, dict[str, Any] | None]:
    """(the images and labels a checkpoint trained on, which of them were given a wrong label, the stress record).

    Raises:
        RobustEvalError: the recorded stress cannot be reproduced here (another copy of the dataset).
    """
    from robustbench_lite.training.stressors import StressOptions, stressed_dataset

    train = data_mod.load(meta["dataset"], "train", data_dir).limit(meta.get("train_limit"))
    record = meta.get("stress")
    if not record:
        return train, None, None
    noise = record.get("noise") or {}
    kept, stressed = stressed_dataset(train, StressOptions.from_record(record), int(record["seed"]),
                                      matrix=noise.get("matrix"))
    got = stressed.record
    if got["changed_indices"] != record.get("changed_indices", []) or got["images"] != record.get("images"):
        raise RobustEvalError(f"the checkpoint's training-data stress does not reproduce on this copy of "
                              f"{meta['dataset']} ({got['images']} images, {len(got['changed_indices'])} labels "
                              f"changed; recorded {record.get('images')} and {len(record.get('changed_indices', []))})"
                              "; audit with the data it was trained on (--data-dir)")
    wrong = torch.isin(kept.indices, torch.tensor(got["changed_indices"], dtype=torch.long))
    return kept, wrong, record


def audit_labels(model: Any = None, /, data: Any = None, *, method: str = "probe",
                 filter_by: str = "prune_by_noise_rate", folds: int = labels_mod.FOLDS, limit: int | None = None,
                 examples: int = 0, batch_size: int = 256, seed: int = 0, data_dir: str | None = None,
                 log: Log | None = None, **options: Any) -> dict[str, Any]:
    """Find the training images whose labels are probably wrong (see the module docstring).

    Args:
        model: a robust-eval checkpoint (its training set is audited), or any model file with ``data``
            (default: the quick baseline of ``options["model"]`` or the default model).
        data: labelled images to audit instead of the checkpoint's training set.
        method: ``probe`` (out-of-fold logistic regression on the features) or ``model`` (its softmax).
        filter_by: ``prune_by_noise_rate`` (cleanlab's default) or ``confident_learning``.
        folds: K of the out-of-fold probe.
        limit: audit the first N images only.
        examples: the first (most suspect) this many suspects carry their image as a base64 PNG.

    Returns:
        The report: counts, the estimated noise rate, detection against injected noise when known,
        per-class counts, and ``suspects`` (index, given, suggested, score; lowest score first).
    """
    from robustbench_lite.analysis.monitor import outputs
    from robustbench_lite.monitoring import adapted_model

    log = log or (lambda message: None)
    check_options(method, filter_by, folds)
    if limit is not None and limit < 2 * folds:
        raise RobustEvalError(f"--limit {limit}: the audit needs at least {2 * folds} images for {folds} folds")
    if model is None:
        from robustbench_lite.api import config_for, prepare

        config, _, _ = config_for(None, None, ["clean"], dict(options))
        model = prepare(config)[0].checkpoint
    meta = _checkpoint_meta(model)
    wrong: torch.Tensor | None = None
    stress = None
    if data is not None:
        dataset = data_mod.as_dataset(data, data_dir=data_dir)
    elif meta is not None:
        dataset, wrong, stress = training_set(meta, data_dir)
    else:
        raise RobustEvalError(f"{model} is not a robust-eval checkpoint, so it records no training set; pass the "
                              "labelled images to audit with --data (a dataset name or imagefolder:PATH)")
    if limit is not None:
        dataset = dataset.limit(limit)
        wrong = wrong[:limit] if wrong is not None else None
    counts = torch.bincount(dataset.labels, minlength=dataset.num_classes)
    if int((counts > 0).sum()) < 2:
        raise RobustEvalError(f"{dataset.name} has images of {int((counts > 0).sum())} class; an audit needs two")
    net, record, device = adapted_model(model, dataset, {k: v for k, v in options.items() if v is not None}, log)
    log(f"audit: {len(dataset)} training images of {dataset.name}, {method} probabilities"
        + (f" ({folds} folds)" if method == "probe" else ""))
    features, logits, what = outputs(net, dataset.float_images(), batch_size, device)
    if method == "probe":
        if features is None:
            raise RobustEvalError("the model exposes no PyTorch layers to take features from (ONNX); use --method "
                                  "model")
        probs = labels_mod.out_of_fold_probe(features, dataset.labels, dataset.num_classes, folds, seed)
    else:
        probs = torch.softmax(logits.double(), 1).float()
    issues = labels_mod.find_label_issues(dataset.labels.numpy(), probs.numpy(), filter_by)
    report = _report(dataset, issues, probs, wrong, stress, record,
                     {"method": method, "folds": folds if method == "probe" else None, "filter": filter_by,
                      "features": what if method == "probe" else "softmax"})
    if examples:
        from robustbench_lite.analysis.examples import png_data

        position = {int(i): p for p, i in enumerate(dataset.indices)}
        for row in report["suspects"][:examples]:
            row["png"] = png_data(dataset.float_images([position[row["index"]]])[0])
    return report


def _report(dataset: data_mod.ImageDataset, issues: labels_mod.LabelIssues, probs: torch.Tensor,
            wrong: torch.Tensor | None, stress: dict[str, Any] | None,
            record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    labels = dataset.labels.numpy()
    classes = list(dataset.classes)
    index = dataset.indices.numpy()
    flagged = np.nonzero(issues.mask)[0]
    flagged = flagged[np.argsort(issues.score[flagged], kind="stable")]
    wrong_np = wrong.numpy() if wrong is not None else None
    suspects = []
    for i in flagged:
        row = {"index": int(index[i]), "given": int(labels[i]), "given_name": classes[labels[i]],
               "suggested": int(issues.suggested[i]), "suggested_name": classes[issues.suggested[i]],
               "score": round(float(issues.score[i]), 6)}
        if wrong_np is not None:
            row["injected"] = bool(wrong_np[i])
        suspects.append(row)
    report: dict[str, Any] = {
        **record, "data": dataset.name, "images": len(labels), "classes": classes, **settings,
        "flagged": int(issues.mask.sum()), "flagged_fraction": float(issues.mask.mean()),
        "estimated_noise_rate": issues.estimated_noise_rate,
        "probe_accuracy": float((probs.argmax(1).numpy() == labels).mean()),
        "per_class": [{"class": c, "images": int((labels == k).sum()), "flagged": int(issues.mask[labels == k].sum())}
                      for k, c in enumerate(classes)],
        "confident_joint": issues.joint.tolist(),
        "suspects": suspects,
    }
    if wrong_np is not None:
        report["noise"] = {k: stress.get(k) for k in ("label_noise", "seed")} if stress else None
        report["detection"] = labels_mod.detection(issues.mask, wrong_np, issues.score)
        naive = probs.argmax(1).numpy() != labels
        report["detection_predicted_neq_given"] = labels_mod.detection(naive, wrong_np)
        report["true_noise_rate"] = float(wrong_np.mean())
    return report
