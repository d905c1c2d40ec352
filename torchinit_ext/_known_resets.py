"""torch.nn's own resets as the fills they make, so that materialize() can queue them without
running each reset's Python code through the init functions: a model's host work then grows with
its tensors by less than stock's reset loop does.

`fills(module, Resets())` gives, for a module whose reset is one of torch.nn's below (its class's
reset_parameters or _reset_parameters is torch.nn's function itself, so subclasses that keep it
count, and one replaced by anyone does not; and the init functions it calls are torch's own),
the writes that reset makes, in its order:
(tensor, law, params), where law is a fill_many_ law or "zero" (an integer tensor's zero_()). It
gives [] for a module with no reset at all, and None where the reset must run: anything unusual
(zero-element tensors, padding rows, lazy modules, a reset_running_stats of another class, a
torch newer than those tested). tests/test_known_resets.py checks each entry against its reset,
bit for bit, on every torch CI runs. deferred_init() records them the same way (`called`):
tests/test_deferred_known_resets.py checks its records against running the resets."""

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .init import _xavier_std

# Entries mirror torch.nn's resets of these versions (checked by CI on 2.13, 2.14 and 2.15; the
# device machine has 2.11): a later torch may change a reset, so it runs them.
_TESTED_TORCH = (2, 15)

Fill = tuple[Tensor, str, tuple]

# Linear's and the convolutions' weight: kaiming_uniform_(weight, a=sqrt(5)), whose gain is this
# (computed as kaiming_uniform_ computes it).
_LAYER_GAIN = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
_SQRT3 = math.sqrt(3.0)


def _layer(module: nn.Module) -> list[Fill] | None:
    """nn.Linear, and the convolutions (_ConvNd): kaiming_uniform_(weight, a=sqrt(5)), then the
    bias uniform in +-1/sqrt(fan_in); each bound computed as the reset computes it."""
    parameters = module._parameters
    weight, bias = parameters.get("weight"), parameters.get("bias")
    if weight is None or weight.ndim < 2 or not weight.numel():
        return None  # a parametrization's, or kaiming_uniform_'s warning for zero elements
    fan_in = math.prod(weight.shape[1:])  # _calculate_fan_in_and_fan_out's
    root = math.sqrt(fan_in)
    bound = _SQRT3 * (_LAYER_GAIN / root)
    fills = [(weight, "uniform", (-bound, bound))]
    if bias is not None:
        fills.append((bias, "uniform", (-1 / root, 1 / root)))
    return fills


def _embedding(module: nn.Embedding) -> list[Fill] | None:
    if module.padding_idx is not None:
        return None  # the padding row's write follows the fill
    return [(module._parameters["weight"], "normal", (0.0, 1.0))]


def _affine(weight: Tensor | None, bias: Tensor | None) -> list[Fill]:
    """ones_(weight), then zeros_(bias), of those there are."""
    fills = [] if weight is None else [(weight, "constant", (1.0,))]
    return fills if bias is None else [*fills, (bias, "constant", (0.0,))]


def _layer_norm(module: nn.Module) -> list[Fill] | None:
    """nn.LayerNorm, nn.RMSNorm (no bias slot)."""
    if not module.elementwise_affine:
        return []
    parameters = module._parameters
    return _affine(parameters["weight"], parameters.get("bias"))


def _group_norm(module: nn.GroupNorm) -> list[Fill] | None:
    parameters = module._parameters
    return _affine(parameters["weight"], parameters["bias"]) if module.affine else []


def _batch_norm(module: nn.modules.batchnorm._NormBase) -> list[Fill] | None:
    """The batch and instance norms: reset_running_stats(), then the affine parameters."""
    if type(module).reset_running_stats is not nn.modules.batchnorm._NormBase.reset_running_stats:
        return None
    fills = []
    if module.track_running_stats:
        buffers = module._buffers
        fills = [
            (buffers["running_mean"], "constant", (0.0,)),
            (buffers["running_var"], "constant", (1.0,)),
            (buffers["num_batches_tracked"], "zero", ()),
        ]
    parameters = module._parameters
    return fills + (_affine(parameters["weight"], parameters["bias"]) if module.affine else [])


def _attention(module: nn.MultiheadAttention) -> list[Fill] | None:
    parameters = module._parameters
    if module._qkv_same_embed_dim:
        projections = [parameters["in_proj_weight"]]
    else:
        projections = [parameters[f"{x}_proj_weight"] for x in "qkv"]
    fills = []
    for weight in projections:
        bound = _SQRT3 * _xavier_std(weight, 1.0)
        fills.append((weight, "uniform", (-bound, bound)))
    if parameters["in_proj_bias"] is not None:
        fills += [
            (parameters["in_proj_bias"], "constant", (0.0,)),
            (module.out_proj.bias, "constant", (0.0,)),
        ]
    for extra in (parameters.get("bias_k"), parameters.get("bias_v")):
        if extra is not None:
            fills.append((extra, "normal", (0.0, _xavier_std(extra, 1.0))))
    return fills


