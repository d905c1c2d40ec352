"""Record-and-replay deferred init: deferred_init() builds a module on the meta device while
recording every op that writes the memory of a meta tensor; materialize() replays, on real
storage, only the writes whose values survive into the module's parameters and buffers.

Memory is identified by storage, not by tensor object: nn.Parameter wraps a tensor without a
dispatched op, and views (an embedding's padding row, an expanded position_ids) are the same
storage seen through another geometry. So an op's tensors are recorded as references
(storage, dtype, sizes, strides, offset) and rebuilt on the replayed storage; view ops are not
replayed at all. Ops that only touch real tensors ran for real while recording and are not
replayed either.

What the constructor observes of a meta tensor's values (.item(), .tolist(), .cpu(), bool(), a
comparison, torch.equal) is computed then, once, and captured: the replay writes the captured
values instead of recomputing them, so the materialized module holds what was observed. Ops
that then read only values so known (and values no random op gave, computed for them) run on
those values, as eager construction runs them, their results captured too: none of them runs on
meta or in the replay. Writes from a constructor's own generator are computed and captured at
once, as eager construction draws from it. Real tensors an op reads are copied when it is
recorded, and each op keeps the default dtype it ran under.

An op that fails on meta tensors, where its result's shape depends on their values (torch.unique,
nonzero, x[x > 0]) or it has no meta kernel, runs the same way on the real values, and gives the
constructor meta tensors whose values are captured; what cannot be recorded so (.numpy(), a write
into meta that fails there) raises UnrecordableError, naming the module whose constructor ran it.
"""

import contextlib
import dataclasses
import functools
import gc
import math
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from types import FrameType, TracebackType
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedTensorMixin

from . import _dispatch, _known_resets, _patch, _sharded, _tree

aten = torch.ops.aten

# Ops that write every element of their first argument without reading it. The elementwise
# fills, stock's and ours (the op table's laws), which fill_many_ batches at replay, by law and
# the names of the law's parameters:
_FILL_LAWS = {
    op: (law, _dispatch.law_parameters(op))
    for op, law in (
        *_dispatch.STOCK_LAW_OPS.items(),
        *((op, law) for law, op in _dispatch.LAW_OPS.items()),
    )
}
# The others, filled whole (a random one from the generator of the tensor's seeded state):
_WHOLE_FILLS = _dispatch.WHOLE_FILLS
_WRITE_ONLY = {*_FILL_LAWS, *_WHOLE_FILLS, aten.fill_.Tensor, aten.copy_.default}
# Factories of uninitialized memory: nothing to replay, the replay makes storage of the size.
_EMPTY = {aten.empty.memory_format, aten.empty_strided.default}
# Ops that give Python values of their tensors (bool() and comparisons reach .item()).
_OBSERVING = {aten._local_scalar_dense.default, aten.equal.default}
_META = torch.device("meta")
_CPU = torch.device("cpu")


# A tuple, hashed and compared in C: a replay looks each tensor's reference up several times
# (figures: benchmarks/README.md, "Tuning constants"). Yet a leaf, never a container, to _leaves
# and _map.
class _Ref(NamedTuple):
    """A recorded tensor: which meta storage, seen through which geometry."""

    storage: int
    dtype: torch.dtype
    size: tuple
    stride: tuple
    offset: int


# An op's arguments and results nest only in lists and tuples (a tensor list, a tuple of
# results): flattened and mapped here without pytree's generality, which every recorded op would
# pay for (figures: benchmarks/README.md, "Tuning constants").
def _leaves(value, leaves: list | None = None) -> list:
    leaves = [] if leaves is None else leaves
    if isinstance(value, (list, tuple)) and value.__class__ is not _Ref:
        for item in value:
            _leaves(item, leaves)
    else:
        leaves.append(value)
    return leaves


def _map(fn: Callable, value):
    if isinstance(value, (list, tuple)) and value.__class__ is not _Ref:
        return type(value)(_map(fn, item) for item in value)
    return fn(value)


def _is_meta(value) -> bool:
    return isinstance(value, Tensor) and value.is_meta


def _is_real(value) -> bool:
    return isinstance(value, Tensor) and not value.is_meta


def storage_key(tensor: Tensor) -> int:
    return tensor.untyped_storage()._cdata


_new_tuple = tuple.__new__


def ref(tensor: Tensor) -> _Ref:
    return _new_tuple(_Ref, _dispatch._C.storage_view(tensor))  # (without _Ref's Python __new__)


@functools.cache
def arguments(func) -> tuple[tuple[str, bool, bool, object], ...]:
    """(name, whether `func` writes it (schema: Tensor(a!)), whether it has a default, the
    default) of each of `func`'s arguments. Cached: reading an op's schema from Python costs
    more than most ops."""
    return tuple(
        (
            a.name,
            a.alias_info is not None and a.alias_info.is_write,
            a.has_default_value(),
            a.default_value if a.has_default_value() else None,
        )
        for a in func._schema.arguments
    )


@dataclasses.dataclass(frozen=True)
class _Traits:
    """What the recorder needs of an op's schema, read once per op (reading a schema from
    Python costs more than most ops, and so does hashing an op: one lookup an op)."""

    written: tuple[tuple[int, str], ...]  # the positions and names of the arguments it writes
    write_only: bool  # writes its first argument whole without reading it (_WRITE_ONLY)
    fills_first: bool  # write_only, and writes no other argument: a fill (Record.add_fill)
    pure_view: bool  # a view that writes nothing
    draws: bool  # draws random numbers
    takes_generator: bool
    factory: bool  # makes a tensor from no tensor (empty, zeros, arange, randn...)
    observes: bool  # gives Python values of its tensors (_OBSERVING)
    to_copy: bool  # aten._to_copy: .cpu(), .to(device)
    empty: bool  # _EMPTY
    lifts: bool  # aten.lift_fresh: torch.tensor(data)
    in_place: bool  # elementwise, writes its first argument alone and returns it (add_)
    shaped_on_cpu: int  # the most work _shaped_on_cpu gives the CPU for it; 0: not its op


class _TraitsByOp(dict):
    def __missing__(self, func) -> _Traits:
        written = tuple((i, a[0]) for i, a in enumerate(arguments(func)) if a[1])
        schema = func._schema.arguments
        tags = set(func.tags)
        draws = torch.Tag.nondeterministic_seeded in tags or _takes_generator(func)
        # An elementwise op that writes its first argument alone (add_, bitwise_and_): shaped on
        # the CPU as its out-of-place form is, its result that argument.
        in_place = tags >= _IN_PLACE_POINTWISE and [i for i, _ in written] == [0]
        traits = self[func] = _Traits(
            written=written,
            write_only=func in _WRITE_ONLY,
            fills_first=func in _WRITE_ONLY and [i for i, _ in written] == [0],
            pure_view=func.is_view and not written,
            draws=draws,
            takes_generator=_takes_generator(func),
            factory=any(a.name == "device" for a in schema)
            and not any("Tensor" in str(a.type) for a in schema),
            observes=func in _OBSERVING,
            to_copy=func is aten._to_copy.default,
            empty=func in _EMPTY,
            lifts=func is aten.lift_fresh.default,
            in_place=in_place,
            shaped_on_cpu=_cpu_work_bound(func, tags)
            if (tags & _SHAPED_BY_SHAPES or func in _SHAPED_BY_SHAPES_TOO)
            and not (tags & _SHAPED_BY_VALUES or draws or func.is_view)
            and (not written or in_place)
            and all(str(r.type) == "Tensor" for r in func._schema.returns)
            else 0,
        )
        return traits


_TRAITS = _TraitsByOp()


def _tags(*names: str) -> set:
    """The op tags of these names that this torch has (`reduction` is recent)."""
    return {getattr(torch.Tag, name) for name in names if hasattr(torch.Tag, name)}


# Ops whose results' shapes, dtypes and strides follow from their arguments' alone: elementwise
# ops, reductions and a few others (tags and ops). Unless tagged as shaped by values, or random.
_SHAPED_BY_SHAPES = _tags("pointwise", "reduction")
_SHAPED_BY_SHAPES_TOO = {
    aten.mm.default,
    aten.bmm.default,
    aten.addmm.default,
    aten.linalg_cholesky_ex.default,
}
_SHAPED_BY_VALUES = _tags("dynamic_output_shape", "data_dependent_output")
_IN_PLACE_POINTWISE = _tags("inplace", "pointwise")


# The most work _shaped_on_cpu gives the CPU (_cpu_work), a few tens of us: 2^18 elements for
# the ops whose meta kernels are torch's long Python reference code (elementwise ops ~90 us,
# addmm 300-400, mean 90-180, all and any 190-420, vector norms ~500), 2^15 elements or
# multiply-adds for those whose meta kernels are short (the other reductions, mm, bmm,
# cholesky_ex: 12-45 us). Larger ones cost the CPU more (figures: benchmarks/README.md, "Tuning
# constants").
_SHAPED_ON_CPU_WORK = 1 << 18
_SHAPED_ON_CPU_WORK_SHORT_META = 1 << 15
_LONG_META_OPS = {
    getattr(packet, name)
    for packet, names in (
        (aten.addmm, ("default",)),
        (aten.mean, ("default", "dim")),
        (aten.all, ("default", "dim", "dims")),
        (aten.any, ("default", "dim", "dims")),
        (aten.linalg_vector_norm, ("default",)),
    )
    for name in names
    if hasattr(packet, name)  # (all.dims and any.dims are recent)
}


