"""torchinit_ext: a drop-in torch.nn.init whose fills run in compiled, parallel kernels driven by
one counter-based RNG (Philox4x32-10). ``import torchinit_ext as init`` works wherever
``import torch.nn.init as init`` did."""

from . import init as _init
from ._dispatch import InitTypeError, InitValueError
from ._patch import patch, patched, unpatch
from ._record import UnrecordableError, deferred_init
from ._simd import cpu_capability, set_cpu_capability, supported_cpu_capabilities
from .init import *  # noqa: F403
from .init import __all__ as _init_all
from .init import _calculate_correct_fan, _calculate_fan_in_and_fan_out, orthogonal_batch_  # noqa: F401
from .model import (
    LeftOnMetaWarning,
    NotReplayableError,
    UninitializedError,
    UnrecordedInitWarning,
    materialize,
)

# Names with no stock counterpart are not in init.__all__, which mirrors stock's.
__all__ = list(_init_all) + [
    "orthogonal_batch_",
    "patch",
    "unpatch",
    "patched",
    "materialize",
    "deferred_init",
    "UnrecordedInitWarning",
    "UninitializedError",
    "NotReplayableError",
    "LeftOnMetaWarning",
    "UnrecordableError",
    "InitTypeError",
    "InitValueError",
    "cpu_capability",
    "supported_cpu_capabilities",
    "set_cpu_capability",
]
__version__ = "0.7.1"
del _init
