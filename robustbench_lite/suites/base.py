"""Suite contract: ``Suite.run(ctx) -> SuiteResult``; the context shares work between suites."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from robustbench_lite.config import RunConfig
from robustbench_lite.data import ImageDataset
from robustbench_lite.engine import Transform, predict
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

    def options(self, suite: str) -> dict[str, Any]:
        return dict(self.config.suite_options.get(suite, {}))


class Suite:
    """A named evaluation; subclasses set ``name``/``description`` and implement :meth:`run`.

    A suite with settings declares its own CLI flags (:meth:`add_arguments`) and turns the parsed
    flags into its ``suite_options`` entry (:meth:`options_from_args`): the CLI is driven by the
    registry, so a new suite needs no CLI edit. YAML configs use the same option names.
    """

    name: ClassVar[str]
    description: ClassVar[str]

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """Add this suite's flags (kebab-case, defaults None = "the suite's default")."""

    @classmethod
    def options_from_args(cls, args: argparse.Namespace) -> dict[str, Any]:
        """This suite's options from parsed flags; only flags the user set (not None)."""
        return {}

    def run(self, ctx: EvalContext) -> SuiteResult:
        raise NotImplementedError


def register_suite(cls: type[Suite]) -> type[Suite]:
    return SUITES.register(cls.name, cls)
