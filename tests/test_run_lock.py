"""One process at a time owns a run folder: two processes asked for the same run (two notebooks, two studies,
a study and a hand-run CLI) train it once. The second waits on the first's lock, then reuses its finished run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deap_lib.data.synthetic import ensure_synthetic
from deap_lib.fileio import folder_lock, is_locked

REPO = Path(__file__).resolve().parents[1]


def test_folder_lock_waits_for_its_holder_and_says_so(tmp_path):
    told = []
    with folder_lock(tmp_path / "run"):
        assert is_locked(tmp_path / "run")
    assert not is_locked(tmp_path / "run")  # released
    assert not is_locked(tmp_path / "missing")
    with folder_lock(tmp_path / "run", on_wait=lambda: told.append(1)):
        pass
    assert told == []  # free: no waiting


def test_a_run_folder_held_by_another_process_is_waited_for_then_reused(tmp_path):
    data, out = tmp_path / "data", tmp_path / "teacher"
    ensure_synthetic(str(data), "tiny")  # the data first: this test is about the run folder
    cmd = [sys.executable, "-m", "deap_lib", "train", "--method", "teacher", "--preset", "quick", "--data", str(data),
           "--set", "data.synthetic=tiny", "--out", str(out), "--epochs", "2", "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DEAP_PLUGINS", None)
    with folder_lock(out):  # another process owns the run folder
        first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        told = first.stderr.readline()  # blocks until the CLI says it waits (or exits)
        assert "another process is training this run; waiting for it" in told, told
        time.sleep(1.0)
        assert first.poll() is None and not (out / "train_log.csv").exists()  # still waiting, nothing trained
    out1, err1 = first.communicate(timeout=600)  # the lock released: it trains
    assert first.returncode == 0, err1[-2000:]
    rows = (out / "train_log.csv").read_text().splitlines()
    assert len(rows) == 1 + 2  # a header and two epochs
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "waiting" not in again.stderr
    assert (out / "train_log.csv").read_text().splitlines() == rows  # reused, not trained again
    m = json.loads((out / "metrics.json").read_text())
    line = f"teacher: mAP {m['forms']['teacher']['mAP_text']}"
    assert line in out1 and line in again.stdout


def test_a_refused_run_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "never"
    (tmp_path / "empty").mkdir()  # a dataset folder without a dataset: refused inside the run, after the lock
    cmd = [sys.executable, "-m", "deap_lib", "train", "--method", "teacher", "--preset", "quick", "--data",
           str(tmp_path / "empty"), "--out", str(out), "--no-progress", "--threads", "1"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and "Traceback" not in p.stderr, p.stderr[-1500:]
    assert not out.exists()
