"""Training a compressed network: the training loop started from a given network, on the parent's recipe.

Pruning is followed by a short fine-tune and distillation trains a student; both run the ordinary
:class:`~robustbench_lite.training.loop.Trainer` (seeded steps, the defences' losses, held-out PGD
monitoring for adversarial defences) through its seams: :meth:`Trainer.build_model` returns the
network to start from, :meth:`Trainer.step_loss` adds the teacher's soft targets, and
:meth:`FineTune.finish` measures the result instead of writing a checkpoint (the method writes
the artefact, with its provenance).

Unless the run names its own (``--defence``), the defences are the parent's, with the parent's
settings: pruning an adversarially trained model and fine-tuning it on clean images alone would
fine-tune its robustness away.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.compression.base import Job, Log
from robustbench_lite.training.loop import Trainer


def parent_defences(meta: dict[str, Any]) -> Any:
    """The defences (with their settings) a parent checkpoint was trained with, as ``DefenceOptions``."""
    from robustbench_lite.training.defences import DEFENCES, DefenceOptions

    settings = (meta.get("defence") or {}).get("settings") or {}
    params = {}
    for name, values in settings.items():
        if name not in DEFENCES:
            raise RobustEvalError(f"the parent was trained with defence {name!r}, which this robustbench_lite does not "
                                  f"have (valid: {', '.join(DEFENCES.list())}); pass --defence to choose the "
                                  "fine-tune's defences")
        entry = DEFENCES.entry(name)
        params[name] = entry.Params.from_mapping({k: v for k, v in values.items() if k in entry.Params.names()}, name)
    return DefenceOptions(params)


class _Recording(nn.Module):
    """The student, remembering every (input, logits) it is trained on in this step (for the teacher)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        self.seen.append((x.detach(), out))
        return out


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): T^2 KL(softmax(teacher / T) || softmax(student / T)), mean over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student.float() / t, dim=1), F.log_softmax(teacher.float() / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)


class FineTune(Trainer):
    """The training loop from ``start`` (and, with a teacher, distilling it); nothing is saved to resume."""

    resumable = False  # a fine-tune is short: an interrupted one leaves nothing behind

    def __init__(self, cfg: Any, start: nn.Module, log: Log, teacher: nn.Module | None = None,
                 temperature: float = 1.0, weight: float = 0.0) -> None:
        super().__init__(cfg, log)
        self.start_model = start
        self.teacher = teacher
        self.temperature = temperature
        self.weight = weight

    def build_model(self, train_set: Any) -> nn.Module:
        return self.start_model

    def step_loss(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.teacher is None:
            return super().step_loss(batch)
        student = _Recording(self.trainee)
        loss, logits, labels = self.pipeline.loss(student, batch, attack_model=self.model)
        with torch.no_grad():
            soft = [self.teacher(x) for x, _ in student.seen]
        kd = torch.stack([distillation_loss(out, t, self.temperature)
                          for (_, out), t in zip(student.seen, soft, strict=True)]).mean()
        return (1 - self.weight) * loss + self.weight * kd, logits, labels

    def finish(self) -> tuple[nn.Module, dict[str, Any], Path]:
        from robustbench_lite.engine import predict
        from robustbench_lite.metrics import accuracy

        model = self.model.to(memory_format=torch.contiguous_format).eval()
        acc = accuracy(predict(model, self.test_set, 512, self.device), self.test_set.labels)
        self.log(f"trained in {self.train_seconds:.1f} s; test accuracy {acc:.4f} on {len(self.test_set)} images")
        facts = {"recipe": asdict(self.recipe), "defence": {"names": self.pipeline.names,
                                                             "label": self.pipeline.label,
                                                             "settings": self.pipeline.settings(),
                                                             "selected_epoch": self.selected},
                 "history": self.history, "train_images": len(self.all_idx),
                 "train_seconds": round(self.train_seconds, 2), "clean_accuracy": acc,
                 "clean_accuracy_images": len(self.test_set)}
        return model.cpu(), facts, self.path


def train_from(start: nn.Module, meta: dict[str, Any], settings: dict[str, Any], job: Job, out: Path, log: Log, *,
               model: str, lr_scale: float, default_epochs: int, teacher: nn.Module | None = None
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``start`` on the parent's dataset with the parent's recipe (and defences, unless ``job`` names some).

    Args:
        start: the network to train (a pruned copy, a student), a :class:`NormalizedModel`.
        meta: the parent's checkpoint metadata (dataset, recipe, defences).
        settings: the method's settings: ``epochs`` and ``lr`` (None: the defaults below),
            ``temperature`` and ``distill_weight`` with a teacher.
        job: seed, data folder, defences.
        out: the artefact path (named in the log; nothing is written here).
        model: the architecture name of ``start``.
        lr_scale: the default peak rate is the parent's times this.
        default_epochs: epochs when the settings name none.
        teacher: distil from it (eval mode).

    Returns:
        The trained network (eval mode, CPU) and what the training did (recipe, defences,
        history, clean test accuracy), for the artefact's record.
    """
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.training.recipes import QUICK

    recipe = meta.get("recipe") or {}
    lr = settings.get("lr") or float(recipe.get("lr", QUICK.lr)) * lr_scale
    defences = job.defences if job.defences is not None else parent_defences(meta)
    cfg = TrainConfig(model=model, dataset=meta["dataset"], epochs=settings.get("epochs") or default_epochs,
                      batch_size=recipe.get("batch_size"), lr=lr, weight_decay=recipe.get("weight_decay"),
                      label_smoothing=float(recipe.get("label_smoothing", 0.0)), seed=job.seed, output=str(out),
                      device="cpu", data_dir=job.data_dir, show_progress=job.show_progress, defences=defences)
    if teacher is not None:
        teacher = teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    start_time = time.perf_counter()
    kd = (float(settings["temperature"]), float(settings["distill_weight"])) if teacher is not None else (1.0, 0.0)
    trainer = FineTune(cfg, start, log, teacher, *kd)
    trained, facts, _ = trainer.run()
    facts["seconds"] = round(time.perf_counter() - start_time, 2)
    return trained, facts


def save_trained(out: Path, model: nn.Module, meta: dict[str, Any], record: dict[str, Any],
                 training: dict[str, Any]) -> None:
    """Write a trained artefact: ``meta`` (architecture and what the method adds) with the clean
    accuracy just measured, and the record with what the training did (the epochs and rate it used,
    its recipe, defences and history)."""
    from robustbench_lite.sources.checkpoints import save_checkpoint

    record["settings"] = {**record["settings"], "epochs": training["recipe"]["epochs"],
                          "lr": training["recipe"]["lr"]}
    record["training"] = training
    save_checkpoint(out, model, {**meta, "clean_accuracy": training["clean_accuracy"],
                                 "clean_accuracy_images": training["clean_accuracy_images"], "artefact": record})
