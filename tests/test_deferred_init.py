"""deferred_init() + materialize(): what a constructor wrote is recorded on the meta device and
replayed on real storage, overwritten writes skipped, elementwise fills batched. (Real
libraries' models are in test_real_models.py; sharded replay in sharded_worker.py.)"""

import dataclasses
import gc
import os
import subprocess
import sys
import warnings

import pytest
import scipy.stats
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import P_MIN, OpsSeen
from torchinit_ext import _dispatch, _record, _session


class Recorded(nn.Module):
    """A constructor that writes its tensors in the ways real models do."""

    def __init__(self, vocab=500, width=64):
        super().__init__()
        self.embed = nn.Embedding(vocab, width, padding_idx=1)
        self.proj = nn.Linear(width, width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied after the layers are built
        self.scale = nn.Parameter(torch.ones(width) * 0.5 + torch.arange(width) / width)
        self.register_buffer("position_ids", torch.arange(16).expand(1, -1), persistent=False)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, width, 2).float() / width)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.original_inv_freq = self.inv_freq  # a plain attribute, as transformers' rotary
        # A drop-path schedule read back as Python floats while building.
        self.rates = [x.item() for x in torch.linspace(0, 0.1, 3)]
        # Re-inits after the layers' own resets, which they overwrite.
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[self.embed.padding_idx].zero_()
        nn.init.zeros_(self.proj.bias)
        self.proj.weight.data.uniform_(-0.1, 0.1)


def _expected_constants(module):
    width = module.scale.numel()
    return {
        "scale": torch.ones(width) * 0.5 + torch.arange(width) / width,
        "position_ids": torch.arange(16).expand(1, -1),
        "inv_freq": 1.0 / 10000 ** (torch.arange(0, width, 2).float() / width),
        "proj.bias": torch.zeros(width),
    }


def test_deferred_init_builds_on_meta_and_materialize_replays_the_constructor():
    module = ti.deferred_init(Recorded)
    assert all(t.is_meta for t in (*module.parameters(), *module.buffers()))
    assert module.rates == pytest.approx([0.0, 0.05, 0.1])
    torch.manual_seed(0)
    assert ti.materialize(module) is module
    tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    for name, expected in _expected_constants(module).items():
        assert torch.equal(tensors[name], expected), name
    assert module.original_inv_freq is module.inv_freq
    assert module.head.weight is module.embed.weight
    assert isinstance(module.head.weight, nn.Parameter) and module.scale.requires_grad
    assert torch.equal(module.embed.weight[1], torch.zeros(64))
    rows = torch.cat([module.embed.weight[:1], module.embed.weight[2:]]).flatten().detach()
    assert scipy.stats.kstest(rows.numpy(), "norm", args=(0, 0.02)).pvalue > P_MIN
    weight = module.proj.weight.flatten().detach().numpy()
    assert scipy.stats.kstest(weight, "uniform", args=(-0.1, 0.2)).pvalue > P_MIN


def test_overwritten_writes_are_not_replayed_and_fills_run_in_one_batch(monkeypatch):
    batches = []
    call_many = _dispatch.call_many

    def counting(tensors, laws, *args):
        if not tensors[0].is_meta:
            batches.append(sorted(laws))
        return call_many(tensors, laws, *args)

    monkeypatch.setattr(_dispatch, "call_many", counting)
    module = ti.deferred_init(Recorded)
    ti.materialize(module)
    # embed.weight's own reset and proj's are overwritten: only the last fills remain, in two
    # batches, since the padding row's zero_ must follow the normal fill of its embedding.
    assert batches == [["normal"], ["constant", "uniform"]]


def test_seeded_replay_depends_only_on_seed_and_name():
    def build(seed, threads):
        torch.manual_seed(seed + 100)
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return ti.materialize(ti.deferred_init(Recorded), seed=seed)
        finally:
            torch.set_num_threads(previous)

    first, second = build(5, 1), build(5, 2)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    other = build(6, 1)
    assert not torch.equal(other.embed.weight, first.embed.weight)
    assert torch.equal(other.scale, first.scale)


def test_seeded_replay_leaves_the_global_rng_as_it_was():
    torch.manual_seed(3)
    state = torch.get_rng_state()
    ti.materialize(ti.deferred_init(Recorded), seed=1)
    assert torch.equal(torch.get_rng_state(), state)


