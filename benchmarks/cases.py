"""The rows: fills of real layer shapes (Case), fills of fresh memory (FreshCase), other
libraries' generators (PeerCase) and the model rows of benchmarks/models.py, all in CASES."""

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.init as stock

import torchinit_ext as ext
from benchmarks.models import REAL_MODELS, ModelCase, RealModelCase
from benchmarks.timing import fill_each, fill_numel, hbm_row_bytes


@dataclass(frozen=True)
class Case:
    name: str
    fn: str  # function name, identical in torch.nn.init and torchinit_ext
    shape: tuple
    kwargs: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    view: Callable | None = None  # fill this view of the allocated tensor
    default: bool = False  # in the default CPU set; --full runs every case
    devices: tuple = ("cpu", "cuda")
    # ext's batched form of fn (no stock counterpart): `batch` tensors of `shape`, stock calls
    # fn on each in a loop, ext fills all of them in one batch_fn call.
    batch_fn: str | None = None
    batch: int = 1
    # Small tensors: each timed call makes `repeat` calls, so a row's ms are us per call at 1000.
    repeat: int = 1

    fresh_memory = False  # see ModelCase
    env = None  # see FreshCase

    @property
    def contended(self):
        """Timed under --contention: the 16M-element rows."""
        return math.prod(self.shape) * self.batch == 2**24

    def calls(self, device):
        """The stock and ext calls of this case, its floor (fill_ of what they write) and the
        tensors they write."""
        if self.batch_fn:
            targets = [
                torch.empty(self.shape, dtype=self.dtype, device=device) for _ in range(self.batch)
            ]
            stock_one = getattr(stock, self.fn)

            def stock_fn():
                for target in targets:
                    stock_one(target, **self.kwargs)

            ext_fn = partial(getattr(ext, self.batch_fn), targets, **self.kwargs)
            return stock_fn, ext_fn, partial(fill_each, targets), targets
        tensor = torch.empty(self.shape, dtype=self.dtype, device=device)
        target = self.view(tensor) if self.view else tensor
        stock_fn = partial(getattr(stock, self.fn), target, **self.kwargs)
        ext_fn = partial(getattr(ext, self.fn), target, **self.kwargs)
        if self.repeat > 1:
            stock_fn, ext_fn = (
                partial(_repeated, stock_fn, self.repeat),
                partial(_repeated, ext_fn, self.repeat),
            )
        targets = [target] * self.repeat
        return stock_fn, ext_fn, partial(fill_each, targets), targets


def _repeated(fn, times):
    for _ in range(times):
        fn()


FRESH_NUMEL = 64 * 2**20  # 256 MiB of float32: past glibc's largest mmap threshold (32 MiB)


@dataclass(frozen=True)
class FreshCase:
    """A fill of a fresh 256 MiB float32 tensor, allocation included: every call maps new
    pages (glibc mmaps an allocation this large and unmaps it when freed), as a model's first
    init does. Its floor is torch.empty + fill_. `env` is set in a subprocess that runs the row,
    for settings read once per process: huge pages on for all three (THP_MEM_ALLOC_ENABLE=1 has
    torch's allocator ask for them, TORCHINIT_HUGE_PAGES=1 has ours ask where they would not by
    default)."""

    fn: str
    env: tuple = ()  # (name, value) pairs

    devices = ("cpu",)
    fresh_memory = True
    default = True
    contended = False

    @property
    def name(self):
        settings = "".join(f", {k}={v}" for k, v in self.env)
        return f"{self.fn} 256 MiB f32, fresh memory{settings}"

    def calls(self, device):
        def allocated(fill):
            tensor = torch.empty(FRESH_NUMEL, device=device)
            fill(tensor)
            return tensor

        stock_fn = partial(allocated, getattr(stock, self.fn))
        ext_fn = partial(allocated, getattr(ext, self.fn))
        floor = partial(allocated, lambda t: t.fill_(1.0))
        return stock_fn, ext_fn, floor, [torch.empty(FRESH_NUMEL, device="meta")]


def _numpy_generator(bit_generator):
    import numpy as np

    rng = np.random.Generator(getattr(np.random, bit_generator)(0))
    return {
        "uniform_": lambda out: rng.random(dtype=np.float32, out=out),
        "normal_": lambda out: rng.standard_normal(dtype=np.float32, out=out),
    }


