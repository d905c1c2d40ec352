"""The RNG contract: Philox4x32-10, element i a pure function of (key, offset, i)."""

import numpy as np
import pytest
import torch

import torchinit_ext as init
from tests.helpers.common import FLOATS, ops
from tests.helpers.philox_reference import block, philox


def _signed(v):
    return v - (1 << 64) if v >= (1 << 63) else v


def test_philox_known_answer_zero():
    # Random123's known-answer vector for philox4x32-10 with zero counter and key.
    words = ops.philox_blocks(0, 0, 1)[0]
    assert [w & 0xFFFFFFFF for w in words.tolist()] == [
        0x6627E8D5,
        0xE169C58D,
        0xBC57AC4C,
        0x9B00DBD8,
    ]


def test_philox_lanes_match_python_reference():
    # The SIMD lanes against a plain Python Philox, itself checked on a Random123 vector.
    assert philox((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == [
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    ]
    key, offset = 0x0123456789ABCDEF, 0x0FEDCBA987654321
    words = ops.philox_blocks(_signed(key), _signed(offset), 40).numpy().view(np.uint32)
    for b in (0, 1, 15, 16, 17, 39):
        assert words[b].tolist() == block(key, offset, b)


def test_prefix_property():
    # Element i depends on (key, offset, i) only: a longer fill from the same generator state
    # starts with the shorter one, whatever the length, dtype or distribution.
    for dtype in FLOATS:
        for fill in (init.uniform_, init.normal_):
            short = fill(torch.empty(37, dtype=dtype), generator=torch.Generator().manual_seed(5))
            long = fill(
                torch.empty(100003, dtype=dtype), generator=torch.Generator().manual_seed(5)
            )
            assert torch.equal(short, long[:37]), (dtype, fill)


@pytest.mark.parametrize(
    "fill", [init.uniform_, init.normal_, init.xavier_normal_, init.kaiming_uniform_]
)
def test_default_generator_equals_explicit_generator(fill):
    torch.manual_seed(7)
    a = fill(torch.empty(300, 70))
    b = fill(torch.empty(300, 70))
    c = fill(torch.empty(300, 70), generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, c)
    assert not torch.equal(a, b)  # successive calls differ


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fill", [init.uniform_, init.normal_])
def test_thread_count_invariance(dtype, fill):
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(
            fill(torch.empty(1 << 18, dtype=dtype), generator=torch.Generator().manual_seed(11))
        )
    assert all(torch.equal(results[0], r) for r in results[1:])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fill", [init.uniform_, init.normal_])
def test_views_get_their_logical_values_and_nothing_else(dtype, fill):
    seed = 3
    base = torch.full((64, 48), 7.0, dtype=dtype)
    views = {
        "transposed": lambda t: t.t(),
        "strided slice": lambda t: t[1::3, ::2],
        "lstm gate chunk": lambda t: t[16:32],
        "column": lambda t: t[:, 5],
    }
    for name, make in views.items():
        t = base.clone()
        v = make(t)
        fill(v, generator=torch.Generator().manual_seed(seed))
        expected = fill(
            torch.empty(v.shape, dtype=dtype), generator=torch.Generator().manual_seed(seed)
        )
        assert torch.equal(v, expected), name
        untouched = torch.ones_like(t, dtype=torch.bool)
        make(untouched).fill_(False)
        assert (t[untouched] == 7.0).all(), name


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("fill", [init.uniform_, init.normal_, init.ones_])
def test_fresh_memory_gets_the_same_values_and_its_neighbours_are_kept(dtype, fill):
    # Contiguous CPU fills map a fresh buffer's pages ahead of writing them (prefault.h): a view
    # starting and ending mid-page inside a large, never-written buffer, whose first and last
    # pages alone hold data, gets the values a written buffer gets, and the data is kept.
    kwargs = {} if fill is init.ones_ else {"generator": torch.Generator().manual_seed(4)}
    fresh = torch.empty(3 << 20, dtype=torch.uint8).view(dtype)  # 3 MiB: its own mapping
    edge = 1000  # elements, not a whole number of pages
    fresh[:edge] = 7
    fresh[-edge:] = 7
    fill(fresh[edge:-edge], **kwargs)
    if "generator" in kwargs:
        kwargs["generator"].manual_seed(4)
    expected = fill(torch.zeros(fresh.numel() - 2 * edge, dtype=dtype), **kwargs)
    assert torch.equal(fresh[edge:-edge], expected)
    assert (fresh[:edge] == 7).all() and (fresh[-edge:] == 7).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_are_float_values_rounded(dtype):
    a = init.normal_(
        torch.empty(4099, dtype=dtype), 0.5, 2.0, generator=torch.Generator().manual_seed(2)
    )
    b = init.normal_(torch.empty(4099), 0.5, 2.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b.to(dtype))


def test_normal_float32_tails_are_finite_and_reach_past_5_sigma():
    x = init.normal_(torch.empty(1 << 24), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
    assert x.abs().max() > 5.0
