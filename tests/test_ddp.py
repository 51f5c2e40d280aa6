"""DDP helpers: rank-sliced batches, and 2-process gloo training equal to single-process training.

The model has no BatchNorm: with BN each rank would normalise with its half-batch statistics, so DDP
and single-process runs differ by design (no SyncBatchNorm here). With per-sample-mean losses, averaging
the gradients of two equal half-batches equals the full-batch mean gradient, so the runs agree up to
float rounding.
"""
from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import random
import runpy
import socket
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from deap_lib.engine import RankSlicedBatchSampler, all_reduce_mean, init_distributed, is_main_process, read_csv, slice_for_rank




class _FixedBatches:
    def __init__(self, batches):
        self.batches, self.epoch = batches, None

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)

    def set_epoch(self, e):
        self.epoch = e


def test_rank_sliced_batch_sampler():
    inner = _FixedBatches([[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]])  # P=3 ids x K=2
    r0 = list(RankSlicedBatchSampler(inner, rank=0, world_size=2))
    r1 = list(RankSlicedBatchSampler(inner, rank=1, world_size=2))
    assert r0 == [[0, 1, 2], [10, 11, 12]] and r1 == [[3, 4, 5], [13, 14, 15]]
    thirds = [list(RankSlicedBatchSampler(inner, rank=r, world_size=3)) for r in range(3)]
    assert [t[0] for t in thirds] == [[0, 1], [2, 3], [4, 5]]
    wrapped = RankSlicedBatchSampler(inner, rank=1, world_size=2)
    wrapped.set_epoch(4)
    assert inner.epoch == 4 and len(wrapped) == 2
    with pytest.raises(ValueError, match="cannot be split evenly"):
        list(RankSlicedBatchSampler(_FixedBatches([[0, 1, 2]]), rank=0, world_size=2))
    with pytest.raises(ValueError, match="invalid rank"):
        RankSlicedBatchSampler(inner, rank=2, world_size=2)
    assert slice_for_rank(list(range(8)), rank=1, world_size=4) == [2, 3]
    assert is_main_process()  # not distributed in the test process


