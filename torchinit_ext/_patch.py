"""patch()/unpatch()/patched(): while active in the calling context (thread, or asyncio task),
every random and constant init reaches the compiled kernels, however the caller got hold of the
init function; every other context gets stock's functions, bit for bit.

Stock's function objects keep their identity. While any context is patched, their ``__code__`` is
a trampoline with the same signature that asks a context variable which function to run: ours in
a patched context, stock's in any other. So references captured anywhere
(``from torch.nn.init import normal_``, transformers' ``TORCH_INIT_FUNCTIONS``, torchtitan's
``functools.partial`` objects) are intercepted too, and nothing captured while patched outlives
the patch: afterwards those very objects run stock's code again. The same holds for timm's
truncated normal when timm is loaded. ``Tensor.uniform_`` and ``Tensor.normal_`` (torchvision's
ViT, timm's ``variance_scaling_``, models' ``_init_weights``) take the compiled fills as well.

Every intercepted call keeps stock's semantics (arguments, errors, autograd): where the compiled
path would not do exactly what stock does (a tensor that needs autograd, an argument ours
refuses), stock's own code runs.

The state of a context is one context variable, set in one step; installing and removing the
trampolines is idempotent and never changes what any context runs. So a KeyboardInterrupt
anywhere in patch(), unpatch() or patched() leaves every context running the functions its
variable names, and a later patch() or unpatch() completes whatever install was cut short.
"""

import contextlib
import contextvars
import inspect
import sys
import threading
import types
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from . import _dispatch, _sharded
from . import init as _init
from ._dispatch import InitTypeError, InitValueError

__all__ = ["patch", "unpatch", "patched"]

# Set in a module's namespace while its functions run trampolines: the replacements, by name.
_MARKER = "_torchinit_ext_patched"

# Stock's callable for each intercepted function (keyed by the function object) and Tensor
# method (keyed by "Tensor.<name>").
_STOCK: dict = {}


class _Lease(dict):
    """The table of one patch(): ours for each key until the patch ends, when it is emptied
    (_end) and answers every key as the table before the patch does. So a context copied inside
    (an asyncio task created there) does not outlive the patch, and a context that still holds
    an ended lease (its restore interrupted) runs what it ran before. A key it lacks (timm's,
    when timm was loaded after the patch began) is also the table's before."""

    def __init__(self, ours: dict, parent: dict):
        super().__init__(ours)
        self.parent = parent  # the context's table before this patch

    def __missing__(self, key):
        return self.parent[key]

    # By identity, as the members of _open.
    __eq__ = object.__eq__
    __hash__ = object.__hash__


# What every trampoline and Tensor method asks: the calling context's table, _STOCK unless a
# patch() of this context (or of the one it was copied from) holds.
_tables: contextvars.ContextVar[dict] = contextvars.ContextVar(
    "torchinit_ext_tables", default=_STOCK
)

# Placeholders in a trampoline's source for two of its constants, the context variable and its
# key: a module global in their place could be removed, by the last unpatch(), under a call that
# is running the trampoline in another thread.
_VAR, _KEY = "_torchinit_ext_tables", "_torchinit_ext_key"


def _trampoline(function: types.FunctionType) -> types.CodeType:
    """Code with `function`'s parameters that calls the function its context's table holds for
    `function`, with them. Defaults stay the function's own (__defaults__/__kwdefaults__); file
    and line stay too, so that inspect.getsource (TorchScript) still finds stock's source."""
    params, passed, star = [], [], False
    for p in inspect.signature(function).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            params.append(f"*{p.name}")
            passed.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            params.append(f"**{p.name}")
            passed.append(f"**{p.name}")
        elif p.kind is p.KEYWORD_ONLY:
            if not star:
                params.append("*")
                star = True
            params.append(p.name)
            passed.append(f"{p.name}={p.name}")
        else:
            params.append(p.name)
            passed.append(p.name)
    name = function.__name__
    source = (
        f"def {name}({', '.join(params)}):\n"
        f"    return {_VAR!r}.get()[{_KEY!r}]({', '.join(passed)})"
    )
    namespace: dict = {}
    exec(source, namespace)
    code = namespace[name].__code__
    constants = {_VAR: _tables, _KEY: function}
    return code.replace(
        co_consts=tuple(constants.get(c, c) if type(c) is str else c for c in code.co_consts),
        co_filename=function.__code__.co_filename,
        co_firstlineno=function.__code__.co_firstlineno,
    )


