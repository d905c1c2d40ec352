"""Routes each fill to the compiled op when one exists for the tensor, else to stock torch.

The compiled ops (torch.ops.torchinit_ext.*) run on plain strided tensors and Parameters of the
dtypes they write, on devices that have kernels. Everything else (tensor subclasses such as
DTensor or FakeTensor, sparse, nested and quantized tensors, other devices and dtypes) takes
stock torch's path, so every tensor stock accepts still works, with stock's values and errors.
"""

import functools
import threading
from collections.abc import Callable

import torch
from torch import Tensor
from torch.compiler import is_dynamo_compiling
from torch.utils._python_dispatch import TorchDispatchMode

from . import _extension, _sharded

_C = _extension.load()  # loading it registers torch.ops.torchinit_ext

ops = torch.ops.torchinit_ext
aten = torch.ops.aten

# The op table (csrc/plan/op_table.h): (name, schema, kind, law) of every op, kind one of "law"
# (an elementwise law, which fill_many_ also takes by name), "whole" (a fill that is not
# elementwise), "batch" (fill_many_) and "helper" (writes nothing).
OP_TABLE = tuple(_C.op_table())
# The elementwise laws' ops by law, and the fills that are not elementwise.
LAW_OPS = {law: getattr(ops, name).default for name, _, kind, law in OP_TABLE if kind == "law"}
WHOLE_FILLS = frozenset(
    getattr(ops, name).default for name, _, kind, _ in OP_TABLE if kind == "whole"
)
# Stock's in-place fills that write one of the laws: deferred_init() batches them as it does
# ours, and patch() gives the random ones, as Tensor methods, the compiled fills.
STOCK_LAW_OPS = {
    aten.uniform_.default: "uniform",
    aten.normal_.default: "normal",
    aten.fill_.Scalar: "constant",
    aten.zero_.default: "constant",
}


def law_parameters(op) -> tuple[str, ...]:
    """The names of the law's parameters among `op`'s arguments: those after the tensor, but
    the generator (fill_many_'s params, in order)."""
    return tuple(a.name for a in op._schema.arguments[1:] if a.name != "generator")


# The dtypes of the random fills, and those that constant_, eye_ and dirac_ write.
FLOAT_DTYPES = frozenset(_C.float_dtypes())
FILL_DTYPES = frozenset(_C.fill_dtypes())
# The device types with kernels: the CPU, CUDA if it was built, meta.
COMPILED_DEVICES = frozenset(_C.compiled_devices())


class UncompiledMode(TorchDispatchMode):
    """A dispatch mode whose __torch_dispatch__ torch leaves unwrapped. The wrapper it gives
    others, torch._disable_dynamo (kept out of torch.compile's tracing, which never runs these
    modes: deferred_init() and materialize() do), imports torch._dynamo at the first op, 0.35 to
    1 s, more than a small model's whole build, and costs ~1 us an op after."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False


class InitValueError(ValueError, RuntimeError):
    """A bad argument value. Also a RuntimeError, which stock torch raises for most of these."""


class InitTypeError(TypeError, NotImplementedError):
    """A tensor of the wrong dtype. Also a NotImplementedError, as stock torch raises."""


def compiled(tensor: Tensor, dtypes: frozenset = FLOAT_DTYPES) -> bool:
    """Whether `tensor` takes the compiled kernels of a fill that writes `dtypes` (FLOAT_DTYPES
    or FILL_DTYPES): a plain Tensor or Parameter, strided, not nested, of those dtypes, on a
    device with kernels. _C decides, as for its lean entries; dynamo, which cannot trace into
    _C, traces the same test spelled out (tests/test_op_table.py checks that they agree)."""
    if is_dynamo_compiling():
        return (
            type(tensor) in _sharded.PLAIN_TYPES
            and tensor.dtype in dtypes
            and tensor.layout == torch.strided
            and tensor.device.type in COMPILED_DEVICES
            and not tensor.is_nested
        )
    return _C.compiled(tensor, dtypes is FILL_DTYPES)


def _without_grad(fn, *args):
    """fn(*args) with grad mode off (the ops refuse autograd). Set and restored directly: a
    `with torch.no_grad()` costs about as much as a small tensor's whole fill."""
    if not torch.is_grad_enabled():
        return fn(*args)
    torch._C._set_grad_enabled(False)
    try:
        return fn(*args)
    finally:
        torch._C._set_grad_enabled(True)


def _raising_init_errors(fn, *args):
    """fn(*args), with the ops' argument errors raised as Init*Error."""
    try:
        return fn(*args)
    except ValueError as e:
        raise InitValueError(str(e)) from None
    except TypeError as e:
        raise InitTypeError(str(e)) from None


