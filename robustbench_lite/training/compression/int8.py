"""int8: post-training static quantization to an ONNX graph run by ONNX Runtime.

The parent is exported to ONNX (the TorchScript-based exporter, opset 17, dynamic batch), then
quantized by ONNX Runtime's ``quantize_static``: QDQ format (QuantizeLinear/DequantizeLinear
pairs around each quantized operator, the format ONNX Runtime's CPU kernels fuse into integer
convolutions and matrix products), int8 weights per output channel, int8 activations with ranges
calibrated on training images (never test images) by min-max, entropy or percentile.

Weights use 7 of their 8 bits (``reduce_range``): on x86 CPUs without VNNI (AVX2 only, many
laptops, servers and the AMD EPYC this was found on) ONNX Runtime multiplies int8 pairs with
``VPMADDUBSW``, whose 16-bit sums saturate with full-range weights; a test artefact lost 7.5
points of accuracy there, under 3 on the VNNI CPUs it ran on before. With 7-bit weights no sum
saturates, so the file behaves the same on every CPU it ships to (ONNX Runtime's quantization
guide gives this remedy); the cost is one bit of weight precision, within the tests' tolerance.

Why ONNX Runtime and not ``torch.ao`` / PT2E: the artefact is what a phone or camera ships (an
ONNX file and an integer runtime), it runs with integer kernels on these CPUs (VNNI), and
``torch.ao``'s eager quantization needs the network rewritten with quant stubs and fused modules
per architecture; PT2E's x86 quantizer produces a PyTorch program, not a deployable file.

The graph keeps the parent's input handling inside (channel adapter, resize, normalisation), so
it takes [0,1] images like the parent; its ``metadata_props`` say so (``mean``/``std`` none, the
class names) and carry the provenance record.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustbench_lite.errors import RobustEvalError, first_line
from robustbench_lite.training.compression.base import ARTEFACT_KEY, Log, Method, register_method

#: The exporter's opset: QDQ per-channel needs >= 13; 17 is the legacy exporter's best supported.
OPSET = 17
#: Calibration images per ONNX Runtime run (memory stays bounded for entropy and percentile).
CALIBRATION_BATCH = 64


def _ort_quantization() -> Any:
    try:
        import onnx  # noqa: F401
        from onnxruntime import quantization
    except ImportError:
        raise RobustEvalError("--method int8 writes an ONNX graph quantized by ONNX Runtime; it needs the optional "
                              "packages onnx and onnxruntime: pip install 'robustbench-lite[onnx]'") from None
    return quantization


def export_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    """``model`` as an ONNX graph with a dynamic batch: input ``images`` (N, C, H, W), output ``logits``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(model.eval(), (sample,), str(path), input_names=["images"], output_names=["logits"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "n"}, "logits": {0: "n"}})


def contract_metadata(meta: dict[str, Any], sample: torch.Tensor) -> dict[str, Any]:
    """What the evaluator reads from the graph: [0,1] images in (the graph normalises), the class names."""
    out: dict[str, Any] = {"mean": "none", "std": "none", "channels": int(sample.shape[1]),
                           "input_size": [int(sample.shape[2]), int(sample.shape[3])]}
    if meta.get("classes"):
        out["classes"] = list(meta["classes"])
    return out


