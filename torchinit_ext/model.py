"""Whole-model initialization: materialize() modules built on the meta device, optionally keyed
by (seed, parameter name) so that values depend on nothing else.
"""

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from . import _known_resets, _record, _session, _sharded, _tree

__all__ = [
    "materialize",
    "UnrecordedInitWarning",
    "UninitializedError",
    "NotReplayableError",
    "LeftOnMetaWarning",
]

# ---- materialize -----------------------------------------------------------------------------


def _reset(module: nn.Module) -> None:
    for method in _known_resets.RESET_METHODS:
        reset = getattr(module, method, None)
        if callable(reset):
            reset()
            return


def _queue(fills: list[_known_resets.Fill], session: _session.Session) -> bool:
    """Queues the fills of a known reset (_known_resets.fills) when the session takes every
    tensor it fills, instead of running it; returns whether it did."""
    targets = []
    for tensor, law, _ in fills:
        target = None if law == "zero" else session.target(tensor)
        if target is None and law != "zero":
            return False
        targets.append(target)
    for target, (tensor, law, params) in zip(targets, fills):
        if law == "zero":
            tensor.zero_()
        else:
            session.defer(target, law, params, None)
    return True


def _on_meta(tensor: Tensor) -> bool:
    return _sharded.local_tensor(tensor).is_meta


def _untie(groups: list[list[_tree.Slot]]) -> set[int]:
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
            scratch.add(_session.memory_of(slots[other_name]))
    scratch.discard(0)
    return scratch


def _tie(groups: list[list[_tree.Slot]]) -> None:
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


# How _replay gives a tensor of the module its value, from the record:
_REPLAYED = "replayed"  # on meta as recorded: the replayed tensor takes its place
_CONVERTED = "converted"  # cast since (.half(), channels_last): the replayed value, converted
_IN_PLACE = "in place"  # real (materialized before): the replayed value written into it


def _how_replayed(
    tensor: Tensor, holder: dict, record, built
) -> tuple[str, _record._Ref] | tuple[None, None]:
    """How a plain (not sharded) tensor of the module gets its value from `record`, and the
    reference of that value in the record; (None, None) when the record has no value for it
    (made on meta after deferred_init())."""
    if not tensor.is_meta:
        return (_IN_PLACE, built.ref) if built is not None else (None, None)
    own = _record.ref(tensor)
    if own.storage in record.nbytes:
        return _REPLAYED, own
    if built is None:
        return None, None
    owner = built.owner()
    recorded = built.ref
    # A cast keeps the slot's module, the shape, and a Parameter's object (param.data is
    # replaced); a new tensor of the same dtype and layout in its place is a new tensor.
    if (
        owner is not None
        and holder in (owner._parameters, owner._buffers)
        and tuple(tensor.shape) == recorded.size
        and (
            tensor is built.tensor
            or (tensor.dtype, tuple(tensor.stride())) != (recorded.dtype, recorded.stride)
        )
    ):
        return _CONVERTED, recorded
    return None, None


def _written_since(tensor: Tensor, how: str | None, built) -> bool:
    """Whether an in-place op wrote `tensor` on meta after deferred_init() returned: its version
    counter moved (a write through .data has a counter of its own, and can't be seen)."""
    if built is None or not tensor.is_meta:
        return False
    if tensor is built.tensor:
        return tensor._version != built.version
    return how == _CONVERTED and tensor._version != 0  # a cast starts at 0


def _new_subtrees(
    module: nn.Module, prefix: str, new: set[int], record
) -> Iterator[tuple[str, nn.Module]]:
    """The largest submodules all of whose parameters and buffers are in `new`, not part of
    `record`'s module when it was built (swapped in since, or given to deferred_init() ready
    made), with their qualified-name prefixes."""
    tensors = [*module.parameters(), *module.buffers()]
    recorded = _record.record_of(module)
    if (
        tensors
        and all(id(t) in new for t in tensors)
        and (recorded is None or recorded[0] is not record)
    ):
        yield prefix, module
        return
    for name, child in module.named_children():
        yield from _new_subtrees(child, f"{prefix}{name}.", new, record)


