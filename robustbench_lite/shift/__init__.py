"""Dataset-shift splits: natural, subpopulation (BREEDS-style), covariate and label (prior) shift.

Every split is an entry of :data:`SHIFTS`, named ``<kind>/<name>``; importing the package
registers them all, one module per kind:

- :mod:`~robustbench_lite.shift.natural`: ``natural/cifar10.1-v4``, ``natural/cifar10.1-v6``
  (Recht et al. 2019, CIFAR-10.1 ``.npy`` files), ``natural/cifar10.2-test``,
  ``natural/cifar10.2-train`` (Lu et al. 2020, CIFAR-10.2 ``.npz`` files): new test sets for
  CIFAR-10 models. ``natural/folder``: the user's own shifted sets (``--shift-natural PATH``,
  image folders whose class names match the model's).
- :mod:`~robustbench_lite.shift.subpop`: ``subpop/source``, ``subpop/target``: a
  :class:`Hierarchy` groups fine classes into coarse ones; source and target use disjoint fine
  classes of each coarse class (Santurkar et al. 2021, "BREEDS", arXiv:2008.04859). The same
  splits are datasets for training: ``--dataset fashion-mnist:subpop-source`` (registered in
  :data:`robustbench_lite.data.VIEWS` when this package is imported).
- :mod:`~robustbench_lite.shift.covariate`: ``covariate/<transform>``: seeded pixel-space
  transforms at five intensities (geometric, photometric, resolution); per-image randomness from
  :func:`robustbench_lite.seeding.generators`.
- :mod:`~robustbench_lite.shift.label`: ``label/dirichlet``: the test set resampled with
  Dirichlet class priors (Lipton et al. 2018, arXiv:1802.03916) at several concentrations, many
  seeded draws each; scored from the clean logits, so it costs no model pass.

A split is built against a :class:`ShiftEnv` (the test data, the options and callables that run
the model); it returns :class:`SplitData` (logits and labels per intensity) that the shift suite
scores (:mod:`robustbench_lite.shift.base`). This package never imports the suites or the CLI,
and :mod:`robustbench_lite.data` never imports it: a module that resolves the ``subpop-*``
dataset names imports this package first.
"""

from __future__ import annotations

from robustbench_lite.shift.base import (
    DEFAULT_ALPHAS,
    DEFAULT_DRAWS,
    INTENSITIES,
    SHIFTS,
    Level,
    ShiftEnv,
    ShiftOptions,
    ShiftSplit,
    SplitData,
    Transform,
    register_shift,
    select,
)
from robustbench_lite.shift.covariate import (
    CovariateShift,
    brightness,
    contrast,
    hue,
    invert,
    resolution,
    rotate,
    scale,
    translate,
)
from robustbench_lite.shift.label import LabelShift, dirichlet_resample
from robustbench_lite.shift.natural import (
    FolderShift,
    NaturalShift,
    conform,
    match_classes,
    read_cifar10_1,
    read_cifar10_2,
)
from robustbench_lite.shift.subpop import (
    CIFAR100_FINE,
    CIFAR100_SUPERCLASSES,
    FASHION_MNIST_GROUPS,
    HIERARCHIES,
    Hierarchy,
    SubpopShift,
    register_hierarchy,
)

__all__ = [
    "CIFAR100_FINE", "CIFAR100_SUPERCLASSES", "DEFAULT_ALPHAS", "DEFAULT_DRAWS", "FASHION_MNIST_GROUPS",
    "HIERARCHIES", "INTENSITIES", "SHIFTS",
    "CovariateShift", "FolderShift", "Hierarchy", "LabelShift", "Level", "NaturalShift", "ShiftEnv", "ShiftOptions",
    "ShiftSplit", "SplitData", "SubpopShift", "Transform",
    "brightness", "conform", "contrast", "dirichlet_resample", "hue", "invert", "match_classes", "read_cifar10_1",
    "read_cifar10_2", "register_hierarchy", "register_shift", "resolution", "rotate", "scale", "select", "translate",
]
