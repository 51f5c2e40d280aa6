"""Test-suite settings: one intra-op thread (the suite's tensors are tiny; on a loaded 2-core machine
OpenMP spinning with 2 threads made steps ~8x slower) and no network anywhere."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
