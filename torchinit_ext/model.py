"""Whole-model initialization: materialize() modules built on the meta device, optionally keyed
by (seed, parameter name) so that values depend on nothing else.
"""

import contextlib
import hashlib
import struct
import warnings
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from . import _dispatch, _record, _sharded
from ._dispatch import compiled, ops
from ._patch import patched

__all__ = ["materialize", "UnrecordedInitWarning", "UninitializedError"]

# ---- materialize -----------------------------------------------------------------------------


def seed_key(seed: int, name: str) -> tuple[int, int]:
    """The Philox (key, offset) of the tensor named `name` under materialize(seed=seed): the
    16-byte BLAKE2b digest (digest_size=16) of "<seed>/<name>", as two little-endian signed
    64-bit integers (docs/rng-contract.md, "Seeded keys")."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=16).digest()
    return struct.unpack("<qq", digest)


def _storage_id(tensor: Tensor) -> int:
    """The address of the memory holding this rank's elements of `tensor` (0 for none)."""
    local = _sharded.local_tensor(tensor)
    return local.untyped_storage().data_ptr() if local.numel() and not local.is_meta else 0


def _extent(tensor: Tensor) -> tuple:
    """Which elements of which memory `tensor` holds on this rank, and as what dtype."""
    local = _sharded.local_tensor(tensor)
    return (_storage_id(local), local.storage_offset(), local.shape, local.stride(), local.dtype)


class _Session:
    """The fills of one materialize() call. Elementwise fills of the module's tensors are queued
    and run together in one fill_many_ (flush()); with a seed, each tensor's fills use the key of
    its name. A dispatch mode (_Tracker) flushes the queue before any other op touches a queued
    tensor, and records which memory was written. Fills of `scratch` memory (see _untie) draw
    their keys as any fill does, and write nothing. A replay (`checked`) queues without checking
    arguments: each recorded fill passed its meta kernel's checks when it was recorded."""

    def __init__(
        self, named: dict[str, Tensor], seed: int | None, scratch: set[int], checked=False
    ):
        self.seed = seed
        self.scratch = scratch
        self.check = not checked
        self.names = {_extent(t): name for name, t in named.items() if _storage_id(t)}
        # storage -> {extent: (local, law, params, key, block)}: the queue, by memory touched.
        self.pending: dict[int, dict[tuple, tuple]] = {}
        self.written: set[int] = set()
        self.checked: set[tuple] = set()  # (law, params, dtype, shape, strides) that passed

    def _name(self, tensor: Tensor) -> str | None:
        """The qualified name of `tensor` when it is one of the module's tensors, whole."""
        return self.names.get(_extent(tensor)) if _storage_id(tensor) else None

    def try_defer(self, tensor: Tensor, law: str, params: tuple, generator) -> bool:
        """Queues the fill when `tensor` is one of the module's tensors that fill_many_ takes;
        returns whether it did."""
        local = _sharded.local_tensor(tensor)
        name = self._name(tensor)
        if name is None or not (_dispatch.is_float(local) and compiled(local)):
            return False
        block = _sharded.block(tensor)
        if block is None:
            return False
        if self.check:
            self._check(local, law, params)
        if law == "constant":
            key = [0, 0]
        elif self.seed is not None:
            key = list(seed_key(self.seed, name))
        else:
            key = ops.philox_key(local, generator)  # drawn now, as an immediate fill would
        storage = _storage_id(tensor)
        if storage in self.scratch:
            return True
        # A later fill of the same tensor replaces an earlier one.
        self.pending.setdefault(storage, {})[_extent(tensor)] = (local, law, params, key, block)
        self.written.add(storage)
        return True

    def _check(self, local: Tensor, law: str, params: tuple) -> None:
        """Raises the fill's argument errors now, at the call, by the meta kernel's checks. They
        depend only on the law, its parameters, and the tensor's dtype, shape and strides (for
        overlap), so a model's many same-shaped layers are checked once."""
        signature = (law, tuple(map(float, params)), local.dtype, local.shape, local.stride())
        if signature in self.checked:
            return
        # (A factory op, so the check doesn't count as touching a queued tensor.)
        meta = torch.empty_strided(local.shape, local.stride(), dtype=local.dtype, device="meta")
        _dispatch.call_many(
            [meta], [law], [params], [[0, 0]], [(list(local.shape), [0] * local.dim())]
        )
        self.checked.add(signature)

    def generator_for(self, tensor: Tensor, generator):
        """The generator of a fill that is not elementwise: with a seed, one keyed by the name."""
        name = self._name(tensor) if self.seed is not None else None
        if name is None:
            return generator
        key = seed_key(self.seed, name)[0] & (2**63 - 1)
        # The compiled kernels take a CPU generator on any device, with the CPU's values; stock
        # wants the tensor's own device.
        local = _sharded.local_tensor(tensor)
        device = "cpu" if compiled(local) else local.device
        return torch.Generator(device=device).manual_seed(key)

    def flush(self) -> None:
        if not self.pending:
            return
        queued = [fill for fills in self.pending.values() for fill in fills.values()]
        self.pending.clear()
        local, laws, params, keys, blocks = zip(*queued)
        _dispatch.call_many(list(local), list(laws), list(params), list(keys), list(blocks))


