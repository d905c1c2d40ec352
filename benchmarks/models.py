"""The model rows: a GPT-2 style model built stock's way against ext's (ModelCase), real
libraries' models from tests/helpers/real_models.py (RealModelCase), and the host cost of
re-initializing a model in place."""

import math
import sys
import time
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

import torchinit_ext as ext
from benchmarks.timing import Prepared, allocate_and_fill, fill_each, tensor_specs
from tests.helpers.real_models import BENCH_MODELS, installed


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

        def reset_on_device(model):
            model = model.to_empty(device=device)
            reset_every_module(model)
            return model

        def patched():
            with ext.patched(), torch.device(device):
                return GPT(**config)

        built = eager() if self.stock == "reset" else None
        model_on_meta = meta()
        materialize = partial(ext.materialize, device=device)
        if device == "cuda":
            # The meta construction before the clock starts: materialize() and stock's to_empty
            # + resets timed alone. No floor call, where a fill_ per tensor would time some 600
            # launches, not memory: run_case takes writing the parameters at fill bandwidth.
            from_meta = {
                "meta_reset": Prepared(meta, reset_on_device),
                "materialize": Prepared(meta, materialize),
            }
            floor = None
        else:
            from_meta = {
                "meta_reset": lambda: reset_on_device(meta()),
                "materialize": lambda: materialize(meta()),
            }
            floor = (
                partial(fill_each, [*built.parameters(), *built.buffers()])
                if built is not None
                else partial(allocate_and_fill, tensor_specs(model_on_meta), device)
            )
        ways = {
            "eager": eager,
            "patched": patched,
            **from_meta,
            "reset": partial(reset_every_module, built),
            "materialize_in_place": partial(ext.materialize, built),
        }
        return ways[self.stock], ways[self.ext], floor, list(model_on_meta.parameters())


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


# The real-model rows' builders; a library that is not installed has no rows.
REAL_MODELS = {name: spec.build for name, spec in installed(BENCH_MODELS).items()}
