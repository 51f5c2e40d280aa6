"""P x K identity sampler (reid-strong-baseline's RandomIdentitySampler, made seedable and resumable)."""
from __future__ import annotations

from collections import deque
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
from torch.utils.data import Sampler

ItemLike = Union[int, Sequence]


def _pid_of(x: ItemLike) -> int:
    return int(x) if isinstance(x, (int, np.integer)) else int(x[1])


class RandomIdentitySampler(Sampler):
    """Batches of P identities x K images (K = ``num_instances``, P = ``batch_size // K``).

    One epoch, drawn from ``numpy`` seeded by ``(seed, epoch)``:

    1. for every identity (in sorted pid order) shuffle its image indices; an identity with fewer
       than K images is resampled *with replacement* to exactly K; cut the list into chunks of K and
       drop the leftover (< K) images;
    2. while at least P identities still hold chunks, draw P of them uniformly *without
       replacement* and emit the next chunk of each (one batch = P * K indices, identity-contiguous).

    Epoch length: at most ``sum_p floor(max(n_p, K) / K) * K`` indices (n_p = images of identity p;
    ``max_length()``), a little less when the last identities left hold chunks but number fewer than
    P. ``len(sampler)`` is the exact count for the current epoch (built on demand, cached), always a
    multiple of ``batch_size / num_replicas``.

    Distributed use: with ``num_replicas`` R and ``rank`` r every batch is split into R equal,
    identity-aligned parts (P / R identities x K each; P must be divisible by R) and rank r yields
    part r, so the R ranks together consume exactly the single-process batch.

    ``with_seeds=True`` yields ``(index, sample_seed)`` pairs instead of plain indices; ``ImageDataset``
    then seeds the augmentation of that sample from it, which makes training batches identical for
    any number of loader workers and exactly resumable.

    Call ``set_epoch(e)`` before each epoch (as with ``DistributedSampler``); without it every epoch
    repeats the same order.
    """

    def __init__(self, items: Sequence[ItemLike], num_instances: int, batch_size: int, seed: int = 0, *,
                 num_replicas: int = 1, rank: int = 0, with_seeds: bool = False):
        if num_instances < 1 or batch_size < num_instances or batch_size % num_instances:
            raise ValueError(f"batch_size ({batch_size}) must be a positive multiple of num_instances "
                             f"({num_instances})")
        self.num_instances = int(num_instances)
        self.batch_size = int(batch_size)
        self.num_pids_per_batch = self.batch_size // self.num_instances
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
        if self.num_pids_per_batch % num_replicas:
            raise ValueError(f"P = batch_size / num_instances = {self.num_pids_per_batch} identities per batch "
                             f"cannot be split equally over num_replicas={num_replicas}")
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.seed, self.epoch = int(seed), 0
        self.with_seeds = bool(with_seeds)
        self.index_by_pid: Dict[int, List[int]] = {}
        for i, x in enumerate(items):
            self.index_by_pid.setdefault(_pid_of(x), []).append(i)
        self.pids = sorted(self.index_by_pid)
        self.num_items = len(items)
        if len(self.pids) < self.num_pids_per_batch:
            raise ValueError(f"P x K sampling needs at least P={self.num_pids_per_batch} identities, the data has "
                             f"{len(self.pids)}")
        self._cache: Optional[Tuple[int, List[int], np.ndarray]] = None

    # -- epoch construction -------------------------------------------------------------------
    def _epoch(self) -> Tuple[List[int], np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1], self._cache[2]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch]))
        K, P = self.num_instances, self.num_pids_per_batch
        chunks: Dict[int, deque] = {}
        for pid in self.pids:
            idx = np.asarray(self.index_by_pid[pid])
            idx = rng.choice(idx, K, replace=True) if len(idx) < K else rng.permutation(idx)
            n = len(idx) - len(idx) % K
            chunks[pid] = deque(idx[i:i + K].tolist() for i in range(0, n, K))
        avail = list(self.pids)
        out: List[int] = []
        while len(avail) >= P:
            pick = rng.choice(len(avail), P, replace=False)
            chosen = [avail[j] for j in pick]
            for pid in chosen:
                out.extend(chunks[pid].popleft())
            for pid in chosen:
                if not chunks[pid]:
                    avail.remove(pid)
        seeds = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, 1])).integers(
            0, 2 ** 62, len(out), dtype=np.int64)
        self._cache = (self.epoch, out, seeds)
        return out, seeds

    def max_length(self) -> int:
        """Upper bound of the (single-process) epoch length: ``sum_p floor(max(n_p, K) / K) * K``."""
        K = self.num_instances
        return sum(max(len(v), K) // K * K for v in self.index_by_pid.values())

    def _rank_positions(self, n: int) -> List[int]:
        per = self.batch_size // self.num_replicas
        return [b + self.rank * per + j for b in range(0, n, self.batch_size) for j in range(per)]

    def __iter__(self) -> Iterator:
        out, seeds = self._epoch()
        pos = self._rank_positions(len(out)) if self.num_replicas > 1 else range(len(out))
        if self.with_seeds:
            return iter([(out[i], int(seeds[i])) for i in pos])
        return iter([out[i] for i in pos])

    def __len__(self) -> int:
        return len(self._epoch()[0]) // self.num_replicas

    def num_batches(self) -> int:
        return len(self._epoch()[0]) // self.batch_size

    # -- state ------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def state_dict(self) -> Dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch, "num_instances": self.num_instances,
                "batch_size": self.batch_size, "num_replicas": self.num_replicas, "rank": self.rank,
                "num_items": self.num_items}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        for k in ("num_instances", "batch_size", "num_items"):
            if k in state and int(state[k]) != getattr(self, k):
                raise ValueError(f"sampler state has {k}={state[k]} but this sampler has {k}={getattr(self, k)}")
        self.seed = int(state["seed"])
        self.set_epoch(int(state["epoch"]))
