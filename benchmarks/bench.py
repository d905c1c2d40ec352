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
    fresh memory as the model rows are. ``ext/floor`` (``ext_x_floor``) and
    ``stock_x_floor`` are each side's median over the floor's. The
    fresh-memory rows allocate and fill a 256 MiB tensor in each call (a new
    mapping: glibc maps allocations this large anew and unmaps them when
    freed), their floor being torch.empty + ``fill_``; their huge-pages-on
    variant runs in a subprocess with THP_MEM_ALLOC_ENABLE=1 and
    TORCHINIT_HUGE_PAGES=1 set, since both are read once per process. Where
    installed, numpy's Philox and PCG64 generators and JAX's ``jax.random``
    (CPU) stand in the stock column of peer rows. JAX's rows run in a
    subprocess: its CPU threads spin on after each call, which slows the ext
    and floor columns of those two rows (only).

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
    targets, small tensors, the real models, fresh memory, the peers: 4-5
    minutes on 2 cores); ``--full`` times every case, with more runs.
    ``--contention [N]`` times only the 16M-element and real-model patched()
    rows of that set while N busy processes (default: one per core) spin
    beside them; the bandwidth probe runs before they start.
    ``--simd LEVELS`` runs the CPU rows once per SIMD level, each in a
    subprocess with TORCHINIT_CPU_CAPABILITY set, and prints one table of them.

Output
    A header (CPU, torch, rows, timing, the load average at start, with a
    warning when the machine is not quiet), one progress line per case (with
    its run count and wall time), then, once, a table per device in 100
    columns with a legend of its columns, the load at the end and the cores
    other processes kept busy during the run (from /proc/stat, less this
    bench's own CPU time), and last the paths of the results: per device a new
    ``<out>/<stem>.json`` (``machine`` block: SIMD level, contention, date,
    load, ...; ``rows``) and ``<out>/<stem>.png`` (speedup bar chart). The
    stem is the device slug, the SIMD level (a --simd run: the level asked
    for), ``contention`` for a contention run, and the date and time (UTC),
    e.g. ``cpu-amd-epyc-avx512-2026-12-06T0815``; ``-2``, ``-3``, ... is added
    where that name is taken, so no run writes over another's results. A case
    that raises is reported as ``FAILED: <reason>`` (null numbers in the JSON)
    and the run goes on; the exit code is 1 if any case failed.

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
import textwrap
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.init as stock  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
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
DEFAULT = Config(warmup=1, min_runs=3, max_runs=10, budget_s=0.5, row_cap_s=6.0, fill_repeats=5)


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


# The host cost row: GPT-2 XL's 48 blocks (580 tensors) with tiny tensors, so that the time is
# the host's work per tensor, which on a GPU is what stands between the kernels.
HOST_COST_CONFIG = dict(d_model=50, layers=48, heads=25, vocab=64, context=16)


def host_cost(repeats=20):
    """Python-level calls (functions and builtins, as sys.setprofile counts them) and
    microseconds per tensor of re-initializing one model in place: stock's reset loop against
    materialize(). Needs no GPU."""
    model = GPT(**HOST_COST_CONFIG)
    tensors = len([*model.parameters(), *model.buffers()])
    ways = {"stock": partial(reset_every_module, model), "ext": partial(ext.materialize, model)}
    result = {"model": "GPT-2 XL shape (48 blocks), tiny tensors", "tensors": tensors}
    for name, way in ways.items():
        calls = {"call": 0, "c_call": 0}  # Python functions, builtins

        def count(frame, event, arg, calls=calls):
            if event in calls:
                calls[event] += 1

        way()  # warm
        sys.setprofile(count)
        try:
            way()
        finally:
            sys.setprofile(None)
        result[f"{name}_python_calls_per_tensor"] = calls["call"] / tensors
        result[f"{name}_calls_per_tensor"] = (calls["call"] + calls["c_call"]) / tensors
    best = {name: math.inf for name in ways}
    for _ in range(repeats):  # interleaved, best of each
        for name, way in ways.items():
            began = time.perf_counter()
            way()
            best[name] = min(best[name], time.perf_counter() - began)
    for name in ways:
        result[f"{name}_us_per_tensor"] = best[name] / tensors * 1e6
    return result


def print_host_cost(cost):
    print(
        f"\n== host cost: re-initializing in place, {cost['model']}, {cost['tensors']} tensors =="
    )
    for name, label in (("stock", "stock's reset loop"), ("ext", "materialize()")):
        print(
            f"  {label:<20} {cost[f'{name}_calls_per_tensor']:6.1f} calls/tensor "
            f"({cost[f'{name}_python_calls_per_tensor']:.1f} of Python functions)  "
            f"{cost[f'{name}_us_per_tensor']:6.1f} us/tensor"
        )


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
        builders["HF Mistral tiny, resized vocab"] = _resized_mistral
    with contextlib.suppress(ImportError):
        import timm

        builders["timm ViT-B/16"] = partial(timm.create_model, "vit_base_patch16_224")
        builders["timm EfficientNet-B0"] = partial(timm.create_model, "efficientnet_b0")
        builders["timm MobileNetV3-S"] = partial(timm.create_model, "mobilenetv3_small_100")
    with contextlib.suppress(ImportError):
        import torchvision

        builders["torchvision ResNet-50"] = torchvision.models.resnet50
        builders["torchvision VGG-16"] = torchvision.models.vgg16
        # Small models of many layers: per-layer costs, not fills, dominate.
        builders["torchvision MobileNetV3-S"] = torchvision.models.mobilenet_v3_small
        builders["torchvision DenseNet-121"] = torchvision.models.densenet121
        builders["torchvision EfficientNet-B0"] = torchvision.models.efficientnet_b0
        builders["torchvision RegNetY-400MF"] = torchvision.models.regnet_y_400mf
    return builders


def _resized_mistral():
    """A tiny Mistral whose builder resizes its vocabulary: transformers' mean resizing reads
    the embedding's values while building."""
    import transformers

    config = transformers.MistralConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = transformers.MistralForCausalLM(config)
    model.resize_token_embeddings(config.vocab_size + 64)
    return model


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
        help="every case (the default is a subset on the CPU: 4-5 minutes on 2 cores), "
        "with more runs",
    )
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
    # Set by a --simd run on its subprocesses: the stem of their results (named by the level asked
    # for) and the load average before the first level ran.
    parser.add_argument("--simd-child", metavar="STEM", help=argparse.SUPPRESS)
    parser.add_argument("--start-load", type=float, nargs=3, help=argparse.SUPPRESS)
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


