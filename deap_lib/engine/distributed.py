"""Multi-process data parallelism launched by ``torchrun`` (env vars RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). NCCL on CUDA, gloo on CPU; everything is a no-op in a single process.

Batch splitting: every rank draws the *same* P x K batch from an identically seeded batch sampler and
keeps a disjoint contiguous slice of it (:class:`RankSlicedBatchSampler`), so the global batch equals the
single-process batch. DDP averages gradients over ranks, which equals the full-batch gradient only for
losses that are means of per-sample terms; batch-statistics terms (BatchNorm batch stats, batch-hard
triplet mining, pairwise relation/KD losses over the batch) are computed per rank slice, not over the
global batch.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def auto_device() -> torch.device:
    """``cuda`` (the current device) when available, else ``cpu``."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: Optional[str]

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


def init_distributed(
    backend: Optional[str] = None,
    *,
    device: Optional[Union[str, torch.device]] = None,
    timeout_s: float = 600.0,
) -> DistInfo:
    """Initialise the default process group from torchrun's env vars; no-op when WORLD_SIZE <= 1.

    Returns the rank info and the device this process should use: ``cuda:LOCAL_RANK`` with NCCL when CUDA
    is available, else ``cpu`` with gloo. ``device="cpu"`` forces CPU + gloo even where CUDA exists.
    Calling it again after initialisation just returns the info.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    forced = torch.device(device) if device is not None else None
    if forced is not None and forced.type not in ("cpu", "cuda"):
        raise ValueError(f"init_distributed: device must be cpu or cuda, got {forced}")
    if world_size <= 1:
        return DistInfo(0, 1, 0, forced if forced is not None else auto_device(), None)
    if not (0 <= rank < world_size):
        raise ValueError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"distributed launch (WORLD_SIZE={world_size}) needs environment variable(s) {missing}")
    use_cuda = torch.cuda.is_available() if forced is None else forced.type == "cuda"
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) visible")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    backend = backend or ("nccl" if use_cuda else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    return DistInfo(rank, world_size, local_rank, dev, backend)


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is left untouched). Identity in one process."""
    if not is_distributed():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def unwrap(module: nn.Module) -> nn.Module:
    """The wrapped module of a (Distributed)DataParallel wrapper, else ``module`` itself."""
    while isinstance(module, (DistributedDataParallel, nn.DataParallel)):
        module = module.module
    return module


def wrap_ddp(module: nn.Module, device: torch.device, **ddp_kwargs: Any) -> nn.Module:
    """DDP-wrap ``module`` (already on ``device``) when running distributed; otherwise return it unchanged.

    Only trainable modules should be wrapped (the distillation student, never a frozen teacher).
    """
    if not is_distributed() or isinstance(module, DistributedDataParallel):
        return module
    if device.type == "cuda":
        return DistributedDataParallel(module, device_ids=[device.index], output_device=device.index, **ddp_kwargs)
    return DistributedDataParallel(module, **ddp_kwargs)


class RankSlicedBatchSampler:
    """Give each rank a disjoint, equal, contiguous slice of every batch of ``batch_sampler``.

    All ranks must construct ``batch_sampler`` with the same seed so they see the same batches. Contiguous
    slices keep whole identities together for identity-grouped P x K batches when P is divisible by the
    world size. A batch whose length is not divisible by ``world_size`` is an error.
    ``set_epoch``/``state_dict``/``load_state_dict`` are forwarded to the wrapped sampler.
    """

    def __init__(self, batch_sampler: Any, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.batch_sampler = batch_sampler
        self.rank = get_rank() if rank is None else rank
        self.world_size = get_world_size() if world_size is None else world_size
        if self.world_size < 1 or not (0 <= self.rank < self.world_size):
            raise ValueError(f"invalid rank {self.rank} for world_size {self.world_size}")

    def __iter__(self) -> Iterator[list]:
        for batch in self.batch_sampler:
            batch = list(batch)
            n = len(batch)
            if n % self.world_size:
                raise ValueError(
                    f"batch of {n} indices cannot be split evenly over {self.world_size} ranks; "
                    "choose a batch size divisible by the world size"
                )
            per = n // self.world_size
            yield batch[self.rank * per : (self.rank + 1) * per]

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def set_epoch(self, epoch: int) -> None:
        fn = getattr(self.batch_sampler, "set_epoch", None)
        if fn is None:
            raise AttributeError(f"{type(self.batch_sampler).__name__} has no set_epoch()")
        fn(epoch)

    def state_dict(self) -> dict:
        fn = getattr(self.batch_sampler, "state_dict", None)
        return fn() if callable(fn) else {}

    def load_state_dict(self, state: dict) -> None:
        fn = getattr(self.batch_sampler, "load_state_dict", None)
        if callable(fn):
            fn(state)

    @property
    def inner(self) -> Any:
        return self.batch_sampler


def slice_for_rank(items: Sequence, rank: Optional[int] = None, world_size: Optional[int] = None) -> Sequence:
    """The rank's contiguous slice of one batch (the same rule as :class:`RankSlicedBatchSampler`)."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    if len(items) % world_size:
        raise ValueError(f"batch of {len(items)} cannot be split evenly over {world_size} ranks")
    per = len(items) // world_size
    return items[rank * per : (rank + 1) * per]
