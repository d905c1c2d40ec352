"""The fills of one materialize() call: a Session queues the elementwise fills of a module's
tensors, each with its name's Philox state under a seed, and runs them together; a Tracker (a
dispatch mode) runs the queue before any op that touches queued memory and records what was
written.

The session is the calling thread's while it runs (`running()`): the fills that stock code calls
(a layer's reset_parameters()) reach it through _dispatch. A replay is given it explicitly.
"""

import contextlib
import hashlib
import struct
import weakref
from collections.abc import Iterator

import torch
from torch import Tensor

from . import _dispatch, _record, _sharded
from ._dispatch import _C, compiled
from ._patch import patched

_NO_STATE = (0, 0)  # a constant fill's: it draws nothing


def seed_state(seed: int, name: str) -> tuple[int, int]:
    """The Philox (key, offset) of the tensor named `name` under materialize(seed=seed): the
    16-byte BLAKE2b digest (digest_size=16) of "<seed>/<name>", as two little-endian signed
    64-bit integers (docs/rng-contract.md, "Seeded states")."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=16).digest()
    return struct.unpack("<qq", digest)


def generator_seed(seed: int, name: str) -> int:
    """The torch.Generator seed of what `name` seeds under materialize(seed=seed): seed_state's
    key, as a non-negative int64."""
    return seed_state(seed, name)[0] & (2**63 - 1)


def memory_of(tensor: Tensor) -> int:
    """The address of the memory holding this rank's elements of `tensor` (0 for none). A real
    tensor's memory is known by its address: the tensors a reset writes are made by ops this
    package does not see. (A record knows meta storages by their object: _record.storage_key.)"""
    local = _sharded.local_tensor(tensor)
    return local.untyped_storage().data_ptr() if local.numel() and not local.is_meta else 0


def extent(tensor: Tensor) -> tuple:
    """Which elements of which memory `tensor` holds on this rank, and as what dtype."""
    local = _sharded.local_tensor(tensor)
    return (memory_of(local), local.storage_offset(), local.shape, local.stride(), local.dtype)


def fill_new(
    targets: list[tuple["_record._Ref", str, tuple, str]], device: torch.device, seed: int | None
) -> list[Tensor] | None:
    """New tensors on `device` of the geometries of `targets` ((reference, law, parameters,
    name)), filled by their laws in one fill_many_, each fill's Philox state drawn in order as a
    Session draws it (from the default generator; with a seed, its name's): a replay of whole
    fills alone (model._replay). None, having drawn and written nothing, where the compiled fills
    take none of one of them."""
    draws = [seed is None and law != "constant" for _, law, _, _ in targets]
    made = _C.new_fill_targets([ref for ref, _, _, _ in targets], device, draws)
    if made is None:
        return None
    tensors, states = made
    if not tensors:
        return tensors
    if seed is not None:
        states = [
            _NO_STATE if law == "constant" else seed_state(seed, name)
            for _, law, _, name in targets
        ]
    laws = [law for _, law, _, _ in targets]
    params = [params for _, _, params, _ in targets]
    _dispatch.call_many(tensors, laws, params, states, [None] * len(tensors))
    return tensors


class Session:
    """The fills of one materialize() call. Elementwise fills of the module's tensors are queued and
    run together in one fill_many_ (flush()); with a seed, each tensor's fills use the Philox state
    of its name. A dispatch mode (Tracker) flushes the queue before any other op touches a queued
    tensor, and records which memory was written. Fills of `scratch` memory (see _untie) draw their
    states as any fill does, and write nothing. A replay (`checked`) queues without checking
    arguments: each recorded fill passed its meta kernel's checks when it was recorded."""

    def __init__(
        self,
        named: dict[str, Tensor],
        seed: int | None,
        scratch: set[int],
        checked=False,
        by_object: dict[int, tuple[Tensor, str]] | None = None,
    ):
        self.seed = seed
        self.scratch = scratch
        self.check = not checked
        self._named = named
        # The module's tensors by object (id -> (tensor, name)), when the caller has them: a
        # reset fills its own parameters and buffers.
        if by_object is None:
            by_object = {id(t): (t, name) for name, t in named.items()}
        self._by_object = by_object
        self._names: dict[tuple, str] | None = None  # by extent: see `names`
        # The queue, by extent: (local, law, params, state, shard), and the memory it touches.
        self.pending: dict[tuple, tuple] = {}
        self.pending_memory: set[int] = set()
        self.written: set[int] = set()  # memory written by ops the Tracker saw
        self.filled: set[str] = set()  # names of the tensors deferred fills wrote whole
        self.own_op = False  # see _own_op
        self.checked: set[tuple] = set()  # (law, params, dtype, shape, strides) that passed
        # A replay's storages -> the names and references of the module's tensors on them.
        self.replayed_names: dict[int, list[tuple[str, _record._Ref]]] = {}
        # The replay's storages made since `names` was last read, which name tensors: named
        # when it is read next (most replays never read it: Replay._queued_whole names its fills
        # itself). The replay by weak reference: it holds this session.
        self._unnamed: list[tuple[weakref.ref, int]] = []

    @property
    def names(self) -> dict[tuple, str]:
        """The module's tensors by extent, which also names other tensor objects that are one of
        them whole (`weight.data`, a replay's tensors); made when first needed."""
        if self._names is None:
            self._names = {extent(t): name for name, t in self._named.items() if memory_of(t)}
        for replay_ref, key in self._unnamed:
            replay = replay_ref()
            if replay is not None and key in replay.storages:  # (not let go of since)
                for name, ref in self.replayed_names[key]:
                    self._names[extent(replay.tensor(ref))] = name
        self._unnamed.clear()
        return self._names

    def on_storage(self, replay: "_record.Replay", key: int) -> None:
        """Told by a replay of each storage it makes: names the module's tensors on it."""
        if key in self.replayed_names:
            self._unnamed.append((weakref.ref(replay), key))

    def _name(self, tensor: Tensor, where: tuple) -> str | None:
        """The qualified name of `tensor`, at `where` (its extent), when it is one of the
        module's tensors, whole."""
        if not where[0]:
            return None
        known = self._by_object.get(id(tensor))
        if known is not None and known[0] is tensor:
            return known[1]
        return self.names.get(where)

    def target(self, tensor: Tensor) -> tuple | None:
        """(local, extent, name, shard) of `tensor` when it is one of the module's tensors that
        fill_many_ takes, for defer(); else None."""
        plain = type(tensor) in _sharded.PLAIN_TYPES
        local = tensor if plain else _sharded.local_tensor(tensor)
        where = _C.fill_extent(local)  # compiled() and extent() in one call
        if where is None:
            return None
        name = self._name(tensor, where)
        if name is None:
            return None
        shard = None if plain else _sharded.shard(tensor)  # None: the whole tensor
        if shard is None and not plain:
            return None
        return local, where, name, shard

    def defer(self, target: tuple, law: str, params: tuple, generator) -> None:
        """Queues the fill of a target(): its arguments checked and its Philox state drawn now, as
        an immediate fill would."""
        local, where, name, shard = target
        if self.check:
            signature = (law, params, *where[2:])  # where[2:]: shape, strides, dtype
            if signature not in self.checked:
                self._check(local, law, params, signature)
        state = self._state(local, name, law, generator)
        storage = where[0]
        if storage in self.scratch:
            return
        self.pending[where] = (local, law, params, state, shard)  # replacing an earlier fill
        self.pending_memory.add(storage)
        self.filled.add(name)

    def _state(self, local: Tensor, name: str, law: str, generator) -> tuple[int, int]:
        """The Philox state of a fill of the module's tensor `name`, drawn as an immediate fill
        would draw it."""
        if law == "constant":
            return _NO_STATE
        if self.seed is not None:
            return seed_state(self.seed, name)
        return _C.philox_state(local, generator)

    def try_defer(self, tensor: Tensor, law: str, params: tuple, generator) -> bool:
        """Queues the fill when `tensor` is one of the module's tensors that fill_many_ takes (or
        runs it, see _fill_sliced); returns whether it did."""
        target = self.target(tensor)
        if target is None:
            return self._fill_sliced(tensor, law, params, generator)
        self.defer(target, law, params, generator)
        return True

    def _fill_sliced(self, tensor: Tensor, law: str, params: tuple, generator) -> bool:
        """Fills now one of the module's DTensors whose shard is not one rectangular piece
        (_StridedShard), which fill_many_ cannot number: the whole tensor with the state of its
        name, then this rank's slice. Returns whether it did."""
        if not _sharded.is_dtensor(tensor):
            return False
        local = _sharded.local_tensor(tensor)
        where = _C.fill_extent(local)
        name = None if where is None else self._name(tensor, where)
        if name is None:
            return False
        state = self._state(local, name, law, generator)
        if where[0] in self.scratch:
            return True
        self.pending.pop(where, None)  # an earlier fill of it, which this one replaces
        with self._own_op():
            _sharded.fill_from_full(
                tensor, lambda full: _dispatch.call_many([full], [law], [params], [state], [None])
            )
        self.filled.add(name)
        return True

    def _check(self, local: Tensor, law: str, params: tuple, signature: tuple) -> None:
        """Raises the fill's argument errors now, at the call, by the meta kernel's checks. They
        depend only on the law, its parameters, and the tensor's dtype, shape and strides (for
        overlap): its `signature`, so a model's many same-shaped layers are checked once."""
        with self._own_op():
            meta = torch.empty_strided(
                local.shape, local.stride(), dtype=local.dtype, device="meta"
            )
            _dispatch.call_many([meta], [law], [params], [[0, 0]], [None])
        self.checked.add(signature)

    @contextlib.contextmanager
    def _own_op(self) -> Iterator[None]:
        """Runs the session's own op (a check on meta, the queue's fill_many_), whose writes are
        known: the Tracker has nothing to do for it."""
        self.own_op = True
        try:
            yield
        finally:
            self.own_op = False

    def generator_for(self, tensor: Tensor, generator):
        """The generator of a fill that is not elementwise: with a seed, one seeded by the name."""
        name = self._name(tensor, extent(tensor)) if self.seed is not None else None
        if name is None:
            return generator
        seed = generator_seed(self.seed, name)
        # The compiled kernels take a CPU generator on any device, with the CPU's values; stock
        # wants the tensor's own device.
        local = _sharded.local_tensor(tensor)
        device = "cpu" if compiled(local) else local.device
        return torch.Generator(device=device).manual_seed(seed)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Runs the `with` body with this as the calling thread's session, its Tracker innermost,
        stock's init functions patched and grad off; then runs what is still queued."""
        previous = _dispatch.active_session()
        with patched(), torch.no_grad():
            _dispatch.set_session(self)
            try:
                with Tracker(self):
                    yield
                    self.flush()
            except BaseException:
                self.pending.clear()
                self.pending_memory.clear()
                raise
            finally:
                _dispatch.set_session(previous)

    def draw_seed(self, draw: int) -> int | None:
        """With a seed, the generator seed of a replay's random draw number `draw` (a temporary
        no name seeds): its own, whatever the constructor's reads computed before it."""
        return None if self.seed is None else generator_seed(self.seed, f"#{draw}")

    def flush(self) -> None:
        if not self.pending:
            return
        queued = list(self.pending.values())
        self.pending.clear()
        self.pending_memory.clear()
        local, laws, params, states, shards = zip(*queued)
        with self._own_op():
            _dispatch.call_many(list(local), list(laws), list(params), list(states), list(shards))


class Tracker(_dispatch.UncompiledMode):
    """Runs queued fills before any op that touches their memory, and records writes."""

    def __init__(self, session: Session):
        super().__init__()
        self.session = session

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        session = self.session
        if not (func.is_view or session.own_op):
            for i, (name, is_write, _, _) in enumerate(_record.arguments(func)):
                value = args[i] if i < len(args) else kwargs.get(name)
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if not isinstance(t, Tensor):
                        continue
                    storage = memory_of(t)
                    if storage in session.pending_memory:
                        session.flush()
                    if is_write:
                        session.written.add(storage)
        return func(*args, **kwargs)
