"""Compression methods: turn a parent checkpoint into the artefact that is shipped, with its provenance.

- :mod:`.base`: the method registry (:data:`METHODS`), :class:`CompressOptions`, the provenance record.
- :mod:`.run`: :func:`compress` (one parent, one method, one artefact) and :class:`CompressConfig`.
- Methods, one module each: :mod:`.int8` (ONNX Runtime static quantization), :mod:`.precision`
  (fp16, bf16), :mod:`.prune` (prune, prune-channels), :mod:`.distill`; the ones that train go
  through :mod:`.finetune` (the training loop from a given network, on the parent's recipe).
"""

from robustbench_lite.training.compression import distill as _distill  # noqa: F401  (registers distill)
from robustbench_lite.training.compression import int8 as _int8  # noqa: F401  (registers int8)
from robustbench_lite.training.compression import precision as _precision  # noqa: F401  (registers fp16, bf16)
from robustbench_lite.training.compression import prune as _prune  # noqa: F401  (registers prune, prune-channels)
from robustbench_lite.training.compression.base import ARTEFACT_KEY, METHODS, CompressOptions, Job, Method, parse_spec
from robustbench_lite.training.compression.run import (
    Artefact,
    CompressConfig,
    compress,
    ensure_artefact,
    recorded_artefact,
)

__all__ = ["ARTEFACT_KEY", "METHODS", "Artefact", "CompressConfig", "CompressOptions", "Job", "Method", "compress",
           "ensure_artefact", "parse_spec", "recorded_artefact"]
