"""Fills where the system refuses new threads (RLIMIT_NPROC, a pids cgroup's limit): the thread pool
(csrc/cpu_runtime/parallel.cpp) cannot start its workers, and the calling thread runs their tasks,
with the values of a single-threaded fill."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# In a fresh process, so that the pool has no worker yet. RLIMIT_NPROC counts the threads of the
# real user and does not bind root, so root first becomes `nobody` (whose count is then this
# process's threads, the limit). Exit 3: the limit did not take, nothing was tested.
REFUSED = textwrap.dedent(
    """
    import os, resource, sys, threading
    import torch
    import torchinit_ext as init

    def fill(dtype):
        generator = torch.Generator().manual_seed(7)
        return init.uniform_(torch.empty(1 << 22, dtype=dtype), generator=generator)

    torch.set_num_threads(2)
    init.uniform_(torch.empty(8))  # what a fill loads lazily, loaded while files can be read
    threads = sum(1 for _ in os.scandir("/proc/self/task"))
    resource.setrlimit(resource.RLIMIT_NPROC, (threads, threads))
    if os.getuid() == 0:
        try:
            os.setgid(65534)
            os.setuid(65534)
        except PermissionError:
            sys.exit(3)
    try:
        threading.Thread(target=lambda: None).start()
        sys.exit(3)
    except RuntimeError:
        pass
    refused = [fill(torch.float32), fill(torch.bfloat16)]
    torch.set_num_threads(1)
    expected = [fill(torch.float32), fill(torch.bfloat16)]
    assert all(torch.equal(a, b) for a, b in zip(refused, expected))
    print("ok")
    """
)


def test_fills_run_on_the_calling_thread_when_workers_cannot_start():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", REFUSED], env=env, capture_output=True, text=True, timeout=300
    )
    if run.returncode == 3:
        pytest.skip("RLIMIT_NPROC cannot be made to limit threads here")
    assert run.returncode == 0 and run.stdout.split() == ["ok"], run.stderr
