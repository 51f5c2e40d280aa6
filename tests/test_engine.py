"""Engine unit tests: schedule, optimizer groups, checkpoints, RNG, config checks, distiller, trainer."""
from __future__ import annotations

import math
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from deap_lib.config import config_diff
from deap_lib.fileio import file_sha256, state_dict_sha256
from deap_lib.engine import (
    CheckpointError,
    ConfigMismatchError,
    NonFiniteLossError,
    Trainer,
    WarmupFlatCosineLR,
    build_optimizer,
    build_scheduler,
    capture_rng_state,
    load_checkpoint,
    read_csv,
    restore_rng_state,
    save_checkpoint,
    scaled_phases,
    warmup_flat_cosine_factor,
    warmup_flat_cosine_lr,
)




# --------------------------------------------------------------------------------------------------
# tiny modules and data
# --------------------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    """conv-BN-ReLU -> GAP -> head (Linear-BN1d-Linear), with an optional frozen stem."""

    def __init__(self, num_classes: int = 3, frozen_stem: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.Linear(5, num_classes))
        if frozen_stem:
            self.stem.requires_grad_(False)

    def forward(self, x):
        f = F.relu(self.bn(self.conv(self.stem(x))))
        return self.head(f.mean(dim=(2, 3)))


class WithHeadHook(TinyNet):
    """Declares only the last Linear as its head through head_parameters()."""

    def head_parameters(self):
        return self.head[2].parameters()


class WithClassifierOnly(TinyNet):
    """ReIDNet-like: classifier_parameters() is the final Linear only; the LR group is the whole head."""

    def classifier_parameters(self):
        return self.head[2].parameters()


class Loader:
    """A list of batches with a batch sampler exposing set_epoch (what the trainer looks for)."""

    class _Sampler:
        def __init__(self):
            self.epochs = []

        def set_epoch(self, e):
            self.epochs.append(e)

    def __init__(self, batches):
        self.batches = batches
        self.batch_sampler = self._Sampler()

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def _batches(n=3, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 3, 6, 6, generator=g), torch.randint(0, 3, (b,), generator=g)) for _ in range(n)]


# --------------------------------------------------------------------------------------------------
# schedule
# --------------------------------------------------------------------------------------------------
PAPER = dict(total_epochs=90, warmup_epochs=10, flat_until=40)


def test_schedule_paper_numbers():
    lr = lambda epoch: warmup_flat_cosine_lr(epoch - 1, base_lr=0.01, **PAPER)  # noqa: E731  1-based epoch
    assert lr(1) == pytest.approx(0.001, abs=1e-15)  # epoch 1 trains at 0.1 * lr0
    assert lr(2) == pytest.approx(0.0019, abs=1e-15)  # 0.1*(1-1/10) + 1/10 = 0.19
    assert lr(10) == pytest.approx(0.0091, abs=1e-15)
    for epoch in range(11, 42):  # epochs 11..41 flat
        assert lr(epoch) == pytest.approx(0.01, abs=1e-15)
    # cosine: (1 + cos(pi x))/2 == cos^2(pi x / 2)
    assert lr(42) == pytest.approx(1e-7 + (0.01 - 1e-7) * math.cos(math.pi / 100) ** 2, rel=1e-12)
    assert lr(66) == pytest.approx(1e-7 + (0.01 - 1e-7) / 2, rel=1e-12)  # k = 65 = midpoint of 40..90
    assert lr(90) == pytest.approx(1e-7 + (0.01 - 1e-7) * math.sin(math.pi / 100) ** 2, rel=1e-12)
    assert lr(90) == pytest.approx(9.9663e-06, rel=1e-4)
    vals = [lr(e) for e in range(41, 91)]
    assert all(a > b for a, b in zip(vals, vals[1:]))  # strictly decreasing cosine
    assert warmup_flat_cosine_factor(0, base_lr=0.01, **PAPER) == pytest.approx(0.1)
    assert warmup_flat_cosine_factor(89, base_lr=0.01, **PAPER) == pytest.approx(lr(90) / 0.01)


