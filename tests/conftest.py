"""Suite-wide settings: one intra-op thread, and every test leaves torch's global state as it found it.

One thread: the suite's tensors are tiny, and on a loaded 2-core machine OpenMP spinning with 2 threads
made steps ~8x slower. The engine turns on deterministic algorithms and reseeds the global generators;
restoring them keeps tests independent of their order.
"""
import os
import random

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _keep_global_torch_state():
    det = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    rng = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (det, warn_only):
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
    torch.utils.deterministic.fill_uninitialized_memory = fill
    random.setstate(rng[0])
    np.random.set_state(rng[1])
    torch.set_rng_state(rng[2])
    torch.set_num_threads(threads)
