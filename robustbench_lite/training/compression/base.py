"""What every compression method shares: the registry, the typed options, the artefact's provenance.

A method turns a parent (a robust-eval checkpoint) into an artefact file the evaluator loads like
any other model file (:mod:`robustbench_lite.sources`): an int8 ONNX graph, a reduced-precision
checkpoint, a pruned checkpoint. Every artefact records where it came from (:func:`provenance`):
the parent's path and sha256, the method and its settings, the calibration images, the versions
that made it. An ONNX artefact keeps it in its ``metadata_props`` (``robustbench_lite.artefact``),
a checkpoint in its metadata (``artefact``).

A method is named on the command line as ``NAME`` or ``NAME:ARG`` (``int8``, ``bf16``,
``prune:0.5``); :func:`parse_spec` splits the two and the method reads its argument.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options, float_in, int_in, one_of, option
from robustbench_lite.registry import Registry
from robustbench_lite.sources.onnx import ARTEFACT_KEY  # noqa: F401  (re-exported: the provenance's key)

if TYPE_CHECKING:
    from robustbench_lite.models import NormalizedModel

Log = Callable[[str], None]
#: Fewer calibration images than this cannot estimate activation ranges worth shipping.
MIN_CALIBRATION = 16
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class CompressOptions(Options):
    """How to compress: the method and its settings, validated before any model or data is loaded.

    Attributes:
        method: ``NAME`` or ``NAME:ARG`` (``robust-eval list compression``).
        calibration: training images the int8 method calibrates activation ranges on (never test
            images), drawn at random with the run's seed.
        calibration_method: how ranges are read from them: ``minmax``, ``entropy`` or ``percentile``.
    """

    owner: ClassVar[str] = "compress"

    method: str = option("--method", "compression method, NAME or NAME:ARG, e.g. int8, bf16 (see 'robust-eval list "
                         "compression')", example="fp16", default="int8", metavar="NAME[:ARG]")
    calibration: int = option("--calibration", f"training images to calibrate int8 ranges on (>= {MIN_CALIBRATION}; "
                              "never test images; default: 512)", example="64", default=512,
                              parse=int_in("--calibration", MIN_CALIBRATION), metavar="N")
    calibration_method: str = option("--calibration-method", "how int8 ranges are read from the calibration images: "
                                     f"{', '.join(CALIBRATION_METHODS)} (default: minmax)", example="percentile",
                                     default="minmax", parse=one_of("--calibration-method", CALIBRATION_METHODS))

    epochs: int = option("--epochs", "fine-tuning epochs after pruning, or distillation epochs (default: 1 to "
                         "fine-tune, 3 to distill)", example="2", parse=int_in("--epochs", 1), metavar="N")
    lr: float = option("--lr", "peak learning rate of the fine-tune or distillation (default: the parent's recipe "
                       "rate / 10 to fine-tune, the parent's rate to distill)", example="0.001",
                       parse=float_in("--lr", 0.0), metavar="RATE")
    student: str = option("--student", "the network to distil the parent into, a zoo, torchvision: or timm: name "
                          "(--method distill; same as distill:NAME)", example="shufflenetv2_x0_5", metavar="NAME")
    temperature: float = option("--temperature", "distillation temperature T softening both models' "
                                "probabilities (default: 4)", example="2", default=4.0,
                                parse=float_in("--temperature", 0.0), metavar="T")
    distill_weight: float = option("--distill-weight", "weight of the teacher's soft targets (T^2 KL) against the "
                                   "training loss on the labels, in [0, 1] (default: 0.9)", example="0.5",
                                   default=0.9, parse=float_in("--distill-weight", 0.0, 1.0, lo_open=False),
                                   metavar="W")

    def validate(self) -> None:
        name, arg = parse_spec(self.method)
        method = METHODS.entry(name)
        method.parse_arg(arg)  # an unknown name or a bad argument: one line, before any work
        stray = [f for f in self.set_fields() if f != "method" and f not in method.reads]
        if stray:
            flag = self.flags()[stray[0]].flag
            users = ", ".join(n for n, m in METHODS.items() if stray[0] in m.reads)
            raise RobustEvalError(f"{flag} is not used by --method {name}; it applies to {users}: drop {flag}")
        method.check_options(self)

    @property
    def entry(self) -> Method:
        return METHODS.entry(parse_spec(self.method)[0])

    @property
    def settings(self) -> dict[str, Any]:
        """The method's own settings (its argument parsed, and the options it reads; None: its default)."""
        name, arg = parse_spec(self.method)
        method = METHODS.entry(name)
        return {**{k: getattr(self, k) for k in method.reads}, **method.parse_arg(arg)}


