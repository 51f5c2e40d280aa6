"""A small epoch-based training loop with exact resumption.

Contract with a method (DEAP, CDD, a baseline):

* ``step_fn(batch)`` or ``step_fn(batch, ctx)`` is called once per iteration inside the run's autocast
  (``precision``: none for fp32, bf16, or fp16 with a GradScaler on CUDA; :mod:`deap_lib.engine.precision`)
  with the batch already on the trainer's device (4-D images channels-last with ``channels_last``); it returns a mapping ``{name: scalar tensor}`` of
  **already weighted** loss terms (e.g. ``{"ce": l_ce, "triplet": l_tri, "kl": 1.0 * l_kl,
  "lasso1": 0.003 * l1, ...}``). The trainer sums them, backpropagates the sum, steps the optimizer and
  logs each term's epoch mean (CSV columns ``loss_<name>``) and the sum (``loss_total``).
* ``after_backward(ctx)``: optional, after backward and before the optimizer step, with unscaled
  gradients (e.g. gradient resetting). ``post_step(ctx)``: optional, after the optimizer step (e.g. a
  proximal update of pruners). ``ctx`` is a :class:`StepContext`.
* More than one optimizer: pass a list of :class:`OptimizerSpec` instead of one optimizer. The first is the
  main one (its terms come from ``step_fn``; ``loss_total`` is their sum); every further spec has its own
  ``step_fn(batch, ctx) -> terms`` that runs after the main step on the same batch, with its own backward
  and step (e.g. a discriminator updated on detached features; alternating updates). Its terms are logged
  as ``loss_<spec name>_<term>``. All optimizers and schedulers are checkpointed.
* :meth:`Trainer.for_method` trains any method module (``forward_train``, ``configure_optimizers``,
  ``before_step`` / ``after_backward`` / ``after_step`` / ``end_epoch`` hooks, ``checkpoint_state``).
* ``epoch_end``: hooks ``hook(trainer, epoch, row) -> mapping | None`` after each epoch's scheduler step;
  returned numbers are added to that epoch's CSV row (evaluation, pruner-norm statistics). Hooks run on
  every rank; guard rank-0-only work with :func:`~deap_lib.engine.distributed.is_main_process`. A hook that
  switches the model to eval mode needs no cleanup: every epoch starts with ``model.train()``.

Determinism and resume: at the start of every epoch the global Python/NumPy/torch generators (and the
loader's ``generator``, if any) are reseeded from (seed, epoch, rank) and the batch sampler gets
``set_epoch(epoch - 1)``, so an epoch's data order, augmentation and dropout depend only on (seed, epoch).
A checkpoint (model, optimizer, scheduler, GradScaler, sampler, RNG, history, config) is written
atomically after each epoch; ``fit(resume=True)`` continues from it, and a run killed at any point and
resumed ends (on CPU, same thread count) bitwise identical to an uninterrupted one. The model's state is
``model.checkpoint_state()`` / ``model.load_checkpoint_state(state)`` when it defines them (a method: its
student and every extra module and buffer, not the frozen teacher), else its ``state_dict``. Not supported:
``persistent_workers=True`` loaders (worker seeds are drawn once), mid-epoch checkpoints.
"""
from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..fileio import atomic_write_text, remove_stale_temps
from .checkpoint import load_checkpoint
from .csvlog import write_csv
from .batches import batch_size as _batch_size, move_to_device, to_channels_last
from .precision import AUTOCAST_DTYPES, autocast, legacy_precision
from .distributed import all_reduce_mean, auto_device, barrier, get_rank, get_world_size, is_distributed, is_main_process, unwrap
from .seeding import epoch_seed, seed_everything, seed_epoch
from .step import OptimizerSpec, StepContext, _accepts_ctx, _plain_config, check_terms
from .trainer_state import TrainerState

log = logging.getLogger(__name__)


