"""What materialize() does with a deferred_init() module changed since it was recorded (issue 30,
items 5, 6 and 8): casts get the recorded values cast, submodules swapped in get their own
initialization, a second materialize() or one of a submodule replays the record again (in place
where the tensors are real), writes on meta and new tensors no reset fills are refused before
anything is written, and tensors held in containers are named in a warning."""

import warnings

import pytest
import scipy.stats
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import P_MIN

WIDTH = 64
BOUND = 1 / WIDTH**0.5  # nn.Linear's kaiming_uniform_(a=sqrt(5)) of its weight


def _uniform_law(weight: torch.Tensor) -> float:
    values = weight.detach().float().flatten().numpy()
    return scipy.stats.kstest(values, "uniform", args=(-BOUND, 2 * BOUND)).pvalue


class Built(nn.Module):
    """A constructor that writes values no reset_parameters() gives: a zeroed weight, a
    computed buffer, and a random layer left to its reset."""

    def __init__(self):
        super().__init__()
        self.zeroed = nn.Linear(WIDTH, WIDTH)
        nn.init.zeros_(self.zeroed.weight)
        self.random = nn.Linear(WIDTH, WIDTH)
        self.register_buffer("ramp", torch.arange(WIDTH) / 3)
        self.conv = nn.Conv2d(3, 8, 3)


def _values(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in module.state_dict().items()}


CASTS = {
    "half()": lambda m: m.half(),
    "to(bfloat16)": lambda m: m.to(torch.bfloat16),
    "double()": lambda m: m.double(),
    "to(channels_last)": lambda m: m.to(memory_format=torch.channels_last),
}


@pytest.mark.parametrize("cast", CASTS.values(), ids=CASTS.keys())
def test_a_cast_after_deferred_init_gives_the_recorded_values_cast(cast):
    uncast = ti.materialize(ti.deferred_init(Built), seed=5)
    module = ti.deferred_init(Built)
    cast(module)
    layouts = {n: (t.dtype, t.stride()) for n, t in module.state_dict().items()}
    ti.materialize(module, seed=5)
    expected = cast(uncast)
    for name, tensor in module.state_dict().items():
        assert (tensor.dtype, tensor.stride()) == layouts[name], name
        assert torch.equal(tensor, expected.state_dict()[name]), name
    assert isinstance(module.zeroed.weight, nn.Parameter)
    assert not module.zeroed.weight.any()


def test_a_submodule_built_on_meta_and_swapped_in_gets_its_resets():
    module = ti.deferred_init(Built)
    with torch.device("meta"):
        module.random = nn.Linear(WIDTH, WIDTH)
    torch.manual_seed(0)
    ti.materialize(module)
    assert module.random.weight.device.type == "cpu"
    assert _uniform_law(module.random.weight) > P_MIN
    assert not module.zeroed.weight.any()  # the recorded part as recorded
    assert torch.equal(module.ramp, torch.arange(WIDTH) / 3)


def test_a_swapped_in_submodule_keyed_by_its_qualified_name_with_a_seed():
    def swapped():
        module = ti.deferred_init(Built)
        with torch.device("meta"):
            module.random = nn.Linear(WIDTH, WIDTH)
        return ti.materialize(module, seed=11)

    first, second = swapped(), swapped()
    assert torch.equal(first.random.weight, second.random.weight)
    assert not torch.equal(first.random.weight, first.random.bias.expand(WIDTH, WIDTH))


def test_a_swapped_in_submodule_built_by_deferred_init_replays_its_own_record():
    module = ti.deferred_init(Built)
    module.random = ti.deferred_init(Built)
    ti.materialize(module)
    assert not module.random.zeroed.weight.any()
    assert torch.equal(module.random.ramp, torch.arange(WIDTH) / 3)


def test_a_swapped_in_submodule_no_reset_fills_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(WIDTH))

    module = ti.deferred_init(Built)
    with torch.device("meta"):
        module.random = Scale()
    with pytest.raises(ti.UninitializedError) as error:
        ti.materialize(module)
    assert error.value.names == ["random.scale"]


def test_a_new_parameter_beside_recorded_ones_is_refused_before_any_write():
    module = ti.deferred_init(Built)
    module.zeroed.scale = nn.Parameter(torch.empty(WIDTH, device="meta"))
    with pytest.raises(ti.NotReplayableError, match=r"made on the meta device.*zeroed\.scale"):
        ti.materialize(module)
    assert all(t.is_meta for t in module.state_dict().values())


