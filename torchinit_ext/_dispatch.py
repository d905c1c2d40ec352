"""Routes each fill to the compiled op when one exists for the tensor, else to stock torch.

The compiled ops (torch.ops.torchinit_ext.*) run on plain tensors and Parameters on devices that
have kernels. Tensor subclasses (DTensor, FakeTensor, ...), other devices and complex dtypes
take stock torch's path, so every tensor stock accepts still works.
"""

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loading it registers torch.ops.torchinit_ext)

ops = torch.ops.torchinit_ext

_PLAIN_TYPES = (Tensor, torch.nn.Parameter)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _devices_with_kernels() -> frozenset:
    name = "torchinit_ext::uniform_"
    return frozenset(
        device
        for device, key in (("cpu", "CPU"), ("cuda", "CUDA"), ("meta", "Meta"))
        if torch._C._dispatch_has_kernel_for_dispatch_key(name, key)
    )


COMPILED_DEVICES = _devices_with_kernels()


class InitValueError(ValueError, RuntimeError):
    """A bad argument value. Also a RuntimeError, which stock torch raises for most of these."""


class InitTypeError(TypeError, NotImplementedError):
    """A tensor of the wrong dtype. Also a NotImplementedError, as stock torch raises."""


def compiled(tensor: Tensor) -> bool:
    """Whether `tensor` takes the compiled kernels."""
    return type(tensor) in _PLAIN_TYPES and tensor.device.type in COMPILED_DEVICES


def call(op, tensor: Tensor, *args) -> Tensor:
    """Runs a compiled op on `tensor` without autograd and returns the tensor; argument errors
    are raised as Init*Error."""
    try:
        with torch.no_grad():
            op(tensor, *args)
        return tensor
    except ValueError as e:
        raise InitValueError(str(e)) from None
    except TypeError as e:
        raise InitTypeError(str(e)) from None


def uniform(tensor: Tensor, a: float, b: float, generator) -> Tensor:
    if compiled(tensor) and not tensor.is_complex():
        return call(ops.uniform_, tensor, a, b, generator)
    with torch.no_grad():
        return tensor.uniform_(a, b, generator=generator)


def normal(tensor: Tensor, mean: float, std: float, generator) -> Tensor:
    if compiled(tensor) and not tensor.is_complex():
        return call(ops.normal_, tensor, mean, std, generator)
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=generator)


def fill(tensor: Tensor, val) -> Tensor:
    if compiled(tensor) and not isinstance(val, Tensor):
        return call(ops.constant_, tensor, val)
    with torch.no_grad():
        return tensor.fill_(val)


def is_float(tensor: Tensor) -> bool:
    return tensor.dtype in _FLOAT_DTYPES
