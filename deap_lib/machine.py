"""What machine a run ran on, in one line: processor (or GPU), cores, torch version, threads, precision.

Every run records it (``metrics.json`` ``machine``) and every ``summary.csv`` row carries its label, so that
a table never mixes machines unnoticed: :func:`deap_lib.results.one_machine` refuses runs of more than one.
Runs made before it was recorded get a label from what they did record (device, torch, threads, precision)
with the processor ``unrecorded``.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Dict, Mapping, Optional


def processor_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``; else :func:`platform.processor`)."""
    info = Path("/proc/cpuinfo")
    if info.is_file():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Processor", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: Any, *, threads: int, precision: str, torch_version: str,
                 world_size: int = 1) -> Dict[str, Any]:
    """The record of the machine a run trains on (``device``: a ``torch.device`` or its name)."""
    dev = str(device)
    proc = processor_name()
    if dev.startswith("cuda"):
        import torch

        proc = torch.cuda.get_device_name(torch.device(dev))
    return {"processor": proc, "cores": os.cpu_count(), "device": dev, "torch": torch_version,
            "threads": int(threads), "precision": precision, "world_size": int(world_size)}


def machine_label(info: Mapping[str, Any]) -> str:
    """One line naming a machine record, e.g. ``AMD EPYC 9B14 x2 | torch 2.14.1 | 1 thread | bf16``."""
    ws = int(info.get("world_size") or 1)
    threads = int(info.get("threads") or 0)
    return " | ".join([f"{info.get('processor', 'unrecorded')} x{info.get('cores', '?')}" + (
        f" ({ws} processes)" if ws > 1 else ""), f"torch {info.get('torch', '?')}",
        f"{threads} thread" + ("s" if threads != 1 else ""), str(info.get("precision", "?"))])


def run_machine(metrics: Mapping[str, Any]) -> Dict[str, Any]:
    """A finished run's machine record; for runs made before it was recorded, what they did record."""
    if metrics.get("machine"):
        return dict(metrics["machine"])
    runtime: Optional[Mapping[str, Any]] = metrics.get("runtime")
    return {"processor": "unrecorded", "cores": "?", "device": metrics.get("device", "?"),
            "torch": metrics.get("torch", "?"), "threads": metrics.get("threads", 0),
            "precision": runtime.get("precision", "?") if runtime else "fp32 (legacy)",
            "world_size": metrics.get("world_size", 1)}
