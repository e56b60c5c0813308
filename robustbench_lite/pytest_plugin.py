"""pytest plugin: robustness gates inside your own test suite.

Installed with robustbench-lite and loaded through the ``pytest11`` entry point (nothing to add to
``conftest.py``). It gives you:

* the ``robustness`` fixture (session-scoped): ``robustness.evaluate(...)`` runs suites on a model
  and returns an :class:`~robustbench_lite.outputs.Evaluation` (what ``robustbench_lite.evaluate``
  returns, through the same API); identical requests within a session are evaluated once and
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
(a results JSON, ``run:ID`` from ``robust-eval history``, a results dict or another run); two runs on
the same images are compared pair by pair (McNemar). ``run.check(..., mode="strict")`` passes a gate
only if its whole 95% interval passes (``lenient``: fails only if the whole interval fails).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from torch import nn

    from robustbench_lite.gates import GateOutcome
    from robustbench_lite.outputs import Evaluation

MARKER = "robustness"
_STASH: pytest.StashKey[Robustness] = pytest.StashKey()


# ---------------------------------------------------------------------------------------------
# Results and gate checks: outputs.Evaluation, with a failed gate failing the test


def check_gates(results: Any, *exprs: str, baseline: Any = None, mode: str = "point") -> list[GateOutcome]:
    """Check gates on an evaluation, an EvaluationResult or a results dict; fail the test when one fails.

    ``mode``: ``point`` (the estimate decides), ``strict`` (the whole 95% interval must pass) or
    ``lenient`` (fails only if the whole interval fails); see :mod:`robustbench_lite.gate_modes`.
    """
    from robustbench_lite import gates, outputs
    from robustbench_lite.gate_modes import GateMode
    from robustbench_lite.outputs import Evaluation, baseline_data, explain

    if isinstance(results, Evaluation):
        data, subject = results.to_dict(), results.subject
    elif hasattr(results, "to_dict"):
        data = results.to_dict()
        subject = f"{data.get('model')} on {data.get('dataset')}"
    else:
        data, subject = dict(results), f"{results.get('model')} on {results.get('dataset')}"
    if not exprs:
        raise ValueError("check_gates needs at least one gate expression, e.g. 'clean.accuracy >= 0.9'")
    parsed_mode = GateMode.parse(mode, "mode")
    base, label = baseline_data(baseline)
    outcomes = outputs.check_gates(gates.parse_all(exprs), data, base, label or "baseline", parsed_mode,
                                   getattr(results, "records", None), getattr(baseline, "records", None))
    if not all(o.passed for o in outcomes):
        pytest.fail(explain(outcomes, subject), pytrace=False)
    return outcomes


@functools.cache
def _evaluation_class() -> type:
    from robustbench_lite.outputs import Evaluation

    class RobustnessRun(Evaluation):
        """An :class:`~robustbench_lite.outputs.Evaluation` whose ``check`` fails the test (a readable table)."""

        def check(self, *exprs: str, baseline: Any = None, mode: str = "point") -> list[GateOutcome]:
            return check_gates(self, *exprs, baseline=baseline, mode=mode)

    return RobustnessRun


class Robustness:
    """The ``robustness`` fixture: evaluates models, caching results for the session."""

    def __init__(self) -> None:
        self._cache: dict[Any, tuple[Evaluation, tuple[Any, ...]]] = {}
        self.evaluations = 0
        self.reused = 0

    def evaluate(self, model: str | None = None, *, checkpoint: str | Path | None = None,
                 module: nn.Module | None = None, dataset: Any = None, suites: Sequence[str] | str = ("clean",),
                 limit: int | None = None, batch_size: int = 256, seed: int = 0, device: str = "auto",
                 options: Mapping[str, Mapping[str, Any]] | None = None, pretrained: bool = False) -> Evaluation:
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
        from robustbench_lite.api import evaluate

        run_options: dict[str, Any] = {"limit": limit, "batch_size": batch_size, "seed": seed, "device": device,
                                       "suite_options": dict(options or {})}
        if module is not None:
            result = evaluate(module, dataset, suites, model=model, **run_options)
        else:
            result = evaluate(None, dataset, suites, model=model, pretrained=pretrained,
                              checkpoint=None if checkpoint is None else str(checkpoint), **run_options)
        self.evaluations += 1
        run = _evaluation_class().of(result)
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
