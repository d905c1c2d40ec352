"""Benchmark stock ``torch.nn.init`` against ``torchinit_ext``, side by side.

What is measured
    For every case in ``CASES`` (real layer shapes: Linear, Embedding, Conv,
    LSTM) the same init function is called with identical arguments from both
    modules on the same tensor, once per device (CPU, and CUDA when
    available). The tensor is allocated once per case and reused, so no timed
    call ever touches a fresh, lazily allocated buffer. A batched case fills
    a list of same-shape tensors: stock calls the function on each in a loop,
    ext calls its batched form (e.g. ``orthogonal_batch_``) once.
    The model rows build a GPT-2 style model (GPT-2 medium, 355M parameters,
    on the CPU; GPT-2 XL, 1.5B, on a GPU) in each call, stock's way (eager
    construction, or meta + to_empty + every reset_parameters) against
    ext's (construction under ``patched()``, or ``materialize()`` from
    meta). On the CPU each of their calls starts from fresh memory, as a
    process that builds its model once does: the garbage collector runs and
    the memory malloc keeps from freed allocations goes back to the OS
    (glibc's ``malloc_trim``) before the clock starts, so first-touch page
    faults are paid in every call and not only when malloc happens to have no
    free memory. (On CUDA the caching allocator serves every call after the
    warm-up from the same cached blocks, so calls are alike already.) The
    model is released after the clock stops. The last model row times the
    init alone: one model built for the row is re-initialized in place,
    every module's reset_parameters (stock) against ``materialize()``.
    The real-model rows build transformers, timm and torchvision models from
    their configs, stock eager against ``patched()`` and against
    ``deferred_init`` + ``materialize()``, from fresh memory as above.

The floor
    Every row also times, interleaved with stock and ext, the least its work
    can cost: writing the same tensors once. For a fill row that is
    ``fill_(1.0)`` of the same (warm) tensors; for a model row, allocating
    every parameter and buffer of the model and ``fill_``-ing each once, from
    fresh memory as the model rows are. ``stock/fl`` and ``ext/fl`` are each
    side's median over the floor's. The fresh-memory rows allocate and fill a
    256 MiB tensor in each call (a new mapping: glibc maps allocations this
    large anew and unmaps them when freed), their floor being torch.empty +
    ``fill_``; their huge-pages-on variant runs in a subprocess with
    THP_MEM_ALLOC_ENABLE=1 and TORCHINIT_HUGE_PAGES=1 set, since both are read
    once per process. Where installed, numpy's Philox and PCG64 generators and
    JAX's ``jax.random`` (CPU) stand in the stock column of peer rows. JAX's
    rows run in a subprocess: its CPU threads spin on after each call, which
    slows the ext and floor columns of those two rows (only).

How
    Each case is warmed up (stock, ext) and then timed as interleaved runs
    (stock, ext, stock, ext, ...); the reported time is the MEDIAN of those
    runs. The number of runs adapts to the cost of the case (a time budget,
    clamped to a minimum and maximum count; by default a case whose minimum
    count would pass a per-row cap, such as stock's slow trunc_normal_ and
    sparse_, gets as many runs as fit, at least one). CPU calls are timed with
    ``time.perf_counter``; CUDA calls with CUDA events after a device
    synchronize, so host-side Python overhead inside a call is included. As
    in ``timeit``, the garbage collector is off during a timed call, so a
    collection of the whole process triggered by chance is not charged to it.

    Each device's fill bandwidth is measured once at start as the best of
    several ``fill_(1.0)`` on a preallocated 1 GiB float32 buffer (larger
    than any CPU L3 or GPU L2, so it is a DRAM/HBM number).
    ``bandwidth_fraction`` = bytes the case writes / ext time / fill bandwidth
    (not capped: small tensors served from cache can exceed 1).
    ``ext_elements_per_s`` = elements written / ext time (parameters per
    second for the model rows).

Sets and modes
    The default times, on the CPU, the cases marked ``default`` (the 16M-element
    targets, small tensors, the real models, fresh memory, the peers);
    ``--full`` times every case, with more runs. ``--contention [N]`` times only the 16M-element and
    real-model patched() rows of that set while N busy processes (default: one
    per core) spin beside them; the bandwidth probe runs before they start.
    ``--simd LEVELS`` runs the CPU rows once per SIMD level, each in a
    subprocess with TORCHINIT_CPU_CAPABILITY set, and prints one table of them.

Output
    One progress line per case (with its run count and wall time), a final
    aligned table, and per device ``<out>/<stem>.json`` (``machine`` block:
    SIMD level, contention, ...; ``rows``) and ``<out>/<stem>.png`` (speedup
    bar chart), where stem is the device slug, then ``-contention`` for a
    contention run and ``-<level>`` for a --simd run. A case that raises is
    reported as ``FAILED: <reason>`` (null numbers in the JSON) and the run
    goes on; the exit code is 1 if any case failed.

Usage
    python benchmarks/bench.py [--full] [--contention [N]] [--simd LEVELS]
                               [--device {cpu,cuda,all}] [--filter SUBSTR]
                               [--out DIR]
"""

