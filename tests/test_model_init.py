"""Whole-model initialization: construction under patched(), and materialize() from the meta
device, with and without a seed. (How patch() intercepts is in test_patch.py; fill_many_, the op
under materialize(), in test_fill_many.py; real libraries' models in test_real_models.py.)"""

import math

import pytest
import scipy.stats
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import ops
from torchinit_ext import _dispatch
from torchinit_ext._session import seed_state

# Modules built plainly on meta get their layers' reset_parameters(), and a warning when they sit
# under classes outside torch.nn: by design here, and checked in test_deferred_init.py.
# nn.Transformer warns of its own nested-tensor setting.
pytestmark = [
    pytest.mark.filterwarnings("ignore::torchinit_ext.UnrecordedInitWarning"),
    pytest.mark.filterwarnings("ignore:enable_nested_tensor is True"),
]

# ---- patching --------------------------------------------------------------------------------


def test_patched_construction_runs_the_compiled_fills():
    with ti.patched():
        torch.manual_seed(0)
        layer = nn.Linear(64, 32)
        torch.manual_seed(1)
        attention = nn.MultiheadAttention(16, 2)
    torch.manual_seed(0)
    weight = ti.kaiming_uniform_(torch.empty(32, 64), a=math.sqrt(5))
    bias = ti.uniform_(torch.empty(32), -1 / 8, 1 / 8)
    assert torch.equal(layer.weight, weight) and torch.equal(layer.bias, bias)
    # MultiheadAttention's xavier_uniform_ is bound by name in its module: patched too.
    torch.manual_seed(1)
    ti.kaiming_uniform_(torch.empty(16, 16), a=math.sqrt(5))  # out_proj, built first
    ti.uniform_(torch.empty(16), -0.25, 0.25)
    in_proj = ti.xavier_uniform_(torch.empty(48, 16))
    assert torch.equal(attention.in_proj_weight, in_proj)


# ---- materialize -----------------------------------------------------------------------------

# Every standard layer, big enough for the distribution tests to have power.
LAYERS = {
    "linear": lambda: nn.Linear(96, 80),
    "conv1d": lambda: nn.Conv1d(12, 16, 5),
    "conv2d": lambda: nn.Conv2d(12, 16, 3),
    "conv3d": lambda: nn.Conv3d(6, 8, 3),
    "conv_transpose1d": lambda: nn.ConvTranspose1d(12, 16, 5),
    "conv_transpose2d": lambda: nn.ConvTranspose2d(12, 16, 3),
    "conv_transpose3d": lambda: nn.ConvTranspose3d(6, 8, 3),
    "embedding": lambda: nn.Embedding(200, 32, padding_idx=7),
    "layer_norm": lambda: nn.LayerNorm(48),
    "rms_norm": lambda: nn.RMSNorm(48),
    "batch_norm1d": lambda: nn.BatchNorm1d(24),
    "batch_norm2d": lambda: nn.BatchNorm2d(24),
    "multihead_attention": lambda: nn.MultiheadAttention(48, 4, bias=True, add_bias_kv=True),
    "encoder_layer": lambda: nn.TransformerEncoderLayer(48, 4, 96),
    "decoder_layer": lambda: nn.TransformerDecoderLayer(48, 4, 96),
    "transformer": lambda: nn.Transformer(32, 2, 1, 1, 64),
    "lstm": lambda: nn.LSTM(24, 32, num_layers=2),
    "gru": lambda: nn.GRU(24, 32),
    "rnn": lambda: nn.RNN(24, 32, nonlinearity="relu"),
}


def _from_meta(build):
    with torch.device("meta"):
        return build()


def _state(module):
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_materialize_gives_the_law_of_eager_construction(layer):
    torch.manual_seed(1)
    eager = LAYERS[layer]()  # stock torch, unpatched
    torch.manual_seed(2)
    materialized = ti.materialize(_from_meta(LAYERS[layer]))
    expected, got = _state(eager), _state(materialized)
    assert expected.keys() == got.keys()
    for name, want in expected.items():
        have = got[name].detach()
        want = want.detach()
        assert (have.shape, have.dtype, have.device) == (want.shape, want.dtype, want.device), name
        if want.numel() == 0 or torch.all(want == want.flatten()[0]):
            assert torch.equal(have, want), name  # constant fills are exact
            continue
        # Random fills: the same law (two-sample KS; fixed seeds, so this never flakes) ...
        p = scipy.stats.ks_2samp(
            want.flatten().double().numpy(), have.flatten().double().numpy()
        ).pvalue
        assert p > 1e-4, (name, p)
        # ... and exactly the same deterministic entries (zeros of padding rows, etc.).
        assert torch.equal(want == 0, have == 0), name


