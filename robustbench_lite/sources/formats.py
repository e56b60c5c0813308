"""PyTorch model files, each read as data: checkpoints and state_dicts, safetensors, TorchScript, torch.export.

* ``pytorch``: a ``torch.save`` file read with ``weights_only=True``: the project's checkpoint
  (rebuilt from its metadata), or a plain ``state_dict`` (of a robust-eval model, or of the bare
  network) for the architecture ``--model`` names. A file that needs unpickling code (a whole
  module saved with ``torch.save(model)``) is refused with the safe alternatives.
* ``safetensors``: a state_dict in the safetensors format (its ``__metadata__`` may name the
  architecture and the input contract).
* ``torchscript``: ``torch.jit.load`` (TorchScript's own restricted unpickler builds only
  TorchScript types, no Python code).
* ``torch.export``: ``torch.export.load`` of a ``.pt2`` archive, after checking the archive holds
  no pickled objects (tensor subclasses, custom objects), which ``torch.export.load`` would
  unpickle with ``weights_only=False``.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError, first_line
from robustbench_lite.sources import architectures, checkpoints
from robustbench_lite.sources.base import FileFormat, FileInfo, LoadedModel, LoadRequest, register_format
from robustbench_lite.sources.contract import InputContract
from robustbench_lite.sources.runtimes import Exported

SAFE_ALTERNATIVES = ("save model.state_dict() and pass --model, or ship TorchScript (torch.jit.save), torch.export "
                     "(torch.export.save) or ONNX")
#: where a state_dict often sits inside a saved training dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


def _zip_prefix(names: list[str]) -> str:
    return names[0].split("/", 1)[0] + "/" if names and "/" in names[0] else ""


def _contract_values(data: Any, where: str) -> tuple[InputContract, dict[str, Any]]:
    if not isinstance(data, dict):
        raise RobustEvalError(f"{where} must be a JSON object like {{\"input_size\": 224, \"mean\": [0.485, 0.456, "
                              f"0.406], ...}}, got {type(data).__name__}; write it again")
    values = {k: v for k, v in data.items() if k in {"input_size", "channels", "mean", "std", "classes"}}
    return InputContract.read(values, where), {k: v for k, v in data.items() if k not in values}


def _json_or_text(text: str) -> Any:
    """A metadata value: JSON (``[0.5, 0.5, 0.5]``, ``224``) or plain text (``0.5,0.5,0.5``, a model name)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ---------------------------------------------------------------------------------------------
# torch.save files: project checkpoints and state_dicts


def _tensor_dict(value: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in value.items()):
        return value
    return None


def find_state_dict(payload: Any) -> dict[str, torch.Tensor] | None:
    """The tensors of a state_dict, at the top level or under a usual key (``state_dict``, ``model``...)."""
    found = _tensor_dict(payload)
    if found is None and isinstance(payload, dict):
        for key in NESTED_KEYS:
            found = _tensor_dict(payload.get(key))
            if found is not None:
                break
    if found is not None and any(k.startswith("module.") for k in found):  # saved from DataParallel / DDP
        found = {k.removeprefix("module."): v for k, v in found.items()}
    return found


def load_into(architecture: str, state: dict[str, torch.Tensor], request: LoadRequest) -> LoadedModel:
    """Build ``architecture`` for the dataset and load ``state`` into it.

    A state_dict of a robust-eval model (``net.*`` plus ``mean``/``std`` buffers) loads whole, its
    normalisation included. A bare network's state_dict (``torchvision.models.resnet18().state_dict()``)
    loads into the network alone: its stem's channel count is read from the weights, and its input
    contract (size, mean/std) comes from flags, a sidecar or the file's metadata.
    """
    whole = "mean" in state and "std" in state and any(k.startswith("net.") for k in state)
    size = request.contract.input_size or request.size
    channels = request.channels
    if whole:
        channels = int(state["mean"].numel())
    else:
        first = next((v for v in state.values() if v.ndim == 4), None)
        if first is not None and first.shape[1] in (1, 3):
            channels = int(first.shape[1])
    model = architectures.build(architecture, request.num_classes, channels, max(size),
                                mean=(0.0,) * channels, std=(1.0,) * channels)
    target: nn.Module = model if whole else model.net
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln or "Missing" in ln
                 or "Unexpected" in ln]
        detail = lines[0] if lines else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise RobustEvalError(f"{request.path} does not fit the '{architecture}' architecture for "
                              f"{request.num_classes} classes ({detail[:200]}); pass the --model it was trained "
                              "as") from None
    if whole:  # normalises inside, takes either channel count
        return LoadedModel(model=model.eval(), core=model, format="", normalises_inside=True,
                           meta={"model": architecture})
    net = model.net.eval()
    return LoadedModel(model=net, core=net, format="", contract=InputContract(channels=channels),
                       meta={"model": architecture})


