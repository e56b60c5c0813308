"""Defences: adversarial training and augmentation recipes that plug into the training loop.

A defence acts on one stage of a training step; ``--defence a,b`` combines defences of
different stages into one :class:`Pipeline`:

1. ``image``: per-image augmentation of the uint8 batch (augmix, autoaugment, randaugment,
   trivialaugment), built on ``torchvision.transforms.v2``; each image draws its own operations.
2. ``pixel``: per-image float noise (gaussian-noise).
3. ``mix``: batch mixing with soft labels (cutmix, mixup; both together alternate per batch).
4. ``loss``: what the model is trained on and with which loss (fgsm-rs, pgd-at, trades, and augmix
   with its Jensen-Shannon consistency). At most one defence owns the loss.

Adversarial defences reuse :mod:`attacks` (FGSM-RS, PGD without early exit, PGD-KL for TRADES);
there is no second attack implementation. Attacks run with the model in eval mode (BatchNorm uses
its running statistics, as in TRADES' reference code; Wong et al. attack in train mode), then the
model trains on the result in train mode. Randomness comes from the global torch RNG, which the
training loop seeds per (seed, epoch, step), and from the attacks' per-image generators keyed by
(seed, epoch, dataset index), so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import Registry

DEFENCES: Registry[type[Defence]] = Registry("defence", "robust-eval list defences")

STAGES = ("image", "pixel", "mix", "loss")


@dataclass
class DefenceParams:
    """Hyperparameters of the defences; ``None`` takes the default of the defence that uses it.

    Attributes:
        eps: adversarial budget, Linf, pixel units (default: the dataset's default eps, e.g. 0.1
            for Fashion-MNIST, 8/255 for CIFAR-10).
        steps: attack steps while training (pgd-at 5, trades 5; fgsm-rs always takes one).
        alpha: attack step size (default: fgsm-rs 1.25 * eps, Wong et al.; pgd-at and trades
            2.5 * eps / steps, Madry et al.).
        beta: TRADES trade-off between clean loss and robust KL term (default 6.0, the paper's).
        severity: AugMix operation strength, 1-10 (default 3, torchvision's and the paper's).
        magnitude: RandAugment magnitude, 0-30 (default 9).
        mix_alpha: Beta(alpha, alpha) of the cutmix/mixup mixing ratio (default 1.0).
        noise_std: standard deviation of gaussian-noise, pixel units (default 0.1).
        noise_p: probability that an image gets gaussian noise (default 0.5: half the batch stays
            clean, so clean accuracy is kept).
        jsd: AugMix's Jensen-Shannon consistency loss over (clean, augmix, augmix) (default off).
        jsd_weight: weight of the consistency term (default 12, the paper's).
        monitor_images: held-out training images on which adversarial defences measure PGD-10
            accuracy each epoch to keep the best epoch (default 1000; capped at 10% of the set).
    """

    eps: float | None = None
    steps: int | None = None
    alpha: float | None = None
    beta: float | None = None
    severity: int | None = None
    magnitude: int | None = None
    mix_alpha: float | None = None
    noise_std: float | None = None
    noise_p: float | None = None
    jsd: bool | None = None
    jsd_weight: float | None = None
    monitor_images: int | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _positive(name: str, value: object, *, integer: bool = False, upper: float | None = None,
              allow_zero: bool = False) -> Any:
    ok_type = isinstance(value, numbers.Integral) if integer else isinstance(value, numbers.Real)
    if isinstance(value, bool) or not ok_type or not math.isfinite(float(value)):  # type: ignore[arg-type]
        kind = "an integer" if integer else "a number"
        raise RobustEvalError(f"{_flag(name)} must be {kind}, got {value!r}")
    v = float(value)  # type: ignore[arg-type]
    low_ok = v >= 0 if allow_zero else v > 0
    if not low_ok or (upper is not None and v > upper):
        bound = f"in {'[' if allow_zero else '('}0, {upper:g}]" if upper is not None else (
            ">= 0" if allow_zero else "> 0")
        raise RobustEvalError(f"{_flag(name)} must be {bound}, got {value}; see 'robust-eval list defences'")
    return int(value) if integer else v  # type: ignore[arg-type]


@dataclass
class DefenceContext:
    """What a defence may know about the run."""

    num_classes: int
    dataset: str
    seed: int = 0
    label_smoothing: float = 0.0


@dataclass
class Prepared:
    """A training batch after the image, pixel and mix stages.

    ``x``: float images in [0, 1]; ``y``: the original hard labels; ``targets``: what the loss is
    taken against (hard labels, or (N, classes) soft labels after mixing); ``raw``: the uint8
    batch before any augmentation; ``indices``: the images' dataset indices.
    """

    x: torch.Tensor
    y: torch.Tensor
    targets: torch.Tensor
    raw: torch.Tensor
    indices: list[int]


class Defence:
    """One defence. Subclasses set the class attributes and override their stage's hook."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    #: DefenceParams fields this defence reads, with their defaults (None: resolved per dataset).
    uses: ClassVar[dict[str, Any]] = {}
    adversarial: ClassVar[bool] = False

    def __init__(self, params: DefenceParams, ctx: DefenceContext) -> None:
        self.ctx = ctx
        given = params.given()
        self.params: dict[str, Any] = {k: given.get(k, default) for k, default in self.uses.items()}
        self.validate()

    @classmethod
    def describe(cls) -> str:
        """The line ``robust-eval list defences`` shows: stage, summary and defaults."""
        defaults = ", ".join(f"{k}={_DEFAULT_TEXT.get((cls.name, k), _DEFAULT_TEXT.get(k)) if v is None else v}"
                             for k, v in cls.uses.items())
        return f"[{cls.stage}] {cls.summary}" + (f" ({defaults})" if defaults else "")

    def validate(self) -> None:
        """Check ``self.params``; raise :class:`RobustEvalError` on a bad value."""

    def settings(self) -> dict[str, Any]:
        """Resolved hyperparameters, recorded in the checkpoint."""
        return dict(self.params)

    # stage hooks
    def image(self, img: torch.Tensor) -> torch.Tensor:  # (C, H, W) uint8 -> uint8
        raise NotImplementedError

    def pixel(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) float -> float
        raise NotImplementedError

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits the running accuracy is measured on, their labels).

        ``model`` is what the step trains (a DistributedDataParallel wrapper under torchrun: one
        forward per step); ``attack_model`` the plain module attacks run on (default ``model``).
        """
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before each epoch (attacks re-key their random starts by epoch)."""


def register_defence(cls: type[Defence]) -> type[Defence]:
    return DEFENCES.register(cls.name, cls)


# ---------------------------------------------------------------------------------------------
# Adversarial training (reuses attacks/)


class _Adversarial(Defence):
    stage = "loss"
    adversarial = True
    attack_name: ClassVar[str] = ""

    def validate(self) -> None:
        from attacks import default_eps

        p = self.params
        given = p.get("eps")
        p["eps"] = default_eps(self.ctx.dataset, "Linf") if given is None else _positive("eps", given, upper=1)
        if "steps" in p:
            p["steps"] = _positive("steps", p["steps"], integer=True)
        if p.get("alpha") is not None:
            p["alpha"] = _positive("alpha", p["alpha"], upper=1)
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        import attacks
        from robustbench_lite.seeding import derive_seed

        kwargs = {k: v for k, v in self.params.items() if k in ("eps", "steps", "alpha")}
        if self.attack_name != "pgd-kl":
            kwargs["early_stop"] = False  # train on the loss-maximising iterate, not the first that fools
        self.attack = attacks.build(self.attack_name, seed=derive_seed(self.ctx.seed, epoch, self.name), **kwargs)

    def settings(self) -> dict[str, Any]:
        return {**self.params, "attack": self.attack.label,
                "alpha": self.attack.alpha if self.params.get("alpha") is None else self.params["alpha"]}

    def adversarial_examples(self, model: nn.Module, batch: Prepared) -> torch.Tensor:
        """The batch's adversarial images (model in eval mode while attacking, restored after)."""
        return self.attack(model, batch.x, batch.y, batch.indices)

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adv = self.adversarial_examples(attack_model or model, batch)
        logits = model(adv)
        return F.cross_entropy(logits, batch.y, label_smoothing=self.ctx.label_smoothing), logits, batch.y


@register_defence
class FGSMRSTraining(_Adversarial):
    name = "fgsm-rs"
    summary = "FGSM from a random start, step 1.25*eps (fast adversarial training)"
    reference = "Wong, Rice & Kolter 2020, Fast is better than free, https://arxiv.org/abs/2001.03994"
    uses = {"eps": None, "alpha": None}
    attack_name = "fgsm-rs"


@register_defence
class PGDTraining(_Adversarial):
    name = "pgd-at"
    summary = "train on PGD adversarial examples (Linf, random start, last iterate)"
    reference = "Madry et al. 2018, Towards Deep Learning Models Resistant to Adversarial Attacks, " \
                "https://arxiv.org/abs/1706.06083"
    uses = {"eps": None, "steps": 5, "alpha": None}
    attack_name = "pgd"


@register_defence
class TRADESTraining(_Adversarial):
    name = "trades"
    summary = "clean cross-entropy + beta * KL(clean || adversarial), attack on the KL term"
    reference = "Zhang et al. 2019, Theoretically Principled Trade-off between Robustness and Accuracy, " \
                "https://arxiv.org/abs/1901.08573"
    uses = {"eps": None, "steps": 5, "alpha": None, "beta": 6.0}
    attack_name = "pgd-kl"

    def validate(self) -> None:
        beta = self.params["beta"]
        if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not math.isfinite(beta) or beta < 0:
            raise RobustEvalError(f"--beta must be a number >= 0, got {beta!r}; TRADES uses beta=6 (1 to 10 is usual)")
        self.params["beta"] = float(beta)
        super().validate()

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adv = self.adversarial_examples(attack_model or model, batch)
        if isinstance(model, nn.parallel.DistributedDataParallel):
            # DDP allows one forward per backward: both views in one batch (BN sees them together).
            both = model(torch.cat([batch.x, adv]))
            logits_clean, logits_adv = both[:len(adv)], both[len(adv):]
        else:
            logits_clean = model(batch.x)
            logits_adv = model(adv)
        natural = F.cross_entropy(logits_clean, batch.y, label_smoothing=self.ctx.label_smoothing)
        robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
        return natural + self.params["beta"] * robust, logits_adv, batch.y


# ---------------------------------------------------------------------------------------------
# Per-image augmentation (torchvision.transforms.v2)


class _ImageAugmentation(Defence):
    stage = "image"

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    def validate(self) -> None:
        self.transform = self.build()

    def image(self, img: torch.Tensor) -> torch.Tensor:
        return self.transform(img)


@register_defence
class AugMix(_ImageAugmentation):
    name = "augmix"
    summary = "mix chains of augmentations with the original (optionally with the JSD consistency loss)"
    reference = "Hendrycks et al. 2020, AugMix, https://arxiv.org/abs/1912.02781"
    uses = {"severity": 3, "jsd": False, "jsd_weight": 12.0}

    def validate(self) -> None:
        p = self.params
        p["severity"] = _positive("severity", p["severity"], integer=True, upper=10)
        if not isinstance(p["jsd"], bool):
            raise RobustEvalError(f"jsd must be true or false, got {p['jsd']!r}")
        p["jsd_weight"] = _positive("jsd_weight", p["jsd_weight"])
        # With the consistency loss AugMix owns the loss (it needs the clean view and two augmix views).
        self.stage = "loss" if p["jsd"] else "image"  # type: ignore[misc]
        super().validate()

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.AugMix(severity=self.params["severity"])

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-entropy on the clean view + weight * JSD(clean, augmix, augmix) (the paper's loss)."""
        n = batch.x.shape[0]
        views = [batch.x] + [_per_image(self.transform, batch.raw).float().div_(255) for _ in range(2)]
        logits = model(torch.cat(views))
        clean, a1, a2 = logits[:n], logits[n:2 * n], logits[2 * n:]
        loss = F.cross_entropy(clean, batch.targets, label_smoothing=self.ctx.label_smoothing)
        p = [F.softmax(v, dim=1) for v in (clean, a1, a2)]
        mixture = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1).log()
        jsd = sum(F.kl_div(mixture, q, reduction="batchmean") for q in p) / 3.0
        return loss + self.params["jsd_weight"] * jsd, clean, batch.y


@register_defence
class AutoAugment(_ImageAugmentation):
    name = "autoaugment"
    summary = "AutoAugment's learned policy (the ImageNet policy)"
    reference = "Cubuk et al. 2019, AutoAugment, https://arxiv.org/abs/1805.09501"

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)