import argparse
import contextlib
import ctypes
import datetime
import gc
import importlib.util
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.init as stock  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from torch import nn  # noqa: E402

# Fall back to an in-tree build when the package is not installed.
sys.path.append(str(Path(__file__).resolve().parent.parent))
from gpu_check import driver_version  # noqa: E402  (benchmarks/ is the script's folder)

import torchinit_ext as ext  # noqa: E402

# The tail rows put the mean far outside [a, b] on purpose; both libraries warn about it.
warnings.filterwarnings("ignore", message="mean is more than 2 std")
# The GPT model's constructor only composes torch.nn layers: their resets are its whole init.
warnings.filterwarnings("ignore", category=ext.UnrecordedInitWarning)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FILL_NUMEL = 256 * 2**20  # 1 GiB of float32: larger than CPU L3 / GPU L2

try:
    _malloc_trim = ctypes.CDLL(None).malloc_trim  # glibc
except (AttributeError, OSError, TypeError):
    _malloc_trim = None


@dataclass(frozen=True)
class Config:
    warmup: int  # untimed calls of each function before timing
    min_runs: int  # timed (stock, ext) pairs, at least ...
    max_runs: int  # ... and at most
    budget_s: float  # target time for the timed pairs of one case
    row_cap_s: float  # fewer than min_runs pairs (at least 1) where min_runs would pass this
    fill_repeats: int  # fill-bandwidth probe repeats


FULL = Config(warmup=2, min_runs=5, max_runs=25, budget_s=3.0, row_cap_s=math.inf, fill_repeats=10)
QUICK = Config(warmup=1, min_runs=3, max_runs=10, budget_s=0.5, row_cap_s=6.0, fill_repeats=5)


@dataclass(frozen=True)
class Case:
    name: str
    fn: str  # function name, identical in torch.nn.init and torchinit_ext
    shape: tuple
    kwargs: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    view: Callable | None = None  # fill this view of the allocated tensor
    default: bool = False  # in the default (quick) CPU set; --full runs every case
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


def fill_each(tensors):
    """The floor of writing `tensors` once: fill_ of each."""
    for tensor in tensors:
        tensor.fill_(1.0)


def tensor_specs(model):
    """Shape and dtype of every parameter and buffer of `model` (tied ones once)."""
    return [(t.shape, t.dtype) for t in [*model.parameters(), *model.buffers()]]


def allocate_and_fill(specs, device):
    """A model's floor: allocate each of its tensors and write it once, returned so that
    freeing them is not timed."""
    tensors = [torch.empty(shape, dtype=dtype, device=device) for shape, dtype in specs]
    fill_each(tensors)
    return tensors


class GPT(nn.Module):
    """A GPT-2 style decoder stack (pre-norm blocks, tied output embedding): the model rows."""

    def __init__(self, d_model, layers, heads, vocab=50257, context=1024):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model, heads, 4 * d_model, batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model)


# GPT-2 medium (355M parameters) on the CPU, GPT-2 XL (1.5B) on a GPU.
GPT_CONFIGS = {
    "cpu": ("GPT-2 medium", dict(d_model=1024, layers=24, heads=16)),
    "cuda": ("GPT-2 XL", dict(d_model=1600, layers=48, heads=25)),
}