class Trainer(TrainerState):
    """Runs ``epochs`` epochs of ``step_fn`` over ``train_loader``; see the module docstring for the contract.

    ``model`` is the module whose state is checkpointed: a plain model, a DDP-wrapped model, or a module with
    a ``student`` (a method: what its ``checkpoint_state`` returns is saved, e.g. the student without the
    frozen teacher). In a distributed run the trainable model (or that ``student``) must already be
    DDP-wrapped (``wrap_ddp``) before ``step_fn`` captures it, and the batch sampler must have ``set_epoch``
    (all ranks draw the same batches).
    """

    checkpoint_name = "last.pt"
    log_name = "train_log.csv"
    config_name = "config.json"

    def __init__(
        self,
        model: nn.Module,
        optimizer: Union[torch.optim.Optimizer, Sequence[OptimizerSpec]],
        train_loader: Iterable,
        step_fn: Callable[..., Mapping[str, torch.Tensor]],
        *,
        epochs: int,
        out_dir: Union[str, Path],
        seed: int = 0,
        config: Optional[Mapping[str, Any]] = None,
        scheduler: Optional[Any] = None,
        device: Optional[Union[str, torch.device]] = None,
        amp: Optional[bool] = None,
        precision: Optional[str] = None,
        channels_last: bool = False,
        after_backward: Optional[Callable[[StepContext], None]] = None,
        post_step: Optional[Callable[[StepContext], None]] = None,
        epoch_end: Sequence[Callable[["Trainer", int, dict], Optional[Mapping[str, Any]]]] = (),
        progress: bool = True,
        checkpoint_every: int = 1,
        keep_every: int = 0,
        grad_clip_norm: Optional[float] = None,
        deterministic: bool = True,
        metadata: Optional[Mapping[str, Any]] = None,
        config_defaults: Optional[Mapping[str, Any]] = None,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if checkpoint_every < 0 or keep_every < 0:
            raise ValueError("checkpoint_every and keep_every must be >= 0")
        self.model = model
        if isinstance(optimizer, torch.optim.Optimizer):
            specs = [OptimizerSpec("main", optimizer, scheduler)]
        else:
            specs = list(optimizer)
            if not specs or not all(isinstance(o, OptimizerSpec) for o in specs):
                raise TypeError("optimizer must be a torch optimizer or a non-empty list of OptimizerSpec")
            if scheduler is not None:
                raise ValueError("with a list of OptimizerSpec, give each scheduler in its spec")
            names = [o.name for o in specs]
            if len(set(names)) != len(names):
                raise ValueError(f"optimizer names must be unique, got {names}")
            if specs[0].step_fn is not None or any(o.step_fn is None for o in specs[1:]):
                raise ValueError("the first OptimizerSpec is the main one (terms from step_fn, its own step_fn "
                                 "None); every further spec needs its own step_fn")
            scheduler = specs[0].scheduler
        self.optimizers: list[OptimizerSpec] = specs
        self.optimizer = specs[0].optimizer
        self.train_loader = train_loader
        self.step_fn = step_fn
        self._step_takes_ctx = _accepts_ctx(step_fn)
        self.epochs = int(epochs)
        self.out_dir = Path(out_dir)
        self.seed = int(seed)
        self.config = _plain_config(dict(config or {}))
        #: a key missing from a checkpoint's config (written before the key existed) is no difference when
        #: ``config`` holds it at its value here
        self.config_defaults = _plain_config(dict(config_defaults or {}))
        self.scheduler = scheduler
        self.device = torch.device(device) if device is not None else auto_device()
        if precision is None:
            if amp is None:
                amp = self.device.type == "cuda"
            if amp and self.device.type != "cuda":
                raise ValueError(f"AMP with GradScaler is only used on CUDA; device is {self.device} (pass amp=False)")
            precision = legacy_precision(self.device.type, bool(amp))
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"Trainer precision must be one of {sorted(AUTOCAST_DTYPES)} (resolved, see "
                             f"deap_lib.engine.precision.resolve_precision), got {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"fp16 autocast with GradScaler is only used on CUDA; device is {self.device}")
        #: the resolved precision: "fp32" (no autocast), "bf16" or "fp16" (with a GradScaler)
        self.precision = precision
        self.amp = precision == "fp16"
        self.channels_last = bool(channels_last)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.after_backward = after_backward
        self.post_step = post_step
        self.epoch_end = list(epoch_end)
        self._extra_takes_ctx = [_accepts_ctx(o.step_fn) for o in specs[1:]]
        self.progress = progress
        self.checkpoint_every = checkpoint_every
        self.keep_every = keep_every
        self.grad_clip_norm = grad_clip_norm
        self.deterministic = deterministic
        meta = dict(metadata or {})
        hook = getattr(unwrap(model), "checkpoint_metadata", None)
        if callable(hook):
            meta.update(hook())
        self.metadata = _plain_config(meta, "metadata")

        self.epoch = 0  # completed epochs
        self.global_step = 0  # completed optimizer steps
        self.history: list[dict[str, Any]] = []
        self.model.to(self.device)
        if is_distributed():
            self._check_ddp()
        if getattr(train_loader, "persistent_workers", False):
            warnings.warn(
                "persistent_workers=True: worker RNG seeds are drawn once, so epochs after a resume will not "
                "repeat the uninterrupted run's augmentation exactly",
                stacklevel=2,
            )

    # ---- paths -----------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / self.checkpoint_name

    @property
    def log_path(self) -> Path:
        return self.out_dir / self.log_name

    # ---- helpers ---------------------------------------------------------------------------------
    def _check_ddp(self) -> None:
        inner = unwrap(self.model)
        student = getattr(inner, "student", None)
        if not (isinstance(self.model, DistributedDataParallel) or isinstance(student, DistributedDataParallel)):
            raise RuntimeError(
                "distributed run but the trainable model is not DDP-wrapped; wrap it with wrap_ddp(model, device) "
                "(or its student) before building step_fn"
            )
        if self._sampler() is None:
            raise RuntimeError(
                "distributed run needs a batch sampler with set_epoch() so that every rank draws the same "
                "batches (e.g. RankSlicedBatchSampler over a seeded RandomIdentitySampler)"
            )

    def _sampler(self) -> Any:
        for attr in ("batch_sampler", "sampler"):
            s = getattr(self.train_loader, attr, None)
            if s is not None and callable(getattr(s, "set_epoch", None)):
                return s
        return None

    def _trainable_params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    @classmethod
    def for_method(cls, method: nn.Module, train_loader: Iterable, *, epoch_end: Sequence[Callable] = (),
                   **kwargs: Any) -> "Trainer":
        """A trainer for a method module: its ``configure_optimizers()`` (a list of :class:`OptimizerSpec`),
        ``before_step(ctx)`` + ``forward_train(batch)`` as the main step, ``after_backward(ctx)``,
        ``after_step(ctx)`` and ``end_epoch(epoch) -> mapping | None`` hooks; everything else as
        :class:`Trainer`. ``model``: the module called for the main step, e.g. a DDP wrapper of ``method``
        (whose ``forward`` is ``forward_train``); default ``method`` itself."""
        model = kwargs.pop("model", method)

        def step(batch: Any, ctx: StepContext) -> Mapping[str, torch.Tensor]:
            method.before_step(ctx)
            return model(batch)

        def end(trainer: "Trainer", epoch: int, row: dict) -> Optional[Mapping[str, Any]]:
            return method.end_epoch(epoch)

        return cls(model, method.configure_optimizers(), train_loader, step,
                   after_backward=method.after_backward, post_step=method.after_step,
                   epoch_end=[end, *epoch_end], **kwargs)

    def fit(
        self,
        resume: Union[bool, str, Path] = False,
        *,
        allow_config_change: bool = False,
        overwrite: bool = False,
    ) -> list[dict]:
        """Train until ``epochs`` epochs are done; returns the per-epoch history (the CSV rows).

        ``resume=True`` continues from ``out_dir/last.pt`` when it exists (else starts fresh);
        ``resume=<path>`` continues from that file (which must exist). A fresh run refuses to overwrite an
        existing ``out_dir/last.pt`` unless ``overwrite=True``.
        """
        if not resume and not overwrite and self.checkpoint_path.exists():
            raise FileExistsError(
                f"{self.checkpoint_path} exists: pass resume=True to continue that run or overwrite=True to restart it"
            )
        seed_everything(self.seed, deterministic=self.deterministic)
        if resume:
            path = self.checkpoint_path if resume is True else Path(resume)
            if path.is_file() or resume is not True:
                self.load_state_dict(load_checkpoint(path, map_location="cpu"), allow_config_change=allow_config_change, source=str(path))
                log.info("resumed from %s after epoch %d (step %d)", path, self.epoch, self.global_step)
        if is_main_process():
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.checkpoint_path)
            atomic_write_text(self.out_dir / self.config_name, json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            if self.history:
                write_csv(self.log_path, self.history)
        for epoch in range(self.epoch + 1, self.epochs + 1):
            row = self._train_epoch(epoch)
            if self.scheduler is not None:
                self.scheduler.step()
            for o in self.optimizers[1:]:
                if o.scheduler is not None:
                    o.scheduler.step()
            for hook in self.epoch_end:
                extra = hook(self, epoch, row)
                if extra:
                    clash = sorted(set(extra) & set(row))
                    if clash:
                        raise KeyError(f"epoch_end hook {hook!r} returned key(s) {clash} already in the log row")
                    row.update(_plain_config(dict(extra), "epoch_end hook result"))
            self.history.append(row)
            self.epoch = epoch
            if self.checkpoint_every and (epoch % self.checkpoint_every == 0 or epoch == self.epochs):
                self.save_checkpoint()
            if self.keep_every and epoch % self.keep_every == 0:
                self.save_checkpoint(self.out_dir / f"epoch_{epoch:03d}.pt")
            if is_main_process():
                write_csv(self.log_path, self.history)
                log.info("epoch %d: %s", epoch, row)
            barrier()
        return self.history

    def _train_epoch(self, epoch: int) -> dict[str, Any]:
        rank = get_rank()
        seed_epoch(self.seed, epoch, rank)
        generator = getattr(self.train_loader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed(self.seed, epoch, rank))
        sampler = self._sampler()
        if sampler is not None:
            sampler.set_epoch(epoch - 1)
        self.model.train()

        try:
            iters: Optional[int] = len(self.train_loader)  # type: ignore[arg-type]
        except TypeError:
            iters = None
        lrs = [(g.get("name"), float(g["lr"])) for g in self.optimizer.param_groups]  # this epoch's LRs
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        total_sum, steps, images = 0.0, 0, 0
        bar = tqdm(
            self.train_loader,
            total=iters,
            desc=f"epoch {epoch}/{self.epochs}",
            disable=not (self.progress and is_main_process()),
            leave=False,
            dynamic_ncols=True,
        )
        non_blocking = self.device.type == "cuda"
        start = time.perf_counter()
        for it, batch in enumerate(bar, start=1):
            batch = move_to_device(batch, self.device, non_blocking)
            if self.channels_last:
                batch = to_channels_last(batch)
            ctx = StepContext(epoch, it, iters, self.global_step, self.device, self)
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.precision, self.device):
                terms = self.step_fn(batch, ctx) if self._step_takes_ctx else self.step_fn(batch)
            names, values, total = check_terms(terms, ctx)
            n_main = len(values)
            self.scaler.scale(total).backward()
            if self.after_backward is not None or self.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
            if self.after_backward is not None:
                self.after_backward(ctx)
            if self.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self._trainable_params(), self.grad_clip_norm)
            self.scaler.step(self.optimizer)
            for o, takes_ctx in zip(self.optimizers[1:], self._extra_takes_ctx):
                o.optimizer.zero_grad(set_to_none=True)
                with autocast(self.precision, self.device):
                    extra = o.step_fn(batch, ctx) if takes_ctx else o.step_fn(batch)
                x_names, x_values, x_total = check_terms(extra, ctx)
                self.scaler.scale(x_total).backward()
                if is_distributed():  # outside the DDP forward: average these gradients by hand
                    for g in o.optimizer.param_groups:
                        for p in g["params"]:
                            if p.grad is not None:
                                p.grad.copy_(all_reduce_mean(p.grad))
                self.scaler.step(o.optimizer)
                names, values = names + [f"{o.name}_{n}" for n in x_names], values + x_values
            self.scaler.update()
            self.global_step += 1
            if self.post_step is not None:
                self.post_step(ctx)

            for n, v in zip(names, values):
                sums[n] = sums.get(n, 0.0) + v
                counts[n] = counts.get(n, 0) + 1
            step_total = math.fsum(values[:n_main])
            total_sum += step_total
            steps += 1
            images += _batch_size(batch)
            if not bar.disable:
                bar.set_postfix({"loss": f"{step_total:.4f}"}, refresh=False)
        bar.close()
        seconds = time.perf_counter() - start
        if steps == 0:
            raise RuntimeError(f"epoch {epoch}: the train loader yielded no batch")

        keys = sorted(sums)
        means = torch.tensor([sums[k] / counts[k] for k in keys] + [total_sum / steps], dtype=torch.float64)
        if is_distributed():
            means = all_reduce_mean(means.to(self.device)).cpu()
        row: dict[str, Any] = {"epoch": epoch, "iteration": self.global_step}
        row.update({f"loss_{k}": float(m) for k, m in zip(keys, means[:-1].tolist())})
        row["loss_total"] = float(means[-1])
        row["lr"] = lrs[0][1]
        for i, (name, value) in enumerate(lrs[1:], start=1):
            row[f"lr_{name if name else i}"] = value
        row["seconds"] = seconds
        row["images_per_s"] = images * get_world_size() / seconds if seconds > 0 else float("nan")
        return row