def _replay(
    module: nn.Module,
    record,
    prefix: str,
    device,
    seed: int | None,
    qualifier: str | None = None,
    tree: _tree.Tree | None = None,
) -> nn.Module:
    """materialize() of a module built by deferred_init(), or of one of its submodules (whose
    names in the record start with `prefix`): the recorded writes that reach its tensors,
    replayed on `device`, elementwise fills batched (and keyed by name with a seed). Names (seed
    keys, errors) start with `qualifier`, by default `prefix`: the name of a module swapped into
    another from its own deferred_init() is its name in the module it is materialized with.

    The record is also found by name: a tensor cast since gets its recorded value converted; a
    real tensor (materialized before) is re-initialized in place; a submodule built on meta and
    swapped in since gets its resets, as materialize() gives any module built on meta. A tensor
    written on meta since, or made since where no reset fills it, is refused before anything is
    written.

    A tensor sharded since (a DTensor: FSDP2, tensor parallel), on meta or materialized before,
    gets its local shard only. When one elementwise fill gives its values, the fill runs on the
    shard, at its place in the replay; otherwise the full tensor is replayed and the shard copied
    from it."""
    qualifier = prefix if qualifier is None else qualifier
    tree = tree or _tree.Tree(module)
    local_names: dict[int, str] = {}
    named = (*tree.parameters.items(), *tree.buffers.items())
    for name, tensor in named:
        local_names.setdefault(id(tensor), name)
    names = {key: qualifier + name for key, name in local_names.items()}
    sharded = {n: t for n, t in named if _sharded.is_dtensor(t)}
    slots = [slot for slot in tree.places if not _sharded.is_dtensor(slot[3])]
    finals: dict[int, tuple[Tensor, _record._Ref, str]] = {}  # id -> (tensor, value's ref, how)
    new: dict[int, str] = {}  # meta tensors the record has no value for -> their names
    written_since, moved = [], []
    for qualified, holder, _, tensor in slots:
        key = id(tensor)
        if key in finals or key in new:
            continue
        local = local_names.get(key)
        built = None if local is None else record.built.get(prefix + local)
        how, value = _how_replayed(tensor, holder, record, built)
        if _written_since(tensor, how, built):
            written_since.append(names[key])
        if how is not None:
            finals[key] = (tensor, value, how)
        elif tensor.is_meta:
            new[key] = names.get(key, qualifier + qualified)
        else:
            moved.append(tensor)  # real all along (a layer built for real and passed in)
    subtrees = list(_new_subtrees(module, qualifier, set(new), record)) if new else []
    for _, subtree in subtrees:
        for tensor in (*subtree.parameters(), *subtree.buffers()):
            new.pop(id(tensor), None)
    if written_since or new:
        raise NotReplayableError.of(written_since, sorted(new.values()))
    if device is None:
        in_place = [tensor for tensor, _, how in finals.values() if how == _IN_PLACE]
        in_place += [t for t in sharded.values() if not _on_meta(t)]  # materialized before
        device = in_place[0].device if in_place else _target_device(None)
    device = torch.device(device)
    for subtree_prefix, subtree in subtrees:
        # Built by a deferred_init() of its own, it has its own record; else, its resets.
        recorded = _record.record_of(subtree)
        if recorded is not None and recorded[0] is not record:
            _replay(subtree, *recorded, device, seed, subtree_prefix)
        else:
            _reset_all(subtree, device, seed, subtree_prefix)

    session = _session.Session({}, seed, set(), checked=True)
    for tensor, ref, _ in finals.values():
        if id(tensor) in names:
            session.replayed_names.setdefault(ref.storage, []).append((names[id(tensor)], ref))
    replay = _record.Replay(record, device, session)
    needed = {ref.storage for _, ref, _ in finals.values()}
    # Sharded tensors copied from their full replayed value, by its storage: each copied once
    # its last write has run, and the full value let go of then.
    copied: dict[int, list[Callable]] = {}
    if sharded:
        if any(_on_meta(t) for t in sharded.values()):
            module.to_empty(device=device)  # the shards' memory, as FSDP2 and TP allocate it
        allocated = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        for name in sharded:
            tensor = allocated[name]
            built = record.built.get(prefix + name)
            if built is None:
                raise RuntimeError(f"materialize: {name!r} was not built by deferred_init()")
            if record.filled_whole_by_one_fill(built.ref):
                replay.substitute(built.ref, tensor)
                session.names[_session.extent(tensor)] = qualifier + name
            else:
                copy = functools.partial(_copy_shard, replay, built.ref, tensor)
                copied.setdefault(built.ref.storage, []).append(copy)
                # The full value is the tensor's as one device replays it: its fills are keyed by
                # its name under a seed, as they are there.
                named_ref = (qualifier + name, built.ref)
                session.replayed_names.setdefault(built.ref.storage, []).append(named_ref)
    wanted = needed | set(replay.substitutes) | set(copied)
    if record.unknown(wanted):
        raise NotReplayableError.of([], [], _computed_from_unknown(record, finals, slots))
    ops = record.needed(wanted)
    made = None if sharded else _made_by_whole_writes(record, ops, finals, names, device, seed)
    if made is not None:
        real = {
            key: _record.like(tensor, made[ref.storage]) for key, (tensor, ref, _) in finals.items()
        }
    else:
        real = _replayed(replay, session, ops, finals, needed, copied, device, seed)
    # Real tensors the module holds go to `device`.
    moved_to = {id(t): _moved(t, device) for t in moved if t.device != device}
    real.update(moved_to)
    # A submodule's tensors may be held elsewhere in the model too (tied weights): everywhere.
    root = record.root() if prefix else None
    everywhere = _tree.Tree(root) if root is not None else tree
    for _, holder, name, tensor in everywhere.places:
        if id(tensor) in real:
            holder[name] = real[id(tensor)]
    # And in lists a module keeps of its own parameters (nn.LSTM's _flat_weights).
    for _, submodule, attr in everywhere.held:
        value = submodule.__dict__[attr]
        swapped = _record.swapped(value, real)
        if swapped is not value:
            submodule.__dict__[attr] = swapped
    return module