def set_metadata(model: Any, values: dict[str, str]) -> None:
    """Replace the ``metadata_props`` entries named in ``values``."""
    keep = [(p.key, p.value) for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    for key, value in [*keep, *values.items()]:
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a tensor of images, in batches."""

    def __init__(self, images: torch.Tensor, name: str) -> None:
        self.batches = iter([np.ascontiguousarray(images[i : i + CALIBRATION_BATCH].numpy(), dtype=np.float32)
                             for i in range(0, len(images), CALIBRATION_BATCH)])
        self.name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


@register_method
class Int8(Method):
    name = "int8"
    description = ("post-training static int8 quantization to an ONNX graph run by ONNX Runtime (QDQ, per-channel "
                   "weights, activations calibrated on training images)")
    suffix = ".onnx"
    reads = ("calibration", "calibration_method")
    needs_calibration = True

    def check(self) -> None:
        _ort_quantization()

    def make(self, parent: torch.nn.Module, meta: dict[str, Any], settings: dict[str, Any],
             calibration: torch.Tensor | None, out: Path, record: dict[str, Any], log: Log,
             job: Any = None) -> dict[str, Any]:
        import onnx

        from robustbench_lite.files import atomic_write

        q = _ort_quantization()
        assert calibration is not None
        methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                   "percentile": q.CalibrationMethod.Percentile}
        with tempfile.TemporaryDirectory(prefix="robust-eval-int8-") as tmp:
            float_path, pre_path, int8_path = Path(tmp) / "float.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
            try:
                export_onnx(parent, calibration[:2], float_path)
            except Exception as exc:  # noqa: BLE001 - the exporter raises many types
                raise RobustEvalError(f"--method int8: the {meta.get('model')} model cannot be exported to ONNX "
                                      f"({first_line(exc)}); compress it with --method fp16 or bf16") from None
            try:  # shape inference and graph clean-up ONNX Runtime recommends before quantizing
                q.shape_inference.quant_pre_process(str(float_path), str(pre_path), skip_symbolic_shape=True)
                source = pre_path
            except Exception:  # noqa: BLE001 - optional: quantize the exported graph as it is
                source = float_path
            log(f"int8: calibrating on {len(calibration)} training images ({settings['calibration_method']})")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    q.quantize_static(str(source), str(int8_path), _Reader(calibration, "images"),
                                      quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=True,
                                      activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                                      calibrate_method=methods[settings["calibration_method"]])
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's quantizer raises many types
                raise RobustEvalError(f"--method int8: ONNX Runtime cannot quantize the {meta.get('model')} graph "
                                      f"({first_line(exc)}); try --calibration-method minmax, or --method fp16 / "
                                      "bf16") from None
            model = onnx.load(str(int8_path))
            quantized, left = _op_counts(model)
            if not quantized:
                raise RobustEvalError(f"--method int8: ONNX Runtime quantized no operator of the {meta.get('model')} "
                                      "graph; nothing would be int8: use --method fp16 or bf16")
            set_metadata(model, {"robustbench_lite": json.dumps(contract_metadata(meta, calibration)),
                                 ARTEFACT_KEY: json.dumps(record)})
            _check_runs(model, calibration[:8])
            atomic_write(out, lambda f: f.write(model.SerializeToString()), binary=True)
            float_bytes = float_path.stat().st_size
        return {"float_onnx_bytes": float_bytes, "quantized_ops": quantized, "float_ops": left, "weight_bits": 7}


def _op_counts(model: Any) -> tuple[dict[str, int], dict[str, int]]:
    """Operators that compute on int8 (an input comes from a DequantizeLinear) and those left in float.

    Shape arithmetic (nodes fed only by Shape, constants and initialisers) and the Q/DQ pairs
    themselves are not counted.
    """
    graph = model.graph
    static = {i.name for i in graph.initializer} | {""}
    static |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized: dict[str, int] = {}
    left: dict[str, int] = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Shape" or all(i in static for i in node.input):
            static.update(node.output)
            continue
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        counts = quantized if any(i in dequantized for i in node.input) else left
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(quantized.items())), dict(sorted(left.items()))


def _check_runs(model: Any, images: torch.Tensor) -> None:
    """The quantized graph loads in ONNX Runtime and gives finite logits, before the file is written."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (logits,) = session.run(None, {"images": np.ascontiguousarray(images.numpy(), dtype=np.float32)})
    except Exception as exc:  # noqa: BLE001
        raise RobustEvalError(f"--method int8: ONNX Runtime cannot run the quantized graph ({first_line(exc)}); "
                              "use --method fp16 or bf16") from None
    if not np.isfinite(logits).all():
        raise RobustEvalError("--method int8: the quantized graph gives non-finite logits on calibration images; "
                              "try --calibration-method percentile")

