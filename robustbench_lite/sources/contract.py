"""A model's input contract, and the adapter that lets any model take the suites' [0,1] images.

Every suite feeds float images in [0,1], NCHW, at the dataset's size and channels, and reads
logits in the dataset's class order. A shipped model often expects something else: 224 px RGB,
ImageNet mean/std, its own class order. :class:`InputContract` says what the model expects (read
from the file where the format carries it, a JSON sidecar beside the file, or flags), and
:class:`Adapter` puts the conversion *inside* the model (channels, resize, normalise, reorder the
logits), so attacks and corruptions still act on the real pixels and eps stays in pixel units.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.options import Options, comma_list, int_in, option
from robustbench_lite.pixels import LUMA


def _size(value: Any) -> tuple[int, int]:
    """``224``, ``"224"``, ``"224x192"``, ``[224, 192]`` -> (H, W)."""
    parts: Any = value
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    try:
        sides = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        sides = ()
    if len(sides) == 1:
        sides = (sides[0], sides[0])
    if len(sides) != 2 or min(sides) < 1:
        raise RobustEvalError(f"--input-size must be SIDE or HxW in pixels, got {value!r}; e.g. --input-size 224")
    return sides  # type: ignore[return-value]


def _floats(flag: str) -> Any:
    def parse(value: Any) -> tuple[float, ...]:
        if (isinstance(value, str) and value.strip().lower() == "none") or (isinstance(value, (tuple, list))
                                                                             and not value):
            return ()  # 'none', or already parsed as none
        try:
            numbers = tuple(float(v) for v in comma_list(value, flag, "0.485,0.456,0.406", unique=False))
        except ValueError:
            raise RobustEvalError(f"{flag} takes numbers separated by commas (or 'none'), got {value!r}; "
                                  f"e.g. {flag} 0.485,0.456,0.406") from None
        if len(numbers) not in (1, 3):
            raise RobustEvalError(f"{flag} takes 1 or 3 numbers (one per channel), got {len(numbers)}: {value!r}")
        return numbers

    return parse


def _classes(value: Any) -> tuple[str, ...]:
    """``a,b,c``, a list, or a file: one name per line or a JSON list."""
    if isinstance(value, str) and "," not in value and Path(value).is_file():
        text = Path(value).read_text()
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError:
            loaded = [line.strip() for line in text.splitlines() if line.strip()]
        if not isinstance(loaded, list) or not loaded:
            raise RobustEvalError(f"--classes file {value} must hold one class name per line or a JSON list")
        return tuple(str(c) for c in loaded)
    names = comma_list(value, "--classes", "t-shirt,trouser,pullover", unique=False)
    if len(set(names)) != len(names):
        raise RobustEvalError(f"--classes has repeated names: {', '.join(names)}; each class once, in output order")
    return names


@dataclass(frozen=True)
class InputContract(Options):
    """What a model expects; ``None``: unknown (the dataset's size/channels, no normalisation)."""

    owner: ClassVar[str] = "model input"

    input_size: tuple[int, int] | None = option(
        "--input-size", "image size the model takes, SIDE or HxW (default: the file's, else the dataset's); "
        "images are resized to it inside the model", example="224", parse=_size, metavar="HxW",
        fmt=lambda v: f"{v[0]}x{v[1]}")
    channels: int | None = option(
        "--channels", "channels the model takes, 1 or 3 (default: the file's, else the dataset's)", example="3",
        parse=int_in("--channels", 1, 3), metavar="C")
    mean: tuple[float, ...] | None = option(
        "--mean", "per-channel mean the model was trained with, or 'none' (default: the file's, else none)",
        example="0.485,0.456,0.406", parse=_floats("--mean"), metavar="M[,M,M]")
    std: tuple[float, ...] | None = option(
        "--std", "per-channel std the model was trained with (default: the file's, else none)",
        example="0.229,0.224,0.225", parse=_floats("--std"), metavar="S[,S,S]")
    classes: tuple[str, ...] | None = option(
        "--classes", "the model's class names in output order: a,b,c or a file, one per line (default: the "
        "file's, else the dataset's order)", example="a,b", parse=_classes, metavar="FILE|a,b,c")

    def validate(self) -> None:
        if self.channels == 2:
            raise RobustEvalError("--channels must be 1 (grey) or 3 (RGB), got 2")
        if (self.mean is None) != (self.std is None) and not (self.mean == () or self.std == ()):
            missing = "--std" if self.std is None else "--mean"
            raise RobustEvalError(f"--mean and --std go together; pass {missing} too (or --mean none)")
        if self.std and min(self.std) <= 0:
            raise RobustEvalError(f"--std values must be positive, got {','.join(map(str, self.std))}")
        if self.mean and self.std and len(self.mean) != len(self.std):
            raise RobustEvalError(f"--mean has {len(self.mean)} values but --std has {len(self.std)}; give both "
                                  "one value per channel")
        n = len(self.mean or ()) if self.mean else 0
        if self.channels and n == 3 and self.channels != 3:
            raise RobustEvalError(f"--mean has 3 values but the model takes {self.channels} channel(s)")

    @classmethod
    def read(cls, values: Any, where: str) -> InputContract:
        """The contract a file or sidecar states; a bad value is one line that names where it came from.

        (The option parsers name the flag, ``--mean``, which the user did not pass here.)
        """
        try:
            return cls.from_mapping(values, where)
        except RobustEvalError as exc:
            if where in str(exc):
                raise
            raise RobustEvalError(f"{where}: {exc}") from None

    @property
    def normalises(self) -> bool:
        return bool(self.mean) and bool(self.std)

    def over(self, *lower: InputContract) -> InputContract:
        """This contract, its unknown fields filled from ``lower`` ones in order (flags over sidecar over file)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for other in lower:
            for name, value in values.items():
                if value is None:
                    values[name] = getattr(other, name)
        return replace(self, **values)

    def describe(self) -> dict[str, Any]:
        return {"input_size": list(self.input_size) if self.input_size else None, "channels": self.channels,
                "mean": list(self.mean) if self.mean is not None else None,
                "std": list(self.std) if self.std is not None else None,
                "classes": list(self.classes) if self.classes else None}


def sidecar_path(path: str | Path) -> Path | None:
    """``model.onnx`` -> ``model.json`` beside it, if one exists."""
    path = Path(path)
    candidate = path.with_suffix(".json")
    return candidate if candidate != path and candidate.is_file() else None


def read_sidecar(path: str | Path) -> tuple[InputContract, dict[str, Any]]:
    """The contract in the JSON sidecar beside ``path`` and its other keys (``model``); empty when none."""
    side = sidecar_path(path)
    if side is None:
        return InputContract(), {}
    try:
        data = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobustEvalError(f"model sidecar {side} is not valid JSON ({exc}); fix it or remove it") from None
    if isinstance(data, dict) and "schema_version" in data and "suites" in data:
        return InputContract(), {}  # a robust-eval results file written beside the model, not a sidecar
    if not isinstance(data, dict):
        raise RobustEvalError(f"model sidecar {side} must be a JSON object like {{\"input_size\": 224, "
                              "\"mean\": [0.485, 0.456, 0.406], ...}}")
    extra = {k: data.pop(k) for k in ("model", "format", "name", "description") if k in data}
    return InputContract.read(data, f"model sidecar {side}"), extra


class Adapter(nn.Module):
    """[0,1] images at the dataset's channels and size in, logits in the dataset's class order out.

    Args:
        core: the model as shipped (takes what ``contract`` says).
        channels: channels the core takes (None: leave the images' as they are).
        size: (H, W) the core takes (None: leave the size).
        mean, std: normalisation the core expects (None: none).
        order: for each dataset class, the index of the core's output for it (None: same order).
    """

    def __init__(self, core: nn.Module, channels: int | None, size: tuple[int, int] | None,
                 mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                 order: list[int] | None = None) -> None:
        super().__init__()
        self.core = core
        self.channels = channels
        self.size = size
        self.normalise = bool(mean) and bool(std)
        self.register_buffer("mean", torch.tensor(mean or (0.0,), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or (1.0,), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("order", torch.tensor(order if order is not None else [], dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.channels is not None and c != self.channels:
            if c == 1 and self.channels == 3:
                x = x.expand(-1, 3, -1, -1)
            else:  # 3 -> 1
                w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
                x = (x * w).sum(dim=1, keepdim=True)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrink)
        if self.normalise:
            x = (x - self.mean) / self.std
        out = self.core(x)
        return out.index_select(1, self.order) if self.order.numel() else out


def class_order(model_classes: tuple[str, ...] | None, dataset_classes: tuple[str, ...], what: str) -> list[int] | None:
    """For each dataset class the model's output index; None when the orders agree (or the model names none).

    A model whose classes are the dataset's in another order is adapted (its logits reordered);
    other names are an error that shows both sides.
    """
    if not model_classes or tuple(model_classes) == tuple(dataset_classes):
        return None
    if len(model_classes) != len(dataset_classes) or set(model_classes) != set(dataset_classes):
        ours = ", ".join(model_classes[:6]) + (", ..." if len(model_classes) > 6 else "")
        theirs = ", ".join(dataset_classes[:6]) + (", ..." if len(dataset_classes) > 6 else "")
        raise RobustEvalError(f"{what} predicts {len(model_classes)} classes ({ours}) but the dataset has "
                              f"{len(dataset_classes)} ({theirs}); evaluate it on the data it was trained for, or "
                              "pass --classes with its class names in output order")
    return [list(model_classes).index(c) for c in dataset_classes]


def adapt(core: nn.Module, contract: InputContract, channels: int, size: tuple[int, int],
          classes: tuple[str, ...], what: str) -> tuple[nn.Module, list[str]]:
    """Wrap ``core`` in an :class:`Adapter` for a dataset; returns it and the adaptations applied, in words.

    Args:
        core: the model as shipped.
        contract: what it expects (fields left None: the dataset's channels and size, no normalisation).
        channels, size, classes: the dataset's.
        what: the model, for messages ("model.onnx").
    """
    done: list[str] = []
    want_c = contract.channels
    if want_c is not None and want_c != channels:
        done.append("grey -> RGB (the channel repeated 3 times)" if channels == 1
                    else "RGB -> grey (ITU-R 601 luma)")
    want_size = tuple(contract.input_size) if contract.input_size else None
    if want_size is not None and want_size != tuple(size):
        done.append(f"resized {size[0]}x{size[1]} -> {want_size[0]}x{want_size[1]} (bilinear"
                    + (", antialiased)" if want_size[0] < size[0] or want_size[1] < size[1] else ")"))
    if contract.normalises:
        fmt = ", ".join
        done.append(f"normalised with mean ({fmt(f'{v:g}' for v in contract.mean or ())}) "
                    f"std ({fmt(f'{v:g}' for v in contract.std or ())})")
    order = class_order(contract.classes, classes, what)
    if order is not None:
        done.append("logits reordered from the model's class order to the dataset's")
    if not done:
        return core, done
    return Adapter(core, want_c if want_c != channels else None, want_size if want_size != tuple(size) else None,
                   contract.mean if contract.normalises else None, contract.std if contract.normalises else None,
                   order), done