@pytest.mark.parametrize(
    "layer", ["embedding", "encoder_layer", "transformer", "lstm", "batch_norm2d"]
)
def test_materialize_without_seed_equals_patched_eager_construction(layer):
    # Resets run children first, as constructors do, drawing keys in the same order.
    torch.manual_seed(5)
    with ti.patched():
        eager = LAYERS[layer]()
    torch.manual_seed(5)
    materialized = ti.materialize(_from_meta(LAYERS[layer]))
    for name, want in _state(eager).items():
        assert torch.equal(_state(materialized)[name], want), name


def test_materialize_batches_the_elementwise_fills(monkeypatch):
    calls = []
    original = _dispatch.call_many

    def counting(tensors, *args):
        if not tensors[0].is_meta:
            calls.append(len(tensors))
        return original(tensors, *args)

    monkeypatch.setattr(_dispatch, "call_many", counting)
    model = _from_meta(
        lambda: nn.Sequential(
            nn.Linear(8, 8), nn.LayerNorm(8), nn.TransformerEncoderLayer(8, 2, 16)
        )
    )
    ti.materialize(model)
    assert calls == [len(list(model.parameters()))]  # every parameter in one region


def test_a_read_of_a_queued_tensor_sees_its_values():
    class ReadsBack(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(64, 32))

        def reset_parameters(self):
            nn.init.normal_(self.weight)
            self.weight.div_(self.weight.norm())  # must see the normal values, not garbage

    module = ti.materialize(_from_meta(ReadsBack))
    assert torch.isclose(module.weight.norm(), torch.tensor(1.0))
    assert module.weight.std() > 0


@pytest.mark.parametrize("threads", [1, 3])
def test_seeded_values_depend_only_on_seed_and_name(threads):
    build = LAYERS["encoder_layer"]
    reference = ti.materialize(_from_meta(build), seed=11)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(123)  # the global RNG plays no part
        again = ti.materialize(_from_meta(build), seed=11)
    finally:
        torch.set_num_threads(previous)
    for name, want in _state(reference).items():
        assert torch.equal(_state(again)[name], want), name
    other = ti.materialize(_from_meta(build), seed=12)
    assert not torch.equal(other.linear1.weight, reference.linear1.weight)


def test_seeded_values_do_not_depend_on_initialization_order():
    def build(order):
        return nn.ModuleDict({name: nn.Linear(16, 16) for name in order})

    forward = ti.materialize(_from_meta(lambda: build("abc")), seed=3)
    backward = ti.materialize(_from_meta(lambda: build("cba")), seed=3)
    for name, want in _state(forward).items():
        assert torch.equal(_state(backward)[name], want), name
    assert not torch.equal(forward.a.weight, forward.b.weight)


def test_seed_state_is_the_documented_contract():
    layer = ti.materialize(_from_meta(lambda: nn.Linear(40, 30)), seed=9)
    bound = 1 / math.sqrt(40)
    expected = torch.empty(30, 40)
    ops.fill_many_([expected], ["uniform"], [-bound, bound, 0, 0], list(seed_state(9, "weight")))
    assert torch.equal(layer.weight, expected)


@pytest.mark.parametrize("seed", [1.0, "1", True, torch.tensor(1)])
def test_seed_must_be_an_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        ti.materialize(nn.Linear(2, 2), seed=seed)


def test_an_uninitializable_parameter_is_named():
    class Orphan(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.empty(3))
            self.proj = nn.Linear(2, 2)

    with pytest.raises(RuntimeError, match="'scale'"):
        ti.materialize(_from_meta(Orphan))


def test_a_real_module_is_reinitialized_in_place_or_moved():
    layer = nn.Linear(32, 16)
    before = layer.weight.detach().clone()
    storage = layer.weight.data_ptr()
    assert ti.materialize(layer) is layer
    assert layer.weight.data_ptr() == storage and not torch.equal(layer.weight, before)
    meta = _from_meta(lambda: nn.Linear(4, 4))
    assert ti.materialize(meta, device="cpu").weight.device.type == "cpu"


