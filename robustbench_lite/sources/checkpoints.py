"""The project's checkpoint format: a dict of tensors and plain metadata, loaded with ``weights_only=True``.

``{"format": "robustbench_lite.checkpoint", "version", "meta", "state_dict"}``: ``meta`` holds the
architecture (:func:`architecture_meta`: model name, classes, channels, input size, mean/std) and
anything plain (dataset, class names, recipe, seed...), so a checkpoint rebuilds its network
without any code from the file.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import torch

from robustbench_lite import __version__
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.models import PRECISIONS, NormalizedModel
from robustbench_lite.options import is_int
from robustbench_lite.sources.architectures import build

CHECKPOINT_FORMAT = "robustbench_lite.checkpoint"
CHECKPOINT_VERSION = 1


def architecture_meta(model: NormalizedModel, name: str, num_classes: int, input_size: int,
                      pretrained: bool) -> dict[str, Any]:
    return {
        "model": name,
        "num_classes": num_classes,
        "in_channels": model.in_channels,
        "input_size": input_size,
        "pretrained": pretrained,
        "mean": [float(v) for v in model.mean.flatten()],
        "std": [float(v) for v in model.std.flatten()],
    }


def save_checkpoint(path: str | Path, model: NormalizedModel, meta: dict[str, Any]) -> Path:
    """Write ``{"format", "version", "meta", "state_dict"}`` atomically (temp file + rename).

    ``meta`` must hold the architecture keys (:func:`architecture_meta`) and may hold anything
    plain (dataset, classes, recipe, seed, clean accuracy...).
    """
    import json

    from robustbench_lite.data import cache_home
    from robustbench_lite.files import Rescued, write_or_rescue
    from robustbench_lite.results import plain

    path = Path(path)
    meta = {**meta, "robustbench_lite_version": __version__, "torch_version": str(torch.__version__)}
    # A JSON round trip guarantees the metadata is plain data that weights_only=True accepts.
    meta = json.loads(json.dumps(plain(meta)))
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()  # serialised first: a write that fails is an OSError, never a half-written payload
    torch.save(payload, buffer)
    try:
        write_or_rescue(path, buffer.getvalue(), [cache_home() / "rescued", Path(tempfile.gettempdir())])
    except Rescued as r:
        raise RobustEvalError(
            f"could not write the checkpoint {path} ({_reason(r.error)}); nothing is lost: it was written to "
            f"{r.rescued} instead; move it where it belongs (mv {r.rescued} {path})"
        ) from None
    except OSError as exc:
        raise RobustEvalError(
            f"could not write the checkpoint {path} ({_reason(exc)}), nor a copy under {cache_home() / 'rescued'} "
            f"or {tempfile.gettempdir()}; free some space or fix the folder and run again"
        ) from None
    return path


def _reason(exc: OSError) -> str:
    return f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)


def load_data(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain data only; anything else is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise RobustEvalError(f"checkpoint {path} does not exist; pass a file written by 'robust-eval train'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad checkpoint
        text = str(exc)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            raise RobustEvalError(
                f"refused to load checkpoint {path}: it contains pickled Python objects beyond tensors and plain "
                "data (e.g. a whole model saved with torch.save(model)), which could run code; save "
                "model.state_dict() and pass --model, or ship TorchScript, torch.export or ONNX"
            ) from None
        raise RobustEvalError(
            f"checkpoint {path} is damaged or not a PyTorch file ({type(exc).__name__}); re-create it with "
            "'robust-eval train' or torch.save(model.state_dict())"
        ) from None


def check_payload(path: str | Path, payload: Any) -> dict[str, Any]:
    """``payload`` if it is a robust-eval checkpoint this version reads, else a one-line error."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT or "state_dict" not in payload:
        raise RobustEvalError(
            f"checkpoint {path} is not a robustbench_lite checkpoint (no '{CHECKPOINT_FORMAT}' header); "
            "re-create it with 'robust-eval train', or pass --model to load it as a state_dict"
        )
    version = payload.get("version", 0)
    if not is_int(version):
        raise RobustEvalError(f"checkpoint {path} is damaged: its format version is {version!r}, not an integer; "
                              "re-create it with 'robust-eval train'")
    if version > CHECKPOINT_VERSION:
        raise RobustEvalError(
            f"checkpoint {path} has format version {payload['version']}, newer than this robustbench_lite "
            f"supports ({CHECKPOINT_VERSION}); upgrade robustbench-lite"
        )
    check_meta(path, payload.get("meta"))
    if not isinstance(payload["state_dict"], dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["state_dict"].items()):
        raise RobustEvalError(f"checkpoint {path} is damaged: its state_dict is not a mapping of names to tensors; "
                              "re-create it with 'robust-eval train'")
    return payload


def _numbers(value: Any, n: int, positive: bool = False) -> bool:
    return (isinstance(value, list) and len(value) == n
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and (v > 0 or not positive)
                    for v in value))


