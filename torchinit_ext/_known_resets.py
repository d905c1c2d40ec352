"""torch.nn's own resets as the fills they make, so that materialize() can queue them without
running each reset's Python code through the init functions: a model's host work then grows with
its tensors by less than stock's reset loop does.

`fills(module, table())` gives, for a module whose reset is one of torch.nn's below (its class's
reset_parameters or _reset_parameters is torch.nn's function itself, so subclasses that keep it
count, and one replaced by anyone does not; and the init functions it calls are torch's own),
the writes that reset makes, in its order:
(tensor, law, params), where law is a fill_many_ law or "zero" (an integer tensor's zero_()). It
gives None where anything is unusual (zero-element tensors, padding rows, lazy modules, a
reset_running_stats of another class, a torch newer than those tested): the reset then runs.
tests/test_known_resets.py checks each entry against its reset, bit for bit, on every torch CI runs.
"""

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .init import _kaiming_std, _xavier_std

# Entries mirror torch.nn's resets of these versions (checked by CI on 2.13, 2.14 and 2.15; the
# device machine has 2.11): a later torch may change a reset, so it runs them.
_TESTED_TORCH = (2, 15)

Fill = tuple[Tensor, str, tuple]

# Linear's and the convolutions' weight: kaiming_uniform_(weight, a=sqrt(5)).
_LAYER_WEIGHT_A = math.sqrt(5)


def _layer(module: nn.Module) -> list[Fill] | None:
    """nn.Linear, and the convolutions (_ConvNd): kaiming_uniform_(weight, a=sqrt(5)), then the
    bias uniform in +-1/sqrt(fan_in)."""
    weight, bias = module.weight, module.bias
    if weight.numel() == 0:
        return None  # kaiming_uniform_ warns and draws nothing
    bound = math.sqrt(3.0) * _kaiming_std(weight, _LAYER_WEIGHT_A, "fan_in", "leaky_relu")
    fills = [(weight, "uniform", (-bound, bound))]
    if bias is not None:
        fan_in = torch.nn.init._calculate_fan_in_and_fan_out(weight)[0]
        bias_bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        fills.append((bias, "uniform", (-bias_bound, bias_bound)))
    return fills


def _embedding(module: nn.Embedding) -> list[Fill] | None:
    if module.padding_idx is not None:
        return None  # the padding row's write follows the fill
    return [(module.weight, "normal", (0.0, 1.0))]


def _affine(weight: Tensor | None, bias: Tensor | None) -> list[Fill]:
    """ones_(weight), then zeros_(bias), of those there are."""
    fills = [] if weight is None else [(weight, "constant", (1.0,))]
    return fills if bias is None else [*fills, (bias, "constant", (0.0,))]


def _layer_norm(module: nn.Module) -> list[Fill] | None:
    """nn.LayerNorm, nn.RMSNorm (no bias attribute)."""
    if not module.elementwise_affine:
        return []
    return _affine(module.weight, getattr(module, "bias", None))


def _group_norm(module: nn.GroupNorm) -> list[Fill] | None:
    return _affine(module.weight, module.bias) if module.affine else []


def _batch_norm(module: nn.modules.batchnorm._NormBase) -> list[Fill] | None:
    """The batch and instance norms: reset_running_stats(), then the affine parameters."""
    if type(module).reset_running_stats is not nn.modules.batchnorm._NormBase.reset_running_stats:
        return None
    fills = []
    if module.track_running_stats:
        fills = [
            (module.running_mean, "constant", (0.0,)),
            (module.running_var, "constant", (1.0,)),
            (module.num_batches_tracked, "zero", ()),
        ]
    return fills + (_affine(module.weight, module.bias) if module.affine else [])


def _attention(module: nn.MultiheadAttention) -> list[Fill] | None:
    if module._qkv_same_embed_dim:
        projections = [module.in_proj_weight]
    else:
        projections = [module.q_proj_weight, module.k_proj_weight, module.v_proj_weight]
    fills = []
    for weight in projections:
        bound = math.sqrt(3.0) * _xavier_std(weight, 1.0)
        fills.append((weight, "uniform", (-bound, bound)))
    if module.in_proj_bias is not None:
        fills += [
            (module.in_proj_bias, "constant", (0.0,)),
            (module.out_proj.bias, "constant", (0.0,)),
        ]
    for extra in (module.bias_k, module.bias_v):
        if extra is not None:
            fills.append((extra, "normal", (0.0, _xavier_std(extra, 1.0))))
    return fills


# What the resets call, as torch.nn.init had it at import (patch() keeps these objects).
_ORIGINAL = dict(vars(torch.nn.init))
_LAYER_CALLS = ("kaiming_uniform_", "uniform_", "_calculate_fan_in_and_fan_out")
_AFFINE_CALLS = ("ones_", "zeros_")


def _known() -> dict[Callable, tuple[Callable[[nn.Module], list[Fill] | None], tuple[str, ...]]]:
    """Each known reset: its fills, and the names of the init functions it calls."""
    modules = nn.modules
    return {
        modules.linear.Linear.reset_parameters: (_layer, _LAYER_CALLS),
        modules.conv._ConvNd.reset_parameters: (_layer, _LAYER_CALLS),
        modules.sparse.Embedding.reset_parameters: (_embedding, ("normal_",)),
        modules.normalization.LayerNorm.reset_parameters: (_layer_norm, _AFFINE_CALLS),
        modules.normalization.RMSNorm.reset_parameters: (_layer_norm, ("ones_",)),
        modules.normalization.GroupNorm.reset_parameters: (_group_norm, _AFFINE_CALLS),
        modules.batchnorm._NormBase.reset_parameters: (_batch_norm, _AFFINE_CALLS),
        modules.activation.MultiheadAttention._reset_parameters: (
            _attention,
            ("xavier_uniform_", "constant_", "xavier_normal_"),
        ),
    }


_KNOWN = (
    _known()
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) <= _TESTED_TORCH
    else {}
)


def _called(reset: Callable, name: str):
    """The function `reset` calls as `name` now: a global of its module, or `init.<name>`."""
    names = reset.__globals__
    return names[name] if name in names else getattr(names["init"], name, None)


def table() -> dict[Callable, Callable[[nn.Module], list[Fill] | None]]:
    """The known resets whose init functions are torch's own now, for one materialize(): one
    that would call a function swapped in since (transformers' no_init_weights swaps them for
    no-ops) runs instead."""
    return {
        reset: law
        for reset, (law, calls) in _KNOWN.items()
        if all(_called(reset, name) is _ORIGINAL.get(name) for name in calls)
    }


def reset_of(module: nn.Module) -> Callable | None:
    """The function materialize() runs as `module`'s reset (as model._reset finds it), unbound."""
    for method in ("reset_parameters", "_reset_parameters"):
        if method in module.__dict__:
            return None  # set on the instance: not torch.nn's
        reset = getattr(type(module), method, None)
        if callable(reset):
            return reset
    return None


def fills(module: nn.Module, known: dict) -> list[Fill] | None:
    """The writes of `module`'s reset, in order, when it is one of `known` (table()); else
    None."""
    law = known.get(reset_of(module))
    return None if law is None else law(module)
