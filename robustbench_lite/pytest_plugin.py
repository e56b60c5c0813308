"""pytest plugin: robustness gates inside your own test suite.

Installed with robustbench-lite and loaded through the ``pytest11`` entry point (nothing to add to
``conftest.py``). It gives you:

* the ``robustness`` fixture (session-scoped): ``robustness.evaluate(...)`` runs suites on a model
  and returns a :class:`RobustnessRun`; identical requests within a session are evaluated once and
  served from a cache, so several tests can gate one model cheaply;
* ``run.check("clean.accuracy >= 0.9", ...)``: fails the test with a readable table of each
  metric against its threshold (gate syntax: :mod:`robustbench_lite.gates`); ``run["path"]``
  reads one metric;
* the ``robustness`` marker: marked tests are **skipped unless pytest runs with
  ``--robustness``**, so quick runs stay quick; CI runs ``pytest --robustness`` (or
  ``pytest --robustness -m robustness`` for the robustness tests alone).

Example (``tests/test_robustness.py`` in your project)::

    import pytest

    @pytest.mark.robustness
    def test_checkpoint_is_robust(robustness):
        run = robustness.evaluate(checkpoint="models/best.pt", suites=["clean", "corruptions"], limit=500,
                                  options={"corruptions": {"corruptions": "noise,blur", "severities": "3"}})
        run.check("clean.accuracy >= 0.90", "corruptions.mean_accuracy >= 0.70")

    @pytest.mark.robustness
    def test_my_module(robustness):
        net = build_my_net()  # takes [0,1] images, normalises inside, returns logits
        run = robustness.evaluate(module=net, dataset="digits", suites=["clean", "adversarial"], limit=200)
        assert run["clean.accuracy"] > 0.5
        run.check("adversarial.pgd.Linf[0.1].robust_accuracy >= 0.2")

Gates relative to a saved run: ``run.check("clean.accuracy >= baseline - 0.02", baseline="base.json")``
(a results JSON, ``run:ID`` from ``robust-eval history``, a results dict or another run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torch import nn

    from robustbench_lite.data import ImageDataset
    from robustbench_lite.gates import GateOutcome
    from robustbench_lite.results import EvaluationResult

MARKER = "robustness"
_STASH: pytest.StashKey[Robustness] = pytest.StashKey()


# ---------------------------------------------------------------------------------------------
# Evaluating an nn.Module (api.evaluate starts from a checkpoint)


def as_dataset(dataset: Any, name: str = "custom") -> ImageDataset:
    """A dataset registry name, an :class:`ImageDataset`, or ``(images, labels[, classes])`` tensors.

    Float images must be in [0, 1] (they are stored as uint8 like every dataset, i.e. rounded to
    1/255); uint8 images are taken as they are. Shape N x C x H x W.
    """
    import torch

    from robustbench_lite import data as data_mod
    from robustbench_lite.errors import RobustEvalError

    if isinstance(dataset, data_mod.ImageDataset):
        return dataset
    if isinstance(dataset, str):
        from robustbench_lite import shift  # noqa: F401  (registers the <dataset>:subpop-* views)

        return data_mod.load(dataset, "test")
    if isinstance(dataset, (tuple, list)) and len(dataset) in (2, 3):
        images, labels = torch.as_tensor(dataset[0]), torch.as_tensor(dataset[1]).long()
        if images.dtype != torch.uint8:
            if images.numel() and (images.min() < 0 or images.max() > 1):
                raise RobustEvalError("dataset images must be in [0, 1] (or uint8); normalisation belongs in the model")
            images = images.float().mul(255).round().to(torch.uint8)
        if images.ndim != 4:
            raise RobustEvalError(f"dataset images must be N x C x H x W, got shape {tuple(images.shape)}")
        n_classes = int(labels.max()) + 1 if labels.numel() else 0
        classes = tuple(str(c) for c in dataset[2]) if len(dataset) == 3 else tuple(str(i) for i in range(n_classes))
        return data_mod.ImageDataset(name, "test", images, labels, classes, source="in-memory tensors")
    raise RobustEvalError(
        f"dataset must be a registry name, an ImageDataset or (images, labels[, classes]), got {type(dataset).__name__}"
    )


def evaluate_module(module: nn.Module, dataset: Any, suites: Sequence[str] = ("clean",), *,
                    model_name: str | None = None, limit: int | None = None, batch_size: int = 256, seed: int = 0,
                    device: str = "auto", options: Mapping[str, Mapping[str, Any]] | None = None,
                    log: Any = None) -> EvaluationResult:
    """Run suites on an in-memory model: the same result as ``api.evaluate`` gives for a checkpoint.

    Args:
        module: takes [0, 1] images (N x C x H x W) and returns logits; normalisation inside.
        dataset: see :func:`as_dataset`.
        suites: suite names in run order (``robust-eval list suites``).
        model_name: the name in the results (default: the module's class name).
        options: per-suite options, as ``RunConfig.suite_options`` (e.g. ``{"adversarial": {"eps": "0.1"}}``).
    """
    from robustbench_lite.api import run_suites
    from robustbench_lite.config import RunConfig
    from robustbench_lite.engine import resolve_device

    ds = as_dataset(dataset)
    config = RunConfig(model=model_name or type(module).__name__, dataset=ds.name, suites=list(suites), limit=limit,
                       batch_size=batch_size, device=device, seed=seed, show_progress=False,
                       suite_options=dict(options or {})).validate()
    dev = resolve_device(device)
    return run_suites(module.to(dev).eval(), ds.limit(limit), config, dev, log=log or (lambda m: None),
                      checkpoint={"path": None, "module": type(module).__qualname__})


# ---------------------------------------------------------------------------------------------
# Results and gate checks


def _baseline(baseline: Any) -> tuple[dict[str, Any] | None, str | None]:
    if baseline is None:
        return None, None
    if isinstance(baseline, RobustnessRun):
        return baseline.data, f"{baseline.result.model} on {baseline.result.dataset}"
    if isinstance(baseline, Mapping):
        return dict(baseline), "baseline results"
    from robustbench_lite.history import load_results

    return load_results(str(baseline))


def explain(outcomes: Sequence[GateOutcome], subject: str) -> str:
    """Every gate with its metric, threshold and margin; failures first-marked FAIL."""
    failed = sum(not o.passed for o in outcomes)
    lines = [f"{failed} of {len(outcomes)} robustness gate(s) failed for {subject}:"]
    for o in outcomes:
        value = "n/a" if o.value is None else f"{o.value:.4g}"
        threshold = "n/a" if o.threshold is None else f"{o.threshold:.4g}"
        lines.append(f"  {'FAIL' if not o.passed else 'pass'}  {o.expr}")
        detail = f"        {o.path} = {value}, needs {o.op} {threshold}"
        if o.baseline_value is not None:
            detail += f" (baseline {o.baseline_value:.4g})"
        if o.margin is not None and o.op in (">=", ">", "<=", "<"):
            gap = o.margin if o.op in (">=", ">") else -o.margin
            detail += f"; {'short by' if gap < 0 else 'margin'} {abs(gap):.4g}"
        if o.reason:
            detail += f"; {o.reason}"
        lines.append(detail)
    return "\n".join(lines)


def check_gates(results: Any, *exprs: str, baseline: Any = None) -> list[GateOutcome]:
    """Check gates on a run, an EvaluationResult or a results dict; fail the test when one fails."""
    from robustbench_lite import gates

    if isinstance(results, RobustnessRun):
        data, subject = results.data, results.subject
    elif hasattr(results, "to_dict"):
        data = results.to_dict()
        subject = f"{data.get('model')} on {data.get('dataset')}"
    else:
        data, subject = dict(results), f"{results.get('model')} on {results.get('dataset')}"
    if not exprs:
        raise ValueError("check_gates needs at least one gate expression, e.g. 'clean.accuracy >= 0.9'")
    base, label = _baseline(baseline)
    outcomes = gates.check(gates.parse_all(exprs), data, base, label or "baseline")
    if not all(o.passed for o in outcomes):
        pytest.fail(explain(outcomes, subject), pytrace=False)
    return outcomes


@dataclass
class RobustnessRun:
    """One evaluation: the typed result, its JSON dict, and gate checks."""

    result: EvaluationResult
    data: dict[str, Any]

    @property
    def subject(self) -> str:
        return f"{self.result.model} on {self.result.dataset} ({self.result.n_examples} test images)"

    def __getitem__(self, path: str) -> float | None:
        """One metric by gate path, e.g. ``run["corruptions.mean_accuracy"]``."""
        from robustbench_lite import gates

        paths = gates.metric_paths(self.data)
        key = gates.normalise_path(path)
        if key not in paths:
            raise gates.unknown_path_error(key, paths, path)
        return paths[key]

    def check(self, *exprs: str, baseline: Any = None) -> list[GateOutcome]:
        """Assert gates (``"clean.accuracy >= 0.9"``); the test fails listing each metric against its threshold."""
        return check_gates(self, *exprs, baseline=baseline)

    def outcomes(self, *exprs: str, baseline: Any = None) -> list[GateOutcome]:
        """Gate outcomes without failing the test."""
        from robustbench_lite import gates

        base, label = _baseline(baseline)
        return gates.check(gates.parse_all(exprs), self.data, base, label or "baseline")

    def write_json(self, path: str | Path) -> Path:
        from robustbench_lite.files import atomic_write

        text = json.dumps(self.data, indent=2, allow_nan=False)
        return atomic_write(path, lambda f: f.write(text + "\n"))


class Robustness:
    """The ``robustness`` fixture: evaluates models, caching results for the session."""

    def __init__(self) -> None:
        self._cache: dict[Any, tuple[RobustnessRun, tuple[Any, ...]]] = {}
        self.evaluations = 0
        self.reused = 0

    def evaluate(self, model: str | None = None, *, checkpoint: str | Path | None = None,
                 module: nn.Module | None = None, dataset: Any = None, suites: Sequence[str] | str = ("clean",),
                 limit: int | None = None, batch_size: int = 256, seed: int = 0, device: str = "auto",
                 options: Mapping[str, Mapping[str, Any]] | None = None, pretrained: bool = False) -> RobustnessRun:
        """Evaluate once per session per distinct request.

        Args:
            model: registry name; with ``checkpoint`` it may be omitted (the checkpoint names it); alone,
                the cached quick baseline for (model, dataset) is used, trained on first use.
            checkpoint: weights file (``robust-eval train`` or ``sources.checkpoints.save_checkpoint``).
            module: an in-memory ``nn.Module`` instead (takes [0,1] images); needs ``dataset``.
            dataset: registry name (default: the checkpoint's), or for ``module`` also an ImageDataset or
                ``(images, labels[, classes])``.
            suites: names, a list or comma-separated.
            options: per-suite options, e.g. ``{"corruptions": {"corruptions": "noise", "severities": "3"}}``.
        """
        from robustbench_lite.errors import RobustEvalError

        suites = [s.strip() for s in suites.split(",")] if isinstance(suites, str) else list(suites)
        opts = json.dumps(options or {}, sort_keys=True, default=str)
        common = (tuple(suites), limit, batch_size, seed, device, opts)
        if module is not None:
            if checkpoint is not None:
                raise RobustEvalError("pass either module= or checkpoint=, not both")
            if dataset is None:
                raise RobustEvalError("module= needs dataset= (a registry name, an ImageDataset or (images, labels))")
            key: tuple[Any, ...] = ("module", id(module), model, dataset if isinstance(dataset, str) else id(dataset),
                                    *common)
            keep: tuple[Any, ...] = (module, dataset)  # keeps the ids in the key from being reused
        else:
            stamp = None
            if checkpoint is not None:
                p = Path(checkpoint)
                stamp = (str(p.resolve()), p.stat().st_mtime_ns) if p.exists() else str(p)
            key, keep = ("checkpoint", model, stamp, dataset, pretrained, *common), ()
        if key in self._cache:
            self.reused += 1
            return self._cache[key][0]
        if module is not None:
            result = evaluate_module(module, dataset, suites, model_name=model, limit=limit, batch_size=batch_size,
                                     seed=seed, device=device, options=options)
        else:
            from robustbench_lite.api import evaluate
            from robustbench_lite.config import RunConfig

            config = RunConfig(model=model, dataset=dataset, suites=suites,
                               checkpoint=None if checkpoint is None else str(checkpoint), pretrained=pretrained,
                               limit=limit, batch_size=batch_size, device=device, seed=seed, show_progress=False,
                               suite_options=dict(options or {}))
            result = evaluate(config, log=lambda m: None)
        self.evaluations += 1
        run = RobustnessRun(result, result.to_dict())
        self._cache[key] = (run, keep)
        return run


# ---------------------------------------------------------------------------------------------
# Hooks


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustness", "robustness gates (robustbench_lite)")
    group.addoption("--robustness", action="store_true", default=False,
                    help="run tests marked @pytest.mark.robustness (skipped by default: they evaluate models)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: evaluates a model's robustness; skipped unless --robustness")
    config.stash[_STASH] = Robustness()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--robustness"):
        return
    skip = pytest.mark.skip(reason="robustness test: run pytest with --robustness")
    for item in items:
        if item.get_closest_marker(MARKER) is not None:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    state = "run" if config.getoption("--robustness") else "skipped (pass --robustness to run them)"
    return f"robustbench_lite: robustness-marked tests {state}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STASH, None)
    if state is not None and (state.evaluations or state.reused):
        terminalreporter.write_line(f"robustness: {state.evaluations} model evaluation(s), "
                                    f"{state.reused} served from the session cache")


@pytest.fixture(scope="session")
def robustness(pytestconfig: pytest.Config) -> Robustness:
    """Evaluate models and check gates; results are cached for the session (see the module docstring)."""
    return pytestconfig.stash[_STASH]
