"""Sharded init on DTensors with real torch.distributed (gloo, CPU) in 2 and 4 processes:
Shard(0), Shard(1), Replicate, a 2-D mesh, FSDP2 and tensor parallel, each compared bit for
bit with the single-process result (the checks are in sharded_worker.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
WORKER = Path(__file__).with_name("sharded_worker.py")


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")
@pytest.mark.parametrize("world_size", [2, 4])
def test_sharded_init_equals_single_process(world_size, tmp_path):
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    store = tmp_path / "store"
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(rank), str(world_size), str(store)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world_size)
    ]
    outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    assert all(rank.returncode == 0 for rank in ranks), "\n".join(outputs)