def _run(op, tensors, *args) -> None:
    """Runs op(tensors, *args) without autograd, raising the ops' argument errors as
    Init*Error."""
    _raising_init_errors(_without_grad, op, tensors, *args)


def call(op, tensor: Tensor, *args) -> Tensor:
    """Runs a compiled op on `tensor` and returns the tensor."""
    _run(op, tensor, *args)
    return tensor


def check_arguments(op, tensor: Tensor, *args) -> None:
    """Raises the argument errors `op` would raise for a float tensor of `tensor`'s shape, by its
    meta kernel: stock's path takes the kernels' checks, with their messages."""
    call(op, torch.empty(tensor.shape, device="meta"), *args)


class _Local(threading.local):
    # The materialize() session running on this thread, if any: it defers (and, with a seed,
    # gives Philox states to) the fills of the module's parameters and buffers.
    session = None


_local = _Local()


def active_session():
    return _local.session


def set_session(session) -> None:
    _local.session = session


def elementwise(tensor: Tensor, law: str, params: tuple, generator, stock: Callable[[], Tensor]):
    """Runs an elementwise fill: in a materialize() session (deferred), on a DTensor's local
    shard, with the compiled op, or with stock's stock() when no kernel takes the tensor."""
    session = _local.session
    if session is not None and session.try_defer(tensor, law, params, generator):
        return tensor
    if _sharded.is_dtensor(tensor) and compiled(_sharded.local_tensor(tensor)):
        return _fill_dtensor(tensor, law, params, generator)
    if compiled(tensor):
        return _fill_compiled(tensor, law, params, generator)
    with torch.no_grad():
        return stock()


def _fill_compiled(tensor: Tensor, law: str, params: tuple, generator) -> Tensor:
    """The fill of a plain tensor that the compiled kernels take."""
    if law != "constant":
        return call(LAW_OPS[law], tensor, *params, generator)
    if tensor.is_inference():  # stock's fill_ would write it before refusing
        return call(ops.constant_.default, tensor, *params)
    # Stock's fill_ writes the same values, as fast at every size, and a small tensor's call costs
    # less.
    return _without_grad(tensor.fill_, params[0])


def _fill_dtensor(tensor: Tensor, law: str, params: tuple, generator) -> Tensor:
    """Fills DTensor `tensor`'s shard with its slice of the single-device values, drawing from
    the generator as the fill of a plain tensor would: where the shard is one rectangular piece,
    this rank's elements alone; otherwise (_StridedShard: FSDP2 over tensor parallel on one dim)
    the full tensor on every rank, sliced."""
    local = _sharded.local_tensor(tensor)
    if local.is_meta:  # as for a plain meta tensor: arguments checked, nothing drawn or written
        _fill_compiled(local, law, params, generator)
        return tensor
    shard = _sharded.shard(tensor)
    if shard is None:
        return _sharded.fill_from_full(
            tensor, lambda full: _fill_compiled(full, law, params, generator)
        )
    # As for a plain tensor: a constant or empty fill draws nothing from the generator.
    draws = law != "constant" and tensor.numel()
    state = _C.philox_state(local, generator) if draws else [0, 0]
    call_many([local], [law], [params], [state], [shard])
    return tensor


def call_many(tensors, laws, params, states, shards) -> None:
    """One fill_many_ over tensors[t], each the shard shards[t] = (full sizes, starts) of the
    tensor whose law laws[t] with params[t] and Philox state states[t] it takes (None: the whole
    tensor)."""
    flat_params = [float(p) for ps in params for p in (*ps, 0.0, 0.0, 0.0, 0.0)[:4]]
    flat_states = [word for state in states for word in state]
    full_sizes, starts = [], []
    if shards.count(None) < len(shards):
        for tensor, shard in zip(tensors, shards):
            full, start = shard or (tensor.shape, [0] * tensor.dim())
            full_sizes += full
            starts += start
    _run(ops.fill_many_.default, tensors, laws, flat_params, flat_states, full_sizes, starts)


def whole(tensor: Tensor, fill_full: Callable[[Tensor], object], generator):
    """Runs a fill that is not elementwise (orthogonal_, sparse_, eye_, dirac_) as
    fill_full(tensor, generator): on a DTensor, each rank builds the full tensor and keeps its
    slice; in a seeded materialize() session, with the generator of the tensor's state."""
    session = active_session()
    if session is not None:
        generator = session.generator_for(tensor, generator)
    if _sharded.is_dtensor(tensor):
        return _sharded.fill_from_full(tensor, lambda full: fill_full(full, generator))
    fill_full(tensor, generator)
    return tensor