def test_scheduler_steps_per_epoch_and_per_group():
    model = TinyNet()
    opt = build_optimizer(model, lr=0.01, head_lr_mult=1.5)
    sched = WarmupFlatCosineLR(opt, **PAPER)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(90):
            seen.append([g["lr"] for g in opt.param_groups])
            sched.step()
    base = [s[0] for s in seen]
    head = [s[1] for s in seen]
    assert base[0] == pytest.approx(0.001) and head[0] == pytest.approx(0.0015)
    assert base[10:41] == [pytest.approx(0.01)] * 31 and head[10:41] == [pytest.approx(0.015)] * 31
    assert head[89] == pytest.approx(1e-7 + (0.015 - 1e-7) * math.sin(math.pi / 100) ** 2, rel=1e-12)
    # the state restores the same LR
    opt2 = build_optimizer(TinyNet(), lr=0.01, head_lr_mult=1.5)
    sched2 = WarmupFlatCosineLR(opt2, **PAPER)
    state = sched.state_dict()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 90 and [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_scaled_phases():
    assert tuple(scaled_phases(90)) == (90, 10, 40)
    assert tuple(scaled_phases(45)) == (45, 5, 20)
    assert tuple(scaled_phases(18)) == (18, 2, 8)
    p = scaled_phases(3)
    assert 1 <= p.warmup_epochs <= p.flat_until < 3
    sched = build_scheduler(torch.optim.SGD(TinyNet().parameters(), lr=0.1), 45)
    assert (sched.warmup_epochs, sched.flat_until) == (5, 20)
    with pytest.raises(ValueError, match="flat_until"):
        warmup_flat_cosine_lr(0, base_lr=0.01, total_epochs=10, warmup_epochs=5, flat_until=10)


# --------------------------------------------------------------------------------------------------
# optimizer
# --------------------------------------------------------------------------------------------------
def test_optimizer_groups_head_mult_and_frozen():
    model = TinyNet(frozen_stem=True)
    opt = build_optimizer(model, lr=0.01, momentum=0.9, weight_decay=5e-4, head_lr_mult=1.5)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"base", "head"}
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(groups["head"]["params"]) == ids(model.head.parameters())
    expected_base = ids(model.conv.parameters()) | ids(model.bn.parameters())
    assert ids(groups["base"]["params"]) == expected_base
    assert not ids(model.stem.parameters()) & (ids(groups["base"]["params"]) | ids(groups["head"]["params"]))
    assert groups["base"]["lr"] == pytest.approx(0.01) and groups["head"]["lr"] == pytest.approx(0.015)
    for g in opt.param_groups:
        assert g["momentum"] == 0.9 and g["weight_decay"] == 5e-4


def test_optimizer_head_sources():
    m = WithHeadHook()
    opt = build_optimizer(m, lr=0.1)
    head = next(g for g in opt.param_groups if g["name"] == "head")
    assert {id(p) for p in head["params"]} == {id(m.head[2].weight), id(m.head[2].bias)}
    c = WithClassifierOnly()
    head = next(g for g in build_optimizer(c, lr=0.1).param_groups if g["name"] == "head")
    assert {id(p) for p in head["params"]} == {id(p) for p in c.head.parameters()}  # whole ClassBlock
    # explicit head params win
    opt = build_optimizer(m, lr=0.1, head_params=[m.conv.weight])
    head = next(g for g in opt.param_groups if g["name"] == "head")
    assert [id(p) for p in head["params"]] == [id(m.conv.weight)]
    # no head discoverable
    plain = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no head"):
        build_optimizer(plain, lr=0.1)
    assert len(build_optimizer(plain, lr=0.1, head_lr_mult=1.0).param_groups) == 1
    with pytest.raises(ValueError, match="not parameters of the model"):
        build_optimizer(plain, lr=0.1, head_params=[nn.Parameter(torch.zeros(3))])


# --------------------------------------------------------------------------------------------------
# checkpoints, RNG, config
# --------------------------------------------------------------------------------------------------
class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("boom while pickling")


