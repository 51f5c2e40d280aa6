"""Precision, layout and the faster forms of a run: detection and fallback, what the trainer runs under, what a
run records, stale runs, the folded teacher, the evaluation form, and a bf16 run killed and resumed bit-exactly.
This file is also the plugin of its kill test: ``deap_killable`` SIGKILLs itself at the end of the epoch named
by an environment variable (before that epoch's checkpoint)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deap_lib.config import RunConfig
from deap_lib.engine import ConfigMismatchError, Trainer
from deap_lib.engine.precision import (cpu_has_native_bf16, parse_cpu_flags, resolve_channels_last,
                                       resolve_precision)
from deap_lib.methods import METHODS, get_preset
from deap_lib.methods.base import UserError
from deap_lib.methods.deap import DEAP
from deap_lib.methods.runner import eval_form, finished_run_diff, resolve_runtime
from deap_lib.models import build_model
from deap_lib.models.convbn import StemMaxPool

HERE = str(Path(__file__).resolve())
DIE_AT_ENV = "DEAP_DIE_AT_EPOCH"
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


class KillableDEAP(DEAP):
    name = "deap_killable"

    def end_epoch(self, epoch):
        if os.environ.get(DIE_AT_ENV) == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().end_epoch(epoch)


if __name__.startswith("deap_plugin_"):
    METHODS.register("deap_killable", KillableDEAP)


# ------------------------------------------------------------------------------------ resolution rules
X86_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
X86_AVX2 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n"


def test_cpu_flags_are_read_from_cpuinfo_text():
    assert "avx512_bf16" in parse_cpu_flags(X86_BF16)
    assert not parse_cpu_flags(X86_AVX2) & {"avx512_bf16", "amx_bf16", "bf16"}
    assert "bf16" in parse_cpu_flags(ARM_BF16)
    assert isinstance(cpu_has_native_bf16(), bool)


@pytest.mark.parametrize("setting,device,amp,native,want", [
    ("auto", CPU, True, True, "bf16"),   # native bf16: mixed precision
    ("auto", CPU, True, False, "fp32"),  # emulated bf16 would be slower: float32
    ("auto", CUDA, True, False, "fp16"),  # CUDA keeps its AMP
    ("auto", CUDA, False, True, "fp32"),
    ("fp32", CPU, True, True, "fp32"),
    ("bf16", CPU, True, False, "bf16"),  # asked for: honoured even where emulated
    ("bf16", CUDA, True, False, "bf16"),
])
def test_precision_resolution(setting, device, amp, native, want):
    assert resolve_precision(setting, device, amp=amp, native_bf16=native) == want


def test_precision_errors_name_the_key_and_the_valid_values():
    with pytest.raises(ValueError, match="runtime.precision='fp16' needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ValueError, match="valid: auto, fp32, bf16, fp16"):
        resolve_precision("half", CPU)
    with pytest.raises(ValueError, match="valid: auto, on, off, inference"):
        resolve_channels_last("yes", CPU)
    assert resolve_channels_last("auto", CPU) == resolve_channels_last("auto", CUDA) == "on"
    assert resolve_channels_last("inference", CPU) == "inference"
    with pytest.raises(UserError, match="fp16"):
        resolve_runtime(get_preset("quick", "teacher", **{"runtime.precision": "fp16"}), CPU)


# ------------------------------------------------------------------------------------ the trainer
def _fit_and_watch(tmp_path, **kw):
    """A 1-epoch fit of a tiny linear model; returns the autocast state each step saw."""
    seen = []
    model = torch.nn.Linear(4, 2)

    def step(batch):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"),
                     model(batch[0]).dtype, batch[0].is_contiguous()))
        return {"l": model(batch[0]).float().pow(2).mean()}

    loader = [(torch.randn(2, 4),), (torch.randn(2, 4),)]
    tr = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loader, step, epochs=1, out_dir=tmp_path,
                 device="cpu", progress=False, **kw)
    tr.fit()
    return seen, tr


def test_trainer_runs_each_precision_under_its_autocast(tmp_path):
    seen, tr = _fit_and_watch(tmp_path / "bf16", precision="bf16")
    assert seen and all(s[0] and s[1] == torch.bfloat16 and s[2] == torch.bfloat16 for s in seen)
    assert torch.load(tmp_path / "bf16" / "last.pt", weights_only=False)["trainer"]["precision"] == "bf16"
    seen, _ = _fit_and_watch(tmp_path / "fp32", precision="fp32")
    assert all(not s[0] and s[2] == torch.float32 for s in seen)
    with pytest.raises(ValueError, match="only used on CUDA"):
        _fit_and_watch(tmp_path / "fp16", precision="fp16")


def test_resume_refuses_another_precision(tmp_path):
    _fit_and_watch(tmp_path, precision="bf16")
    model = torch.nn.Linear(4, 2)
    tr = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [(torch.randn(2, 4),)],
                 lambda b: {"l": model(b[0]).sum()}, epochs=2, out_dir=tmp_path, device="cpu", progress=False,
                 precision="fp32")
    with pytest.raises(ConfigMismatchError, match="precision: .*'bf16' now='fp32'"):
        tr.fit(resume=True)


def test_channels_last_batches_reach_the_step_nhwc(tmp_path):
    seen = []
    conv = torch.nn.Conv2d(3, 2, 1)

    def step(batch):
        seen.append(batch[0].is_contiguous(memory_format=torch.channels_last) and not batch[0].is_contiguous())
        return {"l": conv(batch[0]).mean()}

    Trainer(conv, torch.optim.SGD(conv.parameters(), lr=0.1), [(torch.randn(2, 3, 4, 4), torch.arange(2))], step,
            epochs=1, out_dir=tmp_path, device="cpu", progress=False, channels_last=True).fit()
    assert seen == [True]


# ------------------------------------------------------------------------------------ faster forms, same outputs
@pytest.mark.parametrize("arch", ["resnet50", "resnet18", "mobilenet_v2"])
def test_the_folded_teacher_gives_the_teachers_outputs(arch):
    torch.manual_seed(0)
    teacher = build_model(arch, 10, width=0.25, embed_dim=16).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    student = build_model(arch, 10, width=0.25, embed_dim=16)
    cfg = get_preset("quick", "kd", teacher_path="t.pt")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = teacher.forward_features(x)
    for fold, nhwc in ((True, False), (True, True), (False, False)):
        cfg.runtime.fold_teacher = fold
        kd = METHODS.get("kd")(cfg, student, teacher)
        assert (kd._teacher_runner[0] is teacher) == (not fold)
        if nhwc:
            kd.teacher_channels_last()
        out = kd.teacher_forward(x)
        pairs = [(getattr(out, n), getattr(ref, n)) for n in ("logits", "global_feat", "embedding")]
        for a, b in pairs + list(zip(out.block_feats + out.stage_maps, ref.block_feats + ref.stage_maps)):
            assert a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-7
    cfg.runtime.fold_teacher, cfg.teacher_bn_mode = True, "train"  # batch statistics cannot be folded
    assert METHODS.get("kd")(cfg, student, teacher)._teacher_runner[0] is teacher


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_frozen_teacher_gives_the_folded_teachers_outputs_under_the_runs_precision(dtype):
    """The frozen graph against the eager folded teacher under the autocast a run of that precision uses: under
    bf16 the backbone's outputs bit for bit, under float32 (fused conv + add + ReLU) and in the float32 head up
    to rounding; each new input shape gets its own graph."""
    torch.manual_seed(3)
    teacher = build_model("resnet50", 10, width=0.25, embed_dim=16).eval()
    with torch.no_grad():
        for m in teacher.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    cfg = get_preset("quick", "kd", teacher_path="t.pt")
    eager = METHODS.get("kd")(cfg, build_model("resnet50", 10, width=0.25, embed_dim=16), teacher)
    frozen = METHODS.get("kd")(cfg, build_model("resnet50", 10, width=0.25, embed_dim=16), teacher)
    eager.prepare_teacher(channels_last=True)
    frozen.prepare_teacher(channels_last=True, frozen_dtype=dtype)
    assert type(frozen._teacher_runner[0]).__name__ == "FrozenFeatures"
    for batch in (4, 3, 4):
        x = torch.randn(batch, 3, 32, 32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            ref, out = eager.teacher_forward(x), frozen.teacher_forward(x)
        assert len(out.block_feats) == len(ref.block_feats) == 16 and len(out.stage_maps) == 2
        for a, b in zip(out.block_feats + out.stage_maps, ref.block_feats + ref.stage_maps):
            assert a.dtype == b.dtype
            if dtype == torch.bfloat16:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
        if dtype == torch.bfloat16:
            assert out.stage_maps[1].is_contiguous(memory_format=torch.channels_last)
        for name in ("logits", "global_feat", "embedding"):
            a, b = getattr(out, name), getattr(ref, name)
            assert a.dtype == b.dtype == torch.float32
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))
    assert len(frozen._teacher_runner[0]._graphs) == 2
    with pytest.raises(ValueError, match="eval mode"):
        from deap_lib.models.frozen import FrozenFeatures
        FrozenFeatures(teacher.train())


def test_the_teacher_is_frozen_on_cpu_where_it_is_folded():
    cfg = get_preset("quick", "kd", teacher_path="t.pt", **{"runtime.precision": "bf16"})
    assert resolve_runtime(cfg, CPU)["freeze_teacher"] is True
    for key, value in (("runtime.freeze_teacher", "off"), ("runtime.fold_teacher", False),
                       ("teacher_bn_mode", "train")):
        assert resolve_runtime(get_preset("quick", "kd", teacher_path="t.pt", **{key: value}), CPU)[
            "freeze_teacher"] is False, key
    assert resolve_runtime(get_preset("quick", "teacher"), CPU)["freeze_teacher"] is False  # no teacher
    with pytest.raises(UserError, match=r"runtime.freeze_teacher must be one of \('auto', 'on', 'off'\)"):
        resolve_runtime(get_preset("quick", "kd", teacher_path="t.pt", **{"runtime.freeze_teacher": "yes"}), CPU)


def test_the_evaluation_form_embeds_like_the_student():
    torch.manual_seed(1)
    student = build_model("resnet50", 10, width=0.25, embed_dim=16, pcp="deap").eval()
    with torch.no_grad():
        for block in student.pcp_blocks():
            block.pruner1.weight.add_(0.1 * torch.randn_like(block.pruner1.weight))
    x = torch.randn(4, 3, 32, 32)
    form = eval_form(student)
    assert form is not student and form.config.get("deploy")
    torch.testing.assert_close(form(x), student(x), rtol=1e-4, atol=1e-5)


def test_conv2_level_vectors_only_for_the_methods_that_read_them():
    torch.manual_seed(2)
    student = build_model("resnet50", 10, width=0.25, embed_dim=16, pcp="deap").train()
    x = torch.randn(4, 3, 32, 32)
    full = student.forward_features(x)
    cfg = get_preset("quick", "kd", teacher_path="t.pt")
    METHODS.get("kd")(cfg, student, build_model("resnet50", 10, width=0.25, embed_dim=16).eval())
    assert student.collect_conv2 is False
    torch.manual_seed(2)
    lean = student.forward_features(x)
    assert lean.mid_feats == [] and lean.gated_feats == [] and full.mid_feats
    for a, b in zip(full.block_feats + [full.logits], lean.block_feats + [lean.logits]):
        assert torch.equal(a, b)
    assert METHODS.get("cdd").conv2_feats


@pytest.mark.parametrize("nhwc", [False, True])
def test_training_stem_pool_matches_max_pool_values_and_gradients(nhwc):
    x = torch.randn(2, 4, 9, 10).relu()
    x[0, 0, :3, :3] = 1.0  # ties: the first maximum gets the gradient in both
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = StemMaxPool().train()(a), F.max_pool2d(b, 3, 2, 1)
    assert torch.equal(ya, yb) and ya.is_contiguous(memory_format=torch.channels_last if nhwc else
                                                    torch.contiguous_format)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad)


# ------------------------------------------------------------------------------------ records and stale runs
def test_a_finished_run_is_stale_when_its_resolved_runtime_differs():
    cfg = get_preset("quick", "deap", teacher_path="t.pt", **{"runtime.precision": "bf16"})
    legacy = {"config": cfg.to_dict(), "device": "cpu"}  # a run made before runtimes were recorded: fp32
    diff = finished_run_diff(legacy, cfg)
    assert diff["runtime.precision (resolved)"] == ("fp32", "bf16")
    assert diff["runtime.fold_teacher (resolved)"] == (False, True)
    same = {"config": cfg.to_dict(), "runtime": resolve_runtime(cfg, CPU)}
    assert finished_run_diff(same, cfg) == {}
    before_freezing = {k: v for k, v in same["runtime"].items() if k != "freeze_teacher"}  # recorded before the key
    assert finished_run_diff({"config": cfg.to_dict(), "runtime": before_freezing}, cfg) == {
        "runtime.freeze_teacher (resolved)": (False, True)}
    plain = get_preset("quick", "teacher", **{"runtime.precision": "fp32", "runtime.channels_last": "off"})
    assert finished_run_diff({"config": plain.to_dict(), "device": "cpu"}, plain) == {}  # nothing changed


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from cli_helpers import quick_teacher  # not at the top: this file is also loaded as a CLI plugin

    return quick_teacher(HERE, tmp_path_factory.mktemp("prec"))


def _args(method, data, tpath, out, *extra):
    return ("train", "--method", method, "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
            "--teacher", tpath, "--out", str(out), "--no-progress", "--threads", "1", "--set", "optim.epochs=3",
            "--set", "runtime.precision=bf16", *extra)


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_a_bf16_run_records_its_runtime_and_resumes_bit_exactly_after_sigkill(teacher):
    from cli_helpers import deap_cli

    root, data, tpath = teacher
    ref, killed = root / "ref", root / "killed"
    deap_cli(HERE, *_args("deap", data, tpath, ref))
    m = json.loads((ref / "metrics.json").read_text())
    assert m["runtime"] == {"precision": "bf16", "channels_last": "on", "fold_teacher": True, "freeze_teacher": True,
                            "pipeline": "batched"}
    p = deap_cli(HERE, *_args("deap_killable", data, tpath, killed), env={DIE_AT_ENV: "2"}, check=False)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stderr[-2000:])
    assert _load(killed / "last.pt")["epoch"] == 1
    deap_cli(HERE, *_args("deap_killable", data, tpath, killed, "--resume"))
    a, b = _load(ref / "last.pt"), _load(killed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3 and a["trainer"]["precision"] == "bf16"
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    mb = json.loads((killed / "metrics.json").read_text())
    assert m["forms"]["absorbed"]["mAP"] == mb["forms"]["absorbed"]["mAP"]
    # fp32 is another run: training again under it is refused without --force, naming the key
    p = deap_cli(HERE, *_args("deap", data, tpath, ref)[:-2], "--set", "runtime.precision=fp32", check=False)
    assert p.returncode == 2 and "runtime.precision" in p.stderr, p.stderr[-1500:]


def test_the_head_runs_in_float32_under_bf16_autocast():
    """Under mixed precision the GAP, the embedding and the logits are float32 (bf16 would round logits of
    ~10 by ~0.06); the backbone's maps stay bf16."""
    torch.manual_seed(3)
    model = build_model("resnet50", 10, width=0.25, embed_dim=16).train()
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.forward_features(x)
        emb = model.eval()(x)
    assert out.logits.dtype == out.global_feat.dtype == out.embedding.dtype == emb.dtype == torch.float32
    assert out.stage_maps[1].dtype == torch.bfloat16
    # the head on the float32 GAP of the bf16 map: the same numbers as calling it by hand
    model.train()
    torch.testing.assert_close(out.global_feat, out.stage_maps[1].float().mean(dim=(2, 3)), rtol=0, atol=0)


