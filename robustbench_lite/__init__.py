"""robustbench_lite: robustness evaluation for lightweight image classifiers.

The package import is kept light (no torch) so that ``attacks`` and ``corruptions`` can use the
leaf modules ``registry`` and ``errors``; the API is imported lazily.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "evaluate": "robustbench_lite.outputs",
    "Evaluation": "robustbench_lite.outputs",
    "RunConfig": "robustbench_lite.config",
    "TrainConfig": "robustbench_lite.config",
    "RobustEvalError": "robustbench_lite.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robustbench_lite' has no attribute {name!r}")