def reset_every_module(model):
    """Stock's re-init after to_empty: each module's own reset, as FSDP2's docs do it."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None) or getattr(
            module, "_reset_parameters", None
        )
        if callable(reset):
            reset()


@dataclass(frozen=True)
class ModelCase:
    """Whole-model init of GPT_CONFIGS[device]: stock's way (`stock`: "eager" construction,
    "meta_reset", meta construction + to_empty + every reset_parameters, or "reset", every
    reset_parameters of a built model) against ext's (`ext`: "patched" construction,
    "materialize" from meta, or "materialize_in_place" of a built model). The in-place ways
    re-initialize one model built for the case, with neither construction nor allocation timed;
    the others build a new model in each call."""

    label: str
    stock: str
    ext: str

    devices = ("cpu", "cuda")
    fresh_memory = True  # each call starts after release_freed_memory()
    default = False
    contended = False
    env = None

    @property
    def name(self):
        return f"GPT model: {self.label}"

    def calls(self, device):
        config = GPT_CONFIGS[device][1]

        # Each returns the model, so that freeing it is not timed.
        def eager():
            with torch.device(device):
                return GPT(**config)

        def meta():
            with torch.device("meta"):
                return GPT(**config)

        def meta_reset():
            model = meta().to_empty(device=device)
            reset_every_module(model)
            return model

        def patched():
            with ext.patched(), torch.device(device):
                return GPT(**config)

        def materialize():
            return ext.materialize(meta(), device=device)

        built = eager() if self.stock == "reset" else None
        model_on_meta = meta()
        floor = (
            partial(fill_each, [*built.parameters(), *built.buffers()])
            if built is not None
            else partial(allocate_and_fill, tensor_specs(model_on_meta), device)
        )
        ways = {
            "eager": eager,
            "meta_reset": meta_reset,
            "patched": patched,
            "materialize": materialize,
            "reset": partial(reset_every_module, built),
            "materialize_in_place": partial(ext.materialize, built),
        }
        return ways[self.stock], ways[self.ext], floor, list(model_on_meta.parameters())


def _real_model_builders():
    """The real-model rows' models, at realistic sizes, built as their libraries' users build
    them (random init from a config). Libraries that are not installed have no rows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "helpers"))
    from real_models import ensure_torchvision_importable

    ensure_torchvision_importable()
    builders = {}
    with contextlib.suppress(ImportError):
        import transformers

        llama = transformers.LlamaConfig(  # 271M parameters, untied head
            vocab_size=32000,
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=16,
            num_attention_heads=16,
            num_key_value_heads=16,
        )
        builders["HF Llama 271M"] = partial(transformers.LlamaForCausalLM, llama)
        qwen2 = transformers.Qwen2Config(  # Qwen2-0.5B's shape: 494M parameters, tied head
            vocab_size=151936,
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
        builders["HF Qwen2-0.5B shape"] = partial(transformers.Qwen2ForCausalLM, qwen2)
        builders["HF GPT-2 124M"] = partial(transformers.GPT2LMHeadModel, transformers.GPT2Config())
    with contextlib.suppress(ImportError):
        import timm

        builders["timm ViT-B/16"] = partial(timm.create_model, "vit_base_patch16_224")
        builders["timm EfficientNet-B0"] = partial(timm.create_model, "efficientnet_b0")
    with contextlib.suppress(ImportError):
        import torchvision

        builders["torchvision ResNet-50"] = torchvision.models.resnet50
        builders["torchvision VGG-16"] = torchvision.models.vgg16
    return builders


@dataclass(frozen=True)
class RealModelCase:
    """A real library's model on the CPU: stock eager construction against ext's construction
    under ``patched()`` (`ext` "patched") or ``deferred_init`` + ``materialize()``
    ("deferred"). Each call builds a new model from fresh memory, as ModelCase's."""

    model: str
    ext: str

    devices = ("cpu",)
    fresh_memory = True
    env = None

    default = True

    @property
    def contended(self):
        return self.ext == "patched"

    @property
    def name(self):
        way = "patched()" if self.ext == "patched" else "deferred_init+materialize()"
        return f"{self.model}: eager vs {way}"

    def calls(self, device):
        build = REAL_MODELS[self.model]

        def patched():
            with ext.patched():
                return build()

        def deferred():
            return ext.materialize(ext.deferred_init(build), device=device)

        model_on_meta = ext.deferred_init(build)
        floor = partial(allocate_and_fill, tensor_specs(model_on_meta), device)
        ext_fn = patched if self.ext == "patched" else deferred
        return build, ext_fn, floor, list(model_on_meta.parameters())


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


REAL_MODELS = _real_model_builders()

LINEAR = (4096, 4096)
EMBEDDING = (50000, 4096)
CONV = (512, 512, 3, 3)
GPU_FILL = (2**14, 2**14)  # 2^28 float32, 1 GiB: the GPU fill-bandwidth rows
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
        Case(f"{fn} 2^28 f32", fn, GPU_FILL, devices=("cuda",))
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


@dataclass
class Row:
    case: str
    device: str
    stock_ms: float | None = None
    ext_ms: float | None = None
    speedup: float | None = None
    floor_ms: float | None = None  # writing the same tensors once (fill_; models: allocated too)
    stock_x_floor: float | None = None
    ext_x_floor: float | None = None
    bandwidth_fraction: float | None = None
    ext_elements_per_s: float | None = None  # parameters per second for the model rows
    runs: int | None = None  # timed (stock, ext) pairs behind the medians
    wall_s: float | None = None  # the row's wall time, warm-up and setup included
    error: str | None = None  # printed, not part of the JSON row

    def to_json(self):
        return {
            k: getattr(self, k)
            for k in (
                "case",
                "device",
                "stock_ms",
                "ext_ms",
                "speedup",
                "floor_ms",
                "stock_x_floor",
                "ext_x_floor",
                "bandwidth_fraction",
                "ext_elements_per_s",
                "runs",
                "wall_s",
            )
        }


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--full",
        action="store_true",
        help="every case (the default is a quick subset on the CPU), with more runs",
    )
    parser.add_argument("--quick", action="store_true", help="the default; kept for old scripts")
    parser.add_argument(
        "--contention",
        type=int,
        nargs="?",
        const=os.cpu_count(),
        default=0,
        metavar="N",
        help="only the 16M-element and real-model patched() rows, with N busy processes "
        f"running beside them (default N: one per core, {os.cpu_count()})",
    )
    parser.add_argument(
        "--simd",
        metavar="LEVELS",
        help="comma list of avx512, avx2, default, or 'all' (those this CPU has): "
        "run the CPU rows once per level, each in a subprocess, and compare them",
    )
    # Set by a --simd run on its subprocesses: name the results by the level asked for.
    parser.add_argument("--simd-child", action="store_true", help=argparse.SUPPRESS)
    # Set on the subprocess of a case with its own environment: run that case alone, print its
    # row as JSON (the fill bandwidth comes from the parent).
    parser.add_argument("--one-case", help=argparse.SUPPRESS)
    parser.add_argument("--bandwidth", type=float, help=argparse.SUPPRESS)
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "all"), default="all", help="default: all available"
    )
    parser.add_argument(
        "--filter", default="", metavar="SUBSTR", help="only cases whose name contains SUBSTR"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        metavar="DIR",
        help=f"results directory (default {RESULTS_DIR})",
    )
    args = parser.parse_args()
    args.quick = not args.full
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    if args.simd:
        levels = supported_simd_levels() if args.simd == "all" else args.simd.split(",")
        unknown = set(levels) - set(SIMD_LEVELS)
        if unknown:
            parser.error(f"--simd: unknown level(s) {', '.join(sorted(unknown))}")
        args.simd = levels
    return args


