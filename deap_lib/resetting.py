"""Retrieval-guided gradient resetting (CDD, docs/methods/cdd.rst §Gradient resetting): which compactor rows stop receiving the task gradient.

Per block ``l`` (``C`` = the compactor's rows), every iteration of the resetting phase:

1. the batch's teacher vectors ``t_i`` (GAP of the teacher's conv2 + BN2 output) enter a FIFO memory bank
   ``G_l`` (capacity ``Q``; the batch itself is then part of the gallery);
2. each ``t_i`` retrieves its top-``k`` neighbours ``n_i1..n_ik`` in the filled part of ``G_l`` (cosine
   similarity in float64, or Euclidean distance in ``"l2"`` mode);
3. the contribution of channel ``c`` to the match of student vector ``s_i`` (GAP of the compactor output) with
   neighbour ``n_ij`` is ``e_ij[c] = |G[n_ij, c] * s_i[c]|`` (normalised vectors in cosine mode), and the
   ``floor(r * C)`` channels with the smallest ``e_ij`` are that pair's low-contribution set;
4. ``U_l`` = the intersection of those sets over every sample ``i`` and neighbour ``j`` (the batch's common
   consensus); ``mask_l[U_l] = 0``, and masks only accumulate (a channel once masked stays masked).

The gradient step then zeroes the task gradient of the masked compactor rows and adds the row-wise group-lasso
subgradient ``lambda W[o] / ||W[o]||`` to every row (:meth:`GradientResetting.reset_gradients_`), so masked
rows decay under the lasso and weight decay alone.

Ours, where the release is silent or fragile: ties (equal similarities or contributions) go to the lower
index (stable sorts), so the masks are deterministic; the bank starts empty and only its filled part is
searched (the release fills it with ``randn`` and searches all of it); the lasso subgradient of an exactly zero
row is 0 instead of NaN (the release divides without an epsilon); under DDP the per-rank candidate sets are
intersected across ranks, so every rank keeps the same masks (each rank's bank holds its own batches).
"""
from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DISTANCES = ("cosine", "l2")


def neighbours(t: Tensor, gallery: Tensor, k: int, distance: str = "cosine") -> Tensor:
    """Indices (B, k) of the ``k`` nearest gallery rows of every ``t_i`` (ties: the lower index first)."""
    if k > gallery.shape[0]:
        raise ValueError(f"k = {k} neighbours asked from a gallery of {gallery.shape[0]} filled rows")
    t, g = t.double(), gallery.double()
    if distance == "cosine":
        order = torch.sort(F.normalize(t, dim=1) @ F.normalize(g, dim=1).T, dim=1, descending=True, stable=True)
    elif distance == "l2":
        order = torch.sort(torch.cdist(t, g), dim=1, stable=True)
    else:
        raise ValueError(f"unknown distance '{distance}'; valid: {', '.join(DISTANCES)}")
    return order.indices[:, :k]


def low_contribution_channels(s: Tensor, t: Tensor, gallery: Tensor, *, k: int, ratio: float,
                              distance: str = "cosine") -> Tensor:
    """The candidate set ``U`` of one block as a bool vector (C,): channels among the ``floor(ratio * C)``
    lowest contributions ``e_ij`` for every sample ``i`` of the batch and every one of its ``k`` neighbours.

    ``s`` (B, C): student vectors; ``t`` (B, C): teacher vectors (the queries); ``gallery`` (N, C): the
    filled part of the bank (``t`` already in it). Vectorised: one sort over (B, k, C)."""
    b, c = s.shape
    m = int(ratio * c)
    if m == 0:
        return torch.zeros(c, dtype=torch.bool, device=s.device)
    nn_idx = neighbours(t, gallery, k, distance)
    s64, g64 = s.double(), gallery.double()
    if distance == "cosine":
        s64, g64 = F.normalize(s64, dim=1), F.normalize(g64, dim=1)
    e = (g64[nn_idx] * s64[:, None, :]).abs()  # (B, k, C)
    lowest = torch.sort(e, dim=-1, stable=True).indices[..., :m]
    low = torch.zeros_like(e, dtype=torch.bool).scatter_(-1, lowest, True)
    return low.flatten(0, 1).all(dim=0)


def group_lasso_subgradient(weight: Tensor, lam: float) -> Tensor:
    """``lambda W[o] / ||W[o]||_2`` per output row ``o`` of a (C_out, C_in, 1, 1) compactor (0 for a zero row)."""
    norms = weight.detach().flatten(1).norm(dim=1)
    scale = torch.where(norms > 0, lam / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(norms))
    return weight.detach() * scale.reshape(-1, *([1] * (weight.dim() - 1)))


