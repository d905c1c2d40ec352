"""The CUDA kernels on a real GPU; skipped where torch has no CUDA device or the extension was built
without its CUDA kernels. Device invariance: for the same Philox state, the GPU writes the CPU's
values bit for bit."""

import pytest
import torch

import torchinit_ext as init
from tests.helpers.common import FLOATS, gen, ops
from tests.helpers.fill_laws import LAWS, padded
from torchinit_ext._dispatch import COMPILED_DEVICES

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not (torch.cuda.is_available() and "cuda" in COMPILED_DEVICES),
        reason="needs a CUDA GPU and the extension's CUDA kernels",
    ),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("law,params", LAWS)
def test_fill_many_equals_cpu(dtype, law, params):
    shapes = [(1 << 20) + 3, (300, 70), (7,), ()]
    cpu = [torch.empty(s, dtype=dtype) for s in shapes]
    gpu = [torch.empty(s, dtype=dtype, device="cuda") for s in shapes]
    gpu[1] = torch.empty(70, 300, dtype=dtype, device="cuda").t()  # strided
    args = ([law] * 4, padded(params) * 4, [5, 9, -3, 1, 0, 0, 77, 1 << 40])
    ops.fill_many_(cpu, *args)
    ops.fill_many_(gpu, *args)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(
    "view",
    [lambda w: w.t(), lambda w: w[:, 4:60].t(), lambda w: w[3:].t(), lambda w: w.t()[:, ::2]],
    ids=["transposed", "column range", "misaligned", "every other column"],
)
def test_transposed_views_take_the_cpu_values(dtype, view):
    """fill_transposed_kernel's tiles (vector and scalar stores, partial tiles) against the CPU."""
    for fill in (
        lambda t, g: init.uniform_(t, -1, 2, generator=g),
        lambda t, g: init.normal_(t, 0.5, 3, generator=g),
        lambda t, g: init.trunc_normal_(t, generator=g),
    ):
        cpu = view(torch.empty(100, 68, dtype=dtype))
        gpu = view(torch.empty(100, 68, dtype=dtype, device="cuda"))
        fill(cpu, gen(5))
        fill(gpu, gen(5))
        assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("numel", [(1 << 22) + 3, 1027, 3])
@pytest.mark.parametrize("interval", [(-2.0, 2.0), (-1.3, 1.3)])
def test_wide_trunc_normal_queue_gives_cpu_values(dtype, numel, interval):
    """fill_one_kernel's redraw queue on the GPU (its shared-memory atomics and barriers, which the
    host emulation of test_cuda_logic.py can't run): 2^22 elements queue ~190k rejections (~800k at
    [-1.3, 1.3]) over many drains, with tails, and tiny tensors, bit for bit the CPU's."""
    cpu = init.trunc_normal_(torch.empty(numel, dtype=dtype), 0, 1, *interval, generator=gen(8))
    gpu = torch.empty(numel, dtype=dtype, device="cuda")
    init.trunc_normal_(gpu, 0, 1, *interval, generator=gen(8))
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("interval", [(-2.0, 2.0), (-1.3, 1.3)])
def test_fill_many_wide_trunc_normal_queue_gives_cpu_values(dtype, interval):
    """fill_many_kernel's redraw queues on the GPU (per chunk, a block's queue carried over to its
    next chunk): several chunks with a tail, a shard of rows whose spans aren't aligned to Philox
    blocks, a corner shard, a transposed view and a view misaligned for vector stores, in one
    batch."""
    targets = [  # (make, full shape, shard start)
        (lambda d: torch.empty((1 << 20) + 3, dtype=dtype, device=d), ((1 << 20) + 3,), (0,)),
        (lambda d: torch.empty(3, 4099, dtype=dtype, device=d), (7, 4099), (1, 0)),
        (lambda d: torch.empty(5, 2001, dtype=dtype, device=d), (9, 4099), (2, 1001)),
        (lambda d: torch.empty(300, 70, dtype=dtype, device=d).t(), (70, 300), (0, 0)),
        (lambda d: torch.empty(4097, dtype=dtype, device=d)[1:], (4096,), (0,)),
    ]
    n = len(targets)
    sizes = [s for _, full, _ in targets for s in full]
    starts = [s for _, _, start in targets for s in start]
    states = [k for t in range(n) for k in (0xD1CE + t, 5 * t + 2)]
    args = (["trunc_normal"] * n, padded((0.0, 1.0, *interval)) * n, states, sizes, starts)
    cpu = [make("cpu") for make, _, _ in targets]
    gpu = [make("cuda") for make, _, _ in targets]
    ops.fill_many_(cpu, *args)
    ops.fill_many_(gpu, *args)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a, b.cpu())


