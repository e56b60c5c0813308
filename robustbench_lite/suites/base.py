"""Suite contract: ``Suite.run(ctx) -> SuiteResult``; the context shares work between suites.

A suite also owns its metadata, so the code around it (``--suite full``, the gates, the report,
the comparison table, the history, ``robust-eval list``) loops over :data:`SUITES` and never
names a suite: its title and place in the order, which metrics are its headline, extra gate
paths, whether it runs on rank 0 alone, and its report section (drawn by the template partial
``report/partials/<name>.html``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite.config import RunConfig
from robustbench_lite.data import ImageDataset
from robustbench_lite.engine import Transform, check_finite, predict
from robustbench_lite.engine.plans import Plan
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.formatting import format_value
from robustbench_lite.options import Options
from robustbench_lite.records import TEST, Records
from robustbench_lite.registry import Registry
from robustbench_lite.results import SuiteResult
from robustbench_lite.sources.base import LoadedModel
from robustbench_lite.statistics import as_interval, interval_text

SUITES: Registry[type[Suite]] = Registry("suite", "robust-eval list suites")
#: Names that stand for every suite on the command line (``--suite full``).
ALL_SUITES = ("full", "all")


@dataclass(frozen=True)
class Headline:
    """One headline metric of a run: what the scorecard, the comparison table and the history show.

    Attributes:
        suite: the suite it belongs to.
        label: its name for people (``mean accuracy``).
        path: its gate path (``corruptions.mean_accuracy``).
        value: None where the metric is undefined.
        higher_is_better: direction, for marking the best run.
        unit: ``fraction`` (shown as %), ``ratio`` (3 decimals), ``ms``, ``MB`` or ``count``.
        ci: its 95% interval (low, high) from the block's ``ci``, or None (no interval: a
            measurement such as latency, or results written before intervals existed).
    """

    suite: str
    label: str
    path: str
    value: float | None
    higher_is_better: bool = True
    unit: str = "fraction"
    ci: tuple[float, float] | None = None

    @property
    def text(self) -> str:
        return format_value(self.value, self.unit)

    @property
    def text_with_interval(self) -> str:
        """``91.2% [90.6, 91.7]`` when there is an interval, else :attr:`text`."""
        if self.ci is None or self.unit not in ("fraction", "ratio"):
            return self.text
        return interval_text(self.value, self.ci, self.unit)


def block_interval(block: Mapping[str, Any], key: str) -> tuple[float, float] | None:
    """The interval of ``key`` (a path relative to a suite's block) from the block's ``ci``, or None."""
    ci = block.get("ci")
    return as_interval(ci.get(key)) if isinstance(ci, Mapping) else None


@dataclass(frozen=True)
class HeadlineMetric:
    """A headline metric a suite declares: label, key in the suite's results block, direction, unit."""

    label: str
    key: str
    higher_is_better: bool = True
    unit: str = "fraction"


@dataclass
class EvalContext:
    """What a suite gets: the model, the test data, the config, and shared cached work.

    Attributes:
        model: takes [0,1] images, returns logits; in eval mode.
        dataset: the (limited) test split.
        config: the run's configuration (``suite_options`` holds per-suite settings).
        device: where the model lives.
        meta: the checkpoint metadata (training recipe, classes...), empty for pretrained runs.
        log: progress messages for the user.
        source: what the model is (format, runtime, the model as shipped and its input shape).
        attack_with: the transfer model when attacks are crafted on a surrogate.
        parent_transfer: for a differentiable compressed artefact whose float parent is on disk, the
            artefact's outputs with the parent's gradients: the adversarial suite's masking check
            compares attacks crafted on it with the white-box ones.
        records: per-image outcomes; a suite adds one condition per accuracy it reports (its gate
            path), on the image set ``"test"`` (declared here) or on its own.
        plan: how :meth:`predict` computes forward passes (:mod:`robustbench_lite.engine.plans`);
            None: the model as given. Attacks run on :attr:`attack_model` itself.
        fp32_model: for a model cast to another precision (``--precision``), the fp32 model it was
            cast from (:meth:`fp32_agreement`).
    """

    model: nn.Module
    dataset: ImageDataset
    config: RunConfig
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    source: LoadedModel | None = None
    attack_with: nn.Module | None = None
    parent_transfer: nn.Module | None = None
    records: Records = field(default_factory=Records)
    plan: Plan | None = None
    fp32_model: nn.Module | None = None
    _clean_logits: torch.Tensor | None = None
    _fp32_agreement: dict[str, Any] | None = None
    _temperatures: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.records.add_images(TEST, self.dataset.indices, self.dataset.labels)

    @property
    def attack_model(self) -> nn.Module:
        """What attacks run on: the model, or the model's outputs with a surrogate's gradients (``--surrogate``)."""
        return self.attack_with if self.attack_with is not None else self.model

    def predict(self, transform: Transform | None = None, desc: str = "predict", thread_safe: bool = True,
                dataset: ImageDataset | None = None) -> torch.Tensor:
        """Logits for the whole test split (or ``dataset``), optionally through a per-batch transform, on
        the run's forward path (:attr:`plan`).

        Args:
            thread_safe: ``transform`` may run on two batches at once (False: one batch at a time).
        """
        plan = self.plan
        if plan is not None and plan.workers > 1 and not thread_safe:
            plan = dataclasses.replace(plan, workers=1, threads=plan.workers * plan.threads)
        return predict(self.model, dataset if dataset is not None else self.dataset, self.config.batch_size,
                       self.device, transform, desc, self.config.show_progress, plan=plan)

    def clean_logits(self) -> torch.Tensor:
        """Clean logits, computed once per run and shared by every suite."""
        if self._clean_logits is None:
            logits = self.predict(desc="clean")
            check_finite(self.model, self.dataset, self.config.batch_size, self.device, logits)
            self._clean_logits = logits
        return self._clean_logits

    def fp32_agreement(self) -> dict[str, Any] | None:
        """For a model cast from fp32: on how many clean images its prediction is the fp32 model's
        (``agreement`` as a fraction, ``changed`` and ``images`` as counts; one fp32 pass, once per run)."""
        if self.fp32_model is None:
            return None
        if self._fp32_agreement is None:
            fp32 = predict(self.fp32_model, self.dataset, self.config.batch_size, self.device, desc="fp32",
                           show_progress=self.config.show_progress).argmax(1)
            n = len(self.dataset)
            same = int((self.clean_logits().argmax(1) == fp32).sum())
            self._fp32_agreement = {"agreement": same / n if n else float("nan"), "changed": n - same, "images": n}
        return self._fp32_agreement

    def temperatures(self) -> tuple[float, float] | None:
        """With ``--calibrate``: the temperatures of the clean test split's two folds, each fitted on the other
        fold (:func:`robustbench_lite.analysis.calibration.cross_fit`; once per run); None without."""
        if not self.config.calibrate:
            return None
        if self._temperatures is None:
            from robustbench_lite.analysis.calibration import cross_fit

            self._temperatures = cross_fit(self.clean_logits(), self.dataset.labels)
        return self._temperatures

    def options(self, suite: str) -> Any:
        """The suite's typed options (its defaults when the run sets none)."""
        return options_of(self.config.suite_options, suite)


def options_of(values: Mapping[str, Any], suite: str) -> Any:
    """``suite``'s typed options in a run's ``suite_options`` (its defaults when the run sets none)."""
    opts = values.get(suite)
    cls = SUITES.entry(suite).Options
    return opts if isinstance(opts, cls) else cls.from_mapping(opts, f"suite_options[{suite!r}]")


@dataclass(frozen=True)
class NoOptions(Options):
    """A suite without settings."""


class Suite:
    """A named evaluation; subclasses set the metadata below and implement :meth:`run`.

    ``Options`` is a frozen :class:`robustbench_lite.options.Options` dataclass: it declares the
    suite's CLI flags and YAML keys, and is parsed and validated before any data is read, so a new
    suite needs no CLI edit.

    Attributes:
        name: registry name, also the suite's key in the results JSON.
        description: one line for ``robust-eval list suites``.
        title: the suite's name in the scorecard, the report and its navigation.
        order: its place in ``--suite full``, the scorecard, the report and the headline metrics
            (ascending).
        rank0_only: under torchrun, rank 0 runs it alone while the others wait (measurements of
            one process, such as latency); otherwise every rank shares the work.
        in_full: whether ``--suite full`` runs it (False: an analysis a user asks for by name).
        robustness_rank: where its headline accuracies stand in line for a run's one robustness
            number (:func:`robustbench_lite.gates.robustness_score`; ascending, None: never).
        headline_metrics: its headline metrics, in order; :meth:`headline` keeps those present.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Options]] = NoOptions
    #: The result dataclass: its fields are the block's keys, which gates are checked against before a run.
    Result: ClassVar[type[SuiteResult] | None] = None
    title: ClassVar[str]
    order: ClassVar[int]
    rank0_only: ClassVar[bool] = False
    in_full: ClassVar[bool] = True
    robustness_rank: ClassVar[int | None] = None
    headline_metrics: ClassVar[tuple[HeadlineMetric, ...]] = ()

    @classmethod
    def describe(cls) -> str:
        return cls.description

    @classmethod
    def check_model(cls, options: Any, what: str, differentiable: bool, surrogate: bool) -> None:
        """Refuse, before any data is read, a model this suite cannot run on with these options.

        Args:
            options: the suite's typed options.
            what: the model, for messages (its file name).
            differentiable: the model has input gradients.
            surrogate: a ``--surrogate`` gives gradients to attacks in its place.
        """

    @classmethod
    def forward_passes(cls, options: Any) -> int:
        """About how many times this suite runs the model over the test split through
        :meth:`EvalContext.predict` (the clean pass is shared and counted by the clean suite); the run's
        forward path is chosen from the total (:func:`robustbench_lite.engine.plans.build_plan`)."""
        return 0

    @classmethod
    def check_data(cls, options: Any, dataset: ImageDataset) -> None:
        """Refuse, once the test split is loaded and before any model is built or suite run, options
        that cannot work on this data (they would otherwise fail after the suites before this one)."""

    @classmethod
    def headline(cls, block: Mapping[str, Any], paths: Mapping[str, float | None]) -> list[Headline]:
        """This suite's headline metrics in a results JSON, in order; missing ones are left out.

        Args:
            block: the suite's results block (``results[cls.name]``).
            paths: every gateable number of the results by gate path (:func:`robustbench_lite.gates.metric_paths`).
        """
        out = []
        for m in cls.headline_metrics:
            path = f"{cls.name}.{m.key}"
            if path in paths:
                out.append(Headline(cls.name, m.label, path, paths[path], m.higher_is_better, m.unit,
                                    block_interval(block, m.key)))
        return out

    @classmethod
    def derived(cls, block: Mapping[str, Any], acc: Mapping[str, Any]) -> dict[str, Any]:
        """The suite's numbers computed from several recorded accuracies, as functions of them.

        The intervals of means, ratios and worst cases come from evaluating this on bootstrap
        replicates, so it must compute each number exactly as the suite did, with arithmetic that
        works on floats and numpy arrays alike (``+ - * /``, ``np.minimum``...).

        Args:
            block: the suite's results block (constants such as an mCE reference).
            acc: each recorded condition's accuracy by path: floats (the run's own values) or
                arrays of bootstrap replicates.

        Returns:
            The derived numbers by path relative to the block (``mean_accuracy``, ``ce.fog``).
        """
        return {}

    #: Keys of the block that average over the suite's conditions (a mean differs when the set does).
    aggregate_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def conditions(cls, block: Mapping[str, Any]) -> Any:
        """What the block's aggregates average over (``aggregate_keys``), comparable between runs;
        None where the suite has no aggregates."""
        return None

    @classmethod
    def comparable(cls, path: str, block: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
        """Why ``path`` (relative to the block) of this block and ``other`` are not the same quantity (a
        mean over other conditions), or None when they can be compared."""
        if path.split(".", 1)[0] not in cls.aggregate_keys:
            return None
        mine, theirs = cls.conditions(block), cls.conditions(other)
        if mine is None or theirs is None or mine == theirs:
            return None
        return cls.describe_difference(mine, theirs)

    @classmethod
    def describe_difference(cls, mine: Any, theirs: Any) -> str:
        return f"one averages over {mine}, the other over {theirs}"

    @classmethod
    def gate_roots(cls, options: Any) -> frozenset[str] | None:
        """The keys right under the block that a gate path of a run with these options can start with
        (``accuracy`` of ``clean.accuracy``), so a mistyped gate is refused before the work; None: not
        known before the run (a suite without ``Result``), nothing checked. Keys that hold no metrics
        (:data:`robustbench_lite.gates.SKIP_KEYS`) are left out by the caller."""
        if cls.Result is None:
            return None
        return frozenset(f.name for f in dataclasses.fields(cls.Result))

    @classmethod
    def gate_paths(cls, block: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
        """Gate paths besides the block's own keys: (path, value) pairs, walked before the block.

        For aliases a user should be able to write, such as one entry of a list by its key.
        """
        return ()

    @classmethod
    def report_section(cls, block: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any] | None:
        """The template context of this suite's report section, or None for no section.

        Args:
            block: the suite's results block.
            run: the whole results JSON (for what the section shows from other suites).

        Raises:
            KeyError, TypeError, ValueError...: the block has an unexpected shape; the report shows
                a one-line note in place of the section.
        """
        return None

    def run(self, ctx: EvalContext) -> SuiteResult:
        raise NotImplementedError


def incomparable(path: str, run: Mapping[str, Any], other: Mapping[str, Any],
                 other_path: str | None = None) -> str | None:
    """Why the number at ``path`` in the results ``run`` and the one at ``other_path`` (default: the same
    path) in ``other`` are not the same quantity (a mean over other conditions: 14 corruptions against
    15), or None when they can be compared (:meth:`Suite.comparable`)."""
    suite, _, rest = path.partition(".")
    other_suite, _, other_rest = (other_path or path).partition(".")
    if suite not in SUITES or suite != other_suite or rest.split(".", 1)[0] != other_rest.split(".", 1)[0]:
        return None
    block, base = run.get(suite), other.get(suite)
    if not isinstance(block, Mapping) or not isinstance(base, Mapping):
        return None
    return SUITES.entry(suite).comparable(rest, block, base)


def typed_options(suites: list[str], values: Mapping[str, Any] | None, where: str = "suite_options") -> dict[str, Any]:
    """``{suite: Options}`` from typed options or mappings (YAML, the Python API); errors name the suite.

    Options for a suite that is not in ``suites`` are an error: they would silently do nothing.
    """
    out: dict[str, Any] = {}
    for name, opts in (values or {}).items():
        cls = SUITES.entry(name).Options
        if name not in suites and (opts.set_fields() if isinstance(opts, Options) else opts):
            raise RobustEvalError(
                f"{where} sets {name} options but the {name} suite is not selected (suites: {', '.join(suites)}); "
                f"add --suite {name} or drop them"
            )
        out[name] = opts if isinstance(opts, cls) else cls.from_mapping(opts, f"{where}[{name!r}]")
    return out


def options_from_args(args: argparse.Namespace, suites: list[str]) -> dict[str, Any]:
    """Every suite's typed options from parsed flags; flags of unselected suites are an error."""
    out: dict[str, Any] = {}
    for name, suite in SUITES.items():
        opts = suite.Options.from_args(args)
        if name not in suites and opts.set_fields():
            flags = ", ".join(suite.Options.flags()[f].flag for f in opts.set_fields())
            raise RobustEvalError(f"{flags} applies to the {name} suite, which is not selected "
                                  f"(suites: {', '.join(suites)}); add --suite {name} or drop it")
        if name in suites and opts.set_fields():
            out[name] = opts
    return out