WRITES = {
    "nn.init on a parameter": lambda m: nn.init.normal_(m.zeroed.weight),
    "apply(init)": lambda m: m.apply(
        lambda s: nn.init.ones_(s.weight) if isinstance(s, nn.Linear) else None
    ),
    "buffer add_": lambda m: m.ramp.add_(1),
    "buffer add_ after a cast": lambda m: (m.half(), m.ramp.add_(1)),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_on_meta_after_deferred_init_is_refused_before_any_write(write):
    module = ti.deferred_init(Built)
    write(module)
    with pytest.raises(ti.NotReplayableError, match="written on the meta device") as error:
        ti.materialize(module)
    assert error.value.names
    assert all(t.is_meta for t in module.state_dict().values())


def test_materialize_twice_replays_the_record_in_place():
    module = ti.materialize(ti.deferred_init(Built), seed=3)
    first = _values(module)
    weight = module.random.weight
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    with torch.no_grad():
        for tensor in module.state_dict().values():
            tensor.fill_(7)
    ti.materialize(module, seed=3)
    assert module.random.weight is weight
    assert optimizer.param_groups[0]["params"][2] is weight
    for name, value in _values(module).items():
        assert torch.equal(value, first[name]), name  # the constructor's values, not a reset's
    ti.materialize(module, seed=4)
    assert not module.zeroed.weight.any()
    assert not torch.equal(module.random.weight, first["random.weight"])


def test_materialize_of_a_submodule_replays_its_part_of_the_record():
    module = ti.deferred_init(lambda: nn.Sequential(Built(), nn.Linear(WIDTH, WIDTH)))
    ti.materialize(module[0])
    assert not module[0].zeroed.weight.any()
    assert torch.equal(module[0].ramp, torch.arange(WIDTH) / 3)
    assert module[1].weight.is_meta


def test_a_deferred_module_given_to_another_deferred_init_keeps_its_record():
    module = ti.deferred_init(nn.Sequential, ti.deferred_init(Built))
    ti.materialize(module)
    assert not module[0].zeroed.weight.any()
    assert torch.equal(module[0].ramp, torch.arange(WIDTH) / 3)


def test_materialize_by_parts_gives_the_whole_models_seeded_values():
    def build():
        return nn.Sequential(Built(), nn.Sequential(nn.Linear(WIDTH, WIDTH)))

    whole = ti.materialize(ti.deferred_init(build), seed=9)
    parts = ti.deferred_init(build)
    ti.materialize(parts[1], seed=9)
    ti.materialize(parts[0], seed=9)
    for name, value in whole.state_dict().items():
        assert torch.equal(parts.state_dict()[name], value), name


def test_a_tied_weight_stays_tied_when_one_holder_is_materialized():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(WIDTH, WIDTH)
            self.head = nn.Linear(WIDTH, WIDTH, bias=False)
            self.head.weight = self.embed.weight

    module = ti.deferred_init(Tied)
    ti.materialize(module.embed)
    assert module.head.weight is module.embed.weight
    assert not module.head.weight.is_meta


class Containers(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(WIDTH, WIDTH)
        self.masks = [torch.ones(3), "not a tensor"]
        self.by_name = {"a": torch.zeros(2), "b": (torch.zeros(1),)}


@pytest.mark.parametrize("deferred", [True, False], ids=["deferred_init", "meta device"])
def test_tensors_left_on_meta_in_containers_are_named_in_a_warning(deferred):
    if deferred:
        module = ti.deferred_init(Containers)
    else:
        with torch.device("meta"):
            module = Containers()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ti.materialize(module)
    [warning] = [w for w in caught if w.category is ti.LeftOnMetaWarning]
    assert warning.message.names == ["masks[0]", "by_name['a']", "by_name['b'][0]"]
    assert warning.filename == __file__  # points at the caller
    assert not module.layer.weight.is_meta


def test_no_warning_when_nothing_is_left_on_meta():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ti.LeftOnMetaWarning)
        ti.materialize(ti.deferred_init(Built))


def test_lists_a_module_keeps_of_its_parameters_see_the_materialized_ones():
    module = ti.materialize(ti.deferred_init(nn.LSTM, 4, 8, num_layers=2))
    assert all(
        weight is getattr(module, name)
        for weight, name in zip(module._flat_weights, module._flat_weights_names)
    )
    assert module(torch.randn(3, 4))[0].shape == (3, 8)


class FrozenDict(dict):
    """A configuration mapping that refuses writes, as some libraries keep on their modules."""

    def __setitem__(self, key, value):
        raise TypeError("FrozenDict is read-only")


class Configured(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(WIDTH, WIDTH)
        self.config = FrozenDict(width=WIDTH, scales=[0.5, 2.0])
        # A small arange is real while building, and kept under two names: deferred_init() then
        # walks every attribute for aliases of it, this mapping's items too.
        self.register_buffer("positions", torch.arange(4))
        self.positions_alias = self.positions


def test_mappings_that_refuse_writes_are_walked_without_writing_them():
    module = ti.materialize(ti.deferred_init(Configured))
    assert module.config == {"width": WIDTH, "scales": [0.5, 2.0]}
    assert type(module.config) is FrozenDict
    assert torch.equal(module.positions, torch.arange(4))
    assert module.positions_alias is module.positions
    assert _uniform_law(module.layer.weight) > P_MIN


def test_a_plain_tensor_attribute_of_a_meta_built_module_is_named_in_a_warning():
    with torch.device("meta"):
        module = nn.Linear(WIDTH, WIDTH)
        module.scale = torch.ones(3)
    with pytest.warns(ti.LeftOnMetaWarning) as caught:
        ti.materialize(module)
    assert caught[0].message.names == ["scale"]


class TaggedParameter(nn.Parameter):
    """A parameter subclass with state of its own, as quantization and sharding libraries use."""


def test_a_parameter_subclass_keeps_its_type_and_attributes():
    class Tagged(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = TaggedParameter(torch.zeros(WIDTH))
            self.weight.tag = "keep me"
            self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

    module = ti.materialize(ti.deferred_init(Tagged))
    assert type(module.weight) is TaggedParameter
    assert module.weight.tag == "keep me"
    assert not module.weight.is_meta and not module.weight.any()
    assert not module.frozen.requires_grad
