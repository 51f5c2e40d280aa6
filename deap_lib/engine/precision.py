"""Numeric precision and memory layout of a run: which autocast (if any) trains it, resolved per device.

Settings (``runtime.precision``):

* ``fp32``: no autocast (the reference).
* ``bf16``: bfloat16 autocast on any device (matmul / conv in bf16, parameters, gradients and losses in
  float32; bf16 has float32's exponent range, so no loss scaling).
* ``fp16``: float16 autocast with a ``GradScaler`` (CUDA only).
* ``auto``: CUDA -> ``fp16`` where the config asks for AMP (``amp=True``), else ``fp32``; CPU -> ``bf16``
  where the processor computes bf16 natively (x86 ``avx512_bf16`` / ``amx_bf16``, Arm ``bf16``), ``fp32``
  elsewhere: without the native instructions oneDNN emulates bf16 and a step is slower than in float32
  (``benchmarks/bench_epoch.py --emulate-no-bf16`` measures it).

``runtime.channels_last`` (``auto`` / ``on`` / ``off`` / ``inference``): ``on`` keeps student, teacher and
images NHWC (``auto``, on CUDA and CPU alike: oneDNN ran this project's training steps ~1.17x faster NHWC,
benchmarks/README); ``inference`` only the frozen teacher and the evaluations.
Every run records what it resolved to (``metrics.json`` ``runtime``), since ``auto`` depends on the machine.
"""
from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from pathlib import Path
from typing import Optional

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHANNELS_LAST = ("auto", "on", "off", "inference")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: the x86 / Arm feature flags of native bf16 arithmetic
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def parse_cpu_flags(cpuinfo: str) -> set:
    """The feature flags of a Linux ``/proc/cpuinfo`` text (x86 ``flags``, Arm ``Features`` lines)."""
    flags: set = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def _cpu_flags() -> set:
    """The processor's feature flags (Linux ``/proc/cpuinfo``; macOS sysctl)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        return parse_cpu_flags(info.read_text(errors="replace"))
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return set()
        return {"bf16"} if out == "1" else set()
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 arithmetic instructions (where bf16 autocast beats float32)."""
    return bool(_cpu_flags() & set(BF16_FLAGS))


def resolve_precision(setting: str, device: torch.device, *, amp: bool = True,
                      native_bf16: Optional[bool] = None) -> str:
    """``fp32`` / ``bf16`` / ``fp16``: what ``setting`` means on ``device`` (see the module docstring).
    ``native_bf16``: override the CPU detection (tests)."""
    if setting not in PRECISIONS:
        raise ValueError(f"unknown runtime.precision {setting!r}; valid: {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if setting == "fp16" and device.type != "cuda":
        raise ValueError(f"runtime.precision='fp16' needs a CUDA device (float16 autocast with loss scaling); "
                         f"the run's device is {device}: use 'bf16' or 'auto' on a CPU")
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "fp16" if amp else "fp32"
    if device.type == "cpu":
        return "bf16" if (cpu_has_native_bf16() if native_bf16 is None else native_bf16) else "fp32"
    return "fp32"


def resolve_channels_last(setting: str, device: Optional[torch.device] = None) -> str:
    """Which tensors of a run are channels-last (NHWC): ``on`` (all), ``inference`` (the frozen teacher and
    evaluations) or ``off``."""
    if setting not in CHANNELS_LAST:
        raise ValueError(f"unknown runtime.channels_last {setting!r}; valid: {', '.join(CHANNELS_LAST)}")
    return "on" if setting == "auto" else setting


def autocast(precision: str, device: torch.device):
    """The autocast context of a resolved precision (a no-op context for ``fp32``)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def legacy_precision(device_type: str, amp: bool) -> str:
    """The precision of runs and checkpoints made before precision was recorded: CUDA AMP (fp16) where
    ``amp`` was on, float32 otherwise."""
    return "fp16" if (device_type == "cuda" and amp) else "fp32"
