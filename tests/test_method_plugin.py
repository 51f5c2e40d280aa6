"""A new method is one module: this file defines, registers and trains one no library file knows about.

``ToyDistill`` has its own trainable module (a regressor from the student's embedding to the teacher's),
its own optimizer for it (Adam, stepped on detached features after the student's step: an alternating
update), an ``after_backward`` hook (gradient surgery on the student's head, counted in a buffer), its own
config keys (``args.*``) and the library's compression stage (BN gates of a plain student). The test
trains it through ``python -m deap_lib --plugin <this file> train``, kills it with SIGKILL mid-run,
resumes it and checks the result is bit-identical to an uninterrupted run, then checks the compressed
forms. The same file serves as the plugin of the torchrun test (``tests/test_ddp_cli.py``).
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from deap_lib.engine import OptimizerSpec
from deap_lib.methods import METHODS, Method
from deap_lib.pruning import gate_lasso

HERE = str(Path(__file__).resolve())
#: the process kills itself with SIGKILL when it reaches the end of this epoch (before its checkpoint)
DIE_AT_ENV = "TOY_DISTILL_DIE_AT_EPOCH"


@dataclass
class ToyArgs:
    fit_weight: float = 0.5
    head_grad_scale: float = 0.5
    regressor_lr: float = 1e-2


class ToyDistill(Method):
    name = "toy_distill"
    needs_teacher = True
    pcp = None
    prunes = True  # the library's compression: cut the student's BN gates to prune.target_macs, absorb
    Args = ToyArgs

    def __init__(self, cfg, student, teacher=None, **kw):
        super().__init__(cfg, student, teacher, **kw)
        self.regressor = nn.Linear(student.config["embed_dim"], teacher.config["embed_dim"], bias=False)
        self.register_buffer("surgery_steps", torch.zeros((), dtype=torch.long))
        self._last = None

    def forward_train(self, batch):
        imgs, pids = batch[0], batch[1]
        out = self.student(imgs)
        target = self.teacher_forward(imgs).embedding
        self._last = (out.embedding.detach(), target)
        terms = self.task_terms(out, pids)
        terms["fit"] = self.args.fit_weight * (self.regressor(out.embedding) - target).pow(2).mean()
        terms["bn_lasso"] = 1e-3 * gate_lasso(self.net)
        return terms

    def regressor_terms(self, batch):  # the regressor's own step, on detached student features
        emb, target = self._last
        return {"fit": (self.regressor(emb) - target).pow(2).mean()}

    def configure_optimizers(self):
        specs = super().configure_optimizers()
        adam = torch.optim.Adam(self.regressor.parameters(), lr=self.args.regressor_lr)
        return specs + [OptimizerSpec("regressor", adam, step_fn=self.regressor_terms)]

    def after_backward(self, ctx):
        for p in self.net.head_parameters():
            if p.grad is not None:
                p.grad.mul_(self.args.head_grad_scale)
        self.surgery_steps += 1

    def end_epoch(self, epoch):
        if os.environ.get(DIE_AT_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        return {"surgery_steps": int(self.surgery_steps)}


# registered when the CLI loads this file as a plugin (``--plugin``); pytest's own import of the test module
# leaves the library's registry as it is
if __name__.startswith("deap_plugin_"):
    METHODS.register("toy_distill", ToyDistill)


# ------------------------------------------------------------------------------------------------ helpers
def cli(*args, env=None, check=True):
    from cli_helpers import deap_cli  # (not at import: the CLI loads this file as a plugin)

    return deap_cli(HERE, *args, env=env, check=check)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from cli_helpers import quick_teacher

    return quick_teacher(HERE, tmp_path_factory.mktemp("plugin"))


def toy_args(data, teacher_path, out, *extra):
    return ["train", "--method", "toy_distill", "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
            "--teacher", teacher_path, "--out", str(out), "--epochs", "3", "--set", "args.fit_weight=0.25",
            "--set", "prune.target_macs=0.6", "--no-progress", "--threads", "1", *extra]


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _same(a, b, where=""):
    """Recursively equal (tensors bitwise)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


# ------------------------------------------------------------------------------------------------ tests
def test_plugin_method_trains_resumes_bit_exactly_and_compresses(teacher):
    root, data, tpath = teacher
    assert "toy_distill" not in METHODS.names()  # the library does not know it; the plugin registers it
    ref, killed = root / "toy_ref", root / "toy_killed"
    cli(*toy_args(data, tpath, ref))
    p = cli(*toy_args(data, tpath, killed), env={DIE_AT_ENV: "2"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert not (killed / "metrics.json").exists()
    assert _load(killed / "last.pt")["epoch"] == 1  # died at the end of epoch 2, before its checkpoint
    cli(*toy_args(data, tpath, killed, "--resume"))

    a, b = _load(ref / "last.pt"), _load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    _same(a["model"], b["model"], "model")  # student, regressor and the surgery buffer
    _same(a["optimizer"]["state"], b["optimizer"]["state"], "optimizer")
    _same(a["extra_optimizers"], b["extra_optimizers"], "extra_optimizers")
    assert {"regressor.weight", "surgery_steps"} <= set(a["model"])
    assert set(a["extra_optimizers"]) == {"regressor"}
    iters = a["iteration"]
    assert int(a["model"]["surgery_steps"]) == iters  # after_backward ran once per step, resumed exactly
    assert not any(k.startswith("teacher") for k in a["model"])  # the frozen teacher is not checkpointed

    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (ref, killed))
    assert ma["config"]["args"] == {"fit_weight": 0.25}
    assert {"unpruned", "pruned", "absorbed"} <= set(ma["forms"])
    for form in ma["forms"]:
        assert ma["forms"][form]["mAP"] == mb["forms"][form]["mAP"], form
    assert ma["absorb_verification"]["max_rel"] < 1e-6
    assert ma["forms"]["absorbed"]["macs"] <= 0.6 * ma["forms"]["unpruned"]["macs"] + 1
    log = (ref / "train_log.csv").read_text().splitlines()
    assert "loss_regressor_fit" in log[0] and "surgery_steps" in log[0]


def test_plugin_method_config_errors_are_clear(teacher):
    root, data, tpath = teacher
    p = cli(*toy_args(data, tpath, root / "bad", "--set", "args.fit_wieght=1"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "args.fit_wieght" in p.stderr and "args.fit_weight" in p.stderr  # names the valid keys


def test_the_cli_help_lists_every_registered_method_a_plugins_included():
    p = cli("train", "--help")
    text = " ".join(p.stdout.split())  # argparse wraps the help
    for name in ("pretrain", "teacher", "kd", "deap", "cdd", "crkd", "kd_np_direct", "structure_kd", "thinned_kd",
                 "toy_distill"):
        assert name in text, name
    assert "quick, cpu, paper" in text or all(n in text for n in ("quick", "cpu", "paper"))