def test_replayed_laws_equal_eager_construction():
    """Eager construction (stock) and replay agree in law for every tensor."""
    torch.manual_seed(0)
    eager = Recorded(vocab=4000)
    replayed = ti.materialize(ti.deferred_init(Recorded, vocab=4000), seed=0)
    for name, expected in eager.named_parameters():
        got = dict(replayed.named_parameters())[name].detach().flatten()
        expected = expected.detach().flatten()
        if name in _expected_constants(eager):
            assert torch.equal(got, expected), name
        else:
            result = scipy.stats.ks_2samp(got.numpy(), expected.numpy())
            assert result.pvalue > P_MIN, name


def test_deferred_init_refuses_what_is_not_a_module():
    with pytest.raises(TypeError, match="deferred_init: fn must return an nn.Module"):
        ti.deferred_init(lambda: torch.empty(3))


def test_materialize_of_a_plain_meta_model_warns_of_custom_constructors():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)

    class Scaled(Wrapper):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4) * 0.5)

    with torch.device("meta"):
        scaled, wrapped = Scaled(), Wrapper()
        plain = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(RuntimeError, match="'scale'"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ti.materialize(scaled)  # no reset writes scale: an error names it
    with pytest.warns(ti.UnrecordedInitWarning, match=r"2 tensors \(body.bias, body.weight\)"):
        ti.materialize(wrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ti.materialize(plain)  # torch.nn's own classes: their resets are their constructors


def test_record_keeps_only_writes_of_meta_storage():
    with _record.recording() as record:
        real = torch.ones(3, device="cpu").clone()  # put on meta by the recorder
        real.add_(1)
        view = real[1:]
        view.mul_(2)
    funcs = [op.func for op in record.ops]
    assert torch.ops.aten.slice.Tensor not in funcs  # views are rebuilt, not replayed
    assert torch.ops.aten.mul_.Tensor in funcs
    assert torch.equal(_record.evaluate(record, real), torch.tensor([2.0, 4.0, 4.0]))


def test_fills_and_factories_are_recorded_as_the_general_path_records_them():
    """Record.add's short paths for fills of a meta tensor from values and for factories (most
    of a construction's ops) record the op as its general path does: the same references,
    allocations, writes, reads, whole-storage writes and draw numbers."""
    aten, ours, meta = torch.ops.aten, torch.ops.torchinit_ext, torch.device("meta")
    whole = torch.empty(4, 3, device=meta)
    unmet = torch.empty(5, device=meta)  # a storage no recorded op made: the fill allocates it
    calls = [
        (aten.fill_.Scalar, (whole, 1.5), {}),
        (aten.fill_.Scalar, (whole[1:], 2), {}),  # a part of its storage
        (aten.zero_.default, (unmet,), {}),
        (ours.uniform_.default, (whole.t(), -1.0, 1.0), {}),
        (ours.normal_.default, (whole, 0.0, 0.02), {"generator": None}),
        (aten.zeros.default, ([2, 3],), {"device": meta}),
        (aten.randn.default, ([4],), {"dtype": torch.float64, "device": meta}),
        (aten.arange.start_step, (0, 6, 2), {"device": meta}),
    ]
    outs = [func(*args, **kwargs) for func, args, kwargs in calls]
    recorded = []
    for short in (True, False):
        record = _record.Record()
        record.nbytes[_record.storage_key(whole)] = whole.untyped_storage().nbytes()
        for (func, args, kwargs), out in zip(calls, outs):
            traits = _record._TRAITS[func]
            assert traits.fills_first or traits.factory
            if not short:
                traits = dataclasses.replace(traits, fills_first=False, factory=False)
            record.add(func, traits, args, kwargs, out)
        recorded.append([dataclasses.asdict(op) for op in record.ops])
    assert len(recorded[0]) == len(calls)
    assert recorded[0] == recorded[1]


def test_compiled_code_in_a_constructor_gives_eagers_values():
    """Code compiled with torch.compile and run in a constructor is recorded as eager code is,
    and run in a reset as eager code is: materialize() gives eager's values both ways."""

    @torch.compile(backend="eager")
    def rescale(w):
        return w * 2 + torch.sin(w).sum()

    class Rescaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 3)
            self.reset_parameters()

        def reset_parameters(self):
            with torch.no_grad():
                self.linear.weight.copy_(rescale(self.linear.weight))

    with ti.patched():
        torch.manual_seed(0)
        eager = Rescaled()
    on_meta = Rescaled().to("meta")  # materialize() runs the resets, compiled code and all
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dynamo's notes, and the custom class's
        torch.manual_seed(0)
        deferred = ti.materialize(ti.deferred_init(Rescaled))
        torch.manual_seed(0)
        reset = ti.materialize(on_meta, device="cpu")
    for model in (deferred, reset):
        assert torch.equal(model.linear.weight, eager.linear.weight)
        assert torch.equal(model.linear.bias, eager.linear.bias)


def test_the_garbage_collector_is_held_while_building_and_let_go_after():
    held = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            held.append(not gc.isenabled())
            self.lin = nn.Linear(2, 2)

    def failing():
        raise ValueError("a constructor's own error")

    assert gc.isenabled()
    module = ti.deferred_init(Probe)
    assert held == [True] and gc.isenabled()
    with pytest.raises(ValueError, match="own error"):
        ti.deferred_init(failing)
    assert gc.isenabled()
    gc.disable()  # the caller's choice stands
    try:
        ti.materialize(module)
        assert not gc.isenabled()
    finally:
        gc.enable()


class Mixed(nn.Module):
    """Fills the replay queues straight away (whole tensors of known resets, a stock normal_)
    among those it does not: a padding row written after its embedding's fill, a tied weight,
    a temporary, an integer buffer, a float64 constant, a transposed fill."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6, padding_idx=2)
        self.lin = nn.Linear(6, 10)
        self.lin.weight = self.emb.weight
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm1d(6)
        self.extra = nn.Parameter(torch.empty(5, 3).normal_(0, 0.5))
        self.register_buffer("scaled", torch.randn(4) * 0.1)
        self.register_buffer("wide", torch.full((3,), 2.5, dtype=torch.float64))
        self.t = nn.Parameter(torch.empty(4, 7).t())
        nn.init.uniform_(self.t, -1, 1)


@pytest.mark.parametrize("seed", [None, 7])
def test_the_replays_direct_queue_gives_the_general_paths_values(seed, monkeypatch):
    def build():
        torch.manual_seed(3)
        module = ti.deferred_init(Mixed)
        torch.manual_seed(4)
        return ti.materialize(module, seed=seed)

    direct = build()
    monkeypatch.setattr(_record.Replay, "_queued_whole", lambda self, op: False)
    general = build()
    for (name, a), (_, b) in zip(direct.state_dict().items(), general.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert direct.lin.weight is direct.emb.weight


class WholeWrites(nn.Module):
    """A constructor whose replay writes whole tensors alone: fills, of several dtypes, and
    copies of the values it computed (BatchNorm's num_batches_tracked, an arange)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.BatchNorm2d(4)
        self.lin = nn.Linear(6, 10, dtype=torch.bfloat16)
        self.ln = nn.LayerNorm(6, dtype=torch.float64)
        self.register_buffer("positions", torch.arange(5.0))


@pytest.mark.parametrize("seed", [None, 7])
def test_a_replay_of_whole_writes_alone_gives_the_general_paths_values(seed, monkeypatch):
    def build():
        torch.manual_seed(3)
        module = ti.deferred_init(WholeWrites)
        torch.manual_seed(4)
        ti.materialize(module, seed=seed)
        return module, torch.rand(3)  # (and where it left the global generator)

    made = []
    fill_new = _session.fill_new
    monkeypatch.setattr(_session, "fill_new", lambda *args: made.append(1) or fill_new(*args))
    fast, after_fast = build()
    assert made == [1]  # one step for the whole replay
    monkeypatch.setattr(ti.model, "_made_by_whole_writes", lambda *args: None)
    general, after_general = build()
    assert made == [1]
    for (name, a), (_, b) in zip(fast.state_dict().items(), general.state_dict().items()):
        assert a.dtype == b.dtype and a.stride() == b.stride() and torch.equal(a, b), name
    assert torch.equal(after_fast, after_general)
    assert type(fast.lin.weight) is nn.Parameter and fast.lin.weight.requires_grad


@pytest.mark.parametrize("factory", [torch.zeros, torch.ones])
@pytest.mark.parametrize("dtype", [None, torch.float16, torch.int64, torch.bool])
def test_zeros_and_ones_are_stocks_under_any_default_dtype(factory, dtype):
    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            for i, size in enumerate([(), (0, 3), (2, 3, 4)]):
                self.register_buffer(f"b{i}", factory(size, dtype=dtype))

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        eager = Buffers()
        module = ti.deferred_init(Buffers)
        assert all(b.is_meta for b in module.buffers())
        ti.materialize(module)
    finally:
        torch.set_default_dtype(previous)
    for (name, a), (_, b) in zip(module.named_buffers(), eager.named_buffers()):
        assert (a.dtype, a.shape, a.stride()) == (b.dtype, b.shape, b.stride()), name
        assert torch.equal(a, b) and not a.requires_grad, name


def _through_python(monkeypatch):
    """Every op recorded through the recorder's Python, recording.cpp's fast path never on."""
    monkeypatch.setattr(_dispatch._C, "recording_fast_path_start", lambda *args: None)
    monkeypatch.setattr(_dispatch._C, "recording_fast_path_stop", lambda *args: None)


@pytest.mark.parametrize("seed", [None, 5])
def test_the_fast_path_records_what_the_recorder_records(seed, monkeypatch):
    """Empty factories and views, which recording.cpp takes without Python, give the record the
    storages, ops and replayed values that the recorder's Python gives them."""
    dispatched = []
    through_recorder = _record._Recorder.__torch_dispatch__

    def noting(self, func, types, args=(), kwargs=None):
        dispatched.append(func)
        return through_recorder(self, func, types, args, kwargs)

    monkeypatch.setattr(_record._Recorder, "__torch_dispatch__", noting)

    def build():
        dispatched.clear()
        torch.manual_seed(3)
        with _record.recording() as record:
            Mixed()
        ops = [(op.func, op.draw, len(op.writes), len(op.reads)) for op in record.ops]
        torch.manual_seed(3)
        module = ti.deferred_init(Mixed)
        torch.manual_seed(4)
        state = ti.materialize(module, seed=seed).state_dict()
        return sorted(record.nbytes.values()), ops, list(dispatched), state

    fast_sizes, fast_ops, fast_dispatched, fast_state = build()
    _through_python(monkeypatch)
    python_sizes, python_ops, python_dispatched, python_state = build()
    aten = torch.ops.aten
    taken = {aten.empty.memory_format, aten.t.default}
    assert taken <= set(python_dispatched)
    assert taken.isdisjoint(fast_dispatched)
    assert fast_sizes == python_sizes and fast_ops == python_ops
    assert fast_state.keys() == python_state.keys()
    for name, value in fast_state.items():
        assert torch.equal(value, python_state[name]), name


def test_another_dispatch_mode_sees_every_op_while_recording():
    """The fast path takes ops only while the recorder is the one dispatch mode: a mode entered
    in the constructor or around deferred_init() sees the factories and views too."""
    taken = {torch.ops.aten.empty.memory_format, torch.ops.aten.t.default}

    def layer():
        module = nn.Linear(3, 2)
        module.register_buffer("transposed", torch.empty(3, 2).t())
        return module

    inside = OpsSeen()

    def build():
        with inside:
            return layer()

    module = ti.deferred_init(build)
    assert module.weight.is_meta and module.transposed.is_meta
    assert taken <= set(inside.ops)
    around = OpsSeen()
    with around:
        module = ti.deferred_init(layer)
    assert module.weight.is_meta
    assert taken <= set(around.ops)
    ti.materialize(module)
    assert not module.weight.is_meta


def test_recording_leaves_no_dispatch_state_behind():
    """Code that turns dispatch modes off while building gets real tensors, as from the
    recorder; the fast path's dispatch key is off once deferred_init() returns or raises, and
    in a nested deferred_init() the outer recording goes on after the inner one."""
    made = []

    def build():
        with torch._C._DisableTorchDispatch():
            made.append(torch.empty(2))
        made.append(torch.empty(2))
        return nn.Linear(2, 2)

    def failing():
        torch.empty(3)
        raise ValueError("a constructor's own error")

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ti.deferred_init(nn.Linear, 3, 2)
            self.own = nn.Linear(2, 2)

    ti.deferred_init(build)
    assert [t.device.type for t in made] == ["cpu", "meta"]
    with pytest.raises(ValueError, match="own error"):
        ti.deferred_init(failing)
    outer = ti.deferred_init(Outer)
    assert all(t.is_meta for t in outer.parameters())
    assert "DeferredInit" not in str(torch._C._dispatch_tls_local_include_set())
    assert not torch.empty(1).is_meta
    ti.materialize(outer)
    assert not any(t.is_meta for t in outer.parameters())


def test_deferred_init_and_materialize_leave_torch_dynamo_unimported():
    """Their dispatch modes run unwrapped: torch wraps a mode's __torch_dispatch__ in
    torch._disable_dynamo by default, which imports torch._dynamo at the first op (0.35 to 1 s,
    more than a small model's whole build)."""
    code = (
        "import sys, torch, torchinit_ext as ti\n"
        "module = ti.materialize(ti.deferred_init(torch.nn.Linear, 3, 2), seed=0)\n"
        "assert not module.weight.is_meta\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=os.path.dirname(os.path.dirname(ti.__file__)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False"]