def _replayed(replay, session, ops, finals: dict, needed: set, copied: dict, device, seed):
    """The values of `finals` (_replay's: id -> (tensor, ref, how)), by id, as `replay` gives
    them running `ops` in `session`: the general path of _replay."""
    # With a seed, random ops that take no generator (randint) draw from the seed too.
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng, torch.no_grad():
        if seed is not None:
            torch.default_generator.manual_seed(seed)
        replay.prepare(ops, later=set(copied))
        try:
            with session.running():
                replay.run(ops, needed, finish=copied)
        except BaseException:
            # The traceback holds this frame, and a notebook holds the last traceback: let go of
            # the replayed memory now rather than when the exception is dropped.
            replay.clear()
            raise
        real: dict[int, Tensor] = {}
        for key, (tensor, ref, how) in finals.items():
            value = replay.tensor(ref)
            if how == _IN_PLACE and tensor.device == device:
                tensor.copy_(value)  # (converting as it copies)
                continue
            if how != _REPLAYED:
                value = _converted(value, tensor, device)
            if how == _IN_PLACE:
                tensor.data = value  # moved, as module.to() moves it
                continue
            real[key] = _record.like(tensor, value)
    return real


def _made_by_whole_writes(
    record, ops, finals: dict, names: dict, device, seed
) -> dict[int, Tensor] | None:
    """The replayed values of `finals` (_replay's), by storage, where each of `ops` is an
    elementwise fill or a copy of captured values that writes one of them whole
    (_record.whole_writes), all named and replayed as recorded: the fills made and run in one
    step (_session.fill_new), the values the general path gives, for a fraction of its host work
    a tensor. None elsewhere, having done nothing: where a dispatch or __torch_function__ mode is
    on too, which must see each op."""
    if torch._C._len_torch_dispatch_stack() or torch._C._is_torch_function_mode_enabled():
        return None
    named: dict[int, tuple[_record._Ref, str]] = {}
    for key, (_, ref, how) in finals.items():
        if how != _REPLAYED or key not in names:
            return None
        named[ref.storage] = (ref, names[key])
    if len(named) != len(finals):
        return None  # (storages that several of them share)
    writes = _record.whole_writes(record, ops, {key: ref for key, (ref, _) in named.items()})
    if writes is None:
        return None
    fills, copies = writes
    made = {}
    for ref, value in copies:
        tensor = torch.empty_strided(ref.size, ref.stride, dtype=ref.dtype, device=device)
        storage = tensor.untyped_storage()
        if storage.nbytes() != value.nbytes:
            return None  # (strides that leave gaps)
        made[ref.storage] = tensor
    targets = [(ref, law, params, named[ref.storage][1]) for ref, law, params in fills]
    tensors = _session.fill_new(targets, device, seed)
    if tensors is None:
        return None
    made.update((ref.storage, tensor) for (ref, *_), tensor in zip(targets, tensors))
    for ref, value in copies:
        storage = made[ref.storage].untyped_storage()
        torch.empty(0, dtype=torch.uint8, device=device).set_(storage).copy_(value)
    return made