class _Tracker(TorchDispatchMode):
    """Runs queued fills before any op that touches their memory, and records writes."""

    def __init__(self, session: _Session):
        super().__init__()
        self.session = session

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not func.is_view:
            session = self.session
            for i, (name, is_write, _, _) in enumerate(_record.arguments(func)):
                value = args[i] if i < len(args) else kwargs.get(name)
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if not isinstance(t, Tensor):
                        continue
                    storage = _storage_id(t)
                    if storage in session.pending:
                        session.flush()
                    if is_write:
                        session.written.add(storage)
        return func(*args, **kwargs)


def _post_order(module: nn.Module, seen: set[int]) -> Iterator[nn.Module]:
    """Children before their parent, each module once: the order of eager construction, where
    a parent's own reset (nn.Transformer's, MultiheadAttention's) runs after its children's."""
    if id(module) in seen:
        return
    seen.add(id(module))
    for child in module.children():
        yield from _post_order(child, seen)
    yield module


def _reset(module: nn.Module) -> None:
    for method in ("reset_parameters", "_reset_parameters"):
        reset = getattr(module, method, None)
        if callable(reset):
            reset()
            return


def _on_meta(tensor: Tensor) -> bool:
    return _sharded.local_tensor(tensor).is_meta


# A tensor slot of a module: (the module, "_parameters" or "_buffers", the attribute name).
_Slot = tuple[nn.Module, str, str]


def _shared_slots(module: nn.Module) -> list[list[_Slot]]:
    """The slots that hold one tensor object together (tied weights), each group in
    named_parameters() order: the first is the slot that names the tensor."""
    holders: dict[int, list[_Slot]] = {}
    seen: set[tuple[int, str]] = set()
    for submodule in module.modules(remove_duplicate=False):
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(submodule, kind).items():
                if tensor is not None and (id(submodule), name) not in seen:
                    seen.add((id(submodule), name))
                    holders.setdefault(id(tensor), []).append((submodule, kind, name))
    return [slots for slots in holders.values() if len(slots) > 1]


def _untie(groups: list[list[_Slot]]) -> set[int]:
    """Gives each slot of a group but the first a scratch tensor of its own (to_empty from meta
    gives plain tensors one already), so that every holder's reset runs, drawing its keys as in
    eager construction, while only the first holder's reset writes the tied tensor. Returns the
    scratch tensors' memory: their elementwise fills are skipped, so it is never touched."""
    scratch = set()
    for (owner, kind, name), *others in groups:
        tensor = getattr(owner, kind)[name]
        for submodule, other_kind, other_name in others:
            slots = getattr(submodule, other_kind)
            if slots[other_name] is tensor:
                own = torch.empty_like(tensor)
                if isinstance(tensor, nn.Parameter):
                    own = nn.Parameter(own, tensor.requires_grad)
                slots[other_name] = own
            scratch.add(_storage_id(slots[other_name]))
    scratch.discard(0)
    return scratch


def _tie(groups: list[list[_Slot]]) -> None:
    """Makes each group's slots hold the first slot's tensor again."""
    for (owner, kind, name), *others in groups:
        tensor = getattr(owner, kind)[name]
        for submodule, other_kind, other_name in others:
            getattr(submodule, other_kind)[other_name] = tensor


def _target_device(device) -> torch.device:
    """`device`, or the default device where that is not meta."""
    if device is None:
        device = torch.get_default_device()
        return torch.device("cpu") if device.type == "meta" else device
    return torch.device(device)


def _tensor_slots(module: nn.Module) -> Iterator[tuple[dict, str, Tensor]]:
    """Every place a module of the tree holds a tensor: parameters, buffers and plain tensor
    attributes (such as a rotary embedding's copy of its inv_freq)."""
    for submodule in module.modules():
        for slots in (submodule._parameters, submodule._buffers, submodule.__dict__):
            for name, tensor in slots.items():
                if isinstance(tensor, Tensor):
                    yield slots, name, tensor


