"""The training loop as one object with named phases: setup, epoch, select, finish.

:class:`Trainer` runs ``setup`` once, ``epoch`` for each remaining epoch, then ``select`` (which
epoch's weights to keep) and ``finish`` (test accuracy, checkpoint). Defence-specific behaviour is
asked of the defences through their hooks (:meth:`Pipeline.early_stop`,
:meth:`Pipeline.heldout_accuracy`), never by name. :func:`train` is the one-call form.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from robustbench_lite import data as data_mod
from robustbench_lite import distributed, models
from robustbench_lite.config import TrainConfig
from robustbench_lite.engine import predict, progress, resolve_device
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.metrics import accuracy
from robustbench_lite.seeding import derive_seed
from robustbench_lite.sources import architectures, checkpoints
from robustbench_lite.training.defences import DefenceContext, DefenceOptions, Pipeline
from robustbench_lite.training.recipes import baseline_path, channel_stats, default_output, resolve_recipe, schedule
from robustbench_lite.training.resume import STATE_FORMAT, StopRequest, fingerprint, read_state, state_path

Log = Callable[[str], None]


class Trainer:
    """Train ``cfg.model`` on ``cfg.dataset`` with the recipe and defences, and write a checkpoint.

    Every step seeds the global RNG from (seed, epoch, step) and each epoch's data order from
    (seed, epoch), so a run resumed from its state file (``cfg.resume``) repeats the uninterrupted
    run exactly. The state is saved after every epoch and when SIGINT/SIGTERM (or an exception
    raised by ``on_step``, e.g. ``KeyboardInterrupt``) stops the loop between two steps.

    Args:
        cfg: what to train; ``cfg.defences`` holds the defences and their parameters.
        log: receives one line per event.
        on_step: called as ``on_step(epoch, step)`` after each optimisation step.

    Example:
        >>> model, meta, path = Trainer(TrainConfig(model="shufflenetv2_x0_5", dataset="digits")).run()
    """

    #: Whether the run saves a state file to resume from (each epoch, and when interrupted).
    resumable = True

    def __init__(self, cfg: TrainConfig, log: Log = print, on_step: Callable[[int, int], None] | None = None) -> None:
        self.cfg = cfg
        self.log = log
        self.on_step = on_step
        self.history: list[dict[str, Any]] = []
        #: The epoch with the best held-out PGD accuracy so far: epoch, robust_accuracy, state_dict.
        self.best: dict[str, Any] | None = None
        self.running: list[Any] = [0, 0, 0.0]  # seen, correct, loss sum of the current epoch
        self.stopped_early = False

    def run(self) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
        """All phases; returns the trained model (eval mode), its checkpoint metadata and path."""
        self.setup()
        with StopRequest() as self._stop:
            try:
                for epoch in range(self.epoch0, self.recipe.epochs):
                    if self.epoch(epoch):
                        break
                    if epoch + 1 < self.recipe.epochs:
                        self.save_state(epoch + 1, 0)
            except KeyboardInterrupt:
                if self.resumable:
                    self.save_state(*self.done)
                    self.log(f"interrupted at epoch {self.done[0] + 1}, step {self.done[1]}: state saved to "
                             f"{self.resume_file}; run the same command with --resume to continue")
                raise
        self.train_seconds = self.elapsed + time.perf_counter() - self.start
        self.select()
        return self.finish()

    # -- setup --------------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the options, load the data, build the model, optimiser and defences; resume if asked."""
        cfg = self.cfg
        cfg.validate()
        cfg.device = distributed.setup(cfg.device)  # joins the torchrun group when launched by it
        self.main = distributed.is_main()
        self.log = distributed.main_log(self.log)
        recipe = self.recipe = resolve_recipe(cfg)
        device = self.device = resolve_device(cfg.device)
        architectures.check(cfg.model)  # unknown model: fail before loading data
        data_mod.parse_name(cfg.dataset)
        # Build the defences once before loading data, so dataset-dependent defaults (eps) fail fast;
        # the class count is only needed by the mixers.
        Pipeline(cfg.defences, DefenceContext(10, cfg.dataset, cfg.seed, recipe.label_smoothing))
        train_set = data_mod.load(cfg.dataset, "train", cfg.data_dir).limit(cfg.limit)
        self.stress_record = None
        if cfg.stress is not None and cfg.stress.active:  # before any training: a class left empty is one line
            from robustbench_lite.training.stressors import stressed_dataset

            train_set, stressed = stressed_dataset(train_set, cfg.stress, cfg.seed)
            self.stress_record = stressed.record
            noise = stressed.record["noise"]
            self.log(f"training-data stress: {stressed.record['images']} images, per class "
                     f"{stressed.record['class_counts']}"
                     + (f"; {noise['changed']} labels changed ({noise['changed_fraction']:.1%}, {noise['kind']})"
                        if noise else ""))
        self.train_set = train_set
        self.test_set = data_mod.load(cfg.dataset, "test", cfg.data_dir).limit(cfg.eval_limit)
        counts = torch.bincount(torch.as_tensor(train_set.labels), minlength=train_set.num_classes)
        pipeline = self.pipeline = Pipeline(cfg.defences, DefenceContext(
            train_set.num_classes, cfg.dataset, cfg.seed, recipe.label_smoothing,
            class_counts=tuple(int(c) for c in counts)))
        stress_label = cfg.stress.label() if cfg.stress is not None else ""
        self.path = Path(cfg.output) if cfg.output else default_output(
            cfg, recipe, pipeline.label + (f"+{stress_label}" if stress_label else ""))
        self.resume_file = state_path(self.path)

        # Adversarial defences hold out training images to watch PGD accuracy each epoch.
        all_idx = torch.arange(len(train_set))
        hold_idx = all_idx[:0]
        if pipeline.adversarial:
            n_hold = min(pipeline.monitor_images, len(train_set) // 10)
            perm = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
                derive_seed(cfg.seed, 0, "holdout")))
            hold_idx, all_idx = perm[:n_hold].sort().values, perm[n_hold:].sort().values
        self.all_idx, self.hold_idx = all_idx, hold_idx
        self.input_size = max(train_set.size)
        torch.manual_seed(derive_seed(cfg.seed, 0, "init"))
        model = self.build_model(train_set).to(device)
        if device.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.trainee: torch.nn.Module = model  # what the optimisation step runs: DDP under torchrun
        if distributed.active():
            from torch.nn.parallel import DistributedDataParallel

            self.trainee = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
            self.log(f"distributed training on {distributed.world()} processes: each takes 1/{distributed.world()} "
                     f"of every batch of {recipe.batch_size}")

        steps = math.ceil(len(all_idx) / recipe.batch_size)
        if 0 < len(all_idx) % recipe.batch_size < 2 * distributed.world() and steps > 1:
            steps -= 1  # a last batch this small would give some rank a single image (BatchNorm fails)
        self.steps_per_epoch = steps
        self.opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        self.sched = schedule(self.opt, recipe, recipe.epochs * steps)
        self.run_id = fingerprint({"model": cfg.model, "dataset": cfg.dataset, "seed": cfg.seed,
                                   "recipe": asdict(recipe), "defences": pipeline.settings(), "limit": cfg.limit,
                                   "pretrained": cfg.pretrained, "train_images": len(train_set),
                                   "holdout": len(hold_idx), "stress": self.stress_record})
        self.epoch0 = self.step0 = 0
        self.elapsed = 0.0
        self._resume()

        self.log(f"training {cfg.model} on {cfg.dataset} ({len(all_idx)} images, {recipe.epochs} epochs, "
                 f"recipe '{recipe.name}', defence {pipeline.label}, seed {cfg.seed}, {device})")
        if pipeline.adversarial:
            self.log(f"watching PGD-10 accuracy on {len(hold_idx)} held-out training images each epoch; "
                     "the best epoch is kept")
        self.hold_x = train_set.float_images(hold_idx)
        self.hold_y = train_set.labels[hold_idx]
        self.start = time.perf_counter()
        model.train()
        self.done = (self.epoch0, self.step0)

    def build_model(self, train_set: data_mod.ImageDataset) -> torch.nn.Module:
        """The network training starts from: ``cfg.model`` built for the dataset (the global RNG is seeded).

        The seam for starting elsewhere: a subclass returns an existing network (a pruned copy, a
        student) instead (:mod:`robustbench_lite.training.compression`).
        """
        cfg = self.cfg
        mean, std = (None, None) if cfg.pretrained else channel_stats(train_set)
        return architectures.build(cfg.model, train_set.num_classes, train_set.channels, self.input_size,
                                   pretrained=cfg.pretrained, mean=mean, std=std)

    def step_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits, labels) of one training batch: the defences' loss (:meth:`Pipeline.loss`).

        The seam for adding a term (knowledge distillation adds the teacher's).
        """
        return self.pipeline.loss(self.trainee, batch, attack_model=self.model)

    def _resume(self) -> None:
        """Load the state an interrupted run left (``cfg.resume``), or say that one is there."""
        if self.cfg.resume:
            if self.resume_file.is_file():
                state = read_state(self.resume_file, self.run_id)
                self.model.load_state_dict(state["model"])
                self.opt.load_state_dict(state["optimizer"])
                self.sched.load_state_dict(state["scheduler"])
                self.epoch0, self.step0, self.elapsed = int(state["epoch"]), int(state["step"]), float(state["elapsed"])
                self.best, self.history, self.running = state["best"], list(state["history"]), list(state["running"])
                self.log(f"resuming from {self.resume_file}: epoch {self.epoch0 + 1}, step {self.step0} of "
                         f"{self.steps_per_epoch}")
            else:
                self.log(f"--resume: no saved state at {self.resume_file}; starting from the beginning")
        elif self.resume_file.is_file():
            self.log(f"note: {self.resume_file} holds an interrupted run; pass --resume to continue it (it will be "
                     "overwritten)")

    def save_state(self, epoch: int, step: int) -> None:
        """Write the resume state for continuing at (epoch, step) (rank 0 only)."""
        from robustbench_lite.files import atomic_write

        if not self.main or not self.resumable:
            return
        payload = {"format": STATE_FORMAT, "run": self.run_id, "epoch": epoch, "step": step,
                   "elapsed": self.elapsed + time.perf_counter() - self.start, "model": self.model.state_dict(),
                   "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "best": self.best,
                   "history": self.history, "running": self.running}
        atomic_write(self.resume_file, lambda f: torch.save(payload, f), binary=True)

    # -- epoch --------------------------------------------------------------------------------

    def epoch(self, epoch: int) -> bool:
        """Train one epoch (from the resumed step), record it, watch held-out accuracy.

        Returns:
            True when a defence asks to stop training here (:meth:`Pipeline.early_stop`).
        """
        cfg, recipe, pipeline, train_set, device = self.cfg, self.recipe, self.pipeline, self.train_set, self.device
        pipeline.start_epoch(epoch)
        order = self.all_idx[pipeline.epoch_order(torch.as_tensor(train_set.labels)[self.all_idx],
                                                  torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, "order")))]
        first = self.step0 if epoch == self.epoch0 else 0
        if first == 0:
            self.running = [0, 0, 0.0]
        running = self.running
        bar = progress(range(first, self.steps_per_epoch), self.steps_per_epoch - first,
                       f"epoch {epoch + 1}/{recipe.epochs}", cfg.show_progress)
        for step in bar:
            torch.manual_seed(derive_seed(cfg.seed, epoch, "step", step, distributed.rank()))
            idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
            idx = distributed.slice_for_rank(idx)  # the whole batch without torchrun
            batch = pipeline.prepare(train_set.images[idx], train_set.labels[idx], idx.tolist(), device)
            if device.type == "cpu":
                batch.x = batch.x.contiguous(memory_format=torch.channels_last)
            loss, logits, labels = self.step_loss(batch)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            value = loss.item()
            if not math.isfinite(value):
                raise RobustEvalError(f"training diverged (loss {value}) at epoch {epoch + 1}; lower --lr")
            running[0] += len(labels)
            running[1] += int((logits.argmax(1) == labels).sum())
            running[2] += value * len(labels)
            self.done = (epoch, step + 1)
            if hasattr(bar, "set_postfix") and step % 20 == 0:
                bar.set_postfix(loss=f"{running[2] / running[0]:.3f}", acc=f"{running[1] / running[0]:.3f}")
            if self.on_step is not None:
                self.on_step(epoch, step)
            if distributed.any_rank(self._stop.requested):
                raise KeyboardInterrupt
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": running[2] / max(running[0], 1),
                                  "train_accuracy": running[1] / max(running[0], 1)}
        what = "adversarial " if pipeline.adversarial else ""
        line = f"epoch {epoch + 1}/{recipe.epochs}: loss {record['loss']:.4f}, " \
               f"{what}train accuracy {record['train_accuracy']:.4f}"
        if pipeline.adversarial:
            line += self._watch(epoch, record)
        self.history.append(record)
        self.log(line)
        self.done = (epoch + 1, 0)
        reason = pipeline.early_stop(self.history, self.best)
        if reason is not None:
            self.log(reason)
            self.stopped_early = True
            return True
        return False

    def _watch(self, epoch: int, record: dict[str, Any]) -> str:
        """Held-out accuracy into ``record``; keep the best epoch; flag catastrophic overfitting."""
        clean_h, robust_h = self.monitor()
        record.update(heldout_clean=clean_h, heldout_pgd10=robust_h)
        line = f"; held-out clean {clean_h:.4f}, PGD-10 {robust_h:.4f}"
        best = self.best
        if best is None or robust_h > best["robust_accuracy"]:
            self.best = {"epoch": epoch + 1, "robust_accuracy": robust_h,
                         "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()}}
        elif robust_h < 0.5 * best["robust_accuracy"] or robust_h < best["robust_accuracy"] - 0.2:
            record["catastrophic_overfitting"] = True
            line += (f"; catastrophic overfitting: PGD accuracy fell from {best['robust_accuracy']:.4f} "
                     f"(epoch {best['epoch']})")
        return line

    def monitor(self) -> tuple[float, float]:
        """(clean, PGD-10 robust) accuracy of the current weights on the held-out training images.

        The seam for measuring differently: a subclass may override it (tests feed fixed readings
        to exercise epoch selection and early stopping).
        """
        return self.pipeline.heldout_accuracy(self.model, self.hold_x, self.hold_y, self.hold_idx.tolist(),
                                              derive_seed(self.cfg.seed, 0, "monitor"))

    # -- select -------------------------------------------------------------------------------

    def select(self) -> int:
        """Choose the epoch whose weights are kept (loading them into the model); returns it.

        The last epoch (end of the schedule, usually the best clean accuracy) is kept unless its
        held-out PGD accuracy is worse than the best epoch's by more than one standard error.
        """
        history, best = self.history, self.best
        selected = self.recipe.epochs if not history else history[-1]["epoch"]
        last_robust = history[-1].get("heldout_pgd10") if history else None
        if best is not None and best["epoch"] != selected and last_robust is not None and \
                last_robust < best["robust_accuracy"] - _standard_error(best["robust_accuracy"], len(self.hold_idx)):
            self.log(f"keeping epoch {best['epoch']} (held-out PGD-10 {best['robust_accuracy']:.4f}) over the last "
                     f"epoch ({last_robust:.4f})")
            self.model.load_state_dict(best["state_dict"])
            selected = best["epoch"]
        self.selected = selected
        return selected

    # -- finish -------------------------------------------------------------------------------

    def finish(self) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
        """Measure test accuracy, write the checkpoint with its metadata, drop the resume state."""
        cfg, pipeline, train_set, test_set = self.cfg, self.pipeline, self.train_set, self.test_set
        model = self.model.to(memory_format=torch.contiguous_format).eval()
        logits = predict(model, test_set, 512, self.device)
        clean_acc = accuracy(logits, test_set.labels)
        self.log(f"trained in {self.train_seconds:.1f} s; test accuracy {clean_acc:.4f} on {len(test_set)} images")

        meta = {
            **checkpoints.architecture_meta(model, cfg.model, train_set.num_classes, self.input_size, cfg.pretrained),
            "dataset": cfg.dataset,
            "classes": list(train_set.classes),
            "seed": cfg.seed,
            "recipe": asdict(self.recipe),
            "defence": {"names": pipeline.names, "label": pipeline.label, "settings": pipeline.settings(),
                        "heldout_images": len(self.hold_idx), "selected_epoch": self.selected,
                        "stopped_early": self.stopped_early},
            "init": "imagenet" if cfg.pretrained else "scratch",
            "history": self.history,
            "train_images": len(self.all_idx),
            "train_limit": cfg.limit,  # the first N training images (None: all), before any stress
            **({"stress": self.stress_record} if self.stress_record is not None else {}),
            "train_seconds": round(self.train_seconds, 2),
            "clean_accuracy": clean_acc,
            "clean_accuracy_images": len(test_set),
            "device": str(self.device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.main:
            checkpoints.save_checkpoint(self.path, model, meta)
            self.resume_file.unlink(missing_ok=True)
        distributed.barrier()  # other ranks may read the checkpoint (the cached baseline) next
        self.log(f"checkpoint written to {self.path}")
        return model, meta, self.path


def _standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on ``n`` images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def train(
    cfg: TrainConfig, log: Log = print, on_step: Callable[[int, int], None] | None = None,
) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
    """Train and write a checkpoint: ``Trainer(cfg, log, on_step).run()``.

    Returns:
        The trained model (eval mode), its checkpoint metadata, and the checkpoint path.
    """
    return Trainer(cfg, log, on_step).run()


def load_or_train_baseline(
    model: str, dataset: str, seed: int, device: str, data_dir: str | None, log: Log = print,
    show_progress: bool = True, pretrained: bool = False,
) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
    """The cached quick baseline for (model, dataset, seed); trained and cached on first use.

    Two processes asking for the same missing baseline do not both train it: the second waits on a
    file lock beside the checkpoint and then loads what the first wrote (under torchrun the ranks
    train together, so no lock is taken there).
    """
    path = baseline_path(model, dataset, seed, pretrained)
    if distributed.active():
        return _load_or_train(path, model, dataset, seed, device, data_dir, log, show_progress, pretrained)
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"another run is training the quick baseline {path.name}; waiting for it")
        lock.acquire()
    try:
        return _load_or_train(path, model, dataset, seed, device, data_dir, log, show_progress, pretrained)
    finally:
        lock.release()


def _load_or_train(path: Path, model: str, dataset: str, seed: int, device: str, data_dir: str | None, log: Log,
                   show_progress: bool, pretrained: bool) -> tuple[models.NormalizedModel, dict[str, Any], Path]:
    if path.is_file():
        try:
            net, meta = checkpoints.load_checkpoint(path, model=model)
            return net, meta, path
        except RobustEvalError as exc:
            log(f"cached baseline {path} is unusable ({exc}); training a new one")
    log(f"no checkpoint given and no cached baseline for {model} on {dataset}: training the quick baseline "
        f"(cached at {path}; pass --checkpoint to evaluate your own weights)")
    cfg = TrainConfig(model=model, dataset=dataset, seed=seed, device=device, data_dir=data_dir,
                      show_progress=show_progress, pretrained=pretrained, defences=DefenceOptions())
    return train(cfg, log=log)