def test_atomic_save_keeps_old_file_on_error(tmp_path: Path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.arange(4.0), "epoch": 1})
    big = torch.randn(50_000)  # written before the failing object, so the temp file is partly written
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"a": big, "b": _Unpicklable()})
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_load_checkpoint_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"w": torch.randn(1000)})
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="trunc.pt"):
        load_checkpoint(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)


def test_rng_capture_restore_round_trip(tmp_path: Path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.randn(), torch.randn(1)  # move off the seed points
    state = capture_rng_state()
    save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    first = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist(), random.gauss(0, 1))
    np.random.randn(7), torch.randn(7), random.random()
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])  # through a weights_only load
    second = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist(), random.gauss(0, 1))
    assert first == second


def test_config_diff_and_mismatch(tmp_path: Path):
    a = {"lr": 0.01, "model": {"arch": "resnet50", "width": 0.25}, "sizes": (256, 256)}
    b = {"lr": 0.01, "model": {"arch": "resnet50", "width": 0.5}, "sizes": [256, 256], "new": 1}
    assert config_diff(a, b) == {"model.width": (0.25, 0.5), "new": ("<missing>", 1)}
    assert config_diff(a, a) == {}

    def make(cfg):
        model = TinyNet()
        opt = build_optimizer(model, lr=0.01)
        step = lambda batch: {"ce": F.cross_entropy(model(batch[0]), batch[1])}  # noqa: E731
        return Trainer(model, opt, Loader(_batches(1)), step, epochs=2, out_dir=tmp_path, config=cfg, progress=False, device="cpu")

    make({"lr": 0.01, "model": {"width": 0.25}}).fit()
    with pytest.raises(ConfigMismatchError, match=r"model\.width"):
        make({"lr": 0.01, "model": {"width": 0.5}}).fit(resume=True)
    t = make({"lr": 0.01, "model": {"width": 0.5}})
    t.fit(resume=True, allow_config_change=True)
    assert t.epoch == 2


def test_a_checkpoint_from_before_a_config_key_existed_resumes_at_its_default(tmp_path: Path):
    def make(cfg, defaults=None, epochs=1):
        model = TinyNet()
        step = lambda batch: {"ce": F.cross_entropy(model(batch[0]), batch[1])}  # noqa: E731
        return Trainer(model, build_optimizer(model, lr=0.01), Loader(_batches(1)), step, epochs=epochs,
                       out_dir=tmp_path, config=cfg, config_defaults=defaults, progress=False, device="cpu")

    make({"lr": 0.01}, epochs=2).fit()  # written before "loss.relation" existed
    defaults = {"lr": 0.1, "loss": {"relation": "arkd"}}
    t = make({"lr": 0.01, "loss": {"relation": "arkd"}}, defaults, epochs=2)
    t.fit(resume=True)  # the new key at its default: no difference
    assert t.epoch == 2
    with pytest.raises(ConfigMismatchError, match=r"loss\.relation: .*last\.pt='<missing>' now='at'"):
        make({"lr": 0.01, "loss": {"relation": "at"}}, defaults, epochs=2).fit(resume=True)
    with pytest.raises(ConfigMismatchError, match=r"lr"):  # a key the checkpoint has still counts
        make({"lr": 0.1, "loss": {"relation": "arkd"}}, defaults, epochs=2).fit(resume=True)


