"""Distributed training through the CLI: ``torchrun --nproc_per_node=2 -m deap_lib train`` with gloo on CPU.

Every rank trains its slice of each P x K batch with the method DDP-wrapped; rank 0 alone writes the run.
Checked: both ranks end with identical student parameters (the hashes rank 0 gathers into metrics.json),
``world_size`` is recorded, and a run whose rank is SIGKILLed mid-training resumes (``--resume``) to the
same result as an uninterrupted 2-rank run.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PLUGIN = str(Path(__file__).resolve().parent / "test_method_plugin.py")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, env=None, check=True):
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    e.pop("DEAP_PLUGINS", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{_port()}", "--max-restarts=0",
           "-m", "deap_lib", "--plugin", PLUGIN, *args]
    p = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=600)
    if check and p.returncode != 0:
        raise AssertionError(f"exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-4000:]}")
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_cli")
    data = str(root / "data")
    e = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "deap_lib", "train", "--method", "teacher", "--preset", "quick", "--data",
                    data, "--set", "data.synthetic=tiny", "--out", str(root / "teacher"), "--no-progress"],
                   cwd=REPO, env=e, check=True, capture_output=True, timeout=600)
    return root, data, str(root / "teacher" / "model.pt")


def _train(data, teacher, out, method="deap", *extra):
    return ["train", "--method", method, "--preset", "quick", "--data", data, "--set", "data.synthetic=tiny",
            "--teacher", teacher, "--out", str(out), "--epochs", "3", "--set", "prune.target_macs=0.6",
            "--no-progress", *extra]


def test_torchrun_two_gloo_ranks_train_deap_with_identical_weights(setup):
    root, data, teacher = setup
    p = torchrun(*_train(data, teacher, root / "deap"))
    assert p.stdout.count("absorbed: mAP") == 1  # rank 0 alone reports
    m = json.loads((root / "deap" / "metrics.json").read_text())
    assert m["world_size"] == 2
    hashes = m["ddp_param_sha256"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert {"unpruned", "pruned", "absorbed"} <= set(m["forms"])
    ckpt = torch.load(root / "deap" / "last.pt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the DDP wrapper is not in the state


def test_torchrun_run_killed_mid_training_resumes_to_the_same_result(setup):
    root, data, teacher = setup
    ref, killed = root / "toy_ref", root / "toy_killed"
    torchrun(*_train(data, teacher, ref, "toy_distill"))
    p = torchrun(*_train(data, teacher, killed, "toy_distill"), env={"TOY_DISTILL_DIE_AT_EPOCH": "2"}, check=False)
    assert p.returncode != 0 and not (killed / "metrics.json").exists()
    torchrun(*_train(data, teacher, killed, "toy_distill", "--resume"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (ref, killed))
    assert a["world_size"] == b["world_size"] == 2
    assert a["ddp_param_sha256"][0] == a["ddp_param_sha256"][1] == b["ddp_param_sha256"][0] == b["ddp_param_sha256"][1]
    for form in a["forms"]:
        assert a["forms"][form]["mAP"] == b["forms"][form]["mAP"], form
