"""Adversarial suite: robust accuracy under FGSM / PGD (or any ``torchattacks:NAME``), eps sweeps, masking checks.

    robust-eval --suite adversarial [--attack fgsm,pgd] [--norm Linf|L2] [--eps 1/255,2/255,4/255,8/255]
                                    [--steps N] [--alpha A] [--restarts R]

Every (attack, norm) pair is one :func:`attacks.evaluate_attack` call: one clean pass, then the
correctly classified images only, budgets in increasing order on the images no smaller budget
fooled. Robust accuracy at eps is the fraction of ALL images classified correctly and not fooled
at any budget <= eps, so a sweep is non-increasing by construction.

JSON (under ``adversarial``):

* ``results``: one entry per (attack, norm, eps): ``attack``, ``norm``, ``eps``, ``steps``,
  ``alpha``, ``restarts`` (as the attack ran; None: a torchattacks class's own default),
  ``robust_accuracy``, ``attack_success_rate`` (fooled / correctly classified),
  ``mean_perturbation`` (mean norm of the successful perturbations, None if none), ``key``.
* ``robust_accuracy``: flat ``{"<attack>.<norm>[<eps>]": value}`` for gates, e.g.
  ``"pgd.Linf[0.1]"``; eps is written by :func:`eps_key` (``%g`` with 6 significant digits:
  ``0.1``, ``8/255`` -> ``0.0313725``, ``1.5``).
* ``worst_case``: with two or more attacks, ``{"<norm>[<eps>]": value}``: an image counts as
  robust only if no attack fooled it (AutoAttack's per-image worst case).
* ``curve``: for sweeps (two or more budgets), per ``"<attack>.<norm>"``: the budgets, robust
  accuracies, their normalised area and a summary of each image's smallest successful budget.
* ``clean_accuracy``, ``warnings`` (gradient-masking red flags), ``passes`` (forward / backward
  images against the early-exit floor) and ``settings`` (everything resolved, defaults included;
  with ``--surrogate``: ``transfer_from``, and ``masking_checks.skipped`` saying why; for a differentiable
  compressed artefact whose parent is on disk: ``masking_checks.from_parent``, each gradient attack's
  robust accuracy white-box and crafted on the parent, on the same first images).
* ``ci``: the 95% interval of every accuracy above (clean, robust, success rate, worst case, AUC);
  the per-image records behind them are described in :mod:`robustbench_lite.suites._adversarial_records`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import attacks
from robustbench_lite.analysis.failures import failure_flow
from robustbench_lite.analysis.groups import group_masks
from robustbench_lite.data import default_eps
from robustbench_lite.distributed import ATTACK_CHUNK, run_units
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import num, parse_number, pct
from robustbench_lite.results import SuiteResult
from robustbench_lite.suites import _adversarial_records as records
from robustbench_lite.suites._adversarial_checks import parent_check, score_based_flags
from robustbench_lite.suites._adversarial_options import (
    DEFAULT_RESTARTS,
    DEFAULT_STEPS,
    AdversarialOptions,
    attack_params,
    eps_key,
    gradients_needed,
    result_key,
)
from robustbench_lite.suites.base import EvalContext, Headline, Suite, block_interval, register_suite, stats

#: Images the gradient-masking checks look at (zero gradients, randomness; FGSM/PGD when not reused).
MASKING_CHECK_IMAGES = 256
#: Why a transfer run (``--surrogate``) skips the PGD-vs-FGSM and zero-gradient checks (settings and report say so).
TRANSFER_SKIPS_CHECKS = ("PGD-vs-FGSM and zero-gradient checks skipped: with transferred attacks they would test the "
                         "surrogate's gradients, not the model (iterative attacks often transfer worse than one step)")
#: Why a run on a model without gradients skips them (only score-based attacks ran).
NO_GRADIENT_SKIPS_CHECKS = ("gradient-masking checks skipped: the model has no input gradients, so only score-based "
                            "attacks ran (there are no gradients to mask)")
#: Below this many images the curve also lists every image's smallest successful budget.
PER_IMAGE_MAX = 100
#: Fields of a result entry that gates reach as ``adversarial.<key>.<field>``.
GATE_FIELDS = ("robust_accuracy", "attack_success_rate", "mean_perturbation")


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class AttackResult:
    """One (attack, norm, eps) cell. Accuracies are fractions of all images; None where undefined."""

    key: str
    attack: str
    norm: str
    eps: float
    steps: int | None
    alpha: float | None
    restarts: int | None
    robust_accuracy: float
    attack_success_rate: float
    mean_perturbation: float
    #: an ensemble's (``autoattack``) images fooled within eps, by the component that broke each
    broken_by: dict[str, int] | None = None


@dataclass
class RobustnessCurve:
    """Robust accuracy against eps for one (attack, norm) sweep.

    Attributes:
        eps: budgets, ascending.
        robust_accuracy: at each budget, non-increasing.
        auc: trapezoidal area under the curve from (0, clean accuracy) to the largest budget,
            divided by the largest budget: the mean robust accuracy over [0, max eps], in [0, 1].
        min_eps: each correctly classified image's smallest fooling budget, summarised:
            ``attacked`` (images correctly classified), ``fooled``, ``median`` (images never
            fooled count as infinite; None when more than half were never fooled), ``histogram``
            (``count`` per budget, aligned with ``eps``, and ``not_fooled``) and, for at most
            :data:`PER_IMAGE_MAX` images, ``per_image`` (dataset ``indices`` and ``min_eps``: 0 for
            misclassified images, None for images never fooled).
    """

    eps: list[float]
    robust_accuracy: list[float]
    auc: float
    min_eps: dict[str, Any]


@dataclass
class AdversarialResult(SuiteResult):
    clean_accuracy: float
    n_examples: int
    results: list[AttackResult]
    robust_accuracy: dict[str, float]
    worst_case: dict[str, float] = field(default_factory=dict)
    curve: dict[str, RobustnessCurve] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    passes: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: per ensemble and norm (``autoattack.Linf``): each image's dataset index and the component that
    #: broke it at its smallest fooling budget (None: not fooled, or misclassified clean)
    broken_by: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    #: what each failure becomes, per attack and norm (``pgd.Linf``) at the largest budget: the images the
    #: attack broke, the classes they are pushed into, the classes losing most
    #: (:func:`robustbench_lite.analysis.failures.failure_flow`)
    failure_flow: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: for a checkpoint with a stress record: robust accuracy of its frequent / medium / rare classes, per
    #: result key (``pgd.Linf[0.1]``)
    group_robust_accuracy: dict[str, dict[str, float]] | None = None
    #: per result key, the class with the lowest robust accuracy: ``{"accuracy": a, "class": name}``
    worst_class_robust_accuracy: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | str]:
        out: dict[str, float | int | str] = {"clean": round(self.clean_accuracy, 4)}
        largest: dict[tuple[str, str], AttackResult] = {}
        for r in self.results:
            largest[(r.attack, r.norm)] = r  # results are in ascending eps per (attack, norm)
        for r in largest.values():
            out[r.key] = round(r.robust_accuracy, 4)
        for name, curve in self.curve.items():
            out[f"{name} AUC"] = round(curve.auc, 4)
        if self.warnings:
            out["warnings"] = len(self.warnings)
        if self.settings.get("transfer_from"):
            out["transferred from"] = Path(str(self.settings["transfer_from"])).name
        return out


def _predictions(ctx: EvalContext, images: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """The scored model's predicted classes of ``images`` (the attacks' returned images), batch by batch."""
    if images is None or len(images) == 0:
        return torch.zeros(0, dtype=torch.long)
    with torch.no_grad():
        return torch.cat([ctx.model(images[i:i + batch_size].to(ctx.device)).argmax(1).cpu()
                          for i in range(0, len(images), batch_size)])


# ---------------------------------------------------------------------------------------------
# The suite


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _curve(ev: attacks.AttackEvaluation, indices: torch.Tensor, clean_accuracy: float | None = None) -> RobustnessCurve:
    """The sweep's curve; it starts at ``clean_accuracy`` (the run's, as the JSON and the report show it),
    or at the evaluation's own clean accuracy when None."""
    eps = list(ev.eps)
    acc = list(ev.robust_accuracy)
    clean = ev.clean_accuracy if clean_accuracy is None else clean_accuracy
    attacked = ev.clean_correct
    per = ev.min_eps[attacked]
    fooled = ~torch.isnan(per)
    ranked = torch.sort(torch.where(fooled, per, torch.full_like(per, math.inf))).values
    median = float(ranked[(len(ranked) - 1) // 2]) if len(ranked) else math.inf
    summary: dict[str, Any] = {
        "attacked": int(attacked.sum()),
        "fooled": int(fooled.sum()),
        "median": median if math.isfinite(median) else None,
        "histogram": {"eps": eps, "count": [int((per == e).sum()) for e in eps], "not_fooled": int((~fooled).sum())},
    }
    if ev.n <= PER_IMAGE_MAX:
        summary["per_image"] = {"indices": indices.tolist(),
                                "min_eps": [_nan_to_none(v) for v in ev.min_eps.tolist()]}
    return RobustnessCurve(eps=eps, robust_accuracy=acc, auc=records.curve_auc(eps, clean, acc), min_eps=summary)


def _passes(ev: attacks.AttackEvaluation) -> dict[str, Any]:
    total = ev.passes
    return {"forward": ev.forward_passes, "backward": ev.backward_passes, "total": total,
            "floor": ev.floor_passes, "over_floor": total / ev.floor_passes - 1 if ev.floor_passes else 0.0,
            "clean_forward": ev.n, "seconds": ev.seconds}


@register_suite
class AdversarialSuite(Suite):
    name = "adversarial"
    Result = AdversarialResult
    description = "robust accuracy under FGSM/PGD (Linf, L2) or torchattacks:NAME, eps sweeps, masking checks"
    title = "Adversarial"
    order = 20
    robustness_rank = 2

    Options = AdversarialOptions

    def run(self, ctx: EvalContext) -> AdversarialResult:
        opts: AdversarialOptions = ctx.options(self.name)
        steps = DEFAULT_STEPS if opts.steps is None else opts.steps
        restarts = DEFAULT_RESTARTS if opts.restarts is None else opts.restarts
        ds = ctx.dataset
        assert ctx.config.dataset is not None  # resolved by evaluate()
        pixels = ds.channels * ds.size[0] * ds.size[1]
        budgets: dict[str, tuple[float, ...]] = {}
        for norm in opts.norms:
            budgets[norm] = opts.eps or (default_eps(ctx.config.dataset, norm),)
            if norm == "L2" and budgets[norm][-1] > math.sqrt(pixels):
                raise RobustEvalError(
                    f"--eps {eps_key(budgets[norm][-1])} is larger than any L2 perturbation of a "
                    f"{ds.channels}x{ds.size[0]}x{ds.size[1]} image in [0,1] (at most sqrt({pixels}) = "
                    f"{math.sqrt(pixels):.4g}); pass a smaller budget"
                )
        seed = ctx.config.seed
        # a model without gradients (and no surrogate) gets only gradient-free attacks (checked up front)
        gradients = ctx.source is None or ctx.source.differentiable or ctx.attack_with is not None
        params = {norm: attack_params(opts, norm, budgets[norm][-1], seed, gradients) for norm in opts.norms}

        images, labels, indices = ds.float_images(), ds.labels, ds.indices
        clean_correct = ctx.clean_logits().argmax(dim=1) == labels
        clean_accuracy = float(clean_correct.float().mean()) if len(ds) else math.nan
        ctx.records.add(records.CLEAN, correct=clean_correct)
        batch_size = ctx.config.batch_size
        chunk = batch_size * ATTACK_CHUNK

        evaluations: dict[tuple[str, str], attacks.AttackEvaluation] = {}
        flows: dict[str, dict[str, Any]] = {}
        classes = [str(c) for c in ds.classes]
        masks = group_masks(ctx.meta, classes, labels)
        group_robust: dict[str, dict[str, float]] = {}
        worst_robust: dict[str, dict[str, Any]] = {}
        clean_pred = ctx.clean_logits().argmax(dim=1)
        broken_by: dict[str, dict[str, list[Any]]] = {}
        ensembles: dict[str, dict[str, list[str]]] = {}
        entries: list[AttackResult] = []
        warnings: list[str] = []
        for norm in opts.norms:
            for name in opts.attacks:
                kwargs = params[norm][name]
                ctx.log(f"adversarial: {name} {norm} eps {', '.join(map(eps_key, budgets[norm]))} "
                        f"on {len(ds)} images")
                # evaluate_attack takes no clean logits, so it repeats the clean pass (counted in passes).
                # Images go in chunks of ATTACK_CHUNK batches: the unit of work torchrun ranks share, so
                # a distributed run computes exactly what one process computes.

                def evaluate_chunk(k: int, name: str = name, kwargs: dict[str, Any] = kwargs,
                                   norm: str = norm) -> tuple[attacks.AttackEvaluation, torch.Tensor]:
                    sl = slice(k * chunk, (k + 1) * chunk)
                    ev = attacks.evaluate_attack(ctx.attack_model, name, images[sl], labels[sl], indices[sl],
                                                 eps_list=budgets[norm], batch_size=batch_size,
                                                 attack_kwargs=kwargs, keep_adversarial=True)
                    # the model's predictions of the returned images (what each failure becomes); the images
                    # themselves are not kept
                    return dataclasses.replace(ev, adversarial=None), _predictions(ctx, ev.adversarial, batch_size)

                parts = run_units(max(1, -(-len(ds) // chunk)), evaluate_chunk)
                ev = attacks.AttackEvaluation.concat([p[0] for p in parts])
                flows[f"{name}.{norm}"] = failure_flow(clean_pred, torch.cat([p[1] for p in parts]), labels, classes)
                evaluations[(name, norm)] = ev
                keys = [result_key(name, norm, e) for e in ev.eps]
                records.record_evaluation(ctx.records, keys, ev)
                by_class, by_group = records.record_classes(ctx.records, keys, ev, labels, classes, masks)
                worst_robust.update(by_class)
                group_robust.update(by_group)
                for j, e in enumerate(ev.eps):
                    atk = attacks.build(name, **kwargs, eps=e)
                    entries.append(AttackResult(
                        key=result_key(name, norm, e), attack=name, norm=norm, eps=e,
                        steps=getattr(atk, "steps", None), alpha=getattr(atk, "alpha", None),
                        restarts=getattr(atk, "restarts", kwargs.get("n_restarts")),
                        robust_accuracy=ev.robust_accuracy[j], attack_success_rate=ev.attack_success_rate[j],
                        mean_perturbation=ev.mean_perturbation[j],
                        broken_by=None if ev.broken_by is None else attacks.broken_by_counts(
                            [who for who, hit in zip(ev.broken_by, ev.fooled[:, j].tolist(), strict=True) if hit]),
                    ))
                if ev.broken_by is not None:
                    broken_by[f"{name}.{norm}"] = {"indices": indices.tolist(), "component": list(ev.broken_by)}
                    ensembles[name] = {"components": list(getattr(atk, "components", ())),
                                       "left_out": list(getattr(atk, "missing", ()))}
                differ = int((ev.clean_correct != clean_correct).sum())
                if differ:
                    warnings.append(
                        f"{name}'s clean pass disagrees with the clean logits on {differ} image(s): the model's "
                        "output depends on the batch or is randomised, so robust accuracy is approximate"
                    )

        for name in opts.attacks:  # what a borrowed attack is not (torchattacks' AutoAttack: APGD at 10 steps)
            note = attacks.catalogue.note(name)
            if note:
                warnings.append(f"{name}: {note}")

        worst: dict[str, float] = {}
        if len(opts.attacks) > 1:
            for norm in opts.norms:
                evs = [evaluations[(a, norm)] for a in opts.attacks]
                correct = torch.stack([ev.clean_correct for ev in evs]).all(dim=0)
                fooled = torch.stack([ev.fooled for ev in evs]).any(dim=0)
                for j, e in enumerate(budgets[norm]):
                    robust = float((correct & ~fooled[:, j]).sum()) / len(ds) if len(ds) else math.nan
                    worst[f"{norm}[{eps_key(e)}]"] = robust
                    records.record_worst_case(ctx.records, f"{norm}[{eps_key(e)}]", correct & ~fooled[:, j],
                                              {a: evaluations[(a, norm)] for a in opts.attacks})

        curves = {f"{a}.{n}": _curve(ev, indices, clean_accuracy) for (a, n), ev in evaluations.items()
                  if len(ev.eps) > 1}

        check_n = min(MASKING_CHECK_IMAGES, len(ds))
        check_eps = {}
        transfer = getattr(ctx.attack_with, "source", None)  # sources.Transfer: crafted on a surrogate
        no_gradients = not gradients
        skipped = TRANSFER_SKIPS_CHECKS if transfer else NO_GRADIENT_SKIPS_CHECKS if no_gradients else None
        stochastic_check = (transfer or no_gradients) and check_n
        if stochastic_check and attacks.is_stochastic(ctx.model, images[:min(check_n, batch_size)]):
            warnings.append("the model's logits differ between two identical forward passes in eval mode: it is "
                            "randomised, so robust accuracy is approximate")
        for norm in opts.norms:
            eps = check_eps[norm] = budgets[norm][-1]
            if check_n == 0 or skipped:  # see TRANSFER_SKIPS_CHECKS, NO_GRADIENT_SKIPS_CHECKS
                continue
            # Reuse the full runs' FGSM and PGD only as a pair: both must be measured on the same images.
            reuse = ("fgsm", norm) in evaluations and ("pgd", norm) in evaluations
            warnings += attacks.gradient_masking_checks(
                ctx.attack_model, images[:check_n], labels[:check_n], eps, indices[:check_n], norm=norm,
                steps=steps, seed=seed, batch_size=batch_size,
                fgsm_result=evaluations[("fgsm", norm)] if reuse else None,
                pgd_result=evaluations[("pgd", norm)] if reuse else None,
            )

        warnings += score_based_flags(evaluations, entries if not no_gradients else [])
        from_parent = None
        if ctx.parent_transfer is not None and check_n and not transfer:
            from_parent = parent_check(ctx, evaluations, budgets, params, images[:check_n], labels[:check_n],
                                        indices[:check_n], batch_size)
            warnings += from_parent.pop("flags")

        passes: dict[str, Any] = {f"{a}.{n}": _passes(ev) for (a, n), ev in evaluations.items()}
        totals = {k: sum(p[k] for p in passes.values()) for k in ("forward", "backward", "total", "floor")}
        totals["over_floor"] = totals["total"] / totals["floor"] - 1 if totals["floor"] else 0.0
        passes["total"] = totals

        return AdversarialResult(
            clean_accuracy=clean_accuracy,
            n_examples=len(ds),
            results=entries,
            robust_accuracy={r.key: r.robust_accuracy for r in entries},
            worst_case=worst,
            curve=curves,
            warnings=warnings,
            passes=passes,
            broken_by=broken_by,
            failure_flow=flows,
            group_robust_accuracy=group_robust or None, worst_class_robust_accuracy=worst_robust,
            settings={
                "attacks": list(opts.attacks),
                "norms": list(opts.norms),
                "eps": {n: list(b) for n, b in budgets.items()},
                "eps_source": "--eps" if opts.eps else "attacks.default_eps(dataset, norm)",
                "steps": steps,
                "alpha": opts.alpha,
                "restarts": restarts,
                "attack_params": {n: {a: {k: v for k, v in p.items() if k != "seed"} for a, p in per.items()}
                                  for n, per in params.items()},
                "seed": seed,
                "batch_size": batch_size,
                "masking_checks": {"images": check_n, "eps": check_eps,
                                   **({"skipped": skipped} if skipped else {}),
                                   **({"from_parent": from_parent} if from_parent else {})},
                "key_format": "<attack>.<norm>[<eps %.6g>]",
                # what each ensemble ran, and what it left out (not implemented natively, or needing gradients)
                **({"ensembles": ensembles} if ensembles else {}),
                # transfer: crafted on this surrogate's gradients, scored on the model
                **({"transfer_from": transfer} if transfer else {}),
            },
        )

    @classmethod
    def derived(cls, block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
        return records.derived(block, acc)

    @classmethod
    def gate_roots(cls, options: Any) -> frozenset[str] | None:
        """The result's fields and each attack's name (``adversarial.pgd.Linf[0.1]``)."""
        roots = super().gate_roots(options)
        return None if roots is None else roots | frozenset(options.attacks)

    @classmethod
    def gate_paths(cls, block: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
        """``adversarial.<key>`` (robust accuracy) and ``adversarial.<key>.<field>`` for each result entry,
        and the bounds of its robust accuracy: ``adversarial.<key>.ci_low`` (``.robust_accuracy.ci_low``, ``ci_high``).

        (The generic walk also yields ``adversarial.robust_accuracy.<key>``, equal to the alias.)
        """
        out = []
        for entry in block.get("results") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("key"), str):
                if "robust_accuracy" in entry:  # the bare key means robust accuracy
                    out.append((f"{cls.name}.{entry['key']}", entry["robust_accuracy"]))
                out += [(f"{cls.name}.{entry['key']}.{f}", entry[f]) for f in GATE_FIELDS if f in entry]
        return [*out, *records.interval_aliases(block)]

    @classmethod
    def headline(cls, block: Mapping[str, Any], paths: Mapping[str, float | None]) -> list[Headline]:
        """Per norm, robust accuracy at the largest budget: the worst case over attacks when there
        is one, else each attack's."""
        out: list[Headline] = []
        largest: dict[str, tuple[float, str]] = {}
        for entry in block.get("results") or []:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("eps"), (int, float)):
                continue
            norm = str(entry.get("norm"))
            if norm not in largest or entry["eps"] > largest[norm][0]:
                largest[norm] = (float(entry["eps"]), eps_key(entry["eps"]))
        for norm, (_, eps) in largest.items():
            worst = f"{cls.name}.worst_case.{norm}[{eps}]"
            # (label, gate path, key of its interval in the block's ci)
            candidates = [(f"robust acc {norm} {eps} (all attacks)", worst, f"worst_case.{norm}[{eps}]")]
            if worst not in paths:
                candidates = [
                    (f"robust acc {entry.get('attack')} {norm} {eps}",
                     f"{cls.name}.{entry.get('key')}.robust_accuracy", f"robust_accuracy.{entry.get('key')}")
                    for entry in block.get("results") or []
                    if isinstance(entry, Mapping) and entry.get("norm") == norm
                    and eps_key(entry.get("eps", math.nan)) == eps]
            # A transfer run's numbers are another measurement than white-box ones: label them apart.
            kind = "transfer " if (block.get("settings") or {}).get("transfer_from") else ""
            out += [Headline(cls.name, kind + label, path, paths[path], ci=block_interval(block, ci_key))
                    for label, path, ci_key in candidates if path in paths]
        return out

    @classmethod
    def check_model(cls, options: Any, what: str, differentiable: bool, surrogate: bool) -> None:
        if differentiable or surrogate:
            return
        blocked = [a for a in options.attacks if gradients_needed(a)]
        if blocked:
            raise RobustEvalError(
                f"{', '.join(blocked)} need{'s' if len(blocked) == 1 else ''} input gradients, and {what} has none; "
                "pass --surrogate PATH (a differentiable model of the same task: attacks are crafted on it and "
                "scored on this model), or a score-based attack (--attack square, or autoattack: its gradient-free "
                "part), or leave the adversarial suite out")

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        from robustbench_lite import figures  # matplotlib is loaded only when a report is drawn
        from robustbench_lite.suites.base import block_interval

        def ci(key: str) -> tuple[float, float] | None:
            return block_interval(block, key)

        entries = [r for r in block.get("results") or [] if isinstance(r, Mapping)]
        series: dict[str, tuple[list[float], list[float]]] = {}
        bands: dict[str, list[tuple[float, float] | None]] = {}  # each point's interval, in series order
        for r in sorted(entries, key=lambda r: (r.get("attack"), r.get("norm"), r.get("eps"))):
            eps, acc = series.setdefault(f"{r.get('attack')}.{r.get('norm')}", ([], []))
            eps.append(float(r["eps"]))
            acc.append(r.get("robust_accuracy"))
            bands.setdefault(f"{r.get('attack')}.{r.get('norm')}", []).append(ci(f"robust_accuracy.{r.get('key')}"))
        worst: dict[str, list[tuple[float, float, tuple[float, float] | None]]] = {}
        for key, value in (block.get("worst_case") or {}).items():
            norm, _, rest = str(key).partition("[")
            budget = parse_number(rest.rstrip("]"))
            if budget is not None:
                worst.setdefault(norm, []).append((budget, value, ci(f"worst_case.{key}")))
        for norm, pts in worst.items():
            pts.sort(key=lambda p: p[0])
            series[f"worst case.{norm}"] = ([p[0] for p in pts], [p[1] for p in pts])
            bands[f"worst case.{norm}"] = [p[2] for p in pts]
        curves = block.get("curve") or {}
        settings = block.get("settings") or {}
        flows = [{"name": key, "broken": f.get("newly_wrong", 0),
                  "into": ", ".join(f"{c} ({n})" for c, n in (f.get("into") or {}).items()),
                  "losing": ", ".join(f"{c} ({pct(d)})" for c, d in (f.get("losing") or {}).items())}
                 for key, f in (block.get("failure_flow") or {}).items() if isinstance(f, Mapping)]
        return {
            "flows": flows,
            "stats": stats(("clean accuracy", pct(block.get("clean_accuracy")), ci("clean_accuracy")),
                           ("attacks", ", ".join(map(str, settings.get("attacks", []))) or
                            ", ".join(sorted({str(r.get("attack")) for r in entries}))),
                           ("norms", ", ".join(map(str, settings.get("norms", []))) or
                            ", ".join(sorted({str(r.get("norm")) for r in entries}))),
                           ("steps", num(settings.get("steps"))), ("restarts", num(settings.get("restarts"))),
                           ("images", num(block.get("n_examples"))), *_group_stats(block, ci)),
            "rows": [{"attack": r.get("attack"), "norm": r.get("norm"), "eps": num(r.get("eps"), 4),
                      "robust_accuracy": pct(r.get("robust_accuracy")), "asr": pct(r.get("attack_success_rate")),
                      "perturbation": num(r.get("mean_perturbation"), 3), "steps": num(r.get("steps")),
                      "gate_path": f"{cls.name}.{r.get('key')}.robust_accuracy",
                      "ci": ci(f"robust_accuracy.{r.get('key')}")} for r in entries],
            "worst": [{"key": k, "value": pct(v), "ci": ci(f"worst_case.{k}")}
                      for k, v in (block.get("worst_case") or {}).items()],
            "auc": [{"name": k, "auc": pct(c.get("auc")), "median": num((c.get("min_eps") or {}).get("median"), 3),
                     "ci": ci(f"curve.{k}.auc")} for k, c in curves.items() if isinstance(c, Mapping)],
            "warnings": [str(w) for w in block.get("warnings") or []],
            "transfer_from": Path(str(settings["transfer_from"])).name if settings.get("transfer_from") else None,
            "checks_skipped": (settings.get("masking_checks") or {}).get("skipped"),
            "figure": figures.robust_curves(series, block.get("clean_accuracy"), bands, ci("clean_accuracy"))
            if series else None,
            "bands": any(c is not None for b in bands.values() for c in b),
            "breakdown": [{"attack": r.get("attack"), "norm": r.get("norm"), "eps": num(r.get("eps"), 4),
                           "parts": ", ".join(f"{k} {v}" for k, v in r["broken_by"].items()) or "none fooled"}
                          for r in entries if isinstance(r.get("broken_by"), Mapping)],
        }


def _group_stats(block: Mapping[str, Any], ci: Callable[[str], Any]) -> list[tuple[Any, ...]]:
    """The worst class's robust accuracy under the last attack result, and (a stressed checkpoint) the
    frequent, medium and rare classes' robust accuracy under it."""
    out: list[tuple[Any, ...]] = []
    worst = block.get("worst_class_robust_accuracy") or {}
    if worst:
        key, value = list(worst.items())[-1]
        out.append((f"worst class: {key}", f"{pct(value.get('accuracy'))} ({value.get('class')})",
                    ci(f"worst_class_robust_accuracy.{key}.accuracy")))
    groups = block.get("group_robust_accuracy") or {}
    if groups:
        key = list(groups)[-1]
        out += [(f"{g} classes: {key}", pct(a), ci(f"group_robust_accuracy.{key}.{g}"))
                for g, a in groups[key].items()]
    return out
