"""fp16 and bf16: the parent's weights and arithmetic in a 16-bit float, as a robust-eval checkpoint.

The checkpoint stores the weights in the 16-bit type (half the file) and says so in its metadata
(``precision``); loading it builds the network in that type (:func:`robustbench_lite.sources.
checkpoints.load_checkpoint`), and :class:`~robustbench_lite.models.NormalizedModel` casts the
[0,1] float32 images in and the logits out, so every suite runs the model in its shipped
precision, attacks included (the copy is differentiable: white-box attacks run on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from robustbench_lite.models import PRECISIONS
from robustbench_lite.training.compression.base import Log, Method, inherited, register_method


class _Precision(Method):
    suffix = ".pt"

    def make(self, parent: torch.nn.Module, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Any = None) -> dict[str, Any]:
        from robustbench_lite.sources.checkpoints import save_checkpoint

        child = parent.to(PRECISIONS[self.name])
        save_checkpoint(out, child, {**inherited(meta), "precision": self.name, "artefact": record})
        return {"dtype": str(PRECISIONS[self.name]).removeprefix("torch.")}


@register_method
class Fp16(_Precision):
    name = "fp16"
    description = "IEEE half precision (16-bit) weights and arithmetic, as a checkpoint (differentiable)"


@register_method
class Bf16(_Precision):
    name = "bf16"
    description = "bfloat16 weights and arithmetic (float32's range, 8-bit mantissa), as a checkpoint (differentiable)"
