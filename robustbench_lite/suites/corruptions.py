"""Corruption suite: accuracy under the ImageNet-C / CIFAR-10-C catalogue, mean accuracy, CE and mCE.

Scores (Hendrycks & Dietterich 2019), with E(c, s) the top-1 error under corruption c at
severity s and E_clean the clean error:

- ``accuracy[c][s]`` and ``mean_accuracy`` (mean over the selected corruptions and severities).
- ``ce[c] = sum_s E(c, s) / sum_s E_ref(c, s)`` and ``mce = mean_c ce[c]`` against a reference
  model's results JSON (``--mce-reference``). ImageNet-C uses AlexNet as the reference; there is
  none for CIFAR-size data (RobustBench issue #194), so the reference is any model the user
  chooses, e.g. the baseline they ship today. Without one, ``ce[c]`` is the mean error
  ``mean_s E(c, s)`` and ``mce`` its mean (``normalised: false`` in the JSON).
- ``relative_ce[c] = sum_s (E(c, s) - E_clean) / sum_s (E_ref(c, s) - E_ref_clean)`` and
  ``relative_mce``: how much the model degrades from its own clean error, normalised the same way
  (unnormalised: the mean degradation).

Ratios are reported as fractions (1.0 = as robust as the reference), not percentages.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustbench_lite.analysis.calibration import before_after, calibration_stats, mean_calibration
from robustbench_lite.analysis.failures import class_drop, failure_flow, flow_matrix, top
from robustbench_lite.analysis.groups import group_masks, group_means, per_class_accuracy, worst_class
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import pct
from robustbench_lite.options import Options, comma_list, int_in, one_of, option
from robustbench_lite.results import SuiteResult, read_json
from robustbench_lite.statistics import interval_text
from robustbench_lite.suites.base import EvalContext, HeadlineMetric, Suite, block_interval, register_suite, stats

if TYPE_CHECKING:
    from corruptions.sources import ImageSource

PROFILE_CHOICES = ("auto", "cifar", "imagenet")
BACKENDS = ("native", "imagecorruptions")


def corruption_groups() -> dict[str, tuple[str, ...]]:
    from corruptions import BENCHMARK, EXTRA, FAMILIES

    return {"benchmark": BENCHMARK, "extra": EXTRA, "all": BENCHMARK + EXTRA, **FAMILIES}


def resolve_corruptions(spec: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """Names and groups (``noise``, ``blur``, ``weather``, ``digital``, ``benchmark``, ``extra``,
    ``all``) to corruption names, in catalogue order; default: the 15 benchmark corruptions."""
    from corruptions import BENCHMARK, CORRUPTIONS, EXTRA

    if spec is None:
        return list(BENCHMARK)
    groups = corruption_groups()
    chosen: set[str] = set()
    for part in comma_list(spec, "--corruptions", "noise,blur"):
        if part in groups:
            chosen.update(groups[part])
        elif part in CORRUPTIONS:
            chosen.add(part)
        else:
            CORRUPTIONS.entry(part)  # raises with the valid names and a suggestion
    return [c for c in BENCHMARK + EXTRA if c in chosen]


def _severities(spec: Any) -> tuple[int, ...]:
    parse = int_in("--severities", 1, 5)
    return tuple(sorted({parse(part) for part in comma_list(spec, "--severities", "1,3,5")}))


def resolve_severities(spec: Any) -> list[int]:
    return [1, 2, 3, 4, 5] if spec is None else list(_severities(spec))


def _mce_reference(path: Any) -> str:
    path = str(path)
    read_json(path)  # a missing or unreadable file fails now, not after the corruptions ran
    return path


@dataclass(frozen=True)
class CorruptionOptions(Options):
    """The corruption suite's settings; None means the default."""

    owner: ClassVar[str] = "corruptions"

    corruptions: tuple[str, ...] | None = option(
        "--corruptions", "corruptions or groups (noise, blur, weather, digital, benchmark, extra, all), "
        "comma-separated (default: the 15 benchmark corruptions)",
        parse=lambda v: comma_list(v, "--corruptions", "noise,blur"), metavar="NAMES", example="noise,fog")
    severities: tuple[int, ...] | None = option(
        "--severities", "severities 1..5 (default: 1,2,3,4,5)", parse=_severities, metavar="S[,S]", example="1,3")
    profile: str | None = option(
        "--profile", "parameter table: cifar (CIFAR-10-C, images <= 64 px) or imagenet (default: auto, by image size)",
        parse=one_of("--profile", PROFILE_CHOICES), metavar="{" + ",".join(PROFILE_CHOICES) + "}",
        example="imagenet")
    backend: str | None = option(
        "--corruption-backend", "native batched tensors, or the imagecorruptions package per image "
        "(optional extra, imagenet profile) (default: native)",
        parse=one_of("--corruption-backend", BACKENDS), metavar="{" + ",".join(BACKENDS) + "}",
        example="imagecorruptions")
    cache: str | None = option(
        "--cache-corruptions", "write corrupted sets in the CIFAR-10-C layout here and reuse them",
        parse=str, metavar="DIR", example="corruption-cache")
    mce_reference: str | None = option(
        "--mce-reference", "normalise CE/mCE by this model's corruption errors (default: unnormalised)",
        parse=_mce_reference, metavar="RESULTS.json", example="reference.json")

    def validate(self) -> None:
        names = resolve_corruptions(self.corruptions)
        if self.cache is not None:
            from robustbench_lite.output_paths import check_output

            check_output(self.cache, "--cache-corruptions", folder=True)
        if self.backend == "imagecorruptions" and self.profile == "cifar":
            raise RobustEvalError("the imagecorruptions backend implements the imagenet profile only; "
                                  "add --profile imagenet")
        if self.mce_reference is not None:
            _reference(self.mce_reference, names, resolve_severities(self.severities))


