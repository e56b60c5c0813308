"""Model sources: every form a model is shipped in, loaded safely and adapted to [0,1] pixel space.

* :mod:`.architectures`: names: the zoo, ``torchvision:NAME``, ``timm:NAME`` (the families in :mod:`.families`);
* :mod:`.checkpoints`: the project's checkpoint format;
* :mod:`.formats`, :mod:`.onnx`: files recognised by content (``robust-eval list formats``):
  checkpoints and state_dicts, safetensors, TorchScript, torch.export, ONNX (ONNX Runtime);
* :mod:`.contract`: the model's input contract and the adapter that meets it;
* :mod:`.runtimes`: fixed-batch graphs and transfer (surrogate) gradients.

The evaluator calls :func:`inspect_file` while checking the run (before any data is read), then
:func:`load_file` or :func:`from_module`, then :func:`finish` with the dataset's facts.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError, first_line
from robustbench_lite.sources import formats, onnx  # noqa: F401  (register the formats)
from robustbench_lite.sources.base import FORMATS, FileInfo, LoadedModel, LoadRequest
from robustbench_lite.sources.contract import InputContract, adapt, read_sidecar
from robustbench_lite.sources.runtimes import FixedBatch, Transfer

__all__ = ["FORMATS", "FileInfo", "InputContract", "LoadedModel", "Transfer", "finish", "from_module", "inspect_file",
           "load_file"]

HEAD_BYTES = 64


def inspect_file(path: str | Path) -> FileInfo:
    """Recognise a model file by its content and read what it says about its input (no model built).

    Raises a one-line :class:`RobustEvalError` for a missing, damaged or unknown file, or a format
    whose optional extra is not installed.
    """
    path = Path(path)
    if not path.is_file():
        raise RobustEvalError(f"model file {path} does not exist; pass a checkpoint, state_dict, safetensors, "
                              "TorchScript, torch.export (.pt2) or ONNX file")
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    names: list[str] | None = None
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise RobustEvalError(f"{path} is a damaged zip archive ({exc}); write the model file again") from None
    elif head[:4] == b"PK\x03\x04":
        raise RobustEvalError(f"{path} is a truncated or damaged archive (its zip directory is missing); copy or "
                              "write the model file again")
    for name in sorted(FORMATS, key=lambda n: FORMATS.entry(n).order):
        fmt = FORMATS.entry(name)
        if fmt.sniff(path, head, names):
            try:
                info = fmt.inspect(path, names)
            except zipfile.BadZipFile as exc:  # a member that fails its CRC check
                raise RobustEvalError(f"{path} is a damaged archive ({exc}); copy or write the model file "
                                      "again") from None
            info.reader = name
            return info
    shown = head[:8].hex(" ") if head else "nothing (empty file)"
    raise RobustEvalError(f"{path} is not a model file robust-eval reads (it starts with {shown}); formats: "
                          f"{', '.join(sorted(FORMATS))} (see 'robust-eval list formats')")


def load_file(path: str | Path, info: FileInfo, *, architecture: str | None, contract: InputContract,
              num_classes: int, channels: int, size: tuple[int, int], classes: tuple[str, ...],
              device: str = "cpu") -> LoadedModel:
    """Load a file :func:`inspect_file` recognised, for a dataset; :func:`finish` adapts it."""
    path = Path(path)
    side, extra = read_sidecar(path)
    architecture = architecture or extra.get("model") or info.meta.get("architecture")
    if info.needs_architecture and not architecture:
        raise RobustEvalError(f"{path} holds weights only ({info.format}); pass --model with its architecture, e.g. "
                              "--model resnet18 or --model torchvision:resnet50 (see 'robust-eval list models')")
    if architecture and info.needs_architecture:
        from robustbench_lite.sources import architectures

        architectures.check(architecture)
    merged = contract.over(side, info.contract)
    request = LoadRequest(path, info, merged, architecture, num_classes, channels, size, classes, device)
    loaded = FORMATS.entry(info.reader or info.format).load(request)
    loaded.path = str(path)
    loaded.file_bytes = path.stat().st_size
    loaded.fixed_batch = info.fixed_batch
    loaded.contract = merged.over(loaded.contract)
    return loaded


def from_module(module: nn.Module, contract: InputContract | None = None, name: str | None = None) -> LoadedModel:
    """An in-memory model (takes what ``contract`` says; by default [0,1] images at the dataset's size)."""
    return LoadedModel(model=module, core=module, format="module", contract=contract or InputContract(),
                       meta={"module": name or type(module).__qualname__})


def finish(loaded: LoadedModel, *, num_classes: int, channels: int, size: tuple[int, int],
           classes: tuple[str, ...], what: str, device: torch.device, log: object = None) -> LoadedModel:
    """Wrap the loaded model for a dataset: fixed batch, adapter; then check it once on two images.

    Args:
        loaded: from :func:`load_file` or :func:`from_module`, or a robust-eval model.
        num_classes, channels, size, classes: the dataset's.
        what: the model in messages (its file name).
        device: where the model runs.
    """
    contract = loaded.contract
    if loaded.normalises_inside:
        given = [f"--{k.replace('_', '-')}" for k in ("input_size", "channels", "mean", "std") if getattr(contract, k)]
        if given:
            raise RobustEvalError(f"{what} is a robust-eval model: it records its own input handling and "
                                  f"normalisation; drop {', '.join(given)} (they describe models that do not)")
    core = loaded.core
    if loaded.fixed_batch:
        core = FixedBatch(core, loaded.fixed_batch)
        loaded.notes.append(f"exported for batch {loaded.fixed_batch}: runs in batches of {loaded.fixed_batch} "
                            "(the last one zero-padded, padding outputs dropped)")
    model, adaptations = adapt(core, contract, channels, size, classes, what)
    if not loaded.normalises_inside and contract.mean is None:
        loaded.notes.append("no mean/std given: images go in as [0,1] pixels (right for a model that normalises "
                            "inside; pass --mean/--std, or a sidecar, if it expects normalised input)")
    loaded.model, loaded.core, loaded.adaptations = model.to(device), core.to(device), adaptations
    loaded.core_input = (contract.channels or channels, *(contract.input_size or size))
    _probe(loaded, num_classes, channels, size, what, device)
    return loaded


def _probe(loaded: LoadedModel, num_classes: int, channels: int, size: tuple[int, int], what: str,
           device: torch.device) -> None:
    """One forward pass on two blank images: a model that cannot take the data fails here, before any suite."""
    x = torch.zeros(2, channels, *size, device=device)
    try:
        with torch.no_grad():
            out = loaded.model(x)
    except RobustEvalError:
        raise
    except Exception as exc:  # noqa: BLE001 - a shipped model can fail in any layer
        first = first_line(exc)
        expects = ", ".join(f"{k} {v}" for k, v in loaded.contract.describe().items() if v and k != "classes")
        raise RobustEvalError(f"{what} fails on {channels}x{size[0]}x{size[1]} images ({type(exc).__name__}: "
                              f"{first[:160]}); its contract: {expects or 'none given'}; pass --input-size / "
                              "--channels for the input it takes") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustEvalError(f"{what} returns {shape} for 2 images but the dataset has {num_classes} classes; "
                              "evaluate it on the data it was trained for (logits of shape N x classes)")


def with_surrogate(target: LoadedModel, surrogate: LoadedModel) -> nn.Module:
    """The model attacks run on: the target's outputs with the surrogate's gradients."""
    if not surrogate.differentiable:
        raise RobustEvalError(f"the surrogate {surrogate.path} has no gradients ({surrogate.runtime}); pass a "
                              "PyTorch, TorchScript or torch.export model as --surrogate")
    return Transfer(target.model, surrogate.model, surrogate.path)
