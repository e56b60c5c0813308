"""The evaluator: ``evaluate(model, data, suites, **options) -> EvaluationResult``.

The CLI, the pytest plugin and the Python API all come through :func:`evaluate`; writing JSON/HTML
and checking gates is a separate step (outputs).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_lite import data as data_mod
from robustbench_lite import sources, statistics
from robustbench_lite.config import DEFAULT_DATASET, DEFAULT_MODEL, RunConfig
from robustbench_lite.engine import FINITE_PROBE, check_finite, plans, resolve_device
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.results import EvaluationResult, environment
from robustbench_lite.sources import architectures
from robustbench_lite.sources.contract import read_sidecar
from robustbench_lite.suites import SUITES, EvalContext, typed_options
from robustbench_lite.suites.base import suite_intervals
from robustbench_lite.training import load_or_train_baseline

Log = Callable[[str], None]
#: Checkpoint metadata copied into the results' ``checkpoint`` block.
CHECKPOINT_KEYS = ("recipe", "seed", "clean_accuracy", "dataset", "input_size", "pretrained", "created", "defence",
                   "init", "train_seconds", "train_images", "precision", "artefact", "sparsity")


def stress_summary(record: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's training-data stress for the results: its settings and counts, not the changed indices."""
    out = {k: v for k, v in record.items() if k != "changed_indices"}
    if isinstance(out.get("noise"), dict):
        out["noise"] = {k: v for k, v in out["noise"].items() if k != "matrix"}
    return out


def prepare(config: RunConfig) -> tuple[RunConfig, sources.FileInfo | None, sources.FileInfo | None]:
    """Validate ``config`` and resolve what it leaves open, before any data is read or model built.

    Returns:
        A resolved copy (model and dataset filled from the checkpoint or the defaults, suite options
        typed), what the model file says about itself (read once here; None without a file) and
        the same for the surrogate.
    """
    config.validate()
    for suite in config.suites:
        SUITES.entry(suite)
    info = sources.inspect_file(config.checkpoint) if config.checkpoint else None
    meta = info.meta["payload"]["meta"] if info is not None and info.format == "checkpoint" else {}
    if info is not None and not info.differentiable and not config.surrogate and "adversarial" in config.suites:
        parent = artefact_parent(info)
        if parent is not None:  # a gradient-free artefact of robust-eval compress: its float parent crafts attacks
            config = dataclasses.replace(config, surrogate=str(parent))
    surrogate = _inspect_surrogate(config)
    typed = typed_options(config.suites, config.suite_options)
    if info is not None:
        what = f"{Path(config.checkpoint or '').name} ({info.format})"
        for name in config.suites:
            SUITES.entry(name).check_model(typed.get(name) or SUITES.entry(name).Options(), what,
                                           info.differentiable, surrogate is not None)
    if config.precision is not None and info is not None and not info.differentiable:
        raise RobustEvalError(f"--precision {config.precision} casts a PyTorch model, and "
                              f"{Path(config.checkpoint or '').name} ({info.format}) runs in its own runtime in the "
                              "precision it was exported in; drop --precision, or evaluate its PyTorch checkpoint")
    model = config.model or meta.get("model") or (None if info is not None else DEFAULT_MODEL)
    if model is not None:
        architectures.check(model)
    config = dataclasses.replace(
        config, model=model, dataset=config.dataset or meta.get("dataset") or DEFAULT_DATASET, suite_options=typed,
    )
    data_mod.parse_name(config.dataset)
    return config, info, surrogate


def _recorded_parent(info: sources.FileInfo) -> tuple[Path, str] | None:
    """(path, sha256) of the parent a compressed artefact's record names, or None (an ONNX file keeps the
    record in its metadata, a checkpoint in its payload's)."""
    meta = info.meta if isinstance(info.meta, dict) else {}
    if info.format == "checkpoint":
        meta = meta["payload"]["meta"]
    record = meta.get("artefact")
    parent = record.get("parent") if isinstance(record, dict) else None
    if not isinstance(parent, dict) or not parent.get("path") or not parent.get("sha256"):
        return None
    return Path(str(parent["path"])), str(parent["sha256"])


def artefact_parent(info: sources.FileInfo) -> Path | None:
    """The parent checkpoint a compressed artefact records, when it is still there unchanged (its sha256)."""
    from robustbench_lite.files import sha256_file

    recorded = _recorded_parent(info)
    if recorded is None or not recorded[0].is_file():
        return None
    return recorded[0] if sha256_file(recorded[0]) == recorded[1] else None


