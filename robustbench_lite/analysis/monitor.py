"""Watching a deployed model without labels: a reference profile, then drift tests and accuracy estimates.

:func:`fit` runs the model over labelled in-distribution images and keeps what later checks need:
the penultimate features (the input of the classifier layer, pooled; projected on their first
principal components), the softmax confidences and negative entropies, which images were
correct, the confusion matrix, and a fingerprint (a few images and their logits) that ties the
profile to the model. A model without PyTorch layers (ONNX Runtime) is profiled on its softmax
outputs instead, the black-box variant of Rabanser et al. (2019).

:func:`check` computes the same for new, unlabelled images and reports:

* drift: the MMD test on the features, the per-feature KS tests (Bonferroni) and a KS test on the
  confidences; drift is declared when any of the three has ``p <= alpha / 3`` (Bonferroni over
  the three), so the false-positive rate on in-distribution data is at most ``alpha``;
* the estimated accuracy (ATC-NE, and average confidence as the baseline) with intervals;
* the estimated class priors (BBSE) beside the reference's;
* when the new images carry labels (a labelled dataset), their true accuracy, to judge the above.

A profile is a safetensors file: tensors and a JSON header, nothing executable.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustbench_lite.analysis import drift, labelfree
from robustbench_lite.errors import RobustEvalError

FORMAT = "robust-eval-monitor-profile"
VERSION = 1
#: Labelled reference images a profile keeps (the first N of the data it is fitted on).
REFERENCE_IMAGES = 2000
#: Principal components of the penultimate features the tests run on.
COMPONENTS = 32
#: Images (and their logits) that tie a profile to its model.
FINGERPRINT_IMAGES = 8
#: At most this many images of each sample enter the MMD test (its kernel matrix is quadratic).
MMD_IMAGES = 1000
#: Tensors every profile holds.
TENSORS = ("features", "pca_mean", "pca_components", "confidence", "score", "correct", "predictions", "labels",
           "confusion", "fingerprint_images", "fingerprint_logits")


@dataclass
class Profile:
    """A model's reference profile (see the module docstring); ``meta`` is JSON, ``tensors`` are data."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save

        from robustbench_lite.files import atomic_write

        blob = save({k: v.contiguous() for k, v in self.tensors.items()},
                    metadata={"format": FORMAT, "meta": json.dumps(self.meta)})
        return atomic_write(Path(path), lambda f: f.write(blob), binary=True)

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Read and check a profile; anything else is one line naming the file and what is wrong."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise RobustEvalError(f"--profile {path} does not exist; make one with 'robust-eval monitor fit'")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise RobustEvalError(f"--profile {path} is not a monitor profile ({str(exc).splitlines()[0][:120]}); "
                                  "make one with 'robust-eval monitor fit'") from None
        if header.get("format") != FORMAT:
            raise RobustEvalError(f"--profile {path} is a safetensors file but not a monitor profile; make one with "
                                  "'robust-eval monitor fit'")
        try:
            meta = json.loads(header["meta"])
        except (KeyError, ValueError):
            raise RobustEvalError(f"--profile {path}: its header is damaged; fit the profile again") from None
        version = meta.get("version") if isinstance(meta, dict) else "?"
        if version != VERSION:
            raise RobustEvalError(f"--profile {path} has version {version}, this robust-eval reads version {VERSION}; "
                                  "fit the profile again")
        missing = [k for k in TENSORS if k not in tensors]
        if missing:
            raise RobustEvalError(f"--profile {path} lacks {', '.join(missing)}; fit the profile again")
        n, classes = len(tensors["labels"]), len(meta.get("classes") or [])
        shapes_ok = (all(len(tensors[k]) == n for k in ("features", "confidence", "score", "correct", "predictions"))
                     and n >= 2 and tuple(tensors["confusion"].shape) == (classes, classes) and classes >= 2)
        if not shapes_ok:
            raise RobustEvalError(f"--profile {path}: its tensors do not fit together; fit the profile again")
        return cls(meta, tensors)


def _feature_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The classifier layer: the last Linear or Conv2d the model registers (None: no PyTorch layers)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            found = (name, module)
    return found


