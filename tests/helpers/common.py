"""Constants and small helpers that several test files share."""

import torch

import torchinit_ext  # noqa: F401  (loading it registers torch.ops.torchinit_ext)

ops = torch.ops.torchinit_ext

# The floating dtypes every random fill takes.
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

P_MIN = 1e-4  # fixed seeds: deterministic p-values; the threshold guards regressions


def gen(seed=0):
    """A fresh CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)