def select_devices(choice):
    if choice == "all":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [choice]


def cpu_model_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


SIMD_LEVELS = ("avx512", "avx2", "default")


def supported_simd_levels():
    """The levels of TORCHINIT_CPU_CAPABILITY this CPU can run, by its flags."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        flags = []
    has = {"avx512": "avx512f" in flags, "avx2": "avx2" in flags, "default": True}
    return [level for level in SIMD_LEVELS if has[level]]


def device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    return cpu_model_name()


def device_slug(device):
    name = re.sub(r"\((r|tm)\)", "", device_name(device), flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return f"cpu-{slug}" if device == "cpu" else slug


def make_timer(device):
    """Return timed(fn) -> seconds for one call of fn on `device`, with the garbage collector off;
    fn's result is released after the clock stops."""
    if device == "cuda":

        def clocked(fn):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            result = fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3, result
    else:

        def clocked(fn):
            start = time.perf_counter()
            result = fn()
            return time.perf_counter() - start, result

    def timed(fn):
        gc.disable()
        try:
            seconds, _ = clocked(fn)
        finally:
            gc.enable()
        return seconds

    return timed


def release_freed_memory(device):
    """Collects garbage and, on the CPU, hands the memory malloc kept from freed allocations
    back to the OS, so that the next allocations get fresh pages whatever ran before."""
    gc.collect()
    if device == "cpu" and _malloc_trim is not None:
        _malloc_trim(0)