def _cpu_work_bound(func, tags: set) -> int:
    long_meta = tags & _tags("pointwise") or func in _LONG_META_OPS
    return _SHAPED_ON_CPU_WORK if long_meta else _SHAPED_ON_CPU_WORK_SHORT_META


def _no_tensors(args: tuple, kwargs: dict) -> bool:
    """Whether no argument but the first is a tensor or a list or tuple (of tensors, maybe)."""
    values = (*args[1:], *kwargs.values()) if kwargs else args[1:]
    return not any(isinstance(value, (Tensor, list, tuple)) for value in values)


def _recorded(value):
    """An op's argument as recorded: a meta tensor by reference, a real one by its value now
    (the caller may change it before the replay)."""
    if not isinstance(value, Tensor):
        return value
    return ref(value) if value.is_meta else value.detach().clone()


def _covers_storage(tensor: Tensor, nbytes: int) -> bool:
    """Whether `tensor` is the whole of its storage, of `nbytes` bytes."""
    return (
        tensor.storage_offset() == 0
        and tensor.is_contiguous()
        and tensor.numel() * tensor.element_size() == nbytes
    )


@dataclasses.dataclass
class _Op:
    func: object
    args: tuple
    kwargs: dict
    allocates: list[tuple[int, int]]  # (position among the flat outputs, new storage)
    writes: frozenset[int]
    reads: frozenset[int]
    defines: frozenset[int]  # storages the op writes whole without reading
    default_dtype: torch.dtype  # what factories and type promotion gave at the recording
    draw: int | None = None  # a random op's number among the record's random ops

    def copies_in(self) -> bool:
        """Whether the op copies a value known at recording (a real tensor, or a captured value)
        into meta storage: its result needs no capturing."""
        return self.func is aten.copy_.default and not self.reads


class Record:
    """The ops of one deferred construction, in order, and the meta tensors they touched (kept
    alive so that their storages' addresses stay unique)."""

    def __init__(self):
        self.ops: list[_Op] = []
        self.nbytes: dict[int, int] = {}  # every meta storage seen, by key
        self.built: dict[str, Built] = {}  # the module's tensors when it was built, by name
        self.root: weakref.ref[nn.Module] | None = None  # the module it built
        self._alive: list[Tensor | torch.UntypedStorage] = []
        # Real tensors made while building where eager construction makes them on the CPU, by
        # storage (kept alive until the module is built, so that storage keys stay unique):
        # torch.tensor(data), small results of drawless factories (arange, eye...) and what ops
        # compute from them alone, which run for real (_Recorder.on_lifted).
        self.lifted: dict[int, Tensor] = {}
        # The meta storage each lifted storage went to (on_meta), by the lifted storage's key.
        self.twins: dict[int, torch.UntypedStorage] = {}
        self.draws = 0  # random ops recorded
        self.written: set[int] = set()  # the storages some op writes
        # The storages whose values were captured and no op has written since: their bytes
        # (CPU uint8), what they hold now. Ops that only read them run on these (_Recorder).
        self.known: dict[int, Tensor] = {}
        # The storages whose values no random op gave (the known ones among them): they can be
        # computed now without drawing, when an op on known values needs them (zeros, eye,
        # arange and what is computed from them).
        self.drawless: set[int] = set()
        # Meta storages that ops read but that no recorded op or factory made: made before the
        # recording began, or below every dispatch mode (torch.tensor(data, device="meta")
        # reached under another name than _DATA_FACTORIES'). Their values are unknown.
        self.unseen: set[int] = set()
        # Where eager construction would put new tensors (the default device when the recording
        # began): what the constructor sees as the device of the tensors it makes.
        default = torch.get_default_device()
        self.device = _CPU if default.type == "meta" else default

    def add(self, func, traits: _Traits, args: tuple, kwargs: dict, out) -> _Op | None:
        """Records the op, of schema traits `traits`, if it writes meta storage; returns its
        record."""
        if traits.pure_view:
            return None  # detach, view, expand...: rebuilt from references where needed
        nbytes = self.nbytes
        if traits.empty and out.is_meta:
            self.keep(out.untyped_storage())
            return None
        if traits.fills_first and args and _is_meta(args[0]) and _no_tensors(args, kwargs):
            return self.add_fill(func, traits, args, kwargs, out)
        if traits.factory and not traits.written and _is_meta(out):
            return self.add_factory(func, traits, args, kwargs, out)
        tensors = [
            t
            for t in (_leaves((args, tuple(kwargs.values()))) if kwargs else _leaves(args))
            if isinstance(t, Tensor)
        ]
        inputs = [t for t in tensors if t.is_meta]
        outputs = _leaves(out)
        meta_outputs = [t for t in outputs if _is_meta(t)]
        if not inputs and not meta_outputs:
            return None  # real tensors only: done for real already
        # Each meta tensor's storage read once (untyped_storage() makes an object a call):
        # (key, bytes) by id.
        storages = {}
        for t in inputs + meta_outputs:
            if id(t) not in storages:
                storage = t.untyped_storage()
                storages[id(t)] = (storage._cdata, storage.nbytes())
        allocates = [
            (position, storages[id(t)][0])
            for position, t in enumerate(outputs)
            if _is_meta(t) and storages[id(t)][0] not in nbytes
        ]
        for t in inputs:
            key, size = storages[id(t)]
            if key not in nbytes:
                nbytes[key] = size
                self.unseen.add(key)
        for key, size in storages.values():
            nbytes.setdefault(key, size)  # (the outputs it allocates)
        writes, defines = set(), set()
        for i, name in traits.written:
            value = args[i] if i < len(args) else kwargs.get(name)
            for t in _leaves(value):
                if _is_meta(t):
                    key, size = storages[id(t)]
                    writes.add(key)
                    if i == 0 and traits.write_only and _covers_storage(t, size):
                        defines.add(key)
        if not writes and not allocates:
            return None  # a read: rebuilt from references where needed
        first = args[0] if traits.write_only and args and _is_meta(args[0]) else None
        reads = {storages[id(t)][0] for t in inputs if t is not first}
        new = {storage for _, storage in allocates}
        self._alive += inputs + meta_outputs
        if tensors:
            args = _map(_recorded, args)
            kwargs = {name: _map(_recorded, value) for name, value in kwargs.items()}
        # (Without tensors, the dispatcher's fresh argument objects are kept as they are.)
        op = _Op(
            func,
            args,
            kwargs,
            allocates,
            frozenset(writes | new),
            frozenset(reads),
            frozenset(defines | new),
            torch.get_default_dtype(),
        )
        return self._append(op, traits)

    def add_fill(self, func, traits: _Traits, args: tuple, kwargs: dict, out) -> _Op:
        """add() of a fill of a meta tensor (args[0]) from values: the most common op of a
        construction, recorded as add() records it with a fraction of the work."""
        target = args[0]
        target_ref = ref(target)
        key = target_ref.storage
        size = self.nbytes.get(key)
        # The op's one output, when it returns its target (aten's in-place ops; ours return
        # nothing), allocates its storage if no op met it before, as in add().
        allocates = [(0, key)] if out is target and size is None else []
        if size is None:
            size = self.nbytes[key] = target.untyped_storage().nbytes()
        writes = frozenset((key,))
        whole = allocates or _covers_storage(target, size)
        self._alive.append(target)
        op = _Op(
            func,
            (target_ref, *args[1:]),
            dict(kwargs),
            allocates,
            writes,
            frozenset(),
            writes if whole else frozenset(),
            torch.get_default_dtype(),
        )
        return self._append(op, traits)

    def add_factory(
        self, func, traits: _Traits, args: tuple, kwargs: dict, out: Tensor
    ) -> _Op | None:
        """add() of a factory's (zeros, ones, arange, randn...) new meta tensor `out`: its
        storage allocated, its arguments (no tensors) kept as they are."""
        storage = out.untyped_storage()
        key = storage._cdata
        allocates = [] if key in self.nbytes else [(0, key)]
        if not allocates:
            return None  # a key met before (an address reused), which add() records not
        self.keep(storage)
        new = frozenset((key,))
        op = _Op(func, args, kwargs, allocates, new, frozenset(), new, torch.get_default_dtype())
        return self._append(op, traits)

    def keep(self, storage: torch.UntypedStorage) -> None:
        """Notes a new meta storage a factory made, and keeps it alive (its key stays unique).
        The storage, not the tensor: a factory's Python binding hands the caller the tensor it
        made only while nothing else holds it, and otherwise a copy, whose detach comes through
        the recorder (the cost of another op). csrc/registration/recording.cpp does the same for
        the empty factories it takes."""
        self.nbytes[storage._cdata] = storage.nbytes()
        self._alive.append(storage)

    def on_meta(self, tensor: Tensor) -> Tensor:
        """A lifted tensor as a meta tensor of its geometry, on the meta storage its storage went
        to, the first time, with its bytes then captured: where an op must be recorded (a random
        one, one with meta tensors) or the module keeps it. From then on every op on the real
        tensor's storage sees that meta storage in its place (_Recorder.on_lifted)."""
        key = storage_key(tensor)
        twin = self.twins.get(key)
        real = tensor.untyped_storage()
        whole = not tensor.storage_offset() and real.nbytes() == tensor.nbytes
        if twin is None and whole and tensor.is_contiguous():  # (most): made as captured
            meta = _captured(self, tensor.detach().to(_CPU, copy=True))
            self.twins[key] = meta.untyped_storage()
            return meta
        if twin is None:
            twin = torch.empty(real.nbytes(), dtype=torch.uint8, device=_META).untyped_storage()
            self.keep(twin)
            bytes_now = torch.empty(0, dtype=torch.uint8, device=real.device)
            bytes_now.set_(real, 0, (real.nbytes(),), (1,))
            self.capture(twin._cdata, bytes_now.to(_CPU, copy=True))
            self.twins[key] = twin
        return torch.empty(0, dtype=tensor.dtype, device=_META).set_(
            twin, tensor.storage_offset(), tensor.shape, tensor.stride()
        )

    def _append(self, op: _Op, traits: _Traits) -> _Op:
        """Appends `op`, numbered among the random ops if it draws."""
        if traits.draws:
            op.draw = self.draws
            self.draws += 1
        self.written.update(op.writes)
        known, drawless = self.known, self.drawless
        if op.draw is None and op.reads <= drawless:
            for key in op.writes:
                if key in op.defines or key in drawless:
                    drawless.add(key)
                else:
                    drawless.discard(key)
        else:
            drawless.difference_update(op.writes)
        if known:
            for key in op.writes:
                known.pop(key, None)
        self.ops.append(op)
        return op

    def whole(self, key: int) -> _Ref:
        """Storage `key` as bytes."""
        return _Ref(key, torch.uint8, (self.nbytes[key],), (1,), 0)

    def capture(self, key: int, value: Tensor) -> None:
        """Records that storage `key` now holds `value`'s bytes (a CPU uint8 tensor): as the
        values it has held since the last op that wrote it, right after which the capture goes.
        So the ops recorded since, which read it, read the captured values too: computing them
        later replays no write of it again, which would draw its random values anew (the mask
        `w > 0`, recorded before a read of `w` captured `w`, is that of the captured `w`)."""
        position = len(self.ops)
        while key in self.written and key not in self.ops[position - 1].writes:
            position -= 1  # (a storage no op wrote, one torch.tensor made, goes last at once)
        self.written.add(key)
        self.ops.insert(
            position,
            _Op(
                aten.copy_.default,
                (self.whole(key), value),
                {},
                [],
                frozenset({key}),
                frozenset(),
                frozenset({key}),
                torch.get_default_dtype(),
            ),
        )
        self.known[key] = value
        self.drawless.add(key)

    def filled_whole_by_one_fill(self, ref: _Ref) -> bool:
        """Whether the values of `ref`, a whole storage, are those of one elementwise fill of
        it: the case where a shard of it can be filled alone."""
        ops = self.needed({ref.storage})
        return (
            len(ops) == 1
            and ops[0].func in _FILL_LAWS
            and ops[0].args[0] == ref
            and ref.storage in ops[0].defines
        )

    def needed(self, storages: set[int]) -> list[_Op]:
        """The ops whose writes reach `storages`' final values, in order."""
        return self._liveness(storages)[0]

    def unknown(self, storages: set[int]) -> set[int]:
        """The unseen storages (whose values are unknown) that `storages`' final values are
        computed from."""
        return self._liveness(storages)[1] & self.unseen if self.unseen else set()

    def _liveness(self, storages: set[int]) -> tuple[list[_Op], set[int]]:
        """The ops whose writes reach `storages`' final values, in order, and the storages whose
        values before the first op they read: a backward liveness pass in which a whole-storage
        write kills the writes before it."""
        live = set(storages)
        kept = []
        for op in reversed(self.ops):
            if op.writes.isdisjoint(live):
                continue
            kept.append(op)
            live -= op.defines
            live |= op.reads
        kept.reverse()
        return kept, live