@pytest.mark.parametrize(
    "fill",
    [
        lambda t, g: init.uniform_(t, -1, 2, generator=g),
        lambda t, g: init.normal_(t, 0.5, 3, generator=g),
        lambda t, g: init.trunc_normal_(t, generator=g),
        lambda t, g: init.trunc_normal_(t, 0, 1, -0.5, 0.5, generator=g),
        lambda t, g: init.kaiming_uniform_(t, generator=g),
        lambda t, g: init.xavier_normal_(t, generator=g),
        lambda t, g: init.sparse_(t, 0.9, generator=g),
    ],
)
def test_cpu_generator_gives_cpu_values_on_gpu(fill):
    cpu = fill(torch.empty(513, 257), gen(11))
    gpu = fill(torch.empty(513, 257, device="cuda"), gen(11))
    assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize(
    "shape,groups",
    [((64, 32), 0), ((32, 64), 0), ((64, 16, 3, 3), 4), ((8, 8, 5), 1), ((6, 6, 3, 3, 3), 3)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.bool])
def test_eye_dirac_equal_cpu(shape, groups, dtype):
    fill = init.eye_ if groups == 0 else (lambda t: init.dirac_(t, groups))
    cpu = fill(torch.full(shape, 3, dtype=dtype))
    gpu = fill(torch.full(shape, 3, dtype=dtype, device="cuda"))
    assert torch.equal(cpu, gpu.cpu())


def test_cuda_generator_follows_manual_seed_and_advances():
    t = torch.empty(1000, device="cuda")
    torch.cuda.manual_seed(3)
    a = init.normal_(t.clone())
    b = init.normal_(t.clone())
    torch.cuda.manual_seed(3)
    assert torch.equal(a, init.normal_(t.clone()))
    assert not torch.equal(a, b)
    g = torch.Generator(device="cuda").manual_seed(3)
    assert torch.equal(a, init.normal_(t.clone(), generator=g))


def test_philox_state_is_the_state_a_cuda_fill_uses():
    t = torch.empty(4097, device="cuda")
    state = ops.philox_state(t, torch.Generator(device="cuda").manual_seed(5))
    expected = torch.empty_like(t)
    ops.fill_many_([expected], ["uniform"], [0.0, 1.0, 0.0, 0.0], state)
    init.uniform_(t, generator=torch.Generator(device="cuda").manual_seed(5))
    assert torch.equal(t, expected)


def test_fills_capture_in_cuda_graphs():
    t = torch.empty(1 << 16, device="cuda")
    u = torch.empty(64, 64, device="cuda")
    init.trunc_normal_(t)  # warm-up outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        init.trunc_normal_(t)
        init.sparse_(u, 0.5)
        init.uniform_(u)
    graph.replay()
    first = t.clone()
    graph.replay()
    assert not torch.equal(first, t)  # each replay advances the generator's offset
    assert t.abs().max() <= 2


def test_sparse_exact_zeros_per_column():
    t = init.sparse_(torch.empty(4096, 512, device="cuda"), 0.9, std=0.01)
    assert ((t == 0).sum(0) == 3687).all()


@pytest.mark.parametrize("shape", [(256, 256), (512, 128), (128, 512)])
def test_orthogonal_on_cuda(shape):
    q = init.orthogonal_(torch.empty(shape, device="cuda"), gain=2.0)
    small = min(shape)
    gram = q @ q.T if shape[0] <= shape[1] else q.T @ q
    assert torch.allclose(gram, 4 * torch.eye(small, device="cuda"), atol=1e-4)
    batch = init.orthogonal_batch_([torch.empty(64, 64, device="cuda") for _ in range(8)])
    for m in batch:
        assert torch.allclose(m @ m.T, torch.eye(64, device="cuda"), atol=1e-4)


def test_materialize_with_seed_equals_cpu():
    def build():
        with torch.device("meta"):
            return torch.nn.Sequential(
                torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.Embedding(100, 32)
            )

    cpu = init.materialize(build(), device="cpu", seed=7)
    gpu = init.materialize(build(), device="cuda", seed=7)
    for (name, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values()):
        assert torch.equal(a, b.cpu()), name