@dataclass(frozen=True)
class Job:
    """What a method may need of the run beyond the parent: where it came from, data, seed, defences.

    Attributes:
        parent_path: the parent checkpoint.
        seed: seeds calibration draws and fine-tuning.
        data_dir: where datasets are read from (None: the default cache).
        show_progress: progress bars while training.
        defences: defences to fine-tune or distill with; None: the parent's own (its recipe).
    """

    parent_path: Path
    seed: int = 0
    data_dir: str | None = None
    show_progress: bool = True
    defences: Any = None


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"prune:0.5"`` -> ("prune", "0.5"); ``"int8"`` -> ("int8", None)."""
    if not isinstance(spec, str) or not spec.strip():
        raise RobustEvalError(f"--method must be NAME or NAME:ARG, got {spec!r}; e.g. --method int8 "
                              f"(valid: {', '.join(METHODS.list())})")
    name, _, arg = spec.strip().partition(":")
    return name, (arg or None)


class Method:
    """One compression method; subclasses set the class attributes and implement :meth:`make`.

    Attributes:
        name, description: registry name and one line for ``robust-eval list compression``.
        suffix: the artefact's file suffix (``.onnx``, ``.pt``).
        reads: the :class:`CompressOptions` fields the method uses (recorded with its settings).
        needs_calibration: it reads training images.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    suffix: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    needs_calibration: ClassVar[bool] = False

    def parse_arg(self, arg: str | None) -> dict[str, Any]:
        """Settings from the ``NAME:ARG`` argument; methods without one refuse it."""
        if arg is not None:
            raise RobustEvalError(f"compression method {self.name} takes no argument, got '{self.name}:{arg}'; "
                                  f"pass --method {self.name}")
        return {}

    def check(self) -> None:
        """Anything missing for this method (an optional package): one line, before any work."""

    def check_options(self, options: CompressOptions) -> None:
        """Checks of the method's argument against the other options (one line, before any work)."""

    def make(self, parent: NormalizedModel, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Job) -> dict[str, Any]:
        """Write the artefact to ``out`` atomically, with ``record`` (its provenance) inside.

        Args:
            parent: the parent model, eval mode, on the CPU.
            meta: the parent checkpoint's metadata.
            settings: :attr:`CompressOptions.settings`.
            calibration: float [0,1] NCHW training images when :attr:`needs_calibration`, else None.
            out: the artefact path (suffix :attr:`suffix`).
            record: the provenance record to store in the artefact.
            log: progress lines.
            job: the run's seed, data folder and defences (methods that train read them).

        Returns:
            Facts about the result worth recording and printing (sizes, nodes quantized...).
        """
        raise NotImplementedError

    def describe(self) -> str:
        return self.description


METHODS: Registry[Method] = Registry("compression method", "robust-eval list compression")


def register_method(cls: type[Method]) -> type[Method]:
    METHODS.register(cls.name, cls())
    return cls


#: Parent checkpoint metadata that describes the parent's own run, not the artefact (measured, timed, dated).
PARENT_ONLY = ("clean_accuracy", "clean_accuracy_images", "history", "train_seconds", "created", "device",
               "robustbench_lite_version", "torch_version")


#: Facts about the parent's weights that a new artefact measures again (or that no longer hold).
MEASURED = ("artefact", "precision", "sparsity")


def inherited(meta: dict[str, Any]) -> dict[str, Any]:
    """What an artefact checkpoint keeps of its parent's metadata: architecture (with a pruned parent's
    layer shapes), data, recipe, classes; not its measurements, its precision or its own record."""
    return {k: v for k, v in meta.items() if k not in PARENT_ONLY and k not in MEASURED}


def provenance(parent: Path, parent_sha256: str, meta: dict[str, Any], options: CompressOptions,
               calibration: dict[str, Any] | None, seed: int) -> dict[str, Any]:
    """The artefact's record of where it came from (plain JSON values)."""
    from robustbench_lite import __version__

    name, _ = parse_spec(options.method)
    return {
        "method": name,
        "spec": options.method,
        "settings": options.settings,
        "parent": {"path": str(parent.resolve()), "sha256": parent_sha256, "model": meta.get("model"),
                   "dataset": meta.get("dataset"), "clean_accuracy": meta.get("clean_accuracy"),
                   "recipe": meta.get("recipe")},
        "calibration": calibration,
        "seed": seed,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "robustbench_lite_version": __version__,
        "torch_version": str(torch.__version__),
    }
