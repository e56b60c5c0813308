"""Defences: adversarial training and augmentation recipes that plug into the training loop.

A defence acts on one stage of a training step; ``--defence a,b`` combines defences of
different stages into one :class:`Pipeline`:

0. ``sampler``: which training images each epoch shows, in what order (balanced-sampler draws
   classes evenly for imbalance; without one, every image once in a shuffled order).
1. ``image``: per-image augmentation of the uint8 batch (augmix, autoaugment, randaugment,
   trivialaugment), built on ``torchvision.transforms.v2``; each image draws its own operations.
2. ``pixel``: per-image float noise (gaussian-noise).
3. ``mix``: batch mixing with soft labels (cutmix, mixup; both together alternate per batch).
4. ``criterion``: the function of (logits, targets) minimised in place of cross-entropy
   (balanced-softmax, class-balanced for imbalance; gce, sce for label noise). At most one; the
   loss owner and plain training both use it. One remedy per flaw: a sampler and a criterion that
   both correct imbalance are refused.
5. ``loss``: what the model is trained on and with which loss (fgsm-rs, pgd-at, trades, and augmix
   with its Jensen-Shannon consistency). At most one defence owns the loss.

Each defence is one registered entry (:data:`DEFENCES`) with its own frozen ``Params``, the flags
that set them, and hooks the loop asks instead of checking names (``early_stop``,
``heldout_accuracy``, ``start_epoch``). Randomness comes from the global torch RNG, which the
training loop seeds per (seed, epoch, step), and from the attacks' per-image generators keyed by
(seed, epoch, dataset index), so a resumed run repeats an uninterrupted one exactly.

Adding a defence: a class with ``@register_defence`` in one of these modules (or a new one
imported below, which fixes its flags' place in ``--help``).
"""

# Import order is flag order in --help: adversarial, augmentation, mixing and noise, criteria, samplers.
from robustbench_lite.training.defences import adversarial, augment, criteria, mixing, sampling
from robustbench_lite.training.defences.base import (
    DEFENCES,
    FLAGS,
    STAGES,
    Defence,
    DefenceContext,
    Flag,
    NoParams,
    Params,
    Prepared,
    param,
    register_defence,
)
from robustbench_lite.training.defences.options import DefenceOptions, add_arguments, parse_names
from robustbench_lite.training.defences.pipeline import Pipeline

__all__ = [
    "DEFENCES", "FLAGS", "STAGES", "Defence", "DefenceContext", "DefenceOptions", "Flag", "NoParams", "Params",
    "Pipeline", "Prepared", "add_arguments", "adversarial", "augment", "criteria", "mixing", "param", "parse_names",
    "register_defence", "sampling",
]