def _leaves_meta(kwargs: dict) -> bool:
    device = kwargs.get("device")
    return device is not None and torch.device(device) != _META


@functools.cache
def _takes_generator(func) -> bool:
    return any(name == "generator" for name, *_ in arguments(func))


def _own_generator(func, args: tuple, kwargs: dict) -> bool:
    """Whether the op, which takes a generator, draws from one other than the global one (a
    constructor's own)."""
    generator = _bound(func, args, kwargs).get("generator")
    return generator is not None and generator is not torch.default_generator


# ---- constructors the meta device cannot run -------------------------------------------------


class UnrecordableError(RuntimeError):
    """deferred_init() met a construction it cannot record, or a module holds tensors that nothing
    can materialize (a lazy module's). `module` is the class (qualified name) of the module whose
    constructor ran it, `op` what failed; the error torch raised is its __cause__."""

    def __init__(self, message: str, module: str | None = None, op: str | None = None):
        super().__init__(message)
        self.module = module
        self.op = op


_WAY_OUT = (
    "build this model with torchinit_ext.patched() (eager construction with compiled fills) or "
    "construct it for real"
)
# How torch says that an op cannot run on meta tensors, where it could on real ones: no meta
# kernel (NotImplementedError: _unique2, masked_select), an output shape that depends on the
# values (nonzero, a boolean mask), a value read inside the op (allclose's .item(), beyond this
# mode's reach: an op's own kernel runs with the mode off), a real tensor among meta ones. A
# shape error says none of these and is raised as it is.
_META_WORD = re.compile(r"\bmeta\b", re.IGNORECASE)
_DATA_DEPENDENT = {
    "DataDependentOutputException",
    "DynamicOutputShapeException",
    "GuardOnDataDependentSymNode",
}


def _fails_on_meta(error: Exception) -> bool:
    return (
        isinstance(error, NotImplementedError)
        or any(cls.__name__ in _DATA_DEPENDENT for cls in type(error).__mro__)
        or (isinstance(error, RuntimeError) and _META_WORD.search(str(error)) is not None)
    )


def _on_meta(value) -> bool:
    return _is_meta(value) or (isinstance(value, torch.device) and value.type == "meta")


def _constructing(frames: Iterable[FrameType]) -> str | None:
    """The class of the module whose __init__ is the first of `frames` (innermost first) to be a
    module's: the constructor that was running."""
    for frame in frames:
        code = frame.f_code
        if code.co_name == "__init__" and code.co_argcount:
            module = frame.f_locals.get(code.co_varnames[0])  # self
            if isinstance(module, nn.Module):
                return type(module).__qualname__
    return None


