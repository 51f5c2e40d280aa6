"""Exact resumption: a run killed mid-epoch and resumed ends bitwise identical to an uninterrupted run."""
from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import random
import runpy
import select
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deap_lib.engine import ConfigMismatchError, Trainer, build_optimizer, build_scheduler, load_checkpoint, read_csv
from deap_lib.fileio import state_dict_sha256





# A tiny CNN trained with random flip + random erasing (global torch RNG, as torchvision transforms do),
# dropout, a seeded shuffling batch sampler with set_epoch, SGD with momentum/weight decay/head LR mult
# and the warm-up/flat/cosine schedule. argv: out_dir final_path pause_iteration_of_epoch_2 (0 = none).
SCRIPT = textwrap.dedent(
    '''
    import sys, time
    import torch
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, Dataset
    from deap_lib.engine import Trainer, build_optimizer, build_scheduler, seed_everything

    torch.set_num_threads(1)
    out_dir, final_path, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3])

    class AugData(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(123)
            self.x = torch.randn(48, 3, 12, 12, generator=g)
            self.y = torch.arange(48) % 4
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            x = self.x[i].clone()
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            if torch.rand(()) < 0.5:
                h, w = torch.randint(2, 7, (2,)).tolist()
                top, left = torch.randint(0, 12 - h, ()).item(), torch.randint(0, 12 - w, ()).item()
                x[:, top:top + h, left:left + w] = 0.0
            return x, self.y[i]

    class ShuffleBatches:
        def __init__(self, n, batch_size, seed):
            self.n, self.batch_size, self.seed, self.epoch = n, batch_size, seed, 0
        def set_epoch(self, epoch):
            self.epoch = epoch
        def __iter__(self):
            g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            for s in range(0, self.n - self.batch_size + 1, self.batch_size):
                yield perm[s:s + self.batch_size]
        def __len__(self):
            return self.n // self.batch_size
        def state_dict(self):
            return {"seed": self.seed, "epoch": self.epoch}
        def load_state_dict(self, state):
            self.seed, self.epoch = state["seed"], state["epoch"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.drop = nn.Dropout(0.2)
            self.head = nn.Linear(8, 4)
        def forward(self, x):
            return self.head(self.drop(self.features(x).mean(dim=(2, 3))))

    seed_everything(0)
    model = Net()
    opt = build_optimizer(model, lr=0.05, head_lr_mult=1.5)
    sched = build_scheduler(opt, 3)
    loader = DataLoader(AugData(), batch_sampler=ShuffleBatches(48, 8, seed=5), num_workers=0)

    def step(batch, ctx):
        x, y = batch
        ce = F.cross_entropy(model(x), y)
        if pause_at and ctx.epoch == 2 and ctx.iteration == pause_at:
            print("PAUSE", flush=True)
            time.sleep(120)  # the test SIGKILLs us here, in the middle of epoch 2
        return {"ce": ce, "reg": 1e-3 * model.head.weight.pow(2).sum()}

    def post(ctx):
        print(f"E{ctx.epoch} I{ctx.iteration}", flush=True)

    trainer = Trainer(model, opt, loader, step, epochs=3, out_dir=out_dir, seed=7, scheduler=sched, device="cpu",
                      post_step=post, progress=False, config={"lr": 0.05, "epochs": 3})
    trainer.fit(resume=True)
    torch.save(model.state_dict(), final_path)
    print("DONE", flush=True)
    '''
)


def _child_run(script: str, argv: list, fd: int) -> None:
    """Body of a forked process: run the training script with stdout on the pipe ``fd``."""
    sys.stdout = os.fdopen(fd, "w", buffering=1)
    sys.argv = argv
    runpy.run_path(script, run_name="__main__")


def _fork_launch(script: Path, out_dir: Path, final: Path, pause_at: int):
    """Start the script in a forked OS process (inherits this process's imported torch: no start-up cost)."""
    read_fd, write_fd = os.pipe()
    argv = [str(script), str(out_dir), str(final), str(pause_at)]
    proc = multiprocessing.get_context("fork").Process(target=_child_run, args=(str(script), argv, write_fd), daemon=True)
    proc.start()
    os.close(write_fd)
    return proc, read_fd


def _read_until(fd: int, marker: str, timeout: float) -> list:
    """Lines printed by the child until ``marker`` (or EOF / timeout)."""
    lines, buf, deadline = [], b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [d.decode().strip() for d in done]
        if marker in lines:
            break
    return lines


