"""fill_many_, the batched, shard-aware engine under materialize() and DTensor init: shards are
slices of the full fill, it equals the single ops under the drawn Philox state, and its own
arguments (laws, parameters, states, shard sizes and starts, devices) are checked before anything
is written, including shard arithmetic that a careless check lets overflow int64."""

import math

import pytest
import torch

from tests.helpers.common import gen, ops
from tests.helpers.fill_laws import padded
from tests.helpers.philox_reference import block

INT64_MAX = 2**63 - 1

LAWS = {
    "constant": [0.75, 0, 0, 0],
    "uniform": [-1.0, 3.0, 0, 0],
    "normal": [0.5, 2.0, 0, 0],
    "trunc_normal": [0.0, 1.0, -0.5, 0.5],
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("law", sorted(LAWS))
def test_fill_many_shards_are_slices_of_the_full_fill(law, dtype):
    full = torch.empty(13, 9, 7, dtype=dtype)
    ops.fill_many_([full], [law], LAWS[law], [21, -5])
    starts = [(0, 0, 0), (4, 2, 3), (12, 8, 6)]
    sizes = [(13, 9, 7), (5, 6, 2), (1, 1, 1)]
    shards = [torch.empty(s[::-1], dtype=dtype).permute(2, 1, 0) for s in sizes]  # strided
    ops.fill_many_(
        shards,
        [law] * 3,
        LAWS[law] * 3,
        [21, -5] * 3,
        [n for _ in shards for n in full.shape],
        [i for s in starts for i in s],
    )
    for filled, start, size in zip(shards, starts, sizes):
        window = full[tuple(slice(b, b + n) for b, n in zip(start, size))]
        assert torch.equal(filled, window)


def test_fill_many_equals_the_single_ops_with_the_drawn_key():
    for law, single in [
        ("uniform", ops.uniform_),
        ("normal", ops.normal_),
        ("trunc_normal", ops.trunc_normal_),
    ]:
        params = [p for p in LAWS[law] if p] if law != "trunc_normal" else LAWS[law]
        expected = torch.empty(300, 7)
        single(expected, *params, gen(4))
        got = torch.empty(300, 7)
        ops.fill_many_([got], [law], LAWS[law], ops.philox_state(got, gen(4)))
        assert torch.equal(got, expected), law


# Conv weights, 3x3 and 1x1, and odd sizes so that shards start inside a Philox block.
CONV_SHAPES = [(64, 48, 3, 3), (96, 40, 1, 1), (7, 5, 3, 3), (6, 3, 7, 7)]
SINGLE_OPS = {
    "uniform": (ops.uniform_, [-1.0, 3.0]),
    "normal": (ops.normal_, [0.5, 2.0]),
    "trunc_normal": (ops.trunc_normal_, [0.0, 1.0, -2.0, 2.0]),  # wide: some redrawn
    "trunc_normal far tail": (ops.trunc_normal_, [0.0, 1.0, -45.0, -40.0]),
}


def _conv_shards(shape):
    """(starts, sizes) of shards whose elements merge into runs of every length: the whole
    tensor and whole rows (one run), columns (a row's width), a kernel row (its width) and a
    kernel column (one element)."""
    out, inp, kh, kw = shape
    return [
        ((0, 0, 0, 0), shape),
        ((out // 3, 0, 0, 0), (out - out // 3, inp, kh, kw)),
        ((0, inp // 2, 0, 0), (out, inp - inp // 2, kh, kw)),
        ((1, 1, kh // 2, 0), (out - 2, inp - 1, 1, kw)),
        ((0, 0, 0, kw // 2), (out, inp, kh, 1)),
    ]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("law", sorted(SINGLE_OPS))
def test_fill_many_conv_shards_equal_the_single_op(law, dtype, channels_last):
    single, params = SINGLE_OPS[law]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    selves, states, full_sizes, starts, expected = [], [], [], [], []
    for seed, shape in enumerate(CONV_SHAPES):
        full = torch.empty(shape, dtype=dtype)
        single(full, *params, gen(seed))
        for start, size in _conv_shards(shape):
            selves.append(torch.empty(size, dtype=dtype, memory_format=fmt))
            states += ops.philox_state(full, gen(seed))
            full_sizes += shape
            starts += start
            expected.append(full[tuple(slice(b, b + n) for b, n in zip(start, size))])
    n = len(selves)
    ops.fill_many_(selves, [law.split(" ")[0]] * n, padded(params) * n, states, full_sizes, starts)
    for got, want in zip(selves, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda a, b: ([a, b], ["normal", "normal"], [0, -1, 0, 0] * 2, [1, 2] * 2), "std"),
        (lambda a, b: ([a, b], ["normal", "gamma"], [0, 1, 0, 0] * 2, [1, 2] * 2), "unknown law"),
        (lambda a, b: ([a, a[1:]], ["normal"] * 2, [0, 1, 0, 0] * 2, [1, 2] * 2), "share memory"),
        (lambda a, b: ([a, b], ["normal"] * 2, [0, 1, 0, 0] * 2, [1, 2]), "states"),
        (
            lambda a, b: ([a, b], ["normal"] * 2, [0, 1, 0, 0] * 2, [1, 2] * 2, [6, 3], [0, 0]),
            "does not fit",
        ),
        (
            lambda a, b: ([a, b], ["normal"] * 2, [0, 1, 0, 0] * 2, [1, 2] * 2, [6], [0]),
            "too short",
        ),
    ],
)
def test_fill_many_checks_everything_before_writing(bad, match):
    a, b = torch.zeros(6), torch.zeros(4)
    with pytest.raises(ValueError, match=match):
        ops.fill_many_(*bad(a, b))
    assert not a.any() and not b.any()


def test_fill_many_refuses_a_shard_outside_the_full_tensor():
    t = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="does not fit"):
        ops.fill_many_([t], ["normal"], [0, 1, 0, 0], [1, 2], [5, 5], [3, 0])
    assert not t.any()


# ---- shard arithmetic ---------------------------------------------------------------------------

# (shape, full_sizes, shard_starts) that a careless check lets through by int64 overflow.
OVERFLOWING_SHARDS = {
    "start-plus-size-wraps": ((4,), [4], [INT64_MAX - 2]),
    "start-past-the-end": ((4,), [4], [2]),
    "empty-shard-past-the-end": ((0,), [3], [5]),
    "negative-full-size": ((0,), [-5], [0]),
    "negative-start": ((2,), [4], [-1]),
    "stride-product-wraps": ((2, 2), [2**62, 2**62], [0, 0]),
    "product-beyond-the-contract": ((2, 2), [2**27, 2**27], [0, 0]),
    "full-size-near-int64-max": ((1, 2), [INT64_MAX, 2], [INT64_MAX - 1, 0]),
}


@pytest.mark.parametrize("law", ["uniform", "trunc_normal"])
@pytest.mark.parametrize("case", list(OVERFLOWING_SHARDS))
def test_fill_many_refuses_shards_that_overflow_and_writes_nothing(case, law):
    shape, full, starts = OVERFLOWING_SHARDS[case]
    guard = torch.full((64,), 7.0)
    target = guard[8 : 8 + math.prod(shape)].view(shape)
    with pytest.raises(ValueError, match="fill_many_"):
        ops.fill_many_([target], [law], [0.0, 1.0, -2.0, 2.0], [1, 2], full, starts)
    assert (guard == 7.0).all()


def test_fill_many_shard_at_the_far_end_of_a_large_full_tensor_is_its_slice():
    # The shard's indices reach 2^40: the values are the full tensor's there (uniform float32:
    # element i is (word i % 4 of Philox block i // 4) >> 8, times 2^-24).
    full = [2**20, 2**20]
    starts = [2**20 - 1, 2**20 - 3]
    got = torch.empty(1, 3)
    ops.fill_many_([got], ["uniform"], [0.0, 1.0, 0.0, 0.0], [5, 6], full, starts)
    first = (2**20 - 1) * 2**20 + 2**20 - 3
    expected = [(block(5, 6, i // 4)[i % 4] >> 8) * 2.0**-24 for i in range(first, first + 3)]
    assert got.view(-1).tolist() == expected


def test_fill_many_refuses_tensors_on_different_devices_and_writes_nothing():
    cpu = torch.zeros(4)
    meta = torch.empty(4, device="meta")
    for selves in ([cpu, meta], [meta, cpu]):
        with pytest.raises(ValueError, match="one device"):
            ops.fill_many_(selves, ["uniform"] * 2, [0.0, 1.0, 0.0, 0.0] * 2, [1, 2, 3, 4])
    assert (cpu == 0).all()
