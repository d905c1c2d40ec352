"""deferred_init() + materialize() give the values a constructor saw (issue 30): what it read
of a tensor is what the materialized module holds, each random tensor draws on its own, real
tensors are copied when recorded, and every op runs under the default dtype it was recorded
under. Exact where stock's values are not random, laws checked against scipy where they are."""

import weakref

import pytest
import scipy.stats
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import P_MIN

WIDTH = 64
BOUND = 1 / WIDTH**0.5  # nn.Linear's kaiming_uniform_(a=sqrt(5)) of its weight


def _uniform_law(weight: torch.Tensor) -> float:
    values = weight.detach().flatten().numpy()
    return scipy.stats.kstest(values, "uniform", args=(-BOUND, 2 * BOUND)).pvalue


def _moved(move):
    class Moved(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(WIDTH, WIDTH)
            self.b = nn.Linear(WIDTH, WIDTH)
            move(self)

    return Moved


MOVES = {
    "module.to('cpu')": lambda m: m.to("cpu"),
    "module.cpu()": lambda m: m.cpu(),
    "weight.tolist()": lambda m: setattr(m, "seen", [m.a.weight.tolist(), m.b.weight.tolist()]),
}


@pytest.mark.parametrize("move", MOVES.values(), ids=MOVES.keys())
def test_reading_tensors_in_the_constructor_keeps_them_independent(move):
    torch.manual_seed(0)
    module = ti.materialize(ti.deferred_init(_moved(move)), seed=0)
    a, b = module.a.weight.detach(), module.b.weight.detach()
    assert not torch.equal(a, b)
    assert _uniform_law(a) > P_MIN and _uniform_law(b) > P_MIN
    independence = scipy.stats.pearsonr(a.flatten().numpy(), b.flatten().numpy())
    assert independence.pvalue > P_MIN
    if hasattr(module, "seen"):
        assert module.seen == [a.tolist(), b.tolist()]


class Reads(nn.Module):
    """Reads values while building, in the ways constructors do."""

    def __init__(self, read=True):
        super().__init__()
        self.read = nn.Linear(WIDTH, WIDTH)
        self.unread = nn.Linear(WIDTH, WIDTH)
        self.register_buffer("order", torch.randperm(16))
        if read:
            self.maxval = float(self.read.weight.detach().max())
            self.first = self.read.bias.detach()[0].item()
            self.positive = bool(self.read.bias[1] > 0)
            self.cpu_copy = self.read.weight.cpu()
            self.order_list = self.order.tolist()
            self.is_permutation = torch.equal(self.order.sort().values, torch.arange(16))


def _state(module: nn.Module) -> dict:
    return {name: t.detach().clone() for name, t in module.state_dict().items()}


def test_values_the_constructor_reads_are_the_materialized_ones():
    torch.manual_seed(0)
    module = ti.materialize(ti.deferred_init(Reads), seed=0)
    weight = module.read.weight.detach()
    assert module.maxval == weight.max().item()
    assert module.first == module.read.bias[0].item()
    assert module.positive == bool(module.read.bias[1] > 0)
    assert torch.equal(module.cpu_copy, weight)
    assert module.order_list == module.order.tolist()
    assert sorted(module.order_list) == list(range(16)) and module.is_permutation is True
    assert _uniform_law(weight) > P_MIN


def test_seeded_values_are_reproducible_and_independent_of_what_was_read():
    def build(read, rng_seed):
        torch.manual_seed(rng_seed)  # fixes what the constructor reads, drawn while building
        return _state(ti.materialize(ti.deferred_init(Reads, read), seed=7))

    first, again = build(True, 0), build(True, 0)
    assert all(torch.equal(first[n], again[n]) for n in first)
    unread = build(False, 1)
    for name in ("unread.weight", "unread.bias"):
        assert torch.equal(first[name], unread[name]), name
    # What was read was drawn while building, so it follows the RNG then, not the seed.
    assert not torch.equal(build(True, 1)["read.weight"], first["read.weight"])


class Temporaries(nn.Module):
    """Parameters made from random temporaries, with a read of one of them in between."""

    def __init__(self, read):
        super().__init__()
        first = torch.randn(WIDTH)
        self.seen = first.sum().item() if read else None
        self.scaled = nn.Parameter(torch.randn(WIDTH, WIDTH) * 0.02)
        self.register_buffer("noise", torch.rand(WIDTH) + first)
        self.order = nn.Parameter(torch.randperm(WIDTH).float(), requires_grad=False)


def test_seeded_temporaries_have_keys_of_their_own_whatever_was_read():
    def build(read, rng_seed):
        torch.manual_seed(rng_seed)
        return _state(ti.materialize(ti.deferred_init(Temporaries, read), seed=7))

    read, unread = build(True, 0), build(False, 1)
    for name in ("scaled", "order"):  # drawn after the read temporary: not shifted by it
        assert torch.equal(read[name], unread[name]), name
    assert torch.equal(build(True, 0)["noise"], read["noise"])
    assert sorted(unread["order"].tolist()) == list(range(WIDTH))


def test_a_seeded_temporary_is_the_documented_compiled_fill():
    """randn's values under a seed: a compiled normal fill of its shape keyed by
    (seed, "#<draw>"), the draw numbering the record's random ops (docs/rng-contract.md)."""
    module = ti.materialize(ti.deferred_init(Temporaries, False), seed=7)
    expected = torch.empty(WIDTH, WIDTH)
    generator = torch.Generator().manual_seed(ti._session.generator_seed(7, "#1"))
    torch.ops.torchinit_ext.normal_(expected, 0.0, 1.0, generator)
    assert torch.equal(module.scaled.detach(), expected * 0.02)


class OwnGenerator(nn.Module):
    """A constructor that seeds a generator of its own, whose values are then deterministic."""

    def __init__(self, reads=0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.empty(WIDTH, WIDTH))
        nn.init.normal_(self.w, generator=generator)
        self.register_buffer("perm", torch.randperm(32, generator=generator))
        self.seen = [self.w.detach().sum().item() for _ in range(reads)]


@pytest.mark.parametrize("reads", [0, 3])
def test_a_constructor_generator_gives_eager_constructions_values(reads):
    with ti.patched():  # deferred_init records the compiled fills, as patched() runs them
        eager = OwnGenerator(reads)
    for rng_seed in (1, 2):
        torch.manual_seed(rng_seed)
        module = ti.materialize(ti.deferred_init(OwnGenerator, reads))
        assert torch.equal(module.w, eager.w)
        assert torch.equal(module.perm, eager.perm)
        assert module.seen == eager.seen
    values = module.w.detach().flatten().numpy()
    assert scipy.stats.kstest(values, "norm").pvalue > P_MIN


class Float64Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # scoped, as transformers' _from_config(dtype=)
        try:
            self.register_buffer("t", torch.arange(4) / 4)
            self.register_buffer("ones", torch.ones(3) * 0.1)
            self.proj = nn.Linear(WIDTH, WIDTH)
        finally:
            torch.set_default_dtype(previous)
        self.register_buffer("single", torch.arange(4) / 3)


def test_default_dtype_changed_in_the_constructor():
    eager = Float64Buffers()
    module = ti.materialize(ti.deferred_init(Float64Buffers))
    for name in ("t", "ones", "single"):
        assert torch.equal(getattr(module, name), getattr(eager, name)), name
    assert module.t.dtype == torch.float64 and module.single.dtype == torch.float32
    assert module.proj.weight.dtype == torch.float64
    assert _uniform_law(module.proj.weight) > P_MIN


def test_default_dtype_changed_between_deferred_init_and_materialize():
    eager = Float64Buffers()
    module = ti.deferred_init(Float64Buffers)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ti.materialize(module)
    finally:
        torch.set_default_dtype(previous)
    for name in ("t", "ones", "single"):
        assert torch.equal(getattr(module, name), getattr(eager, name)), name


class CopiesIn(nn.Linear):
    def __init__(self, source):
        super().__init__(WIDTH, 1)
        self.weight.data.copy_(source)
        self.weight.data.add_(source)  # an op reading a real tensor, not only copy_
        self.bias.data.copy_(source[:1])


class Float64Ones(nn.Module):
    """A factory replayed as recorded (ones), under a default dtype set in the constructor."""

    def __init__(self):
        super().__init__()
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            self.register_buffer("ones", torch.ones(4))
        finally:
            torch.set_default_dtype(previous)


def test_a_replay_that_makes_another_size_than_recorded_raises():
    module = ti.deferred_init(Float64Ones)
    for op in ti._record.record_of(module)[0].ops:
        op.default_dtype = torch.float32  # as if the record had lost the constructor's default
    with pytest.raises(RuntimeError, match="made 16 bytes where its recording made 32"):
        ti.materialize(module)


def test_a_copy_from_a_real_tensor_keeps_its_value_when_recorded():
    source = torch.arange(WIDTH, dtype=torch.float32)
    module = ti.deferred_init(CopiesIn, source)
    source.fill_(7)
    watch = weakref.ref(source)
    del source
    assert watch() is None  # the record keeps a copy, not the caller's tensor
    ti.materialize(module)
    assert torch.equal(
        module.weight.detach(), 2 * torch.arange(WIDTH, dtype=torch.float32).view(1, -1)
    )
    assert torch.equal(module.bias.detach(), torch.zeros(1))


def test_a_storage_read_many_times_is_captured_once():
    class Schedule(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("rates", torch.linspace(0, 0.1, 50))
            self.values = [x.item() for x in self.rates]

    module = ti.deferred_init(Schedule)
    record, _ = ti._record.record_of(module)
    aten = torch.ops.aten
    assert [op.func for op in record.ops] == [aten.copy_.default]  # made on the CPU, captured
    ti.materialize(module)
    assert module.values == module.rates.tolist()