@register_format
class PyTorchFormat(FileFormat):
    name = "pytorch"
    description = ("torch.save file read with weights_only=True: a robust-eval checkpoint, or a state_dict "
                   "(plain or nested under 'state_dict'/'model') for the architecture --model names")
    order = 40

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        if names is not None:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in names) and not any(
                "/code/__torch__" in n for n in names)
        return head[:1] == b"\x80"  # the legacy (pre-zip) torch.save format starts with a pickle

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        payload = checkpoints.load_data(path)
        if isinstance(payload, dict) and payload.get("format") == checkpoints.CHECKPOINT_FORMAT:
            payload = checkpoints.check_payload(path, payload)
            meta = payload["meta"]
            return FileInfo("checkpoint", InputContract(classes=tuple(meta["classes"]) if meta.get("classes")
                                                        else None),
                            num_classes=meta.get("num_classes"), meta={"payload": payload})
        state = find_state_dict(payload)
        if state is None:
            kind = type(payload).__name__
            raise RobustEvalError(f"{path} holds a {kind}, not model weights (no tensors found at the top level or "
                                  f"under {', '.join(NESTED_KEYS)}); {SAFE_ALTERNATIVES}")
        extra = payload if isinstance(payload, dict) and payload is not state else {}
        classes = extra.get("classes") if isinstance(extra.get("classes"), (list, tuple)) else None
        return FileInfo("state_dict", InputContract(classes=tuple(map(str, classes)) if classes else None),
                        meta={"state": state, "architecture": extra.get("arch") or extra.get("architecture")},
                        needs_architecture=True)

    def load(self, request: LoadRequest) -> LoadedModel:
        info = request.info
        if info.format == "checkpoint":
            payload = info.meta["payload"]
            net, meta = checkpoints.load_checkpoint(request.path, model=request.architecture,
                                                    num_classes=request.num_classes, payload=payload)
            return LoadedModel(model=net, core=net, format="checkpoint", meta=meta, normalises_inside=True)
        return _weights(request, info.meta["state"], "state_dict")


def _weights(request: LoadRequest, state: dict[str, torch.Tensor], fmt: str) -> LoadedModel:
    assert request.architecture is not None  # sources.inspect_file asks for --model first
    loaded = load_into(request.architecture, state, request)
    loaded.format = fmt
    return loaded


# ---------------------------------------------------------------------------------------------
# safetensors


