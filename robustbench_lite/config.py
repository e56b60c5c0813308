"""Run and training configuration: dataclasses filled by the CLI and by YAML files.

``None`` means "the default for this model/dataset" (resolved where the facts are known).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustbench_lite.errors import RobustEvalError

if TYPE_CHECKING:
    from robustbench_lite.sources.contract import InputContract
    from robustbench_lite.training.defences import DefenceOptions

DEFAULT_MODEL = "shufflenetv2"
DEFAULT_DATASET = "fashion-mnist"
DEFAULT_SUITES = ("clean", "efficiency")


def _no_contract() -> InputContract:
    from robustbench_lite.sources.contract import InputContract

    return InputContract()


@dataclass
class RunConfig:
    """One evaluation run.

    Attributes:
        model: architecture name (zoo, ``torchvision:NAME``, ``timm:NAME``); None: the checkpoint's
            model, else ``shufflenetv2``. With a state_dict or safetensors file, the architecture
            its weights are for.
        dataset: registry name (``imagefolder:PATH`` for datasets with an argument); None: the
            checkpoint's dataset, else ``fashion-mnist``.
        suites: suite names in run order.
        checkpoint: the model file to evaluate, any format ``robust-eval list formats`` shows
            (recognised by content); None uses (or trains) the cached baseline.
        contract: the model's input contract from flags (``--input-size``, ``--channels``,
            ``--mean``, ``--std``, ``--classes``); what they leave open comes from the file.
        surrogate: a differentiable model file the adversarial suite crafts attacks on when the
            model itself has no gradients (ONNX Runtime); they are scored on the model (transfer).
        pretrained: with no checkpoint, use the quick baseline fine-tuned from torchvision's
            ImageNet weights instead of the one trained from scratch.
        limit: evaluate the first N test images (None: all).
        batch_size: evaluation batch size.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seeds every random choice (per image, so batching does not matter).
        suite_options: per-suite typed options (``{suite: Suite.Options}``; mappings from YAML or the
            Python API are accepted and typed by :func:`robustbench_lite.api.evaluate`).
        examples: build the report's example grid from this many test images (0: none).
        calibrate: fit temperature scaling on the clean test split (cross-fitted on two folds) and report
            ECE and NLL before and after on clean data and under every corruption and shift condition.
        cam_layer: Grad-CAM's target layer for the grid's heatmaps (dotted module name); None: chosen
            from the model (:func:`robustbench_lite.analysis.gradcam.choose_layer`).
        debug: let errors in optional steps (the example grid) raise instead of warning.
        precision: what the model computes in, ``fp32``, ``bf16`` or ``fp16`` (a cast copy of a PyTorch
            model, attacks included); None: as shipped. A lower precision than fp32 is reported with its
            agreement with fp32 on the clean set.
        inference: ``auto``: forward passes on the fastest path that gives eager PyTorch's predictions
            (:mod:`robustbench_lite.engine.plans`); ``eager``: the module as given.
    """

    model: str | None = None
    dataset: str | None = None
    suites: list[str] = field(default_factory=lambda: list(DEFAULT_SUITES))
    checkpoint: str | None = None
    pretrained: bool = False
    limit: int | None = None
    batch_size: int = 256
    device: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    show_progress: bool = True
    suite_options: dict[str, Any] = field(default_factory=dict)
    examples: int = 0
    cam_layer: str | None = None
    calibrate: bool = False
    debug: bool = False
    contract: InputContract = field(default_factory=_no_contract)
    surrogate: str | None = None
    precision: str | None = None
    inference: str = "auto"

    def validate(self) -> RunConfig:
        from robustbench_lite.engine.plans import MODES, PRECISIONS

        if self.precision is not None and self.precision not in PRECISIONS:
            raise RobustEvalError(f"--precision {self.precision!r} is not a precision; valid: {', '.join(PRECISIONS)}")
        if self.inference not in MODES:
            raise RobustEvalError(f"--inference {self.inference!r} is not a mode; valid: {', '.join(MODES)}")
        if self.limit is not None and self.limit < 1:
            raise RobustEvalError(f"--limit must be a positive number of images, got {self.limit}; omit it to use all")
        if self.batch_size < 1:
            raise RobustEvalError(f"--batch-size must be a positive integer, got {self.batch_size}; e.g. 256")
        if self.seed < 0:
            raise RobustEvalError(f"--seed must be >= 0, got {self.seed}; e.g. --seed 0")
        if self.examples < 0:
            raise RobustEvalError(f"--examples must be >= 0, got {self.examples}; 0 leaves the example grid out")
        if not self.suites:
            raise RobustEvalError("no suite selected; pass --suite clean (see 'robust-eval list suites')")
        if self.checkpoint and self.pretrained:
            raise RobustEvalError("--checkpoint and --pretrained exclude each other; pass one")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain values; typed suite options as the options the user set (``Options.to_dict``)."""
        report_only = ("debug", "examples", "cam_layer")  # how the report is drawn, not what was measured
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in report_only}
        out["contract"] = self.contract.to_dict()
        out["suite_options"] = {name: opts.to_dict() if hasattr(opts, "to_dict") else dict(opts)
                                for name, opts in self.suite_options.items()}
        return out