@register_defence
class RandAugment(_ImageAugmentation):
    name = "randaugment"
    summary = "two random operations per image at a fixed magnitude"
    reference = "Cubuk et al. 2020, RandAugment, https://arxiv.org/abs/1909.13719"
    uses = {"magnitude": 9}

    def validate(self) -> None:
        self.params["magnitude"] = _positive("magnitude", self.params["magnitude"], integer=True, upper=30,
                                             allow_zero=True)
        super().validate()

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.RandAugment(num_ops=2, magnitude=self.params["magnitude"])


@register_defence
class TrivialAugment(_ImageAugmentation):
    name = "trivialaugment"
    summary = "one random operation per image at a random magnitude (TrivialAugment Wide)"
    reference = "Mueller & Hutter 2021, TrivialAugment, https://arxiv.org/abs/2103.10158"

    def build(self) -> Callable[[torch.Tensor], torch.Tensor]:
        from torchvision.transforms import v2

        return v2.TrivialAugmentWide()


# ---------------------------------------------------------------------------------------------
# Pixel noise and batch mixing


@register_defence
class GaussianNoise(Defence):
    name = "gaussian-noise"
    stage = "pixel"
    summary = "add N(0, noise_std^2) pixel noise to a random noise_p of the images"
    reference = "Rusak et al. 2020, A simple way to make neural networks robust against diverse image " \
                "corruptions, https://arxiv.org/abs/2001.06057"
    uses = {"noise_std": 0.1, "noise_p": 0.5}

    def validate(self) -> None:
        self.params["noise_std"] = _positive("noise_std", self.params["noise_std"], upper=1)
        self.params["noise_p"] = _positive("noise_p", self.params["noise_p"], upper=1)

    def pixel(self, x: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(x.shape[0]) < self.params["noise_p"]).to(x.device).view(-1, 1, 1, 1)
        noise = torch.randn(x.shape).to(x.device) * self.params["noise_std"]
        return torch.where(chosen, (x + noise).clamp_(0, 1), x)


