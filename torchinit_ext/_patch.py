"""patch()/unpatch()/patched(): while active, every random and constant init reaches the
compiled kernels, however the caller got hold of the init function.

Stock's function objects keep their identity and only their ``__code__`` changes, for the
duration, to a trampoline into ours with the same signature. So references captured anywhere
(``from torch.nn.init import normal_``, transformers' ``TORCH_INIT_FUNCTIONS``, torchtitan's
``functools.partial`` objects) are intercepted too, and nothing captured while patched outlives
the patch: afterwards those very objects run stock's code again. The same holds for timm's
truncated normal when timm is loaded. ``Tensor.uniform_`` and ``Tensor.normal_`` (torchvision's
ViT, timm's ``variance_scaling_``, models' ``_init_weights``) take the compiled fills as well.

Every intercepted call keeps stock's semantics (arguments, errors, autograd): where the compiled
path would not do exactly what stock does (a tensor that needs autograd, an argument ours
refuses), stock's own code runs.
"""

import contextlib
import inspect
import sys
import threading
import types
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from . import _dispatch, _sharded
from . import init as _init
from ._dispatch import InitTypeError, InitValueError

__all__ = ["patch", "unpatch", "patched"]

# The module global through which a trampoline reaches its replacement: set in the stock
# function's module only while patched.
_TABLE = "_torchinit_ext_patched"


def _trampoline(function: types.FunctionType) -> types.CodeType:
    """Code with `function`'s parameters that calls _TABLE[name] with them. Defaults stay the
    function's own (__defaults__/__kwdefaults__); file and line stay too, so that
    inspect.getsource (TorchScript) still finds stock's source."""
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
    source = f"def {name}({', '.join(params)}):\n    return {_TABLE}[{name!r}]({', '.join(passed)})"
    namespace: dict = {}
    exec(source, namespace)
    code = function.__code__
    return namespace[name].__code__.replace(
        co_filename=code.co_filename, co_firstlineno=code.co_firstlineno
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
    """The functions of one module whose code is swapped while patched."""

    def __init__(self, module: types.ModuleType, replacements: dict[str, Callable]):
        self.namespace = module.__dict__
        self.functions = {name: getattr(module, name) for name in replacements}
        self.codes = {name: f.__code__ for name, f in self.functions.items()}
        self.trampolines = {name: _trampoline(f) for name, f in self.functions.items()}
        self.table = replacements

    def apply(self) -> None:
        self.namespace[_TABLE] = self.table
        for name, function in self.functions.items():
            function.__code__ = self.trampolines[name]

    def undo(self) -> None:
        for name, function in self.functions.items():
            function.__code__ = self.codes[name]
        self.namespace.pop(_TABLE, None)


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
_METHODS = {"uniform_": ("from", "to", 0.0, 1.0), "normal_": ("mean", "std", 0.0, 1.0)}
_LAWS = {"uniform_": _dispatch.uniform, "normal_": _dispatch.normal}


def _number(value) -> bool:
    return type(value) in (int, float)


def _takes_compiled(tensor: Tensor) -> bool:
    """Whether a method fill of `tensor` can take the compiled path with stock's semantics: no
    autograd to record, and a tensor our kernels write (or a DTensor whose shard they write).
    Meta tensors too: our meta kernels check and write nothing, as stock's, in microseconds
    where stock's Python meta normal_ takes about a millisecond."""
    if tensor.requires_grad and torch.is_grad_enabled():
        return False
    return (
        type(tensor) in (Tensor, torch.nn.Parameter) or _sharded.is_dtensor(tensor)
    ) and _dispatch.compiled(_sharded.local_tensor(tensor))


def _method(name: str) -> Callable:
    first, second, first_default, second_default = _METHODS[name]
    stock = getattr(_TensorBase, name)
    law = _LAWS[name]

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


_TENSOR_METHODS = {name: _method(name) for name in _METHODS}

# ---- patch / unpatch -------------------------------------------------------------------------

_lock = threading.Lock()
_depth = 0
_applied: list[_Interception] = []
_shadowed: dict[str, object] = {}  # torch.Tensor's own attributes the methods replaced


def patch() -> None:
    """Makes stock's init functions (torch.nn.init's, and timm's truncated normal when timm is
    loaded) and Tensor.uniform_/normal_ run the compiled fills, until the matching unpatch().
    Calls nest: only the outermost unpatch() restores stock."""
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _applied[:] = [i for i in (_torch_interception, _timm()) if i is not None]
        for interception in _applied:
            interception.apply()
        for name, method in _TENSOR_METHODS.items():
            if name in Tensor.__dict__:
                _shadowed[name] = Tensor.__dict__[name]
            setattr(Tensor, name, method)


def unpatch() -> None:
    """Undoes one patch(); the outermost gives every function and method its stock code back."""
    global _depth
    with _lock:
        if _depth == 0:
            raise RuntimeError("torchinit_ext.unpatch() without a matching patch()")
        _depth -= 1
        if _depth > 0:
            return
        for interception in reversed(_applied):
            interception.undo()
        _applied.clear()
        for name in _TENSOR_METHODS:
            if name in _shadowed:
                setattr(Tensor, name, _shadowed.pop(name))
            else:
                delattr(Tensor, name)


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Context manager: patch() inside, stock again on exit, also when the block raises.

    >>> with torchinit_ext.patched():
    ...     model = MyModel()  # every init call and Tensor.normal_/uniform_ runs compiled
    """
    patch()
    try:
        yield
    finally:
        unpatch()