def _falling_back(ours: Callable, stock: Callable) -> Callable:
    """ours(...), or stock(...) where ours refuses an argument that stock may accept, so that
    stock decides (its error, or its values)."""

    def call(*args, **kwargs):
        try:
            return ours(*args, **kwargs)
        except (InitValueError, InitTypeError):
            return stock(*args, **kwargs)

    return call


class _Interception:
    """The functions of one module that run a trampoline while any context is patched."""

    def __init__(self, module: types.ModuleType, replacements: dict[str, Callable]):
        self.namespace = module.__dict__
        self.replacements = replacements
        self.functions = [getattr(module, name) for name in replacements]
        self.codes = [f.__code__ for f in self.functions]
        self.trampolines = [_trampoline(f) for f in self.functions]
        self.ours = {f: replacements[f.__name__] for f in self.functions}
        # Copies of stock's functions, which run stock's code whatever the trampolines.
        _STOCK.update({f: _init.original(f) for f in self.functions})

    def apply(self) -> None:
        self.namespace[_MARKER] = self.replacements
        for function, trampoline in zip(self.functions, self.trampolines):
            function.__code__ = trampoline

    def undo(self) -> None:
        for function, code in zip(self.functions, self.codes):
            function.__code__ = code
        self.namespace.pop(_MARKER, None)


# Stock's public fills, each replaced by ours. Our functions fall back to copies of stock's
# (init._stock), so they never reach a trampoline.
_TORCH_FILLS = [name for name in _init.__all__ if name.endswith("_") and name != "calculate_gain"]
_torch_interception = _Interception(
    torch.nn.init, {name: getattr(_init, name) for name in _TORCH_FILLS}
)
_timm_interception: _Interception | None = None


def _timm() -> _Interception | None:
    """timm's truncated normal (behind its trunc_normal_, trunc_normal_tf_, variance_scaling_
    and lecun_normal_): uniform, erfinv, affine and clamp passes, the law of ours in one."""
    global _timm_interception
    module = sys.modules.get("timm.layers.weight_init")
    if module is None or not hasattr(module, "_trunc_normal_"):
        return None
    if _timm_interception is None or _timm_interception.namespace is not module.__dict__:
        stock = _init.original(module._trunc_normal_)
        ours = _falling_back(_init.trunc_normal_, stock)
        _timm_interception = _Interception(module, {"_trunc_normal_": ours})
    return _timm_interception


# ---- Tensor methods --------------------------------------------------------------------------

_TensorBase = torch._C.TensorBase


def _random_methods() -> dict:
    """Stock's random fills among the laws' in-place ops (_dispatch.STOCK_LAW_OPS), as Tensor
    methods, by name: the _dispatch helper of the law (named after it), and the names and
    defaults of the two parameters in stock's schema."""
    methods = {}
    for op, law in _dispatch.STOCK_LAW_OPS.items():
        if law != "constant":
            first, second = op._schema.arguments[1:3]
            methods[op._schema.name.split("::")[1]] = (
                getattr(_dispatch, law),
                first.name,
                second.name,
                first.default_value,
                second.default_value,
            )
    return methods


_METHODS = _random_methods()


def _number(value) -> bool:
    return type(value) in (int, float)


def _takes_compiled(tensor: Tensor) -> bool:
    """Whether a method fill of `tensor` can take the compiled path with stock's semantics: no
    autograd to record, and a tensor our kernels write (or a DTensor whose shard they write).
    Meta tensors too: our meta kernels check and write nothing, as stock's, in microseconds
    where stock's Python meta normal_ takes about a millisecond."""
    if tensor.requires_grad and torch.is_grad_enabled():
        return False
    return _dispatch.compiled(_sharded.local_tensor(tensor))  # (other subclasses: themselves)


def _method(name: str) -> Callable:
    law, first, second, first_default, second_default = _METHODS[name]
    stock = getattr(_TensorBase, name)

    def fill(self, *args, **kwargs):
        if len(args) <= 2 and kwargs.keys() <= {first, second, "generator"}:
            values = (*args, first_default, second_default)[:2]
            a = kwargs.get(first, values[0])
            b = kwargs.get(second, values[1])
            generator = kwargs.get("generator")
            if (
                _number(a)
                and _number(b)
                and (generator is None or isinstance(generator, torch.Generator))
                and _takes_compiled(self)
            ):
                try:
                    return law(self, a, b, generator)
                except (InitValueError, InitTypeError):
                    pass
        return stock(self, *args, **kwargs)

    fill.__name__ = fill.__qualname__ = name
    fill.__doc__ = stock.__doc__
    return fill


