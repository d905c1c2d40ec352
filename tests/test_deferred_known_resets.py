"""deferred_init() records torch.nn's known resets in one step (_record.record_known_reset): the
record, the materialized values and metadata, the values read while building and the RNG are
those of running the resets through the init functions (the general path), bit for bit; any
other dispatch or __torch_function__ mode, an init function swapped in, another thread, and
resets that are not torch.nn's own get the resets run."""

import threading

import pytest
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import OpsSeen
from torchinit_ext import _known_resets, _record

pytestmark = pytest.mark.skipif(
    not _known_resets._KNOWN, reason="a torch newer than those tested runs every reset"
)


class Halved(nn.Linear):
    """Overrides its reset and calls the known one (super) inside it."""

    def reset_parameters(self):
        super().reset_parameters()
        with torch.no_grad():
            self.weight.mul_(0.5)


class Constant(nn.Linear):
    """Overrides its reset with one of its own."""

    def reset_parameters(self):
        nn.init.constant_(self.weight, 0.25)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class SubLinear(nn.Linear):
    """Keeps Linear's reset."""


class Layers(nn.Module):
    """Every known reset, the unusual ones that run, and a constructor that reads values."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.conv_t = nn.ConvTranspose1d(4, 6, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.bn_half = nn.BatchNorm1d(4, dtype=torch.float16)
        self.instance = nn.InstanceNorm1d(4, affine=True, track_running_stats=True)
        self.linear = nn.Linear(8, 16)
        self.double = nn.Linear(4, 4, dtype=torch.float64)
        self.bf16 = nn.Linear(4, 4, bias=False, dtype=torch.bfloat16)
        self.embed = nn.Embedding(20, 8)
        self.padded = nn.Embedding(20, 8, padding_idx=0)
        self.norm = nn.LayerNorm(8)
        self.rms = nn.RMSNorm(8)
        self.group = nn.GroupNorm(2, 8)
        self.attention = nn.MultiheadAttention(8, 2, add_bias_kv=True)
        self.halved = Halved(8, 8)
        self.constant = Constant(8, 8)
        self.sub = SubLinear(8, 4)
        self.scale = nn.Parameter(torch.randn(8) * 0.1)
        # Values read while building, after the resets wrote them.
        self.read = (
            self.linear.weight.detach().sum().item(),
            float(self.halved.weight.detach().abs().max()),
        )
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out")  # a re-init, as torchvision's


# torch.nn's known resets, by the class that defines them.
RESETS = {known.owner: reset for reset, known in _known_resets._KNOWN.items()}


def _normalized(record: _record.Record) -> tuple:
    """The record with storages numbered by first use and each fill's op by its law: equal for
    two recordings of the same construction (zero_() and fill_(0.0) are the same constant fill;
    0 == 0.0)."""
    numbers: dict[int, int] = {}
    for op in record.ops:
        for value in _record._leaves((op.args, tuple(op.kwargs.values()))):
            if isinstance(value, _record._Ref):
                numbers.setdefault(value.storage, len(numbers))
        for _, key in op.allocates:
            numbers.setdefault(key, len(numbers))

    def value(v):
        if isinstance(v, _record._Ref):
            return ("ref", numbers[v.storage], v.dtype, v.size, v.stride, v.offset)
        if isinstance(v, torch.Tensor):
            return ("tensor", v.dtype, tuple(v.shape), v.tolist())
        if isinstance(v, (list, tuple)):
            return tuple(value(x) for x in v)
        return v

    def storages(keys) -> frozenset:
        return frozenset(numbers.setdefault(k, len(numbers)) for k in keys)

    def call(op) -> tuple:
        """(op, arguments): a fill's op as its law, and its arguments as the replay takes them
        (the tensor, the law's parameters, (0,) for none: zero_(); the generator)."""
        if op.func not in _record._FILL_LAWS:
            return op.func, value(op.args), {name: value(v) for name, v in op.kwargs.items()}
        law, names = _record._FILL_LAWS[op.func]
        bound = _record._bound(op.func, op.args, op.kwargs)
        params = tuple(bound[name] for name in names) or (0,)
        return law, (value(op.args[0]), *params), {"generator": bound.get("generator")}

    return record.draws, [
        (
            *call(op),
            [(position, numbers[key]) for position, key in op.allocates],
            storages(op.writes),
            storages(op.reads),
            storages(op.defines),
            op.default_dtype,
            op.draw,
        )
        for op in record.ops
    ]


def _deferred(build, general: bool, monkeypatch, seed=0):
    """deferred_init(build) under `seed`, by the general path (every reset run) or not; and the
    RNG's state after it."""
    with monkeypatch.context() as patch:
        if general:
            patch.setattr(_known_resets, "_KNOWN", {})
        torch.manual_seed(seed)
        module = ti.deferred_init(build)
    return module, torch.get_rng_state()


def _one_step_calls(monkeypatch) -> list:
    """The known resets recorded in one step from now on, as (reset, module class) pairs."""
    calls = []
    record_known_reset = _record._Recorder.record_known_reset

    def counting(self, reset, module):
        recorded = record_known_reset(self, reset, module)
        if recorded:
            calls.append((reset, type(module)))
        return recorded

    monkeypatch.setattr(_record._Recorder, "record_known_reset", counting)
    return calls


def _tensors(module: nn.Module) -> dict:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _assert_same_tensors(a: nn.Module, b: nn.Module) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        x, y = ta[name], tb[name]
        assert type(x) is type(y), name
        assert (x.dtype, x.shape, x.stride(), x.device) == (y.dtype, y.shape, y.stride(), y.device)
        assert x.requires_grad == y.requires_grad, name
        assert torch.equal(x, y), name


def test_known_resets_are_recorded_in_one_step_as_the_general_path_records_them(monkeypatch):
    calls = _one_step_calls(monkeypatch)
    fast, fast_rng = _deferred(Layers, False, monkeypatch)
    recorded = {cls for _, cls in calls}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.Embedding, nn.LayerNorm} <= recorded
    assert {Halved, SubLinear, nn.MultiheadAttention, nn.GroupNorm, nn.RMSNorm} <= recorded
    assert Constant not in recorded  # its own reset, which calls no known one
    calls.clear()
    general, general_rng = _deferred(Layers, True, monkeypatch)
    assert not calls
    assert _normalized(_record.record_of(fast)[0]) == _normalized(_record.record_of(general)[0])
    assert torch.equal(fast_rng, general_rng)
    assert fast.read == general.read
    versions = {name: t._version for name, t in _tensors(general).items()}
    assert {name: t._version for name, t in _tensors(fast).items()} == versions
    for seed in (None, 3):
        torch.manual_seed(1)
        ti.materialize(fast, seed=seed)
        torch.manual_seed(1)
        ti.materialize(general, seed=seed)
        _assert_same_tensors(fast, general)
    assert fast.read[0] == pytest.approx(fast.linear.weight.sum().item(), rel=1e-5)