@dataclass
class CorruptionResult(SuiteResult):
    profile: str
    backend: str
    corruptions: list[str]
    severities: list[int]
    clean_accuracy: float
    accuracy: dict[str, dict[str, float]]
    mean_accuracy: float
    accuracy_by_severity: dict[str, float]
    accuracy_by_family: dict[str, float]
    ce: dict[str, float]
    mce: float
    relative_ce: dict[str, float]
    relative_mce: float
    normalised: bool
    mce_reference: str | None
    unavailable: dict[str, str] = field(default_factory=dict)
    #: time spent corrupting images, summed over the workers that corrupt batches at once (then it
    #: overlaps inference), and the rest of the suite's wall time
    corruption_seconds: float = 0.0
    inference_seconds: float = 0.0
    cache: dict[str, Any] = field(default_factory=dict)
    #: what each failure becomes (:mod:`robustbench_lite.analysis.failures`): ``by_condition`` ("fog.3" ->
    #: newly_wrong, into, losing), and over every condition ``into``, ``losing`` (mean drop) and
    #: ``matrix`` (true class x new prediction of the newly wrong images)
    failure_flow: dict[str, Any] = field(default_factory=dict)
    #: with ``--calibrate``: ECE/NLL before and after temperature scaling, per condition and their means
    calibration: dict[str, Any] | None = None
    #: for a checkpoint with a stress record: mean corruption accuracy of its frequent / medium / rare classes
    group_mean_accuracy: dict[str, float] | None = None
    #: each class's accuracy averaged over every condition, and the lowest of them with its class
    per_class_mean_accuracy: list[float] = field(default_factory=list)
    worst_class_mean_accuracy: float | None = None
    worst_class: str | None = None
    #: that class's accuracy under each condition (corruption -> severity -> accuracy)
    worst_class_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int | str]:
        return {"profile": self.profile, "mean acc": round(self.mean_accuracy, 4),
                "mCE": round(self.mce, 4), "rel mCE": round(self.relative_mce, 4),
                **({"worst class": f"{self.worst_class} {self.worst_class_mean_accuracy:.4f}"}
                   if self.worst_class_mean_accuracy is not None else {}),
                **{f"{g} classes": round(a, 4) for g, a in (self.group_mean_accuracy or {}).items()}}


def _errors(acc: dict[str, dict[str, float]], name: str, severities: list[int]) -> list[float]:
    return [1 - acc[name][str(s)] for s in severities]


def _reference(path: str, names: list[str], severities: list[int]) -> tuple[dict[str, dict[str, float]], float]:
    ref = read_json(path)
    block = ref.get("corruptions")
    if not isinstance(block, dict) or "accuracy" not in block:
        raise RobustEvalError(f"--mce-reference {path} has no corruption results; run it with --suite corruptions")
    missing = [f"{c}@{s}" for c in names for s in severities if str(s) not in block["accuracy"].get(c, {})]
    if missing:
        raise RobustEvalError(
            f"--mce-reference {path} lacks {', '.join(missing[:5])}{'...' if len(missing) > 5 else ''}; "
            "evaluate the reference on the same corruptions and severities"
        )
    return block["accuracy"], float(block["clean_accuracy"])