def test_init_distributed_env_handling(monkeypatch: pytest.MonkeyPatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    info = init_distributed(device="cpu")  # not launched by torchrun -> no-op
    assert (info.rank, info.world_size, info.distributed, info.backend) == (0, 1, False, None)
    assert info.device == torch.device("cpu")
    t = torch.tensor([1.0, 3.0])
    assert torch.equal(all_reduce_mean(t), t) and all_reduce_mean(t) is not t
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(RuntimeError, match="MASTER_ADDR"):
        init_distributed(device="cpu")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5"):
        init_distributed(device="cpu")


SCRIPT = textwrap.dedent(
    '''
    import json, sys
    from pathlib import Path
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, TensorDataset
    from deap_lib.engine import (RankSlicedBatchSampler, Trainer, build_optimizer, build_scheduler,
                                 cleanup_distributed, init_distributed, unwrap, wrap_ddp)

    torch.set_num_threads(1)
    out_dir = Path(sys.argv[1])
    info = init_distributed(device="cpu")  # gloo on CPU even where CUDA exists

    class ShuffleBatches:
        def __init__(self, n, batch_size, seed):
            self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        def set_epoch(self, epoch):
            self.epoch = epoch
        def __iter__(self):
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + 97 * self.epoch))
            for s in range(0, self.n, self.batch_size):
                yield perm[s:s + self.batch_size].tolist()
        def __len__(self):
            return self.n // self.batch_size

    class MLP(nn.Module):  # no BatchNorm (see the test module docstring)
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
            self.head = nn.Linear(16, 3)
        def forward(self, x):
            return self.head(self.body(x))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(1)
    student = MLP()
    torch.manual_seed(2)
    teacher = MLP()
    teacher = teacher.to(info.device).requires_grad_(False).eval()  # frozen, outside what trains
    student = wrap_ddp(student.to(info.device), info.device)  # DDP around the student only (no-op in one process)
    opt = build_optimizer(student, lr=0.2)
    sched = build_scheduler(opt, 2)
    loader = DataLoader(TensorDataset(x, y, torch.arange(32)),
                        batch_sampler=RankSlicedBatchSampler(ShuffleBatches(32, 8, seed=3)))
    seen = []

    def step(batch):
        xb, yb, idx = batch
        seen.append(idx.tolist())
        s = student(xb)
        with torch.no_grad():
            t = teacher(xb)
        return {"ce": F.cross_entropy(s, yb), "mse": 0.5 * F.mse_loss(s, t)}

    trainer = Trainer(student, opt, loader, step, epochs=2, out_dir=out_dir / "train", seed=11, scheduler=sched,
                      device=info.device, progress=False, config={"test": "ddp"})
    trainer.fit()
    torch.save(unwrap(student).state_dict(), out_dir / f"rank{info.rank}_of{info.world_size}.pt")
    (out_dir / f"rank{info.rank}_of{info.world_size}.json").write_text(json.dumps(seen))
    cleanup_distributed()
    '''
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(script: str, out_dir: str, env: dict) -> None:
    """Body of one forked rank: the env vars torchrun would set, then the training script."""
    os.environ.update(env)
    sys.argv = [script, out_dir]
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(script, run_name="__main__")


def _launch_two_ranks(script: Path, out_dir: Path) -> None:
    """Two forked OS processes with RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set as torchrun
    would (forking reuses this process's imported torch, which saves seconds of start-up per rank)."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # import torch._dynamo once, before fork
    port = _free_port()
    ctx = multiprocessing.get_context("fork")
    procs = []
    for rank in range(2):
        env = dict(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(ctx.Process(target=_rank_main, args=(str(script), str(out_dir), env), daemon=True))
        procs[-1].start()
    try:
        for p in procs:
            p.join(timeout=150)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    codes = [p.exitcode for p in procs]
    assert codes == [0, 0], f"rank exit codes {codes} (tracebacks are in the captured stderr)"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_ddp_two_ranks_match_single_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    script = tmp_path / "ddp_tiny.py"
    script.write_text(SCRIPT)
    _launch_two_ranks(script, tmp_path)

    # single-process reference on the full batches, in this process (WORLD_SIZE unset -> no process group)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    monkeypatch.setattr(sys, "argv", [str(script), str(single_dir)])
    with contextlib.redirect_stdout(io.StringIO()):
        runpy.run_path(str(script), run_name="__main__")

    r0, r1 = torch.load(tmp_path / "rank0_of2.pt"), torch.load(tmp_path / "rank1_of2.pt")
    single = torch.load(single_dir / "rank0_of1.pt")
    assert set(r0) == set(single) == {"body.0.weight", "body.0.bias", "head.weight", "head.bias"}
    for key in single:
        assert torch.equal(r0[key], r1[key]), f"ranks disagree on {key}"
        torch.testing.assert_close(r0[key], single[key], rtol=1e-5, atol=1e-6, msg=f"DDP != single process for {key}")

    # each rank got a disjoint half of exactly the single-process batch, in order
    s0 = json.loads((tmp_path / "rank0_of2.json").read_text())
    s1 = json.loads((tmp_path / "rank1_of2.json").read_text())
    full = json.loads((single_dir / "rank0_of1.json").read_text())
    assert len(full) == len(s0) == len(s1) == 8  # 2 epochs x 4 steps of 8 samples
    for a, b, f in zip(s0, s1, full):
        assert len(a) == len(b) == 4 and a + b == f

    # rank 0 logged loss means averaged over ranks == single-process epoch means
    ddp_rows, single_rows = read_csv(tmp_path / "train" / "train_log.csv"), read_csv(single_dir / "train" / "train_log.csv")
    assert len(ddp_rows) == len(single_rows) == 2
    for a, b in zip(ddp_rows, single_rows):
        for col in ("loss_ce", "loss_mse", "loss_total", "lr"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-5), col
