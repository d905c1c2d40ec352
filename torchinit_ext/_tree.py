"""One walk of a module tree: what deferred_init() and materialize() need of it, without walking
it again for each list. The walk itself is compiled (csrc/registration/module_tree.cpp): in
Python it cost 3 to 6 us a module, more than recording or replaying a small layer's fills."""

from torch import Tensor, nn

from ._dispatch import _C

# What nn.Module keeps in its __dict__ itself (_parameters, _buffers, hooks...).
MODULE_INTERNALS = frozenset(vars(nn.Module()))
CONTAINER_DEPTH = 2  # containers of containers of tensors, no deeper: a walk stays cheap

# A tensor slot of a module: (the module, "_parameters" or "_buffers", the attribute name).
Slot = tuple[nn.Module, str, str]


def holds_tensor(value, depth: int = 0) -> bool:
    """Whether `value`, a container, holds a tensor within the depth the walks of held
    attributes look into."""
    for item in value.values() if isinstance(value, dict) else value:
        if isinstance(item, Tensor):
            return True
        if (
            depth + 1 < CONTAINER_DEPTH
            and isinstance(item, (list, tuple, dict))
            and holds_tensor(item, depth + 1)
        ):
            return True
    return False


class Tree:
    """A module tree, walked once, modules in named_modules() order (each once, children that
    are None skipped). Without `attributes`, the walk skips every attribute that is no
    parameter, buffer or child (held and places then list none of them): each module's __dict__
    walked takes most of a walk of a freshly built tree, whose attributes are out of the caches."""

    def __init__(self, module: nn.Module, attributes: bool = True):
        (
            # (prefix, module), parents first; the prefix is the qualified name and a dot, or ""
            self.pre_order,
            self.post_order,  # children before their parent: eager's resets
            # (prefix, module, "_parameters" or "_buffers", attribute, tensor), in pre-order,
            # each module's parameters before its buffers.
            self.slots,
            # named_parameters() and named_buffers(): each tensor by its first qualified name.
            self.parameters,
            self.buffers,
            self.names,  # id -> (tensor, its first qualified name), parameters and buffers
            # The slots (list[Slot]) that hold one tensor object together (tied weights), each
            # group in named_parameters() order: the first is the slot that names the tensor.
            self.tied,
            self.on_meta,  # whether a slot holds a meta tensor
            self.subclassed,  # the slots of tensors of other classes than Tensor's, Parameter's
            # (prefix, module, attribute) of the attributes that are tensors, lists, dicts, or
            # tuples holding tensors (not parameters, buffers or nn.Module's own): what no module
            # method reaches. (A tuple of numbers, as a kernel_size, never will: left out.)
            self.held,
            # Every place a module holds a tensor: parameters, buffers and plain tensor
            # attributes (a rotary embedding's copy of its inv_freq), as (qualified name, the
            # dict that holds it, its key, the tensor); in pre-order, each module's parameters,
            # buffers, then attributes.
            self.places,
        ) = _C.module_tree(module, MODULE_INTERNALS if attributes else None, holds_tensor)
