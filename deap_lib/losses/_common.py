"""Shared helpers for the loss modules: fp32 regions, input checks, pairwise distances, attention maps.

Every loss in this package does its arithmetic in float32 even when called inside ``torch.autocast``:
inputs are cast with ``.float()`` and autocast is switched off for the input's device type, so matmuls
are not silently re-cast to half precision.
"""
from __future__ import annotations

import contextlib
from typing import List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

#: Clamp inside the square root of every Euclidean distance (as in the released code): sqrt(max(d^2, 1e-12)).
DIST_CLAMP = 1e-12

MapList = Union[Tensor, Sequence[Tensor]]


def fp32_region(ref: Tensor):
    """Context that disables autocast on ``ref``'s device type (no-op where autocast is unavailable)."""
    dev = ref.device.type
    available = getattr(torch.amp, "is_autocast_available", None)
    if available is not None and not available(dev):
        return contextlib.nullcontext()
    return torch.autocast(device_type=dev, enabled=False)


def zero_like_graph(*tensors: Tensor) -> Tensor:
    """A float32 scalar 0 that stays attached to the graph of ``tensors`` (so ``backward`` works)."""
    return sum((t.float().sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


def as_list(x: MapList, what: str, loss: str) -> List[Tensor]:
    """Accept a tensor or a list/tuple of tensors and return a list; clear error otherwise."""
    if isinstance(x, Tensor):
        return [x]
    if isinstance(x, (list, tuple)) and all(isinstance(t, Tensor) for t in x):
        return list(x)
    raise TypeError(f"{loss}: {what} must be a Tensor or a list of Tensors, got {type(x).__name__}")


def check_pairs(student: MapList, teacher: MapList, loss: str, *, ndim: int | None = None,
                same_shape: bool = True) -> Tuple[List[Tensor], List[Tensor]]:
    """Turn ``student``/``teacher`` into equal-length lists and check batch sizes / shapes."""
    s_list, t_list = as_list(student, "student", loss), as_list(teacher, "teacher", loss)
    if len(s_list) != len(t_list):
        raise ValueError(f"{loss}: got {len(s_list)} student tensors but {len(t_list)} teacher tensors; "
                         "the lists must pair up one to one")
    if not s_list:
        raise ValueError(f"{loss}: empty lists of tensors")
    for k, (s, t) in enumerate(zip(s_list, t_list)):
        if ndim is not None and (s.dim() != ndim or t.dim() != ndim):
            raise ValueError(f"{loss}: entry {k} must be {ndim}-D, got student {tuple(s.shape)} and "
                             f"teacher {tuple(t.shape)}")
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"{loss}: entry {k} batch sizes differ: student {tuple(s.shape)} vs "
                             f"teacher {tuple(t.shape)}")
        if same_shape and s.shape != t.shape:
            raise ValueError(f"{loss}: entry {k} shapes differ: student {tuple(s.shape)} vs "
                             f"teacher {tuple(t.shape)}")
    return s_list, t_list


def pairwise_euclidean(x: Tensor, y: Tensor, *, method: str = "gram") -> Tensor:
    """(N, M) matrix of sqrt(max(||x_i - y_j||^2, 1e-12)) for x (N, D), y (M, D), in float32.

    ``method="gram"`` expands ||x||^2 + ||y||^2 - 2 x.y (the released code's formula; O(NM) memory, but
    fp32 cancellation leaves ~1e-4 noise on distances that should be 0). ``method="diff"`` sums the
    squared differences directly (O(NMD) memory; an exact zero difference gives exactly sqrt(1e-12) = 1e-6).
    """
    x, y = x.float(), y.float()
    if method == "gram":
        d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    elif method == "diff":
        d2 = (x.unsqueeze(1) - y.unsqueeze(0)).pow(2).sum(-1)
    else:
        raise ValueError(f"pairwise_euclidean: method must be 'gram' or 'diff', got {method!r}")
    return d2.clamp(min=DIST_CLAMP).sqrt()


def match_spatial(s: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
    """Adaptive-average-pool 4-D maps to their common (min H, min W) when their spatial sizes differ.

    The released MKD pools the larger map to a square (H, H) of the smaller one, which is wrong for
    non-square maps; here each side is pooled to (min(H_s, H_t), min(W_s, W_t)) instead (identical for
    square maps). Pooling happens on the feature maps, before the attention map is formed.
    """
    if s.shape[-2:] == t.shape[-2:]:
        return s, t
    size = (min(s.shape[-2], t.shape[-2]), min(s.shape[-1], t.shape[-1]))
    if s.shape[-2:] != size:
        s = F.adaptive_avg_pool2d(s, size)
    if t.shape[-2:] != size:
        t = F.adaptive_avg_pool2d(t, size)
    return s, t


def spatial_attention(fmap: Tensor, p: float, normalize: bool) -> Tensor:
    """a(F) = flatten_{HxW}((1/C) sum_c F_c^p), optionally L2-normalised per sample; (B, C, H, W) -> (B, HW).

    Uses F^p as written in the paper/code (not |F|^p); the stage maps it is applied to are post-ReLU.
    """
    a = fmap.float().pow(p).mean(dim=1).flatten(1)
    return F.normalize(a, p=2, dim=1) if normalize else a