def _parent_transfer(config: RunConfig, info: sources.FileInfo, loaded: sources.LoadedModel,
                     dataset: data_mod.ImageDataset, device: torch.device, log: Log) -> nn.Module | None:
    """A differentiable artefact's outputs with its recorded float parent's gradients (the masking check's
    model), when the parent is on disk unchanged; None otherwise (said in the log)."""
    if _recorded_parent(info) is None:
        return None
    parent = artefact_parent(info)
    if parent is None:
        log(f"model: {Path(str(config.checkpoint)).name}'s recorded parent is gone or changed: its white-box attacks "
            "are not checked against attacks crafted on the parent")
        return None
    loaded_parent = _load_surrogate(dataclasses.replace(config, surrogate=str(parent)), sources.inspect_file(parent),
                                    dataset, device, log, loaded.contract)
    log(f"model: {Path(str(config.checkpoint)).name} is compressed from {parent.name}: attacked white-box, and on the "
        "first images also by the same attacks crafted on the parent, to flag masked gradients")
    return sources.with_surrogate(loaded, loaded_parent).eval()


def _inspect_surrogate(config: RunConfig) -> sources.FileInfo | None:
    """What the ``--surrogate`` file is; one that has no gradients itself is refused before any data is read."""
    if not config.surrogate:
        return None
    info = sources.inspect_file(config.surrogate)
    if not info.differentiable:
        raise RobustEvalError(f"--surrogate {Path(config.surrogate).name} runs in {info.format} without input "
                              "gradients, so attacks cannot be crafted on it; pass a differentiable model of the same "
                              "task (a robust-eval checkpoint, TorchScript or torch.export file)")
    return info


def _load_surrogate(config: RunConfig, info: sources.FileInfo, dataset: data_mod.ImageDataset,
                    device: torch.device, log: Log, model: sources.InputContract) -> sources.LoadedModel:
    """The ``--surrogate`` model, adapted to the dataset like the model; a wrong one is one line before any suite.

    Its input handling (size, channels, mean/std) is its own file's and sidecar's, gaps filled from
    ``model``, the evaluated model's resolved contract: a surrogate is most often the same network
    in a differentiable format, taking what the shipped one takes. Its class order is only its own
    (else the dataset's). A robust-eval checkpoint normalises inside and takes none of it.
    """
    assert config.surrogate is not None
    name = Path(config.surrogate).name
    side = read_sidecar(config.surrogate)[1]
    if info.needs_architecture and not (side.get("model") or info.meta.get("architecture")):
        raise RobustEvalError(f"--surrogate {name} holds weights only ({info.format}) and names no architecture; "
                              f"write {Path(config.surrogate).with_suffix('.json').name} beside it with "
                              '{"model": "ARCH"} (see \'robust-eval list models\'), or pass a robust-eval checkpoint '
                              "or TorchScript file")
    declared = info.contract.classes or ()
    if (info.num_classes not in (None, dataset.num_classes)
            or (declared and sorted(map(str, declared)) != sorted(map(str, dataset.classes)))):
        shown = f"{info.num_classes or len(declared)} classes"
        shown += f" ({', '.join(map(str, declared[:5]))}...)" if declared else ""
        raise RobustEvalError(f"--surrogate {name} predicts {shown} but {config.dataset} has {dataset.num_classes} "
                              f"({', '.join(dataset.classes[:5])}...); pass a surrogate trained for the same classes "
                              "as the model")
    facts = {"num_classes": dataset.num_classes, "channels": dataset.channels, "size": tuple(dataset.size),
             "classes": tuple(dataset.classes)}
    loaded = sources.load_file(config.surrogate, info, architecture=None, contract=sources.InputContract(),
                               device=str(device), **facts)
    own = loaded.contract
    if not loaded.normalises_inside:
        loaded.contract = own.over(dataclasses.replace(model, classes=None))
    inherited = [k for k, v in loaded.contract.describe().items() if v is not None and own.describe()[k] is None]
    try:
        loaded = sources.finish(loaded, what=f"the surrogate {name}", device=device, **facts)
    except RobustEvalError as exc:
        if not inherited:
            raise
        raise RobustEvalError(f"{exc} (the surrogate took the model's {', '.join(inherited)}; write "
                              f"{Path(config.surrogate).with_suffix('.json').name} beside it with its own)") from None
    if inherited:
        log(f"surrogate: takes the model's {', '.join(inherited)} (its file says none; a sidecar "
            f"{Path(config.surrogate).with_suffix('.json').name} sets its own)")
    for line in loaded.adaptations:
        log(f"surrogate: {line}")
    return loaded