WIDTH = 100  # console columns: the table, the legend and the other lines fit in them
CASE_WIDTH = 43  # the numbers take the other 57 columns; a longer name goes on over the next lines
COLUMNS = (  # header, width
    ("stock ms", 8),
    ("ext ms", 8),
    ("speedup", 7),
    ("floor ms", 8),
    ("ext/floor", 9),
    ("runs", 4),
)

LEGEND = """\
Columns (each time is the median of the row's timed runs, for one call, in milliseconds):
  stock ms   stock torch.nn.init; in a row "A vs B", A is this column (stock's way to build a
             model, or a peer library such as numpy) and B the ext column
  ext ms     torchinit_ext: the same call with the same arguments, on the same tensor
  speedup    stock ms / ext ms: above 1x, torchinit_ext is faster
  floor ms   the least the work can cost: fill_(1.0) of the same tensors, once (model and
             fresh-memory rows: allocating each tensor and filling it once, from fresh memory)
  ext/floor  ext ms / floor ms: 1x is as fast as merely writing the memory
  runs       timed rounds (stock, ext, floor, interleaved) behind each median
Rows "x1000 calls" time 1000 calls on a small tensor: their milliseconds are microseconds per call.
The JSON has more for each row: stock over the floor (stock_x_floor), the fraction of the fill
bandwidth (bandwidth_fraction), elements written per second and the row's wall time."""

SIMD_LEGEND = """\
Columns of the comparison:
  stock ms   stock torch.nn.init, for one call: the median of its times in the levels' runs
  <level>    torchinit_ext with its CPU kernels at that SIMD level (TORCHINIT_CPU_CAPABILITY):
             milliseconds for one call and, in brackets, its speedup over stock in the same run"""