def scores(acc: dict[str, dict[str, Any]], clean_acc: Any, names: list[str], severities: list[int],
           reference: tuple[dict[str, dict[str, float]], float] | None) -> dict[str, Any]:
    """CE/mCE and relative CE/mCE (see the module docstring).

    Accuracies may be floats or numpy arrays of bootstrap replicates: the arithmetic is the same.
    """
    ce, rel = {}, {}
    clean_err = 1 - clean_acc
    for c in names:
        err = _errors(acc, c, severities)
        if reference is None:
            ce[c] = sum(err) / len(err)
            rel[c] = sum(e - clean_err for e in err) / len(err)
        else:
            ref_acc, ref_clean = reference
            ref_err = _errors(ref_acc, c, severities)
            ce[c] = sum(err) / sum(ref_err) if sum(ref_err) > 0 else float("nan")
            ref_deg = sum(e - (1 - ref_clean) for e in ref_err)
            rel[c] = sum(e - clean_err for e in err) / ref_deg if ref_deg > 0 else float("nan")
    return {"ce": ce, "mce": sum(ce.values()) / len(ce), "relative_ce": rel,
            "relative_mce": sum(rel.values()) / len(rel)}


def means(acc: dict[str, dict[str, Any]], names: list[str], severities: list[int]) -> dict[str, Any]:
    """Mean accuracy overall, per severity and per family (floats or bootstrap replicate arrays)."""
    from corruptions import family_of

    cells = [acc[c][str(s)] for c in names for s in severities]
    families: dict[str, list[Any]] = {}
    for c in names:
        families.setdefault(family_of(c), []).extend(acc[c][str(s)] for s in severities)
    return {"mean_accuracy": sum(cells) / len(cells),
            "accuracy_by_severity": {str(s): sum(acc[c][str(s)] for c in names) / len(names) for s in severities},
            "accuracy_by_family": {f: sum(v) / len(v) for f, v in families.items()}}


def _flow_section(flow: Mapping[str, Any]) -> dict[str, Any]:
    """The report's "what each failure becomes": the flow matrix figure and the summary lines."""
    from robustbench_lite import figures

    matrix = flow.get("matrix")
    if not matrix or not any(any(row) for row in matrix):
        return {"flow": None, "flow_into": None, "flow_losing": None}
    classes = [str(c) for c in flow.get("classes") or []]
    names = classes if len(classes) == len(matrix) else [str(i) for i in range(len(matrix))]
    return {"flow": figures.confusion_matrix(matrix, names),
            "flow_into": ", ".join(f"{k} ({v})" for k, v in (flow.get("into") or {}).items()),
            "flow_losing": ", ".join(f"{k} ({pct(v)})" for k, v in (flow.get("losing") or {}).items())}


def _overall_flow(flows: dict[str, Any], matrix: torch.Tensor, drop_sum: torch.Tensor,
                  classes: list[str]) -> dict[str, Any]:
    """Every condition's flow, and over all of them: where the newly wrong images go, which classes lose most
    (their mean accuracy drop over the conditions)."""
    return {"newly_wrong": int(matrix.sum()), "into": top(matrix.sum(0), classes),
            "losing": top(drop_sum / max(len(flows), 1), classes, 4),
            "classes": classes, "matrix": matrix.tolist(), "by_condition": flows}


