"""Monitor suite: would the drift monitor have noticed each corruption, and how far off is its accuracy estimate?

The drift libraries detect shift but never measure whether their detector catches the shifts that
matter; here every condition comes with its true accuracy, so the monitor (:mod:`robustbench_lite.
analysis.monitor`) is measured like a model:

1. A profile is fitted on the first half of the test split (at most 2,000 images); the next images
   (at most 1,000) are the held-out pool.
2. For the clean pool; the pool under each corruption and severity (``--monitor-corruptions``,
   ``--monitor-severities``; by default the corruption suite's) and under each covariate shift split and
   intensity of the shift suite's selection; and label shift (class priors drawn from the shift suite's
   Dirichlet alphas, images drawn from the pool in those proportions, where BBSE's prior estimate is
   scored too): ``--monitor-trials`` random subsets of each size
   in ``--monitor-sizes`` (100 and 500 unlabelled images: a day of traffic, a week) are checked
   against the profile as ``robust-eval monitor check`` would check them.
3. Per condition and size: the detection rate (on clean data it is the false-positive rate, which
   should be at most ``--monitor-alpha``), the pool's true accuracy, and the mean absolute error of
   the ATC and average-confidence estimates against each subset's true accuracy.

Headlines: detection power (the mean detection rate over the corrupted conditions at the largest
size) beside the false-positive rate measured on clean data, and the ATC estimate's mean absolute
error over every condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import num, pct
from robustbench_lite.options import Options, comma_list, int_in, option
from robustbench_lite.results import SuiteResult
from robustbench_lite.seeding import derive_seed
from robustbench_lite.statistics import wilson
from robustbench_lite.suites.base import EvalContext, HeadlineMetric, Suite, register_suite, stats

#: The profile's reference images (the first of the test split) and the held-out pool after them, at most.
REFERENCE_IMAGES = 2000
POOL_IMAGES = 1000
#: Permutations of each trial's MMD test (p-values to 1/101: below alpha / 3 at the default alpha) and the
#: reference images it compares with (the test is quadratic in them).
PERMUTATIONS = 100
MMD_REFERENCE = 500


def _sizes(value: Any) -> tuple[int, ...]:
    sizes = tuple(int_in("--monitor-sizes", 2)(v) for v in comma_list(value, "--monitor-sizes", "100,500"))
    return tuple(sorted(set(sizes)))


def _alpha(value: Any) -> float:
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        raise RobustEvalError(f"--monitor-alpha takes a probability, got {value!r}; e.g. --monitor-alpha 0.05"
                              ) from None
    if not 0 < alpha < 1:
        raise RobustEvalError(f"--monitor-alpha {value} must be a probability in (0, 1), e.g. 0.05")
    return alpha


def _severity_list(value: Any) -> tuple[int, ...]:
    return tuple(int_in("--monitor-severities", 1, 5)(v) for v in comma_list(value, "--monitor-severities", "1,3,5"))


@dataclass(frozen=True)
class MonitorOptions(Options):
    """The monitor suite's settings; None means the default. Its conditions are the corruption suite's."""

    owner: ClassVar[str] = "monitor"

    sizes: tuple[int, ...] | None = option(
        "--monitor-sizes", "unlabelled images per check, comma-separated (default: 100,500)", parse=_sizes,
        metavar="N[,N]", example="100,500")
    trials: int | None = option(
        "--monitor-trials", "random subsets checked per condition and size (default: 10)",
        parse=int_in("--monitor-trials", 1), metavar="N", example="10")
    alpha: float | None = option(
        "--monitor-alpha", "false-positive rate of each check's drift decision (default: 0.05)", parse=_alpha,
        metavar="P", example="0.05")
    corruptions: tuple[str, ...] | None = option(
        "--monitor-corruptions", "corruptions or groups to check (default: the corruption suite's --corruptions, "
        "else its 15 benchmark corruptions)", parse=lambda v: comma_list(v, "--monitor-corruptions", "noise,fog"),
        metavar="NAMES", example="noise,fog")
    severities: tuple[int, ...] | None = option(
        "--monitor-severities", "corruption severities and covariate shift intensities, 1..5 (default: the "
        "corruption and shift suites' own, else 1,2,3,4,5)", parse=lambda v: _severity_list(v), metavar="S[,S]",
        example="1,3,5")
    shifts: tuple[str, ...] | None = option(
        "--monitor-shifts", "shift splits, fnmatch patterns: covariate/* and label/dirichlet are checked (default: "
        "the shift suite's --shift-splits, else every split); 'none' for corruptions only",
        parse=lambda v: comma_list(v, "--monitor-shifts", "'covariate/*'"), metavar="PATTERN[,PATTERN]",
        example="covariate/*,label/dirichlet")

    def validate(self) -> None:
        from robustbench_lite.suites.corruptions import resolve_corruptions

        resolve_corruptions(self.corruptions)
        self.shift_options()

    def shift_options(self, base: Any = None) -> Any:
        """The shift suite's options with this suite's split selection and intensities (None: no shift)."""
        import dataclasses

        from robustbench_lite.shift.base import ShiftOptions, select

        base = base or ShiftOptions()
        if self.shifts == ("none",):
            return None
        opts = dataclasses.replace(base, **({"splits": self.shifts} if self.shifts else {}),
                                   **({"intensities": tuple(sorted(set(self.severities)))} if self.severities else {}))
        select(opts)  # unknown split names: one line, before any work
        return opts


@dataclass
class MonitorResult(SuiteResult):
    reference_images: int
    pool_images: int
    sizes: list[int]
    trials: int
    alpha: float
    features: str
    #: the detection rate on clean held-out data, by size (the measured false-positive rate), and its 95%
    #: Wilson interval over the checks
    false_positive_rate: dict[str, float]
    false_positive_ci: dict[str, list[float]]
    #: the mean detection rate over the corrupted conditions, by size
    detection_power: dict[str, float]
    #: the headline: detection power at the largest size
    power: float
    #: mean absolute error of the ATC and average-confidence estimates over every condition and size
    atc_mae: float
    average_confidence_mae: float
    #: condition ("clean", "fog.3") -> {"accuracy": the pool's true accuracy, "sizes": {N: {"detection_rate",
    #: "atc_mae", "average_confidence_mae", "atc_mean", "true_mean"}}}
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | str]:
        return {"power": round(self.power, 4), "false positives": round(max(self.false_positive_rate.values()), 4),
                "ATC MAE": round(self.atc_mae, 4)}


@register_suite
class MonitorSuite(Suite):
    name = "monitor"
    Result = MonitorResult
    description = ("would a drift monitor notice each corruption from 100 or 500 unlabelled images, and how far "
                   "is its label-free accuracy estimate from the truth")
    title = "Monitor"
    order = 45
    rank0_only = True  # its checks are not shared between ranks: rank 0 computes them all
    in_full = False  # an analysis of the monitor, asked for by name (--suite clean,corruptions,monitor)
    headline_metrics = (HeadlineMetric("drift detection power", "power"),
                        HeadlineMetric("ATC estimate MAE", "atc_mae", higher_is_better=False, unit="ratio"))
    Options = MonitorOptions

    @classmethod
    def forward_passes(cls, options: Any) -> int:
        return 0  # its own passes over a pool of at most 1,000 images per condition

    @classmethod
    def check_data(cls, options: Any, dataset: Any) -> None:
        if len(dataset) < 40:
            raise RobustEvalError(f"the monitor suite needs at least 40 test images (half profile, half held out), "
                                  f"got {len(dataset)}; drop --limit or raise it")

    def run(self, ctx: EvalContext) -> MonitorResult:
        from robustbench_lite.analysis import monitor as monitor_mod
        from robustbench_lite.suites.corruptions import (
            CorruptionSuite,
            _eight_bit,
            image_source,
            resolve_corruptions,
            resolve_severities,
        )

        opts: MonitorOptions = ctx.options(self.name)
        sizes, trials = list(opts.sizes or (100, 500)), opts.trials or 10
        alpha = opts.alpha if opts.alpha is not None else 0.05
        ds = ctx.dataset
        n_ref = min(REFERENCE_IMAGES, len(ds) // 2)
        pool = slice(n_ref, n_ref + min(POOL_IMAGES, len(ds) - n_ref))
        model = ctx.model.eval()
        profile = monitor_mod.fit(model, ds.float_images(slice(0, n_ref)), ds.labels[:n_ref], list(ds.classes),
                                  batch_size=ctx.config.batch_size, device=ctx.device)
        x_pool, y_pool = ds.float_images(pool), ds.labels[pool]
        idx_pool = ds.indices[pool]
        sizes = sorted({min(n, len(y_pool)) for n in sizes})
        ctx.log(f"monitor: profile on {n_ref} images, {len(y_pool)} held out; {trials} checks of "
                f"{', '.join(map(str, sizes))} images per condition")

        copts = ctx.options("corruptions")
        chosen = opts.corruptions or copts.corruptions
        severities = resolve_severities(opts.severities or copts.severities)
        profile_name, backend = CorruptionSuite._profile_backend(copts, ds)
        source = image_source(ctx, severities, profile_name, backend, None)
        names = [n for n in source.select(resolve_corruptions(chosen), explicit=chosen is not None)
                 if source.availability(n) is None]

        def pool_outputs(images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
            features, logits, _ = monitor_mod.outputs(model, images, ctx.config.batch_size, ctx.device)
            return features, logits

        conditions: dict[str, dict[str, Any]] = {}

        classes = ds.num_classes
        by_class = [torch.nonzero(y_pool == c).flatten() for c in range(classes)]

        def uniform_rows(size: int, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray | None]:
            return torch.randperm(len(y_pool), generator=gen)[:size], None

        def prior_rows(concentration: float) -> Any:
            """Label shift: class priors drawn from Dirichlet(concentration), then images of each class drawn
            (with replacement) from the pool in those proportions."""
            def rows(size: int, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray | None]:
                present = [c for c in range(classes) if len(by_class[c])]
                weights = torch.distributions.Gamma(torch.full((len(present),), concentration), 1.0).sample()
                if not bool(torch.isfinite(weights).all()) or float(weights.sum()) <= 0:
                    weights = torch.ones(len(present))
                drawn = torch.multinomial(weights / weights.sum(), size, replacement=True, generator=gen)
                picks = [by_class[present[int(i)]][int(torch.randint(len(by_class[present[int(i)]]), (1,),
                                                                     generator=gen))] for i in drawn]
                priors = np.bincount([present[int(i)] for i in drawn], minlength=classes) / size
                return torch.stack(picks), priors
            return rows

        def measure(key: str, features: torch.Tensor | None, logits: torch.Tensor, salt: int,
                    sample: Any = uniform_rows) -> None:
            correct = logits.argmax(1) == y_pool
            per_size: dict[str, dict[str, float]] = {}
            for size in sizes:
                hits, atc_err, ac_err, atc_sum, true_sum, prior_err = 0, 0.0, 0.0, 0.0, 0.0, 0.0
                for t in range(trials):
                    gen = torch.Generator().manual_seed(derive_seed(ctx.config.seed, salt, "monitor", size, t))
                    with torch.random.fork_rng():  # the Dirichlet draw takes the global generator
                        torch.manual_seed(derive_seed(ctx.config.seed, salt, "monitor-priors", size, t))
                        rows, priors = sample(size, gen)
                    report = monitor_mod.compare(profile, None if features is None else features[rows], logits[rows],
                                                 alpha=alpha, permutations=PERMUTATIONS, seed=t, bootstrap=0,
                                                 mmd_images=MMD_REFERENCE)
                    truth = float(correct[rows].float().mean())
                    hits += bool(report["drift"])
                    atc, ac = report["accuracy"]["atc"]["value"], report["accuracy"]["average_confidence"]["value"]
                    atc_err += abs(atc - truth)
                    ac_err += abs(ac - truth)
                    atc_sum += atc
                    true_sum += truth
                    if priors is not None:  # total variation between BBSE's priors and the drawn ones
                        prior_err += 0.5 * float(np.abs(np.asarray(report["priors"]["estimated"]) - priors).sum())
                per_size[str(size)] = {"detection_rate": hits / trials, "detection_ci": list(wilson(hits, trials)),
                                       "atc_mae": atc_err / trials,
                                       "average_confidence_mae": ac_err / trials, "atc_mean": atc_sum / trials,
                                       "true_mean": true_sum / trials,
                                       **({"prior_error": prior_err / trials} if sample is not uniform_rows else {})}
            # resampled by class priors, each set has its own accuracy: the mean at the largest size
            accuracy = (float(correct.float().mean()) if sample is uniform_rows
                        else per_size[str(sizes[-1])]["true_mean"])
            conditions[key] = {"accuracy": accuracy, "sizes": per_size}

        clean_outputs = pool_outputs(x_pool)
        measure("clean", *clean_outputs, 0)
        for i, name in enumerate(names):
            for severity in severities:
                got = source.images(name, severity)
                if got.images is not None:  # published -C files: the pool's rows
                    images = got.images[pool].float().div(255) if got.images.dtype == torch.uint8 else got.images[pool]
                else:
                    quantised = _eight_bit(got.transform)
                    images = torch.cat([quantised(x_pool[j:j + ctx.config.batch_size].to(ctx.device),
                                                  idx_pool[j:j + ctx.config.batch_size]).cpu()
                                        for j in range(0, len(x_pool), ctx.config.batch_size)])
                measure(f"{name}.{severity}", *pool_outputs(images), 1 + i * 10 + severity)
            ctx.log(f"monitor: {name}: detection rate at {sizes[-1]} images " + " ".join(
                f"s{s} {conditions[f'{name}.{s}']['sizes'][str(sizes[-1])]['detection_rate']:.2f}" for s in severities))

        self._shift_conditions(ctx, x_pool, idx_pool, pool_outputs, clean_outputs, measure, prior_rows, sizes)

        corrupted = [k for k in conditions if k != "clean"]
        power = {str(n): float(np.mean([conditions[k]["sizes"][str(n)]["detection_rate"] for k in corrupted]))
                 if corrupted else 0.0 for n in sizes}
        every = [conditions[k]["sizes"][str(n)] for k in conditions for n in sizes]
        return MonitorResult(
            reference_images=n_ref, pool_images=len(y_pool), sizes=sizes, trials=trials, alpha=alpha,
            features=profile.meta["features"],
            false_positive_rate={str(n): conditions["clean"]["sizes"][str(n)]["detection_rate"] for n in sizes},
            false_positive_ci={str(n): conditions["clean"]["sizes"][str(n)]["detection_ci"] for n in sizes},
            detection_power=power, power=power[str(sizes[-1])],
            atc_mae=float(np.mean([c["atc_mae"] for c in every])),
            average_confidence_mae=float(np.mean([c["average_confidence_mae"] for c in every])),
            conditions=conditions,
        )

    @staticmethod
    def _shift_conditions(ctx: EvalContext, x_pool: torch.Tensor, idx_pool: torch.Tensor, pool_outputs: Any,
                          clean_outputs: tuple[torch.Tensor | None, torch.Tensor],
                          measure: Any, prior_rows: Any, sizes: list[int]) -> None:
        """The shift suite's covariate splits (its intensities) on the pool, and Dirichlet label shift (its
        alphas) drawn from the pool; other splits (natural, subpopulation) have no images of the pool."""
        from robustbench_lite.shift.base import select
        from robustbench_lite.shift.covariate import CovariateShift

        sopts = ctx.options("monitor").shift_options(ctx.options("shift"))
        if sopts is None:
            return
        chosen = [split for split, _ in select(sopts)]
        for i, split in enumerate(chosen):
            if not isinstance(split, CovariateShift) or (split.needs_rgb and x_pool.shape[1] != 3):
                continue
            for intensity in sopts.intensities:
                images = split.transform(intensity, ctx.config.seed)(x_pool, idx_pool)
                measure(f"{split.name}.{intensity}", *pool_outputs(images), 100 + i * 10 + intensity)
        features, logits = clean_outputs  # label shift resamples the clean pool
        if any(split.name == "label/dirichlet" for split in chosen):
            for j, concentration in enumerate(sopts.alphas):
                measure(f"label/dirichlet.alpha={concentration:g}", features, logits, 1000 + j,
                        sample=prior_rows(concentration))
        ctx.log(f"monitor: shift conditions done (sizes {', '.join(map(str, sizes))})")

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        sizes = [str(n) for n in block["sizes"]]
        rows = []
        for key, c in block["conditions"].items():
            rows.append({"name": key, "accuracy": pct(c["accuracy"]),
                         "cells": [{"detect": pct(c["sizes"][n]["detection_rate"]),
                                    "atc": pct(c["sizes"][n]["atc_mean"]), "error": pct(c["sizes"][n]["atc_mae"]),
                                    "rate": c["sizes"][n]["detection_rate"]} for n in sizes]})
        largest = sizes[-1]
        return {
            "stats": stats((f"detection power at {largest} images", pct(block["power"])),
                           (f"false positives on clean data at {largest}", pct(block["false_positive_rate"][largest]),
                            tuple(block["false_positive_ci"][largest]) if block.get("false_positive_ci") else None),
                           ("ATC estimate MAE", pct(block["atc_mae"])),
                           ("average-confidence MAE", pct(block["average_confidence_mae"])),
                           ("profile / held-out images", f"{num(block['reference_images'])} / "
                                                         f"{num(block['pool_images'])}"),
                           ("checks per condition and size", num(block["trials"]))),
            "sizes": sizes, "rows": rows, "alpha": block["alpha"], "features": block["features"],
        }