def eye(tensor: Tensor, stock: Callable[[Tensor], object]) -> Tensor:
    """eye_, or stock(tensor) for the tensors no kernel takes."""

    def fill_full(t: Tensor, _) -> None:
        if compiled(t, FILL_DTYPES):
            call(ops.eye_, t)
        else:
            stock(t)

    return whole(tensor, fill_full, None)


def dirac(tensor: Tensor, groups: int, stock: Callable[[Tensor, int], object]) -> Tensor:
    """dirac_, or, after its argument checks, stock(tensor, groups) for the tensors no kernel
    takes."""

    def fill_full(t: Tensor, _) -> None:
        if compiled(t, FILL_DTYPES):
            call(ops.dirac_, t, groups)
        else:
            check_arguments(ops.dirac_, t, groups)
            stock(t, groups)

    return whole(tensor, fill_full, None)


def orthogonal(tensor: Tensor, gain: float, generator, stock: Callable[..., object]) -> Tensor:
    """orthogonal_, or stock(tensor, gain, generator=) for the tensors no kernel takes."""

    def fill_full(t: Tensor, g) -> None:
        if not compiled(t):
            stock(t, gain, generator=g)
        elif t.numel():  # (on meta too: deferred_init() records the op)
            call(ops.orthogonal_, t, gain, g)

    return whole(tensor, fill_full, generator)


def orthogonal_batch(tensors, members: list, gain: float, generator, stock: Callable[..., object]):
    """orthogonal_batch_ of `tensors` (one tensor whose dim 0 is the batch, or a sequence of
    same-shape `members`), or stock(member, gain, generator=) for each member where no kernel
    takes them."""
    is_batch_tensor = isinstance(tensors, Tensor)
    if not (compiled(tensors) if is_batch_tensor else all(compiled(t) for t in members)):
        for t in members:
            stock(t, gain, generator=generator)
        return tensors
    if is_batch_tensor:  # one tensor: in materialize(seed=...), seeded by its name
        return whole(tensors, lambda t, g: call(ops.orthogonal_batch_, t, gain, g), generator)
    with torch.no_grad():
        first = members[0]
        work = torch.empty((len(members), *first.shape), dtype=first.dtype, device=first.device)
        call(ops.orthogonal_batch_, work, gain, generator)
        for t, filled in zip(members, work):
            t.copy_(filled)
    return tensors


def sparse(tensor: Tensor, sparsity: float, std: float, generator, stock: Callable[..., object]):
    """sparse_, or, after its argument checks, stock(tensor, sparsity, std, generator=) for the
    tensors no kernel takes."""

    def fill_full(t: Tensor, g) -> None:
        if compiled(t):
            call(ops.sparse_, t, sparsity, std, g)
        else:
            check_arguments(ops.sparse_, t, sparsity, std, None)
            stock(t, sparsity, std, generator=g)

    return whole(tensor, fill_full, generator)


def _lean(fill, tensor: Tensor, *args) -> bool:
    """Whether _C's lean entry `fill` (csrc/registration/python_fast_path.cpp) filled `tensor`: the
    common case (a plain float tensor, no materialize() session) without the layers above the op
    call. Not while dynamo traces, which must see the op itself."""
    if _local.session is not None or is_dynamo_compiling():
        return False
    return _raising_init_errors(fill, tensor, *args)


def uniform(tensor: Tensor, a: float, b: float, generator) -> Tensor:
    if _lean(_C.uniform_, tensor, a, b, generator):
        return tensor
    return elementwise(
        tensor, "uniform", (a, b), generator, lambda: tensor.uniform_(a, b, generator=generator)
    )


def normal(tensor: Tensor, mean: float, std: float, generator) -> Tensor:
    if _lean(_C.normal_, tensor, mean, std, generator):
        return tensor
    return elementwise(
        tensor,
        "normal",
        (mean, std),
        generator,
        lambda: tensor.normal_(mean, std, generator=generator),
    )


def fill(tensor: Tensor, val, stock: Callable[..., Tensor], *stock_args) -> Tensor:
    """Fills `tensor` with the constant `val`, or calls stock(tensor, *stock_args) for the
    tensors no kernel takes (stock's zeros_ calls zero_, which sparse tensors have and fill_
    doesn't, and the other way round for quantized ones)."""
    if _lean(_C.fill_, tensor, val):
        return tensor
    fallback = functools.partial(stock, tensor, *stock_args)
    if is_float(tensor) and isinstance(val, (int, float)) and not isinstance(val, bool):
        return elementwise(tensor, "constant", (val,), None, fallback)
    if compiled(tensor, FILL_DTYPES) and not isinstance(val, Tensor):
        return call(ops.constant_, tensor, val)
    return fallback()


def is_float(tensor: Tensor) -> bool:
    return tensor.dtype in FLOAT_DTYPES