class _TiedLM(nn.Module):
    """A language model whose output layer shares the token embedding, tied after both layers
    are built (GPT-2's way), and a block reused twice (shared module)."""

    def __init__(self):
        super().__init__()
        self.token = nn.Embedding(50, 16)
        self.block = nn.Linear(16, 16)
        self.blocks = nn.ModuleList([self.block, self.block])
        self.head = nn.Linear(16, 50, bias=False)
        self.head.weight = self.token.weight


@pytest.mark.parametrize("seed", [None, 3])
@pytest.mark.parametrize("source", ["meta", "real"])
def test_materialize_keeps_tied_weights_tied_with_the_values_of_eager_construction(source, seed):
    # From meta, to_empty unties them; a real module keeps them through its resets, where the
    # head's would write last: either way the result is eager construction's.
    torch.manual_seed(4)
    with ti.patched():
        eager = _TiedLM()
    model = _from_meta(_TiedLM) if source == "meta" else _TiedLM()
    torch.manual_seed(4)
    ti.materialize(model, seed=seed)
    assert model.head.weight is model.token.weight
    assert model.blocks[0] is model.blocks[1] is model.block
    assert list(dict(model.named_parameters())) == list(dict(eager.named_parameters()))
    if seed is None:  # the embedding's normal values, as eager construction keeps them
        for name, want in eager.named_parameters():
            assert torch.equal(dict(model.named_parameters())[name], want), name
    else:  # keyed by the name that names the tied tensor
        want = torch.empty(50, 16)
        ops.fill_many_([want], ["normal"], [0, 1, 0, 0], list(seed_state(seed, "token.weight")))
        assert torch.equal(model.token.weight, want)


def test_fill_errors_inside_a_reset_are_raised_at_the_call():
    class BadStd(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(4, 4))

        def reset_parameters(self):
            nn.init.normal_(self.weight, std=-1.0)

    with pytest.raises(ValueError, match="std"):
        ti.materialize(_from_meta(BadStd))


WHOLE_FILLS = {
    "orthogonal_": (lambda w: ti.orthogonal_(w), (4, 6)),
    "sparse_": (lambda w: ti.sparse_(w, 0.5), (6, 4)),
    "eye_": (lambda w: ti.eye_(w), (3, 5)),
    "dirac_": (lambda w: ti.dirac_(w), (4, 2, 3)),
}


@pytest.mark.filterwarnings("ignore::torchinit_ext.UnrecordedInitWarning")
@pytest.mark.parametrize("fill", WHOLE_FILLS)
def test_seeded_whole_fills_in_resets_follow_the_name(fill):
    """A reset's orthogonal_, sparse_, eye_ or dirac_ under materialize(seed=...): the values of
    the tensor's name key, whatever the global generator holds, from meta and in place."""
    write, shape = WHOLE_FILLS[fill]

    class Whole(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(shape))
            self.reset_parameters()

        def reset_parameters(self):
            write(self.weight)

    values = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        values.append(ti.materialize(Whole().to("meta"), device="cpu", seed=3).weight)
        torch.manual_seed(global_seed + 10)
        values.append(ti.materialize(Whole(), seed=3).weight)
    for other in values[1:]:
        assert torch.equal(other, values[0])