@torch.no_grad()
def outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
            device: torch.device | None = None) -> tuple[torch.Tensor | None, torch.Tensor, str]:
    """(penultimate features or None, logits, what the features are) of float32 [0,1] images.

    The features are the classifier layer's input, averaged over space when it is a feature map.
    """
    device = device or torch.device("cpu")
    layer = _feature_layer(model)
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        def grab(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float()
            captured.append((x.mean(dim=(2, 3)) if x.dim() == 4 else x.flatten(1)).cpu())

        handle = layer[1].register_forward_pre_hook(grab)
    logits = []
    try:
        model.eval()
        for i in range(0, len(images), batch_size):
            logits.append(model(images[i:i + batch_size].to(device)).float().cpu())
    finally:
        if handle is not None:
            handle.remove()
    out = torch.cat(logits) if logits else torch.zeros(0)
    if layer is None or len(captured) != len(logits):
        return None, out, "softmax"
    return torch.cat(captured), out, f"penultimate ({layer[0]})"


def _project(features: torch.Tensor, mean: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    return (features.float() - mean) @ components


@torch.no_grad()
def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: list[str], *,
        components: int = COMPONENTS, batch_size: int = 256, device: torch.device | None = None,
        info: dict[str, Any] | None = None) -> Profile:
    """The reference profile of ``model`` on labelled in-distribution ``images``.

    Args:
        images: (N, C, H, W) float32 in [0, 1], N >= 20; labels: (N,) classes.
        components: principal components the features are projected on (at most the feature size).
        info: what else the profile records (model name, file, sha256, dataset).
    """
    if len(images) < 20:
        raise RobustEvalError(f"a monitor profile needs at least 20 labelled reference images, got {len(images)}")
    features, logits, kind = outputs(model, images, batch_size, device)
    if features is None:
        features = logits.softmax(1)
    k = min(components, features.shape[1], len(features) - 1)
    mean = features.float().mean(0)
    _, _, vh = torch.linalg.svd(features.float() - mean, full_matrices=False)
    basis = vh[:k].T.contiguous()
    predictions = logits.argmax(1)
    n_classes = logits.shape[1]
    if len(classes) != n_classes:
        raise RobustEvalError(f"the model gives {n_classes} logits, the data has {len(classes)} classes; fit the "
                              "profile on the data the model was trained for")
    confusion = labelfree.confusion_given_class(predictions.numpy(), labels.numpy(), n_classes)
    n_print = min(FINGERPRINT_IMAGES, len(images))
    meta = {"version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "features": kind,
            "feature_size": int(features.shape[1]), "components": k, "images": len(images),
            "image_shape": list(images.shape[1:]), "classes": list(classes),
            "accuracy": float((predictions == labels).float().mean()), **(info or {})}
    tensors = {
        "features": _project(features, mean, basis), "pca_mean": mean, "pca_components": basis,
        "confidence": labelfree.max_confidence(logits), "score": labelfree.negative_entropy(logits),
        "correct": (predictions == labels).to(torch.uint8), "predictions": predictions, "labels": labels.long(),
        "confusion": torch.from_numpy(confusion).float(),
        "fingerprint_images": (images[:n_print] * 255).round().to(torch.uint8),
        "fingerprint_logits": model(images[:n_print].mul(255).round().div(255).to(device or "cpu")).float().cpu()
        if n_print else torch.zeros(0),
    }
    return Profile(meta, tensors)


def verify_model(profile: Profile, model: nn.Module, device: torch.device | None = None) -> None:
    """Refuse a model other than the profile's: its logits on the fingerprint images must match."""
    images = profile.tensors["fingerprint_images"].float().div(255)
    expected = profile.tensors["fingerprint_logits"]
    with torch.no_grad():
        try:
            got = model.eval()(images.to(device or "cpu")).float().cpu()
        except Exception as exc:  # noqa: BLE001 - a model that cannot even take the images is the wrong one
            raise RobustEvalError(f"the model cannot take the profile's {tuple(images.shape[1:])} images ({exc}); "
                                  "check with the model the profile was fitted on") from None
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or float((got - expected).abs().max()) > 1e-3 * scale:
        what = profile.meta.get("model_file") or profile.meta.get("model") or "another model"
        raise RobustEvalError(f"this model is not the one the profile was fitted on ({what}): its logits on the "
                              "profile's fingerprint images differ; pass that model, or fit a profile for this one")


def check_inputs(profile: Profile, images: torch.Tensor) -> None:
    """New images the profile can be compared with: at least 2, of the profile's shape."""
    if len(images) < 2:
        raise RobustEvalError(f"monitor check needs at least 2 new images, got {len(images)}")
    shape = list(images.shape[1:])
    if shape != list(profile.meta["image_shape"]):
        raise RobustEvalError(f"the new images are {'x'.join(map(str, shape))}, the profile's "
                              f"{'x'.join(map(str, profile.meta['image_shape']))}; pass images of the profile's "
                              "size and channels")


def check(profile: Profile, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
          alpha: float = drift.ALPHA, permutations: int = drift.PERMUTATIONS, seed: int = 0,
          batch_size: int = 256, device: torch.device | None = None) -> dict[str, Any]:
    """Drift tests and label-free accuracy estimates of new images against the profile (see the module docstring).

    Args:
        images: (M, C, H, W) float32 in [0, 1], M >= 2, the profile's image shape.
        labels: their true classes when known (the report then gives the true accuracy too).
    """
    validate(profile, model, images, alpha, device)
    return measure(profile, model, images, labels, alpha=alpha, permutations=permutations, seed=seed,
                   batch_size=batch_size, device=device)


def validate(profile: Profile, model: nn.Module, images: torch.Tensor, alpha: float = drift.ALPHA,
             device: torch.device | None = None) -> None:
    """The user errors of a check, before any work: alpha, the images' count and shape, the model itself."""
    if not 0 < alpha < 1:
        raise RobustEvalError(f"--alpha {alpha} must be a probability in (0, 1), e.g. 0.05")
    check_inputs(profile, images)
    verify_model(profile, model, device)


def measure(profile: Profile, model: nn.Module, images: torch.Tensor, labels: torch.Tensor | None = None, *,
            alpha: float = drift.ALPHA, permutations: int = drift.PERMUTATIONS, seed: int = 0,
            batch_size: int = 256, device: torch.device | None = None) -> dict[str, Any]:
    """:func:`check` after :func:`validate`: the model's outputs on the new images, compared with the profile."""
    features, logits, kind = outputs(model, images, batch_size, device)
    if kind != profile.meta["features"]:
        raise RobustEvalError(f"the profile holds {profile.meta['features']} features, this model gives {kind}; "
                              "fit the profile again with this model")
    return compare(profile, features, logits, labels, alpha=alpha, permutations=permutations, seed=seed)


def compare(profile: Profile, features: torch.Tensor | None, logits: torch.Tensor, labels: torch.Tensor | None = None,
            *, alpha: float = drift.ALPHA, permutations: int = drift.PERMUTATIONS, seed: int = 0,
            bootstrap: int = labelfree.BOOTSTRAP, mmd_images: int = MMD_IMAGES) -> dict[str, Any]:
    """:func:`check` on the model's outputs for the new images (features None: a softmax profile)."""
    t = profile.tensors
    if features is None:
        features = logits.softmax(1)
    projected = _project(features, t["pca_mean"], t["pca_components"])
    ref = t["features"]
    gen = torch.Generator().manual_seed(seed)
    ref_mmd = ref[torch.randperm(len(ref), generator=gen)[:mmd_images]]
    new_mmd = projected[torch.randperm(len(projected), generator=gen)[:mmd_images]]
    confidence, score = labelfree.max_confidence(logits), labelfree.negative_entropy(logits)
    level = alpha / 3  # Bonferroni over the three tests below
    tests = {
        "mmd": drift.mmd_test(ref_mmd, new_mmd, permutations=permutations, seed=seed),
        "ks_features": drift.ks_features(ref, projected, level),
        "confidence": drift.ks_test(t["confidence"], confidence),
    }
    detected = any(r.p_value <= level for r in tests.values())
    estimates = labelfree.estimate_accuracy(t["score"].numpy(), t["correct"].numpy().astype(bool), score.numpy(),
                                            confidence.numpy(), seed=seed, bootstrap=bootstrap)
    predictions = logits.argmax(1)
    classes = list(profile.meta["classes"])
    priors = labelfree.bbse_priors(t["confusion"].double().numpy(), predictions.numpy())
    reference_priors = np.bincount(t["labels"].numpy(), minlength=len(classes)) / len(t["labels"])
    report: dict[str, Any] = {
        "images": len(logits), "reference_images": len(ref), "alpha": alpha, "features": profile.meta["features"],
        "drift": detected, "decision": f"any test with p <= alpha / {len(tests)} = {level:.4g}",
        "tests": {name: r.to_dict(level) for name, r in tests.items()},
        "accuracy": {"reference": profile.meta["accuracy"], **{k: e.to_dict() for k, e in estimates.items()}},
        "priors": {"classes": classes, "estimated": [float(v) for v in priors],
                   "reference": [float(v) for v in reference_priors]},
        "mean_confidence": {"reference": float(t["confidence"].mean()), "new": float(confidence.mean())},
    }
    if labels is not None and bool((labels >= 0).all()):
        truth = float((predictions == labels).float().mean())
        report["accuracy"]["true"] = truth
        report["accuracy"]["atc"]["error"] = report["accuracy"]["atc"]["value"] - truth
        report["accuracy"]["average_confidence"]["error"] = report["accuracy"]["average_confidence"]["value"] - truth
    return report


def summary(report: dict[str, Any]) -> list[str]:
    """The report in a few lines for the console."""
    acc = report["accuracy"]
    tests = report["tests"]
    atc = acc["atc"]
    lines = [
        f"drift: {'DETECTED' if report['drift'] else 'not detected'} on {report['images']} images "
        f"({report['decision']})",
        "  " + ", ".join(f"{name} p={r['p_value']:.3g}" for name, r in tests.items()),
        f"estimated accuracy: {atc['value']:.1%} (ATC, 95% CI {atc['ci'][0]:.1%}-{atc['ci'][1]:.1%}); "
        f"average confidence {acc['average_confidence']['value']:.1%}; reference {acc['reference']:.1%}",
    ]
    if "true" in acc:
        lines.append(f"true accuracy (the images carry labels): {acc['true']:.1%}")
    shift = [(c, e - r) for c, e, r in zip(report["priors"]["classes"], report["priors"]["estimated"],
                                           report["priors"]["reference"], strict=True)]
    biggest = max(shift, key=lambda cr: abs(cr[1]))
    if not math.isnan(biggest[1]):
        lines.append(f"class priors: largest estimated change {biggest[0]} {biggest[1]:+.1%}")
    return lines