def _computed_from_unknown(record, finals: dict, slots: list) -> list[str]:
    """The names of the tensors among `finals` (by id, of `slots`: _tree.Tree.places) whose values
    the record computes from storages whose values are unknown (Record.unknown)."""
    names = {id(tensor): name for name, _, _, tensor in reversed(slots)}  # (each its first)
    return sorted(
        names[key] for key, (_, ref, _) in finals.items() if record.unknown({ref.storage})
    )


def _copy_shard(replay: _record.Replay, ref: _record._Ref, tensor: Tensor) -> None:
    _sharded.copy_from_full(tensor, replay.tensor(ref))


def _converted(value: Tensor, like: Tensor, device: torch.device) -> Tensor:
    """`value` in `like`'s dtype and layout, on `device`."""
    if (value.dtype, value.stride(), value.device) == (like.dtype, like.stride(), device):
        return value
    converted = torch.empty_strided(like.shape, like.stride(), dtype=like.dtype, device=device)
    return converted.copy_(value)


def _moved(tensor: Tensor, device: torch.device) -> Tensor:
    return _record.like(tensor, tensor.detach().to(device))


def materialize(
    module: nn.Module,
    device: torch.device | str | None = None,
    seed: int | None = None,
) -> nn.Module:
    """Gives `module` storage on `device` and initializes it by running every submodule's own
    reset_parameters() (or _reset_parameters()), children first, with the compiled fills (torch.nn's
    own resets, Linear's, the convolutions', the norms', Embedding's, MultiheadAttention's, are
    queued as the fills they make without running their Python code: the same values).

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

    A module built by deferred_init(), or any submodule of one, is instead materialized by
    replaying the record of its construction: every write that survives into its tensors,
    elementwise fills batched into one fill_many_, so that each tensor gets the law eager
    construction gives it. Called again, it replays again, writing in place. Tensors cast since
    get the recorded values cast; submodules built on meta and swapped in since get their
    resets; a tensor written on meta since deferred_init() returned, or a new one no reset fills,
    raises NotReplayableError naming it, before anything is written.

    Warns (LeftOnMetaWarning) naming tensors that stay on meta: those held in lists, tuples or
    dicts, which no module method reaches.
    """
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise TypeError(f"materialize: seed must be an int or None, got {type(seed).__name__}")
    with _record.collector_held:
        return _materialize(module, device, seed)


