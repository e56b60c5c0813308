"""The adversarial suite's per-image records, the numbers derived from them and their gate aliases.

Conditions (paths are gate paths; every one is on the run's test images, ``"test"``):

* ``adversarial.clean_accuracy``: the clean predictions.
* ``adversarial.robust_accuracy.<key>`` per (attack, norm, eps), ``<key>`` as in the JSON's flat
  ``robust_accuracy`` (``pgd.Linf[0.1]``): right = classified correctly and not fooled within
  eps; with each image's smallest fooling budget of that attack and norm (``min_eps``) and, for
  ensembles, the component that broke it (``broken_by``).
* ``adversarial.<key>.attack_success_rate``: right = fooled within eps, weighted by the attack's
  clean-correct images (0/1 weights): the fraction of attacked images the attack fooled, so its
  interval is Wilson's on the attacked images.
* ``adversarial.worst_case.<norm>[<eps>]`` (two or more attacks): right = no attack fooled it;
  ``min_eps`` the smallest budget any attack needed, ``broken_by`` the attack that needed it
  (``attack/component`` for an ensemble's component).
* ``adversarial.worst_class_robust_accuracy.<key>.accuracy``: the robust outcomes weighted by the
  images of the class with the lowest robust accuracy at that budget (its Wilson interval);
  ``adversarial.group_robust_accuracy.<key>.<group>`` likewise for a stressed checkpoint's
  frequent, medium and rare classes.

Derived (intervals from the paired bootstrap): ``curve.<attack>.<norm>.auc``, the trapezoid of
:func:`curve_auc` over the clean accuracy and that sweep's robust accuracies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

import attacks
from robustbench_lite.analysis.groups import group_means, per_class_accuracy, worst_class
from robustbench_lite.records import Records
from robustbench_lite.statistics import as_interval

SUITE = "adversarial"
CLEAN = f"{SUITE}.clean_accuracy"


def robust_path(key: str) -> str:
    """The condition (and gate path) of one entry's robust accuracy."""
    return f"{SUITE}.robust_accuracy.{key}"


def success_path(key: str) -> str:
    """The condition (and gate path) of one entry's attack success rate."""
    return f"{SUITE}.{key}.attack_success_rate"


def worst_path(key: str) -> str:
    """The condition of a worst-case entry, ``key`` as in the JSON's ``worst_case`` (``Linf[0.1]``)."""
    return f"{SUITE}.worst_case.{key}"


def curve_auc(eps: Sequence[float], clean: Any, robust: Sequence[Any]) -> Any:
    """Normalised area under a robustness curve: the trapezoid from (0, clean) through (eps[j], robust[j]).

    Divided by the largest budget, so it is the mean robust accuracy over [0, max eps]. The
    accuracies may be floats or arrays of bootstrap replicates.
    """
    xs, ys = [0.0, *eps], [clean, *robust]
    area = sum((xs[i + 1] - xs[i]) * (ys[i + 1] + ys[i]) / 2 for i in range(len(xs) - 1))
    return area / eps[-1]


def record_evaluation(records: Records, keys: Sequence[str], ev: attacks.AttackEvaluation) -> None:
    """Record one (attack, norm) evaluation: robust accuracy and success rate at each budget.

    Args:
        records: the run's records.
        keys: the entry key of each budget of ``ev``, in order.
        ev: the evaluation on the whole test set (gathered under torchrun).
    """
    broken_by = None if ev.broken_by is None else list(ev.broken_by)
    for j, key in enumerate(keys):
        fooled = ev.fooled[:, j]
        records.add(robust_path(key), correct=ev.clean_correct & ~fooled, min_eps=ev.min_eps, broken_by=broken_by)
        # success is a fraction of the attacked (clean-correct) images: those weigh 1, the others 0
        records.add(success_path(key), correct=fooled, weights=ev.clean_correct)