# --------------------------------------------------------------------------------------------------
# the frozen teacher of a method
# --------------------------------------------------------------------------------------------------
def _bn_stats(module):
    return [t.clone() for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for t in (m.running_mean, m.running_var)]


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_a_methods_teacher_is_frozen_and_follows_teacher_bn_mode(bn_mode: str):
    """A method holds its teacher outside its module tree: never optimised, never checkpointed, never given a
    gradient; with ``teacher_bn_mode="eval"`` its BatchNorm statistics stay as they are, with ``"train"`` (the
    released code's quirk) they follow the batches."""
    from deap_lib.methods import METHODS, get_preset
    from deap_lib.models import build_model

    cfg = get_preset("quick", "kd")
    cfg.teacher_bn_mode, cfg.runtime.fold_teacher = bn_mode, False  # batch statistics cannot be folded
    torch.manual_seed(0)
    student = build_model(cfg.model.arch, 4, width=cfg.model.width)
    teacher = build_model(cfg.model.arch, 4, width=cfg.model.width)
    method = METHODS.get("kd")(cfg, student, teacher)
    opt = method.configure_optimizers()[0].optimizer
    opt_ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert opt_ids == {id(p) for p in student.parameters()}
    assert not {id(p) for p in method.parameters()} & {id(p) for p in teacher.parameters()}
    before = _bn_stats(teacher)
    method.train()
    assert student.training and teacher.training == (bn_mode == "train")
    torch.manual_seed(1)
    for _ in range(2):
        x, pids = torch.randn(8, 3, *cfg.model.input_size), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        loss = sum(method.forward_train((x, pids)).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(teacher))) == (bn_mode == "eval")
    method.eval()
    assert not teacher.training and not student.training
    state = method.checkpoint_state()
    assert set(state) == {f"student.{k}" for k in student.state_dict()}  # the student only
    assert method.checkpoint_metadata()["teacher_bn_mode"] == bn_mode
    cfg.teacher_bn_mode = "frozen"
    with pytest.raises(Exception, match="teacher_bn_mode must be one of"):
        METHODS.get("kd")(cfg, build_model(cfg.model.arch, 4, width=cfg.model.width), teacher)


def test_teacher_hashes(tmp_path: Path):
    """What identifies a teacher on resume: the SHA-256 of its file (hashlib's), or of its tensors."""
    import hashlib

    torch.manual_seed(0)
    teacher = TinyNet()
    clone = TinyNet()
    clone.load_state_dict(teacher.state_dict())
    h1 = state_dict_sha256(teacher.state_dict())
    assert state_dict_sha256(clone.state_dict()) == h1
    with torch.no_grad():
        clone.conv.weight[0, 0, 0, 0] += 1e-3
    assert state_dict_sha256(clone.state_dict()) != h1
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# trainer
# --------------------------------------------------------------------------------------------------
def test_nan_detection_names_term(tmp_path: Path):
    model = TinyNet()
    opt = build_optimizer(model, lr=0.01)

    def step(batch, ctx):
        out = model(batch[0])
        kd = out.pow(2).mean()
        if ctx.epoch == 2 and ctx.iteration == 2:
            kd = kd * float("nan")
        return {"ce": F.cross_entropy(out, batch[1]), "kd": kd}

    t = Trainer(model, opt, Loader(_batches(3)), step, epochs=3, out_dir=tmp_path, progress=False, device="cpu")
    with pytest.raises(NonFiniteLossError, match=r"kd=nan at epoch 2, iteration 2") as err:
        t.fit()
    assert "ce" not in str(err.value).split("at epoch")[0]
    assert load_checkpoint(t.checkpoint_path)["epoch"] == 1  # the last good epoch is kept