def _run_in_process(script: Path, out_dir: Path, final: Path) -> str:
    """Run the script in this process (no extra torch start-up), capturing what it prints."""
    argv, threads = sys.argv, torch.get_num_threads()
    buf = io.StringIO()
    try:
        sys.argv = [str(script), str(out_dir), str(final), "0"]
        with contextlib.redirect_stdout(buf):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
        torch.set_num_threads(threads)
    return buf.getvalue()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path: Path):
    script = tmp_path / "train_tiny.py"
    script.write_text(SCRIPT)
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_final, run_final = tmp_path / "ref_final.pt", tmp_path / "run_final.pt"

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # import torch._dynamo here, once, before fork
    victim, out_fd = _fork_launch(script, run_dir, run_final, 4)  # a real process, SIGKILLed mid-epoch 2
    try:
        seen = _read_until(out_fd, "PAUSE", timeout=120)
        if not seen or seen[-1] != "PAUSE":
            pytest.fail(f"the victim never reached epoch 2 iteration 4; it printed {seen}")
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join()
        os.close(out_fd)
    assert victim.exitcode == -signal.SIGKILL
    # it really died mid-epoch 2: 6 iterations of epoch 1 and 3 of epoch 2 done, only epoch 1 saved
    assert seen[:-1] == [f"E1 I{i}" for i in range(1, 7)] + [f"E2 I{i}" for i in range(1, 4)]
    after_epoch1 = load_checkpoint(run_dir / "last.pt")
    assert after_epoch1["epoch"] == 1
    assert not run_final.exists()

    resumed_out = _run_in_process(script, run_dir, run_final)  # resume from the killed run's checkpoint
    reference_out = _run_in_process(script, ref_dir, ref_final)  # uninterrupted run
    assert resumed_out.splitlines()[0] == "E2 I1", "the resumed run must restart at epoch 2"
    assert resumed_out.split()[-1] == reference_out.split()[-1] == "DONE"

    ref_state, run_state = torch.load(ref_final), torch.load(run_final)
    assert list(ref_state) == list(run_state)
    for key in ref_state:
        assert torch.equal(ref_state[key], run_state[key]), f"{key} differs after resume"
    # epochs 2-3 did change the weights (the comparison is not vacuous)
    assert not torch.equal(after_epoch1["model"]["head.weight"], run_state["head.weight"])
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3
    ref_rows, run_rows = read_csv(ref_dir / "train_log.csv"), read_csv(run_dir / "train_log.csv")
    assert len(run_rows) == 3
    for a, b in zip(ref_rows, run_rows):
        assert (a["epoch"], a["loss_ce"], a["loss_reg"], a["lr"]) == (b["epoch"], b["loss_ce"], b["loss_reg"], b["lr"])
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------------
# in-process variant with a distillation wrapper (exception from a hook), and the teacher-hash guard
# --------------------------------------------------------------------------------------------------
class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


class Crash(RuntimeError):
    pass


class Batches:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(24, 3, 6, 6, generator=g)
        self.y = torch.arange(24) % 3
        self.epoch = 0
        self.batch_sampler = self

    def set_epoch(self, e):
        self.epoch = e

    def __iter__(self):
        perm = torch.randperm(24, generator=torch.Generator().manual_seed(100 + self.epoch))
        for s in range(0, 24, 6):
            idx = perm[s:s + 6]
            x = self.x[idx]
            x = torch.where(torch.rand(6, 1, 1, 1) < 0.5, x.flip(-1), x)  # global-RNG augmentation
            yield x, self.y[idx]

    def __len__(self):
        return 4


class StudentTeacher(nn.Module):
    """The trainer's side of a distillation (what a method does): the student is trained and checkpointed,
    the frozen teacher sits outside the module tree and is named in the checkpoint's metadata by its hash."""

    def __init__(self, student: nn.Module, teacher: nn.Module):
        super().__init__()
        self.student = student
        self._teacher = [teacher.requires_grad_(False).eval()]
        self.teacher_hash = state_dict_sha256(teacher.state_dict())

    def forward(self, x):
        with torch.no_grad():
            t = self._teacher[0](x)
        return self.student(x), t

    def checkpoint_state(self):
        return self.student.state_dict()

    def load_checkpoint_state(self, state):
        self.student.load_state_dict(state, strict=True)

    def checkpoint_metadata(self):
        return {"teacher_hash": self.teacher_hash}


def _distill_run(out_dir: Path, *, crash_at=None, teacher_seed=1, resume=False):
    torch.manual_seed(0)
    student = Small()
    torch.manual_seed(teacher_seed)
    teacher = Small()
    d = StudentTeacher(student, teacher)
    opt = build_optimizer(student, lr=0.05)  # the student only (the teacher is frozen)
    sched = build_scheduler(opt, 3)

    def step(batch, ctx):
        x, y = batch
        s, t = d(x)
        kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
        return {"ce": F.cross_entropy(s, y), "kl": kl}

    def post(ctx):
        if crash_at == (ctx.epoch, ctx.iteration):
            raise Crash("simulated crash")

    trainer = Trainer(d, opt, Batches(), step, epochs=3, out_dir=out_dir, seed=3, scheduler=sched, post_step=post,
                      device="cpu", progress=False)
    trainer.fit(resume=resume)
    return d


def test_resume_after_crash_with_a_teacher_is_identical(tmp_path: Path):
    with torch.random.fork_rng():
        ref = _distill_run(tmp_path / "ref").checkpoint_state()
    with pytest.raises(Crash):
        _distill_run(tmp_path / "run", crash_at=(2, 3))
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["epoch"] == 1 and set(ck["model"]) == set(Small().state_dict())  # student only, no teacher keys
    assert len(ck["metadata"]["teacher_hash"]) == 64
    out = _distill_run(tmp_path / "run", resume=True).checkpoint_state()
    for key in ref:
        assert torch.equal(ref[key], out[key]), key


def test_resume_refuses_a_different_teacher(tmp_path: Path):
    with pytest.raises(Crash):
        _distill_run(tmp_path, crash_at=(2, 1))
    with pytest.raises(ConfigMismatchError, match="teacher_hash"):
        _distill_run(tmp_path, teacher_seed=2, resume=True)