# Limits of a quiet machine, whatever its number of cores: the bench runs a thread per core and a
# parallel fill waits for its slowest thread, so a single busy process slows the rows. At start
# and over the run, the cores other processes keep busy (the machine's busy time in /proc/stat
# less the bench's own) must stay under QUIET_OTHERS; at start they are measured over
# START_LOOK seconds, since the load average also counts what has just ended, such as
# `make bench`'s own build. Without /proc/stat, the 1-minute load average at start must be under
# QUIET_LOAD: half a core leaves room for the bench's own start-up.
QUIET_LOAD = 0.5
QUIET_OTHERS = 0.25
START_LOOK = 1.0


@dataclass(frozen=True)
class Moment:
    """The date, the machine's load average and busy CPU time, and the bench's own CPU time: that
    of this process and its finished children (subprocess rows, --simd levels, the busy processes
    of --contention)."""

    date: datetime.datetime  # UTC
    load: tuple  # os.getloadavg(): 1, 5 and 15 minutes
    wall: float
    machine_cpu: float | None  # busy CPU seconds of every process since boot; None without /proc
    own_cpu: float

    @classmethod
    def now(cls):
        try:
            with open("/proc/stat") as stat:
                user, nice, system, _, _, irq, softirq = map(int, stat.readline().split()[1:8])
            machine_cpu = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError):
            machine_cpu = None
        own = os.times()
        own_cpu = own.user + own.system + own.children_user + own.children_system
        date = datetime.datetime.now(datetime.timezone.utc)
        return cls(date, os.getloadavg(), time.monotonic(), machine_cpu, own_cpu)

    def others_since(self, start):
        """Cores that other processes kept busy on average from `start` to this moment."""
        if self.machine_cpu is None or start.machine_cpu is None or self.wall <= start.wall:
            return None
        others = self.machine_cpu - start.machine_cpu - (self.own_cpu - start.own_cpu)
        return max(0.0, others / (self.wall - start.wall))


def others_busy_now():
    """Cores other processes keep busy over the next START_LOOK seconds, while the bench sleeps;
    None without /proc/stat."""
    before = Moment.now()
    time.sleep(START_LOOK)
    return Moment.now().others_since(before)


def start_warning(start, busy_now):
    if busy_now is not None:
        if busy_now < QUIET_OTHERS:
            return None
        return (
            f"the machine is not quiet: other processes keep {busy_now:.2f} cores busy at start "
            f"(quiet: under {QUIET_OTHERS}); they take cores from the bench and make its times "
            "slower and noisier. Rerun on an idle machine for numbers to compare."
        )
    if start.load[0] < QUIET_LOAD:
        return None
    return (
        f"the machine is not quiet: its 1-minute load average is {start.load[0]:.2f} at start "
        f"(quiet: under {QUIET_LOAD}). Other processes ran in the last minute; those still running "
        "take cores from the bench and make its times slower and noisier. The load beside the "
        "run is reported at its end; rerun on an idle machine for numbers to compare."
    )


def run_warning(others):
    if others is None or others < QUIET_OTHERS:
        return None
    return (
        f"the machine was not quiet: other processes kept {others:.2f} cores busy on average "
        f"during the run (quiet: under {QUIET_OTHERS}), so its times are slower and noisier; "
        "rerun on an idle machine for numbers to compare."
    )


def end_warning(start, end):
    """The verdict on the run: by the load measured beside it where /proc/stat allows, else by
    the load average at start."""
    others = end.others_since(start)
    return start_warning(start, None) if others is None else run_warning(others)


def show_load(load):
    return ", ".join(f"{value:.2f}" for value in load)


def say(name, text):
    """One item of the header or the summary: its name, then its text wrapped under itself."""
    print(textwrap.fill(text, WIDTH, initial_indent=f"  {name:<10}  ", subsequent_indent=" " * 14))


def sig(value, digits, max_decimals):
    """`value` with about `digits` significant digits, and at most `max_decimals` decimals."""
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    return f"{value:.{min(max_decimals, max(0, digits - 1 - magnitude))}f}"


def ms(value):
    return sig(value, 4, 4)


def times(ratio):
    return sig(ratio, 3, 2) + "x"


def plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def wrap_name(name, width):
    return textwrap.wrap(name, width, subsequent_indent="  ", break_on_hyphens=False)