# A busy process of --contention: pure Python spinning on one core. It stops by itself when the
# bench that started it is gone (its parent changes), should the bench be killed outright.
SPINNER = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_processes(count):
    """`count` spinning processes for the duration of the block, killed at its end however it
    ends (exception, Ctrl-C, or SIGTERM, which main() turns into SystemExit)."""
    spinners = []
    try:
        for _ in range(count):
            spinners.append(subprocess.Popen([sys.executable, "-c", SPINNER]))
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
        for spinner in spinners:
            spinner.wait()


def fill_bandwidth(device, timed, repeats):
    """Best-of-`repeats` bytes/s of fill_(1.0) on a preallocated buffer."""
    buf = torch.empty(FILL_NUMEL, dtype=torch.float32, device=device)
    buf.fill_(0.0)  # fault the pages in before timing
    best = min(timed(partial(buf.fill_, 1.0)) for _ in range(repeats))
    return buf.numel() * buf.element_size() / best


def time_case(case, device, timed, cfg):
    """Median stock, ext and floor seconds and the bytes and elements written for one case."""
    stock_fn, ext_fn, floor_fn, targets = case.calls(device)

    def run(fn):
        if case.fresh_memory:
            release_freed_memory(device)
        return timed(fn)

    for _ in range(cfg.warmup):
        pair_s = run(stock_fn) + run(ext_fn)
        run(floor_fn)
    runs = min(cfg.max_runs, max(cfg.min_runs, int(cfg.budget_s / pair_s)))
    if runs * pair_s > cfg.row_cap_s:
        runs = max(1, int(cfg.row_cap_s / pair_s))
    stock_s, ext_s, floor_s = [], [], []
    for _ in range(runs):
        stock_s.append(run(stock_fn))
        ext_s.append(run(ext_fn))
        floor_s.append(run(floor_fn))
    nbytes = sum(t.numel() * t.element_size() for t in targets)
    numel = sum(t.numel() for t in targets)
    medians = (statistics.median(s) for s in (stock_s, ext_s, floor_s))
    return *medians, nbytes, numel, runs