def _dispatching(name: str) -> Callable:
    """Tensor.<name> while any context is patched: the method its context's table holds."""
    key = f"Tensor.{name}"

    def method(self, *args, **kwargs):
        return _tables.get()[key](self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(_TensorBase, name).__doc__
    return method


_TENSOR_OURS = {f"Tensor.{name}": _method(name) for name in _METHODS}
_STOCK.update({f"Tensor.{name}": getattr(_TensorBase, name) for name in _METHODS})
_TENSOR_METHODS = {name: _dispatching(name) for name in _METHODS}

# ---- patch / unpatch -------------------------------------------------------------------------

_lock = threading.Lock()
# Leases not ended yet: while any is alive, the trampolines stay installed. Weak, so that one
# whose patch() was interrupted before its context took it goes with its last reference.
_open: "weakref.WeakSet[_Lease]" = weakref.WeakSet()
_installed: list[_Interception] = []
_shadowed: dict[str, object] = {}  # torch.Tensor's own attributes the methods replaced (or None)


def _install(interceptions: list[_Interception]) -> None:
    """Trampolines and methods in place. Idempotent, and each step is recorded before it is
    taken, so that _uninstall undoes whatever part of an interrupted install ran."""
    for interception in interceptions:
        if interception not in _installed:
            _installed.append(interception)
        interception.apply()
    for name, method in _TENSOR_METHODS.items():
        current = Tensor.__dict__.get(name)
        if current is not method:
            _shadowed[name] = current
            setattr(Tensor, name, method)


def _uninstall() -> None:
    """Stock's code and methods back in place; idempotent."""
    for name, method in _TENSOR_METHODS.items():
        if Tensor.__dict__.get(name) is method:
            if _shadowed.get(name) is None:
                delattr(Tensor, name)
            else:
                setattr(Tensor, name, _shadowed[name])
    for interception in reversed(_installed):
        interception.undo()
    _installed.clear()


def _begin() -> _Lease:
    """A new lease on ours for the calling context (which does not hold it yet), with the
    trampolines installed. timm's truncated normal is in it when timm is loaded now."""
    with _lock:
        interceptions = [i for i in (_torch_interception, _timm()) if i is not None]
        ours = dict(_TENSOR_OURS)
        for interception in interceptions:
            ours.update(interception.ours)
        lease = _Lease(ours, _tables.get())
        _open.add(lease)
        _install(interceptions)
    return lease


def _end(lease: _Lease) -> None:
    """Ends a lease: contexts still holding it (copied inside its patch) run what they ran
    before it; the last one open takes the trampolines out."""
    lease.clear()
    with _lock:
        _open.discard(lease)
        if not _open:
            _uninstall()


def patch() -> None:
    """Makes the calling context (this thread, or this asyncio task) run the compiled fills for
    stock's init functions (torch.nn.init's, and timm's truncated normal when timm is loaded)
    and Tensor.uniform_/normal_, until the matching unpatch() in the same context. Calls nest:
    only the outermost unpatch() restores stock. Other threads, and tasks not created in the
    context while patched, keep stock's functions; a thread started while patched starts
    unpatched (threads start with an empty context). Interrupted (KeyboardInterrupt), it has
    patched nothing."""
    _tables.set(_begin())


def unpatch() -> None:
    """Undoes the calling context's innermost patch(): it gets the functions it had before, and
    so do contexts copied from it while patched (asyncio tasks created meanwhile). Interrupted,
    the context is either still patched (call unpatch() again) or runs what it ran before."""
    lease = _tables.get()
    if not isinstance(lease, _Lease):
        raise RuntimeError("torchinit_ext.unpatch() without a matching patch()")
    try:
        _tables.set(lease.parent)
    finally:
        _end(lease)  # also when interrupted above: an ended lease runs what ran before it


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Context manager: patch() of the calling context inside, its functions of before on exit,
    also when the `with` body raises or is interrupted.

    >>> with torchinit_ext.patched():
    ...     model = MyModel()  # every init call and Tensor.normal_/uniform_ runs compiled
    """
    lease = _begin()
    try:
        try:
            _tables.set(lease)
            yield
        finally:
            _tables.set(lease.parent)  # the value on entry, whether or not the set above ran
    finally:
        _end(lease)  # also when interrupted above: an ended lease runs what ran before it