def _frames_out(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _frames_in(traceback: TracebackType | None) -> list[FrameType]:
    """The frames of an exception's traceback, innermost first."""
    frames = []
    while traceback is not None:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    return frames[::-1]


def _unrecordable(module: str | None, op: str, why: str) -> UnrecordableError:
    whose = f"the constructor of {module}" if module else "the construction"
    return UnrecordableError(
        f"deferred_init cannot record {whose}: {op} {why}; {_WAY_OUT}", module=module, op=op
    )


def _captured(record: Record, value: Tensor) -> Tensor:
    """A new meta tensor of `value`'s shape and dtype whose values `record` captures as those of
    `value` (real, new, held by no one else): what the constructor reads of it, and what the
    replay writes, are these."""
    meta = torch.empty(value.shape, dtype=value.dtype, device=_META)
    storage = meta.untyped_storage()
    record.keep(storage)
    bytes_now = value.detach().reshape(-1).view(torch.uint8)
    # Kept as they are where they start their storage (what is read of them is read from their
    # storage's start: _KnownValues), else copied: a covariance's 1 MiB copied for nothing took
    # a quarter of transformers' mean resizing.
    record.capture(storage._cdata, bytes_now.clone() if bytes_now.storage_offset() else bytes_now)
    return meta


def _writes_meta(func, args: tuple, kwargs: dict) -> bool:
    """Whether `func` writes a meta tensor among `args` and `kwargs`."""
    return any(
        any(_is_meta(t) for t in _leaves(args[i] if i < len(args) else kwargs.get(name)))
        for i, name in _TRAITS[func].written
    )


def _call_on_values(record: Record, func, args: tuple, kwargs: dict, refused: bool):
    """Calls `func` with the real values of its meta tensors (computed now and captured, as
    evaluate() does; a copy where it writes them) in their place, and the CPU for the meta
    device. A real tensor it writes is written for real, as ops on real tensors are, unless the
    op is `refused` (it runs only to tell eager's error from ours): then a copy is."""
    written = _TRAITS[func].written
    positions, names = {i for i, _ in written}, {name for _, name in written}
    metas = [t for t in _leaves((args, tuple(kwargs.values()))) if _is_meta(t)]
    # Their values computed together: the storages they share ancestors with computed once.
    values = _compute(record, {storage_key(t) for t in metas}) if metas else None

    def real(value, written: bool):
        if _is_meta(value):
            value = values.tensor(ref(value))  # shares memory with the captured value: copied
            return value.clone() if written else value  # where the op writes it
        if isinstance(value, torch.device) and value.type == "meta":
            return _CPU
        if written and refused and isinstance(value, Tensor):
            return value.clone()
        return value

    return func(
        *(_map(functools.partial(real, written=i in positions), v) for i, v in enumerate(args)),
        **{
            name: _map(functools.partial(real, written=name in names), value)
            for name, value in kwargs.items()
        },
    )


def _on_meta_captured(record: Record, args: tuple, kwargs: dict, out):
    """`out`, the results of an op run on real values, with the tensors it made put on meta,
    their values captured: what eager construction computes, the constructor sees and the replay
    writes. Results that are real tensors it was given (what an out= or in-place op on them
    returns) stay real. None if it made a tensor of another layout than strided."""
    made = _made(args, kwargs, out)
    if made is None:
        return None
    made_ids = {id(t) for t in made}
    return _map(lambda t: _captured(record, t) if id(t) in made_ids else t, out)


def _made(args: tuple, kwargs: dict, out) -> list[Tensor] | None:
    """The tensors among an op's results `out` that are not among its arguments; None if one of
    them is of another layout than strided."""
    given = {id(t) for t in _leaves((args, tuple(kwargs.values()))) if isinstance(t, Tensor)}
    made = [t for t in _leaves(out) if isinstance(t, Tensor) and id(t) not in given]
    return None if any(t.layout != torch.strided for t in made) else made


def _run_for_real(record: Record, func, args: tuple, kwargs: dict, error: Exception):
    """Runs `func`, which failed on the meta device with `error` (_fails_on_meta), on the real
    values of its meta tensors, and gives its new tensors back on meta, their values captured
    (the unique widths of a RegNet, the indices of nonzero values). A failure of the real run is
    eager construction's own error, raised as it is. An op that writes a meta tensor (its storage
    would have to be captured whole, an out= one resized) or is a view (a copy would not alias
    its base) cannot be recorded so: UnrecordableError, once the real run, on copies, has told it
    from an error of eager's."""
    writes_meta = _writes_meta(func, args, kwargs)
    out = _call_on_values(record, func, args, kwargs, refused=writes_meta or func.is_view)
    caller = sys._getframe(1)
    if writes_meta or func.is_view:
        raise _unrecordable(
            _constructing(_frames_out(caller)),
            func._schema.name,
            f"{'writes' if writes_meta else 'is a view of'} a meta tensor, and cannot run on the "
            "meta device",
        ) from error
    on_meta = _on_meta_captured(record, args, kwargs, out)
    if on_meta is None:
        raise _unrecordable(
            _constructing(_frames_out(caller)),
            func._schema.name,
            "cannot run on the meta device, and makes a tensor of another layout than strided",
        ) from error
    return on_meta


# _Recorder.on_lifted's answer for an op that is to be recorded.
_RECORDED = object()


# Ops that make a tensor of another's shape without its values: run on meta, as factories are.
_UNINITIALIZED_LIKE = {
    aten.empty_like.default,
    aten.new_empty.default,
    aten.new_empty_strided.default,
}


# The most bytes an op may make, and read of meta tensors not known yet, to run on their values:
# small ones run faster on the CPU than on meta, where many ops run torch's Python reference code
# (diffusers' sin-cos position embeddings: arange, outer, sin, cos, cat; figures:
# benchmarks/README.md, "Tuning constants"), and the record holds what they make. Larger ones are
# recorded.
_ON_VALUES_BYTES = 1 << 20


def _on_values_now(record: Record, func, traits: _Traits, args: tuple, kwargs: dict) -> bool:
    """Whether the op is to run on its meta tensors' values now, and computes those that are not
    known yet: when it reads values the constructor has read or that were computed so
    (Record.known), or small ones no random op gave (Record.drawless), and neither writes,
    draws nor makes a view. Eager construction computes its result then too, which the
    constructor goes on with. (transformers' mean resizing reads an embedding's values, then
    runs a covariance, a positive-definiteness check and a Cholesky factorization on them: on
    meta, each of those runs torch's Python reference code for nothing.)"""
    if traits.draws or traits.pure_view or traits.written or func in _UNINITIALIZED_LIKE:
        return False
    keys = {storage_key(t) for t in _leaves((args, tuple(kwargs.values()))) if _is_meta(t)}
    known = record.known
    # (By lookups: a set minus a dict's keys walks the whole dict.)
    unknown = {key for key in keys if key not in known}
    if (
        not keys
        or not unknown <= record.drawless
        or sum(record.nbytes[k] for k in unknown) > _ON_VALUES_BYTES
    ):
        return False
    if unknown:
        _compute(record, unknown)
    return True


def _span(tensor: Tensor) -> int:
    """The bytes a tensor's elements spread over: more than its size where its strides leave
    gaps (a few columns of a large embedding)."""
    if not tensor.numel():
        return 0
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    return (last + 1) * tensor.element_size()


def _broadcast_elements(tensors: list[Tensor]) -> int:
    """The elements of the tensors' shapes broadcast together (aligned on their last dimension,
    each dimension's largest size): what an elementwise op on them computes."""
    sizes: list[int] = []
    for tensor in tensors:
        for i, size in enumerate(reversed(tensor.shape)):
            if i == len(sizes):
                sizes.append(size)
            elif size > sizes[i]:
                sizes[i] = size
    return math.prod(sizes)


def _cpu_work(func, tensors: list[Tensor]) -> int:
    """What the CPU computes for `func` (a _shaped_on_cpu op) on tensors of these shapes: the
    multiply-adds of a matrix product or a Cholesky factorization, the elements of the rest."""
    if func in (aten.mm.default, aten.bmm.default):
        return tensors[0].numel() * tensors[1].shape[-1]
    if func is aten.linalg_cholesky_ex.default:
        return tensors[0].numel() * tensors[0].shape[-1] // 3
    return _broadcast_elements(tensors)


_ZEROS: list[torch.UntypedStorage] = []


def _zeros_pool() -> torch.UntypedStorage:
    """_ON_VALUES_BYTES zero bytes on the CPU, made once: every argument _shaped_on_cpu gives an
    op is a view of them (zero bytes are zeros of every dtype; the ops write no argument). A
    zeroed tensor an argument took 14% of transformers' mean resizing."""
    if not _ZEROS:
        _ZEROS.append(torch.zeros(_ON_VALUES_BYTES, dtype=torch.uint8).untyped_storage())
    return _ZEROS[0]


def _shaped_on_cpu(func, traits: _Traits, args: tuple, kwargs: dict):
    """The results of `func` (traits.shaped_on_cpu) on small meta tensors: meta tensors shaped as
    the CPU's results of it on zeros of its arguments' shapes and strides, as eager construction
    shapes them. torch's meta kernels for these ops are Python reference code, 20 to 500 us an
    op, where the CPU's on small zeros take a few (transformers' mean resizing runs a covariance
    and its positive-definiteness check on an embedding no one has read yet: ~40 ops). None
    where an argument is a real tensor, the arguments spread over more than _ON_VALUES_BYTES or
    give the CPU more than traits.shaped_on_cpu, or where the op fails on zeros: the meta kernel
    runs then, and raises or not. An in-place op (traits.in_place) writes zeros of its own, and
    its result is its meta argument."""
    tensors = [t for t in _leaves((args, tuple(kwargs.values()))) if isinstance(t, Tensor)]
    if not all(t.is_meta and t.layout == torch.strided for t in tensors):
        return None
    if (
        _cpu_work(func, tensors) > traits.shaped_on_cpu
        or sum(_span(t) for t in tensors) > _ON_VALUES_BYTES
    ):
        return None

    def zeros(value):
        if isinstance(value, Tensor):
            pool = _zeros_pool()
            return torch.empty(0, dtype=value.dtype).set_(pool, 0, value.shape, value.stride())
        return _CPU if isinstance(value, torch.device) and value.type == "meta" else value

    cpu_args = _map(zeros, args)
    if traits.in_place:  # (the pool's zeros are never written)
        first = args[0]
        written = torch.empty_strided(first.shape, first.stride(), dtype=first.dtype).zero_()
        cpu_args = (written, *cpu_args[1:])
    try:
        out = func(*cpu_args, **{name: _map(zeros, v) for name, v in kwargs.items()})
    except Exception:
        return None
    if traits.in_place:
        return args[0]
    return _map(
        lambda t: (
            torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=_META)
            if isinstance(t, Tensor)
            else t
        ),
        out,
    )


def _small(out) -> bool:
    """Whether the tensors among an op's results hold _ON_VALUES_BYTES at most."""
    return sum(t.nbytes for t in _leaves(out) if isinstance(t, Tensor)) <= _ON_VALUES_BYTES