def table_lines(rows):
    """The table of `rows`, one line each: a name longer than its column goes on over the next
    lines, and a failed row's reason stands under its name."""
    header = f"{'case':<{CASE_WIDTH}}" + "".join(f"  {name:>{width}}" for name, width in COLUMNS)
    lines = [header, "-" * len(header)]
    for row in rows:
        names = wrap_name(row.case, CASE_WIDTH)
        if row.error:
            reason = textwrap.wrap(
                f"FAILED: {row.error}", WIDTH, initial_indent="    ", subsequent_indent="    "
            )
            lines += names + reason
            continue
        cells = (ms(row.stock_ms), ms(row.ext_ms), times(row.speedup), ms(row.floor_ms))
        cells += (times(row.ext_x_floor), str(row.runs))
        numbers = "".join(f"  {cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS))
        lines += [f"{names[0]:<{CASE_WIDTH}}{numbers}", *names[1:]]
    return lines


def simd_level(device):
    """The level torchinit_ext's CPU kernels run with (TORCHINIT_CPU_CAPABILITY, read at load,
    or the best the CPU has); None for a GPU."""
    return ext.cpu_capability() if device == "cpu" else None


def run_device(device, cases, cfg, contention):
    """The rows of `cases` on `device`, with one progress line as each ends (the table comes at
    the end of the run), and the device's fill bandwidth."""
    timed = make_timer(device)
    bandwidth = fill_bandwidth(device, timed, cfg.fill_repeats)
    print(f"\n{device}, {len(cases)} rows (fill bandwidth {bandwidth / 1e9:.1f} GB/s):", flush=True)
    rows = []
    with busy_processes(contention):
        for index, case in enumerate(cases, 1):
            start = time.perf_counter()
            if case.env:
                rows.append(run_case_in_subprocess(case, device, cfg, bandwidth))
            else:
                rows.append(run_case(case, device, timed, cfg, bandwidth))
            done = "FAILED" if rows[-1].error else plural(rows[-1].runs, "run")
            done += f", {time.perf_counter() - start:.1f} s"
            # The name wraps, its run count and time stay whole on its last line.
            name = f"[{index:>{len(str(len(cases)))}}/{len(cases)}] {case.name}:"
            lines = wrap_name(name, WIDTH - len(done) - 1)
            print("\n".join(lines[:-1] + [f"{lines[-1]} {done}"]), flush=True)
    return rows, bandwidth


def run_case_in_subprocess(case, device, cfg, bandwidth):
    """run_case in a subprocess of this script with case.env set."""
    command = [sys.executable, __file__, "--one-case", case.name, "--device", device]
    command += ["--bandwidth", str(bandwidth)] + (["--full"] if cfg is FULL else [])
    child = subprocess.run(
        command, env={**os.environ, **dict(case.env)}, capture_output=True, text=True
    )
    lines = child.stdout.strip().splitlines()
    if child.returncode != 0 or not lines:
        last = (child.stderr.strip().splitlines() or [""])[-1]  # a traceback's exception
        return Row(case.name, device, error=f"subprocess exit {child.returncode}: {last}")
    return Row(**json.loads(lines[-1]))


def run_one_case(args):
    """--one-case: the row of one case, as JSON on the last line of stdout."""
    case = next(c for c in CASES if c.name == args.one_case)
    cfg = FULL if args.full else DEFAULT
    row = run_case(case, args.device, make_timer(args.device), cfg, args.bandwidth)
    print(json.dumps({**row.to_json(), "error": row.error}))


def timing(cfg):
    runs = f"{cfg.min_runs}-{cfg.max_runs} interleaved runs"
    if cfg.row_cap_s < math.inf:
        runs += f" (fewer, at least 1, where a row would pass {cfg.row_cap_s:g} s)"
    return runs


def print_header(args, cfg, cases, start, busy_now):
    """What runs, where, and how loaded the machine is before the first row."""
    print("torchinit_ext benchmark: stock torch.nn.init against torchinit_ext")
    say(
        "cpu",
        f"{cpu_model_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"our kernels at SIMD {simd_level('cpu')} (torch's own: "
        f"{torch.backends.cpu.get_cpu_capability()})",
    )
    if "cuda" in cases:
        say("cuda", device_name("cuda"))
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    say("torch", f"{torch.__version__}{cuda}, python {platform.python_version()}")
    chosen = "every case (--full)" if args.full else "the default set (--full: every case)"
    if args.contention:
        chosen = "the 16M-element and real-model patched() rows of " + chosen
    if args.filter:
        chosen += f", names containing {args.filter!r}"
    counts = ", ".join(f"{len(on_device)} on {device}" for device, on_device in cases.items())
    say("rows", f"{chosen}: {counts}")
    say(
        "timing",
        f"median of {timing(cfg)} after {plural(cfg.warmup, 'warm-up call')} each; "
        "CPU: perf_counter, CUDA: events",
    )
    if args.contention:
        say(
            "contention",
            f"{args.contention} busy processes (pure-Python loops, a core each) are started "
            "beside the rows, after the bandwidth probe: this bench's own, not other load",
        )
    given = "; measured by the --simd run" if args.start_load else ""
    say(
        "load",
        f"{show_load(start.load)} (1-, 5- and 15-minute averages) at start, "
        f"on {os.cpu_count()} cores{given}",
    )
    if busy_now is not None:
        say("now", f"other processes keep {busy_now:.2f} cores busy (quiet: under {QUIET_OTHERS})")
    warning = start_warning(start, busy_now)
    if warning:
        say("WARNING", warning)
    sys.stdout.flush()


def print_tables(results):
    """One table per device, printed once, at the end of the run."""
    for device, (rows, bandwidth) in results.items():
        details = [device_name(device)]
        if device == "cpu":
            details.append(f"SIMD {simd_level(device)}")
        details.append(f"fill bandwidth {bandwidth / 1e9:.1f} GB/s")
        print(f"\n== {device}: {', '.join(details)} ==")
        print("\n".join(table_lines(rows)))


def print_summary(start, end, count):
    """The machine's load at the end and beside the run, then `count` (what ran, what failed)."""
    print()
    say("load", f"{show_load(end.load)} at the end (the bench's own threads included)")
    others = end.others_since(start)
    if others is not None:
        busy = f"{others:.2f} cores kept busy on average by other processes during the run"
        say("other load", f"{busy} (quiet: under {QUIET_OTHERS})")
    warning = end_warning(start, end)
    if warning:
        say("WARNING", warning)
    print(f"{count}, {end.wall - start.wall:.0f} s")


def shown(path):
    """`path` relative to the working directory where it lies under it."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def print_paths(written):
    """The results and chart paths: the last lines of the output."""
    lines = []
    for label, json_path, png_path in written:
        tag = f" ({label})" if len(written) > 1 else ""
        lines += [(f"results{tag}:", json_path), (f"plot{tag}:", png_path)]
    width = max((len(key) for key, _ in lines), default=0) + 1
    for key, path in lines:
        print(f"{key:<{width}}{shown(path)}")


def machine_info(device, args, bandwidth, cfg, start, end):
    others = end.others_since(start)
    return {
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "python_version": platform.python_version(),
        "date": start.date.isoformat(timespec="seconds"),
        "quick": not args.full,  # the default set
        "simd": simd_level(device),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "contention": args.contention,
        "timing": f"median of {timing(cfg)}",
        "fill_bandwidth_GBps": bandwidth / 1e9,
        "driver_version": driver_version() if device == "cuda" else None,
        "cores": os.cpu_count(),
        "load_avg_start": list(start.load),
        "load_avg_end": list(end.load),
        "other_processes_cores": others,
        "quiet": end_warning(start, end) is None,
    }


def results_base(device, level, contention, date):
    """<device slug>-<SIMD level>[-contention]-<date and time, UTC>: a name of its own for each
    run, where the device's name alone is shared by every run on it."""
    parts = [device_slug(device), level, "contention" if contention else None]
    return "-".join([*filter(None, parts), f"{date:%Y-%m-%dT%H%M}"])


def new_stem(out_dir, base):
    """`base`, or base-2, base-3, ...: the first with neither a .json nor a .png in out_dir."""
    stem, number = base, 1
    while (out_dir / f"{stem}.json").exists() or (out_dir / f"{stem}.png").exists():
        number += 1
        stem = f"{base}-{number}"
    return stem


def write_results(out_dir, stem, rows, machine):
    """<stem>.json and <stem>.png, created: a file that exists already is never written over (a
    run that raced for the name stops with FileExistsError)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    with json_path.open("x") as file:
        results = {"machine": machine, "rows": [r.to_json() for r in rows]}
        file.write(json.dumps(results, indent=2) + "\n")
    failed = sum(1 for r in rows if r.error)
    title = chart_title(machine) + (f"\n{failed} failed rows not shown" if failed else "")
    with png_path.open("xb") as file:
        write_chart(file, title, [r for r in rows if not r.error])
    return json_path, png_path


def chart_title(machine):
    details = [machine["device_name"]]
    if machine["simd"]:
        details += [f"SIMD {machine['simd']}", f"{machine['threads']} threads"]
    details.append(f"torch {machine['torch_version']}")
    if machine["contention"]:
        details.append(f"{machine['contention']} busy processes beside")
    date = datetime.datetime.fromisoformat(machine["date"])
    details.append(f"{date:%Y-%m-%d %H:%M} UTC" + ("" if machine["quiet"] else " (not quiet)"))
    return "torchinit_ext: speedup over stock torch.nn.init\n" + ", ".join(details)


FASTER, SLOWER = "tab:green", "tab:red"
BAR_AREA_IN = 7  # the bars' width in inches, the row names' added to it


def write_chart(file, title, rows):
    """Horizontal log-scale bars from the 1x line to each row's speedup, each labelled with its
    value right of the bar, or right of the 1x line for a bar under 1x (clear of the names)."""
    speedups = [r.speedup for r in rows]
    places = range(len(rows))
    fig, ax = plt.subplots(figsize=(BAR_AREA_IN, 2.5 + 0.28 * len(rows)), layout="constrained")
    colors = [FASTER if s >= 1 else SLOWER for s in speedups]
    ax.barh(places, [s - 1 for s in speedups], left=1, color=colors)
    ax.set_yticks(places, [r.case for r in rows])
    ax.set_ylim(max(len(rows), 1) - 0.5, -0.5)  # the first row on top
    labels = [
        ax.annotate(
            f"{s:.2f}x", (max(s, 1), y), xytext=(4, 0), textcoords="offset points", va="center"
        )
        for y, s in zip(places, speedups)
    ]
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speedup = stock time / ext time (log scale; in a peer row, stock is the peer)")
    fig.suptitle(title)
    fig.legend(
        handles=[
            Patch(color=FASTER, label="torchinit_ext faster than stock"),
            Patch(color=SLOWER, label="torchinit_ext slower than stock"),
        ],
        loc="outside lower center",
        ncols=2,
    )
    # The row names get the room they take on top of the bars'.
    renderer = fig.canvas.get_renderer()
    names = [t.get_window_extent(renderer).width for t in ax.get_yticklabels()]
    fig.set_size_inches(BAR_AREA_IN + max(names, default=0) / fig.dpi, fig.get_size_inches()[1])
    low, high = min([1, *speedups]) / 1.5, max([1, *speedups])
    ax.set_xlim(low, high)
    fig.canvas.draw()
    # The right limit, on the log scale, at which every label ends inside the axes: the label of
    # a bar ending at x takes the fraction `share` of the axes' width after it.
    axes_px = ax.get_window_extent().width
    for label in labels:
        share = (label.get_window_extent().width + 8) / axes_px
        high = max(high, low * math.exp(math.log(label.xy[0] / low) / (1 - share)))
    ax.set_xlim(low, high)
    if high / low < 5:  # too few 1-2-5 ticks on so short a range
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 1.5, *range(2, 10))))
    fig.savefig(file, format="png", dpi=120, bbox_inches="tight", pad_inches=0.2)
    plt.close(fig)


def run_simd_levels(args, start):
    """--simd: the CPU rows once per level, each in a subprocess of this script with
    TORCHINIT_CPU_CAPABILITY set (the extension reads it when it loads), then one table."""
    results, written, failed = {}, [], False
    for level in args.simd:
        print(f"\n==== TORCHINIT_CPU_CAPABILITY={level} ====", flush=True)
        stem = new_stem(args.out, results_base("cpu", level, args.contention, start.date))
        command = [sys.executable, __file__, "--simd-child", stem, "--device", "cpu"]
        command += ["--filter", args.filter, "--out", str(args.out)]
        command += ["--start-load", *map(str, start.load)]
        command += ["--full"] if args.full else []
        command += ["--contention", str(args.contention)] if args.contention else []
        code = subprocess.run(command, env={**os.environ, "TORCHINIT_CPU_CAPABILITY": level})
        failed |= code.returncode != 0
        if code.returncode in (0, 1):  # 1: some case failed, the results were written
            path = args.out / f"{stem}.json"
            results[level] = json.loads(path.read_text())
            written.append((level, path, path.with_suffix(".png")))
    if results:
        print_simd_table(results)
        print(f"\n{SIMD_LEGEND}\nThe tables of each level above:\n{LEGEND}")
    done = f"{len(args.simd)} SIMD levels, {len(args.simd) - len(results)} failed"
    print_summary(start, Moment.now(), done)
    print_paths(written)
    return failed


def print_simd_table(results):
    """Stock's median over the levels' runs, and per level ext's time and its speedup against
    the stock of the same run."""
    by_level = {level: {r["case"]: r for r in got["rows"]} for level, got in results.items()}
    cases = list(dict.fromkeys(case for rows in by_level.values() for case in rows))
    cell = 15  # "802.2 (2.69x)"
    width = min(max(map(len, cases)), WIDTH - 10 - (2 + cell) * len(by_level))
    print("\n== SIMD levels compared: ext ms for one call (speedup over stock in the same run) ==")
    for level, got in results.items():
        ran = got["machine"]["simd"]
        note = "" if ran == level else f" (asked for {level})"
        print(f"  {level}: ran {ran}{note}, contention {got['machine']['contention']}")
    columns = f"{'case':<{width}}  {'stock ms':>8}" + "".join(f"  {lv:>{cell}}" for lv in by_level)
    print(f"{columns}\n{'-' * len(columns)}")
    for case in cases:
        got = [rows.get(case) for rows in by_level.values()]
        stock_ms = [r["stock_ms"] for r in got if r and r["stock_ms"] is not None]
        names = wrap_name(case, width)
        line = f"{names[0]:<{width}}  " + (
            f"{ms(statistics.median(stock_ms)):>8}" if stock_ms else f"{'-':>8}"
        )
        for r in got:
            value = (
                f"{ms(r['ext_ms'])} ({times(r['speedup'])})"
                if r and r["ext_ms"] is not None
                else "-"
            )
            line += f"  {value:>{cell}}"
        print("\n".join([line, *names[1:]]))


def main():
    args = parse_args()
    # SIGTERM unwinds like Ctrl-C, so the busy processes of --contention are killed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.one_case:
        sys.exit(run_one_case(args))
    start = Moment.now()
    if args.start_load:  # a --simd level: the load before its first level ran
        start = replace(start, load=tuple(args.start_load))
    if args.simd:
        sys.exit(1 if run_simd_levels(args, start) else 0)
    cfg = FULL if args.full else DEFAULT
    cases = [c for c in CASES if args.filter in c.name and (c.contended or not args.contention)]
    if not cases:
        sys.exit(f"no case matches --filter {args.filter!r}")
    by_device = {
        device: [
            c for c in cases if device in c.devices and (c.default or args.full or device != "cpu")
        ]
        for device in select_devices(args.device)
    }
    by_device = {device: on_device for device, on_device in by_device.items() if on_device}
    print_header(args, cfg, by_device, start, others_busy_now())
    # The host's work per tensor: once, on the CPU (as it is on any device), beside the CPU rows.
    cost = host_cost() if "cpu" in by_device and not args.contention else None
    results, written = {}, []
    for device, on_device in by_device.items():
        rows, bandwidth = run_device(device, on_device, cfg, args.contention)
        end = Moment.now()
        base = results_base(device, simd_level(device), args.contention, start.date)
        stem = args.simd_child or new_stem(args.out, base)  # a --simd level runs on the CPU alone
        machine = machine_info(device, args, bandwidth, cfg, start, end)
        if device == "cpu":
            machine["host_cost"] = cost
        written.append((device, *write_results(args.out, stem, rows, machine)))
        results[device] = rows, bandwidth
    print_tables(results)
    if cost:
        print_host_cost(cost)
    if not args.simd_child:  # a --simd run prints it once, under its comparison
        print(f"\n{LEGEND}")
    all_rows = [row for rows, _ in results.values() for row in rows]
    failed = sum(1 for r in all_rows if r.error)
    print_summary(start, end, f"{len(all_rows)} rows, {failed} failed")
    if not args.simd_child:  # a --simd run prints its levels' at its end
        print_paths(written)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