def _jax_random():
    import jax

    key = jax.device_put(jax.random.key(0), jax.devices("cpu")[0])

    def sampler(law):
        compiled = jax.jit(partial(law, shape=(2**24,), dtype="float32"))
        return lambda _: compiled(key).block_until_ready()

    return {"uniform_": sampler(jax.random.uniform), "normal_": sampler(jax.random.normal)}


# name: (module that must import, the samplers' maker, environment of the rows' subprocess). JAX
# runs in a subprocess of its own: its CPU threads spin on after a call and would slow the
# bench's other rows.
PEERS = {
    "numpy Philox": ("numpy", partial(_numpy_generator, "Philox"), None),
    "numpy PCG64": ("numpy", partial(_numpy_generator, "PCG64"), None),
    "JAX jax.random (CPU)": ("jax", _jax_random, (("JAX_PLATFORMS", "cpu"),)),
}


@dataclass(frozen=True)
class PeerCase:
    """Another library's generator in the stock column, ext in the other, 16M float32 on warm
    memory (numpy writes the tensor's own memory; JAX returns a new array). Only where the
    library imports."""

    peer: str
    fn: str

    devices = ("cpu",)
    fresh_memory = False
    default = True
    contended = False

    @property
    def env(self):
        return PEERS[self.peer][2]

    @property
    def name(self):
        return f"{self.fn} 4096x4096 f32: {self.peer} vs ext"

    def calls(self, device):
        peer_fn = PEERS[self.peer][1]()[self.fn]
        tensor = torch.empty(LINEAR, device=device)
        out = tensor.numpy().reshape(-1)
        return (
            partial(peer_fn, out),
            partial(getattr(ext, self.fn), tensor),
            partial(tensor.fill_, 1.0),
            [tensor],
        )


def _installed_peers():
    return [peer for peer, (module, _, _) in PEERS.items() if importlib.util.find_spec(module)]