def describe(error):
    """Exception type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return ": ".join([type(error).__name__] + lines[:1])


def run_case(case, device, timed, cfg, bandwidth):
    row = Row(case.name, device)
    start = time.perf_counter()
    try:
        stock_s, ext_s, floor_s, nbytes, numel, row.runs = time_case(case, device, timed, cfg)
    except Exception as e:  # report and go on with the next case
        row.error = describe(e)
        return row
    finally:
        row.wall_s = time.perf_counter() - start
    row.stock_ms = stock_s * 1e3
    row.ext_ms = ext_s * 1e3
    row.speedup = stock_s / ext_s
    row.floor_ms = floor_s * 1e3
    row.stock_x_floor = stock_s / floor_s
    row.ext_x_floor = ext_s / floor_s
    row.bandwidth_fraction = nbytes / ext_s / bandwidth
    row.ext_elements_per_s = numel / ext_s
    return row


def table_header(width):
    columns = (
        f"{'case':<{width}}  {'device':<6}  {'stock ms':>10}  "
        f"{'ext ms':>10}  {'speedup':>8}  {'floor ms':>10}  {'stock/fl':>8}  {'ext/fl':>7}  "
        f"{'bw frac':>7}  {'ext Gel/s':>9}  {'runs':>4}  "
        f"{'row s':>6}"
    )
    return f"{columns}\n{'-' * len(columns)}"


def table_line(row, width):
    result = (
        f"FAILED: {row.error}"
        if row.error
        else f"{row.stock_ms:>10.2f}  {row.ext_ms:>10.2f}  "
        f"{row.speedup:>7.2f}x  {row.floor_ms:>10.2f}  {row.stock_x_floor:>7.2f}x  "
        f"{row.ext_x_floor:>6.2f}x  {row.bandwidth_fraction:>7.2f}  "
        f"{row.ext_elements_per_s / 1e9:>9.3f}  {row.runs:>4}  {row.wall_s:>6.1f}"
    )
    return f"{row.case:<{width}}  {row.device:<6}  {result}"


def simd_level(device):
    """The level torchinit_ext's CPU kernels run with (TORCHINIT_CPU_CAPABILITY, read at load,
    or the best the CPU has); None for a GPU."""
    return ext.cpu_capability() if device == "cpu" else None


def conditions(device, contention):
    simd = f"SIMD {simd_level(device)}, " if device == "cpu" else ""
    return f"{simd}contention {contention}"


def run_device(device, cases, cfg, contention):
    timed = make_timer(device)
    bandwidth = fill_bandwidth(device, timed, cfg.fill_repeats)
    print(
        f"\n== {device}: {device_name(device)}, {conditions(device, contention)}, "
        f"fill bandwidth {bandwidth / 1e9:.1f} GB/s ==",
        flush=True,
    )
    width = max(len(c.name) for c in cases)
    print(table_header(width), flush=True)
    rows = []
    with busy_processes(contention):
        for case in cases:
            if case.env:
                rows.append(run_case_in_subprocess(case, device, cfg, bandwidth))
            else:
                rows.append(run_case(case, device, timed, cfg, bandwidth))
            print(table_line(rows[-1], width), flush=True)
    return rows, bandwidth


def run_case_in_subprocess(case, device, cfg, bandwidth):
    """run_case in a subprocess of this script with case.env set."""
    command = [sys.executable, __file__, "--one-case", case.name, "--device", device]
    command += ["--bandwidth", str(bandwidth)] + ([] if cfg is QUICK else ["--full"])
    child = subprocess.run(
        command, env={**os.environ, **dict(case.env)}, capture_output=True, text=True
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        return Row(case.name, device, error=f"subprocess exit {child.returncode}: {child.stderr}")
    return Row(**json.loads(lines[-1]))


def run_one_case(args):
    """--one-case: the row of one case, as JSON on the last line of stdout."""
    case = next(c for c in CASES if c.name == args.one_case)
    cfg = QUICK if args.quick else FULL
    row = run_case(case, args.device, make_timer(args.device), cfg, args.bandwidth)
    print(json.dumps({**row.to_json(), "error": row.error}))


def timing(cfg):
    runs = f"{cfg.min_runs}-{cfg.max_runs} interleaved runs"
    if cfg.row_cap_s < math.inf:
        runs += f" (fewer, at least 1, where a row would pass {cfg.row_cap_s:g} s)"
    return runs


def print_header(args, cfg, devices):
    print("torchinit_ext benchmark: stock torch.nn.init vs torchinit_ext")
    for device in devices:
        print(f"  device   {device}: {device_name(device)}")
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    print(f"  torch    {torch.__version__}{cuda}, python {platform.python_version()}")
    print(f"  threads  {torch.get_num_threads()}, SIMD {simd_level('cpu')} (our CPU kernels)")
    print(
        f"  timing   MEDIAN of {timing(cfg)} after {cfg.warmup} warm-up call(s) each; "
        "CPU: perf_counter, CUDA: events"
    )
    print(f"  mode     {'quick' if args.quick else 'full'}")
    print(f"  busy     {args.contention} competing busy process(es)", flush=True)


def print_table(rows, contention):
    width = max(len(r.case) for r in rows)
    for device in dict.fromkeys(r.device for r in rows):
        print(f"\n== {device}: {conditions(device, contention)} ==")
        print(table_header(width))
        for row in rows:
            if row.device == device:
                print(table_line(row, width))


def machine_info(device, args, bandwidth, cfg):
    return {
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "simd": simd_level(device),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "contention": args.contention,
        "timing": f"median of {timing(cfg)}",
        "fill_bandwidth_GBps": bandwidth / 1e9,
        "driver_version": driver_version() if device == "cuda" else None,
    }


def results_stem(device, contention, level=None):
    """<device-slug>, then -contention for a --contention run, then -<level> for a --simd run."""
    contended = "-contention" if contention else ""
    return f"{device_slug(device)}{contended}{f'-{level}' if level else ''}"


def write_results(out_dir, stem, rows, machine):
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(
        json.dumps({"machine": machine, "rows": [r.to_json() for r in rows]}, indent=2) + "\n"
    )
    png_path = out_dir / f"{stem}.png"
    title = f"torchinit_ext speedup, {machine['device_name']}"
    if machine["simd"]:
        title += f", SIMD {machine['simd']}"
    if machine["contention"]:
        title += f", {machine['contention']} busy processes"
    write_chart(png_path, title, [r for r in rows if not r.error])
    return json_path, png_path


def write_chart(path, title, rows):
    """Horizontal log-scale bars from the 1x line to each case's speedup."""
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.3 * len(rows)))
    speedups = [r.speedup for r in rows]
    bars = ax.barh(
        [r.case for r in rows],
        [s - 1 for s in speedups],
        left=1,
        color=["tab:green" if s >= 1 else "tab:red" for s in speedups],
    )
    ax.bar_label(bars, labels=[f"{s:.2f}x" for s in speedups], padding=3)
    ax.set_xscale("log")
    ax.set_xlim(min(speedups + [1]) / 2, max(speedups + [1]) * 2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("speedup (stock ms / ext ms), log scale")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_simd_levels(args):
    """--simd: the CPU rows once per level, each in a subprocess of this script with
    TORCHINIT_CPU_CAPABILITY set (the extension reads it when it loads), then one table."""
    results, failed = {}, False
    for level in args.simd:
        print(f"\n==== TORCHINIT_CPU_CAPABILITY={level} ====", flush=True)
        command = [sys.executable, __file__, "--simd-child", "--device", "cpu"]
        command += ["--filter", args.filter, "--out", str(args.out)]
        command += ["--full"] if args.full else []
        command += ["--contention", str(args.contention)] if args.contention else []
        code = subprocess.run(command, env={**os.environ, "TORCHINIT_CPU_CAPABILITY": level})
        failed |= code.returncode != 0
        if code.returncode in (0, 1):  # 1: some case failed, the results were written
            path = args.out / f"{results_stem('cpu', args.contention, level)}.json"
            results[level] = json.loads(path.read_text())
    if results:
        print_simd_table(results)
    return failed


def print_simd_table(results):
    """Stock's median over the levels' runs, and per level ext's time and its speedup against
    the stock of the same run."""
    by_level = {level: {r["case"]: r for r in got["rows"]} for level, got in results.items()}
    cases = list(dict.fromkeys(case for rows in by_level.values() for case in rows))
    width = max(map(len, cases))
    print("\n== SIMD levels compared (ext ms, and speedup vs stock in the same run) ==")
    for level, got in results.items():
        ran = got["machine"]["simd"]
        note = "" if ran == level else f" (asked for {level})"
        print(f"  {level}: ran {ran}{note}, contention {got['machine']['contention']}")
    columns = f"{'case':<{width}}  {'stock ms':>10}" + "".join(
        f"  {level + ' ms':>11}  {'speedup':>8}" for level in by_level
    )
    print(f"{columns}\n{'-' * len(columns)}")
    for case in cases:
        got = [rows.get(case) for rows in by_level.values()]
        stock_ms = [r["stock_ms"] for r in got if r and r["stock_ms"] is not None]
        line = f"{case:<{width}}  " + (
            f"{statistics.median(stock_ms):>10.2f}" if stock_ms else f"{'-':>10}"
        )
        for r in got:
            if r and r["ext_ms"] is not None:
                line += f"  {r['ext_ms']:>11.2f}  {r['speedup']:>7.2f}x"
            else:
                line += f"  {'-':>11}  {'-':>8}"
        print(line)


def main():
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the busy processes of --contention are killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.simd:
        sys.exit(1 if run_simd_levels(args) else 0)
    if args.one_case:
        sys.exit(run_one_case(args))
    cfg = QUICK if args.quick else FULL
    cases = [c for c in CASES if args.filter in c.name and (c.contended or not args.contention)]
    if not cases:
        sys.exit(f"no case matches --filter {args.filter!r}")
    devices = select_devices(args.device)
    print_header(args, cfg, devices)
    start = time.perf_counter()
    all_rows = []
    for device in devices:
        on_device = [
            c
            for c in cases
            if device in c.devices and (c.default or not args.quick or device != "cpu")
        ]
        rows, bandwidth = run_device(device, on_device, cfg, args.contention)
        all_rows += rows
        level = os.environ.get("TORCHINIT_CPU_CAPABILITY") if args.simd_child else None
        paths = write_results(
            args.out,
            results_stem(device, args.contention, level),
            rows,
            machine_info(device, args, bandwidth, cfg),
        )
        print("wrote " + ", ".join(str(p) for p in paths), flush=True)
    print_table(all_rows, args.contention)
    failed = sum(1 for r in all_rows if r.error)
    print(f"\n{len(all_rows)} cases, {failed} failed, {time.perf_counter() - start:.1f} s")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