def test_nhwc_pooling_and_stage_maps_keep_values_and_hand_back_nhwc_gradients():
    from deap_lib.models.convbn import gap, nhwc_grad

    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = gap(a), b.mean(dim=(2, 3))
    assert torch.equal(ya, yb)
    g = torch.randn(2, 3)
    ya.backward(g)
    yb.backward(g)
    assert torch.equal(a.grad, b.grad) and a.grad.is_contiguous(memory_format=torch.channels_last)
    assert not a.grad.is_contiguous()
    c = x.clone().requires_grad_()
    m = nhwc_grad(c)
    assert torch.equal(m, c)
    m.flatten(1).pow(2).sum().backward()  # flatten copies to NCHW; the gradient comes back NHWC all the same
    assert torch.equal(c.grad, 2 * x) and c.grad.is_contiguous(memory_format=torch.channels_last)
    plain = torch.randn(2, 3, 4, 5, requires_grad=True)  # an NCHW map: plain mean, untouched
    assert nhwc_grad(plain) is plain and torch.equal(gap(plain), plain.mean(dim=(2, 3)))


@pytest.mark.parametrize("kind,pcp,deploy", [("bottleneck", "deap", False), ("bottleneck", None, False),
                                             ("bottleneck", None, True), ("basic", "deap", False),
                                             ("basic", None, False)])