def refuse_uninitialized(caller: str, slots: Iterable[tuple]) -> None:
    """Raises UnrecordableError if a module tree holds an UninitializedParameter or
    UninitializedBuffer (a lazy module's, nn.LazyLinear: its first forward pass decides its shape),
    which `caller` ("deferred_init", "materialize") can give no values; names the first. `slots`:
    the tree's (prefix, owner, kind, name, tensor), or those of tensor subclasses alone
    (_tree.Tree.subclassed: plain tensors are never uninitialized)."""
    for dotted, owner, _, name, tensor in slots:
        if isinstance(tensor, UninitializedTensorMixin):
            qualified = dotted + name
            raise UnrecordableError(
                f"{caller}: {qualified!r} of {type(owner).__qualname__} is an "
                f"{type(tensor).__name__} (a lazy module's, shaped by its first forward "
                f"pass), which has no shape to materialize; {_WAY_OUT}, then run a "
                "forward pass",
                module=type(owner).__qualname__,
                op=type(tensor).__name__,
            )


# Errors of a constructor's code that reads a meta tensor's values out of any dispatch mode's
# reach (not dispatched, or under torch._C._DisableTorchDispatch): their type, a part of their
# message, and what the constructor ran.
_ESCAPED = (
    (TypeError, "meta device type tensor to numpy", "Tensor.numpy()"),
    (RuntimeError, "item() cannot be called on meta", "Tensor.item()"),
    (NotImplementedError, "Cannot copy out of meta tensor", "a copy out of a meta tensor"),
)


# Factories whose meta tensor is empty's, whose meta kernel is native, where theirs runs torch's
# Python reference code (4 us more a call): BatchNorm's running statistics, most often. The op
# recorded is theirs.
_META_AS_EMPTY = {
    aten.zeros.default: aten.empty.memory_format,
    aten.ones.default: aten.empty.memory_format,
}


# Factories that draw nothing and whose meta kernels are torch's Python reference code, 10 to 60
# times their CPU kernel's time (eye: 185 us against 3 us): a small result is made on the CPU,
# its values captured, as _on_values_now's ops'.
_FACTORIES_ON_VALUES = {
    aten.arange.default,
    aten.arange.start,
    aten.arange.start_step,
    aten.linspace.default,
    aten.logspace.default,
    aten.eye.default,
    aten.eye.m,
}


class _Recorder(_dispatch.UncompiledMode):
    """Records ops, and puts the tensors that factory ops make on the meta device. (Not a
    torch.device("meta") context: code that asks where new tensors go, as transformers does
    before running its _init_weights, sees its usual device and runs its usual init.)"""

    def __init__(self, record: Record):
        super().__init__()
        self.record = record

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        traits = _TRAITS[func]
        run = func
        if self.record.lifted and not traits.factory:
            real, args, kwargs = self.on_lifted(func, traits, args, kwargs)
            if real is not _RECORDED:
                return real
        if traits.factory:
            if func in _FACTORIES_ON_VALUES:
                real = func(*args, **{**kwargs, "device": _CPU, "pin_memory": False})
                if real.layout == torch.strided and _small(real):
                    device = kwargs.get("device")
                    if (self.record.device if device is None else torch.device(device)) == _CPU:
                        self.record.lifted[storage_key(real)] = real
                        return real
                    return _captured(self.record, real)
            run = _META_AS_EMPTY.get(func, func)
            # Also where the code names a device: transformers names the CPU for its weights.
            kwargs = {**kwargs, "device": _META}
            if kwargs.get("pin_memory"):
                kwargs["pin_memory"] = False
        elif traits.observes or (traits.to_copy and _leaves_meta(kwargs)):
            # .item(), bool(), torch.equal, .cpu(), .tolist(), .to(device) of a meta tensor (a
            # drop-path schedule, say): its value, computed now and kept for the replay.
            args = _map(lambda t: evaluate(self.record, t) if _is_meta(t) else t, args)
        elif self.record.drawless and _on_values_now(self.record, func, traits, args, kwargs):
            # On the values, as eager construction computes it, not on meta; a large result is
            # recorded instead.
            real = _call_on_values(self.record, func, args, kwargs, refused=False)
            if _small(real):
                out = _on_meta_captured(self.record, args, kwargs, real)
                if out is not None:
                    return out
        out = _shaped_on_cpu(func, traits, args, kwargs) if traits.shaped_on_cpu else None
        if out is None:
            try:  # (costs nothing until an op raises: only the failure path does more)
                out = run(*args, **kwargs)
            except Exception as error:
                if not _fails_on_meta(error) or not any(
                    _on_meta(t) for t in _leaves((args, tuple(kwargs.values())))
                ):
                    raise
                # torch.unique, nonzero, x[x > 0], allclose...: on the values, results captured.
                return _run_for_real(self.record, func, args, kwargs, error)
        if traits.lifts and not out.is_meta:
            # torch.tensor(data), made below this mode, stays real while building (transformers
            # asks torch.tensor([]).device where new tensors go); deferred_init() puts those the
            # module keeps on meta.
            self.record.lifted[storage_key(out)] = out
        op = self.record.add(func, traits, args, kwargs, out)
        if op is not None and traits.takes_generator and _own_generator(func, args, kwargs):
            # Drawn from now, once, as eager construction does: what the generator gives next,
            # and the values of a generator seeded in the constructor, depend on it.
            _compute(self.record, set(op.writes))
        return out

    def on_lifted(self, func, traits: _Traits, args: tuple, kwargs: dict):
        """An op on lifted tensors (Record.lifted): run for real, as eager construction runs it,
        where it draws nothing, reads no meta tensor and no lifted storage that went to meta, and
        makes small results or writes its arguments; its results are lifted then. Elsewhere its
        lifted tensors are replaced with their meta storages' (Record.on_meta), and it is
        recorded. Returns (its results, or _RECORDED where it is to be recorded, args, kwargs)."""
        record = self.record
        keys = []  # the real tensors' storages (a list of tensors is rare: walked only then)
        for value in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(value, Tensor):
                if not value.is_meta:
                    keys.append(storage_key(value))
            elif isinstance(value, (list, tuple)):
                keys += [storage_key(t) for t in _leaves(value) if _is_real(t)]
        if not keys or record.lifted.keys().isdisjoint(keys):
            return _RECORDED, args, kwargs
        leaves = _leaves((args, tuple(kwargs.values())))
        if not (traits.draws or any(key in record.twins for key in keys)) and not any(
            _on_meta(value) for value in leaves
        ):
            out = func(*args, **kwargs)
            made = _made(args, kwargs, out) if traits.written or _small(out) else None
            if made is not None:
                for t in made:
                    record.lifted[storage_key(t)] = t
                return out, args, kwargs

        def on_meta(value):
            lifted = _is_real(value) and storage_key(value) in record.lifted
            return record.on_meta(value) if lifted else value

        return (
            _RECORDED,
            _map(on_meta, args),
            {name: _map(on_meta, value) for name, value in kwargs.items()},
        )

    def record_known_reset(self, reset: Callable, module: nn.Module) -> bool:
        """Records the fills of `reset`, a known reset of torch.nn called on `module`, as the ops
        running it would record (the same ops, arguments and draw numbers, each written tensor's
        version moved), when this is the only dispatch mode and its fills are plain float meta
        tensors'; returns whether it did. Else the reset is to run: any other mode (dispatch or
        __torch_function__) must see its calls, and a materialize() session its fills."""
        if (
            torch._C._len_torch_dispatch_stack() != 1
            or torch._C._get_dispatch_stack_at(0) is not self
            or torch._C._is_torch_function_mode_enabled()
            or _dispatch.active_session() is not None
        ):
            return False
        fills = _known_resets.called(reset, module)
        if fills is None:
            return False
        twins = self.record.twins
        for t, law, _ in fills:
            if type(t) not in _sharded.PLAIN_TYPES:
                return False
            if t.is_meta:
                if law != "zero" and not _dispatch.is_float(t):
                    return False
            elif law != "zero" or (twins and storage_key(t) in twins):
                # (a real tensor whose storage went to meta is written there: through the ops)
                return False
        written = []
        for tensor, law, params in fills:
            func = _ONE_STEP_OPS[law]
            if not tensor.is_meta:  # an integer tensor's zero_(), real while building
                with torch._C._DisableTorchDispatch():  # (this mode would record nothing)
                    func(tensor)
                continue
            # aten's in-place fills return their tensor, ours nothing (add_fill tells them apart).
            out = tensor if func in _dispatch.STOCK_LAW_OPS else None
            self.record.add_fill(func, _TRAITS[func], (tensor, *params), {}, out)
            written.append(tensor)
        torch.autograd.graph.increment_version(written)  # (each once a fill, as the ops move it)
        return True

    def __enter__(self):
        mode = super().__enter__()
        # Empty factories and pure views of plain tensors, the most of a small model's ops,
        # go through csrc/registration/recording.cpp without this mode: what this mode would do
        # with them (Record.add) done there, in C++.
        _dispatch._C.recording_fast_path_start(
            self, self.record.nbytes, self.record._alive, self.record.twins
        )
        return mode

    def __exit__(self, exc_type, error, traceback):
        _dispatch._C.recording_fast_path_stop(self)
        super().__exit__(exc_type, error, traceback)
        if error is None or isinstance(error, UnrecordableError):
            return
        for kind, words, op in _ESCAPED:
            if isinstance(error, kind) and words in str(error):
                module = _constructing(_frames_in(traceback))
                why = "reads a meta tensor, which has no values"
                raise _unrecordable(module, op, why) from error


