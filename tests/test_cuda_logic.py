"""The CUDA kernels' logic, checked without a GPU.

Everything a CUDA thread computes lives in host-device headers (csrc/cuda/*.h); the .cu files only
hand out indices. tests/cuda_logic_host.cpp runs that code on the host, thread after simulated
thread, and it must equal the CPU kernels bit for bit. (test_cuda.py runs the real kernels when
a GPU is present.)
"""

import os

import pytest
import torch
from torch.utils.cpp_extension import load

import torchinit_ext  # noqa: F401  (registers torch.ops.torchinit_ext)
from tests.helpers.common import FLOATS, ops
from tests.helpers.fill_laws import LAWS, padded
from torchinit_ext._dispatch import FILL_DTYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return load(
        name="torchinit_cuda_logic_host",
        sources=[os.path.join(ROOT, "tests", "cuda_logic_host.cpp")],
        extra_include_paths=[os.path.join(ROOT, "csrc")],
        extra_cflags=["-O2", "-ffp-contract=off"],
        build_directory=str(tmp_path_factory.mktemp("cuda_logic_host")),
    )


def _targets(dtype):
    """Contiguous with a ragged tail, transposed, sliced, 0-d, and 10 dims no two of which
    merge (more than a kernel's layout keeps: a contiguous temporary)."""
    return [
        torch.empty(8193 * 3 + 1, dtype=dtype),
        torch.empty(300, 70, dtype=dtype).t(),
        torch.empty(50, 64, dtype=dtype)[:, 3:61],
        torch.empty((), dtype=dtype),
        torch.empty((3,) * 10, dtype=dtype)[(slice(0, 2),) * 10],
    ]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("law,params", LAWS)
def test_fill_many_equals_cpu(host, dtype, law, params):
    cpu, gpu_logic = _targets(dtype), _targets(dtype)
    n = len(cpu)
    states = [k for t in range(n) for k in (0x1234 + t, -7 * t - 3)]
    args = ([law] * n, padded(params) * n, states)
    ops.fill_many_(cpu, *args)
    host.fill_many(gpu_logic, *args, [], [])
    for a, b in zip(cpu, gpu_logic):
        assert torch.equal(a, b)


@pytest.mark.parametrize("law,params", LAWS[1:5])
def test_fill_many_shards_equal_cpu(host, law, params):
    full = [33, 1030]
    shards = [([11, 514], [22, 3]), ([33, 1030], [0, 0]), ([1, 7], [32, 1023])]
    cpu = [torch.empty(size) for size, _ in shards]
    gpu_logic = [torch.empty(size) for size, _ in shards]
    args = ([law] * 3, padded(params) * 3, [99, 5] * 3)
    sizes = full * 3
    starts = [s for _, start in shards for s in start]
    ops.fill_many_(cpu, *args, sizes, starts)
    host.fill_many(gpu_logic, *args, sizes, starts)
    for a, b in zip(cpu, gpu_logic):
        assert torch.equal(a, b)


# Every sampler the planner chooses, the flat rejection regime included.
MIXED_LAWS = [*LAWS, ("trunc_normal", (0.0, 1e6, -1.0, 1.0))]


def _mixed_targets():
    """(tensor, law, params): laws and dtypes interleaved over shapes from empty and 0-d to several
    chunks, transposed and sliced views, 10 dims (a temporary), and 60 tiny float32 normal fills,
    more than one batch holds."""
    shapes = [(), (0,), (1,), (3,), (5, 7), (8193 * 2 + 5,), (0, 3), (17, 4, 3), (4096,)]
    targets = []
    for i in range(45):
        law, params = MIXED_LAWS[i % len(MIXED_LAWS)]
        dtype = FLOATS[i % len(FLOATS)]
        shape = shapes[i % len(shapes)]
        tensor = torch.empty(shape, dtype=dtype)
        if i % 7 == 3:
            tensor = torch.empty(70, 30, dtype=dtype).t()
        elif i % 7 == 5:
            tensor = torch.empty(40, 66, dtype=dtype)[:, 1:64]
        elif i % 11 == 6:
            tensor = torch.empty((3,) * 10, dtype=dtype)[(slice(0, 2),) * 10]
        targets.append((tensor, law, params))
    targets += [(torch.empty(5), "normal", (0.0, 1.0 + i)) for i in range(60)]
    return targets


