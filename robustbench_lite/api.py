"""The evaluator: ``evaluate(config) -> EvaluationResult``. Writing JSON/HTML is a separate step (outputs)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robustbench_lite import data as data_mod
from robustbench_lite import models
from robustbench_lite.config import DEFAULT_DATASET, DEFAULT_MODEL, RunConfig
from robustbench_lite.engine import resolve_device
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.results import EvaluationResult, environment
from robustbench_lite.sources import architectures, checkpoints
from robustbench_lite.suites import SUITES, EvalContext, typed_options
from robustbench_lite.training import load_or_train_baseline

Log = Callable[[str], None]
#: Checkpoint metadata copied into the results' ``checkpoint`` block.
CHECKPOINT_KEYS = ("recipe", "seed", "clean_accuracy", "dataset", "input_size", "pretrained", "created", "defence",
                   "init", "train_seconds")


def prepare(config: RunConfig) -> tuple[RunConfig, dict[str, Any] | None]:
    """Validate ``config`` and resolve what it leaves open, before any data is read or model built.

    Returns:
        A resolved copy (model and dataset filled from the checkpoint or the defaults, suite options
        typed) and the checkpoint file's payload (read once here, None without a checkpoint).
    """
    config.validate()
    for suite in config.suites:
        SUITES.entry(suite)
    payload = checkpoints.read_checkpoint(config.checkpoint) if config.checkpoint else None
    meta = payload["meta"] if payload else {}
    config = dataclasses.replace(
        config,
        model=config.model or meta.get("model") or DEFAULT_MODEL,
        dataset=config.dataset or meta.get("dataset") or DEFAULT_DATASET,
        suite_options=typed_options(config.suites, config.suite_options),
    )
    architectures.check(config.model)
    data_mod.parse_name(config.dataset)
    return config, payload


def resolve_model(config: RunConfig, num_classes: int, log: Log,
                  payload: dict[str, Any] | None = None) -> tuple[models.NormalizedModel, dict[str, Any], str]:
    """The model to evaluate: a checkpoint (its already-read ``payload`` when given), else the quick baseline."""
    if config.checkpoint:
        net, meta = checkpoints.load_checkpoint(config.checkpoint, model=config.model, num_classes=num_classes,
                                           payload=payload)
        return net, meta, config.checkpoint
    assert config.model is not None and config.dataset is not None
    net, meta, path = load_or_train_baseline(
        config.model, config.dataset, config.seed, config.device, config.data_dir, log,
        show_progress=config.show_progress, pretrained=config.pretrained,
    )
    return net, meta, str(path)


def evaluate(config: RunConfig, log: Log = print) -> EvaluationResult:
    """Run ``config.suites`` on one model and dataset and return the typed result.

    The checkpoint and the test split are read once; with ``config.examples`` the report's example
    grid is built from the same loaded model and images.
    """
    from robustbench_lite import distributed

    config, payload = prepare(config)
    config = dataclasses.replace(config, device=distributed.setup(config.device))  # joins a torchrun group
    log = distributed.main_log(log)
    device = resolve_device(config.device)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = data_mod.load(config.dataset, "test", config.data_dir).limit(config.limit)
    timings["load_data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    model, meta, source = resolve_model(config, dataset.num_classes, log, payload)
    if meta.get("classes") and list(meta["classes"]) != list(dataset.classes):
        raise RobustEvalError(
            f"the checkpoint's classes ({', '.join(map(str, meta['classes'][:5]))}...) differ from "
            f"{config.dataset}'s ({', '.join(dataset.classes[:5])}...); evaluate on the dataset it was trained on"
        )
    model = model.to(device).eval()
    timings["load_model"] = time.perf_counter() - t0

    result = run_suites(model, dataset, config, device, meta, log,
                        checkpoint={"path": source, **{k: meta[k] for k in CHECKPOINT_KEYS if k in meta}})
    result.timings = {**timings, **result.timings}
    result.timings["total"] = sum(v for k, v in result.timings.items() if k != "total")
    if config.examples and distributed.is_main():
        result.examples = _examples(model, dataset, result, device, config)
    return result


def _examples(model: nn.Module, dataset: data_mod.ImageDataset, result: EvaluationResult, device: torch.device,
              config: RunConfig) -> dict[str, Any] | None:
    """The report's example grid; an illustration, so a failure here warns and keeps the results."""
    from robustbench_lite.analysis.examples import build_examples
    from robustbench_lite.distributed import main_log

    try:
        return build_examples(model, dataset, result.to_dict(), device, n=config.examples, seed=config.seed)
    except Exception as exc:  # noqa: BLE001 - losing the grid must not lose the run's results
        if config.debug:
            raise
        main_log(print)(f"robust-eval: warning: the report's example grid was left out ({type(exc).__name__}: {exc})")
        return None


def run_suites(
    model: nn.Module,
    dataset: data_mod.ImageDataset,
    config: RunConfig,
    device: torch.device,
    meta: dict[str, Any] | None = None,
    log: Log = print,
    checkpoint: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Run ``config.suites`` on a ready model (eval mode, on ``device``) and test split.

    The one place suites are run: :func:`evaluate` and the pytest plugin's in-memory models both
    come through here. ``timings`` holds wall seconds per suite and their ``total``.
    """
    from robustbench_lite.distributed import on_main

    for name in config.suites:
        SUITES.entry(name)
    config = dataclasses.replace(config, suite_options=typed_options(config.suites, config.suite_options))
    ctx = EvalContext(model=model, dataset=dataset, config=config, device=device, meta=meta or {}, log=log)
    result = EvaluationResult(
        model=str(config.model),
        dataset=str(config.dataset),
        n_examples=len(dataset),
        seed=config.seed,
        config=config.to_dict(),
        environment=environment(str(device)),
        checkpoint=checkpoint or {},
    )
    timings: dict[str, float] = {}
    for name in config.suites:
        t0 = time.perf_counter()
        suite = SUITES.get(name)
        # Under torchrun, latency and memory are measured by rank 0 alone (the others wait); every
        # other suite shares its work across ranks and gathers the single-process numbers.
        result.suites[name] = on_main(lambda s=suite: s.run(ctx)) if suite.rank0_only else suite.run(ctx)
        timings[name] = time.perf_counter() - t0
        # after the suite, not before: a user error inside a suite stays the only line printed
        log(f"{name}: done on {len(dataset)} images in {timings[name]:.1f} s")
    timings["total"] = sum(timings.values())
    result.timings = timings
    return result