class Replay:
    """Real storage for a record's meta storages, filled by replaying the ops that reach the
    given tensors. A materialize() session (_session.Session), when given, takes the fills
    and is told of each storage as it is made (session.on_storage(replay, key): given the
    replay rather than holding it, as a cycle would keep every storage until gc.collect())."""

    def __init__(self, record: Record, device: torch.device, session=None):
        self.record = record
        self.device = device
        self.storages: dict[int, torch.UntypedStorage] = {}
        # Each reference rebuilt once, by storage, so that a storage's tensors go with it.
        self.tensors: dict[int, dict[_Ref, Tensor]] = {}
        self.session = session
        self.substitutes: dict[int, Tensor] = {}  # storage -> the (sharded) tensor written instead

    def substitute(self, ref: _Ref, tensor: Tensor) -> None:
        """Makes the ops on the whole of `ref`'s storage write `tensor` instead (a DTensor of
        the same shape)."""
        self.substitutes[ref.storage] = tensor

    def storage(self, key: int) -> torch.UntypedStorage:
        # Storages whose allocation is not replayed: made by empty (not recorded), written
        # whole before any read (so the allocation was dead), or made before recording began
        # (no values, as on meta).
        if key not in self.storages:
            self._bind(key, torch.UntypedStorage(self.record.nbytes[key], device=self.device))
        return self.storages[key]

    def _bind(self, key: int, storage: torch.UntypedStorage) -> None:
        self.storages[key] = storage
        if self.session is not None:
            self.session.on_storage(self, key)

    def tensor(self, ref: _Ref) -> Tensor:
        tensors = self.tensors.get(ref.storage)
        if tensors is None:
            tensors = self.tensors[ref.storage] = {}
        else:
            tensor = tensors.get(ref)
            if tensor is not None:
                return tensor
        whole = None if ref.storage in self.storages else self._whole(ref)
        if whole is None:
            empty = torch.empty(0, dtype=ref.dtype, device=self.device)
            tensor = empty.set_(self.storage(ref.storage), ref.offset, ref.size, ref.stride)
        else:
            tensor = whole
            self._bind(ref.storage, whole.untyped_storage())  # (the session asks for it)
        tensors[ref] = tensor
        return tensor

    def _whole(self, ref: _Ref) -> Tensor | None:
        """A tensor of `ref`'s geometry on new storage of its storage's size, when `ref` spans
        all of it (a parameter's tensor, most often): one op where storage() and set_() take
        three. None otherwise."""
        if not _spans(ref, self.record):
            return None
        tensor = torch.empty_strided(ref.size, ref.stride, dtype=ref.dtype, device=self.device)
        nbytes = self.record.nbytes[ref.storage]
        return tensor if tensor.untyped_storage().nbytes() == nbytes else None

    def drop(self, key: int) -> None:
        """Lets go of storage `key` and the tensors rebuilt on it."""
        self.storages.pop(key, None)
        self.tensors.pop(key, None)

    def clear(self) -> None:
        """Lets go of every storage and tensor."""
        self.storages.clear()
        self.tensors.clear()

    def _real(self, value):
        if isinstance(value, _Ref):
            substitute = self.substitutes.get(value.storage)
            return self.tensor(value) if substitute is None else substitute
        if isinstance(value, torch.device) and value == _META:
            return self.device
        return value

    def prepare(self, ops: list[_Op], later: set[int] = frozenset()) -> None:
        """Makes the storages that `ops` use but do not allocate, and the tensors on them that
        they take, now: outside any dispatch mode the caller then runs them under. Those in
        `later` are made at their first use instead (memory held for a short while)."""
        allocated = {key for op in ops for _, key in op.allocates} | later
        for op in ops:
            # An elementwise fill's one tensor is its target: its law's parameters are numbers.
            fill = op.func in _FILL_LAWS
            values = op.args[:1] if fill else _leaves((op.args, *op.kwargs.values()))
            for value in values:
                if isinstance(value, _Ref) and value.storage not in allocated:
                    self._real(value)

    def run(
        self, ops: list[_Op], keep: set[int], finish: dict[int, list[Callable]] | None = None
    ) -> None:
        """Runs `ops`, each under the default dtype it was recorded under. A storage not in
        `keep` is dropped after the last op that uses it: a temporary (the randn of
        `randn(n) * 0.02`) is freed once read, as in eager construction, not at the end. A
        storage in `finish` is handed to its callbacks after that op, then dropped."""
        finish = finish or {}
        last_use = {}
        for i, op in enumerate(ops):
            for key in op.writes:
                last_use[key] = i
            for key in op.reads:
                last_use[key] = i
        drops: dict[int, list[int]] = {}
        for key, i in last_use.items():
            if key not in keep or key in finish:
                drops.setdefault(i, []).append(key)
        default_dtype = dtype = torch.get_default_dtype()
        try:
            for i, op in enumerate(ops):
                if op.default_dtype != dtype:
                    dtype = op.default_dtype
                    torch.set_default_dtype(dtype)
                self._run(op)
                for key in drops.get(i, ()):
                    for callback in finish.get(key, ()):
                        callback()
                    self.drop(key)
        finally:
            torch.set_default_dtype(default_dtype)

    def _run(self, op: _Op) -> None:
        if self.session is not None and self._queued_whole(op):
            return
        args = _map(self._real, op.args)
        kwargs = {name: _map(self._real, value) for name, value in op.kwargs.items()}
        seed = None
        if self.session is not None and op.draw is not None:
            seed = self.session.draw_seed(op.draw)
        out = _replay_op(op.func, args, kwargs, self.session, seed)
        if torch.Tag.inplace_view in op.func.tags:  # t_(), as_strided_(): rebuilt tensors
            self.tensors.clear()  # may no longer have their references' geometry
        if op.allocates:
            flat = _leaves(out)
            for position, key in op.allocates:
                storage = flat[position].untyped_storage()
                if storage.nbytes() != self.record.nbytes[key]:
                    # Rebuilt references would read past it: refuse rather than read garbage.
                    raise RuntimeError(
                        f"materialize: the replay of {op.func} made {storage.nbytes()} bytes "
                        f"where its recording made {self.record.nbytes[key]}"
                    )
                self._bind(key, storage)

    def _queued_whole(self, op: _Op) -> bool:
        """Queues `op` in the session, and returns True, when it is an elementwise fill of the
        whole of a storage that is one tensor of the module, its name's, made by prepare(): what
        most of a replay is, and what the general path (_replay_op, _dispatch.elementwise,
        Session.try_defer) would queue, the same Philox state drawn at the same point, with
        several layers of calls less a tensor."""
        fill = _fill_arguments(op)
        if fill is None:
            return False
        target = op.args[0]
        key = target.storage
        named = self.session.replayed_names.get(key)
        if (
            named is None
            or len(named) != 1
            or named[0][1] != target
            or key not in op.defines
            or key in self.substitutes
        ):
            return False
        tensors = self.tensors.get(key)
        tensor = None if tensors is None else tensors.get(target)
        if tensor is None:
            return False
        law, params, generator = fill
        where = _dispatch._C.fill_extent(tensor)
        if where is None:
            return False  # no kernel takes it: stock's fill, on the general path
        self.session.defer((tensor, where, named[0][0], None), law, params, generator)
        return True


def _fill_arguments(op: _Op) -> tuple[str, tuple, object] | None:
    """(law, parameters, generator) of `op` when it is an elementwise fill that the compiled
    fills take as _dispatch would; None for other ops, and for constants _dispatch.fill gives
    stock's fill_."""
    fill = _FILL_LAWS.get(op.func)
    if fill is None:
        return None
    law, names = fill
    if not op.kwargs and len(op.args) == len(names) + 1:
        # Every parameter given, in order, and no generator (the fills of known resets): what
        # _bound would find, without its walk of the schema.
        params, generator = op.args[1:] or (0,), None
    else:
        bound = _bound(op.func, op.args, op.kwargs)
        params = tuple(bound[name] for name in names) or (0,)
        generator = bound.get("generator")
    if law == "constant" and (
        isinstance(params[0], bool) or not isinstance(params[0], (int, float))
    ):
        return None
    return law, params, generator


def whole_writes(record: Record, ops: list[_Op], named: dict[int, _Ref]):
    """([(target, law, parameters)], [(target, value)]): the elementwise fills, from the default
    generator, and the copies of captured values among `ops` when each writes the whole of its
    own storage of `named` (storage -> the reference of the module's tensor on it, which covers
    it), and each of those has one: a replay that makes its tensors and writes them in one step
    (model._made_by_whole_writes). None otherwise."""
    if len(ops) != len(named):
        return None
    fills, copies = [], []
    for op in ops:
        first = op.args[0] if op.args else None
        if first.__class__ is not _Ref or first.storage not in op.defines:
            return None
        key = first.storage
        target = named.get(key)
        if target is None:
            return None
        fill = _fill_arguments(op)
        if fill is not None and fill[2] is None and first == target:
            fills.append((target, fill[0], fill[1]))
        elif op.copies_in() and first == record.whole(key) and _spans(target, record):
            copies.append((target, op.args[1]))
        else:
            return None
    # (Each storage once: as many writes as storages, each of one of them.)
    if len({target.storage for target, *_ in fills + copies}) != len(ops):
        return None
    return fills, copies


