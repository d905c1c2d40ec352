"""materialize() queues torch.nn's own resets without running them (torchinit_ext/_known_resets):
each entry writes exactly what running its reset writes, bit for bit, keys drawn in the same
order, on this torch; anything unusual runs the reset."""

import math

import pytest
import torch
from torch import nn

import torchinit_ext as ti
from torchinit_ext import _known_resets

KNOWN = bool(_known_resets._KNOWN)


def _queued(module: nn.Module) -> bool:
    """Whether materialize() would queue `module`'s reset as a known one's fills."""
    resets = _known_resets.Resets()
    return resets[type(module)].law is not None and _known_resets.fills(module, resets) is not None


def _contiguous_conv():
    return nn.Conv2d(3, 4, 3)


def _channels_last_conv():
    conv = _contiguous_conv()
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return conv


# Each builds a module with one known reset, or composites of them.
MODULES = {
    "linear": lambda: nn.Linear(5, 7),
    "linear no bias": lambda: nn.Linear(5, 7, bias=False),
    "linear float64": lambda: nn.Linear(5, 7, dtype=torch.float64),
    "linear bfloat16": lambda: nn.Linear(5, 7, dtype=torch.bfloat16),
    "conv1d": lambda: nn.Conv1d(3, 4, 5),
    "conv2d groups": lambda: nn.Conv2d(4, 6, 3, groups=2),
    "conv3d no bias": lambda: nn.Conv3d(2, 3, 2, bias=False),
    "conv transpose": lambda: nn.ConvTranspose2d(3, 5, 3),
    "conv channels_last": _channels_last_conv,
    "embedding": lambda: nn.Embedding(10, 4),
    "layer norm": lambda: nn.LayerNorm(6),
    "layer norm no bias": lambda: nn.LayerNorm(6, bias=False),
    "layer norm not affine": lambda: nn.LayerNorm(6, elementwise_affine=False),
    "rms norm": lambda: nn.RMSNorm(6),
    "group norm": lambda: nn.GroupNorm(2, 6),
    "batch norm": lambda: nn.BatchNorm2d(4),
    "batch norm no stats": lambda: nn.BatchNorm1d(4, track_running_stats=False),
    "instance norm": lambda: nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
    "attention": lambda: nn.MultiheadAttention(8, 2),
    "attention kdim vdim": lambda: nn.MultiheadAttention(8, 2, kdim=3, vdim=5),
    "attention no bias": lambda: nn.MultiheadAttention(8, 2, bias=False),
    "attention bias kv": lambda: nn.MultiheadAttention(8, 2, add_bias_kv=True),
    "encoder layer": lambda: nn.TransformerEncoderLayer(8, 2, 16),
    "transformer": lambda: nn.Transformer(8, 2, 1, 1, 16),
}
# Resets the table leaves to run: they write more than fills, or are not torch.nn's.
UNUSUAL = {
    "embedding padding": lambda: nn.Embedding(10, 4, padding_idx=1),
    "zero-element linear": lambda: nn.Linear(0, 3),
    "lazy linear": lambda: nn.LazyLinear(3),
    "own reset": lambda: type("Own", (nn.Linear,), {"reset_parameters": lambda self: None})(2, 3),
    "own running stats": lambda: type(
        "Own", (nn.BatchNorm1d,), {"reset_running_stats": lambda self: None}
    )(3),
    "parametrized weight": lambda: _parametrized(nn.Linear(2, 3), "weight"),
    "parametrized norm": lambda: _parametrized(nn.LayerNorm(3), "weight"),
}


def _parametrized(module: nn.Module, name: str) -> nn.Module:
    """`module` with its tensor `name` a parametrization's property, not a parameter."""
    torch.nn.utils.parametrize.register_parametrization(module, name, nn.Identity())
    return module


