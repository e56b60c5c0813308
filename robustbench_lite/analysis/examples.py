"""The report's example grid: the first test images clean, corrupted and attacked, with predictions.

Results JSON holds numbers, not images, so the grid is built from a live model (``--html``) and
stored in the results under ``examples``; ``robust-eval report`` re-renders it from there. Images
are small PNGs at native resolution (the page scales them up pixelated), a few KB in all.

Which conditions are shown, so a reader sees what broke:

* corruptions: the corruption suite's ``worst`` corruptions (lowest mean accuracy) at its highest
  severity and profile; without that suite, a fixed illustrative set at severity 3.
* adversarial: PGD at the adversarial suite's largest budget per norm (its steps); without that
  suite, PGD-10 at the dataset's default Linf budget. Rows not backed by a suite that ran are
  marked ``illustrative`` in the JSON and the page. PGD is crafted on ``attack_model``: the model,
  or the transfer model of a ``--surrogate`` run (the row names the surrogate); a model without
  gradients and no surrogate gets no attacked rows.

Every random choice is keyed by (seed, dataset index), as in the suites, so the grid is reproducible.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustbench_lite.data import ImageDataset, default_eps
from robustbench_lite.errors import RobustEvalError

#: Corruptions shown when the corruption suite did not run (one per family).
ILLUSTRATIVE_CORRUPTIONS = ("gaussian_noise", "defocus_blur", "fog", "contrast")
DEFAULT_IMAGES = 8
MAX_CORRUPTION_ROWS = 4


def png_data(image: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as base64 PNG (no data: prefix)."""
    from PIL import Image

    arr = (image.detach().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)).numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr[:3], (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cells(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
           device: torch.device, cam_layer: str | None = None) -> list[dict[str, Any]]:
    """One cell per image: the image, the prediction and its confidence; with ``cam_layer``, the Grad-CAM
    heatmaps of the predicted class (``cam_pred``) and of the true class (``cam_true``) over the image."""
    with torch.inference_mode():
        probs = model(images.to(device)).float().softmax(dim=1).cpu()
    conf, pred = probs.max(dim=1)
    cells = [{"png": png_data(img), "pred": int(p),
              "pred_name": str(classes[int(p)]) if int(p) < len(classes) else str(int(p)),
              "confidence": round(float(c), 4), "correct": bool(int(p) == int(y))}
             for img, p, c, y in zip(images, pred, conf, labels, strict=True)]
    if cam_layer is not None:
        from robustbench_lite.analysis.gradcam import grad_cam, overlay

        on_device = images.to(device)
        for key, target in (("cam_pred", pred), ("cam_true", labels)):
            maps = grad_cam(model, on_device, target, cam_layer)
            for cell, img, cam in zip(cells, images, maps, strict=True):
                cell[key] = png_data(overlay(img, cam))
    return cells


def _corruption_rows(results: Mapping[str, Any], dataset: ImageDataset) -> list[dict[str, Any]]:
    from corruptions import CORRUPTIONS, profile_for_size

    block = results.get("corruptions") if isinstance(results.get("corruptions"), Mapping) else None
    if block and block.get("accuracy") and block.get("severities"):
        acc = block["accuracy"]
        severity = int(max(block["severities"]))
        means = {c: float(np.mean([v for v in acc[c].values() if v is not None] or [math.nan])) for c in acc}
        names = sorted((c for c in means if math.isfinite(means[c])), key=lambda c: means[c])
        profile, illustrative = str(block.get("profile") or profile_for_size(*dataset.size)), False
    else:
        names, severity = list(ILLUSTRATIVE_CORRUPTIONS), 3
        profile, illustrative = profile_for_size(*dataset.size), True
    rows = []
    for name in names:
        if name not in CORRUPTIONS or CORRUPTIONS.entry(name).availability() is not None:
            continue
        rows.append({"name": name, "kind": "corruption", "severity": severity, "profile": profile,
                     "illustrative": illustrative})
        if len(rows) == MAX_CORRUPTION_ROWS:
            break
    return rows


def _attack_rows(results: Mapping[str, Any], dataset_name: str) -> list[dict[str, Any]]:
    block = results.get("adversarial") if isinstance(results.get("adversarial"), Mapping) else None
    settings = block.get("settings", {}) if block else {}
    eps_by_norm = settings.get("eps") if isinstance(settings.get("eps"), Mapping) else {}
    if block and eps_by_norm:
        steps = int(settings.get("steps") or 10)
        return [{"name": "pgd", "kind": "adversarial", "norm": norm, "eps": float(max(eps)), "steps": steps,
                 "illustrative": "pgd" not in settings.get("attacks", [])} for norm, eps in eps_by_norm.items() if eps]
    try:
        eps = default_eps(dataset_name, "Linf")
    except Exception:  # a folder dataset has no conventional budget: show none rather than guess
        return []
    return [{"name": "pgd", "kind": "adversarial", "norm": "Linf", "eps": eps, "steps": 10, "illustrative": True}]


def _transfer_from(attack_model: nn.Module | None) -> str | None:
    """The surrogate's file name when the attacks are transferred (a :class:`~robustbench_lite.sources.Transfer`)."""
    from robustbench_lite.sources.runtimes import Transfer

    return Path(attack_model.source).name if isinstance(attack_model, Transfer) else None


#: ``attack_model``'s default: attack the model itself.
_SAME: Any = object()


def build_examples(model: nn.Module, dataset: ImageDataset, results: Mapping[str, Any], device: torch.device | str,
                   n: int = DEFAULT_IMAGES, seed: int = 0, attack_model: nn.Module | None = _SAME,
                   cam_layer: str | None = None, heatmaps: bool = True) -> dict[str, Any]:
    """The example grid for ``results`` (a results JSON dict) from the model and the first ``n`` test images.

    Args:
        model: predicts every cell.
        attack_model: what PGD is crafted on (default: ``model``); the transfer model of a run with
            ``--surrogate``; None leaves the attacked rows out (a model without gradients).
        cam_layer: Grad-CAM's target layer (default: chosen by :func:`~robustbench_lite.analysis.gradcam.choose_layer`).
        heatmaps: add Grad-CAM heatmaps of the predicted and the true class to every cell (a model without
            gradients, or without feature maps, gets none; ``cam`` in the result says why).

    Returns:
        ``{"images": [{"index", "label", "label_name"}], "rows": [{"name", "kind", "title", "detail",
        "illustrative", "cells": [{"png", "pred", "pred_name", "confidence", "correct"}]}]}``.
    """
    import attacks
    from corruptions import CORRUPTIONS

    device = torch.device(device)
    n = min(n, len(dataset))
    images, labels, indices = dataset.float_images(slice(0, n)), dataset.labels[:n], dataset.indices[:n]
    classes = [str(c) for c in dataset.classes]
    model = model.eval()
    cam: dict[str, Any] = {"method": "grad-cam", "layer": None,
                           "note": "the model has no gradients (it runs in its own runtime)"}
    layer = None
    if heatmaps:
        from robustbench_lite.analysis.gradcam import choose_layer

        try:
            layer = cam_layer or choose_layer(model, images.to(device))
            cam = {"method": "grad-cam", "layer": layer, "chosen": cam_layer is None}
        except RobustEvalError as exc:
            cam = {"method": "grad-cam", "layer": None, "note": str(exc)}
    rows = [{"name": "clean", "kind": "clean", "title": "clean", "detail": "test images as given",
             "illustrative": False, "cells": _cells(model, images, labels, classes, device, layer)}]
    for spec in _corruption_rows(results, dataset):
        corrupt = CORRUPTIONS.get(spec["name"], severity=spec["severity"], profile=spec["profile"], seed=seed)
        out = corrupt(images, indices)
        rows.append({**spec, "title": spec["name"].replace("_", " "),
                     "detail": f"severity {spec['severity']}, {spec['profile']} profile",
                     "cells": _cells(model, out, labels, classes, device, layer)})
    crafted_on = model if attack_model is _SAME else attack_model
    transfer = _transfer_from(crafted_on)
    for spec in _attack_rows(results, dataset.name) if crafted_on is not None else []:
        attack = attacks.build("pgd", eps=spec["eps"], norm=spec["norm"], steps=spec["steps"], seed=seed)
        adv = attack(crafted_on, images.to(device), labels.to(device), indices).cpu()
        rows.append({**spec, "title": f"PGD {spec['norm']}" + (" (transfer)" if transfer else ""),
                     "detail": f"eps {spec['eps']:.4g}, {spec['steps']} steps"
                               + (f", crafted on the surrogate {transfer}" if transfer else ""),
                     **({"transfer_from": transfer} if transfer else {}),
                     "cells": _cells(model, adv, labels, classes, device, layer)})
    return {
        "images": [{"index": int(i), "label": int(y), "label_name": classes[int(y)]}
                   for i, y in zip(indices, labels, strict=True)],
        "rows": rows,
        "seed": seed,
        "cam": cam,
    }