def resolve_model(config: RunConfig, dataset: data_mod.ImageDataset, device: torch.device, log: Log,
                  info: sources.FileInfo | None = None, module: nn.Module | None = None) -> sources.LoadedModel:
    """The model to evaluate, adapted to the dataset: an in-memory module, a model file, else the quick baseline."""
    facts = {"num_classes": dataset.num_classes, "channels": dataset.channels, "size": tuple(dataset.size),
             "classes": tuple(dataset.classes)}
    if module is not None:
        loaded = sources.from_module(module, config.contract, config.model)
        what = config.model or type(module).__name__
    elif config.checkpoint:
        assert info is not None
        loaded = sources.load_file(config.checkpoint, info, architecture=config.model, contract=config.contract,
                                   device=str(device), **facts)
        what = Path(config.checkpoint).name
    else:
        assert config.model is not None and config.dataset is not None
        net, meta, path = load_or_train_baseline(
            config.model, config.dataset, config.seed, config.device, config.data_dir, log,
            show_progress=config.show_progress, pretrained=config.pretrained,
        )
        loaded = sources.LoadedModel(model=net, core=net, format="checkpoint", meta=meta, path=str(path),
                                     file_bytes=Path(path).stat().st_size, normalises_inside=True,
                                     contract=config.contract)
        what = f"the {config.model} baseline"
    loaded = sources.finish(loaded, what=what, device=device, **facts)
    for line in loaded.notes + loaded.adaptations:
        log(f"model: {line}")
    return loaded


def evaluate(model: Any = None, /, data: Any = None, suites: Sequence[str] | str | None = None, *,
             log: Log | None = None, **options: Any) -> EvaluationResult:
    """Run suites on one model and dataset and return the typed result.

    Args:
        model: an ``nn.Module`` (takes [0,1] images unless ``input_size``/``mean``/``std``... say
            otherwise), a model file (any format ``robust-eval list formats`` shows), an
            architecture name (its cached quick baseline), or a complete :class:`RunConfig`.
        data: a dataset name, an :class:`ImageDataset`, ``(images, labels[, classes])`` tensors or
            a ``torch.utils.data.Dataset`` of (image, label) (see :func:`data.as_dataset`).
        suites: names, a list or comma-separated (default: clean, efficiency).
        log: progress lines (default: none for the Python API, stderr for the CLI).
        **options: any :class:`RunConfig` field (``limit``, ``batch_size``, ``seed``, ``device``,
            ``surrogate``, ``model``: the architecture of a state_dict file, or the name an in-memory
            module gets in the results...), the input contract (``input_size``, ``channels``, ``mean``, ``std``,
            ``classes``) and any selected suite's option by its CLI name (``eps``, ``attacks``,
            ``corruptions``, ``severities``...); ``suite_options={suite: {...}}`` also works.

    The model file and the test set are read once; with ``examples`` the report's example grid is
    built from the same loaded model and images.
    """
    if isinstance(model, RunConfig):
        if data is not None or suites is not None or options:
            raise RobustEvalError("evaluate(RunConfig) takes no other model, data, suites or options; set them on "
                                  "the RunConfig")
        return _run(model, log or print)
    config, module, dataset = config_for(model, data, suites, options)
    return _run(config, log or (lambda message: None), module, dataset)


