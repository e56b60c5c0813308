"""What every model source gives the evaluator: a :class:`LoadedModel`; and the file-format registry.

A :class:`FileFormat` recognises its files by content (``sniff``), reads what the file says about
its input cheaply (``inspect``, before any data is loaded, so a wrong or unreadable file is a user
error found before any work starts) and loads it (``load``). Formats are tried in their ``order``;
adding one is one registered entry (``robust-eval list formats``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from robustbench_lite.registry import Registry
from robustbench_lite.sources.contract import InputContract


@dataclass
class FileInfo:
    """What :meth:`FileFormat.inspect` read from a file without building the model.

    Attributes:
        format: what the file is: the format's registry name, or a finer kind the format tells
            apart (the ``pytorch`` format reads a ``checkpoint`` or a ``state_dict``).
        contract: what the file says about the model's input (size, channels, mean/std, classes).
        num_classes: the number of logits, when the file says (ONNX / torch.export output shapes).
        fixed_batch: the batch size a graph was exported for, None when dynamic or unknown.
        meta: format-specific data (a project checkpoint's metadata and payload, an ONNX input name...).
        needs_architecture: the file holds weights only, so ``--model`` must name the architecture.
    """

    format: str
    contract: InputContract = field(default_factory=InputContract)
    num_classes: int | None = None
    fixed_batch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    needs_architecture: bool = False
    reader: str = ""  # the FORMATS entry that recognised the file (set by sources.inspect_file)

    @property
    def differentiable(self) -> bool:
        """Whether the model will have input gradients (attacks can run on it)."""
        return FORMATS.entry(self.reader or self.format).differentiable


@dataclass
class LoadRequest:
    """What a loader needs beyond the file: the dataset's facts, the architecture name, flags."""

    path: Path
    info: FileInfo
    contract: InputContract  # flags over sidecar over file
    architecture: str | None
    num_classes: int
    channels: int
    size: tuple[int, int]
    classes: tuple[str, ...]
    device: str = "cpu"


@dataclass
class LoadedModel:
    """A model ready for the suites, and what it is.

    Attributes:
        model: takes [0,1] NCHW images at the dataset's channels and size, returns logits in the
            dataset's class order (the :class:`~robustbench_lite.sources.contract.Adapter` inside
            when the model expects otherwise); in eval mode.
        core: the model as shipped, what the efficiency suite measures (at ``core_input``).
        core_input: (C, H, W) the core takes; None: the dataset's.
        format: ``zoo``, ``checkpoint``, ``state_dict``, ``safetensors``, ``torchscript``,
            ``torch.export``, ``onnx`` or ``module``.
        runtime: ``pytorch``, ``torchscript`` or ``onnxruntime`` (with its provider).
        differentiable: gradients flow to the input (attacks can run on it).
        path: the file it came from (None for in-memory modules and zoo baselines built in memory).
        file_bytes: the file's size on disk.
        contract: the input contract that was applied (a loader may set defaults, e.g. the stem's
            channels read from the weights; flags, sidecar and the file's own contract come first).
        adaptations: what the adapter does, in words (shown in the results and the report).
        fixed_batch: the batch size an exported graph takes (batches are split and padded to it).
        meta: the project checkpoint's metadata (training recipe, classes...), else {}.
        notes: other facts worth a line in the report (e.g. "no normalisation given").
        normalises_inside: a robust-eval model (zoo, checkpoint): it takes [0,1] images of either
            channel count and normalises itself, so no contract applies.
    """

    model: nn.Module
    core: nn.Module
    format: str
    runtime: str = "pytorch"
    differentiable: bool = True
    core_input: tuple[int, int, int] | None = None
    path: str | None = None
    file_bytes: int | None = None
    contract: InputContract = field(default_factory=InputContract)
    adaptations: list[str] = field(default_factory=list)
    fixed_batch: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    normalises_inside: bool = False

    def describe(self) -> dict[str, Any]:
        """The results' ``source`` block."""
        return {"format": self.format, "runtime": self.runtime, "path": self.path, "file_bytes": self.file_bytes,
                "differentiable": self.differentiable, "fixed_batch": self.fixed_batch,
                "input_shape": list(self.core_input) if self.core_input else None,
                "contract": self.contract.describe(), "adaptations": list(self.adaptations),
                "notes": list(self.notes)}


class FileFormat:
    """One model file format; subclasses implement ``sniff``, ``inspect`` and ``load``."""

    name: ClassVar[str]
    description: ClassVar[str]
    #: formats are tried in ascending order; the first whose ``sniff`` says yes reads the file
    order: ClassVar[int] = 100
    #: the optional extra the format needs (``pip install 'robustbench-lite[EXTRA]'``), if any
    extra: ClassVar[str | None] = None
    #: the runtime computes input gradients (attacks can run on the model itself)
    differentiable: ClassVar[bool] = True

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        """Whether the file is in this format: ``head`` is its first bytes, ``names`` its zip entries
        (None when it is not a zip archive)."""
        raise NotImplementedError

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        """Read what the file says about its input, cheaply; raise a one-line error for a damaged file."""
        raise NotImplementedError

    def load(self, request: LoadRequest) -> LoadedModel:
        """Build the model for a dataset."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.description


FORMATS: Registry[FileFormat] = Registry("model file format", "robust-eval list formats")


def register_format(cls: type[FileFormat]) -> type[FileFormat]:
    FORMATS.register(cls.name, cls())
    return cls