def _replay(module: nn.Module, record, device: torch.device, seed: int | None) -> nn.Module:
    """materialize() of a module built by deferred_init(): the recorded writes that reach its
    tensors, replayed on `device`, elementwise fills batched (and keyed by name with a seed).

    A tensor sharded since (a DTensor: FSDP2, tensor parallel) gets its local shard only. When
    one elementwise fill gives its values, the fill runs on the shard, at its place in the
    replay; otherwise the full tensor is replayed and the shard copied from it."""
    names: dict[int, str] = {}
    named = (*module.named_parameters(), *module.named_buffers())
    for name, tensor in named:
        names.setdefault(id(tensor), name)
    sharded = {n: t for n, t in named if _sharded.is_dtensor(t) and _on_meta(t)}
    slots, real_slots = [], []  # plain tensors to replay, and those the constructor made real
    for slot in _tensor_slots(module):
        if not _sharded.is_dtensor(slot[2]):
            (slots if slot[2].is_meta else real_slots).append(slot)
    finals = {id(tensor): (tensor, _record.ref(tensor)) for _, _, tensor in slots}
    named_refs: dict[int, list] = {}
    for tensor, ref in finals.values():
        if id(tensor) in names:
            named_refs.setdefault(ref.storage, []).append((names[id(tensor)], ref))
    session = _Session({}, seed, set(), checked=True)

    def name_tensors(replay: _record.Replay, storage: int) -> None:
        for name, ref in named_refs.get(storage, ()):
            session.names[_extent(replay.tensor(ref))] = name

    replay = _record.Replay(record, device, name_tensors)
    needed = {ref.storage for _, ref in finals.values()}
    copied = {}  # sharded tensors copied from their full replayed value
    if sharded:
        module.to_empty(device=device)  # the shards' memory, as FSDP2 and TP allocate it
        allocated = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        for name in sharded:
            tensor = allocated[name]
            ref = record.refs_by_name.get(name)
            if ref is None:
                raise RuntimeError(f"materialize: {name!r} was not built by deferred_init()")
            if record.filled_whole_by_one_fill(ref):
                replay.substitute(ref, tensor)
                session.names[_extent(tensor)] = name
            else:
                copied[name] = (tensor, ref)
                needed.add(ref.storage)
    ops = record.needed(needed | set(replay.substitutes))
    previous = _dispatch.active_session()
    # With a seed, draws that no name keys (temporaries) come from the seed too.
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, patched(), torch.no_grad():
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        _dispatch.set_session(session)
        try:
            replay.prepare(ops)
            with _Tracker(session):
                replay.run(ops, needed)
                session.flush()
        except BaseException:
            # The traceback holds this frame, and a notebook holds the last traceback: let go of
            # the replayed memory now rather than when the exception is dropped.
            replay.clear()
            session.pending.clear()
            raise
        finally:
            _dispatch.set_session(previous)
        for tensor, ref in copied.values():
            _sharded.fill_from_full(tensor, lambda full, ref=ref: full.copy_(replay.tensor(ref)))
    real: dict[int, Tensor] = {}
    for key, (tensor, ref) in finals.items():
        value = replay.tensor(ref)
        if isinstance(tensor, nn.Parameter):
            value = nn.Parameter(value, tensor.requires_grad)
            value.__dict__.update(tensor.__dict__)
        real[key] = value
    for holder, name, tensor in slots:
        holder[name] = real[id(tensor)]
    # Tensors the constructor made real (torch.tensor(...), say) go to `device`.
    for holder, name, tensor in real_slots:
        if tensor.device != device:
            holder[name] = _moved(tensor, device)
    _record.forget(module)
    return module


def _moved(tensor: Tensor, device: torch.device) -> Tensor:
    moved = tensor.detach().to(device)
    if isinstance(tensor, nn.Parameter):
        moved = nn.Parameter(moved, tensor.requires_grad)
    return moved


