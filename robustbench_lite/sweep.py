"""Sweeps: every (model, dataset, init) x suite cell, each cached, one table and report at the end.

A cell is one suite run on one checkpoint. Its result is cached in ``OUTPUT_DIR/cells/KEY.json``
where KEY hashes (checkpoint file SHA-256, dataset, suite, that suite's options, images, seed), so
a cell is skipped whenever exactly that evaluation was done before, by this sweep or an earlier
one. Cells are written atomically as they finish: a sweep killed midway loses at most the cell
it was running, and ``robust-eval sweep --resume --output-dir DIR`` picks it up from ``DIR/sweep.yaml``.
With ``launcher`` (e.g. ``torchrun --nproc-per-node 8``) each cell runs as its own distributed job.

A cell that fails (bad checkpoint, missing data...) is recorded with its error and the sweep goes
on; the command then exits 3. Without ``checkpoints`` for a (model, dataset), the cell uses the
cached quick baseline, training it on first use (from scratch, or from ImageNet weights for
``init: pretrained``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.files import atomic_write, sha256_file
from robustbench_lite.options import MAX_SEED, is_int
from robustbench_lite.sources import architectures

Log = Callable[[str], None]
INITS = ("scratch", "pretrained")
#: Exit code of a sweep where some cells failed (1 is a failed gate, 2 a user error).
EXIT_CELLS_FAILED = 3


@dataclass
class SweepConfig:
    """What a sweep covers; filled from YAML (``robust-eval sweep CONFIG.yaml``) or flags.

    Attributes:
        models, datasets, suites: the grid (``full`` in suites means every suite).
        init: ``scratch`` and/or ``pretrained`` (the quick baseline from ImageNet weights).
        checkpoints: ``"model/dataset"`` (or ``"model/dataset/init"``) -> checkpoint path; cells
            without one use the cached quick baseline.
        limit, seed, batch_size, device, data_dir: as for ``robust-eval``.
        suite_options: per-suite options (``{suite: {option: value}}`` in YAML), typed by :meth:`validate`.
        output_dir: cells cache, combined results, table and report.
        launcher: run each cell as a separate job under this command, e.g.
            ``torchrun --nproc-per-node 4`` (the cell's ``-m robustbench_lite ...`` is appended);
            None runs cells in this process.
        compress: compression methods (``robust-eval compress --method``, e.g. ``int8``,
            ``prune:0.5``, ``distill:shufflenetv2_x0_5``); each checkpoint is evaluated as it is
            and as each artefact, made once and kept under ``output_dir/artefacts``.
        precision: precisions each checkpoint is evaluated in (``fp32``, ``bf16``, ``fp16``: a cast copy,
            as ``robust-eval --precision``); empty: as shipped. More than one is an axis of the grid.
        inference: ``auto`` or ``eager`` (``robust-eval --inference``).
        stress: training-data stressors (``imb100``, ``pair0.3``, ``frac0.1``, ``imb100+sym0.2``;
            ``none``): each is an axis value; a cell with stress or a defence trains its own
            checkpoint with the quick recipe (kept under ``output_dir/trained``).
        defence: defences to train with (``none``, ``balanced-softmax``, ``gce``, ``augmix+pgd-at``
            for several), crossed with ``stress``.
    """

    models: list[str] = field(default_factory=lambda: ["shufflenetv2"])
    datasets: list[str] = field(default_factory=lambda: ["fashion-mnist"])
    suites: list[str] = field(default_factory=lambda: ["clean", "efficiency"])
    init: list[str] = field(default_factory=lambda: ["scratch"])
    checkpoints: dict[str, str] = field(default_factory=dict)
    limit: int | None = None
    seed: int = 0
    batch_size: int = 256
    device: str = "auto"
    data_dir: str | None = None
    suite_options: dict[str, Any] = field(default_factory=dict)
    output_dir: str = "reports/sweep"
    launcher: str | None = None
    compress: list[str] = field(default_factory=list)
    precision: list[str] = field(default_factory=list)
    inference: str = "auto"
    stress: list[str] = field(default_factory=list)
    defence: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "the sweep config") -> SweepConfig:
        names = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - names)
        if unknown:
            raise RobustEvalError(f"{source} has unknown keys: {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        data = dict(values)
        for key in ("models", "datasets", "suites", "init", "compress", "precision", "stress", "defence"):
            if isinstance(data.get(key), str) and not data[key].strip(",").strip():
                raise RobustEvalError(f"{source}: {key} is empty; give at least one name, or leave it out")
            if isinstance(data.get(key), str):
                data[key] = [p.strip() for p in data[key].split(",") if p.strip()]
        _check_types(data, source)
        return cls(**data).validate()

    def validate(self) -> SweepConfig:
        from robustbench_lite import data as data_mod
        from robustbench_lite.suites import SUITES, expand_suites, typed_options

        for key in ("models", "datasets", "suites", "init"):
            if not getattr(self, key):
                raise RobustEvalError(f"the sweep has no {key}; give at least one (e.g. --{key} ...)")
        for m in self.models:
            architectures.check(m)
        for d in self.datasets:
            data_mod.parse_name(d)
        self.suites = expand_suites(list(self.suites))
        for s in self.suites:
            SUITES.entry(s)
        self.suite_options = typed_options(self.suites, self.suite_options, "the sweep's suite_options")
        for i in self.init:
            if i not in INITS:
                raise RobustEvalError(f"unknown init '{i}'; valid: {', '.join(INITS)}")
        from robustbench_lite.engine.plans import MODES
        from robustbench_lite.models import PRECISIONS

        for name in self.precision:
            if name not in PRECISIONS:
                raise RobustEvalError(f"unknown precision '{name}'; valid: {', '.join(PRECISIONS)}")
        if len(set(self.precision)) != len(self.precision):
            raise RobustEvalError(f"precision lists a precision twice: {', '.join(self.precision)}")
        if self.inference not in MODES:
            raise RobustEvalError(f"unknown inference mode '{self.inference}'; valid: {', '.join(MODES)}")
        if self.limit is not None and self.limit < 1:
            raise RobustEvalError(f"limit must be a positive number of images, got {self.limit}")
        from robustbench_lite.training.compression import CompressOptions

        for spec in self.compress:
            CompressOptions(method=spec)  # an unknown method or a bad argument: one line, before any cell
        if len(set(self.compress)) != len(self.compress):
            raise RobustEvalError(f"compress lists a method twice: {', '.join(self.compress)}")
        from robustbench_lite.training.defences import DefenceOptions
        from robustbench_lite.training.stressors import StressOptions

        for spec in self.stress:
            StressOptions.parse(spec)
        for spec in self.defence:
            DefenceOptions.from_mapping({"defence": spec.replace("+", ",")})
        for key, values in (("stress", self.stress), ("defence", self.defence)):
            if len(set(values)) != len(values):
                raise RobustEvalError(f"{key} lists a value twice: {', '.join(values)}")
        if (self.stress or self.defence) and self.checkpoints:
            raise RobustEvalError("stress and defence train their own checkpoints; drop checkpoints or them")
        for key, path in self.checkpoints.items():
            if len(key.split("/")) not in (2, 3):
                raise RobustEvalError(f"checkpoints key '{key}' must be 'model/dataset' or 'model/dataset/init'")
            if not Path(path).is_file():
                raise RobustEvalError(f"checkpoint {path} (for {key}) does not exist")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        out["suite_options"] = {name: self.options_dict(name) for name in self.suite_options}
        return out

    def options_dict(self, suite: str) -> dict[str, Any]:
        """The options the sweep sets for ``suite``, as plain values."""
        opts = self.suite_options.get(suite)
        return opts.to_dict() if opts is not None else {}


#: Each sweep key's type check and what it must be (the flags' types, for YAML files alike).
SWEEP_TYPES: dict[str, tuple[Any, str]] = {
    **{key: (lambda v: isinstance(v, list) and all(isinstance(x, str) and x.strip() for x in v),
             "a list of names (or one comma-separated string)")
       for key in ("models", "datasets", "suites", "init", "compress", "precision", "stress", "defence")},
    "inference": (lambda v: isinstance(v, str) and bool(v.strip()), "auto or eager"),
    "checkpoints": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) and x
                                                          for k, x in v.items()),
                    "a mapping of 'model/dataset' to checkpoint paths"),
    "limit": (lambda v: v is None or is_int(v, 1), "a positive integer (images)"),
    "seed": (lambda v: is_int(v, 0, MAX_SEED), "an integer in [0, 2**63 - 1]"),
    "batch_size": (lambda v: is_int(v, 1), "a positive integer"),
    "device": (lambda v: isinstance(v, str) and bool(v.strip()), "a device name (auto, cpu, cuda, cuda:N)"),
    "data_dir": (lambda v: v is None or isinstance(v, str) and bool(v.strip()), "a folder path"),
    "suite_options": (lambda v: isinstance(v, dict), "a mapping of suite names to their options"),
    "output_dir": (lambda v: isinstance(v, str) and bool(v.strip()), "a folder path"),
    "launcher": (lambda v: v is None or isinstance(v, str) and bool(v.strip()), "a command line"),
}


def _check_types(data: Mapping[str, Any], source: str) -> None:
    """Every key of a sweep config of the type its flag takes: one line naming the key, before any cell."""
    for key, value in data.items():
        ok, what = SWEEP_TYPES.get(key, (lambda v: True, ""))
        if not ok(value):
            raise RobustEvalError(f"{source}: {key} should be {what}, got {value!r}")


@dataclass
class Cell:
    model: str
    dataset: str
    init: str
    suite: str
    compress: str = ""  # "" the checkpoint itself, else the compression method of its artefact
    precision: str = ""  # "" as shipped, else what the model is cast to (--precision)
    stress: str = ""  # "" the baseline's training data, else a stress spec (StressOptions.parse)
    defence: str = ""  # "" no defence, else defences joined with "+"

    @property
    def form(self) -> tuple[str, ...]:
        """What identifies the model file (precision is applied when it is evaluated)."""
        return (self.model, self.dataset, self.init, self.stress, self.defence, self.compress)

    @property
    def run_key(self) -> tuple[str, ...]:
        return (*self.form, self.precision)

    @property
    def label(self) -> str:
        return "/".join([self.model, self.dataset, self.init, *(p for p in (self.stress, self.defence, self.compress,
                                                                          self.precision) if p), self.suite])


def cells(cfg: SweepConfig) -> list[Cell]:
    """The grid; an ONNX artefact (``int8``) runs in its own runtime, so it is evaluated once, as shipped,
    whatever precisions the PyTorch forms are cast to."""
    from robustbench_lite.training.compression import CompressOptions

    def precisions(form: str) -> list[str]:
        if form and CompressOptions(method=form).entry.suffix == ".onnx":
            return [""]
        return cfg.precision or [""]

    def spec(value: str) -> str:
        return "" if value in ("none", "standard") else value

    return [Cell(m, d, i, s, c, p, spec(st), spec(df)) for m in cfg.models for d in cfg.datasets for i in cfg.init
            for st in cfg.stress or [""] for df in cfg.defence or [""]
            for c in ["", *cfg.compress] for p in precisions(c) for s in cfg.suites]


def cell_key(checkpoint_sha: str, cell: Cell, cfg: SweepConfig) -> str:
    """The cache key: what the cell's numbers are a function of."""
    what = {"checkpoint": checkpoint_sha, "dataset": cell.dataset, "suite": cell.suite,
            "options": cfg.options_dict(cell.suite), "limit": cfg.limit, "seed": cfg.seed}
    if cell.precision:  # absent as shipped: caches from before the axis existed stay valid
        what["precision"] = cell.precision
    if cfg.inference != "auto":
        what["inference"] = cfg.inference
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _checkpoint_for(cell: Cell, cfg: SweepConfig, log: Log) -> str:
    parent = _parent_for(cell, cfg, log)
    return _artefact_for(parent, cell.compress, cfg, log) if cell.compress else parent


def _parent_for(cell: Cell, cfg: SweepConfig, log: Log) -> str:
    if cell.stress or cell.defence:
        return _trained_for(cell, cfg, log)
    for key in (f"{cell.model}/{cell.dataset}/{cell.init}", f"{cell.model}/{cell.dataset}"):
        if key in cfg.checkpoints:
            return cfg.checkpoints[key]
    from robustbench_lite.training import load_or_train_baseline

    _, _, path = load_or_train_baseline(cell.model, cell.dataset, cfg.seed, cfg.device, cfg.data_dir, log,
                                        show_progress=False, pretrained=cell.init == "pretrained")
    return str(path)


def _trained_for(cell: Cell, cfg: SweepConfig, log: Log) -> str:
    """The checkpoint of a cell's stress and defence (quick recipe), in ``output_dir/trained``, trained once."""
    from robustbench_lite.config import TrainConfig
    from robustbench_lite.training import train
    from robustbench_lite.training.defences import DefenceOptions
    from robustbench_lite.training.stressors import StressOptions, confusion_source

    stress = StressOptions.parse(cell.stress)
    tag = stress.label()
    if stress.label_noise and stress.label_noise.startswith("confusion:"):  # the label drops the file: its content
        tag += "-" + sha256_file(confusion_source(stress.label_noise.partition(":")[2])[0])[:12]
    name = "-".join([cell.model, cell.dataset, cell.init, (cell.defence or "standard") + (f"+{tag}" if tag else ""),
                     f"seed{cfg.seed}"])
    path = Path(cfg.output_dir) / "trained" / (name.replace(":", "_").replace("/", "_") + ".pt")
    if path.is_file():
        return str(path)
    log(f"training {path.name} (quick recipe)")
    train(TrainConfig(model=cell.model, dataset=cell.dataset, seed=cfg.seed, output=str(path),
                      pretrained=cell.init == "pretrained", device=cfg.device, data_dir=cfg.data_dir,
                      defences=DefenceOptions.from_mapping({"defence": cell.defence.replace("+", ",") or None}),
                      stress=stress if stress.active else None, show_progress=False), log=log)
    return str(path)


def _artefact_for(parent: str, spec: str, cfg: SweepConfig, log: Log) -> str:
    """The artefact of ``parent`` by ``spec`` in ``output_dir/artefacts`` (named by its sha256), made once."""
    from robustbench_lite.training.compression import CompressOptions, ensure_artefact
    from robustbench_lite.training.compression.run import default_output

    name = default_output(Path(parent), spec, CompressOptions(method=spec).entry.suffix).name
    path = Path(cfg.output_dir) / "artefacts" / f"{sha256_file(parent)[:12]}-{name}"
    ensure_artefact(parent, spec, path, seed=cfg.seed, data_dir=cfg.data_dir, log=log)
    return str(path)


def cell_command(cell: Cell, checkpoint: str, cfg: SweepConfig, json_path: Path) -> list[str]:
    """The ``robust-eval`` command line of one cell, after the launcher (``torchrun ...``)."""
    import shlex

    cmd = [*shlex.split(cfg.launcher or ""), "-m", "robustbench_lite", "--checkpoint", checkpoint,
           "--dataset", cell.dataset, "--suite", cell.suite, "--seed", str(cfg.seed),
           "--batch-size", str(cfg.batch_size), "--device", cfg.device, "--json", str(json_path),
           "--no-history", "--no-progress"]
    if cfg.limit is not None:
        cmd += ["--limit", str(cfg.limit)]
    if cell.precision:
        cmd += ["--precision", cell.precision]
    if cfg.inference != "auto":
        cmd += ["--inference", cfg.inference]
    if cfg.data_dir:
        cmd += ["--data-dir", cfg.data_dir]
    if cell.suite in cfg.suite_options:
        cmd += cfg.suite_options[cell.suite].to_args()
    return cmd


def _run_launched(cell: Cell, checkpoint: str, cfg: SweepConfig, log: Log) -> dict[str, Any]:
    import subprocess
    import tempfile

    from robustbench_lite.results import read_json

    with tempfile.TemporaryDirectory(prefix="robust-eval-cell-") as tmp:
        json_path = Path(tmp) / "cell.json"
        cmd = cell_command(cell, checkpoint, cfg, json_path)
        log(f"launching: {' '.join(cmd)}")
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:
            raise RobustEvalError(f"launcher '{cfg.launcher}' could not start: {exc}") from None
        if proc.returncode != 0 or not json_path.is_file():
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise RobustEvalError(f"launched cell exited {proc.returncode}: {lines[-1] if lines else 'no output'}")
        return read_json(json_path)


def run_cell(cell: Cell, checkpoint: str, cfg: SweepConfig, log: Log) -> dict[str, Any]:
    """One suite on one checkpoint: the results dict, as ``robust-eval --json`` writes it."""
    if cfg.launcher:
        return _run_launched(cell, checkpoint, cfg, log)
    from robustbench_lite.api import evaluate
    from robustbench_lite.config import RunConfig

    config = RunConfig(model=cell.model, dataset=cell.dataset, suites=[cell.suite], checkpoint=checkpoint,
                       limit=cfg.limit, batch_size=cfg.batch_size, device=cfg.device, seed=cfg.seed,
                       data_dir=cfg.data_dir, show_progress=False, precision=cell.precision or None,
                       inference=cfg.inference,
                       suite_options={k: v for k, v in cfg.suite_options.items() if k == cell.suite})
    return evaluate(config, log=log).to_dict()


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from single-suite results of the same checkpoint and images."""
    merged = {k: v for k, v in results[0].items() if k not in results[0].get("suites", [])}
    merged["suites"], merged["timings"] = [], {}
    for r in results:
        for name in r.get("suites", []):
            merged["suites"].append(name)
            merged[name] = r[name]
            merged["timings"][name] = r.get("timings", {}).get(name)
    merged["timings"]["total"] = sum(v for v in merged["timings"].values() if isinstance(v, (int, float)))
    merged["config"] = {**merged.get("config", {}), "suites": merged["suites"]}
    return merged


@dataclass
class SweepOutcome:
    runs: list[dict[str, Any]]
    labels: list[str]
    failures: list[dict[str, str]]
    computed: int
    cached: int
    table_path: Path | None = None
    results_path: Path | None = None
    report_path: Path | None = None


def run_sweep(cfg: SweepConfig, log: Log = print) -> SweepOutcome:
    """Run (or reuse) every cell, then write ``table.md``, ``results.json`` and ``report.html``."""
    from robustbench_lite import compare

    out = Path(cfg.output_dir)
    cell_dir = out / "cells"
    cell_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "sweep.yaml", lambda f: f.write(_yaml(cfg.to_dict())))
    grid = cells(cfg)
    log(f"sweep: {len(grid)} cells ({len(cfg.models)} models x {len(cfg.datasets)} datasets x "
        f"{len(cfg.init)} inits x {1 + len(cfg.compress)} forms"
        + (f" x {len(cfg.stress)} stresses" if cfg.stress else "")
        + (f" x {len(cfg.defence)} defences" if cfg.defence else "")
        + (f" x {len(cfg.precision)} precisions" if cfg.precision else "") + f" x {len(cfg.suites)} suites) -> {out}")
    per_run: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    failures: list[dict[str, str]] = []
    checkpoints: dict[tuple[str, ...], tuple[str, str] | RobustEvalError] = {}
    computed = cached = 0
    for n, cell in enumerate(grid, 1):
        prefix = f"[{n}/{len(grid)}] {cell.label}"
        try:
            form = cell.form  # the model file: one per form, whatever precision it is evaluated in
            if form not in checkpoints:
                try:
                    path = _checkpoint_for(cell, cfg, log)
                    checkpoints[form] = (path, sha256_file(path))
                except Exception as exc:  # noqa: BLE001 - every cell of this checkpoint fails alike
                    checkpoints[form] = exc if isinstance(exc, RobustEvalError) else \
                        RobustEvalError(f"{type(exc).__name__}: {exc}")
            ck = checkpoints[form]
            if isinstance(ck, RobustEvalError):
                raise ck
            path, sha = ck
            key_file = cell_dir / f"{cell_key(sha, cell, cfg)}.json"
            result = _cached_cell(key_file, log, prefix) if key_file.is_file() else None
            if result is not None:
                cached += 1
                log(f"{prefix}: cached ({key_file.name})")
            else:
                t0 = time.perf_counter()
                result = run_cell(cell, path, cfg, lambda m, p=prefix: log(f"{p}: {m}"))
                text = json.dumps({"cell": asdict(cell), "checkpoint": path, "checkpoint_sha256": sha,
                                   "result": result}, allow_nan=False)
                atomic_write(key_file, lambda f, t=text: f.write(t))
                computed += 1
                log(f"{prefix}: done in {time.perf_counter() - t0:.1f} s")
            per_run.setdefault(cell.run_key, []).append(result)
        except Exception as exc:  # noqa: BLE001 - one failing cell is recorded, the sweep goes on
            message = str(exc) if isinstance(exc, RobustEvalError) else f"{type(exc).__name__}: {exc}"
            failures.append({"cell": cell.label, "error": message})
            log(f"{prefix}: FAILED: {message}")

    runs, labels = [], []
    for key in dict.fromkeys(c.run_key for c in grid):
        if key in per_run:
            runs.append(merge(per_run[key]))
            _, dataset, init, stress, defence, form, precision = key
            varying = [key[0]] + [part for part, many in (
                (dataset, len(cfg.datasets) > 1), (init, len(cfg.init) > 1), (stress or "none", len(cfg.stress) > 1),
                (defence or "standard", len(cfg.defence) > 1), (form, bool(form)),
                (precision, len(cfg.precision) > 1)) if many]
            labels.append("/".join(varying))
    outcome = SweepOutcome(runs, labels, failures, computed, cached)
    summary = {"sweep": cfg.to_dict(), "cells": len(grid), "computed": computed, "cached": cached,
               "failures": failures}
    if runs:
        table = compare.compare(runs, labels)
        outcome.table_path = table.write(out / "table.md")
        log("\n" + table.to_text())
        summary["comparison"] = table.to_dict()
        from robustbench_lite.report import write_html

        outcome.report_path = write_html(out / "report.html", runs, title="robust-eval sweep")
    text = json.dumps({**summary, "runs": runs}, indent=2, allow_nan=False)
    outcome.results_path = atomic_write(out / "results.json", lambda f: f.write(text + "\n"))
    return outcome


def _cached_cell(path: Path, log: Log, prefix: str) -> dict[str, Any] | None:
    """A cell's cached result, or None (recomputed and rewritten) when the file is damaged: said once,
    naming the file; a damaged cache entry is a miss, never a failure on every --resume."""
    from robustbench_lite.results import check_results

    try:
        result = json.loads(path.read_text())["result"]
        if not isinstance(result, dict):
            raise TypeError(f"its result is a {type(result).__name__}")
        check_results(result, str(path))
        return result
    except (OSError, ValueError, KeyError, TypeError, RobustEvalError) as exc:
        log(f"{prefix}: cached cell {path} is damaged ({exc}); computing it again")
        return None


def _yaml(data: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(data), sort_keys=False)


def load_config(path: str | Path) -> SweepConfig:
    from robustbench_lite.config import load_yaml

    raw = load_yaml(path)
    return SweepConfig.from_dict(raw, f"sweep config {path}")