def config_for(model: Any, data: Any, suites: Sequence[str] | str | None,
               options: dict[str, Any]) -> tuple[RunConfig, nn.Module | None, data_mod.ImageDataset | None]:
    """The :class:`RunConfig` for the Python API's arguments, and the in-memory model and data, if any."""
    from robustbench_lite.config import DEFAULT_SUITES
    from robustbench_lite.options import comma_list
    from robustbench_lite.suites import expand_suites

    names = list(DEFAULT_SUITES) if suites is None else expand_suites(list(comma_list(suites, "suites", "clean")))
    for name in names:
        SUITES.entry(name)
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"suites", "suite_options", "contract"}
    contract_fields = set(sources.InputContract.flags())
    run: dict[str, Any] = {"show_progress": False}
    contract: dict[str, Any] = {}
    per_suite: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (options.pop("suite_options", None) or {}).items()}
    owners = {dest: name for name in names for dest in (*SUITES.entry(name).Options.flags(),
                                                        *(f.dest for f in SUITES.entry(name).Options.flags().values()))}
    for key, value in options.items():
        key = key.replace("-", "_")
        if key in fields:
            run[key] = value
        elif key in contract_fields:
            contract[key] = value
        elif key in owners:
            per_suite.setdefault(owners[key], {})[key] = value
        else:
            valid = sorted(fields | contract_fields | set(owners))
            raise RobustEvalError(f"unknown option {key!r} for suites {', '.join(names)}; valid: {', '.join(valid)}")
    module = model if isinstance(model, nn.Module) else None
    if isinstance(model, (str, Path)) and model:
        if Path(model).is_file() or any(ch in str(model) for ch in "/\\") or Path(str(model)).suffix:
            run.setdefault("checkpoint", str(model))
        else:
            run.setdefault("model", str(model))
    elif model is not None and module is None:
        raise RobustEvalError(f"model must be an nn.Module, a model file or an architecture name, got "
                              f"{type(model).__name__}")
    dataset = None
    if data is not None and not isinstance(data, str):
        dataset = data_mod.as_dataset(data)
        run["dataset"] = dataset.name
    elif isinstance(data, str):
        run["dataset"] = data
    if module is not None and dataset is None and "dataset" not in run:
        raise RobustEvalError("an in-memory model needs data: a dataset name, (images, labels) or a Dataset")
    if module is not None:
        run.setdefault("model", type(module).__name__)
    config = RunConfig(suites=names, suite_options=per_suite, contract=sources.InputContract.from_mapping(contract),
                       **run)
    return config, module, dataset