def _eight_bit(transform: Any) -> Any:
    """The corrupted images rounded to 8 bits, as CIFAR-10-C and ImageNet-C ship them and as the cache
    stores them: a run computes exactly the images a cached run reads back (the same numbers either way)."""

    def quantised(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return transform(x, indices).mul(255).round_().clamp_(0, 255).div_(255)

    return quantised


def image_source(ctx: EvalContext, severities: list[int], profile: str, backend: str,
                 cache_dir: str | None) -> ImageSource:
    """Where this run's corrupted images come from, picked once (see :mod:`corruptions.sources`).

    A test set that comes with published -C files is scored on those files (profile and backend
    do not apply, nor does the cache). Otherwise ``backend`` computes the images, behind the
    on-disk cache when ``cache_dir`` is given.

    Args:
        ctx: the run (test split, seed, device, batch size).
        severities: the severities the run scores (the cache fills them per corruption at once).
        profile: the resolved parameter table, ``cifar`` or ``imagenet``.
        backend: ``native`` or ``imagecorruptions``.
        cache_dir: the ``--cache-corruptions`` folder, or None.
    """
    from corruptions.sources import COMPUTED_SOURCES, CachedSource, PublishedSource

    published = ctx.dataset.meta.get("corrupted")
    if published is not None:
        return PublishedSource(published, ctx.dataset.indices.tolist(), str(ctx.dataset.meta["corrupted_source"]))
    computed = COMPUTED_SOURCES[backend](profile, ctx.config.seed)
    if not cache_dir:
        return computed
    from corruptions.cache import CacheKey, CorruptionCache

    key = CacheKey.for_data(ctx.config.dataset, ctx.dataset.float_images(), ctx.dataset.labels, profile=profile,
                            seed=ctx.config.seed, backend=backend)

    def clean_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return ((x.to(ctx.device), idx) for x, _, idx in ctx.dataset.batches(ctx.config.batch_size))

    return CachedSource(computed, CorruptionCache(cache_dir), key, severities, clean_batches)


@register_suite
class CorruptionSuite(Suite):
    name = "corruptions"
    Result = CorruptionResult
    description = "accuracy under the 15 ImageNet-C/CIFAR-10-C corruptions x 5 severities; mean accuracy, mCE"
    title = "Corruptions"
    order = 30
    robustness_rank = 1
    headline_metrics = (HeadlineMetric("mean accuracy", "mean_accuracy"),
                        HeadlineMetric("mCE", "mce", higher_is_better=False))

    Options = CorruptionOptions
    aggregate_keys = ("mean_accuracy", "accuracy_by_severity", "accuracy_by_family", "mce", "relative_mce")

    @classmethod
    def conditions(cls, block: Mapping[str, Any]) -> Any:
        names, severities = block.get("corruptions"), block.get("severities")
        if not isinstance(names, list) or not isinstance(severities, list):
            return None
        return {"corruptions": sorted(map(str, names)), "severities": sorted(map(int, severities)),
                "profile": block.get("profile")}

    @classmethod
    def describe_difference(cls, mine: Any, theirs: Any) -> str:
        parts = []
        for key in ("corruptions", "severities"):
            a, b = set(mine[key]), set(theirs[key])
            if a != b:
                only_a, only_b = sorted(a - b, key=str), sorted(b - a, key=str)
                parts.append(f"{len(a)} vs {len(b)} {key}" + (f" (only in this run: {', '.join(map(str, only_a))})"
                                                                if only_a else "")
                             + (f" (only in the other: {', '.join(map(str, only_b))})" if only_b else ""))
        if mine["profile"] != theirs["profile"]:
            parts.append(f"profile {mine['profile']} vs {theirs['profile']}")
        return "they average over different conditions: " + "; ".join(parts)

    @classmethod
    def forward_passes(cls, options: Any) -> int:
        opts = options or CorruptionOptions()
        return len(resolve_corruptions(opts.corruptions)) * len(resolve_severities(opts.severities))

    @classmethod
    def check_data(cls, options: Any, dataset: Any) -> None:
        cls._profile_backend(options or CorruptionOptions(), dataset)

    @staticmethod
    def _profile_backend(opts: CorruptionOptions, dataset: Any) -> tuple[str, str]:
        """The resolved (profile, backend) for this data; a backend that cannot run the profile is one line."""
        from corruptions import profile_for_size

        profile = opts.profile or "auto"
        if profile == "auto":
            profile = profile_for_size(*dataset.size)
        backend = opts.backend or "native"
        if backend == "imagecorruptions" and profile != "imagenet":
            raise RobustEvalError(f"the imagecorruptions backend implements the imagenet profile only, and "
                                  f"{dataset.size[0]}x{dataset.size[1]} images take the {profile} profile; "
                                  "add --profile imagenet")
        return profile, backend

    def run(self, ctx: EvalContext) -> CorruptionResult:
        opts: CorruptionOptions = ctx.options(self.name)
        names = resolve_corruptions(opts.corruptions)
        severities = resolve_severities(opts.severities)
        profile, backend = self._profile_backend(opts, ctx.dataset)
        reference = _reference(opts.mce_reference, names, severities) if opts.mce_reference else None

        source = image_source(ctx, severities, profile, backend, opts.cache)
        names = source.select(names, explicit=opts.corruptions is not None)
        unavailable = {}
        for name in names:
            reason = source.availability(name)
            if reason is not None:
                unavailable[name] = reason
                ctx.log(f"corruptions: skipping {name}: {reason}")
        names = [n for n in names if n not in unavailable]
        if not names:
            raise RobustEvalError("no selected corruption is available: " + "; ".join(unavailable.values()))

        clean_acc = float((ctx.clean_logits().argmax(1) == ctx.dataset.labels).float().mean())
        ctx.records.add("corruptions.clean_accuracy", predicted=ctx.clean_logits().argmax(1))
        labels = ctx.dataset.labels
        clean_pred = ctx.clean_logits().argmax(1)
        classes = [str(c) for c in ctx.dataset.classes]
        flows: dict[str, Any] = {}
        flow_total = torch.zeros(len(classes), len(classes), dtype=torch.long)
        drop_total = torch.zeros(len(classes))
        temperatures = ctx.temperatures()
        calibration: dict[str, dict[str, float]] = {}
        masks = group_masks(ctx.meta, classes, labels)
        group_sums = dict.fromkeys(masks, 0.0) if masks else {}
        class_sums = torch.zeros(len(classes), dtype=torch.float64)
        conditions = 0
        acc: dict[str, dict[str, float]] = {}
        start = time.perf_counter()
        for name in names:
            acc[name] = {}
            for severity in severities:
                desc = f"{name} s{severity}"
                got = source.images(name, severity)
                logits = (ctx.predict(_eight_bit(got.transform), desc=desc, thread_safe=got.thread_safe)
                          if got.images is None else self._predict_stored(ctx, got.images, desc))
                predicted = logits.argmax(1)
                correct = predicted == labels
                acc[name][str(severity)] = float(correct.float().mean())
                ctx.records.add(f"corruptions.accuracy.{name}.{severity}", predicted=predicted)
                flows[f"{name}.{severity}"] = failure_flow(clean_pred, predicted, labels, classes)
                conditions += 1
                for group, value in (group_means(correct, masks) if masks else {}).items():
                    group_sums[group] += value
                class_sums += per_class_accuracy(correct, labels, len(classes))
                flow_total += flow_matrix(clean_pred, predicted, labels, len(classes))
                drop_total += class_drop(clean_pred, predicted, labels, len(classes))
                if temperatures is not None:
                    calibration[f"{name}.{severity}"] = before_after(logits, labels, temperatures)
            ctx.log(f"corruptions: {name}: accuracy " + " ".join(f"s{s} {acc[name][str(s)]:.3f}" for s in severities))
        total = time.perf_counter() - start
        corrupt_seconds = source.corruption_seconds
        class_mean = (class_sums / max(conditions, 1)).tolist()
        worst = worst_class(class_mean, classes)
        worst_by_condition: dict[str, dict[str, float]] = {}
        if worst[1] is not None:  # the worst class under each condition: its number and interval from its images
            mask = labels == classes.index(worst[1])
            for name in names:
                worst_by_condition[name] = {}
                for severity in severities:
                    correct = torch.as_tensor(ctx.records[f"corruptions.accuracy.{name}.{severity}"].correct)
                    worst_by_condition[name][str(severity)] = float(correct[mask].float().mean())
                    ctx.records.add(f"corruptions.worst_class_accuracy.{name}.{severity}", correct=correct,
                                    weights=mask)

        return CorruptionResult(
            profile=source.profile, backend=source.backend, corruptions=names, severities=severities,
            clean_accuracy=clean_acc, accuracy=acc, **means(acc, names, severities),
            **scores(acc, clean_acc, names, severities, reference),
            normalised=reference is not None, mce_reference=opts.mce_reference, unavailable=unavailable,
            corruption_seconds=corrupt_seconds, inference_seconds=max(0.0, total - corrupt_seconds),
            cache=source.cache_info(),
            failure_flow=_overall_flow(flows, flow_total, drop_total, classes),
            calibration=mean_calibration(calibration) if temperatures is not None else None,
            group_mean_accuracy={g: v / max(conditions, 1) for g, v in group_sums.items()} if masks else None,
            per_class_mean_accuracy=class_mean, worst_class_mean_accuracy=worst[0], worst_class=worst[1],
            worst_class_accuracy=worst_by_condition,
        )

    @classmethod
    def derived(cls, block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
        names, severities = list(block["corruptions"]), [int(s) for s in block["severities"]]
        table = {c: {str(s): acc[f"corruptions.accuracy.{c}.{s}"] for s in severities} for c in names}
        clean = acc["corruptions.clean_accuracy"]
        found = means(table, names, severities)
        try:  # CE normalised by a reference needs its file; a results JSON read later may have lost it
            reference = _reference(block["mce_reference"], names, severities) if block.get("normalised") else None
        except RobustEvalError:
            pass
        else:
            found.update(scores(table, clean, names, severities, reference))
        if block.get("worst_class") is not None and names and severities:
            worst = [acc[f"corruptions.worst_class_accuracy.{c}.{s}"] for c in names for s in severities]
            found["worst_class_mean_accuracy"] = sum(worst) / len(worst)
        flat: dict[str, Any] = {}
        for key, value in found.items():
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                flat[key] = value
        return flat

    @staticmethod
    def _predict_stored(ctx: EvalContext, images: torch.Tensor, desc: str) -> torch.Tensor:
        """Logits for stored corrupted images (uint8 on disk, as CIFAR-10-C; quantised here)."""
        from dataclasses import replace

        as_uint8 = images.mul(255).round_().clamp_(0, 255).to(torch.uint8)
        return ctx.predict(desc=desc, dataset=replace(ctx.dataset, images=as_uint8))

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        from robustbench_lite import figures  # matplotlib is loaded only when a report is drawn

        acc = block.get("accuracy") or {}
        names = [c for c in block.get("corruptions") or list(acc) if c in acc]
        severities = block.get("severities") or sorted({s for c in acc.values() for s in c}, key=int)
        normalised = bool(block.get("normalised"))
        ce = block.get("ce") or {}
        by_family, by_severity = block.get("accuracy_by_family") or {}, block.get("accuracy_by_severity") or {}

        def ci(key: str) -> tuple[float, float] | None:
            return block_interval(block, key)

        def cells(c: str) -> str:  # each severity's accuracy with its interval, for the row's hover text
            parts = [(s, acc[c].get(str(s)), ci(f"accuracy.{c}.{s}")) for s in severities]
            return "; ".join(f"s{s} {interval_text(v, i)}" for s, v, i in parts if i is not None)

        family_ci = {f: ci(f"accuracy_by_family.{f}") for f in by_family}
        severity_ci = {s: ci(f"accuracy_by_severity.{s}") for s in by_severity}
        return {
            "stats": stats(("mean accuracy", pct(block.get("mean_accuracy")), ci("mean_accuracy")),
                           ("clean accuracy", pct(block.get("clean_accuracy")), ci("clean_accuracy")),
                           ("mCE" if normalised else "mean error", pct(block.get("mce")), ci("mce")),
                           ("relative mCE" if normalised else "mean degradation", pct(block.get("relative_mce")),
                            ci("relative_mce")),
                           ("profile", str(block.get("profile", "n/a"))),
                           ("backend", str(block.get("backend", "n/a"))),
                           ("corruptions x severities", f"{len(names)} x {len(severities)}"),
                           *((("worst class: mean accuracy",
                               f"{pct(block['worst_class_mean_accuracy'])} ({block.get('worst_class')})",
                               ci("worst_class_mean_accuracy")),)
                             if block.get("worst_class_mean_accuracy") is not None else ()),
                           *((f"{g} classes: mean accuracy", pct(a))
                             for g, a in (block.get("group_mean_accuracy") or {}).items()),
                           *calibration_stats(block.get("calibration"), "under corruptions")),
            "normalised": normalised,
            "reference": block.get("mce_reference"),
            "heatmap": figures.corruption_heatmap(acc, names, severities) if names and severities else None,
            "bars": figures.corruption_bars(by_family, by_severity, block.get("clean_accuracy"), family_ci, severity_ci,
                                            ci("clean_accuracy")) if by_family else None,
            "bar_intervals": any(family_ci.values()) or any(severity_ci.values()),
            "cell_intervals": any(cells(c) for c in names),
            "rows": [{"name": c, "mean": pct(sum(v for v in acc[c].values() if v is not None) / max(len(acc[c]), 1)),
                      "ce": pct(ce.get(c)), "relative_ce": pct((block.get("relative_ce") or {}).get(c)),
                      "ce_ci": ci(f"ce.{c}"), "relative_ce_ci": ci(f"relative_ce.{c}"), "cells": cells(c)}
                     for c in names],
            "unavailable": [{"name": k, "reason": v} for k, v in (block.get("unavailable") or {}).items()],
            **_flow_section(block.get("failure_flow") or {}),
        }