def _spans(ref: _Ref, record: Record) -> bool:
    """Whether `ref` holds every byte of its storage, at its start."""
    return not ref.offset and math.prod(ref.size) * ref.dtype.itemsize == record.nbytes[ref.storage]


def _bound(func, args: tuple, kwargs: dict) -> dict:
    """The op's arguments by name, defaults included."""
    bound = {}
    for i, (name, _, has_default, default) in enumerate(arguments(func)):
        if i < len(args):
            bound[name] = args[i]
        elif name in kwargs:
            bound[name] = kwargs[name]
        elif has_default:
            bound[name] = default
    return bound


# Random factories that a seeded replay runs as an empty tensor and a compiled fill, so that a
# temporary's values are the same on every device: the empty factory, the law, its parameters.
_RANDOM_FACTORIES = {
    aten.randn.default: (aten.empty.memory_format, "normal", (0.0, 1.0)),
    aten.rand.default: (aten.empty.memory_format, "uniform", (0.0, 1.0)),
    aten.randn_like.default: (aten.empty_like.default, "normal", (0.0, 1.0)),
    aten.rand_like.default: (aten.empty_like.default, "uniform", (0.0, 1.0)),
}


def _replay_op(func, args: tuple, kwargs: dict, session, seed: int | None):
    """Runs one recorded op on real tensors: elementwise fills through the compiled, batched,
    seeded path (as the stock functions' interception would: _dispatch reaches the session
    running the replay), whole fills with the session's generator, the rest as recorded. A
    random op given a `seed` (a seeded replay's, for its draw) draws from a generator seeded with
    it, the compiled fills' on the CPU for every device; its tensor's name's state goes first."""
    seeded = None if seed is None else torch.Generator().manual_seed(seed)
    if seeded is not None and func in _RANDOM_FACTORIES:
        empty, law, params = _RANDOM_FACTORIES[func]
        out = empty(*args, **kwargs)
        return _dispatch.elementwise(out, law, params, seeded, lambda: func(*args, **kwargs))
    if func not in _FILL_LAWS and func not in _WHOLE_FILLS:
        if seeded is not None and _takes_generator(func):
            device = _device_of(_bound(func, args, kwargs))
            kwargs = {**kwargs, "generator": torch.Generator(device).manual_seed(seed)}
        return func(*args, **kwargs)
    bound = _bound(func, args, kwargs)
    target = args[0]
    generator = bound.get("generator") or seeded
    if func in _WHOLE_FILLS:
        if session is not None and "generator" in bound:
            bound["generator"] = session.generator_for(target, generator)
        return func(*bound.values())
    law, names = _FILL_LAWS[func]
    params = tuple(bound[name] for name in names) or (0,)

    def stock():
        return func(*args, **kwargs)

    with contextlib.suppress(_dispatch.InitValueError, _dispatch.InitTypeError):
        if law == "constant":
            return _dispatch.fill(target, params[0], lambda t: stock())
        return _dispatch.elementwise(target, law, params, generator, stock)
    return stock()


def _device_of(bound: dict) -> torch.device:
    """Where an op's result goes: its device argument, or its first tensor's device."""
    if bound.get("device") is not None:
        return torch.device(bound["device"])
    return next(t.device for t in _leaves(tuple(bound.values())) if isinstance(t, Tensor))


class _KnownValues:
    """Tensors on the values of storages that Record.known holds, as Replay.tensor() gives a
    replay's: they share memory with the captured values, so they are read only."""

    def __init__(self, known: dict[int, Tensor]):
        self.known = known

    def tensor(self, ref: _Ref) -> Tensor:
        storage = self.known[ref.storage].untyped_storage()
        return torch.empty(0, dtype=ref.dtype).set_(storage, ref.offset, ref.size, ref.stride)


def _compute(record: Record, storages: set[int]) -> Replay:
    """Computes on the CPU, once, the values `storages` have now, and captures those of every
    storage this wrote: the replay writes the captured values instead of computing them again,
    so that they are the ones the constructor saw. Random writes draw from their generators now,
    as eager construction would. Returns the replay that computed them, or, where every storage's
    values are known already (Record.known), those."""
    if storages <= record.known.keys():
        return _KnownValues(record.known)
    if record.unknown(storages):
        raise _unrecordable(
            _constructing(_frames_out(sys._getframe(1))),
            "a read of values",
            "reaches a meta tensor made where the recording could not see it (by a factory of "
            "data under another name, or before deferred_init() began), whose values are unknown",
        )
    while True:  # the other storages those ops write are computed whole too, to be captured
        ops = record.needed(storages)
        written = storages.union(*(op.writes for op in ops))
        if written == storages:
            break
        storages = written
    replay = Replay(record, _CPU)
    with torch.no_grad():
        replay.run(ops, storages)
    for key in {key for op in ops if not op.copies_in() for key in op.writes}:
        record.capture(key, replay.tensor(record.whole(key)))
    return replay


def evaluate(record: Record, tensor: Tensor) -> Tensor:
    """The real value (on the CPU) a meta tensor of `record` has now; materialize() gives the
    module this value too (_compute). It shares memory with the captured value: read it only."""
    wanted = ref(tensor)
    return _compute(record, {wanted.storage}).tensor(wanted)


def like(tensor: Tensor, value: Tensor) -> Tensor:
    """`value` as the same kind of tensor as `tensor`: a Parameter (of the same subclass, with
    the same attributes and requires_grad) for a Parameter, plain otherwise."""
    cls = tensor.__class__
    # (isinstance(tensor, nn.Parameter) runs Parameter's metaclass's Python code.)
    if cls is not nn.Parameter and (cls is Tensor or not isinstance(tensor, nn.Parameter)):
        return value
    # What Parameter.__new__ does, without a subclass's own __new__ and its arguments.
    like = torch.Tensor._make_subclass(cls, value, tensor.requires_grad)
    attributes = tensor.__dict__
    if attributes:
        like.__dict__.update(attributes)
    return like


# ---- deferred_init ---------------------------------------------------------------------------


def swapped(value, real: dict[int, Tensor], depth: int = 0):
    """`value` with the tensors that `real` replaces (by id) replaced, lists and dicts in place,
    tuples rebuilt: the same object when nothing changed."""
    if isinstance(value, Tensor):
        return real.get(id(value), value)
    if depth == _tree.CONTAINER_DEPTH:
        return value
    # Items written only where they change: a frozen mapping (a config) may refuse writes.
    if isinstance(value, list):
        for i, item in enumerate(value):
            new = swapped(item, real, depth + 1)
            if new is not item:
                value[i] = new
    elif isinstance(value, dict):
        for key, item in value.items():
            new = swapped(item, real, depth + 1)
            if new is not item:
                value[key] = new
    elif type(value) is tuple:
        items = tuple(swapped(item, real, depth + 1) for item in value)
        if any(a is not b for a, b in zip(items, value)):
            return items
    return value


class Built(NamedTuple):
    """A parameter or buffer as deferred_init() returned it."""

    ref: _Ref
    tensor: Tensor
    owner: "weakref.ref[nn.Module]"
    version: int  # its version counter then: an in-place write on meta since changes it


# Every module of a deferred_init() tree, to its record and its qualified name's prefix ("" for
# the root, "layer1." for a child): materialize() of a submodule replays its part of the record.
_records: "weakref.WeakKeyDictionary[nn.Module, tuple[Record, str]]" = weakref.WeakKeyDictionary()


def record_of(module: nn.Module) -> tuple[Record, str] | None:
    return _records.get(module)


@contextlib.contextmanager
def recording() -> Iterator[Record]:
    """Records what runs inside, every new tensor on the meta device; patched, so that every
    init function reaches one recordable op (stock's trunc_normal_ skips meta tensors from torch
    2.12 on, and in 2.11 runs five ops that together are no recordable law). torch.nn's known
    resets record their fills in one step, and data asked for on meta keeps its values
    (_StandInsWhileRecording)."""
    record = Record()
    recorder = _Recorder(record)
    outer = getattr(_this_thread, "recorder", None)
    with _patch.patched(), _STAND_INS_WHILE_RECORDING, recorder:
        _this_thread.recorder = recorder
        try:
            yield record
        finally:
            _this_thread.recorder = outer


# ---- stand-ins while recording: known resets in one step, data on meta -----------------------

_this_thread = threading.local()  # .recorder: the _Recorder of this thread's innermost recording
# The op each law of a known reset's fills reaches through the init functions, patched: what the
# general path records (the lean entries of _dispatch call the law's op, and fill_ for constants).
_ONE_STEP_OPS = {**_dispatch.LAW_OPS, "constant": aten.fill_.Scalar, "zero": aten.zero_.default}


