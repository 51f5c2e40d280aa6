"""Batches on their way to a step: moved to the device, made channels-last, counted."""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch


def map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``fn`` applied to every tensor inside (nested) tuples/lists/dicts/namedtuples; other objects unchanged."""
    if isinstance(batch, torch.Tensor):
        return fn(batch)
    if isinstance(batch, Mapping):
        return type(batch)({k: map_tensors(v, fn) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(map_tensors(v, fn) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(map_tensors(v, fn) for v in batch)
    return batch


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Tensors inside (nested) tuples/lists/dicts/namedtuples moved to ``device``; other objects unchanged."""
    return map_tensors(batch, lambda t: t.to(device, non_blocking=non_blocking))


def to_channels_last(batch: Any) -> Any:
    """Every 4-D floating tensor inside (nested) tuples/lists/dicts made channels-last; the rest unchanged."""
    return map_tensors(batch, lambda t: t.contiguous(memory_format=torch.channels_last)
                       if t.dim() == 4 and t.is_floating_point() else t)


def batch_size(batch: Any) -> int:
    """Leading size of the first tensor found in the batch (the number of images)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        n = batch_size(item)
        if n:
            return n
    return 0
