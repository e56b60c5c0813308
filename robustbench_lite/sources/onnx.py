"""ONNX files, run with ONNX Runtime (optional extra ``onnx``: onnx + onnxruntime).

The graph is read with ``onnx`` (protobuf: data, no code): its image input's shape gives the input
contract (channels, size, a fixed batch), its output the class count, and ``metadata_props`` may
carry the rest (``mean``, ``std``, ``classes`` / ``labels``, ``input_size``, as JSON or comma text),
and an artefact of ``robust-eval compress`` its provenance (``robustbench_lite.artefact``).
The model runs in an ONNX Runtime session (CPU provider; CUDA when the run's device is a GPU and
the provider is installed). ONNX Runtime computes no input gradients: attacks need ``--surrogate``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robustbench_lite.errors import RobustEvalError, first_line
from robustbench_lite.sources.base import FileFormat, FileInfo, LoadedModel, LoadRequest, register_format
from robustbench_lite.sources.contract import InputContract

INSTALL = "pip install 'robustbench-lite[onnx]'"
#: metadata_props key of a compressed artefact's provenance (robust-eval compress; JSON)
ARTEFACT_KEY = "robustbench_lite.artefact"
#: metadata_props keys read as the input contract (``labels`` / ``class_names`` name the classes)
META_KEYS = {"input_size": "input_size", "channels": "channels", "mean": "mean", "std": "std", "classes": "classes",
             "labels": "classes", "class_names": "classes"}


def _import(module: str, path: Path) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RobustEvalError(f"{path} is an ONNX model; running it needs the optional packages onnx and "
                              f"onnxruntime: {INSTALL}") from None


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in shape.dim]


def _meta_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class OnnxModule(nn.Module):
    """An ONNX Runtime session as a module: float32 NCHW tensor in, logits tensor out (no gradients)."""

    #: Its computation happens in ONNX Runtime: PyTorch cannot trace, freeze or differentiate it.
    runs_outside_torch = True

    def __init__(self, path: Path, device: str, params: int, weights_bytes: int) -> None:
        super().__init__()
        ort = _import("onnxruntime", path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same threads PyTorch models get
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = first_line(exc)
            raise RobustEvalError(f"ONNX Runtime cannot load {path} ({first}); re-export it (torch.onnx.export) "
                                  "or check it with onnx.checker.check_model") from None
        self.path = path
        self.input_name = self.session.get_inputs()[0].name
        self.provider = self.session.get_providers()[0]
        self.params = params
        self.weights_bytes = weights_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            (out,) = self.session.run(None, {self.input_name: array})[:1]
        except Exception as exc:  # noqa: BLE001 - InvalidArgument & co. come from the pybind layer
            first = first_line(exc)
            raise RobustEvalError(f"{self.path.name} rejected input of shape {tuple(array.shape)} ({first}); pass "
                                  "--input-size / --channels for the shape its graph takes") from None
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def efficiency_facts(self) -> dict[str, Any]:
        """What the efficiency suite cannot read from PyTorch: the graph's weights, counted from the file."""
        return {"params": self.params, "trainable_params": 0, "size_mb": self.weights_bytes / 1e6, "flops": None,
                "runtime": f"onnxruntime {self.provider}"}


@register_format
class OnnxFormat(FileFormat):
    name = "onnx"
    description = "ONNX graph (.onnx), run with ONNX Runtime; needs the optional extra onnx"
    order = 20
    extra = "onnx"
    differentiable = False

    def sniff(self, path: Path, head: bytes, names: list[str] | None) -> bool:
        # ModelProto's first field is ir_version (field 1, varint: byte 0x08, then a small number).
        return names is None and len(head) > 2 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in (
            0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42)

    def _model(self, path: Path) -> Any:
        onnx = _import("onnx", path)
        _import("onnxruntime", path)
        try:
            return onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
            raise RobustEvalError(f"{path} is damaged or not an ONNX model ({type(exc).__name__}); "
                                  "export it again with torch.onnx.export") from None

    def inspect(self, path: Path, names: list[str] | None) -> FileInfo:
        model = self._model(path)
        graph = model.graph
        initialisers = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initialisers]
        if len(inputs) != 1 or not graph.output:
            raise RobustEvalError(f"{path} has {len(inputs)} inputs; robust-eval runs image classifiers with one "
                                  "image input and logits out: export the model with a single N x C x H x W input")
        dims = _dims(inputs[0])
        if len(dims) != 4:
            raise RobustEvalError(
                f"{path} takes input of shape ({', '.join(map(str, dims))}), rank {len(dims)}; robust-eval feeds "
                "N x C x H x W images: export the model with an image input (flatten inside the model)")
        batch, c, h, w = dims
        values: dict[str, Any] = {}
        artefact = None
        for prop in model.metadata_props:
            if prop.key == ARTEFACT_KEY:
                artefact = _meta_value(prop.value) if isinstance(_meta_value(prop.value), dict) else None
            elif prop.key in META_KEYS:
                values[META_KEYS[prop.key]] = _meta_value(prop.value)
            elif prop.key == "robustbench_lite" and isinstance(_meta_value(prop.value), dict):
                values.update(_meta_value(prop.value))
        if isinstance(c, int) and c > 0:
            values["channels"] = c
        if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
            values["input_size"] = (h, w)
        if values.get("channels") not in (None, 1, 3):
            raise RobustEvalError(f"{path} takes {values['channels']}-channel images; robust-eval evaluates grey (1) "
                                  "or RGB (3) image classifiers")
        contract = InputContract.read(values, f"{path}'s metadata")
        out = _dims(graph.output[0])
        params = sum(math.prod(i.dims) for i in graph.initializer)
        weights = sum(len(i.raw_data) or math.prod(i.dims) * 4 for i in graph.initializer)
        return FileInfo(self.name, contract, num_classes=out[-1] if len(out) == 2 and isinstance(out[-1], int)
                        and out[-1] > 0 else None, fixed_batch=batch if isinstance(batch, int) and batch > 0 else None,
                        meta={"params": params, "weights_bytes": weights, "artefact": artefact,
                              "opset": max((o.version for o in model.opset_import), default=None)})

    def load(self, request: LoadRequest) -> LoadedModel:
        info = request.info
        core = OnnxModule(request.path, request.device, info.meta["params"], info.meta["weights_bytes"])
        artefact = info.meta.get("artefact")
        return LoadedModel(model=core, core=core, format=self.name, runtime=f"onnxruntime ({core.provider})",
                           differentiable=False, meta={"artefact": artefact} if artefact else {})
