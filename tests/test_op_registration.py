"""Every op declared in csrc/registration/ops.cpp has the kernels its kind needs, and the Python
layers know every op that writes: a new op missing from autograd.cpp's list, from a backend, or from
the recorder's tables fails here rather than silently (an op the recorder doesn't know would be
replayed without batching or seeded states)."""

import pytest
import torch

import torchinit_ext  # noqa: F401  (registers the ops)
from torchinit_ext import _dispatch, _record

OPS = sorted(n for n in torch._C._dispatch_get_all_op_names() if n.startswith("torchinit_ext::"))


def _writes(name: str) -> bool:
    schema = torch._C._get_schema(name, "")
    return any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)


def _has(name: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(name, key)


FILLS = [name for name in OPS if _writes(name)]
# A fill runs on any backend (CompositeExplicitAutograd: orthogonal_'s QR) or has a kernel per
# device with kernels.
BACKENDS = ["CPU", *(["CUDA"] if "cuda" in _dispatch.COMPILED_DEVICES else [])]


def test_the_op_list_is_the_library():
    assert "torchinit_ext::uniform_" in OPS and "torchinit_ext::fill_many_" in OPS
    writing = [name for name, _, kind, _ in _dispatch.OP_TABLE if kind != "helper"]
    assert sorted(f"torchinit_ext::{name}" for name in writing) == FILLS
    assert len(FILLS) >= 10


@pytest.mark.parametrize("name", FILLS)
def test_every_fill_has_its_layers_and_backends(name):
    for key in ("Meta", "Autograd", "ADInplaceOrView", "Negative", "Conjugate"):
        assert _has(name, key), f"{name} has no {key} kernel"
    if not _has(name, "CompositeExplicitAutograd"):
        for key in BACKENDS:
            assert _has(name, key), f"{name} has no {key} kernel"


@pytest.mark.parametrize("name", sorted(set(OPS) - set(FILLS)))
def test_ops_that_write_nothing_take_no_fill_layers(name):
    assert not _has(name, "ADInplaceOrView")


@pytest.mark.parametrize("name", FILLS)
def test_the_recorder_knows_every_fill(name):
    """deferred_init() replays each fill by its law (batched, seeded) or whole with the
    generator of the tensor's seeded state: none as an unknown op."""
    if name == "torchinit_ext::fill_many_":
        return  # the replay's own batch, never a constructor's call
    op = getattr(torch.ops.torchinit_ext, name.split("::")[1]).default
    assert op in _record._FILL_LAWS or op in _record._WHOLE_FILLS


@pytest.mark.filterwarnings("ignore::torchinit_ext.UnrecordedInitWarning")
def test_a_seeded_orthogonal_batch_follows_its_tensors_name():
    """orthogonal_batch_ of one (batch, n, m) parameter, in materialize(seed=...), whether the
    reset runs or the constructor's call is replayed: its Philox state from the parameter's name,
    whatever the global generator holds."""
    from torch import nn

    import torchinit_ext as ti

    class Batched(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(3, 4, 5))
            self.reset_parameters()

        def reset_parameters(self):
            ti.orthogonal_batch_(self.weight)

    values = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        values.append(ti.materialize(Batched().to("meta"), device="cpu", seed=5).weight)
        torch.manual_seed(global_seed + 10)
        values.append(ti.materialize(ti.deferred_init(Batched), seed=5).weight)
    for other in values[1:]:
        assert torch.equal(other, values[0])
    product = values[0] @ values[0].transpose(1, 2)
    assert torch.allclose(product, torch.eye(4).expand(3, 4, 4), atol=1e-5)