def suite_intervals(suite: type[Suite], block: Mapping[str, Any], records: Records,
                    resampler: Any) -> dict[str, list[float]]:
    """``ci`` of a suite's block: each recorded accuracy's interval and each derived number's.

    Keys are paths relative to the block (``accuracy``, ``accuracy.fog.3``, ``mean_accuracy``);
    values ``[low, high]`` at :data:`robustbench_lite.statistics.LEVEL`.
    """
    from robustbench_lite import statistics

    conditions = records.suite(suite.name)
    if not conditions:
        return {}
    prefix = suite.name + "."
    out = {c.path.removeprefix(prefix): list(c.interval(resampler)) for c in conditions}
    derived = suite.derived(block, records.replicates(resampler, [c.path for c in conditions]))
    for path, reps in derived.items():
        out[path] = list(statistics.percentile_interval(reps))
    return out


def register_suite(cls: type[Suite]) -> type[Suite]:
    return SUITES.register(cls.name, cls)


def stats(*items: tuple[Any, ...]) -> list[dict[str, Any]]:
    """The key figures line at the top of a report section: (label, value text[, interval[, unit]]) items.

    The optional interval is the value's (low, high) (:func:`block_interval`), in ``unit``
    (``fraction``, shown as %, or ``ratio``); the report shows it under the value, and nothing
    where it is None.
    """
    return [{"label": i[0], "value": i[1], "ci": i[2] if len(i) > 2 else None,
             "unit": i[3] if len(i) > 3 else "fraction"} for i in items]


def ordered_suites() -> list[type[Suite]]:
    """Every registered suite, in :attr:`Suite.order`."""
    return sorted((SUITES.entry(name) for name in SUITES), key=lambda s: (s.order, s.name))


def full_suites() -> list[str]:
    """What ``--suite full`` runs: every suite (but those asked for by name alone), in order."""
    return [s.name for s in ordered_suites() if s.in_full]


def expand_suites(names: Iterable[str]) -> list[str]:
    """Replace ``full``/``all`` by every suite, keeping order and dropping duplicates."""
    out: list[str] = []
    for name in names:
        for n in full_suites() if name in ALL_SUITES else (name,):
            if n not in out:
                out.append(n)
    return out
