"""Seeding of the process-wide generators, used only by the training entry point (the Trainer).

Library code takes local generators; the training loop is the one place that owns the global ones,
because data augmentation (torchvision transforms), dropout and DataLoader worker seeds draw from them.
Each epoch reseeds them from (seed, epoch, rank), so an epoch's randomness does not depend on how the
process got there (fresh start or resume).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python ``random``, NumPy's global generator and torch (CPU and every CUDA device).

    ``deterministic=True`` also selects deterministic kernels: ``torch.use_deterministic_algorithms(True,
    warn_only=True)`` (ops without a deterministic version warn instead of failing), cuDNN deterministic
    with benchmarking off, and ``CUBLAS_WORKSPACE_CONFIG`` set (if unset) for deterministic cuBLAS. It
    leaves out the NaN filling of every new uninitialised tensor that deterministic mode turns on by default
    (``torch.utils.deterministic.fill_uninitialized_memory``, a debugging aid: ~2,300 fills in a cpu-preset
    DEAP step, several percent of its time); no kernel here reads memory it did not write, which the
    bit-exact resume tests check.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.utils.deterministic.fill_uninitialized_memory = False


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed derived from (seed, epoch, rank) by NumPy's SeedSequence (well-mixed, collision-free)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(rank)]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> int:
    """Reseed the global generators for ``epoch``; returns the seed used."""
    s = epoch_seed(seed, epoch, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s