def test_materialized_values_are_eager_constructions_under_patched(monkeypatch):
    """Under the same seed, what eager construction with the compiled fills gives: the resets'
    draws, in the same order, from the global generator (the unseeded replay draws them)."""
    torch.manual_seed(5)
    with ti.patched():
        eager = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    calls = _one_step_calls(monkeypatch)
    torch.manual_seed(5)
    deferred = ti.deferred_init(
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    )
    assert len(calls) == 3
    torch.manual_seed(5)
    _assert_same_tensors(ti.materialize(deferred), eager)


class _Functions(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.functions = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.functions.append(func)
        return func(*args, **(kwargs or {}))


def _build_linear():
    return nn.Linear(4, 3)


def test_another_dispatch_mode_sees_every_fill(monkeypatch):
    calls = _one_step_calls(monkeypatch)
    for outside in (True, False):
        mode = OpsSeen()
        if outside:
            with mode:
                module = ti.deferred_init(_build_linear)
        else:

            def build(mode=mode):
                with mode:
                    return _build_linear()

            module = ti.deferred_init(build)
        assert mode.ops.count(torch.ops.torchinit_ext.uniform_.default) == 2
        assert _record.record_of(module)[0].draws == 2
    assert not calls


def test_a_torch_function_mode_sees_the_init_calls(monkeypatch):
    calls = _one_step_calls(monkeypatch)
    mode = _Functions()

    def build():
        with mode:
            return _build_linear()

    ti.deferred_init(build)
    assert "kaiming_uniform_" in [getattr(f, "__name__", None) for f in mode.functions]
    assert not calls


def test_an_init_function_swapped_in_while_building_is_called(monkeypatch):
    """transformers' no_init_weights swaps torch.nn.init's functions for no-ops inside the
    constructor: the reset runs, and calls them."""
    calls = _one_step_calls(monkeypatch)
    swapped = []

    def build():
        with monkeypatch.context() as patch:
            patch.setattr(nn.init, "kaiming_uniform_", lambda tensor, **_: swapped.append(tensor))
            return _build_linear()

    module = ti.deferred_init(build)
    assert len(swapped) == 1 and swapped[0] is module.weight
    assert not calls


def test_the_resets_are_torch_nns_own_outside_a_recording():
    def build():
        assert any(vars(owner)[reset.__name__] is not reset for owner, reset in RESETS.items())
        raise KeyError("fails while building")

    with pytest.raises(KeyError):
        ti.deferred_init(build)
    for owner, reset in RESETS.items():
        assert vars(owner)[reset.__name__] is reset
    ti.deferred_init(_build_linear)
    for owner, reset in RESETS.items():
        assert vars(owner)[reset.__name__] is reset


def test_a_reset_replaced_while_recording_stays_replaced():
    def own(self):
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def build():
        nn.Linear.reset_parameters = own
        return _build_linear()

    try:
        module = ti.materialize(ti.deferred_init(build))
        assert nn.Linear.reset_parameters is own
        assert torch.equal(module.weight, torch.ones(3, 4))
    finally:
        nn.Linear.reset_parameters = RESETS[nn.Linear]


def test_a_stand_in_restored_after_the_recording_is_the_known_reset(monkeypatch):
    """A class attribute saved while recording (the stand-in) and restored after it ends runs
    the reset, and materialize() still queues it as the known one."""

    def build():
        monkeypatch.setattr(nn.Linear, "reset_parameters", nn.Linear.reset_parameters)
        return _build_linear()

    ti.deferred_init(build)
    assert nn.Linear.reset_parameters is RESETS[nn.Linear]
    monkeypatch.undo()  # puts the stand-in back
    stand_in = nn.Linear.reset_parameters
    try:
        assert stand_in is not RESETS[nn.Linear]
        resets = _known_resets.Resets()
        assert _known_resets.fills(nn.Linear(2, 3), resets) is not None
        torch.manual_seed(4)
        linear = nn.Linear(4, 3)
        torch.manual_seed(4)
        stand_in(linear)  # runs the reset
        torch.manual_seed(4)
        _assert_same_tensors(linear, nn.Linear(4, 3))
    finally:
        nn.Linear.reset_parameters = RESETS[nn.Linear]


def test_another_thread_builds_with_torch_nns_resets():
    """A thread building for real while another records gets eager construction's values."""
    built = {}

    def build_for_real():
        torch.manual_seed(7)  # (the thread's own generator state: the global one, as eager)
        built["linear"] = nn.Linear(4, 3)

    def build():
        thread = threading.Thread(target=build_for_real)
        thread.start()
        thread.join()
        return _build_linear()

    ti.deferred_init(build)
    torch.manual_seed(7)
    _assert_same_tensors(built["linear"], nn.Linear(4, 3))


def test_module_registration_hooks_read_the_values_the_module_gets(monkeypatch):
    """A global hook reading each new submodule's weight (after its reset) reads the values
    the materialized module holds."""
    read = {}

    def hook(module, name, submodule):
        if isinstance(submodule, nn.Linear):
            read[name] = submodule.weight.detach().sum().item()

    handle = nn.modules.module.register_module_module_registration_hook(hook)
    try:
        calls = _one_step_calls(monkeypatch)
        torch.manual_seed(2)
        module = ti.deferred_init(lambda: nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)))
        assert len(calls) == 2
    finally:
        handle.remove()
    ti.materialize(module)
    assert read == {"0": module[0].weight.sum().item(), "1": module[1].weight.sum().item()}
