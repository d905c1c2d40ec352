"""The torch.nn.init API on compiled kernels: same names, signatures, defaults, errors, warnings
and return values as stock, with values from the counter-based RNG (docs/rng-contract.md).

Argument checks, fans, gains, warnings and __torch_function__ handling follow stock
torch/nn/init.py line for line; only the element writes differ.
"""

import math
import warnings
from collections.abc import Callable, Sequence
from types import FunctionType, SimpleNamespace
from typing import TypeVar

import torch
from torch import Tensor
from torch.nn import init as _stock_module
from torch.nn.init import _calculate_correct_fan, _calculate_fan_in_and_fan_out, calculate_gain
from typing_extensions import ParamSpec

from . import _dispatch
from ._dispatch import InitValueError

__all__ = [
    "calculate_gain",
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
    # Deprecated aliases (for backward compatibility)
    "uniform",
    "normal",
    "constant",
    "eye",
    "dirac",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "orthogonal",
    "sparse",
]


def original(function: FunctionType) -> FunctionType:
    """A copy of `function` that runs its own code even while patch() swaps the code of
    `function` itself for a trampoline into ours."""
    copy = FunctionType(
        function.__code__,
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__dict__.update(function.__dict__)
    copy.__doc__ = function.__doc__
    return copy


# Stock's functions, as copies: our fallbacks run stock's code whether or not it is patched.
_stock = SimpleNamespace(
    **{
        name: original(value) if isinstance(value, FunctionType) else value
        for name, value in vars(_stock_module).items()
    }
)

# TorchScript can't compile our functions (they dispatch in Python). Where stock's function is
# scriptable, a scripted call of ours runs stock's, compiled by TorchScript from these names
# (module globals: patch() leaves this module's names alone).
_script_uniform_ = _stock.uniform_
_script_normal_ = _stock.normal_
_script_constant_ = _stock.constant_
_script_ones_ = _stock.ones_
_script_zeros_ = _stock.zeros_
_script_xavier_uniform_ = _stock.xavier_uniform_
_script_xavier_normal_ = _stock.xavier_normal_

_R = TypeVar("_R")
_P = ParamSpec("_P")
# Stock's annotation types, so signatures compare equal.
_NonlinearityType = getattr(_stock, "_NonlinearityType", str)
_FanMode = getattr(_stock, "_FanMode", str)


def uniform_(
    tensor: Tensor,
    a: float = 0.0,
    b: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the uniform distribution
    :math:`\mathcal{U}(a, b)`. See :func:`torch.nn.init.uniform_`."""
    if torch.jit.is_scripting():
        return _script_uniform_(tensor, a, b, generator)
    if torch.overrides.has_torch_function_variadic(tensor):
        return torch.overrides.handle_torch_function(
            uniform_, (tensor,), tensor=tensor, a=a, b=b, generator=generator
        )
    return _dispatch.uniform(tensor, a, b, generator)


def normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the normal distribution
    :math:`\mathcal{N}(\text{mean}, \text{std}^2)`. See :func:`torch.nn.init.normal_`."""
    if torch.jit.is_scripting():
        return _script_normal_(tensor, mean, std, generator)
    if torch.overrides.has_torch_function_variadic(tensor):
        return torch.overrides.handle_torch_function(
            normal_, (tensor,), tensor=tensor, mean=mean, std=std, generator=generator
        )
    return _dispatch.normal(tensor, mean, std, generator)


def trunc_normal_(
    tensor: Tensor,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input Tensor with values drawn from the normal distribution
    :math:`\mathcal{N}(\text{mean}, \text{std}^2)` truncated to :math:`[a, b]`: exact in every
    regime (inversion; far tails by rejection), one pass, and values rounded to the tensor's dtype
    stay in [a, b]. See :func:`torch.nn.init.trunc_normal_`."""
    if (mean < a - 2 * std) or (mean > b + 2 * std):
        warnings.warn(
            "mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
            "The distribution of values may be incorrect.",
            stacklevel=2,
        )

    def stock_fill() -> Tensor:
        with warnings.catch_warnings():  # warned above
            warnings.filterwarnings("ignore", message="mean is more than 2 std")
            return _stock.trunc_normal_(tensor, mean, std, a, b, generator=generator)

    return _dispatch.elementwise(tensor, "trunc_normal", (mean, std, a, b), generator, stock_fill)


def constant_(tensor: Tensor, val: float) -> Tensor:
    r"""Fill the input Tensor with the value :math:`\text{val}`.
    See :func:`torch.nn.init.constant_`."""
    if torch.jit.is_scripting():
        return _script_constant_(tensor, val)
    if torch.overrides.has_torch_function_variadic(tensor):
        return torch.overrides.handle_torch_function(constant_, (tensor,), tensor=tensor, val=val)
    return _dispatch.fill(tensor, val, _stock.constant_, val)


def ones_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `1`. See :func:`torch.nn.init.ones_`."""
    if torch.jit.is_scripting():
        return _script_ones_(tensor)
    return _dispatch.fill(tensor, 1.0, _stock.ones_)


def zeros_(tensor: Tensor) -> Tensor:
    r"""Fill the input Tensor with the scalar value `0`. See :func:`torch.nn.init.zeros_`."""
    if torch.jit.is_scripting():
        return _script_zeros_(tensor)
    return _dispatch.fill(tensor, 0, _stock.zeros_)


def eye_(tensor: Tensor) -> Tensor:
    r"""Fill the 2-dimensional input `Tensor` with the identity matrix.
    See :func:`torch.nn.init.eye_`."""
    if tensor.ndimension() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _dispatch.eye(tensor, _stock.eye_)


def dirac_(tensor: Tensor, groups: int = 1) -> Tensor:
    r"""Fill the {3, 4, 5}-dimensional input `Tensor` with the Dirac delta function.
    See :func:`torch.nn.init.dirac_`."""
    dimensions = tensor.ndimension()
    if dimensions not in [3, 4, 5]:
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if not isinstance(groups, int):
        raise InitValueError(f"dirac_: groups must be a positive integer, got groups={groups}")
    return _dispatch.dirac(tensor, groups, _stock.dirac_)


def _xavier_std(tensor: Tensor, gain: float) -> float:
    """The standard deviation of the Xavier fills, computed as stock computes it."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return gain * math.sqrt(2.0 / float(fan_in + fan_out))


def _kaiming_std(tensor: Tensor, a: float, mode: str, nonlinearity: str) -> float:
    """The standard deviation of the Kaiming fills, computed as stock computes it."""
    fan = _calculate_correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan)


def xavier_uniform_(
    tensor: Tensor,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Xavier (Glorot) uniform distribution.
    See :func:`torch.nn.init.xavier_uniform_`."""
    if torch.jit.is_scripting():
        return _script_xavier_uniform_(tensor, gain, generator)
    a = math.sqrt(3.0) * _xavier_std(tensor, gain)  # the uniform bounds of that std
    return _dispatch.uniform(tensor, -a, a, generator)


def xavier_normal_(
    tensor: Tensor,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Xavier (Glorot) normal distribution.
    See :func:`torch.nn.init.xavier_normal_`."""
    if torch.jit.is_scripting():
        return _script_xavier_normal_(tensor, gain, generator)
    return _dispatch.normal(tensor, 0.0, _xavier_std(tensor, gain), generator)


def kaiming_uniform_(
    tensor: Tensor,
    a: float = 0,
    mode: _FanMode = "fan_in",
    nonlinearity: _NonlinearityType = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Kaiming (He) uniform distribution.
    See :func:`torch.nn.init.kaiming_uniform_`."""
    if torch.overrides.has_torch_function_variadic(tensor):
        return torch.overrides.handle_torch_function(
            kaiming_uniform_,
            (tensor,),
            tensor=tensor,
            a=a,
            mode=mode,
            nonlinearity=nonlinearity,
            generator=generator,
        )
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)  # that std's bounds
    return _dispatch.uniform(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Tensor,
    a: float = 0,
    mode: _FanMode = "fan_in",
    nonlinearity: _NonlinearityType = "leaky_relu",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with values from a Kaiming (He) normal distribution.
    See :func:`torch.nn.init.kaiming_normal_`."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=2)
        return tensor
    return _dispatch.normal(tensor, 0, _kaiming_std(tensor, a, mode, nonlinearity), generator)


def orthogonal_(
    tensor: Tensor,
    gain: float = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the input `Tensor` with a (semi) orthogonal matrix, Haar-distributed; trailing
    dimensions are flattened. Householder reflectors from fresh Gaussian vectors (Stewart 1980),
    no QR factorization; float16/bfloat16 are computed in float32.
    See :func:`torch.nn.init.orthogonal_`."""
    if tensor.ndimension() < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    return _dispatch.orthogonal(tensor, gain, generator, _stock.orthogonal_)


def _batch_members(tensors: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """The matrices orthogonal_batch_ fills, after checking that they can share one batch."""
    if isinstance(tensors, Tensor):
        if tensors.ndimension() < 3:
            raise InitValueError(
                "orthogonal_batch_: a single tensor in `tensors` needs a batch dimension and "
                f"2 or more matrix dimensions, got shape {tuple(tensors.shape)}"
            )
        return list(tensors)
    members = list(tensors)
    if not members:
        raise InitValueError("orthogonal_batch_: `tensors` is empty")
    first = members[0]
    if first.ndimension() < 2:
        raise InitValueError(
            "orthogonal_batch_: `tensors` must have 2 or more dimensions, "
            f"got shape {tuple(first.shape)}"
        )
    for i, t in enumerate(members):
        if (t.shape, t.dtype, t.device) != (first.shape, first.dtype, first.device):
            raise InitValueError(
                "orthogonal_batch_: `tensors` must share shape, dtype and device; "
                f"tensors[0] is {tuple(first.shape)} {first.dtype} on {first.device}, "
                f"tensors[{i}] is {tuple(t.shape)} {t.dtype} on {t.device}"
            )
    return members


def orthogonal_batch_(
    tensors: Tensor | Sequence[Tensor],
    gain: float = 1,
    generator: torch.Generator | None = None,
) -> Tensor | Sequence[Tensor]:
    r"""Fill each of same-shape, same-dtype, same-device `tensors` (a sequence, or one tensor
    whose dim 0 is the batch) with an independent (semi) orthogonal matrix, as
    :func:`orthogonal_` would, in one batched computation. Returns `tensors`."""
    members = _batch_members(tensors)
    return _dispatch.orthogonal_batch(tensors, members, gain, generator, _stock.orthogonal_)


def sparse_(
    tensor: Tensor,
    sparsity: float,
    std: float = 0.01,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Fill the 2D input `Tensor` as a sparse matrix: exactly ``ceil(sparsity * rows)`` zeros in
    every column at uniformly random rows, the rest from :math:`\mathcal{N}(0, \text{std}^2)`,
    all drawn from `generator`. See :func:`torch.nn.init.sparse_`."""
    if tensor.ndimension() != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    return _dispatch.sparse(tensor, sparsity, std, generator, _stock.sparse_)


# for backward compatibility
def _make_deprecate(meth: Callable[_P, _R]) -> Callable[_P, _R]:
    new_name = meth.__name__
    old_name = new_name[:-1]

    def deprecated_init(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        warnings.warn(
            f"`nn.init.{old_name}` is now deprecated in favor of `nn.init.{new_name}`.",
            FutureWarning,
            stacklevel=2,
        )
        return meth(*args, **kwargs)

    deprecated_init.__doc__ = rf"""
    {old_name}(...)

    .. warning::
        This method is now deprecated in favor of :func:`torch.nn.init.{new_name}`.

    See :func:`~torch.nn.init.{new_name}` for details."""
    deprecated_init.__name__ = old_name
    return deprecated_init


uniform = _make_deprecate(uniform_)
normal = _make_deprecate(normal_)
constant = _make_deprecate(constant_)
eye = _make_deprecate(eye_)
dirac = _make_deprecate(dirac_)
xavier_uniform = _make_deprecate(xavier_uniform_)
xavier_normal = _make_deprecate(xavier_normal_)
kaiming_uniform = _make_deprecate(kaiming_uniform_)
kaiming_normal = _make_deprecate(kaiming_normal_)
orthogonal = _make_deprecate(orthogonal_)
sparse = _make_deprecate(sparse_)
