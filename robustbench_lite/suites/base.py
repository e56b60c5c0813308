"""Suite contract: ``Suite.run(ctx) -> SuiteResult``; the context shares work between suites."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite.config import RunConfig
from robustbench_lite.data import ImageDataset
from robustbench_lite.engine import Transform, predict
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options
from robustbench_lite.registry import Registry
from robustbench_lite.results import SuiteResult

SUITES: Registry[type[Suite]] = Registry("suite", "robust-eval list suites")


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
    """

    model: nn.Module
    dataset: ImageDataset
    config: RunConfig
    device: torch.device
    meta: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    _clean_logits: torch.Tensor | None = None

    def predict(self, transform: Transform | None = None, desc: str = "predict") -> torch.Tensor:
        """Logits for the whole test split, optionally through a per-batch transform."""
        return predict(self.model, self.dataset, self.config.batch_size, self.device, transform, desc,
                       self.config.show_progress)

    def clean_logits(self) -> torch.Tensor:
        """Clean logits, computed once per run and shared by every suite."""
        if self._clean_logits is None:
            self._clean_logits = self.predict(desc="clean")
        return self._clean_logits

    def options(self, suite: str) -> Any:
        """The suite's typed options (its defaults when the run sets none)."""
        opts = self.config.suite_options.get(suite)
        return opts if opts is not None else SUITES.entry(suite).Options()


@dataclass(frozen=True)
class NoOptions(Options):
    """A suite without settings."""


class Suite:
    """A named evaluation; subclasses set ``name``/``description``/``Options`` and implement :meth:`run`.

    ``Options`` is a frozen :class:`robustbench_lite.options.Options` dataclass: it declares the
    suite's CLI flags and YAML keys, and is parsed and validated before any data is read, so a new
    suite needs no CLI edit.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Options]] = NoOptions

    def run(self, ctx: EvalContext) -> SuiteResult:
        raise NotImplementedError


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


def register_suite(cls: type[Suite]) -> type[Suite]:
    return SUITES.register(cls.name, cls)