def test_trainer_sums_weighted_terms_like_manual_sgd(tmp_path: Path):
    """One step of the trainer == a hand-written SGD step on the sum of the returned terms."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    w0, b0 = model.weight.detach().clone(), model.bias.detach().clone()
    # manual reference: L = CE + 0.3 * ||W||^2, plain gradient step with lr 0.1
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    loss = F.cross_entropy(x @ w.t() + b, y) + 0.3 * w.pow(2).sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = lambda batch: {"ce": F.cross_entropy(model(batch[0]), batch[1]), "l2": 0.3 * model.weight.pow(2).sum()}  # noqa: E731
    hist = Trainer(model, opt, Loader([(x, y)]), step, epochs=1, out_dir=tmp_path, progress=False, device="cpu").fit()
    torch.testing.assert_close(model.weight.detach(), w0 - 0.1 * gw)
    torch.testing.assert_close(model.bias.detach(), b0 - 0.1 * gb)
    assert hist[0]["loss_total"] == pytest.approx(loss.item(), rel=1e-6)
    assert hist[0]["loss_l2"] == pytest.approx(0.3 * w0.pow(2).sum().item(), rel=1e-6)


def test_trainer_log_hooks_schedule_and_sampler_epochs(tmp_path: Path):
    model = TinyNet()
    opt = build_optimizer(model, lr=0.01)
    sched = WarmupFlatCosineLR(opt, total_epochs=4, warmup_epochs=1, flat_until=2)
    loader = Loader(_batches(3))
    calls = []

    def step(batch):
        out = model(batch[0])
        return {"ce": F.cross_entropy(out, batch[1]), "reg": 1e-3 * out.pow(2).mean()}

    def post(ctx):
        calls.append((ctx.epoch, ctx.iteration, ctx.global_step))

    def hook(trainer, epoch, row):
        model.eval()  # e.g. an evaluation; the next epoch must switch back to train
        return {"metric": float(epoch) / 10}

    hist = Trainer(model, opt, loader, step, epochs=4, out_dir=tmp_path, scheduler=sched, post_step=post,
                   epoch_end=[hook], progress=False, config={"name": "tiny"}, device="cpu").fit()
    assert loader.batch_sampler.epochs == [0, 1, 2, 3]
    assert calls == [(e, i, 3 * (e - 1) + i - 1) for e in range(1, 5) for i in range(1, 4)]
    rows = read_csv(tmp_path / "train_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"loss_ce", "loss_reg", "loss_total", "lr", "lr_head", "seconds", "images_per_s", "metric"} <= set(rows[0])
    expected_lr = [warmup_flat_cosine_lr(k, base_lr=0.01, total_epochs=4, warmup_epochs=1, flat_until=2) for k in range(4)]
    assert [float(r["lr"]) for r in rows] == pytest.approx(expected_lr)
    expected_head = [warmup_flat_cosine_lr(k, base_lr=0.015, total_epochs=4, warmup_epochs=1, flat_until=2) for k in range(4)]
    assert [float(r["lr_head"]) for r in rows] == pytest.approx(expected_head)
    for r, h in zip(rows, hist):
        assert float(r["loss_total"]) == pytest.approx(float(r["loss_ce"]) + float(r["loss_reg"]), rel=1e-9)
        assert float(r["metric"]) == h["metric"]
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["epoch"] == 4 and ck["iteration"] == 12 and ck["config"] == {"name": "tiny"}
    assert (tmp_path / "config.json").is_file()


def test_trainer_rejects_amp_on_cpu_and_bad_terms(tmp_path: Path):
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="AMP"):
        Trainer(model, opt, Loader([]), lambda b: {}, epochs=1, out_dir=tmp_path, device="cpu", amp=True)
    batches = [(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))]
    t = Trainer(model, opt, Loader(batches), lambda b: {"vec": model(b[0]).sum(1)}, epochs=1, out_dir=tmp_path,
                device="cpu", progress=False)
    assert t.amp is False
    with pytest.raises(TypeError, match="'vec' must be a scalar"):
        t.fit()


def test_fresh_run_refuses_to_overwrite_a_checkpoint(tmp_path: Path):
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(torch.randn(3, 2), torch.zeros(3, dtype=torch.long))]
    step = lambda b: {"ce": F.cross_entropy(model(b[0]), b[1])}  # noqa: E731
    make = lambda: Trainer(model, opt, Loader(batches), step, epochs=1, out_dir=tmp_path, device="cpu", progress=False)  # noqa: E731
    make().fit()
    with pytest.raises(FileExistsError, match="last.pt"):
        make().fit()
    assert make().fit(overwrite=True)[0]["epoch"] == 1
    stale = tmp_path / ".last.pt.x1y2.tmp"  # what a SIGKILL during a checkpoint write leaves behind
    stale.write_bytes(b"partial")
    assert make().fit(resume=True)[0]["epoch"] == 1  # already finished: nothing to do, history kept
    assert not stale.exists()
