"""``distill:NAME`` (or ``distill --student NAME``): knowledge distillation into a smaller network.

The student (a zoo, ``torchvision:`` or ``timm:`` architecture, built for the parent's classes,
channels and image size, from scratch with the run's seed) is trained on the parent's dataset
with the parent's recipe and defences (or ``--defence``: distillation plus ``pgd-at`` trains the
student on adversarial examples and matches the teacher there). The loss is Hinton et al.'s (2015)
``(1 - W) * training loss + W * T^2 KL(teacher || student)`` at temperature ``T``
(``--distill-weight`` 0.9, ``--temperature`` 4), the KL taken on every input the student is
trained on in the step. The artefact is a robust-eval checkpoint of the student.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.compression.base import CompressOptions, Job, Log, Method, inherited, register_method
from robustbench_lite.training.compression.finetune import save_trained, train_from


@register_method
class Distill(Method):
    name = "distill"
    description = ("knowledge distillation into a smaller student (distill:NAME or --student NAME; --temperature, "
                   "--distill-weight, --epochs, --lr, --defence); a checkpoint of the student")
    suffix = ".pt"
    reads = ("epochs", "lr", "student", "temperature", "distill_weight")

    def parse_arg(self, arg: str | None) -> dict[str, Any]:
        if arg is None:
            return {}
        from robustbench_lite.sources import architectures

        architectures.check(arg)  # an unknown name: one line with the valid ones
        return {"student": arg}

    def check_options(self, options: CompressOptions) -> None:
        from robustbench_lite.sources import architectures

        _, _, arg = options.method.partition(":")
        if arg and options.student and arg != options.student:
            raise RobustEvalError(f"--method {options.method} and --student {options.student} name different "
                                  "students; give one of them")
        if not (arg or options.student):
            raise RobustEvalError("--method distill needs a student: --method distill:NAME or --student NAME, e.g. "
                                  "--method distill:shufflenetv2_x0_5 (see 'robust-eval list models')")
        architectures.check(arg or options.student)

    def make(self, parent: nn.Module, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Job) -> dict[str, Any]:
        from robustbench_lite.seeding import derive_seed
        from robustbench_lite.sources import architectures
        from robustbench_lite.sources.checkpoints import architecture_meta

        name = settings["student"]
        torch.manual_seed(derive_seed(job.seed, 0, "init"))
        try:
            student = architectures.build(name, meta["num_classes"], meta["in_channels"], meta["input_size"],
                                          pretrained=False, mean=tuple(meta["mean"]), std=tuple(meta["std"]))
        except RobustEvalError:
            raise
        except Exception as exc:  # noqa: BLE001 - a family that cannot build this student for the data
            from robustbench_lite.errors import first_line

            raise RobustEvalError(f"--student {name} cannot be built for {meta.get('dataset')} ({meta['num_classes']} "
                                  f"classes, {meta['in_channels']} channel(s), {meta['input_size']} px): "
                                  f"{first_line(exc)}") from None
        sizes = [sum(p.numel() for p in m.parameters()) for m in (parent, student)]
        log(f"distill: {meta.get('model')} ({sizes[0]:,} parameters) -> {name} ({sizes[1]:,}), "
            f"T={settings['temperature']}, weight {settings['distill_weight']}")
        if sizes[1] >= sizes[0]:
            log(f"distill: note: the student {name} is not smaller than its teacher")
        trained, training = train_from(student, meta, settings, job, out, log, model=name, lr_scale=1.0,
                                       default_epochs=3, teacher=parent)
        own = architecture_meta(trained, name, meta["num_classes"], meta["input_size"], False)
        keep = {k: v for k, v in inherited(meta).items() if k != "shapes"}  # the teacher's pruned layers, if any
        save_trained(out, trained, {**keep, **own, "init": "scratch", "recipe": training["recipe"],
                                    "defence": training["defence"]}, record, training)
        return {"student": name, "parameters": sizes[1], "parameters_before": sizes[0],
                "clean_accuracy": training["clean_accuracy"]}