@register_format
class SafetensorsFormat(FileFormat):
    name = "safetensors"
    description = "safetensors state_dict for the architecture --model names (or its __metadata__ 'model')"
    order = 10

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        if names is not None or len(head) < 9:
            return False
        (n,) = struct.unpack("<Q", head[:8])
        return 1 < n <= path.stat().st_size - 8 and head[8:9] == b"{"

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            try:
                header = json.loads(f.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise RobustEvalError(f"{path} is a damaged safetensors file (unreadable header); "
                                      "write it again with safetensors.torch.save_file") from None
        meta = header.get("__metadata__") or {}
        values = {k: _json_or_text(v) if isinstance(v, str) else v for k, v in meta.items()}
        contract, rest = _contract_values(values, f"{path}'s metadata")
        return FileInfo(self.name, contract, meta={"architecture": rest.get("model")}, needs_architecture=True)

    def load(self, request: LoadRequest) -> LoadedModel:
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise RobustEvalError(f"{request.path} is a safetensors file; reading it needs the package "
                                  "safetensors: pip install safetensors") from None
        try:
            state = load_file(str(request.path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - SafetensorError and friends
            raise RobustEvalError(f"{request.path} is a damaged safetensors file ({type(exc).__name__}: "
                                  f"{str(exc)[:120]}); write it again with safetensors.torch.save_file") from None
        return _weights(request, state, self.name)


# ---------------------------------------------------------------------------------------------
# TorchScript

EXTRA_FILE = "robustbench_lite.json"


@register_format
class TorchScriptFormat(FileFormat):
    name = "torchscript"
    description = "TorchScript archive (torch.jit.save); contract from its extra file robustbench_lite.json"
    order = 30

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        return names is not None and any("/code/__torch__" in n or n.endswith("/constants.pkl") for n in names)

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        prefix = _zip_prefix(names or [])
        values: dict[str, Any] = {}
        with zipfile.ZipFile(path) as z:
            if f"{prefix}extra/{EXTRA_FILE}" in (names or []):
                try:
                    values = json.loads(z.read(f"{prefix}extra/{EXTRA_FILE}"))
                except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                    raise RobustEvalError(f"{path}'s extra file {EXTRA_FILE} is not valid JSON ({exc}); save it "
                                          f"again with _extra_files={{'{EXTRA_FILE}': json.dumps({{...}})}}") from None
        contract, _ = _contract_values(values, f"{path}'s {EXTRA_FILE}")
        return FileInfo(self.name, contract)

    def load(self, request: LoadRequest) -> LoadedModel:
        try:
            net = torch.jit.load(str(request.path), map_location="cpu")
        except Exception as exc:  # noqa: BLE001 - RuntimeError with a C++ trace
            first = first_line(exc)
            raise RobustEvalError(f"{request.path} is a damaged TorchScript archive ({first[:160]}); "
                                  "save it again with torch.jit.save") from None
        return LoadedModel(model=net.eval(), core=net, format=self.name, runtime="torchscript")


# ---------------------------------------------------------------------------------------------
# torch.export


#: The pickled parts of the archive torch.export.save wrote before torch 2.7 (``serialized_exported_program.json``
#: beside them); torch.export.load reads them with weights_only=False.
LEGACY_EXPORT_PICKLES = ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt")


def _check_no_pickles(path: Path, z: zipfile.ZipFile, names: list[str]) -> None:
    """Refuse archives whose loading would unpickle objects (``torch.export.load`` uses weights_only=False)."""
    for name in names:
        if name.endswith(("weights_config.json", "constants_config.json")):
            try:
                # {"config": {fqn: entry}}; AOTInductor's weights_config.json has no "config": nothing to check
                entries = [(fqn, dict(entry)) for fqn, entry in json.loads(z.read(name)).get("config", {}).items()]
            except (ValueError, TypeError, AttributeError):  # bad JSON, or not the layout torch writes
                raise RobustEvalError(f"{path} is a damaged torch.export archive (its {name.rsplit('/', 1)[-1]} is "
                                      "unreadable); save it again with torch.export.save") from None
            for fqn, entry in entries:
                pickled = entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                    ("weight_", "tensor_"))
                if pickled:
                    raise RobustEvalError(
                        f"refused to load {path}: its '{fqn}' is stored as a pickled object (a tensor subclass or "
                        "custom object) that loads only by running pickled code; export plain tensors, or ship "
                        "ONNX or TorchScript")
        elif ("/sample_inputs/" in name and name.endswith(".pt")) or name.endswith(LEGACY_EXPORT_PICKLES):
            # torch < 2.7 writes the weights, constants and inputs as torch.save pickles and loads them with
            # weights_only=False: they are read with weights_only=True first, so only plain data gets through
            import io

            data = z.read(name)
            try:
                if data:
                    torch.load(io.BytesIO(data), weights_only=True)
            except Exception:  # noqa: BLE001 - anything weights_only refuses
                what = "sample inputs" if "/sample_inputs/" in name or "example_inputs" in name else "weights"
                raise RobustEvalError(f"refused to load {path}: its {what} hold pickled objects; "
                                      "export with plain tensors, or ship ONNX or TorchScript") from None


def _shape(node: Any) -> list[int | None]:
    val = node.meta.get("val")
    shape = getattr(val, "shape", None)
    if shape is None:
        return []
    return [int(d) if isinstance(d, int) else None for d in shape]


@register_format
class ExportFormat(FileFormat):
    name = "torch.export"
    description = "torch.export program (.pt2, torch.export.save); input shape and batch read from the graph"
    order = 25

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        return names is not None and any(n.endswith(("/archive_format", "/models/model.json",
                                                      "serialized_exported_program.json")) for n in names)

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        with zipfile.ZipFile(path) as z:
            _check_no_pickles(path, z, names or [])
        try:
            program = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001 - deserialisation errors of every kind
            first = first_line(exc)
            raise RobustEvalError(f"{path} is a damaged torch.export archive ({first[:160]}); "
                                  "save it again with torch.export.save") from None
        user_inputs = list(program.graph_signature.user_inputs)
        nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
        if len(user_inputs) != 1:
            raise RobustEvalError(f"{path} takes {len(user_inputs)} inputs; export the classifier with one "
                                  "N x C x H x W image input")
        shape = _shape(nodes[user_inputs[0]])
        if len(shape) != 4:
            raise RobustEvalError(f"{path} takes input of rank {len(shape)}; robust-eval feeds N x C x H x W "
                                  "images: export the model with an image input")
        batch, c, h, w = shape
        values: dict[str, Any] = {}
        if c in (1, 3):
            values["channels"] = c
        if h and w:
            values["input_size"] = (h, w)
        output = next(n for n in program.graph.nodes if n.op == "output")
        outs = output.args[0] if output.args else ()
        out_shape = _shape(outs[0]) if outs and hasattr(outs[0], "meta") else []
        return FileInfo(self.name, InputContract.from_mapping(values, str(path)),
                        num_classes=out_shape[-1] if len(out_shape) == 2 else None, fixed_batch=batch,
                        meta={"program": program})

    def load(self, request: LoadRequest) -> LoadedModel:
        module = Exported(request.info.meta["program"].module())
        return LoadedModel(model=module, core=module, format=self.name)
