"""Square Attack: score-based random search with square-shaped updates, needing only the model's logits.

Every query is one forward pass through :meth:`Attack._logits`; no gradient is ever taken, so the
attack runs on models without gradients (ONNX Runtime, int8) and is the check that a white-box
attack was not fooled by masked gradients. Each image draws its own square positions and signs from
its own generator, keeps its own iteration counter (hence its own square size), retires the moment
it is fooled, and its slot in the working batch goes to the next waiting image: results do not
depend on the batch size or order.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
from torch import nn

from attacks.base import Attack, balanced_batch, check_bool, check_int, check_positive, register_attack
from attacks.inference import SplitQueries, optimised_copy
from robustbench_lite.errors import RobustEvalError
from robustbench_lite.seeding import generators, uniform_rows

#: Iterations (on a 10,000-query scale) after which p is divided by the second number; beyond the last, 512.
_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
#: Iterations whose random numbers are drawn at once from an image's generator (one call per block).
_BLOCK = 64


def p_selection(p_init: float, iteration: int, n_queries: int) -> float:
    """The fraction of pixels a square covers at ``iteration`` (0-based) of ``n_queries``.

    The paper's piecewise-constant schedule, halving p at fixed points of a 10,000-query run and
    rescaled to the budget (AutoAttack's ``resc_schedule=True``).
    """
    it = int(iteration / n_queries * 10000)
    for bound, divisor in _SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


def _eta_rectangle(rows: int, cols: int) -> torch.Tensor:
    """Nested rectangles around the centre, weight 1/k^2 for the k-th ring, unit L2 norm (float64)."""
    out = torch.zeros(rows, cols, dtype=torch.float64)
    if rows == 0 or cols == 0:
        return out
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        out[max(top - k, 0) : min(top + k + 1, rows), max(left - k, 0) : min(left + k + 1, cols)] += 1.0 / (k + 1) ** 2
    return out / out.norm()


def eta(s: int) -> torch.Tensor:
    """The L2 update pattern of an s x s square: a positive upper and a negative lower half, unit norm."""
    out = torch.cat([_eta_rectangle(s // 2, s), -_eta_rectangle(s - s // 2, s)])
    return out / out.norm()


@register_attack
class Square(Attack):
    r"""Square Attack: random search on the margin loss, one square-shaped change per query.

    Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box adversarial
    attack via random search", ECCV 2020, https://arxiv.org/abs/1912.00049

    Score-based: it reads only logits (``needs_gradients = False``), so it attacks models without
    gradients and is immune to gradient masking. It minimises the margin ``z_y - max_{j!=y} z_j``
    (targeted: ``max_{j!=t} z_j - z_t``) and keeps a change only when it lowers the margin.

    Norm: ``Linf`` starts from vertical stripes of +-eps and moves a square of side ~sqrt(p * H * W)
    to a random +-eps per channel; ``L2`` starts from a grid of +-eta patterns and moves the mass of
    one square window into another, staying on the eps-sphere. The side follows the paper's
    schedule of p over the query budget (``p_init`` at the start, down to ``p_init / 512``).

    Differences from the reference implementation (AutoAttack's ``square.py``): each image draws
    its own square positions and signs (the reference draws one position per iteration for the
    whole batch), and a square may sit at every position including the last row and column (the
    reference never draws the last one).

    Args:
        eps: budget in pixel units (> 0; at most 1 for Linf).
        norm: ``"Linf"`` or ``"L2"`` (default ``"Linf"``).
        n_queries: random-search iterations per restart (default 5000, AutoAttack standard); each
            is one forward pass, after one for the starting point, so an image costs at most
            ``n_queries + 1`` forward passes per restart.
        p_init: initial fraction of pixels changed by a square (default 0.8).
        restarts: runs from fresh random starts; a restart only re-attacks images not yet fooled
            (default 1).
        targeted: drive the prediction to ``targets`` instead of away from ``labels`` (default False).
        seed: run seed; with each image's dataset index it fixes the start and every square (default 0).
        optimise: on CPU, send the queries to a frozen TorchScript copy optimised for inference
            (:func:`attacks.inference.optimised_copy`, ~1.6x faster on the zoo's models) when its
            logits match the model's, each batch split over the intra-op threads
            (:class:`attacks.inference.SplitQueries`, ~1.3x more); which images are fooled is
            always checked on the model itself (default True; False queries the model for every
            step).

    Attributes:
        optimised: after a call, whether the copy was used.
        queries: after a call, the forward passes spent on each image (int64, input order), the
            model's own check of the verdict included when ``optimised``; ``None`` before the
            first call.

    Shapes:
        images (N, C, H, W) float in [0, 1]; labels (N,) int64; output (N, C, H, W) in [0, 1] with
        ``||output - images|| <= eps`` per image.

    Example:
        >>> attack = Square(eps=8 / 255, n_queries=5000)
        >>> out = attack.run(onnx_model, images, labels)     # out.success, out.forward; no gradients used
        >>> attack.queries.float().median()                  # queries per image
    """

    name = "square"
    streaming = True
    needs_gradients = False
    quick = {"n_queries": 200}
    #: The starting point (stripes, or the L2 grid) and every square are random: the seed matters.
    random_start: ClassVar[bool] = True

    def __init__(
        self,
        eps: float,
        *,
        norm: str = "Linf",
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        targeted: bool = False,
        seed: int = 0,
        optimise: bool = True,
    ) -> None:
        super().__init__(eps, norm=norm, targeted=targeted, seed=seed)
        self.optimise = check_bool("optimise", optimise)
        self.optimised = False
        self.n_queries = check_int("n_queries", n_queries, 1)
        self.p_init = check_positive("p_init", p_init)
        if self.p_init > 1:
            raise RobustEvalError(f"p_init must be in (0, 1], got {p_init!r}; pass e.g. p_init=0.8")
        self.restarts = check_int("restarts", restarts, 1)
        self.queries: torch.Tensor | None = None

    def params(self) -> dict[str, Any]:
        return {**super().params(), "n_queries": self.n_queries, "p_init": self.p_init, "restarts": self.restarts,
                "optimise": self.optimise}

    @property
    def label(self) -> str:
        return f"{self.name}({self.norm}, eps={self.eps:.4g}, queries={self.n_queries}, restarts={self.restarts})"

    # -- algorithm -------------------------------------------------------------------------------

    def perturb(  # type: ignore[override]
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: list[int],
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n = images.shape[0]
        out = images.clone()
        success = torch.zeros(n, dtype=torch.bool, device=images.device)
        best_margin = torch.full((n,), float("inf"), device=images.device)
        queries = torch.zeros(n, dtype=torch.long, device=images.device)
        # Thousands of queries on one image shape: on CPU they go to an inference-optimised copy
        # when it gives the model's logits (attacks.inference); the verdict is the model's own.
        fast = optimised_copy(model, images) if self.optimise else None
        self.optimised = fast is not None
        # The copy's queries are split over threads, one intra-op thread each (attacks.inference).
        with torch.no_grad(), SplitQueries(fast) if fast is not None else nullcontext(model) as search:
            for restart in range(self.restarts):
                todo = (~success).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                idx = [indices[i] for i in todo.tolist()]
                adv, hit, margin, spent = self._run_once(search, images[todo], labels[todo], idx, restart,
                                                         batch_size or n)
                # Among restarts that fail, keep the point with the lowest margin (the closest call).
                better = hit | (margin < best_margin[todo])
                rows = todo[better]
                out[rows] = adv[better]
                best_margin[rows] = margin[better]
                success[rows] = hit[better]
                queries[todo] += spent
            if fast is not None:  # the copy's verdicts steered the search; the model's count
                success = self._judge(model, out, labels, batch_size or n)
                queries += 1
        self.queries = queries.cpu()
        return out, success

    def _margin(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss to minimise: how far the label (target) is from losing (winning); < 0 once fooled."""
        logits = logits.detach().float() if logits.dtype != torch.float64 else logits.detach()
        own = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.scatter(1, labels[:, None], -float("inf")).amax(dim=1)
        return others - own if self.targeted else own - others

    def _run_once(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        indices: list[int],
        restart: int,
        batch_size: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One run over all images: (best points, fooled, their margin, forward passes per image).

        The working batch holds up to ``batch_size`` images, each at its own iteration ``t`` (-1:
        its starting point awaits evaluation). One forward pass evaluates every image's candidate;
        fooled images and images out of queries leave, waiting images fill the free slots.
        """
        m, (c, h, w) = x.shape[0], x.shape[1:]
        batch_size = balanced_batch(m, batch_size)  # no small last round
        dev = x.device
        side = self._side_table(c, h, w, dev)
        etas = self._eta_table(side, dev, x.dtype) if self.norm == "L2" else None
        draws = 2 + c if self.norm == "Linf" else 5 + c  # per iteration: position(s), [transpose], signs
        out = torch.empty_like(x)
        fooled = torch.zeros(m, dtype=torch.bool, device=dev)
        margin_out = torch.full((m,), float("inf"), device=dev)
        spent = torch.zeros(m, dtype=torch.long, device=dev)
        rows = torch.zeros(0, dtype=torch.long, device=dev)  # images in the working batch
        best, best_margin = x[:0], torch.zeros(0, device=dev)
        t = torch.zeros(0, dtype=torch.long, device=dev)
        rand = torch.zeros(0, _BLOCK, draws, device=dev)
        gens: list[torch.Generator] = []
        queued = 0
        while True:
            free = min(batch_size - rows.numel(), m - queued)
            if free > 0:
                new = torch.arange(queued, queued + free, device=dev)
                new_gens = generators(self.seed, indices[queued : queued + free], self.name, restart)
                rows, gens = torch.cat([rows, new]), gens + new_gens
                best = torch.cat([best, self._start(x[new], new_gens)])
                best_margin = torch.cat([best_margin, torch.full((free,), float("inf"), device=dev)])
                t = torch.cat([t, torch.full((free,), -1, dtype=torch.long, device=dev)])
                rand = torch.cat([rand, torch.zeros(free, _BLOCK, draws, device=dev)])
                queued += free
            if rows.numel() == 0:
                break
            xr = x[rows]
            searching = t >= 0
            cand = best
            if bool(searching.any()):
                refill = (searching & (t % _BLOCK == 0)).nonzero().squeeze(1)
                if refill.numel():
                    rand[refill] = uniform_rows([gens[i] for i in refill.tolist()], (_BLOCK, draws)).to(dev)
                u = rand[torch.arange(rows.numel(), device=dev), t.clamp(min=0) % _BLOCK]
                s = side[t.clamp(min=0)]
                step = self._linf_step if self.norm == "Linf" else self._l2_step
                proposal = step(best, xr, s, u, etas)
                cand = torch.where(searching.view(-1, 1, 1, 1), proposal, best)
            logits = self._logits(model, cand)
            margin = self._margin(logits, y[rows])
            hit = self._success(logits, y[rows])
            # The start is always taken; afterwards a candidate only when it lowers the margin or fools.
            take = ~searching | hit | (margin < best_margin)
            best = torch.where(take.view(-1, 1, 1, 1), cand, best)
            best_margin = torch.where(take, margin, best_margin)
            t = t + 1
            spent[rows] += 1
            leave = hit | (searching & (t >= self.n_queries))
            if bool(leave.any()):
                gone = rows[leave]
                out[gone] = best[leave]
                fooled[gone] = hit[leave]
                margin_out[gone] = best_margin[leave].to(margin_out.dtype)
                keep = ~leave
                keep_list = keep.tolist()
                rows, best, best_margin, t, rand = rows[keep], best[keep], best_margin[keep], t[keep], rand[keep]
                gens = [g for g, k in zip(gens, keep_list, strict=True) if k]
        return out, fooled, margin_out, spent

    # -- the random search: starting points and one step per norm ----------------------------------

    def _side_table(self, c: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """Square side at each iteration 0..n_queries-1 (int64), from the p schedule."""
        lo = 1 if self.norm == "Linf" else 3
        sides = []
        for it in range(self.n_queries):
            s = max(int(round(math.sqrt(p_selection(self.p_init, it, self.n_queries) * h * w))), lo)
            if self.norm == "L2" and s % 2 == 0:
                s += 1  # an odd side centres the eta pattern
            sides.append(min(s, h, w))
        return torch.tensor(sides, dtype=torch.long, device=device)

    @staticmethod
    def _eta_table(side: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(max side + 1, S, S): eta(s) in the top-left corner of slot s, for every side in use."""
        big = int(side.max())
        table = torch.zeros(big + 1, big, big, dtype=torch.float64)
        for s in sorted(set(side.tolist())):
            table[s, :s, :s] = eta(s)
        return table.to(device=device, dtype=dtype)

    def _start(self, x: torch.Tensor, gens: list[torch.Generator]) -> torch.Tensor:
        """Starting points: Linf vertical stripes of +-eps per channel and column; L2 a grid of
        +-eta tiles rescaled onto the eps-sphere. Drawn on the CPU from each image's generator."""
        n, (c, h, w) = x.shape[0], x.shape[1:]
        if self.norm == "Linf":
            u = uniform_rows(gens, (c, 1, w)).to(device=x.device, dtype=x.dtype)
            return (x + self.eps * _signs(u)).clamp(0, 1)
        s = max(h // 5, 1)
        first = (h - 5 * s) // 2  # the reference starts both axes at this offset
        tiles_h, tiles_w = h // s, w // s
        u = uniform_rows(gens, (tiles_h * tiles_w, 1 + c)).to(device=x.device, dtype=x.dtype)
        pattern = eta(s).to(device=x.device, dtype=x.dtype)
        delta = torch.zeros_like(x)
        for k in range(tiles_h * tiles_w):
            top, left = first + (k // tiles_w) * s, first + (k % tiles_w) * s
            rows_in, cols_in = max(min(s, h - top), 0), max(min(s, w - left), 0)
            if rows_in == 0 or cols_in == 0:
                continue  # a tile past the edge (the reference's grid can overhang): nothing to add
            tile = torch.where((u[:, k, 0] < 0.5).view(-1, 1, 1), pattern.T, pattern)  # random transpose
            tile = tile[:, None, :rows_in, :cols_in] * _signs(u[:, k, 1:]).view(n, c, 1, 1)
            delta[:, :, top : top + rows_in, left : left + cols_in] += tile
        return (x + self.eps * delta / _l2(delta).clamp_min(1e-12)).clamp(0, 1)

    def _linf_step(self, best: torch.Tensor, x: torch.Tensor, s: torch.Tensor, u: torch.Tensor,
                   etas: torch.Tensor | None) -> torch.Tensor:
        """Set a random square of each image to +-eps around x, one sign per channel."""
        c = x.shape[1]
        window = _window(s, u[:, 0], u[:, 1], x.shape[2], x.shape[3])
        change = 2 * self.eps * _signs(u[:, 2 : 2 + c]).to(x.dtype).view(-1, c, 1, 1)
        cand = best + window * change
        return torch.minimum(torch.maximum(cand, x - self.eps), x + self.eps).clamp(0, 1)

    def _l2_step(self, best: torch.Tensor, x: torch.Tensor, s: torch.Tensor, u: torch.Tensor,
                 etas: torch.Tensor | None) -> torch.Tensor:
        """Move the perturbation of a second window into the first (plus a fresh +-eta), keeping
        the image's L2 norm at eps; per channel, as in the reference."""
        assert etas is not None
        n, c, h, w = x.shape
        delta = best - x
        first = _window(s, u[:, 0], u[:, 1], h, w)
        second = _window(s, u[:, 2], u[:, 3], h, w)
        in_first = (delta * first).square().sum((2, 3), keepdim=True).sqrt()
        in_both = (delta * torch.maximum(first, second)).square().sum((2, 3), keepdim=True).sqrt()
        total = _l2(delta)
        # eta(s) placed at each image's first window, transposed for half of the draws.
        vh, vw = _corner(s, u[:, 0], h), _corner(s, u[:, 1], w)
        big = etas.shape[1]
        ii = (torch.arange(h, device=x.device) - vh[:, None]).clamp(0, big - 1)
        jj = (torch.arange(w, device=x.device) - vw[:, None]).clamp(0, big - 1)
        transpose = (u[:, 4] < 0.5)[:, None, None]
        straight = etas[s[:, None, None], ii[:, :, None], jj[:, None, :]]
        flipped = etas[s[:, None, None], jj[:, None, :], ii[:, :, None]]
        pattern = torch.where(transpose, flipped, straight)[:, None] * first
        new = pattern * _signs(u[:, 5 : 5 + c]).to(x.dtype).view(n, c, 1, 1) + delta * first / (1e-12 + in_first)
        room = (self.eps**2 - total.square()).clamp(min=0) / c + in_both.square()
        new = new / (1e-12 + new.square().sum((2, 3), keepdim=True).sqrt()) * room.sqrt()
        delta = torch.where(first.bool(), new, delta * (1 - second))
        return (x + self.eps * delta / (1e-12 + _l2(delta))).clamp(0, 1)


def _signs(u: torch.Tensor) -> torch.Tensor:
    """+-1 from uniforms in [0, 1)."""
    return torch.where(u < 0.5, -1.0, 1.0).to(u.dtype)


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Per-image L2 norm, shaped (N, 1, 1, 1)."""
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _corner(s: torch.Tensor, u: torch.Tensor, size: int) -> torch.Tensor:
    """A uniform top (or left) coordinate in 0..size-s for each image's square."""
    span = (size - s + 1).to(u.dtype)
    return torch.minimum((u * span).long(), size - s)


def _window(s: torch.Tensor, u_top: torch.Tensor, u_left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, 1, H, W) 0/1 masks of each image's s x s square at a uniformly random position."""
    top, left = _corner(s, u_top, h), _corner(s, u_left, w)
    ar_h, ar_w = torch.arange(h, device=s.device), torch.arange(w, device=s.device)
    in_h = (ar_h >= top[:, None]) & (ar_h < (top + s)[:, None])
    in_w = (ar_w >= left[:, None]) & (ar_w < (left + s)[:, None])
    return (in_h[:, None, :, None] & in_w[:, None, None, :]).to(u_top.dtype)