@pytest.mark.parametrize("nhwc", [False, True])
def test_in_place_pooled_block_pass_equals_the_traced_one_with_gradients(kind, pcp, deploy, nhwc):
    """Block.forward_pooled (the pass when no conv2-level map is needed) gives forward_trace's output and
    GAP of the residual sum, and the same gradients, bit for bit."""
    from deap_lib.models.blocks import BasicBlock, Bottleneck
    from deap_lib.models.convbn import gap

    torch.manual_seed(4)
    cls = Bottleneck if kind == "bottleneck" else BasicBlock
    block = cls(16, 8, stride=2, pcp=pcp, deploy=deploy).train(not deploy)
    x0 = torch.randn(3, 16, 9, 9)
    if nhwc:
        block = block.to(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    results = []
    for pooled in (False, True):
        block.zero_grad()
        x = x0.clone().requires_grad_(not deploy)
        if pooled:
            out, p = block.forward_pooled(x, gap)
        else:
            t = block.forward_trace(x)
            out, p = t.out, gap(t.sum)
        if not deploy:
            (out.pow(2).mean() + p.pow(3).sum()).backward()
        grads = [x.grad] + [q.grad for q in block.parameters()] if not deploy else []
        results.append((out.detach(), p.detach(), grads))
    (oa, pa, ga), (ob, pb, gb) = results
    assert torch.equal(oa, ob) and torch.equal(pa, pb)
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(ga, gb))
