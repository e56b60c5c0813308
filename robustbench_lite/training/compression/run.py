"""``compress``: one parent checkpoint, one method, one artefact file with its provenance.

Everything a user can get wrong is checked before the parent is loaded or a baseline trained: the
method and its argument, the optional packages it needs, the output's suffix and that it is not
the parent. The artefact is written atomically; a failure leaves nothing behind.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.training.compression.base import CompressOptions, Job, Log, parse_spec, provenance


@dataclass(frozen=True)
class CompressConfig:
    """One compression run.

    Attributes:
        checkpoint: the parent, a robust-eval checkpoint; None: the quick baseline of
            ``model`` on ``dataset`` (trained and cached on first use).
        options: the method and its settings (:class:`CompressOptions`).
        output: the artefact path; None: beside the parent, ``<parent>.<method>[-<arg>]<suffix>``.
        seed: draws the calibration images, seeds fine-tuning and distillation.
        defences: what methods that train (prune, distill) train with, ``DefenceOptions``; None:
            the parent's own defences and settings.
    """

    checkpoint: str | None = None
    options: CompressOptions = field(default_factory=CompressOptions)
    output: str | None = None
    model: str = "shufflenetv2"
    dataset: str = "fashion-mnist"
    seed: int = 0
    data_dir: str | None = None
    show_progress: bool = True
    defences: Any = None


@dataclass
class Artefact:
    """What :func:`compress` wrote.

    Attributes:
        path: the artefact file.
        record: its provenance (stored inside it).
        facts: what the method reports (quantized operators, dtype...).
        bytes, parent_bytes: file sizes on disk.
        seconds: time taken.
    """

    path: Path
    record: dict[str, Any]
    facts: dict[str, Any]
    bytes: int
    parent_bytes: int
    seconds: float

    def summary(self) -> str:
        lines = [f"artefact: {self.path}",
                 f"method: {self.record['spec']} ({', '.join(f'{k}={v}' for k, v in self.record['settings'].items())})"
                 if self.record["settings"] else f"method: {self.record['spec']}",
                 f"parent: {self.record['parent']['path']} (sha256 {self.record['parent']['sha256'][:12]})",
                 f"size: {self.bytes / 1e6:.2f} MB, {self.bytes / self.parent_bytes:.2f}x the parent's "
                 f"{self.parent_bytes / 1e6:.2f} MB"]
        if self.record.get("calibration"):
            cal = self.record["calibration"]
            lines.append(f"calibration: {cal['images']} {cal['dataset']} {cal['split']} images (seed {cal['seed']})")
        if self.facts.get("float_ops"):
            left = ", ".join(f"{k} x{v}" for k, v in self.facts["float_ops"].items())
            lines.append(f"left in float: {left}")
        return "\n".join(lines)


def recorded_artefact(path: str | Path) -> dict[str, Any] | None:
    """The provenance an artefact file carries (ONNX metadata or checkpoint metadata); None: none or unreadable."""
    from robustbench_lite import sources

    try:
        info = sources.inspect_file(path)
    except RobustEvalError:
        return None
    meta = info.meta.get("payload", {}).get("meta", {}) if info.format == "checkpoint" else info.meta
    record = meta.get("artefact") if isinstance(meta, dict) else None
    return record if isinstance(record, dict) else None


def ensure_artefact(parent: str | Path, spec: str, out: str | Path, *, seed: int = 0, data_dir: str | None = None,
                    log: Log = print) -> bool:
    """The artefact of ``parent`` by ``spec`` at ``out``: kept when its record names this parent
    (sha256), method and seed, else made now. Returns whether it was made."""
    from robustbench_lite.files import sha256_file

    record = recorded_artefact(out) if Path(out).is_file() else None
    if (record is not None and record.get("spec") == spec and record.get("seed") == seed
            and record.get("parent", {}).get("sha256") == sha256_file(parent)):
        log(f"compress: {spec} of {Path(parent).name}: kept ({Path(out).name})")
        return False
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    compress(CompressConfig(checkpoint=str(parent), options=CompressOptions(method=spec), output=str(out), seed=seed,
                            data_dir=data_dir, show_progress=False), log=log)
    return True


def default_output(parent: Path, spec: str, suffix: str) -> Path:
    """``net.pt`` + ``prune:0.5`` + ``.pt`` -> ``net.prune-0.5.pt`` beside the parent."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", spec.replace(":", "-")).strip("-")
    return parent.with_name(f"{parent.stem}.{safe}{suffix}")


