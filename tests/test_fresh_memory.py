"""Fills of fresh memory (csrc/cpu_runtime/prefault.h): whether huge pages are asked for or not, and
whether the pages are mapped yet or not, a fill writes the same values, and only the tensor's own
elements (a view of fresh memory leaves its neighbours as they were)."""

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import torchinit_ext as init

ROOT = Path(__file__).resolve().parent.parent
NUMEL = 3 << 21  # 24 MiB of float32: whole 2 MiB pages inside, at any alignment

# Fresh tensors (large allocations are new mappings), each filled once; the digest of each.
FILLS = textwrap.dedent(
    """
    import hashlib, torch
    import torchinit_ext as init
    def digest(t):
        return hashlib.sha256(t.numpy().tobytes()).hexdigest()
    g = torch.Generator().manual_seed(5)
    out = [
        digest(init.uniform_(torch.empty(NUMEL), generator=g)),
        digest(init.normal_(torch.empty(NUMEL), generator=g)),
        digest(init.trunc_normal_(torch.empty(NUMEL), std=0.02, generator=g)),
        digest(init.zeros_(torch.empty(NUMEL))),
    ]
    print(" ".join(out))
    """
).replace("NUMEL", str(NUMEL))


def _digests_in_subprocess(huge_pages: str) -> list[str]:
    env = {**os.environ, "TORCHINIT_HUGE_PAGES": huge_pages, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-c", FILLS], env=env, capture_output=True, text=True, check=True
    )
    return run.stdout.split()


def _digests_of_warm_memory() -> list[str]:
    def digest(t):
        return hashlib.sha256(t.numpy().tobytes()).hexdigest()

    g = torch.Generator().manual_seed(5)
    warm = torch.ones(NUMEL)  # mapped before the fill
    return [
        digest(init.uniform_(warm, generator=g)),
        digest(init.normal_(warm, generator=g)),
        digest(init.trunc_normal_(warm, std=0.02, generator=g)),
        digest(init.zeros_(warm)),
    ]


@pytest.mark.parametrize("huge_pages", ["0", "1"])
def test_fresh_memory_gets_the_values_of_warm_memory(huge_pages):
    assert _digests_in_subprocess(huge_pages) == _digests_of_warm_memory()


def test_a_fill_of_a_fresh_view_writes_its_elements_only():
    # The neighbours map their own pages; the view's interior is fresh when it is filled.
    base = torch.empty(NUMEL)
    base[:1000] = -1.0
    base[NUMEL - 1000 :] = -1.0
    view = base[1000 : NUMEL - 1000]
    init.uniform_(view, generator=torch.Generator().manual_seed(0))
    assert bool((base[:1000] == -1.0).all()) and bool((base[NUMEL - 1000 :] == -1.0).all())
    warm = torch.zeros(view.shape)
    init.uniform_(warm, generator=torch.Generator().manual_seed(0))
    assert torch.equal(view, warm)
