"""The throughput benchmark and the GPU check script run end to end on a tiny CPU configuration."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_epoch  # noqa: E402


def test_epoch_benchmark_breaks_an_epoch_into_its_parts(tmp_path):
    extra = {"data.root": str(tmp_path / "data"), "data.synthetic": "tiny"}
    r = bench_epoch.run(methods=("deap",), variants=["levers-off", "+nhwc_inference"], epochs=2, preset="quick",
                        extra=extra)
    for variant, x in r["results"]["deap"].items():
        assert all(x[p] >= 0 for p in bench_epoch.PARTS if p != "backward"), (variant, x)
        assert x["teacher_fwd"] > 0 and x["student_fwd"] > 0 and x["eval_one"] > 0
        assert abs(x["epoch"] - sum(x[p] for p in bench_epoch.PARTS)) < 1e-9
        assert x["images_per_s_per_core"] == x["images"] / x["epoch"]
    text = bench_epoch.report(r)
    assert "levers-off" in text and "+nhwc_inference" in text and "1.00x" in text


def test_gpu_check_runs_its_three_parts_on_cpu():
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny"], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    for part in ("[1] paper-preset DEAP training:", "[2] cpu-preset DEAP run end to end:", "[3] bench_deploy: exit 0"):
        assert part in p.stdout, p.stdout[-3000:]
    assert '"iters_per_s"' in p.stdout and '"deap_absorbed_mAP"' in p.stdout


def test_gpu_check_says_when_there_is_no_gpu():
    import torch

    if torch.cuda.is_available():
        return
    p = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2 and "error: no CUDA device here" in p.stderr