class _Mix(Defence):
    stage = "mix"
    uses = {"mix_alpha": 1.0}
    #: The torchvision.transforms.v2 class doing the mixing.
    v2_class: ClassVar[str] = ""

    def validate(self) -> None:
        from torchvision.transforms import v2

        self.params["mix_alpha"] = _positive("mix_alpha", self.params["mix_alpha"])
        self.transform = getattr(v2, self.v2_class)(alpha=self.params["mix_alpha"], num_classes=self.ctx.num_classes)

    def mix(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(x, y)


@register_defence
class CutMix(_Mix):
    name = "cutmix"
    summary = "paste a random box from another image; labels mixed by area"
    reference = "Yun et al. 2019, CutMix, https://arxiv.org/abs/1905.04899"
    v2_class = "CutMix"


@register_defence
class MixUp(_Mix):
    name = "mixup"
    summary = "convex combination of image pairs and of their labels"
    reference = "Zhang et al. 2018, mixup, https://arxiv.org/abs/1710.09412"
    v2_class = "MixUp"


# ---------------------------------------------------------------------------------------------
# Combining defences


def _per_image(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each (C, H, W) image on its own: every image draws its own operations."""
    return torch.stack([transform(img) for img in images])


def parse_names(spec: str | Sequence[str] | None) -> list[str]:
    """``"augmix,pgd-at"`` -> ['augmix', 'pgd-at']; ``none``/``standard``/empty -> []."""
    if spec is None:
        return []
    parts = spec.split(",") if isinstance(spec, str) else [p for s in spec for p in str(s).split(",")]
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part or part in ("none", "standard"):
            continue
        DEFENCES.entry(part)  # unknown name: one line with the valid choices
        if part in names:
            raise RobustEvalError(f"defence '{part}' is listed twice in --defence; list each once")
        names.append(part)
    return names


class Pipeline:
    """The selected defences, ordered by stage, applied to each training batch."""

    def __init__(self, names: Sequence[str], params: DefenceParams | None = None,
                 ctx: DefenceContext | None = None) -> None:
        params = params or DefenceParams()
        ctx = ctx or DefenceContext(num_classes=10, dataset="fashion-mnist")
        self.names = list(names)
        self.defences = [DEFENCES.entry(n)(params, ctx) for n in self.names]
        used = {k for d in self.defences for k in d.uses}
        unused = [k for k in params.given() if k not in used and k != "monitor_images"]
        if unused:
            owners = sorted(n for n in DEFENCES.list() if unused[0] in DEFENCES.entry(n).uses)
            raise RobustEvalError(
                f"{_flag(unused[0])} is not used by --defence {','.join(self.names) or 'none'}; it applies to "
                f"{', '.join(owners)}: add one of them or drop {_flag(unused[0])}"
            )
        self.monitor_images = _positive("monitor_images", params.monitor_images, integer=True) \
            if params.monitor_images is not None else 1000
        by_stage = {s: [d for d in self.defences if d.stage == s] for s in STAGES}
        if len(by_stage["loss"]) > 1:
            a, b = (d.name for d in by_stage["loss"][:2])
            raise RobustEvalError(
                f"--defence {a},{b} is an incompatible combination: both define the training loss "
                f"(fgsm-rs, pgd-at, trades and augmix with --jsd); keep one of them"
            )
        self.loss_owner = by_stage["loss"][0] if by_stage["loss"] else None
        if by_stage["mix"] and self.loss_owner is not None:
            raise RobustEvalError(
                f"--defence {by_stage['mix'][0].name},{self.loss_owner.name} is an incompatible combination: "
                f"{self.loss_owner.name} needs each image's own label, and {by_stage['mix'][0].name} mixes "
                "labels; drop one of them"
            )
        self.image_stage = by_stage["image"]
        self.pixel_stage = by_stage["pixel"]
        self.mixers = by_stage["mix"]
        self.ctx = ctx

    @property
    def adversarial(self) -> bool:
        return any(d.adversarial for d in self.defences)

    @property
    def label(self) -> str:
        return ",".join(self.names) or "standard"

    def settings(self) -> dict[str, dict[str, Any]]:
        return {d.name: d.settings() for d in self.defences}

    def start_epoch(self, epoch: int) -> None:
        for d in self.defences:
            d.start_epoch(epoch)

    def prepare(self, raw: torch.Tensor, y: torch.Tensor, indices: Sequence[int],
                device: torch.device | None = None) -> Prepared:
        """Image, pixel and mix stages for a uint8 (N, C, H, W) batch. Uses the global torch RNG."""
        images = raw
        for d in self.image_stage:
            images = _per_image(d.image, images)
        device = device or raw.device
        x = images.to(device).float().div_(255)
        for d in self.pixel_stage:
            x = d.pixel(x)
        y = y.to(device)
        targets = y
        if self.mixers:
            mixer = self.mixers[int(torch.randint(len(self.mixers), ())) if len(self.mixers) > 1 else 0]
            x, targets = mixer.mix(x, y)
        return Prepared(x=x, y=y, targets=targets, raw=raw, indices=[int(i) for i in indices])

    def loss(self, model: nn.Module, batch: Prepared, attack_model: nn.Module | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits for the running accuracy, labels for them); the model is in train mode."""
        if self.loss_owner is not None:
            return self.loss_owner.loss(model, batch, attack_model)
        logits = model(batch.x)
        loss = F.cross_entropy(logits, batch.targets, label_smoothing=self.ctx.label_smoothing)
        labels = batch.targets.argmax(1) if batch.targets.ndim == 2 else batch.targets
        return loss, logits, labels


_DEFAULT_TEXT: dict[Any, str] = {
    "eps": "dataset default (fashion-mnist 0.1, cifar10 8/255)",
    ("fgsm-rs", "alpha"): "1.25*eps",
    "alpha": "2.5*eps/steps",
}


def param_names() -> list[str]:
    return [f.name for f in fields(DefenceParams)]