def record_classes(records: Records, keys: Sequence[str], ev: attacks.AttackEvaluation, labels: torch.Tensor,
                   classes: list[str], masks: Mapping[str, torch.Tensor] | None,
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Per budget of ``ev``: the worst class's robust accuracy and, with class ``masks``, each group's; recorded.

    Returns:
        (key -> ``{"accuracy", "class"}``, key -> group -> robust accuracy (empty without masks)).
    """
    worst: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, float]] = {}
    for j, key in enumerate(keys):
        robust = ev.clean_correct & ~ev.fooled[:, j]
        low, name = worst_class(per_class_accuracy(robust, labels, len(classes)), classes)
        worst[key] = {"accuracy": low, "class": name}
        if name is not None:
            records.add(f"{SUITE}.worst_class_robust_accuracy.{key}.accuracy", correct=robust,
                        weights=labels == classes.index(name))
        if masks:
            groups[key] = group_means(robust, masks)
            for group, mask in masks.items():
                records.add(f"{SUITE}.group_robust_accuracy.{key}.{group}", correct=robust, weights=mask)
    return worst, groups


def record_worst_case(records: Records, key: str, correct: torch.Tensor, evaluations: Mapping[str, Any]) -> None:
    """Record one worst-case entry: right where no attack fooled the image.

    Args:
        records: the run's records.
        key: the ``worst_case`` key (``Linf[0.1]``).
        correct: (n,) bool, the worst case per image.
        evaluations: the norm's evaluations by attack name, in the run's order (ties go to the first).
    """
    names = list(evaluations)
    stacked = torch.stack([torch.as_tensor(evaluations[a].min_eps, dtype=torch.float64) for a in names])
    # the smallest budget any attack needed (NaN: none fooled it), and which attack needed it
    smallest = torch.where(torch.isnan(stacked), torch.full_like(stacked, torch.inf), stacked)
    min_eps, who = smallest.min(dim=0)
    broken_by = []
    for i, (budget, a) in enumerate(zip(min_eps.tolist(), who.tolist(), strict=True)):
        ev = evaluations[names[a]]
        if budget == 0 or budget == float("inf"):  # misclassified clean, or never fooled
            broken_by.append("")
        else:
            part = ev.broken_by[i] if ev.broken_by is not None else None
            broken_by.append(names[a] if not part else f"{names[a]}/{part}")
    min_eps = torch.where(torch.isinf(min_eps), torch.full_like(min_eps, torch.nan), min_eps)
    records.add(worst_path(key), correct=correct, min_eps=min_eps, broken_by=broken_by)


def _entries(block: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [e for e in block.get("results") or [] if isinstance(e, Mapping) and isinstance(e.get("key"), str)]


def derived(block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
    """Each sweep's ``curve.<attack>.<norm>.auc`` from the recorded accuracies (floats or replicates)."""
    out: dict[str, Any] = {}
    if CLEAN not in acc:
        return out
    sweeps: dict[str, list[Mapping[str, Any]]] = {}
    for entry in _entries(block):
        sweeps.setdefault(f"{entry.get('attack')}.{entry.get('norm')}", []).append(entry)
    for name in block.get("curve") or {}:
        entries = sorted(sweeps.get(name, []), key=lambda e: float(e["eps"]))
        paths = [robust_path(e["key"]) for e in entries]
        if entries and all(p in acc for p in paths):
            out[f"curve.{name}.auc"] = curve_auc([float(e["eps"]) for e in entries], acc[CLEAN],
                                                 [acc[p] for p in paths])
    return out


def interval_aliases(block: Mapping[str, Any]) -> Iterable[tuple[str, float]]:
    """``adversarial.<key>.robust_accuracy.ci_low`` and ``adversarial.<key>.ci_low`` (and ``ci_high``).

    The bounds of each entry's robust accuracy, from the block's ``ci``, by the gate paths the
    entry's robust accuracy already has.
    """
    ci = block.get("ci")
    if not isinstance(ci, Mapping):
        return []
    out = []
    for entry in _entries(block):
        key = entry["key"]
        interval = as_interval(ci.get(f"robust_accuracy.{key}"))
        if interval is None:
            continue
        for bound, value in zip(("ci_low", "ci_high"), interval, strict=True):
            out += [(f"{SUITE}.{key}.robust_accuracy.{bound}", value), (f"{SUITE}.{key}.{bound}", value)]
    return out