def check_output(output: Path, parent: Path | None, suffix: str, spec: str) -> None:
    if output.suffix != suffix:
        raise RobustEvalError(f"--output {output} must end in {suffix}: --method {spec} writes a "
                              f"{'ONNX graph' if suffix == '.onnx' else 'robust-eval checkpoint'}; pass e.g. "
                              f"--output {output.with_suffix(suffix).name}")
    if output.is_dir():
        raise RobustEvalError(f"--output {output} is a folder; pass a file path ending in {suffix}")
    if parent is not None and output.resolve() == parent.resolve():
        raise RobustEvalError(f"--output {output} is the parent checkpoint; write the artefact to another file")


def compress(config: CompressConfig, log: Log = print) -> Artefact:
    """Compress a parent checkpoint with one method and write the artefact.

    Returns:
        The artefact written, its provenance and the method's facts.

    Raises:
        RobustEvalError: a bad method, output or parent, a missing package, too few calibration
            images; or a method the model cannot take. Nothing is written then.
    """
    from robustbench_lite import data as data_mod
    from robustbench_lite.files import sha256_file
    from robustbench_lite.sources import checkpoints

    start = time.perf_counter()
    options = config.options
    spec = options.method
    method = options.entry
    method.check()
    given = Path(config.checkpoint) if config.checkpoint else None
    if config.output is not None:
        check_output(Path(config.output), given, method.suffix, spec)
    if given is not None:
        payload = checkpoints.read_checkpoint(given)  # one line for a missing, damaged or foreign file
        parent, meta = checkpoints.load_checkpoint(given, payload=payload)
        path = given
    else:
        from robustbench_lite.training import load_or_train_baseline

        parent, meta, path = load_or_train_baseline(config.model, config.dataset, config.seed, "cpu",
                                                    config.data_dir, log=log, show_progress=config.show_progress)
    if meta.get("artefact"):
        log(f"compress: the parent is itself an artefact ({meta['artefact'].get('spec')} of "
            f"{Path(meta['artefact']['parent']['path']).name}); the new one records both steps")
    out = Path(config.output) if config.output else default_output(path, spec, method.suffix)
    check_output(out, path, method.suffix, spec)
    settings = options.settings
    calibration, images = None, None
    if method.needs_calibration:
        dataset = meta.get("dataset") or config.dataset
        train = data_mod.load(dataset, "train", data_dir=config.data_dir)
        n = settings["calibration"]
        if n > len(train):
            raise RobustEvalError(f"--calibration {n} is more than the {len(train)} training images of {dataset}; "
                                  f"pass --calibration {len(train)} or fewer")
        gen = torch.Generator().manual_seed(config.seed)
        chosen = torch.randperm(len(train), generator=gen)[:n].sort().values
        images = train.float_images(chosen)
        from robustbench_lite.files import sha256_array

        calibration = {"dataset": dataset, "split": "train", "images": n, "selection": "uniform without replacement",
                       "seed": config.seed, "indices_sha256": sha256_array(chosen)}
    record = provenance(path, sha256_file(path), meta, options, calibration, config.seed)
    if meta.get("artefact"):
        record["parent"]["artefact"] = meta["artefact"]
    name, _ = parse_spec(spec)
    log(f"compress: {name} of {path.name} -> {out}")
    job = Job(path, config.seed, config.data_dir, config.show_progress, config.defences)
    facts = method.make(parent.cpu().eval(), meta, settings, images, out, record, log, job)
    return Artefact(out, record, facts, out.stat().st_size, path.stat().st_size, time.perf_counter() - start)