def _run(config: RunConfig, log: Log, module: nn.Module | None = None,
         dataset: data_mod.ImageDataset | None = None) -> EvaluationResult:
    from robustbench_lite import distributed

    if module is not None:  # the module names the model; only its label is checked against the zoo
        config, info, surrogate_info = _prepare_module(config)
    else:
        config, info, surrogate_info = prepare(config)
    config = dataclasses.replace(config, device=distributed.setup(config.device))  # joins a torchrun group
    log = distributed.main_log(log)
    if surrogate_info is not None and "adversarial" not in config.suites:
        distributed.main_log(print)(f"robust-eval: warning: --surrogate {Path(str(config.surrogate)).name} is not "
                                    f"used: only the adversarial suite crafts attacks on it (suites: "
                                    f"{', '.join(config.suites)}); add --suite adversarial or drop --surrogate")
    device = resolve_device(config.device)

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if dataset is None:
        dataset = data_mod.as_dataset(config.dataset, data_dir=config.data_dir)
    dataset = dataset.limit(config.limit)
    for name in config.suites:  # options that cannot work on this data: before any model or suite
        SUITES.entry(name).check_data(config.suite_options.get(name), dataset)
    timings["load_data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    loaded = resolve_model(config, dataset, device, log, info, module)
    meta = loaded.meta
    if meta.get("classes") and list(meta["classes"]) != list(dataset.classes):
        raise RobustEvalError(
            f"the checkpoint's classes ({', '.join(map(str, meta['classes'][:5]))}...) differ from "
            f"{config.dataset}'s ({', '.join(dataset.classes[:5])}...); evaluate on the dataset it was trained on"
        )
    if info is not None and info.format == "checkpoint":
        from robustbench_lite.sources.checkpoints import check_input_size

        check_input_size(loaded.path, meta, config.dataset, tuple(dataset.size))
    fp32_model = None
    if config.precision is not None:  # a cast copy, before the surrogate and parent wrappers take the model
        cast_model = plans.cast(loaded.model.eval(), config.precision)
        if cast_model is not loaded.model:
            fp32_model = loaded.model if plans.precision_of(loaded.model) == "fp32" else None
            # the efficiency suite measures the core: in the precision the run computes in
            core = cast_model if loaded.core is loaded.model else plans.cast(loaded.core.eval(), config.precision)
            loaded = dataclasses.replace(loaded, model=cast_model, core=core)
            log(f"model: computing in {config.precision}" + (" (its agreement with fp32 on the clean set is reported)"
                                                              if fp32_model is not None else ""))
    model = loaded.model.eval()
    if config.examples and config.cam_layer is not None:  # a mistyped layer: before any suite runs
        from robustbench_lite.analysis.gradcam import check_layer

        check_layer(model, config.cam_layer, loaded.differentiable)
    attack_model = None
    if surrogate_info is not None and "adversarial" in config.suites:
        surrogate = _load_surrogate(config, surrogate_info, dataset, device, log, loaded.contract)
        attack_model = sources.with_surrogate(loaded, surrogate).eval()
        recorded = _recorded_parent(info) if info is not None else None  # checked when prepare chose it
        parent = recorded[0] if recorded is not None else None
        if parent is not None and Path(str(config.surrogate)) == parent:
            log(f"model: {Path(str(config.checkpoint)).name} has no gradients: attacks are crafted on its float "
                f"parent {parent.name} (recorded in the artefact) and scored on it (transfer); --surrogate PATH "
                "chooses another, --attack square attacks it without a surrogate")
        else:
            log(f"model: attacks are crafted on the surrogate {Path(str(config.surrogate)).name} and scored on the "
                "model")
    parent_transfer = None
    if surrogate_info is None and info is not None and loaded.differentiable and "adversarial" in config.suites:
        parent_transfer = _parent_transfer(config, info, loaded, dataset, device, log)
    timings["load_model"] = time.perf_counter() - t0

    from robustbench_lite.files import sha256_file

    model_sha = sha256_file(loaded.path) if loaded.path and Path(loaded.path).is_file() else None
    result = run_suites(model, dataset, config, device, meta, log,
                        checkpoint={"path": loaded.path, **({"sha256": model_sha} if model_sha else {}),
                                    **{k: meta[k] for k in CHECKPOINT_KEYS if k in meta},
                                    **({"stress": stress_summary(meta["stress"])} if meta.get("stress") else {})},
                        source=loaded, attack_model=attack_model, parent_transfer=parent_transfer,
                        label=config.model or Path(config.checkpoint or "model").name, fp32_model=fp32_model)
    result.timings = {**timings, **result.timings}
    result.timings["total"] = sum(v for k, v in result.timings.items() if k != "total")
    if config.limit:  # what the shortcut cost in precision (after the suites: a user error stays the only line)
        log(limit_line(len(dataset)))
    if config.examples and distributed.is_main():
        # No attacked rows for a model without gradients unless a surrogate crafts them.
        crafted_on = attack_model if attack_model is not None else (model if loaded.differentiable else None)
        result.examples = _examples(model, dataset, result, device, config, crafted_on, loaded.differentiable)
    return result


def choose_plan(model: nn.Module, dataset: data_mod.ImageDataset, config: RunConfig, device: torch.device,
                source: sources.LoadedModel | None) -> plans.Plan:
    """The run's forward path (:func:`robustbench_lite.engine.plans.build_plan`), from its first batch
    of test images and the forward passes its suites will make."""
    passes = sum(SUITES.entry(name).forward_passes(config.suite_options.get(name)) for name in config.suites)
    probe = dataset.float_images(slice(0, config.batch_size)).to(device)
    return plans.build_plan(model, probe, mode=config.inference, images=passes * len(dataset),
                            runtime=source.runtime if source is not None else "pytorch", device=device)


def limit_line(n: int, accuracy: float = 0.9, margin: float = 0.01) -> str:
    """What a run on ``n`` images (``--limit``) costs in precision: the 95% half-width at a typical accuracy."""
    half = 100 * statistics.wilson_half_width(accuracy, n)
    return (f"{n} images: a 95% interval on an accuracy near {100 * accuracy:.0f}% is about +-{half:.1f} points "
            f"(robust-eval plan --margin {margin:g} for the images a margin needs)")


def _prepare_module(config: RunConfig) -> tuple[RunConfig, None, sources.FileInfo | None]:
    config.validate()
    if config.checkpoint:
        raise RobustEvalError("pass an nn.Module or a model file, not both")
    surrogate = _inspect_surrogate(config)
    config = dataclasses.replace(config, dataset=config.dataset or DEFAULT_DATASET,
                                 suite_options=typed_options(config.suites, config.suite_options))
    return config, None, surrogate


def _examples(model: nn.Module, dataset: data_mod.ImageDataset, result: EvaluationResult, device: torch.device,
              config: RunConfig, attack_model: nn.Module | None, heatmaps: bool) -> dict[str, Any] | None:
    """The report's example grid; an illustration, so a failure here warns and keeps the results."""
    from robustbench_lite.analysis.examples import build_examples
    from robustbench_lite.distributed import main_log

    try:
        return build_examples(model, dataset, result.to_dict(), device, n=config.examples, seed=config.seed,
                              attack_model=attack_model, cam_layer=config.cam_layer, heatmaps=heatmaps)
    except Exception as exc:  # noqa: BLE001 - losing the grid must not lose the run's results
        if config.debug:
            raise
        main_log(print)(f"robust-eval: warning: the report's example grid was left out ({type(exc).__name__}: {exc})")
        return None


def data_provenance(dataset: data_mod.ImageDataset) -> dict[str, Any]:
    """Where the test images came from: the loader's folder and each file read, with its sha256."""
    from robustbench_lite.files import sha256_file

    files = []
    for path in dataset.meta.get("files") or []:
        p = Path(path)
        if p.is_file():
            files.append({"path": str(p), "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return {"name": dataset.name, "split": dataset.split, "source": dataset.source, "files": files}


def run_suites(
    model: nn.Module,
    dataset: data_mod.ImageDataset,
    config: RunConfig,
    device: torch.device,
    meta: dict[str, Any] | None = None,
    log: Log = print,
    checkpoint: dict[str, Any] | None = None,
    source: sources.LoadedModel | None = None,
    attack_model: nn.Module | None = None,
    label: str | None = None,
    parent_transfer: nn.Module | None = None,
    fp32_model: nn.Module | None = None,
) -> EvaluationResult:
    """Run ``config.suites`` on a ready model (eval mode, on ``device``) and test split.

    The one place suites are run: :func:`evaluate` and the pytest plugin's in-memory models both
    come through here. ``timings`` holds wall seconds per suite and their ``total``.

    Args:
        fp32_model: the float32 model ``model`` was cast from (``--precision``): its clean predictions
            give the agreement the result reports.
    """
    from robustbench_lite.distributed import on_main

    for name in config.suites:
        SUITES.entry(name)
    config = dataclasses.replace(config, suite_options=typed_options(config.suites, config.suite_options))
    ctx = EvalContext(model=model, dataset=dataset, config=config, device=device, meta=meta or {}, log=log,
                      source=source, attack_with=attack_model, parent_transfer=parent_transfer)
    probe = dataset.limit(min(len(dataset), FINITE_PROBE, config.batch_size))
    check_finite(model, probe, max(1, len(probe)), device)  # one forward pass
    ctx.plan = choose_plan(model, dataset, config, device, source)
    ctx.fp32_model = fp32_model
    result = EvaluationResult(
        model=label or str(config.model),
        dataset=str(config.dataset),
        n_examples=len(dataset),
        seed=config.seed,
        config=config.to_dict(),
        environment=environment(str(device)),
        checkpoint=checkpoint or {},
        source=source.describe() if source is not None else {},
        data=data_provenance(dataset),
        inference=ctx.plan.describe(),
    )
    timings: dict[str, float] = {"plan": ctx.plan.build_seconds}
    resampler = statistics.Resampler(seed=config.seed)
    for name in config.suites:
        t0 = time.perf_counter()
        suite = SUITES.get(name)
        # Under torchrun, latency and memory are measured by rank 0 alone (the others wait); every
        # other suite shares its work across ranks and gathers the single-process numbers.
        result.suites[name] = on_main(lambda s=suite: s.run(ctx)) if suite.rank0_only else suite.run(ctx)
        timings[name] = time.perf_counter() - t0
        t0 = time.perf_counter()  # what the intervals cost, apart (the bootstrap over every condition)
        result.intervals[name] = suite_intervals(suite, result.suites[name].to_dict(), ctx.records, resampler)
        timings["intervals"] = timings.get("intervals", 0.0) + time.perf_counter() - t0
        # after the suite, not before: a user error inside a suite stays the only line printed
        log(f"{name}: done on {len(dataset)} images in {timings[name]:.1f} s")
    if fp32_model is not None:  # after the suites: a user error inside one stays the only line printed
        agreement = ctx.fp32_agreement()
        result.inference["agreement_with_fp32"] = agreement
        log(f"precision: {ctx.plan.precision} changes {agreement['changed']} of {agreement['images']} clean "
            f"predictions of fp32 ({agreement['agreement']:.2%} agree)")
    timings["total"] = sum(timings.values())
    result.timings = timings
    result.records = ctx.records
    result.statistics = {"level": statistics.LEVEL, "accuracy": "wilson score interval",
                         "derived": "paired percentile bootstrap over images (every condition resampled together)",
                         "resamples": resampler.resamples, "seed": resampler.seed}
    return result
