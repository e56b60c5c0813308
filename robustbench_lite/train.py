"""Training: the standard recipe, the cached quick baseline, checkpoints with their recipe.

The quick recipe (AdamW + one-cycle schedule, a couple of epochs) is what ``robust-eval`` trains
when a model is evaluated with no checkpoint; its results are cached per (model, dataset, seed).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from robustbench_lite import data as data_mod
from robustbench_lite import models
from robustbench_lite import shift as _shift  # noqa: F401  (registers the <dataset>:subpop-* views --dataset takes)
from robustbench_lite.config import TrainConfig
from robustbench_lite.engine import predict, progress, resolve_device
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.metrics import accuracy

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """Optimisation settings; the checkpoint records them with the run's overrides applied."""

    name: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    label_smoothing: float = 0.0


#: Measured on 2 idle CPU cores (torch 2.15): shufflenetv2 / fashion-mnist reaches 91.05% test
#: accuracy in 165 s. Two epochs fit in 122-139 s but stop at 89.8-90.0%.
QUICK = Recipe("quick", epochs=3, batch_size=256, lr=6e-3, weight_decay=5e-4)


def resolve_recipe(cfg: TrainConfig, base: Recipe = QUICK) -> Recipe:
    overrides = {k: v for k, v in {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
                                   "weight_decay": cfg.weight_decay}.items() if v is not None}
    recipe = replace(base, **overrides, label_smoothing=cfg.label_smoothing)
    return recipe if recipe == base else replace(recipe, name="custom")