def _materialize(module: nn.Module, device, seed: int | None) -> nn.Module:
    tree = _tree.Tree(module)
    _record.refuse_uninitialized("materialize", tree.subclassed)
    recorded = _record.record_of(module)
    if recorded is not None:
        record, prefix = recorded
        _replay(module, record, prefix, device, seed, tree=tree)
        _warn_left_on_meta(module, prefix, tree)
        return module
    from_meta = tree.on_meta
    if not from_meta and device is not None:
        module.to(device)
        tree = None  # module.to() may have given it new tensors
    device = _target_device(device) if from_meta else None
    _reset_all(module, device, seed, "", tree, None if from_meta else set())
    _warn_left_on_meta(module, "", tree)
    return module


def _reset_all(
    module: nn.Module,
    device: torch.device | None,
    seed: int | None,
    prefix: str,
    tree: "_tree.Tree | None" = None,
    from_meta: set[str] | None = None,
):
    """materialize() by resets: the tensors on meta given storage on `device` first. Qualified
    names (seed keys, errors) start with `prefix`. `tree` is the module's _tree.Tree, and
    `from_meta` the names of its tensors on meta, when known."""
    tree = tree or _tree.Tree(module)
    params, tied = tree.parameters, tree.tied
    named = {**params, **tree.buffers}
    if from_meta is None:
        from_meta = {name for name, t in named.items() if _on_meta(t)}
    # Tied tensors: each holder's reset runs as in eager construction, where ties are made after
    # the layers are built and the first holder's values are kept (_untie, then _tie).
    if from_meta:
        module.to_empty(device=device)
    scratch = _untie(tied)
    if from_meta or tied:
        tree = _tree.Tree(module)  # new tensors: to_empty's storage, _untie's scratch tensors
        named = {**tree.parameters, **tree.buffers}
    by_object = tree.names
    if prefix:
        by_object = {key: (t, prefix + name) for key, (t, name) in by_object.items()}
    session = _session.Session(
        {prefix + n: t for n, t in named.items()}, seed, scratch, by_object=by_object
    )
    resets = _known_resets.Resets()
    try:
        with session.running():
            for submodule in tree.post_order:
                fills = _known_resets.fills(submodule, resets)
                if fills is None or (fills and not _queue(fills, session)):
                    _reset(submodule)
    finally:
        _tie(tied)
    missed = [
        prefix + name
        for name, t in named.items()
        if (name in params or name in from_meta)
        and prefix + name not in session.filled
        and _session.memory_of(t) not in session.written
        and t.numel()
    ]
    if from_meta:
        _warn_unrecorded(module, {prefix + n for n in from_meta} - set(missed), prefix)
    if missed:
        raise UninitializedError(
            "materialize: no reset_parameters() or _reset_parameters() of the module or its "
            f"submodules initialized {', '.join(repr(n) for n in missed)}; give the module that "
            "owns each of them a reset_parameters() that fills it, or build the module with "
            "torchinit_ext.deferred_init()",
            missed,
        )


def _warn_left_on_meta(module: nn.Module, prefix: str, tree: _tree.Tree | None = None) -> None:
    """Warns, naming them, of meta tensors the module holds in lists, tuples or dicts, or as
    plain attributes where no record places them: materialize() can't reach them. `tree`: the
    module's _tree.Tree, when walked."""
    left = []
    for dotted, submodule, attr in (tree or _tree.Tree(module)).held:
        left += _meta_leaves(submodule.__dict__.get(attr), prefix + dotted + attr)
    if left:
        warnings.warn(
            LeftOnMetaWarning(
                f"materialize: {len(left)} tensors ({_listed(left)}) stay on the meta "
                "device: a plain attribute, list, tuple or dict is no parameter or buffer, so no "
                "method of the module reaches it; register them as buffers, or build them after "
                "materialize()",
                left,
            ),
            stacklevel=_stacklevel(),
        )


def _meta_leaves(value, name: str, depth: int = 0) -> list[str]:
    if isinstance(value, Tensor):
        return [name] if _on_meta(value) else []
    if depth == _tree.CONTAINER_DEPTH:
        return []
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return []
    return [
        leaf for key, item in items for leaf in _meta_leaves(item, f"{name}[{key!r}]", depth + 1)
    ]


_PACKAGE = os.path.dirname(__file__)