def _scrambled(module):
    """`module` with every float tensor NaN and every integer tensor 5: what a reset leaves
    unwritten shows."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            t.fill_(math.nan if t.is_floating_point() else 5)
    return module


def _materialized(build, seed, known, from_meta, monkeypatch):
    ran = []  # the modules whose reset ran
    with monkeypatch.context() as patch:
        if not known:
            patch.setattr(_known_resets, "_KNOWN", {})
        reset = ti.model._reset
        patch.setattr(ti.model, "_reset", lambda module: ran.append(module) or reset(module))
        torch.manual_seed(0)
        model = nn.Sequential(build(), nn.Linear(3, 2))  # a reset after it: the keys' order shows
        if from_meta:
            with torch.device("meta"):
                model = nn.Sequential(build(), nn.Linear(3, 2))
        else:
            _scrambled(model)
        torch.manual_seed(1)
        ti.materialize(model, device="cpu" if from_meta else None, seed=seed)
    if known:  # none of the known ones ran
        assert all(_known_resets.fills(module, _known_resets.Resets()) is None for module in ran)
    return model.state_dict()


@pytest.mark.skipif(not KNOWN, reason="a torch newer than those tested runs every reset")
@pytest.mark.parametrize("from_meta", [False, True], ids=["in place", "from meta"])
@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.parametrize("name", MODULES)
def test_a_known_reset_writes_what_running_it_writes(name, seed, from_meta, monkeypatch):
    module = MODULES[name]()
    assert any(_queued(m) for m in module.modules())
    known = _materialized(MODULES[name], seed, True, from_meta, monkeypatch)
    reference = MODULES[name]
    if name == "conv channels_last" and seed is not None:
        # torch's reset fills a contiguous temporary, which no name keys, and copies it in: run,
        # it draws from the global generator. The known reset fills the weight by its name, as
        # the seed promises; the values (by logical index) are the contiguous weight's.
        reference = _contiguous_conv
    ran = _materialized(reference, seed, False, from_meta, monkeypatch)
    assert known.keys() == ran.keys()
    for key in known:
        assert torch.equal(known[key], ran[key]), key
        assert not known[key].is_floating_point() or not known[key].isnan().any(), key


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_resets_run(name):
    assert _known_resets.fills(UNUSUAL[name](), _known_resets.Resets()) is None


def test_a_reset_set_on_the_instance_runs():
    linear = nn.Linear(2, 3, bias=False)
    linear.reset_parameters = lambda: linear.weight.data.fill_(2.0)
    assert _known_resets.fills(linear, _known_resets.Resets()) is None
    ti.materialize(linear)
    assert (linear.weight == 2).all()


@pytest.mark.parametrize(
    "module, namespace, name",
    [
        (lambda: nn.Linear(3, 4), torch.nn.init, "kaiming_uniform_"),
        (lambda: nn.LayerNorm(4), torch.nn.init, "zeros_"),
        (lambda: nn.MultiheadAttention(4, 2), torch.nn.modules.activation, "xavier_uniform_"),
    ],
)
def test_a_reset_whose_init_function_was_swapped_runs(module, namespace, name, monkeypatch):
    """A library that swaps torch.nn.init's functions (transformers' no_init_weights swaps them
    for no-ops) gets its function called, as running the reset would call it."""
    original = getattr(namespace, name)
    calls = []
    monkeypatch.setattr(namespace, name, lambda *args, **kwargs: calls.append(args[0]))
    layer = module()  # (built with the swapped function too)
    calls.clear()
    with pytest.raises(ti.UninitializedError):  # the no-op wrote nothing: as running it
        ti.materialize(layer)
    assert len(calls) == 1
    monkeypatch.setattr(namespace, name, original)
    assert any(_queued(m) for m in layer.modules())


def test_the_table_follows_torchs_version(monkeypatch):
    """A torch newer than the newest tested runs every reset: its resets may have changed."""
    monkeypatch.setattr(torch, "__version__", "2.99.0")
    import importlib

    fresh = importlib.reload(_known_resets)
    try:
        assert fresh._KNOWN == {}
    finally:
        monkeypatch.undo()
        importlib.reload(_known_resets)
