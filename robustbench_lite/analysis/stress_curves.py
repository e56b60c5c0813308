"""Runs of checkpoints trained under training-data stress, arranged as curves: metric against stress level.

A run's checkpoint records its stress (``checkpoint.stress``) and defences (``checkpoint.defence``).
Runs are grouped by the kind of stress (imbalance ratio, symmetric or pair noise rate, training
fraction, images per class); a run without stress is level 1 (ratio, fraction) or 0 (noise) of
every kind, so each curve starts at the unstressed model. One line per remedy (the defence label).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

#: (key in the results, panel title) of the metrics drawn.
METRICS = (("clean.accuracy", "clean accuracy"), ("clean.worst_class_accuracy", "worst-class accuracy"),
           ("corruptions.mean_accuracy", "mean corruption accuracy"))
#: kind -> (title, x label, log axis, the unstressed level)
KINDS = {"imbalance": ("Class imbalance", "imbalance ratio (most / fewest images)", True, 1.0),
         "sym": ("Symmetric label noise", "noise rate", False, 0.0),
         "pair": ("Pair label noise (systematic)", "noise rate", False, 0.0),
         "confusion": ("Label noise from a confusion matrix", "labels changed", False, 0.0),
         "fraction": ("Small data", "fraction of the training set", True, 1.0)}


def stress_point(run: Mapping[str, Any]) -> tuple[str, float] | None | bool:
    """(kind, level) of a run's single stressor; False without stress; None for several stressors at once."""
    checkpoint = run.get("checkpoint") if isinstance(run.get("checkpoint"), Mapping) else {}
    stress = checkpoint.get("stress") if isinstance(checkpoint.get("stress"), Mapping) else None
    if not stress:
        return False
    found: list[tuple[str, float]] = []
    if stress.get("imbalance") is not None:
        found.append(("imbalance", float(stress["imbalance"])))
    if stress.get("fraction") is not None:
        found.append(("fraction", float(stress["fraction"])))
    noise = stress.get("noise") if isinstance(stress.get("noise"), Mapping) else None
    if noise:
        kind = str(noise.get("kind"))
        level = noise.get("rate") if kind != "confusion" else noise.get("changed_fraction")
        if kind in KINDS and level is not None:
            found.append((kind, float(level)))
    return found[0] if len(found) == 1 else None


def _value(run: Mapping[str, Any], path: str) -> float | None:
    node: Any = run
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return float(node) if isinstance(node, (int, float)) and math.isfinite(float(node)) else None


def _remedy(run: Mapping[str, Any], several_models: bool) -> str:
    checkpoint = run.get("checkpoint") if isinstance(run.get("checkpoint"), Mapping) else {}
    defence = checkpoint.get("defence") if isinstance(checkpoint.get("defence"), Mapping) else {}
    label = str(defence.get("label") or "standard")
    return f"{run.get('model')} {label}" if several_models else label


def stress_curves(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per stress kind with at least two levels: {kind, title, xlabel, log_x, lines: remedy -> [(level, values)]}."""
    several = len({str(r.get("model")) for r in runs}) > 1
    points: dict[str, dict[str, dict[float, list[float | None]]]] = {}
    baselines: dict[str, list[float | None]] = {}
    for run in runs:
        where = stress_point(run)
        values = [_value(run, key) for key, _ in METRICS]
        remedy = _remedy(run, several)
        if where is False:
            baselines.setdefault(remedy, values)
        elif where:
            kind, level = where
            points.setdefault(kind, {}).setdefault(remedy, {})[level] = values
    out = []
    for kind, by_remedy in points.items():
        title, xlabel, log_x, zero = KINDS[kind]
        lines = {}
        for remedy, levels in by_remedy.items():
            if remedy in baselines and zero not in levels:
                levels = {zero: baselines[remedy], **levels}
            lines[remedy] = sorted(levels.items())
        if max(len(v) for v in lines.values()) >= 2:
            out.append({"kind": kind, "title": title, "xlabel": xlabel, "log_x": log_x, "lines": lines})
    return out