def _no_defences() -> DefenceOptions:
    # Imported on use: the training package imports this module for TrainConfig.
    from robustbench_lite.training.defences import DefenceOptions

    return DefenceOptions()


@dataclass
class TrainConfig:
    """One training run (the standard recipe; defences extend it).

    Attributes:
        epochs, batch_size, lr, weight_decay: optimisation; ``None`` takes the recipe default.
        output: checkpoint path; None: the cache for the plain quick recipe (the (model, dataset)
            baseline), else ``./checkpoints/`` under a name built from model, data, defences, recipe.
        limit: train on the first N training images (None: all).
        defences: the defences and their typed, validated parameters (``robust-eval list
            defences``); default: none, the standard recipe. Build with
            ``DefenceOptions.from_mapping({"defence": "pgd-at", "eps": 0.1})``.
        resume: continue from the state file an interrupted run left next to ``output``.
        stress: training-data stressors (small data, imbalance, label noise;
            :mod:`robustbench_lite.training.stressors`); default: none.
    """

    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    label_smoothing: float = 0.0
    seed: int = 0
    output: str | None = None
    device: str = "auto"
    data_dir: str | None = None
    pretrained: bool = False
    limit: int | None = None
    eval_limit: int | None = None
    show_progress: bool = True
    defences: DefenceOptions = field(default_factory=_no_defences)
    resume: bool = False
    stress: Any = None

    def validate(self) -> TrainConfig:
        from robustbench_lite.training.defences import DefenceOptions

        if not isinstance(self.defences, DefenceOptions):
            raise RobustEvalError(f"defences must be DefenceOptions, got {type(self.defences).__name__}; build it "
                                  "with DefenceOptions.from_mapping({'defence': 'pgd-at', 'eps': 0.1})")
        checks = [("epochs", self.epochs), ("batch_size", self.batch_size), ("limit", self.limit),
                  ("eval_limit", self.eval_limit)]
        for name, value in checks:
            if value is not None and value < 1:
                raise RobustEvalError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        if self.lr is not None and not self.lr > 0:
            raise RobustEvalError(f"--lr must be positive, got {self.lr}; e.g. 0.003")
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise RobustEvalError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise RobustEvalError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.stress is not None:
            from robustbench_lite.training.stressors import StressOptions

            if not isinstance(self.stress, StressOptions):
                raise RobustEvalError(f"stress must be StressOptions, got {type(self.stress).__name__}")
            self.stress.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict of option names (kebab or snake case) to values."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RobustEvalError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise RobustEvalError(f"config file {path} is a folder; give the YAML file inside it") from None
    except UnicodeDecodeError:
        raise RobustEvalError(f"config file {path} is not text (binary bytes); give a YAML file") from None
    except OSError as exc:
        raise RobustEvalError(f"config file {path} cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise RobustEvalError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RobustEvalError(f"config file {path} must be a mapping of option: value, got {type(data).__name__}")
    return {str(k).replace("-", "_"): v for k, v in data.items()}