def _recording_reset(reset: Callable) -> Callable:
    """`reset`, a known reset of torch.nn, for the time a recording runs: in a thread whose
    recorder can take its fills in one step, they are recorded without running its Python code,
    the init functions' and the dispatch of each op (most of a small layer's recording); anywhere
    else it runs."""

    @functools.wraps(reset)
    def recording_reset(self):
        recorder = getattr(_this_thread, "recorder", None)
        if recorder is None or not recorder.record_known_reset(reset, self):
            return reset(self)
        return None

    setattr(recording_reset, _known_resets.STANDS_FOR, reset)
    return recording_reset


# Factories of a tensor from Python data (a list, a number, an array) that build it on the CPU
# and move it to the device asked for below every dispatch mode: asked for the meta device (a
# constructor asking for its parameters' device, as transformers' RWKV does for its time-mixing
# weights), they give a meta tensor whose values never reach the recorder, which the replay would
# fill with uninitialized memory. While recording, they build on the CPU and the recorder records
# the copy to meta, values and all. (Each takes its data alone positionally: a method, its tensor
# too.)
_DATA_FACTORIES = (
    (torch, "tensor"),
    (torch, "as_tensor"),
    (torch, "asarray"),
    (torch.Tensor, "new_tensor"),
)


def _recording_data_factory(factory: Callable) -> Callable:
    """`factory`, one of _DATA_FACTORIES, for the time a recording runs: in a recording thread,
    data asked for on the meta device (new_tensor: by default, of a meta tensor) is built on the
    CPU, then copied to meta through the recorder."""
    is_method = factory is torch.Tensor.new_tensor

    @functools.wraps(factory)
    def recording_factory(*args, **kwargs):
        if getattr(_this_thread, "recorder", None) is None:
            return factory(*args, **kwargs)
        device = kwargs.get("device")
        if device is None and is_method and args:
            device = args[0].device
        data = args[-1] if args else kwargs.get("data", kwargs.get("obj"))
        if device is None or torch.device(device) != _META or isinstance(data, Tensor):
            return factory(*args, **kwargs)  # (a tensor's copy to meta is dispatched: recorded)
        kwargs = {**kwargs, "device": _CPU}
        requires_grad = kwargs.pop("requires_grad", False)
        kwargs.pop("pin_memory", None)  # (asked of the meta device, which has no pinned memory)
        return factory(*args, **kwargs).to(_META).requires_grad_(requires_grad)

    return recording_factory


def _stand_ins() -> list[tuple[object, str, Callable, Callable]]:
    """(owner, attribute, what it holds now, its stand-in) of each function a recording replaces
    while it runs: the known resets of torch.nn, recorded in one step (_recording_reset), the
    factories of tensors from data (_recording_data_factory), and Tensor.device (_device_seen).
    No reset that someone has replaced."""
    out = []
    for reset, known in _known_resets._KNOWN.items():
        name = reset.__name__
        if vars(known.owner).get(name) is reset:
            out.append((known.owner, name, reset, _recording_reset(reset)))
    for owner, name in _DATA_FACTORIES:
        factory = getattr(owner, name)
        out.append((owner, name, factory, _recording_data_factory(factory)))
    out.append((torch.Tensor, "device", _TENSOR_DEVICE, property(_device_seen)))
    return out


_TENSOR_DEVICE = vars(torch._C.TensorBase)["device"]
# Packages whose code sees meta tensors where they are: torch's own Python (reference
# implementations place their results by it) and this package's.
_SEE_META = {"torch", "torchinit_ext"}


def _device_seen(tensor: Tensor) -> torch.device:
    """Tensor.device while recording: for a meta tensor this thread's recording made, the device
    eager construction would have put it on (Record.device), so that a constructor that asks
    whether its tensors are on meta (transformers' DETR family copies its backbone's batch norms
    only `if module.weight.device != torch.device("meta")`) does what it does eagerly."""
    device = _TENSOR_DEVICE.__get__(tensor)
    if device.type != "meta":  # (every .device read of the process comes here while recording)
        return device
    recorder = getattr(_this_thread, "recorder", None)
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if (
        recorder is not None
        and caller.partition(".")[0] not in _SEE_META
        and storage_key(tensor) in recorder.record.nbytes
    ):
        return recorder.record.device
    return device


class _StandInsWhileRecording:
    """Installs the recording's stand-ins (_stand_ins) while any thread records, and puts the
    originals back when the last recording ends. An attribute changed by someone else since is
    left as it is; one the owner only inherited is deleted again."""

    def __init__(self):
        self._lock = threading.Lock()
        self._recordings = 0
        self._installed: list[tuple[object, str, Callable, Callable, bool]] = []

    def __enter__(self):
        with self._lock:
            if not self._recordings:
                for owner, name, original, stand_in in _stand_ins():
                    own = name in vars(owner)
                    setattr(owner, name, stand_in)
                    self._installed.append((owner, name, original, stand_in, own))
            self._recordings += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._recordings -= 1
            if not self._recordings:
                for owner, name, original, stand_in, own in self._installed:
                    if vars(owner).get(name) is stand_in:
                        if own:
                            setattr(owner, name, original)
                        else:
                            delattr(owner, name)
                self._installed.clear()


_STAND_INS_WHILE_RECORDING = _StandInsWhileRecording()


class _CollectorHeld:
    """Holds Python's cyclic garbage collector while any thread runs deferred_init() or
    materialize(), and lets it go when the last one returns (where it was running before). Each
    recorded op allocates a few objects that live as long as the record; counted against the
    collector's thresholds, they start collections that find nothing to free (the record's
    objects are alive, the rest freed by reference counting), a full one among them every few
    builds, which goes over the whole process: ~170 ms with torch, transformers and timm imported
    (280k objects, a Zen 4), more than a small model's whole build. Collections resume, on the
    usual thresholds, afterwards."""

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._resume = False

    def __enter__(self):
        with self._lock:
            if not self._holders:
                self._resume = gc.isenabled()
                gc.disable()
            self._holders += 1

    def __exit__(self, *exc_info):
        with self._lock:
            self._holders -= 1
            if not self._holders and self._resume:
                gc.enable()


collector_held = _CollectorHeld()


def deferred_init(fn: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    """Builds ``fn(*args, **kwargs)`` on the meta device, recording every op that writes its
    parameters and buffers (constructors' own re-inits, post_init/_init_weights, init_weights(),
    buffers computed by arange or arithmetic, writes through views). Returns the module, on meta;
    materialize() then replays the recorded writes on real storage.

    >>> model = torchinit_ext.deferred_init(LlamaForCausalLM, config)
    >>> torchinit_ext.materialize(model, device="cuda", seed=0)
    """
    with collector_held:
        return _deferred_init(fn, *args, **kwargs)


def _deferred_init(fn: Callable[..., nn.Module], *args, **kwargs) -> nn.Module:
    with recording() as record:
        module = fn(*args, **kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"deferred_init: fn must return an nn.Module, got {type(module).__name__}")
    tree = _tree.Tree(module, attributes=False)
    refuse_uninitialized("deferred_init", tree.subclassed)
    record.root = weakref.ref(module)
    on_meta: dict[int, Tensor] = {}  # id -> its meta twin, for every holder of a tied tensor
    converted = []  # the lifted tensors the module held, now on meta
    slots, taken = tree.slots, 0  # each module's slots follow the previous module's
    for prefix, owner in tree.pre_order:
        own = []  # its meta tensors, lifted ones put on meta first
        while taken < len(slots) and slots[taken][1] is owner:
            _, _, kind, name, tensor = slots[taken]
            taken += 1
            if not tensor.is_meta:
                if id(tensor) not in on_meta and storage_key(tensor) in record.lifted:
                    on_meta[id(tensor)] = like(tensor, record.on_meta(tensor))
                    converted.append(tensor)
                if id(tensor) in on_meta:
                    tensor = owner.__dict__[kind][name] = on_meta[id(tensor)]
            if tensor.is_meta:
                own.append((name, tensor, ref(tensor)))
        # By name too: sharding (fully_shard, parallelize_module) and casts (.half()) replace
        # the tensors or their storage, and a module materialized once holds real tensors.
        seen = [entry for entry in own if entry[2].storage in record.nbytes]
        if own and not seen and owner in _records:
            continue  # built by a deferred_init() of its own before, and passed in
        _records[owner] = (record, prefix)
        if seen:
            held_by = weakref.ref(owner)
            for name, tensor, tensor_ref in seen:
                built = _new_tuple(Built, (tensor_ref, tensor, held_by, tensor._version))
                record.built.setdefault(prefix + name, built)
    record.lifted.clear()
    record.twins.clear()
    # Where modules keep them elsewhere too (transformers' original_inv_freq).
    del tree, slots  # (which hold them too)
    if _held_elsewhere(converted):
        for _, owner, name in _tree.Tree(module).held:
            value = owner.__dict__[name]
            new = swapped(value, on_meta)
            if new is not value:
                owner.__dict__[name] = new
    return module


def _held_elsewhere(tensors: list[Tensor]) -> bool:
    """Whether anything but the list `tensors` holds one of them: a reference count (CPython's,
    exact) above the list's, the loop's and getrefcount's own. A walk of every module's
    attributes for them cost 1.3 ms of timm's EfficientNet-B0 (its BatchNorms' lifted
    num_batches_tracked), where nothing else holds them."""
    return any(sys.getrefcount(t) > 3 for t in tensors)
