"""Constants and small helpers that several test files share."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import torchinit_ext  # noqa: F401  (loading it registers torch.ops.torchinit_ext)

ops = torch.ops.torchinit_ext

# The floating dtypes every random fill takes.
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

P_MIN = 1e-4  # fixed seeds: deterministic p-values; the threshold guards regressions


def gen(seed=0):
    """A fresh CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(seed)


def assert_thread_count_invariant(fill, dtype):
    """fill(tensor, generator) gives the same values on 1, 2 and 3 threads."""
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(fill(torch.empty(515, 333, dtype=dtype), gen(9)))
    assert all(torch.equal(results[0], r) for r in results[1:])


def assert_default_generator_is_torch_manual_seed(fill):
    """fill(tensor, None) draws from the default generator: torch.manual_seed(s) gives the values
    of an explicit generator seeded s, and successive calls differ."""
    torch.manual_seed(12)
    a = fill(torch.empty(64, 48), None)
    b = fill(torch.empty(64, 48), None)
    c = fill(torch.empty(64, 48), gen(12))
    assert torch.equal(a, c) and not torch.equal(a, b)


class OpsSeen(TorchDispatchMode):
    """A dispatch mode of a caller's own: notes every op it sees, in `ops`."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))