LINEAR = (4096, 4096)
EMBEDDING = (50000, 4096)
CONV = (512, 512, 3, 3)
# The GPU fill-bandwidth rows: 2^28 float32 (1 GiB), or more where 4x the L2 is more.
GPU_FILL_NUMEL = fill_numel(hbm_row_bytes("cuda") if torch.cuda.is_available() else 0)
GPU_FILL = (2**14, GPU_FILL_NUMEL // 2**14)
GPU_DIRAC = (1024, 1024, 3, 3)
LSTM = (4 * 1024, 1024)  # weight_ih and weight_hh of nn.LSTM(1024, 1024)
LSTM_K = 1 / math.sqrt(1024)  # nn.LSTM.reset_parameters bound
SQRT5 = math.sqrt(5)  # nn.Linear / nn.Conv2d kaiming_uniform_ slope

CASES = [
    Case("uniform_ 4096x4096 f32", "uniform_", LINEAR, default=True),
    Case("normal_ 4096x4096 f32", "normal_", LINEAR, default=True),
    Case("constant_(0.5) 4096x4096 f32", "constant_", LINEAR, {"val": 0.5}),
    Case("zeros_ 4096x4096 f32", "zeros_", LINEAR),
    Case("ones_ 4096x4096 f32", "ones_", LINEAR),
    Case("xavier_uniform_ 4096x4096 f32", "xavier_uniform_", LINEAR),
    Case("xavier_normal_ 4096x4096 f32", "xavier_normal_", LINEAR, default=True),
    Case(
        "kaiming_uniform_(a=sqrt5) 4096x4096 f32",
        "kaiming_uniform_",
        LINEAR,
        {"a": SQRT5},
        default=True,
    ),
    Case("kaiming_normal_ 4096x4096 f32", "kaiming_normal_", LINEAR),
    Case("trunc_normal_ defaults 4096x4096 f32", "trunc_normal_", LINEAR, default=True),
    Case("trunc_normal_(std=.02) 4096x4096 f32", "trunc_normal_", LINEAR, {"std": 0.02}),
    Case(
        "trunc_normal_[-0.5,0.5] 4096x4096 f32",
        "trunc_normal_",
        LINEAR,
        {"mean": 0.0, "std": 1.0, "a": -0.5, "b": 0.5},
    ),
    Case(
        "trunc_normal_[-0.5,0.5] 2048x2048 f32",
        "trunc_normal_",
        (2048, 2048),
        {"mean": 0.0, "std": 1.0, "a": -0.5, "b": 0.5},
        default=True,
    ),
    Case("trunc_normal_[5,6] tail 4096x4096 f32", "trunc_normal_", LINEAR, {"a": 5.0, "b": 6.0}),
    Case(
        "trunc_normal_[-9,-8.5] tail 4096x4096 f32", "trunc_normal_", LINEAR, {"a": -9.0, "b": -8.5}
    ),
    Case("trunc_normal_ defaults 4096x4096 bf16", "trunc_normal_", LINEAR, dtype=torch.bfloat16),
    Case("eye_ 4096x4096 f32", "eye_", LINEAR),
    Case("sparse_(0.9) 4096x4096 f32", "sparse_", LINEAR, {"sparsity": 0.9}, default=True),
    Case("sparse_(0.5) 4096x4096 f32", "sparse_", LINEAR, {"sparsity": 0.5}),
    Case("orthogonal_ 4096x4096 f32", "orthogonal_", LINEAR),
    Case("orthogonal_ 1024x1024 f32", "orthogonal_", (1024, 1024), default=True),
    Case("orthogonal_ 4096x512 f32", "orthogonal_", (4096, 512), default=True),
    Case(
        "orthogonal_ 48 x 1024x1024 f32 batched",
        "orthogonal_",
        (1024, 1024),
        batch_fn="orthogonal_batch_",
        batch=48,
    ),
    Case("normal_ 50000x4096 f32", "normal_", EMBEDDING),
    Case("uniform_ 50000x4096 f32", "uniform_", EMBEDDING),
    Case("kaiming_uniform_(a=sqrt5) 512x512x3x3 f32", "kaiming_uniform_", CONV, {"a": SQRT5}),
    Case("dirac_ 512x512x3x3 f32", "dirac_", CONV, default=True),
    Case("uniform_(-k,k) lstm 4096x1024 f32", "uniform_", LSTM, {"a": -LSTM_K, "b": LSTM_K}),
    Case("normal_ lstm w[1024:2048] 1024x1024 f32", "normal_", LSTM, view=lambda w: w[1024:2048]),
    Case("normal_ lstm w.t() 1024x4096 f32", "normal_", LSTM, view=torch.t),
    Case("normal_ 4096x4096 bf16", "normal_", LINEAR, dtype=torch.bfloat16),
    *(
        Case(f"{fn} 2^{GPU_FILL_NUMEL.bit_length() - 1} f32", fn, GPU_FILL, devices=("cuda",))
        for fn in (
            "uniform_",
            "normal_",
            "kaiming_uniform_",
            "kaiming_normal_",
            "xavier_uniform_",
            "xavier_normal_",
            "trunc_normal_",
        )
    ),
    Case("dirac_ 1024x1024x3x3 f32", "dirac_", GPU_DIRAC, devices=("cuda",)),
    *(
        Case(f"{fn} {shape} f32 x1000 calls", fn, shape, repeat=1000, default=True)
        for fn, shapes in (
            ("zeros_", ((1,), (768,), (4096,))),
            ("uniform_", ((1,), (768,), (4096,))),
            ("normal_", ((1,), (768,), (4096,))),
            ("kaiming_uniform_", ((1, 1), (1, 768), (64, 64))),
        )
        for shape in shapes
    ),
    ModelCase("eager vs patched()", "eager", "patched"),
    ModelCase("eager vs materialize()", "eager", "materialize"),
    ModelCase("meta+reset vs materialize()", "meta_reset", "materialize"),
    ModelCase("reset vs materialize() in place", "reset", "materialize_in_place"),
    *(RealModelCase(model, way) for model in REAL_MODELS for way in ("patched", "deferred")),
    *(
        FreshCase(fn, env)
        for fn in ("uniform_", "normal_", "zeros_")
        for env in ((), (("THP_MEM_ALLOC_ENABLE", "1"), ("TORCHINIT_HUGE_PAGES", "1")))
    ),
    *(PeerCase(peer, fn) for peer in _installed_peers() for fn in ("uniform_", "normal_")),
]
