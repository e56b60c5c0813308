"""The monitor's Python API: fit a reference profile, check new unlabelled images against it.

Example:
    >>> from robustbench_lite.monitoring import monitor_fit, monitor_check
    >>> profile = monitor_fit("model.pt", "fashion-mnist")          # labelled in-distribution images
    >>> profile.save("model.monitor.safetensors")
    >>> report = monitor_check("model.monitor.safetensors", "imagefolder:/data/new")  # the model from the profile
    >>> report["drift"], report["accuracy"]["atc"]["value"]

The model and data are resolved as :func:`robustbench_lite.api.evaluate` resolves them (a model
file of any format, an ``nn.Module``, an architecture's quick baseline; a dataset name, tensors, an
image folder). For ``check``, ``imagefolder:PATH`` may also be a folder of images without class
subfolders: unlabelled images, the usual case in the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from robustbench_lite import data as data_mod
from robustbench_lite.analysis import drift
from robustbench_lite.analysis import monitor as monitor_mod
from robustbench_lite.analysis.monitor import Profile
from robustbench_lite.api import _prepare_module, config_for, prepare, resolve_model
from robustbench_lite.config import DEFAULT_DATASET
from robustbench_lite.engine import resolve_device
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.files import sha256_file

Log = Callable[[str], None]


def adapted_model(model: Any, dataset: data_mod.ImageDataset, options: dict[str, Any], log: Log,
           ) -> tuple[torch.nn.Module, dict[str, Any], torch.device]:
    """The adapted model (eval mode) for ``dataset``, what a profile records of it, and the device."""
    config, module, _ = config_for(model, dataset, ["clean"], dict(options))
    config, info, _ = _prepare_module(config) if module is not None else prepare(config)
    device = resolve_device(config.device)
    loaded = resolve_model(config, dataset, device, log, info, module)
    path = loaded.path if loaded.path and Path(loaded.path).is_file() else None
    record = {"model": config.model, "model_file": str(Path(path).resolve()) if path else None,
              "model_sha256": sha256_file(path) if path else None}
    return loaded.model.eval(), record, device


def monitor_fit(model: Any = None, /, data: Any = None, *, images: int = monitor_mod.REFERENCE_IMAGES,
                components: int = monitor_mod.COMPONENTS, batch_size: int = 256, data_dir: str | None = None,
                log: Log | None = None, **options: Any) -> Profile:
    """The reference profile of a model on labelled in-distribution data (its first ``images`` images).

    Args:
        model: as for :func:`robustbench_lite.api.evaluate` (default: the quick baseline of the default model).
        data: a dataset name (default: the checkpoint's dataset, else the default one), tensors, a Dataset.
        images: reference images kept (default :data:`~robustbench_lite.analysis.monitor.REFERENCE_IMAGES`).
        **options: ``device``, ``seed``, ``model`` (architecture of a state_dict) and the input contract.
    """
    log = log or (lambda message: None)
    if images < 20:
        raise RobustEvalError(f"--images {images}: a profile needs at least 20 reference images")
    if isinstance(data, str) or data is None:
        name = data
        if name is None:  # the checkpoint's own dataset, as an evaluation picks it
            config, _, _ = config_for(model, None, ["clean"], dict(options))
            name = prepare(config)[0].dataset if config.checkpoint or config.model else None
        dataset = data_mod.as_dataset(name or DEFAULT_DATASET, data_dir=data_dir)
    else:
        dataset = data_mod.as_dataset(data)
    dataset = dataset.limit(images)
    net, record, device = adapted_model(model, dataset, options, log)
    log(f"monitor: profiling on {len(dataset)} labelled images of {dataset.name}")
    return monitor_mod.fit(net, dataset.float_images(), dataset.labels, list(dataset.classes),
                           components=components, batch_size=batch_size, device=device,
                           info={**record, "dataset": dataset.name})


def new_images(data: Any, shape: list[int], data_dir: str | None = None,
               limit: int | None = None, classes: list[str] | None = None,
               ) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """(float32 images, labels or None, a name) of the data to check.

    A folder without class folders is unlabelled; so is labelled data whose classes are not ``classes``
    (the profile's), whose labels would not mean the model's classes.
    """
    if isinstance(data, str):
        kind, arg = data_mod.parse_name(data)
        if kind == "imagefolder" and arg is not None:
            root = Path(arg).expanduser()
            if root.is_dir() and not any(p.is_dir() for p in root.iterdir()):
                from robustbench_lite.readers import unlabelled_folder

                raw = unlabelled_folder(root, (shape[1], shape[2]), "L" if shape[0] == 1 else "RGB")
                raw = raw[:limit] if limit else raw
                return raw.float().div(255), None, data
    dataset = data_mod.as_dataset(data, data_dir=data_dir).limit(limit)
    if len(dataset) == 0:
        raise RobustEvalError(f"{dataset.name} holds no images to check")
    same = classes is None or list(dataset.classes) == list(classes)
    return dataset.float_images(), dataset.labels if same else None, dataset.name


def monitor_check(profile: Profile | str | Path, data: Any, /, model: Any = None, *, alpha: float = drift.ALPHA,
                  permutations: int = drift.PERMUTATIONS, seed: int = 0, limit: int | None = None,
                  batch_size: int = 256, data_dir: str | None = None, log: Log | None = None,
                  **options: Any) -> dict[str, Any]:
    """Drift tests, estimated accuracy and class priors of new images against a profile.

    Args:
        profile: a :class:`Profile` or its file.
        data: the new images: a dataset name, ``imagefolder:PATH`` (with or without class folders), tensors.
        model: the profiled model (default: the file the profile records).
        alpha: the false-positive rate of the drift decision.
    """
    log = log or (lambda message: None)
    if not 0 < alpha < 1:  # before the profile and the model are read
        raise RobustEvalError(f"--alpha {alpha} must be a probability in (0, 1), e.g. 0.05")
    if permutations < 1:
        raise RobustEvalError(f"--permutations {permutations} must be a positive number, e.g. 500")
    if not isinstance(profile, Profile):
        profile = Profile.load(profile)
    if model is None:
        model = profile.meta.get("model_file")
        if not model or not Path(model).is_file():
            raise RobustEvalError(f"the profile's model file {model or '(none recorded)'} is not there; pass the "
                                  "model with --checkpoint")
        options.setdefault("model", profile.meta.get("model"))
    classes = list(profile.meta["classes"])
    images, labels, name = new_images(data, list(profile.meta["image_shape"]), data_dir, limit, classes)
    reference = data_mod.as_dataset((profile.tensors["fingerprint_images"],
                                     profile.tensors["labels"][:len(profile.tensors["fingerprint_images"])],
                                     tuple(classes)), name=str(profile.meta.get("dataset") or "reference"))
    net, _, device = adapted_model(model, reference, options, log)
    monitor_mod.validate(profile, net, images, alpha, device)  # user errors, before any work is said to start
    log(f"monitor: checking {len(images)} images of {name} against the profile ({profile.meta['images']} "
        "reference images)")
    report = monitor_mod.measure(profile, net, images, labels, alpha=alpha, permutations=permutations, seed=seed,
                               batch_size=batch_size, device=device)
    return {"data": name, "profile": {k: profile.meta.get(k) for k in ("model", "model_file", "model_sha256",
                                                                       "dataset", "features", "created")},
            **report}

