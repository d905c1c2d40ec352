"""The CPU kernels' thread pool (csrc/cpu_runtime/parallel.cpp): whichever threads run a fill's
ranges, and however many, its values are a serial fill's, also while several Python threads fill at
once (one of them has the pool, the others run on their own thread)."""

import threading

import pytest
import torch

import torchinit_ext as init
from tests.helpers.common import gen

# Sizes below, at and well above the grain, a transposed view, and kernels of each CPU file.
FILLS = {
    "uniform": lambda g: init.uniform_(torch.empty(1 << 21), generator=g),
    "normal": lambda g: init.normal_(torch.empty(3 << 16), generator=g),
    "normal small": lambda g: init.normal_(torch.empty(1000), generator=g),
    "trunc_normal bf16": lambda g: init.trunc_normal_(
        torch.empty(1 << 18, dtype=torch.bfloat16), generator=g
    ),
    "uniform transposed": lambda g: init.uniform_(torch.empty(700, 900).t(), generator=g),
    "sparse": lambda g: init.sparse_(torch.empty(1024, 512), 0.5, generator=g),
    "eye": lambda g: init.eye_(torch.empty(1500, 1500)),
}


def _fill_all(seed):
    return {name: fill(gen(seed)) for name, fill in FILLS.items()}


def _assert_equal(expected, got):
    for name in FILLS:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.parametrize("threads", [2, 4])
def test_fills_from_several_python_threads_equal_serial_fills(threads):
    torch.set_num_threads(1)
    expected = [_fill_all(seed) for seed in range(3)]
    torch.set_num_threads(threads)
    start = threading.Barrier(3)
    results, errors = {}, []

    def run(seed):
        try:
            start.wait()
            results[seed] = [_fill_all(seed) for _ in range(4)]
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            errors.append(e)

    workers = [threading.Thread(target=run, args=(seed,)) for seed in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not errors and all(not w.is_alive() for w in workers)
    for seed in range(3):
        for got in results[seed]:
            _assert_equal(expected[seed], got)


def test_thread_counts_give_the_same_values():
    results = []
    for threads in (1, 2, 4, 3):
        torch.set_num_threads(threads)
        results.append(_fill_all(5))
    for got in results[1:]:
        _assert_equal(results[0], got)
