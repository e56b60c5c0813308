"""Subpopulation shift (BREEDS-style): class hierarchies and the ``subpop/*`` splits.

A :class:`Hierarchy` groups fine classes into coarse ones; source and target use disjoint fine
classes of each coarse class (Santurkar et al. 2021, "BREEDS", arXiv:2008.04859). Registering a
hierarchy also registers its two datasets in :data:`robustbench_lite.data.VIEWS`
(``fashion-mnist:subpop-source``, ``-target``), so a model can be trained on the coarse task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from robustbench_lite import data as data_mod
from robustbench_lite.data import FASHION_MNIST_CLASSES, ImageDataset
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.registry import Registry
from robustbench_lite.shift.base import Level, ShiftEnv, ShiftSplit, SplitData, register_shift


@dataclass(frozen=True)
class Hierarchy:
    """Fine classes of a dataset grouped into coarse classes, each split into source and target.

    Attributes:
        dataset: the base dataset's registry name.
        fine: the dataset's class names in label order.
        coarse: coarse class names, index = coarse label.
        parent: coarse label of each fine label.
        source, target: fine labels in each split; disjoint except for coarse classes with one
            fine class, which appear in both (nothing to split).
        reference: where the grouping comes from.
    """

    dataset: str
    fine: tuple[str, ...]
    coarse: tuple[str, ...]
    parent: tuple[int, ...]
    source: tuple[int, ...]
    target: tuple[int, ...]
    reference: str

    @classmethod
    def from_groups(cls, dataset: str, fine: Sequence[str],
                    groups: Mapping[str, tuple[Sequence[str], Sequence[str]]], reference: str) -> Hierarchy:
        """Build from ``{coarse: (source fine names, target fine names)}``; checks it is a partition."""
        index = {name: i for i, name in enumerate(fine)}
        parent = [-1] * len(fine)
        source: list[int] = []
        target: list[int] = []
        for g, (group, (src, tgt)) in enumerate(groups.items()):
            members = set(src) | set(tgt)
            if set(src) & set(tgt) and len(members) > 1:
                raise ValueError(f"{dataset} hierarchy: group '{group}' has fine classes in both splits")
            if not src or not tgt:
                raise ValueError(f"{dataset} hierarchy: group '{group}' needs source and target classes")
            for name in members:
                if name not in index:
                    raise ValueError(f"{dataset} hierarchy: '{name}' is not a class of {dataset}")
                if parent[index[name]] != -1:
                    raise ValueError(f"{dataset} hierarchy: '{name}' is in two groups")
                parent[index[name]] = g
            source += [index[n] for n in src]
            target += [index[n] for n in tgt]
        missing = [fine[i] for i, p in enumerate(parent) if p == -1]
        if missing:
            raise ValueError(f"{dataset} hierarchy: fine classes in no group: {', '.join(missing)}")
        return cls(dataset, tuple(fine), tuple(groups), tuple(parent), tuple(sorted(source)), tuple(sorted(target)),
                   reference)

    def part(self, part: str) -> tuple[int, ...]:
        """Fine labels of ``source`` or ``target``."""
        if part not in ("source", "target"):
            raise ValueError(f"unknown subpopulation part '{part}'; use source or target")
        return self.source if part == "source" else self.target

    @property
    def shared(self) -> tuple[int, ...]:
        """Fine labels in both splits (coarse classes with a single fine class)."""
        return tuple(sorted(set(self.source) & set(self.target)))

    def groups(self) -> dict[str, dict[str, list[str]]]:
        return {c: {part: [self.fine[i] for i in self.part(part) if self.parent[i] == g]
                    for part in ("source", "target")} for g, c in enumerate(self.coarse)}

    def task(self, classes: Sequence[str]) -> str | None:
        """``coarse`` or ``fine`` when ``classes`` name that task (order matters), else None."""
        classes = tuple(classes)
        if classes == self.coarse:
            return "coarse"
        unnamed = tuple(str(i) for i in range(len(self.fine)))  # a dataset copy without its names file
        if classes in (self.fine, unnamed):
            return "fine"
        return None

    def coarse_logits(self, fine_logits: torch.Tensor) -> torch.Tensor:
        """Coarse logits whose softmax sums the fine probabilities of each group (logsumexp)."""
        parent = torch.tensor(self.parent)
        return torch.stack([fine_logits[:, parent == g].logsumexp(dim=1) for g in range(len(self.coarse))], dim=1)

    def view(self, part: str) -> Callable[[ImageDataset], ImageDataset]:
        """``dataset -> its part`` with coarse labels: the ``<dataset>:subpop-<part>`` dataset."""
        fine = torch.tensor(self.part(part))
        parent = torch.tensor(self.parent)

        def make(ds: ImageDataset) -> ImageDataset:
            if self.task(ds.classes) != "fine":
                raise RobustEvalError(f"{ds.name}: classes {', '.join(ds.classes[:4])}... are not the fine classes "
                                      f"of the {self.dataset} hierarchy")
            sub = ds.subset(torch.isin(ds.labels, fine).nonzero().squeeze(1))
            meta = {**sub.meta, "hierarchy": self.dataset, "subpop": part}
            return ImageDataset(f"{self.dataset}:subpop-{part}", sub.split, sub.images, parent[sub.labels],
                                self.coarse, sub.source, meta)

        return make


HIERARCHIES: Registry[Hierarchy] = Registry("class hierarchy", "robust-eval --help: --shift-splits")


def register_hierarchy(hierarchy: Hierarchy) -> Hierarchy:
    """Register ``hierarchy`` and its two datasets ``<dataset>:subpop-source`` / ``-target``."""
    HIERARCHIES.register(hierarchy.dataset, hierarchy)
    for part in ("source", "target"):
        data_mod.VIEWS.register(f"{hierarchy.dataset}:subpop-{part}", hierarchy.view(part))
    return hierarchy


#: Fashion-MNIST groups (our grouping; the dataset has none): tops / bottoms / dresses / footwear /
#: bags. Groups with several fine classes are split between source and target; Trouser, Dress and
#: Bag are alone in their group and so appear in both splits.
FASHION_MNIST_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "tops": (("T-shirt/top", "Pullover"), ("Shirt", "Coat")),
    "bottoms": (("Trouser",), ("Trouser",)),
    "dresses": (("Dress",), ("Dress",)),
    "footwear": (("Sandal", "Sneaker"), ("Ankle boot",)),
    "bags": (("Bag",), ("Bag",)),
}

#: CIFAR-100 fine class names in label order (the ``fine_label_names`` of the dataset's ``meta`` file).
CIFAR100_FINE = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

#: The standard CIFAR-100 superclasses (``coarse_label_names``, label order) and their five fine
#: classes, as listed on https://www.cs.toronto.edu/~kriz/cifar.html (Krizhevsky 2009, "Learning
#: Multiple Layers of Features from Tiny Images", appendix). BREEDS-style split: the first three fine
#: classes of each superclass, in this order, are the source; the other two are the target.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

register_hierarchy(Hierarchy.from_groups(
    "fashion-mnist", FASHION_MNIST_CLASSES, FASHION_MNIST_GROUPS,
    "robustbench_lite grouping of the Fashion-MNIST classes (Xiao et al. 2017 define no hierarchy)",
))
register_hierarchy(Hierarchy.from_groups(
    "cifar100", CIFAR100_FINE, {c: (f[:3], f[3:]) for c, f in CIFAR100_SUPERCLASSES.items()},
    "CIFAR-100 superclasses, https://www.cs.toronto.edu/~kriz/cifar.html; source = first 3 fine classes",
))


class SubpopShift(ShiftSplit):
    """``subpop/source`` (the in-distribution reference) or ``subpop/target`` (unseen fine classes).

    A model trained on the coarse task (``--dataset <dataset>:subpop-source``) is scored on the
    source and target views of the test split, each limited like the run's test data. A model of
    the fine task is scored by mapping its predictions to coarse groups (group probability = sum
    of its fine probabilities); it has seen every fine class, so that measures coarse accuracy per
    subpopulation rather than generalisation to new ones, and stays out of the summary.
    """

    kind = "subpop"

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = f"subpop/{part}"
        self.description = f"coarse task on the {part} fine classes of a class hierarchy (fashion-mnist, cifar100)"

    def skip_reason(self, env: ShiftEnv) -> str | None:
        if env.base not in HIERARCHIES:
            return f"no class hierarchy for {env.base} (hierarchies: {', '.join(HIERARCHIES.list())})"
        if HIERARCHIES.entry(env.base).task(env.dataset.classes) is None:
            return (f"the model's classes ({', '.join(env.dataset.classes[:4])}...) are neither the fine nor the "
                    f"coarse classes of the {env.base} hierarchy")
        return None

    def build(self, env: ShiftEnv) -> list[SplitData]:
        h = HIERARCHIES.entry(env.base)
        task = h.task(env.dataset.classes)
        levels = {part: self._level(env, h, task, part)
                  for part in (("source",) if self.part == "source" else ("source", "target"))}
        level, fine_labels = levels[self.part]
        notes = [f"hierarchy: {h.reference}"]
        if h.shared:
            notes.append(f"in both splits (alone in their coarse class): {', '.join(h.fine[i] for i in h.shared)}")
        if task == "fine":
            notes.append("the model predicts fine classes (it has seen every subpopulation): fine probabilities are "
                         "summed per coarse class, so this is coarse accuracy per subpopulation, not generalisation "
                         f"to unseen ones (train on {h.dataset}:subpop-source for that); not in the summary")
        extra = {"task": task, "hierarchy": h.dataset, "groups": h.groups(),
                 "fine_classes": _per_fine(h, level, fine_labels)}
        return [SplitData(self.name, self.kind, h.coarse, [level], reference=levels["source"][0],
                          reference_name="subpop/source", shifted=self.part != "source",
                          in_summary=task == "coarse", notes=notes, extra=extra)]

    @classmethod
    def _level(cls, env: ShiftEnv, h: Hierarchy, task: str | None, part: str) -> tuple[Level, torch.Tensor]:
        """The part's level and its fine labels (cached: subpop/target rescores the source as its reference)."""
        key = f"subpop/{part}"
        if key not in env.cache:
            env.cache[key] = cls._make_level(env, h, task, part)
        return env.cache[key]

    @staticmethod
    def _make_level(env: ShiftEnv, h: Hierarchy, task: str | None, part: str) -> tuple[Level, torch.Tensor]:
        parent = torch.tensor(h.parent)
        if task == "fine":
            fine_labels = env.dataset.labels
            keep = torch.isin(fine_labels, torch.tensor(h.part(part)))
            logits = h.coarse_logits(env.clean_logits()[keep])
            return Level("", {"part": part, "n_fine_classes": len(h.part(part))}, logits,
                         parent[fine_labels[keep]], indices=env.dataset.indices[keep]), fine_labels[keep]
        base = data_mod.load(h.dataset, "test", env.data_dir)
        ds = h.view(part)(base).limit(env.limit)
        same = ds.name == env.dataset.name and torch.equal(ds.indices, env.dataset.indices)
        logits = env.clean_logits() if same else env.predict_dataset(ds, f"subpop/{part}")
        return Level("", {"part": part, "n_fine_classes": len(h.part(part))}, logits, ds.labels,
                     indices=ds.indices), base.labels[ds.indices]


def _per_fine(h: Hierarchy, level: Level, fine_labels: torch.Tensor) -> dict[str, dict[str, Any]]:
    correct = level.logits.argmax(dim=1) == level.labels
    out = {}
    for f in fine_labels.unique().tolist():
        mask = fine_labels == f
        out[h.fine[f]] = {"coarse": h.coarse[h.parent[f]], "n": int(mask.sum()),
                          "accuracy": float(correct[mask].float().mean())}
    return out


register_shift(SubpopShift("source"))
register_shift(SubpopShift("target"))