class _Odd(nn.Module):
    """Shapes a module tree can take that named_parameters() and named_buffers() handle: a
    submodule in two places, a tensor that is a parameter here and a buffer there, a tied
    weight, a None slot, a child set to None, tensors and containers as plain attributes."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(2, 2)
        self.a = nn.Sequential(self.shared, nn.LayerNorm(2))
        self.b = nn.Sequential(nn.Linear(2, 3), self.shared)
        self.head = nn.Linear(2, 2, bias=False)
        self.head.weight = self.a[0].weight
        self.norm = nn.BatchNorm1d(2)
        self.register_buffer("also_a_buffer", self.b[0].bias)
        self.register_parameter("nothing", None)
        self.gone = None
        self.add_module("empty_child", None)
        self.cache = [torch.zeros(1), (torch.ones(1),)]
        self.plain = torch.zeros(2)


def test_the_tree_walk_knows_what_torch_lists():
    """materialize()'s one walk (_tree.Tree) holds what named_parameters(), named_buffers()
    and named_modules() give, with the tied groups and each tensor's first name."""
    module = _Odd()
    tree = ti._tree.Tree(module)
    assert tree.parameters == dict(module.named_parameters())
    assert tree.buffers == dict(module.named_buffers())
    assert [m for _, m in tree.pre_order] == [m for _, m in module.named_modules()]
    assert [p for p, _ in tree.pre_order] == [
        f"{n}." if n else "" for n, _ in module.named_modules()
    ]
    assert set(map(id, tree.post_order)) == set(map(id, module.modules()))
    # In the walk's order: the root's own tensors first, so its buffer names the shared bias.
    groups = [[(id(m), n) for m, _, n in group] for group in tree.tied]
    assert groups == [
        [(id(module), "also_a_buffer"), (id(module.b[0]), "bias")],
        [(id(module.shared), "weight"), (id(module.head), "weight")],
    ]
    first_names = {}
    for prefix, owner in module.named_modules():
        for name, tensor in [*owner._parameters.items(), *owner._buffers.items()]:
            if tensor is not None:
                first_names.setdefault(id(tensor), f"{prefix}.{name}" if prefix else name)
    assert {key: name for key, (_, name) in tree.names.items()} == first_names
    # A tuple of no tensor (a LayerNorm's normalized_shape) can never hold one: left out.
    assert {p + a for p, _, a in tree.held} == {"cache", "plain"}
    places = [
        (prefix + name, holder, name, tensor)
        for prefix, owner in tree.pre_order
        for holder in (owner._parameters, owner._buffers, owner.__dict__)
        for name, tensor in holder.items()
        if isinstance(tensor, torch.Tensor)
    ]
    assert [(n, id(h), k, id(t)) for n, h, k, t in tree.places] == [
        (n, id(h), k, id(t)) for n, h, k, t in places
    ]
    assert not tree.on_meta and tree.subclassed == []
    with torch.device("meta"):
        lazy = nn.Sequential(nn.LazyLinear(2), nn.Linear(2, 2))
    walked = ti._tree.Tree(lazy)
    assert walked.on_meta
    assert [p + n for p, _, _, n, _ in walked.subclassed] == ["0.weight", "0.bias"]


def test_the_tree_walk_finds_tensors_in_nested_tuples_and_skips_attributes_when_asked():
    """Held attributes: a tuple holding a tensor one level down is held, a tuple of numbers and
    strings, a set, a number are not; without attributes the walk lists parameters, buffers and
    children alone, the same ones."""
    module = _Odd()
    module.nested = (1, (torch.ones(1),))
    module.numbers = (1, 2.0, "same", None, True)
    module.names = {"a", "b"}
    full = ti._tree.Tree(module)
    assert {p + a for p, _, a in full.held} == {"cache", "plain", "nested"}
    lean = ti._tree.Tree(module, attributes=False)
    assert lean.held == []
    attribute_dicts = {id(m.__dict__) for _, m in full.pre_order}
    assert [(n, id(t)) for n, _, _, t in lean.places] == [
        (n, id(t)) for n, holder, _, t in full.places if id(holder) not in attribute_dicts
    ]
    assert lean.slots == full.slots and lean.parameters == full.parameters
    assert [m for _, m in lean.pre_order] == [m for _, m in full.pre_order]


def test_the_tree_walk_takes_other_mappings_and_raises_for_a_module_without_its_dicts():
    """A module whose code replaced its _parameters dict with another mapping is walked in that
    mapping's order; an object that is no initialized module raises the error Python would
    (no crash)."""
    from collections import OrderedDict

    layer = nn.Linear(2, 2)
    layer._parameters = OrderedDict(reversed(list(layer._parameters.items())))
    assert list(ti._tree.Tree(layer).parameters) == ["bias", "weight"]

    class Unready(nn.Module):
        def __init__(self):  # no nn.Module.__init__: no _parameters
            pass

    with pytest.raises(KeyError, match="_parameters"):
        ti._tree.Tree(Unready())
    with pytest.raises(TypeError, match="module_tree"):
        ti._dispatch._C.module_tree(layer, ["not", "a set"], ti._tree.holds_tensor)


def test_the_tree_walk_of_a_tree_deeper_than_pythons_recursion_limit_raises():
    """As a walk in Python would: RecursionError, not a crash of the interpreter."""
    import sys

    deep = nn.Linear(1, 1)
    for _ in range(2 * sys.getrecursionlimit()):
        deep = nn.Sequential(deep)
    with pytest.raises(RecursionError, match="module_tree"):
        ti._tree.Tree(deep)