def channel_stats(ds: data_mod.ImageDataset, max_images: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images (normalisation inside the model)."""
    x = ds.images[:max_images].float().div_(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def _dataset_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def recipe_digest(recipe: Recipe) -> str:
    """Short hash of a recipe: a cached baseline is reused only for the recipe that made it."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:8]


def baseline_path(model: str, dataset: str, seed: int, pretrained: bool = False) -> Path:
    """Where the cached quick baseline for (model, dataset, seed) lives."""
    start = "imagenet" if pretrained else "scratch"
    name = f"{model}--{_dataset_slug(dataset)}--{QUICK.name}-{recipe_digest(QUICK)}-{start}--seed{seed}.pt"
    return data_mod.cache_home() / "checkpoints" / name


STATE_FORMAT = "robustbench_lite-train-state"


def default_output(cfg: TrainConfig, recipe: Recipe, label: str) -> Path:
    """Where a checkpoint goes without ``--output``.

    The standard quick recipe with no defence is the cached (model, dataset) baseline; anything
    else goes to ``./checkpoints/`` under a name saying what it is, never over the baseline.
    """
    if label == "standard" and recipe == replace(QUICK):
        return baseline_path(cfg.model, cfg.dataset, cfg.seed, cfg.pretrained)
    start = "imagenet" if cfg.pretrained else "scratch"
    name = f"{cfg.model}--{_dataset_slug(cfg.dataset)}--{label.replace(',', '+')}--{recipe.name}-" \
           f"{recipe_digest(recipe)}-{start}--seed{cfg.seed}.pt"
    return Path("checkpoints") / name


def state_path(checkpoint: Path) -> Path:
    """The resume state written next to a checkpoint while it trains (removed when it is done)."""
    return checkpoint.with_name(checkpoint.name + ".resume")


def _fingerprint(run: dict[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(run, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _StopRequest:
    """SIGINT/SIGTERM during training set a flag; the loop stops at the next step boundary.

    Stopping between steps (never inside one) is what makes the saved resume state consistent.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _monitor(model: torch.nn.Module, pipeline: Any, images: torch.Tensor, labels: torch.Tensor,
             indices: list[int], device: torch.device, seed: int) -> tuple[float, float]:
    """(clean, PGD-10 robust) accuracy on the held-out training images at the defence's eps."""
    import attacks

    eps = next(d.params["eps"] for d in pipeline.defences if d.adversarial)
    model.eval()
    try:
        attack = attacks.build("pgd", eps=eps, steps=10, seed=seed)
        ev = attacks.evaluate_attack(model, attack, images, labels, indices, batch_size=512)
        return ev.clean_accuracy, ev.robust_accuracy_at(eps)
    finally:
        model.train()


def _schedule(opt: torch.optim.Optimizer, recipe: Recipe, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """One-cycle: a quarter of the steps warming up (at least 2 steps), then cosine annealing.

    Runs of fewer than 4 steps (smoke tests) keep the peak rate constant: one-cycle needs a step
    in each phase.
    """
    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total_steps,
                                               pct_start=max(0.25, 2 / total_steps))


def train(
    cfg: TrainConfig, log: Log = print, on_step: Callable[[int, int], None] | None = None,
) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
    """Train ``cfg.model`` on ``cfg.dataset`` with the recipe and defences, and write a checkpoint.

    Every step seeds the global RNG from (seed, epoch, step) and each epoch's data order from
    (seed, epoch), so a run resumed from its state file (``cfg.resume``) repeats the uninterrupted
    run exactly. The state is saved after every epoch and when SIGINT/SIGTERM (or an exception
    raised by ``on_step``, e.g. ``KeyboardInterrupt``) stops the loop between two steps.

    Args:
        cfg: what to train; ``cfg.defence`` names defences (``"augmix,pgd-at"``).
        log: receives one line per event.
        on_step: called as ``on_step(epoch, step)`` after each optimisation step.

    Returns:
        The trained model (eval mode), its checkpoint metadata, and the checkpoint path.
    """
    from robustbench_lite import defences, distributed
    from robustbench_lite.seeding import derive_seed

    cfg.validate()
    cfg.device = distributed.setup(cfg.device)  # joins the torchrun group when launched by it
    main = distributed.is_main()
    log = distributed.main_log(log)
    recipe = resolve_recipe(cfg)
    device = resolve_device(cfg.device)
    models.MODELS.entry(cfg.model)  # unknown model: fail before loading data
    names = defences.parse_names(cfg.defence)
    params = cfg.defence_params()
    data_mod.parse_name(cfg.dataset)
    # Check defence options before loading data (the dataset's class count is only needed by mixers).
    defences.Pipeline(names, params, defences.DefenceContext(10, cfg.dataset, cfg.seed, recipe.label_smoothing))
    train_set = data_mod.load(cfg.dataset, "train", cfg.data_dir).limit(cfg.limit)
    test_set = data_mod.load(cfg.dataset, "test", cfg.data_dir).limit(cfg.eval_limit)
    pipeline = defences.Pipeline(names, params, defences.DefenceContext(
        train_set.num_classes, cfg.dataset, cfg.seed, recipe.label_smoothing))
    path = Path(cfg.output) if cfg.output else default_output(cfg, recipe, pipeline.label)
    resume_file = state_path(path)

    # Adversarial defences hold out training images to watch PGD accuracy each epoch.
    all_idx = torch.arange(len(train_set))
    hold_idx = all_idx[:0]
    if pipeline.adversarial:
        n_hold = min(pipeline.monitor_images, len(train_set) // 10)
        perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            derive_seed(cfg.seed, 0, "holdout")))
        hold_idx, all_idx = perm[:n_hold].sort().values, perm[n_hold:].sort().values
    input_size = max(train_set.size)
    torch.manual_seed(derive_seed(cfg.seed, 0, "init"))
    mean, std = (None, None) if cfg.pretrained else channel_stats(train_set)
    model = models.build(cfg.model, train_set.num_classes, train_set.channels, input_size,
                         pretrained=cfg.pretrained, mean=mean, std=std).to(device)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    trainee: torch.nn.Module = model  # what the optimisation step runs: DDP under torchrun
    if distributed.active():
        from torch.nn.parallel import DistributedDataParallel

        trainee = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        log(f"distributed training on {distributed.world()} processes: each takes 1/{distributed.world()} "
            f"of every batch of {recipe.batch_size}")

    steps_per_epoch = math.ceil(len(all_idx) / recipe.batch_size)
    if 0 < len(all_idx) % recipe.batch_size < 2 * distributed.world() and steps_per_epoch > 1:
        steps_per_epoch -= 1  # a last batch this small would give some rank a single image (BatchNorm fails)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = _schedule(opt, recipe, recipe.epochs * steps_per_epoch)
    run_id = _fingerprint({"model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed, "recipe": asdict(recipe),
                           "defences": pipeline.settings(), "limit": cfg.limit, "pretrained": cfg.pretrained,
                           "train_images": len(train_set), "holdout": len(hold_idx)})
    epoch0 = step0 = 0
    elapsed = 0.0
    best: dict[str, Any] | None = None
    history: list[dict[str, Any]] = []
    running = [0, 0, 0.0]  # seen, correct, loss sum of the current epoch
    if cfg.resume:
        if resume_file.is_file():
            state = _read_state(resume_file, run_id)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            epoch0, step0, elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
            best, history, running = state["best"], list(state["history"]), list(state["running"])
            log(f"resuming from {resume_file}: epoch {epoch0 + 1}, step {step0} of {steps_per_epoch}")
        else:
            log(f"--resume: no saved state at {resume_file}; starting from the beginning")
    elif resume_file.is_file():
        log(f"note: {resume_file} holds an interrupted run; pass --resume to continue it (it will be overwritten)")

    def save_state(epoch: int, step: int) -> None:
        from robustbench_lite.files import atomic_write

        if not main:
            return
        payload = {"format": STATE_FORMAT, "run": run_id, "epoch": epoch, "step": step,
                   "elapsed": elapsed + time.perf_counter() - start, "model": model.state_dict(),
                   "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best": best,
                   "history": history, "running": running}
        atomic_write(resume_file, lambda f: torch.save(payload, f), binary=True)

    log(f"training {cfg.model} on {cfg.dataset} ({len(all_idx)} images, {recipe.epochs} epochs, "
        f"recipe '{recipe.name}', defence {pipeline.label}, seed {cfg.seed}, {device})")
    if pipeline.adversarial:
        log(f"watching PGD-10 accuracy on {len(hold_idx)} held-out training images each epoch; "
            "the best epoch is kept")
    hold_x = train_set.float_images(hold_idx)
    hold_y = train_set.labels[hold_idx]
    start = time.perf_counter()
    model.train()
    done = (epoch0, step0)
    stopped_early = False
    with _StopRequest() as stop:
        try:
            for epoch in range(epoch0, recipe.epochs):
                pipeline.start_epoch(epoch)
                order = all_idx[torch.randperm(len(all_idx), generator=torch.Generator().manual_seed(
                    derive_seed(cfg.seed, epoch, "order")))]
                first = step0 if epoch == epoch0 else 0
                if first == 0:
                    running = [0, 0, 0.0]
                bar = progress(range(first, steps_per_epoch), steps_per_epoch - first,
                               f"epoch {epoch + 1}/{recipe.epochs}", cfg.show_progress)
                for step in bar:
                    torch.manual_seed(derive_seed(cfg.seed, epoch, "step", step, distributed.rank()))
                    idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                    idx = distributed.slice_for_rank(idx)  # the whole batch without torchrun
                    batch = pipeline.prepare(train_set.images[idx], train_set.labels[idx], idx.tolist(), device)
                    if device.type == "cpu":
                        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
                    loss, logits, labels = pipeline.loss(trainee, batch, attack_model=model)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    value = loss.item()
                    if not math.isfinite(value):
                        raise RobustEvalError(f"training diverged (loss {value}) at epoch {epoch + 1}; lower --lr")
                    running[0] += len(labels)
                    running[1] += int((logits.argmax(1) == labels).sum())
                    running[2] += value * len(labels)
                    done = (epoch, step + 1)
                    if hasattr(bar, "set_postfix") and step % 20 == 0:
                        bar.set_postfix(loss=f"{running[2] / running[0]:.3f}", acc=f"{running[1] / running[0]:.3f}")
                    if on_step is not None:
                        on_step(epoch, step)
                    if distributed.any_rank(stop.requested):
                        raise KeyboardInterrupt
                record: dict[str, Any] = {"epoch": epoch + 1, "loss": running[2] / max(running[0], 1),
                                          "train_accuracy": running[1] / max(running[0], 1)}
                what = "adversarial " if pipeline.adversarial else ""
                line = f"epoch {epoch + 1}/{recipe.epochs}: loss {record['loss']:.4f}, " \
                       f"{what}train accuracy {record['train_accuracy']:.4f}"
                if pipeline.adversarial:
                    clean_h, robust_h = _monitor(model, pipeline, hold_x, hold_y, hold_idx.tolist(), device,
                                                 derive_seed(cfg.seed, 0, "monitor"))
                    record.update(heldout_clean=clean_h, heldout_pgd10=robust_h)
                    line += f"; held-out clean {clean_h:.4f}, PGD-10 {robust_h:.4f}"
                    if best is None or robust_h > best["robust_accuracy"]:
                        best = {"epoch": epoch + 1, "robust_accuracy": robust_h,
                                "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
                    elif robust_h < 0.5 * best["robust_accuracy"] or robust_h < best["robust_accuracy"] - 0.2:
                        record["catastrophic_overfitting"] = True
                        line += (f"; catastrophic overfitting: PGD accuracy fell from {best['robust_accuracy']:.4f} "
                                 f"(epoch {best['epoch']})")
                history.append(record)
                log(line)
                done = (epoch + 1, 0)
                if record.get("catastrophic_overfitting") and "fgsm-rs" in pipeline.names:
                    log(f"stopping fgsm-rs training early and keeping epoch {best['epoch']} "  # type: ignore[index]
                        "(Wong et al.: early stopping on PGD accuracy)")
                    stopped_early = True
                    break
                if epoch + 1 < recipe.epochs:
                    save_state(epoch + 1, 0)
        except KeyboardInterrupt:
            save_state(*done)
            log(f"interrupted at epoch {done[0] + 1}, step {done[1]}: state saved to {resume_file}; "
                "run the same command with --resume to continue")
            raise
    train_seconds = elapsed + time.perf_counter() - start
    selected = recipe.epochs if not history else history[-1]["epoch"]
    last_robust = history[-1].get("heldout_pgd10") if history else None
    if best is not None and best["epoch"] != selected and last_robust is not None and \
            last_robust < best["robust_accuracy"] - _standard_error(best["robust_accuracy"], len(hold_idx)):
        # The last epoch (end of the schedule, usually the best clean accuracy) is kept unless its
        # held-out PGD accuracy is worse than the best epoch's by more than one standard error.
        log(f"keeping epoch {best['epoch']} (held-out PGD-10 {best['robust_accuracy']:.4f}) over the last epoch "
            f"({last_robust:.4f})")
        model.load_state_dict(best["state_dict"])
        selected = best["epoch"]
    model = model.to(memory_format=torch.contiguous_format).eval()
    logits = predict(model, test_set, 512, device)
    clean_acc = accuracy(logits, test_set.labels)
    log(f"trained in {train_seconds:.1f} s; test accuracy {clean_acc:.4f} on {len(test_set)} images")

    meta = {
        **models.architecture_meta(model, cfg.model, train_set.num_classes, input_size, cfg.pretrained),
        "dataset": cfg.dataset,
        "classes": list(train_set.classes),
        "seed": cfg.seed,
        "recipe": asdict(recipe),
        "defence": {"names": pipeline.names, "label": pipeline.label, "settings": pipeline.settings(),
                    "heldout_images": len(hold_idx), "selected_epoch": selected, "stopped_early": stopped_early},
        "init": "imagenet" if cfg.pretrained else "scratch",
        "history": history,
        "train_images": len(all_idx),
        "train_seconds": round(train_seconds, 2),
        "clean_accuracy": clean_acc,
        "clean_accuracy_images": len(test_set),
        "device": str(device),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if main:
        models.save_checkpoint(path, model, meta)
        resume_file.unlink(missing_ok=True)
    distributed.barrier()  # other ranks may read the checkpoint (the cached baseline) next
    log(f"checkpoint written to {path}")
    return model, meta, path


def _standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def _read_state(path: Path, run_id: str) -> dict[str, Any]:
    """A resume state file, as data only, for this very run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad state file
        raise RobustEvalError(f"resume state {path} is damaged ({type(exc).__name__}); delete it to start "
                              "over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RobustEvalError(f"{path} is not a robust-eval training state; delete it to start over")
    if state.get("run") != run_id:
        raise RobustEvalError(f"resume state {path} was written by a run with other settings (model, data, recipe, "
                              "defences or seed); rerun with the same options, or delete it to start over")
    return state


def load_or_train_baseline(
    model: str, dataset: str, seed: int, device: str, data_dir: str | None, log: Log = print,
    show_progress: bool = True, pretrained: bool = False,
) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
    """The cached quick baseline for (model, dataset, seed); trained and cached on first use."""
    path = baseline_path(model, dataset, seed, pretrained)
    if path.is_file():
        try:
            net, meta = models.load_checkpoint(path, model=model)
            return net, meta, path
        except RobustEvalError as exc:
            log(f"cached baseline {path} is unusable ({exc}); training a new one")
    log(f"no checkpoint given and no cached baseline for {model} on {dataset}: training the quick baseline "
        f"(cached at {path}; pass --checkpoint to evaluate your own weights)")
    cfg = TrainConfig(model=model, dataset=dataset, seed=seed, device=device, data_dir=data_dir,
                      show_progress=show_progress, pretrained=pretrained)
    return train(cfg, log=log)
