"""Sharded init on torch.distributed DTensors: each rank writes only its local shard, with exactly
the values that slice has in the single-device result, and with no communication.

Elementwise fills number a shard's elements by their index in the full tensor (fill_many_'s
shard starts), so a rank generates only its own values. Other fills (orthogonal_, sparse_, eye_,
dirac_) build the full tensor identically on every rank and keep the local slice. Keys come from
the generator as for a plain tensor: ranks whose generators agree (the usual torch.manual_seed on
every rank) agree on every value.
"""

from collections.abc import Callable

import torch
from torch import Tensor

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # torch built without distributed support
    DTensor = None


# The tensor types that are plain strided tensors, neither DTensors nor other subclasses.
PLAIN_TYPES = (Tensor, torch.nn.Parameter)


def is_dtensor(tensor: Tensor) -> bool:
    return type(tensor) not in PLAIN_TYPES and DTensor is not None and isinstance(tensor, DTensor)


def local_tensor(tensor: Tensor) -> Tensor:
    """The shard this rank holds (plain tensors are their own shard)."""
    if type(tensor) in PLAIN_TYPES:  # most calls: no isinstance needed
        return tensor
    return tensor._local_tensor if is_dtensor(tensor) else tensor


def shard(tensor: Tensor) -> tuple[list[int], list[int]] | None:
    """(full sizes, shard starts) of this rank's shard within the full tensor, or None when the
    shard is not one rectangular piece of it (placements other than Shard and Replicate)."""
    if not is_dtensor(tensor):
        return list(tensor.shape), [0] * tensor.dim()
    if not all(type(p) in (Shard, Replicate) for p in tensor.placements):
        return None
    _, starts = compute_local_shape_and_global_offset(
        tensor.shape, tensor.device_mesh, tensor.placements
    )
    return list(tensor.shape), list(starts)


def fill_from_full(tensor: Tensor, fill_full: Callable[[Tensor], object]) -> Tensor:
    """Fills DTensor `tensor` with its slice of fill_full(full), where full is a plain tensor of
    the global shape on the local device, filled identically on every rank."""
    local = tensor._local_tensor
    if local.is_meta:
        return tensor
    with torch.no_grad():
        full = torch.empty(tensor.shape, dtype=tensor.dtype, device=local.device)
        fill_full(full)
        copy_from_full(tensor, full)
    return tensor


def copy_from_full(tensor: Tensor, full: Tensor) -> None:
    """Copies into DTensor `tensor` its slice of `full`, a plain tensor of the global shape on
    the local device, the same on every rank."""
    with torch.no_grad():
        shard = distribute_tensor(
            full, tensor.device_mesh, tensor.placements, src_data_rank=None
        ).to_local()
        tensor._local_tensor.copy_(shard)