def materialize(
    module: nn.Module,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Gives `module` storage on `device` and initializes it by running every submodule's own
    reset_parameters() (or _reset_parameters()), children first, with the compiled fills.

    For a module built under ``torch.device("meta")`` this is what eager construction would have
    given, without constructing twice. A module on a real device is re-initialized in place, or
    moved first when `device` differs. Elementwise fills of all tensors run together in one
    parallel region. DTensor parameters (FSDP2, tensor parallel) get their local shards only.

    A tensor held by several modules (tied weights) stays one tensor, with the values that the
    reset of the module first in named_parameters() order gives it, which are the values eager
    construction keeps when the model ties its weights after building its layers.

    With `seed` (an int), each parameter and buffer is keyed by (seed, its qualified name) and
    each element by its index in the full tensor: values then do not depend on device, thread
    count, initialization order or sharding, nor on the global RNG (orthogonal_ up to the
    rounding of the device's BLAS).

    Raises UninitializedError (a RuntimeError) naming any parameter, or any buffer that had no
    storage, which no reset method wrote; the module is then partly initialized. Warns first
    (UnrecordedInitWarning), naming them, of the other tensors under modules of classes outside
    torch.nn: their constructors may have initialized them in ways no reset reproduces.

    A module built by deferred_init() is instead materialized by replaying the record of its
    construction: every write that survives into its tensors, elementwise fills batched into
    one fill_many_, so that each tensor gets the law eager construction gives it.
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"materialize: seed must be an int or None, got {type(seed).__name__}")
    record = _record.record_of(module)
    if record is not None:
        return _replay(module, record, _target_device(device), seed)
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    from_meta = {name for name, t in tensors.items() if _on_meta(t)}
    # Tied tensors: each holder's reset runs as in eager construction, where ties are made after
    # the layers are built and the first holder's values are kept (_untie, then _tie).
    tied = _shared_slots(module)
    if from_meta:
        module.to_empty(device=_target_device(device))
    elif device is not None:
        module.to(device)
    scratch = _untie(tied)
    named = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    session = _Session(named, seed, scratch)
    previous = _dispatch.active_session()
    with patched(), torch.no_grad():
        _dispatch.set_session(session)
        try:
            with _Tracker(session):
                for submodule in _post_order(module, set()):
                    _reset(submodule)
                session.flush()
        finally:
            _dispatch.set_session(previous)
            _tie(tied)
    params = dict(module.named_parameters())  # tied again: no scratch names
    missed = [
        name
        for name, t in named.items()
        if t.numel()
        and _storage_id(t) not in session.written
        and (name in params or name in from_meta)
    ]
    if from_meta:
        _warn_unrecorded(module, from_meta - set(missed))
    if missed:
        raise UninitializedError(
            "materialize: no reset_parameters() or _reset_parameters() of the module or its "
            f"submodules initialized {', '.join(repr(n) for n in missed)}; give the module that "
            "owns each of them a reset_parameters() that fills it, or build the module with "
            "torchinit_ext.deferred_init()",
            missed,
        )
    return module


class _NamesTensors:
    """An exception or warning whose `names` lists every tensor it concerns, where its message,
    kept short, names the first few."""

    def __init__(self, message: str, names: list[str] = ()):
        super().__init__(message)
        self.names = list(names)


class UninitializedError(_NamesTensors, RuntimeError):
    """materialize() found tensors that no reset wrote; `names` lists them all."""


class UnrecordedInitWarning(_NamesTensors, UserWarning):
    """materialize() ran the resets of a module built on the meta device without
    deferred_init(), and constructors outside torch.nn may have initialized its tensors their
    own way, which the resets do not reproduce. `names` lists every such tensor."""


def _owners(name: str) -> set[str]:
    """The qualified names of the modules above the tensor `name` ("" for the root)."""
    parts = name.split(".")
    return {".".join(parts[:k]) for k in range(len(parts))}


def _warn_unrecorded(module: nn.Module, from_meta: set[str]) -> None:
    """Warns, naming them, of the tensors under modules whose class is not torch.nn's: only a
    record (deferred_init) knows what their constructors wrote (torchvision's ResNet re-inits
    its convolutions and zeroes its last BatchNorms; transformers' post_init re-inits all)."""
    custom = {
        prefix: type(m)
        for prefix, m in module.named_modules()
        if not type(m).__module__.startswith("torch.nn.")
    }
    affected = sorted(name for name in from_meta if _owners(name) & custom.keys())
    if not affected:
        return
    classes = sorted({f"{c.__module__}.{c.__qualname__}" for c in custom.values()})
    classes_shown = ", ".join(classes[:4]) + (" ..." if len(classes) > 4 else "")
    more = f" and {len(affected) - 6} more, all in .names" if len(affected) > 6 else ""
    warnings.warn(
        UnrecordedInitWarning(
            f"materialize: {len(affected)} tensors ({', '.join(affected[:6])}{more}) were "
            "initialized by their layers' reset_parameters(), but they sit under modules of "
            f"classes outside torch.nn ({classes_shown}) whose constructors may have initialized "
            "them differently; build the model with torchinit_ext.deferred_init() to replay "
            "exactly what its constructors did",
            affected,
        ),
        stacklevel=3,
    )
