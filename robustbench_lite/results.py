"""Typed results and their JSON form (versioned schema).

Suites return :class:`SuiteResult` dataclasses; writers (JSON, console table, HTML, gates) only
read them. Accuracies are fractions in [0, 1]. The JSON carries ``schema_version``, the config,
the environment and timings, so a report can be rebuilt from the JSON alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


def plain(value: Any) -> Any:
    """Dataclasses, tuples, numpy/torch scalars and paths as JSON-ready values; NaN -> None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class SuiteResult:
    """Base class of every suite's result; ``to_dict`` is what lands under the suite's JSON key."""

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    def summary(self) -> dict[str, float | int | str]:
        """A few headline numbers for the console table."""
        return {}


@dataclass
class EvaluationResult:
    """One evaluation: a model on a dataset through some suites."""

    model: str
    dataset: str
    n_examples: int
    seed: int
    config: dict[str, Any]
    environment: dict[str, Any]
    checkpoint: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    #: where the test images came from: ``name``, ``split``, ``source`` (folder or loader) and ``files``
    #: (each read file's path, sha256 and size)
    data: dict[str, Any] = field(default_factory=dict)
    suites: dict[str, SuiteResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    examples: dict[str, Any] | None = None
    command: list[str] | None = None
    #: per suite, ``{path in its block: [low, high]}`` (95% intervals; see robustbench_lite.statistics)
    intervals: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: how the intervals were computed (level, methods, bootstrap resamples and seed)
    statistics: dict[str, Any] = field(default_factory=dict)
    #: per-image outcomes (robustbench_lite.records.Records); written with --records, not in the JSON
    records: Any = None
    #: where the records were written: path, sha256, conditions (set by the output step)
    records_file: dict[str, Any] | None = None
    #: the forward path and precision (robustbench_lite.engine.plans.Plan.describe), and for a model cast
    #: from fp32 its ``agreement_with_fp32`` on the clean set
    inference: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "dataset": self.dataset,
            "n_examples": self.n_examples,
            "seed": self.seed,
            "config": plain(self.config),
            "environment": plain(self.environment),
            "checkpoint": plain(self.checkpoint),
            "source": plain(self.source),
            **({"data": plain(self.data)} if self.data else {}),
            **({"inference": plain(self.inference)} if self.inference else {}),
            "suites": list(self.suites),
            "timings": plain(self.timings),
        }
        for name, result in self.suites.items():
            out[name] = result.to_dict()
            if self.intervals.get(name):
                out[name]["ci"] = plain(self.intervals[name])  # an empty condition: NaN -> null
        if self.statistics:
            out["statistics"] = plain(self.statistics)
        if self.records_file is not None:
            out["records"] = plain(self.records_file)
        if self.command is not None:
            out["command"] = list(self.command)
        if self.examples is not None:
            out["examples"] = self.examples
        return out


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a results JSON written by any compatible version."""
    from robustbench_lite.errors import RobustEvalError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RobustEvalError(f"results file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobustEvalError(f"results file {path} is not valid JSON ({exc})") from None
    except IsADirectoryError:
        raise RobustEvalError(f"results file {path} is a folder; give the JSON file inside it") from None
    except OSError as exc:
        raise RobustEvalError(f"results file {path} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise RobustEvalError(f"{path} is not a robust-eval results file (no schema_version)")
    return check_results(data, str(path))


#: Top-level fields of a results JSON and the type each must have when present.
RESULT_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "dataset": (str,), "n_examples": (int,), "seed": (int,), "config": (dict,),
    "environment": (dict,), "checkpoint": (dict,), "source": (dict,), "data": (dict,), "suites": (list,),
    "timings": (dict,), "inference": (dict,),
    "statistics": (dict,), "records": (dict,), "command": (list,), "examples": (dict,), "gates": (dict,),
}


def check_results(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` when its fields have the types a results JSON has; else one line naming the field.

    Every command that reads results (``report``, ``gate``, ``compare``, ``--baseline``) goes through
    here, so a file that parses but is not what it claims stops before any work.
    """
    from robustbench_lite.errors import RobustEvalError
    from robustbench_lite.options import is_int

    def bad(field_: str, want: str, got: Any) -> RobustEvalError:
        shown = repr(got) if len(repr(got)) <= 40 else type(got).__name__
        return RobustEvalError(f"results file {where} is damaged: '{field_}' should be {want}, got {shown}; "
                               "re-create it with robust-eval (--json)")

    version = data.get("schema_version")
    if not is_int(version, 1):
        raise bad("schema_version", "an integer >= 1", version)
    if version > SCHEMA_VERSION:
        raise RobustEvalError(
            f"{where} has schema_version {version}, newer than {SCHEMA_VERSION}; upgrade robustbench-lite"
        )
    for key, types in RESULT_FIELDS.items():
        value = data.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise bad(key, f"a {'/'.join(t.__name__ for t in types)}", value)
    suites = data.get("suites") or []
    for name in suites:
        if not isinstance(name, str):
            raise bad("suites", "a list of suite names", suites)
        if name in data and not isinstance(data[name], dict):
            raise bad(name, "a mapping (the suite's results)", data[name])
    for key, value in (data.get("timings") or {}).items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise bad(f"timings.{key}", "a number of seconds", value)
    return data


def environment(device: str) -> dict[str, Any]:
    import numpy
    import torch
    import torchvision

    from robustbench_lite import __version__

    env = {
        "robustbench_lite": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env