def _stacklevel() -> int:
    """warnings.warn's stacklevel that points at the first caller outside this package."""
    frame, level = sys._getframe(2), 2  # the frame above the one that warns
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


class _NamesTensors:
    """An exception or warning whose `names` lists every tensor it concerns, where its message,
    kept short, names the first few."""

    def __init__(self, message: str, names: list[str] = ()):
        super().__init__(message)
        self.names = list(names)


class UninitializedError(_NamesTensors, RuntimeError):
    """materialize() found tensors that no reset wrote; `names` lists them all."""


class NotReplayableError(_NamesTensors, RuntimeError):
    """materialize() of a deferred_init() module found tensors its record has no values for;
    `names` lists them all."""

    @classmethod
    def of(
        cls, written_since: list[str], new: list[str], unknown: list[str] = ()
    ) -> "NotReplayableError":
        parts = []
        if written_since:
            parts.append(
                "written on the meta device after deferred_init() returned, where writes have "
                f"no values: {_listed(written_since)} (write them after materialize(), or in the "
                "function given to deferred_init())"
            )
        if new:
            parts.append(
                "made on the meta device after deferred_init() returned, beside recorded "
                f"tensors of their module, so that no reset can fill them alone: {_listed(new)} "
                "(make them in the function given to deferred_init())"
            )
        if unknown:
            parts.append(
                "computed from meta tensors made where the recording could not see them, whose "
                f"values are unknown: {_listed(unknown)} (a factory of data, such as "
                "torch.tensor(data, device=...), called under another name than torch.tensor, "
                "torch.as_tensor, torch.asarray or Tensor.new_tensor; or a tensor built on meta "
                "before deferred_init() began)"
            )
        return cls(f"materialize: {'; and '.join(parts)}", [*written_since, *new, *unknown])


def _listed(names: list[str]) -> str:
    """The first few of `names`, for a message; an exception's or warning's .names has all."""
    shown = ", ".join(names[:6])
    return shown + (f" and {len(names) - 6} more, all in .names" if len(names) > 6 else "")


class LeftOnMetaWarning(_NamesTensors, UserWarning):
    """materialize() left tensors of the module on the meta device (held in containers, which
    no module method reaches); `names` lists them all."""


class UnrecordedInitWarning(_NamesTensors, UserWarning):
    """materialize() ran the resets of a module built on the meta device without
    deferred_init(), and constructors outside torch.nn may have initialized its tensors their
    own way, which the resets do not reproduce. `names` lists every such tensor."""


def _owners(name: str) -> set[str]:
    """The qualified names of the modules above the tensor `name` ("" for the root)."""
    parts = name.split(".")
    return {".".join(parts[:k]) for k in range(len(parts))}


def _warn_unrecorded(module: nn.Module, from_meta: set[str], prefix: str) -> None:
    """Warns, naming them, of the tensors under modules whose class is not torch.nn's: only a
    record (deferred_init) knows what their constructors wrote (torchvision's ResNet re-inits
    its convolutions and zeroes its last BatchNorms; transformers' post_init re-inits all)."""
    custom = {
        (prefix + name).rstrip("."): type(m)
        for name, m in module.named_modules()
        if not type(m).__module__.startswith("torch.nn.")
    }
    affected = sorted(name for name in from_meta if _owners(name) & custom.keys())
    if not affected:
        return
    classes = sorted({f"{c.__module__}.{c.__qualname__}" for c in custom.values()})
    classes_shown = ", ".join(classes[:4]) + (" ..." if len(classes) > 4 else "")
    warnings.warn(
        UnrecordedInitWarning(
            f"materialize: {len(affected)} tensors ({_listed(affected)}) were "
            "initialized by their layers' reset_parameters(), but they sit under modules of "
            f"classes outside torch.nn ({classes_shown}) whose constructors may have initialized "
            "them differently; build the model with torchinit_ext.deferred_init() to replay "
            "exactly what its constructors did",
            affected,
        ),
        stacklevel=_stacklevel(),
    )
