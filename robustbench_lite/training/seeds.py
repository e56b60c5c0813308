"""Seed spread: one recipe trained under several seeds, and the spread of what training reports.

A defence that wins by a point on one seed may lose on the next; ``robust-eval train --seeds
0,1,2`` trains the same recipe once per seed through :func:`robustbench_lite.training.train`
and summarises the end-of-training numbers as mean and sample standard deviation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from robustbench_lite.config import TrainConfig
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import comma_list
from robustbench_lite.training.loop import train

Log = Callable[[str], None]
EXAMPLE = "0,1,2"
#: End-of-training numbers from the kept epoch's history entry, in the order they are shown.
HISTORY_METRICS = (("train_accuracy", "train accuracy"), ("loss", "train loss"),
                   ("heldout_clean", "held-out clean accuracy"), ("heldout_pgd10", "held-out PGD-10 accuracy"))


def parse_seeds(value: Any, flag: str = "--seeds") -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]: at least two non-negative integers, each once."""
    items = comma_list(value, flag, EXAMPLE, unique=False)
    seeds: list[int] = []
    for item in items:
        try:
            seed = int(item)
        except ValueError:
            seed = -1
        if seed < 0:
            raise RobustEvalError(f"{flag} {value}: {item!r} is not a non-negative integer; e.g. {flag} {EXAMPLE}")
        if seed in seeds:
            raise RobustEvalError(f"{flag} {value} repeats seed {seed}; give each seed once, e.g. {flag} {EXAMPLE}")
        seeds.append(seed)
    if len(seeds) < 2:
        raise RobustEvalError(f"{flag} {value} names one seed; a spread needs at least two (e.g. {flag} {EXAMPLE}), "
                              "or use --seed N for a single run")
    return seeds


def seed_output(output: str | None, seed: int) -> str | None:
    """The checkpoint path for ``seed``: ``-seed{N}`` before the suffix of ``output``.

    None stays None: the default paths (:func:`~robustbench_lite.training.default_output`) name
    the seed already.
    """
    if output is None:
        return None
    path = Path(output)
    return str(path.with_name(f"{path.stem}-seed{seed}{path.suffix}"))


def train_seeds(cfg: TrainConfig, seeds: Sequence[int], log: Log = print,
                on_step: Callable[[int, int], None] | None = None) -> list[tuple[dict[str, Any], Path]]:
    """Train ``cfg`` once per seed (each to :func:`seed_output`); returns each run's metadata and path."""
    cfg.validate()
    out = []
    for k, seed in enumerate(seeds):
        log(f"== seed {seed} ({k + 1} of {len(seeds)})")
        _, meta, path = train(replace(cfg, seed=seed, output=seed_output(cfg.output, seed)), log=log, on_step=on_step)
        out.append((meta, path))
    return out


def final_metrics(meta: Mapping[str, Any]) -> dict[str, float]:
    """What one training run reports at its end: test accuracy and the kept epoch's training numbers."""
    out = {"test accuracy": float(meta["clean_accuracy"])}
    history = list(meta.get("history") or [])
    selected = (meta.get("defence") or {}).get("selected_epoch")
    kept = next((h for h in history if h.get("epoch") == selected), history[-1] if history else {})
    for key, label in HISTORY_METRICS:
        if isinstance(kept.get(key), (int, float)):
            out[label] = float(kept[key])
    return out


def summarise(metas: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per metric every run reports: the values by run, their mean and sample standard deviation."""
    per_run = [final_metrics(m) for m in metas]
    out: dict[str, dict[str, Any]] = {}
    for name in per_run[0] if per_run else ():
        values = [m[name] for m in per_run if name in m]
        if len(values) == len(per_run):
            sd = statistics.stdev(values) if len(values) > 1 else math.nan
            out[name] = {"values": values, "mean": statistics.fmean(values), "sd": sd}
    return out