def _bits(tensor):
    return tensor.contiguous().reshape(-1).view(torch.uint8)


def _run_mixed(host, make, sizes=(), starts=()):
    """fill_many_ of make()'s targets, on the CPU and by the GPU threads, in one call each: equal
    bit for bit. Returns the targets and the GPU threads' launches."""
    cpu, gpu_logic = make(), make()
    laws = [law for _, law, _ in cpu]
    params = [p for _, _, ps in cpu for p in padded(ps)]
    states = [k for t in range(len(cpu)) for k in (0xC0FFEE + 3 * t, 17 * t)]
    args = (laws, params, states, list(sizes), list(starts))
    ops.fill_many_([t for t, _, _ in cpu], *args)
    launches = host.fill_many([t for t, _, _ in gpu_logic], *args)
    for i, ((a, _, _), (b, _, _)) in enumerate(zip(cpu, gpu_logic)):
        assert torch.equal(_bits(a), _bits(b)), i
    return cpu, launches


def test_fill_many_mixed_batches_equal_cpu(host):
    targets, launches = _run_mixed(host, _mixed_targets)
    nonempty = [t for t, _, _ in targets if t.numel() > 0]
    assert sum(count for count, _ in launches) == len(nonempty)
    assert sum(chunks for _, chunks in launches) == sum(-(-t.numel() // 8192) for t in nonempty)
    assert 1 < max(count for count, _ in launches) < 60  # the 60 normal fills take several batches


# Shards (sizes, starts) of full tensors: whole, rows, a corner, a middle, one element,
# empty, and 3-d ones.
SHARDS = [
    ((33, 1030), (33, 1030), (0, 0)),
    ((33, 1030), (11, 1030), (22, 0)),
    ((33, 1030), (11, 514), (22, 3)),
    ((33, 1030), (1, 7), (32, 1023)),
    ((9, 8200), (2, 8200), (4, 0)),
    ((5, 6), (1, 1), (4, 5)),
    ((5, 6), (0, 6), (5, 0)),
    ((4, 6, 9), (2, 3, 9), (1, 2, 0)),
    ((4, 6, 9), (4, 6, 4), (0, 0, 5)),
]


def _shard_targets():
    targets = []
    for i in range(2 * len(MIXED_LAWS)):
        _, size, _ = SHARDS[i % len(SHARDS)]
        law, params = MIXED_LAWS[i % len(MIXED_LAWS)]
        targets.append((torch.empty(size, dtype=FLOATS[i % len(FLOATS)]), law, params))
    return targets


def test_fill_many_mixed_shards_equal_cpu(host):
    shards = [SHARDS[i % len(SHARDS)] for i in range(2 * len(MIXED_LAWS))]
    sizes = [s for full, _, _ in shards for s in full]
    starts = [s for _, _, start in shards for s in start]
    _run_mixed(host, _shard_targets, sizes, starts)


def _single_targets(dtype):
    """fill_one_kernel's (contiguous: whole spans and a 3-element tail, whole spans only, the tail
    alone), fill_one_strided_kernel's (misaligned by one element), fill_transposed_kernel's
    (transposed: partial tiles and rows unaligned to Philox blocks, scalar stores; whole tiles,
    vector stores; a range of rows, vector stores but for each column's partial last span; every
    other column, columns farther apart than their length), and 10 dims no two of which merge
    (filled through a contiguous temporary: fill_one_kernel)."""
    return [
        torch.empty(8192 * 3 + 3, dtype=dtype),
        torch.empty(64, 33, dtype=dtype),
        torch.empty(3, dtype=dtype),
        torch.empty(4097, dtype=dtype)[1:],
        torch.empty(300, 70, dtype=dtype).t(),
        torch.empty(64, 96, dtype=dtype).t(),
        torch.empty(70, 40, dtype=dtype)[:, 4:38].t(),
        torch.empty(40, 8, dtype=dtype).t()[:, ::2],
        torch.empty((3,) * 10, dtype=dtype)[(slice(0, 2),) * 10],
    ]


@pytest.mark.parametrize("thread_blocks,captured", [(1, False), (3, False), (3, True)])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("law,params", LAWS)
def test_fill_one_equals_cpu(host, dtype, law, params, thread_blocks, captured):
    cpu, gpu_logic = _single_targets(dtype), _single_targets(dtype)
    for t, (a, b) in enumerate(zip(cpu, gpu_logic)):
        state = (0x5EED + t, 11 * t + 1)
        ops.fill_many_([a], [law], padded(params), list(state))
        host.fill_one(b, law, padded(params), *state, thread_blocks, captured)
        assert torch.equal(a, b)


# fill_one_kernel's wide trunc_normal_ (its rejections queued per thread block, redrawn after every
# 2 rounds and after the last): sizes (numel, thread blocks) from one element and tails of 1 to 3
# elements to a partial last round, one round in all, and many rounds that queue (50 on 1 block).
WIDE_SIZES = [(1, 1), (3, 3), (5, 1), (1027, 1), (256 * 4 * 3 + 2, 3), (51201, 1), (40003, 3)]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("numel,thread_blocks", WIDE_SIZES)
@pytest.mark.parametrize("interval", [(-2.0, 2.0), (-1.3, 1.3)])
def test_wide_trunc_normal_queue_equals_cpu(host, dtype, numel, thread_blocks, interval):
    params = padded((0.0, 1.0, *interval))
    cpu, gpu_logic = torch.empty(numel, dtype=dtype), torch.empty(numel, dtype=dtype)
    state = (0xACE + numel, 3 * numel + 1)
    ops.fill_many_([cpu], ["trunc_normal"], params, list(state))
    host.fill_one(gpu_logic, "trunc_normal", params, *state, thread_blocks, False)
    assert torch.equal(cpu, gpu_logic)


# fill_many_kernel's wide trunc_normal_ (per chunk, queued like fill_one_kernel's; a thread block's
# queue carries over to its next chunk, its ring wrapping): (shape, full shape, shard start) from
# one element and partial chunks to several chunks with a tail, a shard of rows whose spans aren't
# Philox-block-aligned, a corner shard, a transposed and a sliced view (strided stores), and a
# view misaligned for vector stores: more than one batch holds.
WIDE_MANY_TARGETS = [
    ((1,), (1,), (0,)),
    ((3,), (3,), (0,)),
    ((1027,), (1027,), (0,)),
    ((8192,), (8192,), (0,)),
    ((8195,), (8195,), (0,)),
    ((20001,), (20001,), (0,)),
    ((3, 4099), (7, 4099), (1, 0)),
    ((5, 2001), (9, 4099), (2, 1001)),
    ("transposed", (70, 300), (0, 0)),
    ("sliced", (50, 58), (0, 0)),
    ("misaligned", (4096,), (0,)),
]


def _wide_many_target(shape, dtype):
    if shape == "transposed":
        return torch.empty(300, 70, dtype=dtype).t()
    if shape == "sliced":
        return torch.empty(50, 64, dtype=dtype)[:, 3:61]
    if shape == "misaligned":
        return torch.empty(4097, dtype=dtype)[1:]
    return torch.empty(shape, dtype=dtype)


# (float64 never takes the wide regime.)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("interval", [(-2.0, 2.0), (-1.3, 1.3)])
def test_fill_many_wide_trunc_normal_queue_equals_cpu(host, dtype, interval):
    n = len(WIDE_MANY_TARGETS)
    cpu = [_wide_many_target(shape, dtype) for shape, _, _ in WIDE_MANY_TARGETS]
    gpu_logic = [_wide_many_target(shape, dtype) for shape, _, _ in WIDE_MANY_TARGETS]
    sizes = [s for _, full, _ in WIDE_MANY_TARGETS for s in full]
    starts = [s for _, _, start in WIDE_MANY_TARGETS for s in start]
    states = [k for t in range(n) for k in (0xD1CE + t, 5 * t + 2)]
    args = (["trunc_normal"] * n, padded((0.0, 1.0, *interval)) * n, states, sizes, starts)
    ops.fill_many_(cpu, *args)
    launches = host.fill_many(gpu_logic, *args)
    assert [count for count, _ in launches] == [10, 1]  # a full batch, then the rest
    assert sum(chunks for _, chunks in launches) == sum(-(-t.numel() // 8192) for t in cpu)
    for i, (a, b) in enumerate(zip(cpu, gpu_logic)):
        assert torch.equal(_bits(a), _bits(b)), i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(100, 70), (257, 130), (64, 1)])
@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_sparse_equals_cpu(host, dtype, shape, sparsity):
    cpu = torch.empty(shape, dtype=dtype)
    state = ops.philox_state(cpu, torch.Generator().manual_seed(3))
    ops.sparse_(cpu, sparsity, 0.5, torch.Generator().manual_seed(3))
    gpu_logic = torch.empty(shape[::-1], dtype=dtype).t()  # strided, too
    host.sparse(gpu_logic, sparsity, 0.5, *state)
    assert torch.equal(cpu, gpu_logic)


# eye_ (groups 0) and dirac_ targets: square, wide, tall, grouped, 1 to 3 spatial dims with odd
# and even sizes, and empty ones.
IDENTITY = [
    ((5, 7), 0),
    ((7, 5), 0),
    ((1, 1), 0),
    ((0, 4), 0),
    ((6, 4, 3, 3), 2),
    ((4, 4, 5), 1),
    ((6, 2, 4), 3),
    ((2, 6, 3, 2, 3), 2),
    ((12, 3, 1, 4), 4),
    ((4, 4, 0, 3), 2),
]
LAYOUTS = ["contiguous", "reversed", "channels_last", "sliced"]


def _identity_target(shape, layout, dtype):
    """(base, view): a view of `shape` in `layout`, and the tensor it lies in, all 3s. reversed:
    every dim transposed; channels_last: in channels innermost (channels_last for 4 dims,
    channels_last_3d for 5); sliced: every other out channel and a margin in the last dim, not
    dense, so the base's other elements must stay 3."""
    n = len(shape)
    if layout == "sliced":
        base = torch.full((2 * shape[0], *shape[1:-1], shape[-1] + 2), 3, dtype=dtype)
        return base, base[::2, ..., 1:-1]
    order = {
        "contiguous": list(range(n)),
        "reversed": list(reversed(range(n))),
        "channels_last": [0, *range(2, n), 1],
    }[layout]
    base = torch.full([shape[d] for d in order], 3, dtype=dtype)
    return base, base.permute(*[order.index(d) for d in range(n)])


def _run_cpu(view, groups):
    return ops.eye_(view) if groups == 0 else ops.dirac_(view, groups)


@pytest.mark.parametrize("dtype", sorted(FILL_DTYPES, key=str))
@pytest.mark.parametrize("shape,groups", IDENTITY)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_identity_equals_cpu_bit_for_bit(host, dtype, shape, groups, layout):
    cpu_base, cpu = _identity_target(shape, layout, dtype)
    gpu_base, gpu_logic = _identity_target(shape, layout, dtype)
    _run_cpu(cpu, groups)
    host.identity(gpu_logic, groups)
    assert torch.equal(cpu_base.view(torch.uint8), gpu_base.view(torch.uint8))


def _cpu_one_offsets(view, groups):
    """The memory offsets (from the view's data pointer) of the ones the CPU writes."""
    _run_cpu(view, groups)
    index = torch.nonzero(view).reshape(-1, view.dim())
    return sorted((index * torch.tensor(view.stride())).sum(1).tolist())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_one_per_thread_offsets_are_the_cpu_ones(host, layout):
    shapes = [((rows, cols), 0) for rows in (1, 2, 3, 7, 16) for cols in (1, 2, 5, 16)]
    shapes += [
        ((groups * per_group, in_channels, *spatial), groups)
        for groups in (1, 2, 3)
        for per_group in (1, 2, 5)
        for in_channels in (1, 3, 4)
        for spatial in ((1,), (4,), (3, 2), (2, 1, 5), (3, 3, 3), (0, 2))
    ]
    for shape, groups in shapes:
        _, view = _identity_target(shape, layout, torch.float32)
        offsets = host.one_offsets(view, groups)
        assert sorted(offsets) == _cpu_one_offsets(view, groups), (shape, groups)