#: The metadata a checkpoint's network is rebuilt from: key -> (check, what it must be).
META_SCHEMA: dict[str, tuple[Any, str]] = {
    "model": (lambda v, m: isinstance(v, str) and bool(v), "a model name (see 'robust-eval list models')"),
    "num_classes": (lambda v, m: is_int(v, 2), "an integer >= 2"),
    "in_channels": (lambda v, m: is_int(v, 1), "an integer >= 1"),
    "input_size": (lambda v, m: is_int(v, 1), "an integer >= 1 (pixels)"),
    "mean": (lambda v, m: _numbers(v, m.get("in_channels")), "a list of one number per input channel"),
    "std": (lambda v, m: _numbers(v, m.get("in_channels"), positive=True),
            "a list of one positive number per input channel"),
}
#: Optional keys, checked when present.
META_OPTIONAL: dict[str, tuple[Any, str]] = {
    "classes": (lambda v, m: isinstance(v, list) and len(v) == m.get("num_classes") and all(isinstance(c, str)
                                                                                           for c in v),
                "a list of num_classes class names"),
    "dataset": (lambda v, m: isinstance(v, str) and bool(v), "a dataset name"),
    "shapes": (lambda v, m: isinstance(v, dict), "a mapping of layer names to shapes"),
    "precision": (lambda v, m: isinstance(v, str), "one of " + ", ".join(PRECISIONS)),
}


def check_meta(path: str | Path, meta: Any) -> dict[str, Any]:
    """A checkpoint's metadata against :data:`META_SCHEMA`: the first problem is one line naming the key."""
    fix = "re-create it with 'robust-eval train' (a hand-edited checkpoint must keep these keys and types)"
    if not isinstance(meta, dict):
        raise RobustEvalError(f"checkpoint {path} is damaged: its metadata is a {type(meta).__name__}, not a mapping; "
                              f"{fix}")
    for key, (ok, what) in META_SCHEMA.items():
        if key not in meta:
            raise RobustEvalError(f"checkpoint {path} is damaged: its metadata has no '{key}' ({what}); {fix}")
        if not ok(meta[key], meta):
            raise RobustEvalError(f"checkpoint {path} is damaged: metadata '{key}' should be {what}, got "
                                  f"{meta[key]!r}; {fix}")
    for key, (ok, what) in META_OPTIONAL.items():
        if key in meta and meta[key] is not None and not ok(meta[key], meta):
            raise RobustEvalError(f"checkpoint {path} is damaged: metadata '{key}' should be {what}, got "
                                  f"{meta[key]!r}; {fix}")
    return meta


def check_input_size(path: str | Path, meta: dict[str, Any], dataset: str | None, size: tuple[int, int]) -> None:
    """``robust-eval train`` records the data's larger side as ``input_size`` (it picks the network variant:
    small-input stems up to 64 px); another value on the same dataset means edited metadata, which would
    build another network around the same weights."""
    if dataset is not None and meta.get("dataset") == dataset and meta["input_size"] != max(size):
        raise RobustEvalError(
            f"checkpoint {path} says input_size {meta['input_size']}, but it was trained on {dataset}, whose "
            f"images are {max(size)} px (training records the data's size, which picks the network variant): its "
            "metadata was changed; re-create it with 'robust-eval train'")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a robust-eval checkpoint file as data only; anything else is a clear :class:`RobustEvalError`."""
    return check_payload(path, load_data(path))


def load_checkpoint(
    path: str | Path, model: str | None = None, num_classes: int | None = None,
    payload: dict[str, Any] | None = None,
) -> tuple[NormalizedModel, dict[str, Any]]:
    """Rebuild the model recorded in a checkpoint and load its weights.

    Args:
        path: checkpoint file.
        model: when given, the checkpoint must be for this model.
        num_classes: when given, the checkpoint must have this many classes.
        payload: the file's contents when the caller has already read it (:func:`read_checkpoint`),
            so a run reads its checkpoint once.

    Returns:
        The model in eval mode and the checkpoint's metadata.
    """
    payload = payload if payload is not None else read_checkpoint(path)
    meta = payload["meta"]
    if model is not None and meta.get("model") != model:
        raise RobustEvalError(
            f"checkpoint {path} is for model '{meta.get('model')}', not '{model}'; pass --model "
            f"{meta.get('model')} or a checkpoint trained for {model}"
        )
    if num_classes is not None and meta.get("num_classes") != num_classes:
        raise RobustEvalError(
            f"checkpoint {path} has {meta.get('num_classes')} classes but the dataset has {num_classes}; "
            f"evaluate it on the dataset it was trained on ({meta.get('dataset')})"
        )
    net = build(
        meta["model"], meta["num_classes"], meta["in_channels"], meta["input_size"], pretrained=False,
        mean=tuple(meta["mean"]), std=tuple(meta["std"]),
    )
    precision = meta.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise RobustEvalError(f"checkpoint {path} says precision {precision!r}, which this robustbench_lite cannot "
                              f"run (valid: {', '.join(PRECISIONS)}); upgrade robustbench-lite")
    if meta.get("shapes"):  # a structurally pruned copy: its layers have fewer channels
        from robustbench_lite.models import resize_modules

        resize_modules(net, meta["shapes"])
    net = net.to(PRECISIONS[precision])  # a compressed copy keeps its precision (robust-eval compress)
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RobustEvalError(
            f"checkpoint {path} does not match the '{meta['model']}' architecture ({first}); "
            "re-create it with 'robust-eval train'"
        ) from None
    return net.eval(), meta