class GradientResetting(nn.Module):
    """One FIFO bank and one accumulating mask per block (buffers: checkpointed and resumed with the method).

    ``widths``: the compactor rows of every block, in network order; ``capacity``: the bank's rows (a multiple
    of ``batch_size``, as in the release); ``k``, ``ratio``, ``distance``: docs/methods/cdd.rst §Gradient resetting (release: 2, 0.5,
    cosine). Bank memory: ``capacity * sum(widths) * 4`` bytes (the paper's ResNet-101, 24,000 rows:
    24,000 x 8,128 x 4 B = 780 MB)."""

    def __init__(self, widths: Sequence[int], *, capacity: int, batch_size: int, k: int = 2, ratio: float = 0.5,
                 distance: str = "cosine"):
        super().__init__()
        if batch_size < 1 or capacity < batch_size or capacity % batch_size:
            raise ValueError(f"args.bank_size must be a positive multiple of the batch size ({batch_size}), "
                             f"got {capacity}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"args.mask_ratio must lie in (0, 1), got {ratio}")
        if k < 1:
            raise ValueError(f"args.mask_k must be >= 1, got {k}")
        if distance not in DISTANCES:
            raise ValueError(f"args.mask_distance must be one of {DISTANCES}, got {distance!r}")
        self.widths, self.capacity, self.k, self.ratio, self.distance = list(widths), capacity, k, ratio, distance
        for i, c in enumerate(self.widths):
            self.register_buffer(f"bank{i}", torch.zeros(capacity, c))
            self.register_buffer(f"mask{i}", torch.ones(c))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def banks(self) -> List[Tensor]:
        return [getattr(self, f"bank{i}") for i in range(len(self.widths))]

    def masks(self) -> List[Tensor]:
        return [getattr(self, f"mask{i}") for i in range(len(self.widths))]

    @torch.no_grad()
    def enqueue_(self, teacher: Sequence[Tensor]) -> None:
        """Write the batch's teacher vectors (one (B, C_l) tensor per block) at the FIFO pointer."""
        b = teacher[0].shape[0]
        idx = (self.ptr + torch.arange(b, device=self.ptr.device)) % self.capacity
        for bank, t in zip(self.banks(), teacher):
            bank[idx.to(bank.device)] = t.detach().to(bank.dtype)
        self.ptr.copy_((self.ptr + b) % self.capacity)
        self.filled.copy_(torch.clamp(self.filled + b, max=self.capacity))

    @torch.no_grad()
    def update_(self, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> List[int]:
        """Enqueue ``teacher``, then mask every block's common low-contribution channels; returns the number
        of newly masked channels per block."""
        if len(student) != len(self.widths) or len(teacher) != len(self.widths):
            raise ValueError(f"gradient resetting: {len(self.widths)} blocks, got {len(student)} student and "
                             f"{len(teacher)} teacher vectors")
        self.enqueue_(teacher)
        n = int(self.filled)
        candidates = [low_contribution_channels(s.detach(), t.detach(), bank[:n].to(s.device), k=self.k,
                                                ratio=self.ratio, distance=self.distance)
                      for s, t, bank in zip(student, teacher, self.banks())]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flat = torch.cat(candidates).to(torch.uint8)
            torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.MIN)
            candidates = list(flat.bool().split(self.widths))
        newly = []
        for mask, u in zip(self.masks(), candidates):
            u = u.to(mask.device)
            newly.append(int((u & (mask > 0)).sum()))
            mask[u] = 0.0
        return newly

    @torch.no_grad()
    def reset_gradients_(self, weights: Sequence[Tensor], lam: float) -> None:
        """``grad <- mask (.) grad + lambda W / ||W_row||`` for every compactor weight (C, C_in, 1, 1)."""
        for w, mask in zip(weights, self.masks()):
            if w.grad is None:
                w.grad = torch.zeros_like(w)
            w.grad.mul_(mask.to(w.grad.dtype).reshape(-1, *([1] * (w.dim() - 1))))
            w.grad.add_(group_lasso_subgradient(w, lam).to(w.grad.dtype))

    def masked_fraction(self) -> float:
        """Share of all compactor rows masked so far."""
        total = sum(self.widths)
        return sum(int((m == 0).sum()) for m in self.masks()) / total if total else 0.0
