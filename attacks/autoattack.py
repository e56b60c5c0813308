"""An AutoAttack-grade ensemble: the attacks in sequence, each on the images every earlier one failed on.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, https://arxiv.org/abs/2003.01690. Robust accuracy is the
per-image worst case over the components, and :class:`AttackOutput.broken_by` says which
component broke each image (its index in :attr:`AutoAttack.components`, -1 for none), so a
result can show what each attack contributed.

Versions (components run in this order; each is a registered native attack):

* ``standard``: ``apgd-ce``, ``apgd-t``, ``fab-t``, ``square`` -- AutoAttack's standard version.
  ``fab-t`` is not implemented natively; components that are not registered are left out and
  named in :attr:`AutoAttack.missing` (the results say so).
* ``rand``: ``apgd-ce``, ``apgd-dlr`` with expectation over transformation (each step's gradient
  averaged over :data:`EOT_ITER` passes), AutoAttack's version for randomised defences.

On a model without input gradients only gradient-free components run (Square); with a transfer
model (``--surrogate``) the gradient components are transfer attacks and Square is still judged on
the model itself.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.base import ATTACKS, Attack, check_int, register_attack
from robustbench_lite.errors import RobustEvalError

#: Gradients averaged per step in the ``rand`` version (AutoAttack's ``eot_iter``).
EOT_ITER = 20
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
}


def _names(value: Any) -> tuple[str, ...]:
    from robustbench_lite.options import comma_list

    return comma_list(value, "components", "apgd-ce,square")


@register_attack
class AutoAttack(Attack):
    """AutoAttack-grade ensemble (APGD-CE, APGD-T, Square): each attacks only the images no earlier one fooled.

    Args:
        eps, norm, seed: as every attack; each component gets them.
        version: ``standard`` or ``rand`` (see the module docstring).
        components: the component attack names in order, instead of the version's
            (e.g. ``"apgd-ce,square"``); unknown names are an error.
        steps: iterations of the gradient components (default: theirs, 100 for APGD).
        n_queries: query budget of the score-based components (default: theirs, 5000 for Square).
        gradients: whether the model has input gradients (default True); False keeps only the
            components that need none.

    Attributes:
        seconds: wall seconds each component has spent in this instance's calls, by name: where
            the time of an evaluation went.
    """

    name = "autoattack"
    streaming = True
    quick = {"steps": 5, "n_queries": 100}
    version_names: ClassVar[tuple[str, ...]] = tuple(VERSIONS)

    def __init__(self, eps: float, *, norm: str = "Linf", seed: int = 0, version: str = "standard",
                 components: Any = None, steps: int | None = None, n_queries: int | None = None,
                 gradients: bool = True, targeted: bool = False) -> None:
        super().__init__(eps, norm=norm, seed=seed)
        if targeted:
            raise RobustEvalError("autoattack is untargeted (its apgd-t runs its own targets); drop targeted")
        if version not in VERSIONS:
            raise RobustEvalError(f"autoattack version {version!r} is not valid; choose one of {', '.join(VERSIONS)}")
        self.version = version
        self.steps = None if steps is None else check_int("steps", steps, 1)
        self.queries = None if n_queries is None else check_int("n_queries", n_queries, 1)
        self.gradients = bool(gradients)
        self.requested = _names(components) if components is not None else VERSIONS[version]
        self.custom = components is not None
        unknown = [c for c in self.requested if c not in ATTACKS and c not in VERSIONS["standard"]]
        if unknown or "autoattack" in self.requested:
            bad = ", ".join(unknown or ["autoattack"])
            raise RobustEvalError(f"autoattack components {bad} are not native attacks; "
                                  f"valid: {', '.join(n for n in ATTACKS.list() if n != 'autoattack')}")
        usable = [c for c in self.requested if c in ATTACKS]
        if not self.gradients:
            usable = [c for c in usable if not getattr(ATTACKS.entry(c), "needs_gradients", True)]
        self.components: tuple[str, ...] = tuple(usable)
        self.missing: tuple[str, ...] = tuple(c for c in self.requested if c not in self.components)
        if not self.components:
            raise RobustEvalError(
                "autoattack has no component it can run here (" + ", ".join(self.missing) + " need input gradients or "
                "are not available); pass a surrogate for a model without gradients")
        self._built = [self._component(c) for c in self.components]
        self.seconds: dict[str, float] = dict.fromkeys(self.components, 0.0)

    def _component(self, name: str) -> Attack:
        cls = ATTACKS.entry(name)
        params: dict[str, Any] = {"eps": self.eps, "norm": self.norm, "seed": self.seed}
        accepted = cls.__init__.__code__.co_varnames
        if self.steps is not None and "steps" in accepted:
            params["steps"] = self.steps
        if self.queries is not None and "n_queries" in accepted:
            params["n_queries"] = self.queries
        if self.version == "rand" and "eot_iter" in accepted:
            params["eot_iter"] = EOT_ITER
        if self.norm not in cls.norms:
            raise RobustEvalError(f"autoattack component {name} does not support {self.norm}")
        return cls(**params)

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eps": self.eps, "norm": self.norm, "seed": self.seed, "version": self.version,
                               "steps": self.steps, "n_queries": self.queries, "gradients": self.gradients}
        if self.custom:
            out["components"] = ",".join(self.requested)
        return out

    @property
    def random_start(self) -> bool:
        """Whether the seed changes anything: some component draws random starts or queries."""
        return any(getattr(a, "random_start", False) for a in self._built)

    @property
    def label(self) -> str:
        return f"autoattack-{self.version}({self.norm}, eps={self.eps:.4g}: {'+'.join(self.components)})"

    def perturb(  # type: ignore[override]
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, indices: list[int],
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adversarial = images.clone()
        success = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        broken_by = torch.full((len(images),), -1, dtype=torch.long, device=images.device)
        for k, attack in enumerate(self._built):
            rows = (~success).nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            start = time.perf_counter()
            out = attack.run(model, images[rows], labels[rows], [indices[i] for i in rows.tolist()],
                             batch_size=batch_size)
            self.seconds[self.components[k]] += time.perf_counter() - start
            # the component's passes are the ensemble's
            self._counts[0] += out.forward
            self._counts[1] += out.backward
            self._counts[2] += out.wasted_backward
            assert out.success is not None
            hit = rows[out.success]
            adversarial[hit] = out.adversarial[out.success]
            success[hit] = True
            broken_by[hit] = k
        return adversarial, success, broken_by
