"""Training engine: LR schedule, optimizer groups, atomic checkpoints with full RNG state, exact resume,
the epoch loop, distillation wrapper and DDP helpers."""
from .checkpoint import (
    CheckpointError,
    ConfigMismatchError,
    capture_rng_state,
    check_config,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .csvlog import read_csv, write_csv
from .distributed import (
    DistInfo,
    RankSlicedBatchSampler,
    all_reduce_mean,
    auto_device,
    barrier,
    broadcast_object,
    cleanup_distributed,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    slice_for_rank,
    unwrap,
    wrap_ddp,
)
from .optim import build_optimizer, resolve_head_params
from .schedule import (
    Phases,
    WarmupFlatCosineLR,
    build_scheduler,
    scaled_phases,
    warmup_flat_cosine_factor,
    warmup_flat_cosine_lr,
)
from .seeding import epoch_seed, seed_epoch, seed_everything
from .step import NonFiniteLossError, OptimizerSpec, StepContext
from .trainer import Trainer, move_to_device

__all__ = [
    "CheckpointError", "ConfigMismatchError", "atomic_write", "atomic_write_text", "capture_rng_state",
    "check_config", "config_diff", "load_checkpoint", "remove_stale_temps", "restore_rng_state", "save_checkpoint",
    "read_csv", "write_csv",
    "file_sha256", "state_dict_sha256",
    "DistInfo", "RankSlicedBatchSampler", "all_reduce_mean", "auto_device", "barrier", "broadcast_object",
    "cleanup_distributed", "get_rank", "get_world_size", "init_distributed", "is_distributed", "is_main_process",
    "slice_for_rank", "unwrap", "wrap_ddp",
    "build_optimizer", "resolve_head_params",
    "Phases", "WarmupFlatCosineLR", "build_scheduler", "scaled_phases", "warmup_flat_cosine_factor",
    "warmup_flat_cosine_lr",
    "epoch_seed", "seed_epoch", "seed_everything",
    "NonFiniteLossError", "OptimizerSpec", "StepContext", "Trainer", "move_to_device",
]