# What the resets call, as torch.nn.init had it at import (patch() keeps these objects).
_ORIGINAL = dict(vars(torch.nn.init))
_LAYER_CALLS = ("kaiming_uniform_", "uniform_", "_calculate_fan_in_and_fan_out")
_AFFINE_CALLS = ("ones_", "zeros_")


class Known(NamedTuple):
    """A known reset: the class that defines it, its fills, and the names of the init functions
    it calls."""

    owner: type
    law: Callable[[nn.Module], list[Fill] | None]
    calls: tuple[str, ...]


def _known() -> dict[Callable, Known]:
    """Each known reset, by its function."""
    modules = nn.modules
    entries = (
        (modules.linear.Linear, "reset_parameters", _layer, _LAYER_CALLS),
        (modules.conv._ConvNd, "reset_parameters", _layer, _LAYER_CALLS),
        (modules.sparse.Embedding, "reset_parameters", _embedding, ("normal_",)),
        (modules.normalization.LayerNorm, "reset_parameters", _layer_norm, _AFFINE_CALLS),
        (modules.normalization.RMSNorm, "reset_parameters", _layer_norm, ("ones_",)),
        (modules.normalization.GroupNorm, "reset_parameters", _group_norm, _AFFINE_CALLS),
        (modules.batchnorm._NormBase, "reset_parameters", _batch_norm, _AFFINE_CALLS),
        (
            modules.activation.MultiheadAttention,
            "_reset_parameters",
            _attention,
            ("xavier_uniform_", "constant_", "xavier_normal_"),
        ),
    )
    return {vars(owner)[name]: Known(owner, law, calls) for owner, name, law, calls in entries}


_KNOWN = (
    _known()
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) <= _TESTED_TORCH
    else {}
)


def _calls_torchs_own(reset: Callable, known: Known) -> bool:
    """Whether the init functions `reset` calls are torch's own now: one swapped in since
    (transformers' no_init_weights swaps them for no-ops) must be called, so the reset runs.
    What it calls as a name: a global of its module, or `init.<name>`. (One loop, no call a
    name: deferred_init() asks it of every layer it records.)"""
    names = reset.__globals__
    for name in known.calls:
        called = names[name] if name in names else getattr(names["init"], name, None)
        if called is not _ORIGINAL.get(name):
            return False
    return True


def table() -> dict[Callable, Callable[[nn.Module], list[Fill] | None]]:
    """The known resets whose init functions are torch's own now, for one materialize()."""
    return {reset: known.law for reset, known in _KNOWN.items() if _calls_torchs_own(reset, known)}


def called(reset: Callable, module: nn.Module) -> list[Fill] | None:
    """The writes of the known reset `reset` (a function of _KNOWN) called on `module`, in order,
    when its init functions are torch's own now; None when it must run. (deferred_init() records
    them in one step: _record.)"""
    known = _KNOWN.get(reset)
    if known is None or not _calls_torchs_own(reset, known):
        return None
    return _fills_of(known.law, module)


def _fills_of(law: Callable[[nn.Module], list[Fill] | None], module: nn.Module):
    try:
        return law(module)
    except KeyError:
        return None  # a tensor not in its slot (a parametrization's property): the reset runs


# The attribute that names the known reset a function stands for: deferred_init() puts stand-ins
# on torch.nn's classes while it records (_record._recording_reset), which run the reset when not
# recording; one that someone saved then and restored since is still that reset.
STANDS_FOR = "_torchinit_ext_stands_for"

# A module's reset: the first of these it has, as materialize() looks for it.
RESET_METHODS = ("reset_parameters", "_reset_parameters")


@dataclasses.dataclass(frozen=True)
class Reset:
    """What materialize() runs as the reset of a module class's modules."""

    method: Callable | None  # its reset_parameters or _reset_parameters, unbound; None: none
    law: Callable[[nn.Module], list[Fill] | None] | None  # its fills, when a known reset


class Resets(dict):
    """Each module class's Reset, looked up once per class: for one materialize(), as the known
    resets (table()) are those whose init functions are torch's own then."""

    def __init__(self):
        super().__init__()
        self.known = table()

    def __missing__(self, cls: type) -> Reset:
        candidates = (getattr(cls, name, None) for name in RESET_METHODS)
        method = next((method for method in candidates if callable(method)), None)
        # A recording's stand-in for a known reset runs it: it is that reset.
        known = getattr(method, STANDS_FOR, method)
        reset = self[cls] = Reset(method, self.known.get(known))
        return reset


def fills(module: nn.Module, resets: Resets) -> list[Fill] | None:
    """The writes of `module`'s reset, in order, when it is a known one; [] when it has none;
    None when it must run."""
    attributes = module.__dict__
    if RESET_METHODS[0] in attributes or RESET_METHODS[1] in attributes:
        return None  # set on the instance: not torch.nn's
    reset = resets[module.__class__]
    if reset.law is None:
        return [] if reset.method is None else None
    return _fills_of(reset.law, module)
