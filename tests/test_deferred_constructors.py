"""deferred_init() of constructors the meta device cannot run as they are (issue 30, item 7): an op
whose result's shape depends on values (torch.unique, nonzero, a boolean mask) runs on the real
values, and the module holds what the constructor saw; what cannot be recorded (.numpy(), a write
into meta that fails there, a lazy module's uninitialized tensors) raises one UnrecordableError
naming the constructor's module, the op and the way out. Exact against eager construction."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

import torchinit_ext as ti
from torchinit_ext import _record
from torchinit_ext._record import UnrecordableError
from torchinit_ext.model import NotReplayableError

# What a constructor computes from a random tensor `w` (64 values of randn), shaped by its values.
DATA_DEPENDENT = {
    "unique": lambda w: torch.unique(torch.round(w * 2)),
    "unique counts": lambda w: torch.unique(torch.round(w * 2), return_counts=True)[1],
    "unique inverse": lambda w: torch.unique(torch.round(w), return_inverse=True)[1],
    "unique rows": lambda w: torch.unique((w > 0).view(32, 2).long(), dim=0),
    "unique_consecutive": lambda w: torch.unique_consecutive((w > 0).long()),
    "nonzero": lambda w: (w > 0).nonzero(),
    "nothing nonzero": lambda w: (w > 100).nonzero(),
    "boolean mask": lambda w: w[w > 0],
    "masked_select": lambda w: torch.masked_select(w, w > 0),
    "where": lambda w: torch.where(w > 0)[0],
    "repeat_interleave": lambda w: torch.arange(4).repeat_interleave((w[:4] > 0).long() + 1),
    "bincount": lambda w: torch.bincount((w > 0.5).long() + (w > -0.5).long()),
}


class Shaped(nn.Module):
    """Draws `w`, then builds a layer as wide as the result of `compute(w)` and keeps both."""

    def __init__(self, compute):
        super().__init__()
        w = torch.randn(64)
        out = compute(w)
        self.register_buffer("w", w)
        self.register_buffer("out", out)
        self.seen = out.tolist()
        self.count = int((w > 0).sum())
        self.fc = nn.Linear(4, max(1, out.numel()))


@pytest.mark.parametrize("compute", DATA_DEPENDENT.values(), ids=DATA_DEPENDENT.keys())
def test_a_data_dependent_result_is_what_eager_construction_computes(compute):
    torch.manual_seed(0)
    eager = Shaped(compute)
    torch.manual_seed(0)
    module = ti.deferred_init(Shaped, compute)
    assert module.out.is_meta and module.out.shape == eager.out.shape
    assert module.seen == eager.seen and module.count == eager.count
    ti.materialize(module, seed=5)
    assert torch.equal(module.w, eager.w) and torch.equal(module.out, eager.out)
    assert module.fc.weight.shape == eager.fc.weight.shape


@pytest.mark.parametrize("compute", DATA_DEPENDENT.values(), ids=DATA_DEPENDENT.keys())
def test_the_materialized_tensors_hold_what_the_constructor_saw(compute):
    torch.manual_seed(1)
    module = ti.materialize(ti.deferred_init(Shaped, compute), seed=3)
    assert not module.w.is_meta and len(set(module.w.tolist())) == 64  # random, not a fill
    assert int((module.w > 0).sum()) == module.count
    assert torch.equal(module.out, compute(module.w))
    assert module.out.tolist() == module.seen


class Counted(nn.Module):
    def __init__(self):
        super().__init__()
        w = torch.randn(256)
        self.register_buffer("w", w)
        self.positive = int((w > 0).sum())
        self.nonzero = int((w > 0).nonzero().numel())
        self.head = nn.Linear(8, self.nonzero)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_count_of_a_random_tensor_matches_the_materialized_tensor(seed):
    torch.manual_seed(seed)
    module = ti.materialize(ti.deferred_init(Counted), seed=seed + 10)
    assert int((module.w > 0).sum()) == module.positive == module.nonzero
    assert module.head.out_features == module.nonzero
    assert module.head.weight.shape == (module.nonzero, 8)


class ReadAfterDerived(nn.Module):
    """Derives `mask` from `w` before anything reads `w`; reads of both come later."""

    def __init__(self):
        super().__init__()
        w = torch.randn(64)
        mask = w > 0
        self.kept = w[w > 0.5]  # runs on w's values: captures them
        self.register_buffer("w", w)
        self.register_buffer("mask", mask)
        self.positive = int(mask.sum())  # mask's values: those of the captured w


def test_a_tensor_derived_before_its_source_was_captured_agrees_with_it():
    torch.manual_seed(0)
    eager = ReadAfterDerived()
    torch.manual_seed(0)
    module = ti.materialize(ti.deferred_init(ReadAfterDerived), seed=0)
    assert torch.equal(module.w, eager.w) and torch.equal(module.mask, module.w > 0)
    assert module.positive == eager.positive == int((module.w > 0).sum())


class RegNetWidths(nn.Module):
    """Stage widths as timm's RegNet computes them: on a tensor it asks for on the CPU."""

    def __init__(self, depth=13, slope=36.44, initial=24, mult=2.49):
        super().__init__()
        continuous = torch.arange(depth, device="cpu") * slope + initial
        exps = torch.round(torch.log(continuous / initial) / torch.log(torch.tensor(mult)))
        widths = torch.round((initial * torch.pow(mult, exps)) / 8) * 8
        stage_widths, stage_depths = torch.unique(widths, return_counts=True)
        self.num_stages = len(torch.unique(widths))
        self.stages = nn.ModuleList(
            nn.Sequential(*[nn.Linear(int(w), int(w)) for _ in range(int(d))])
            for w, d in zip(stage_widths.tolist(), stage_depths.tolist())
        )


def test_regnet_widths_from_unique_are_stocks():
    stock = RegNetWidths()
    module = ti.materialize(ti.deferred_init(RegNetWidths))
    assert module.num_stages == stock.num_stages == 4
    shapes = {name: t.shape for name, t in module.state_dict().items()}
    assert shapes == {name: t.shape for name, t in stock.state_dict().items()}


def test_the_reproducer_of_the_issue_builds():
    def build():
        w = torch.round(torch.arange(4, dtype=torch.float32, device="cpu") * 24 + 24)
        return nn.Linear(8, len(torch.unique(w)))

    assert ti.materialize(ti.deferred_init(build)).weight.shape == (4, 8)


def test_parametrizations_orthogonal_reads_allclose_of_meta_tensors():
    # allclose's own kernel calls .item() with the recorder off: it runs on the real values.
    torch.manual_seed(0)
    module = ti.materialize(
        ti.deferred_init(lambda: nn.utils.parametrizations.orthogonal(nn.Linear(16, 16)))
    )
    weight = module.weight.detach()
    assert not weight.is_meta
    assert torch.allclose(weight @ weight.T, torch.eye(16), atol=1e-5)
    assert nn.utils.parametrize.is_parametrized(module, "weight")


class Mixed(nn.Module):
    """Arithmetic between its meta tensors and a real tensor it is given, and a write of meta
    values into that real tensor."""

    def __init__(self, real: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.shifted = (self.fc.weight.detach() + real).sum().item()
        real.copy_(self.fc.weight.detach())


def test_real_tensors_mixed_with_meta_ones_see_the_materialized_values():
    torch.manual_seed(0)
    real = torch.randn(8, 8)
    given = real.clone()
    module = ti.materialize(ti.deferred_init(Mixed, real), seed=0)
    weight = module.fc.weight.detach()
    assert module.shifted == (weight + given).sum().item()
    assert torch.equal(real, weight)  # written for real, as eager construction writes it


# ---- what cannot be recorded ------------------------------------------------------------------


def _raises_unrecordable(build, *args) -> UnrecordableError:
    with pytest.raises(UnrecordableError) as caught:
        ti.deferred_init(build, *args)
    # Nothing else blew up: the recording is over and the next one works.
    assert _get_current_dispatch_mode() is None
    assert torch.empty(2).device.type == "cpu"
    assert ti.materialize(ti.deferred_init(nn.Linear, 2, 2)).weight.shape == (2, 2)
    return caught.value


def _says(error: UnrecordableError, module: str, op: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert f"constructor of {module}:" in message and op in message
    assert "torchinit_ext.patched()" in message and "construct it for real" in message
    assert error.module == module and error.op == op


class Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.total = int(self.fc.weight.detach().numpy().sum())


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.before = nn.Linear(8, 8)
        self.inner = Inner()


def test_numpy_of_a_meta_tensor_names_the_innermost_constructor():
    error = _raises_unrecordable(Outer)
    _says(error, "Inner", "Tensor.numpy()")
    assert isinstance(error.__cause__, TypeError) and "numpy" in str(error.__cause__)


def test_numpy_of_a_meta_tensor_outside_a_constructor_raises_naming_the_op():
    def build():
        w = torch.zeros(4)  # recorded, on meta
        return nn.Linear(8, int(w.numpy().sum()))

    error = _raises_unrecordable(build)
    assert error.module is None and error.op == "Tensor.numpy()"
    assert "torchinit_ext.patched()" in str(error)


def test_the_issues_numpy_reproducer_records_as_arange_is_real_while_building():
    # A small arange is made on the CPU, as eager construction makes it, so numpy() reads it.
    def build():
        w = torch.arange(4.0)
        return nn.Linear(8, int(w.numpy().sum()))

    module = ti.materialize(ti.deferred_init(build), seed=0)
    assert module.weight.shape == (6, 8)


class WritesNonzero(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("indices", torch.empty(0, 1, dtype=torch.long))
        torch.nonzero(torch.randn(8), out=self.indices)


def test_a_write_into_meta_that_fails_there_names_the_op():
    error = _raises_unrecordable(WritesNonzero)
    _says(error, "WritesNonzero", "aten::nonzero")
    assert isinstance(error.__cause__, NotImplementedError)


class ItemOutOfReach(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        with torch._C._DisableTorchDispatch():  # what no dispatch mode sees
            self.total = self.fc.weight.sum().item()


def test_an_item_out_of_the_recorders_reach_names_the_op():
    error = _raises_unrecordable(ItemOutOfReach)
    _says(error, "ItemOutOfReach", "Tensor.item()")
    assert isinstance(error.__cause__, RuntimeError)


class ShapeError(nn.Module):
    def __init__(self, compute):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        compute(self.fc.weight.detach())


@pytest.mark.parametrize(
    "compute",
    [lambda w: w + torch.ones(3), lambda w: (w * 2).add_(torch.ones(3))],
    ids=["out of place", "in place"],
)
def test_a_shape_error_on_meta_is_raised_unchanged(compute):
    with torch.device("meta"), pytest.raises(RuntimeError) as on_meta:
        ShapeError(compute)
    with pytest.raises(RuntimeError) as deferred:
        ti.deferred_init(ShapeError, compute)
    assert type(deferred.value) is RuntimeError and str(deferred.value) == str(on_meta.value)
    assert deferred.value.__cause__ is None and deferred.value.__context__ is None
    assert _get_current_dispatch_mode() is None


NO_META_KERNEL = {  # the real run's error, as eager construction raises it
    "masked_select": lambda w: torch.masked_select(w, torch.ones(3, dtype=torch.bool)),
    "unique dim": lambda w: torch.unique(w, dim=5),
}


@pytest.mark.parametrize("compute", NO_META_KERNEL.values(), ids=NO_META_KERNEL.keys())
def test_an_error_of_eager_construction_is_raised_as_it_is(compute):
    with pytest.raises(Exception) as eager:
        ShapeError(compute)
    with pytest.raises(Exception) as deferred:
        ti.deferred_init(ShapeError, compute)
    assert type(deferred.value) is type(eager.value)
    assert str(deferred.value) == str(eager.value)
    assert _get_current_dispatch_mode() is None


def test_a_lazy_module_is_refused_naming_its_tensor():
    with pytest.raises(UnrecordableError) as caught:
        ti.materialize(ti.deferred_init(nn.LazyLinear, 4))  # refused at either step
    message = str(caught.value)
    assert "'weight' of LazyLinear" in message and "UninitializedParameter" in message
    assert "torchinit_ext.patched()" in message


def test_a_lazy_tensor_is_refused_by_its_qualified_name():
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.LazyBatchNorm1d()))
    with pytest.raises(UnrecordableError, match=r"^materialize: '1\.0\.weight' of LazyBatchNorm1d"):
        ti.materialize(model)
    ti.materialize(nn.Sequential(nn.Linear(2, 2)))  # nothing to refuse


# ---- timm -------------------------------------------------------------------------------------


def test_timm_regnet_deferred_has_stocks_shapes():
    from tests.helpers.real_models import ensure_torchvision_importable

    ensure_torchvision_importable()
    timm = pytest.importorskip("timm")
    stock = timm.create_model("regnety_002", pretrained=False)
    module = ti.materialize(ti.deferred_init(timm.create_model, "regnety_002", pretrained=False))
    assert not any(t.is_meta for t in module.state_dict().values())
    shapes = {name: t.shape for name, t in module.state_dict().items()}
    assert shapes == {name: t.shape for name, t in stock.state_dict().items()}


def test_tensors_made_from_python_data_go_on_meta_with_their_values():
    class FromData(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("scale", torch.tensor(8.0), persistent=False)
            self.logit_scale = nn.Parameter(torch.tensor([2.6592, -1.0]))
            self.probe = torch.tensor([]).device  # where new tensors go, as transformers asks

    module = ti.deferred_init(FromData)
    assert module.probe.type == "cpu"
    assert module.scale.is_meta and module.logit_scale.is_meta
    assert isinstance(module.logit_scale, nn.Parameter)
    ti.materialize(module)
    assert torch.equal(module.scale, torch.tensor(8.0))
    assert torch.equal(module.logit_scale.detach(), torch.tensor([2.6592, -1.0]))
    assert module.logit_scale.requires_grad and "scale" not in module.state_dict()


class DataOnItsParametersDevice(nn.Module):
    """transformers' RWKV, in small: it builds tensors from Python data on its parameters'
    device, which is meta while recording, and copies them in."""

    def __init__(self):
        super().__init__()
        self.decay = nn.Parameter(torch.empty(4))
        self.mix = nn.Parameter(torch.empty(1, 1, 4))
        self.lin = nn.Linear(4, 4)
        device = self.decay.device
        with torch.no_grad():
            self.decay.copy_(torch.tensor([-5.0 + i for i in range(4)], device=device))
            ramp = torch.as_tensor([i / 4 for i in range(4)], dtype=torch.float32, device=device)
            self.mix.copy_(torch.pow(ramp[None, None, :], 0.5))
            self.lin.bias.copy_(self.decay.new_tensor([1, 2, 3, 4]))
        self.register_buffer("steps", torch.asarray([3, 1, 2], device=device, dtype=torch.int16))
        self.gate = nn.Parameter(torch.tensor([0.25], device=device, requires_grad=True))


def test_data_asked_for_on_its_parameters_meta_device_keeps_its_values():
    torch.manual_seed(0)
    eager = DataOnItsParametersDevice()
    module = ti.deferred_init(DataOnItsParametersDevice)
    assert all(t.is_meta for t in (module.decay, module.mix, module.steps, module.gate))
    ti.materialize(module)
    for name, tensor in eager.state_dict().items():
        if name != "lin.weight":  # (random)
            assert torch.equal(module.state_dict()[name], tensor), name
    assert module.gate.requires_grad and module.steps.dtype == torch.int16
    # The stand-ins are gone with the recording.
    assert torch.tensor is torch._C._VariableFunctions.tensor
    assert "new_tensor" not in vars(torch.Tensor)


def test_data_made_on_meta_under_another_name_is_refused_not_replayed_as_garbage():
    on_meta = torch._C._VariableFunctions.tensor  # torch.tensor, held before the recording began

    class Aliased(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.plain = nn.Linear(3, 3)
            with torch.no_grad():
                self.lin.bias.copy_(on_meta([1.0, 2.0, 3.0], device="meta"))

    module = ti.deferred_init(Aliased)
    with pytest.raises(NotReplayableError, match="values are unknown") as raised:
        ti.materialize(module)
    assert raised.value.names == ["lin.bias"]
    assert module.plain.weight.is_meta  # refused before anything was written

    class Read(nn.Module):
        def __init__(self):
            super().__init__()
            self.count = int((on_meta([1.0, -2.0], device="meta") > 0).sum())

    with pytest.raises(UnrecordableError, match="Read.*values are unknown"):
        ti.deferred_init(Read)


def test_a_constructor_branching_on_the_meta_device_sees_eagers_device():
    # transformers' DETR family copies its backbone's batch norms into frozen ones only if they
    # are not on meta.
    class FrozenNorm(nn.Module):
        def __init__(self):
            super().__init__()
            norm = nn.BatchNorm2d(4)
            nn.init.zeros_(norm.weight)
            self.register_buffer("weight", torch.ones(4))
            if norm.weight.device != torch.device("meta"):
                with torch.no_grad():
                    self.weight.copy_(norm.weight)

    assert torch.equal(FrozenNorm().weight, torch.zeros(4))
    module = ti.materialize(ti.deferred_init(FrozenNorm))
    assert torch.equal(module.weight, torch.zeros(4))


def test_orthogonal_on_meta_is_recorded():
    # transformers' RWKV re-initializes its embedding with orthogonal_ in _init_weights: a fill
    # the recording missed kept the earlier normal_ values.
    def build():
        layer = nn.Linear(6, 4)
        nn.init.orthogonal_(layer.weight, gain=0.5)
        return layer

    module = ti.materialize(ti.deferred_init(build))
    gram = module.weight.detach() @ module.weight.detach().T
    torch.testing.assert_close(gram, 0.25 * torch.eye(4), atol=1e-6, rtol=0)


# ---- ops on values the constructor has read: run on them, as eager construction runs them -----


class MeanResized(nn.Module):
    """transformers' mean resizing, in small: reads an embedding's values, then computes their
    statistics and a Cholesky factor, and draws new rows from them."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 8)
        w = self.emb.weight.data.float()
        mean = w.mean(0)
        centered = w - mean
        covariance = centered.T @ centered / 32
        assert bool(torch.isclose(covariance, covariance.T, atol=1e-6).all())  # values read
        factor = torch.linalg.cholesky(covariance + 1e-3 * torch.eye(8))
        self.register_buffer("factor", factor)
        self.register_buffer("stats", torch.stack([w.std(), covariance.trace()]))
        grown = torch.empty(40, 8)
        grown[:32] = w
        grown[32:] = mean + torch.randn(8, 8) @ factor.T
        self.grown = nn.Parameter(grown)


def test_ops_on_values_read_are_eagers_and_not_replayed():
    torch.manual_seed(0)
    with ti.patched():  # the compiled fills, which deferred_init() records
        eager = MeanResized()
    torch.manual_seed(0)
    module = ti.deferred_init(MeanResized)
    record = ti._record.record_of(module)[0]
    after_the_read = {torch.ops.aten.linalg_cholesky_ex.default, torch.ops.aten.std.correction}
    assert not after_the_read & {op.func for op in record.ops}  # computed while recording
    ti.materialize(module, seed=3)
    assert torch.equal(module.emb.weight, eager.emb.weight)
    assert torch.equal(module.factor, eager.factor) and torch.equal(module.stats, eager.stats)
    assert torch.equal(module.grown[:32], eager.grown[:32])
    drawn = module.grown[32:].clone()
    ti.materialize(module, seed=4)
    assert not torch.equal(module.grown[32:], drawn)  # drawn at materialize(), by its seed
    assert torch.equal(module.factor, eager.factor)


class ReadWrittenRead(nn.Module):
    """Reads a weight, writes it (whole, then through a view), and reads it again."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        first = float(self.lin.weight.detach().sum())
        with torch.no_grad():
            self.lin.weight.mul_(2)
            self.lin.weight[0].add_(first)
        self.register_buffer("total", self.lin.weight.sum() + first)
        self.register_buffer("noisy", torch.normal(self.lin.weight.detach(), 1.0))


def test_a_write_after_a_read_is_seen_by_what_follows_it():
    torch.manual_seed(0)
    with ti.patched():
        eager = ReadWrittenRead()
    torch.manual_seed(0)
    module = ti.materialize(ti.deferred_init(ReadWrittenRead), seed=0)
    assert torch.equal(module.lin.weight, eager.lin.weight)
    assert torch.equal(module.total, eager.total)
    noise = module.noisy - module.lin.weight.detach()  # drawn at materialize() around it
    assert not torch.equal(module.noisy, eager.noisy) and noise.abs().max() < 6


class SinCos(nn.Module):
    """Position embeddings as diffusers computes them (arange, outer, sin, cos, cat), an eye, and
    computations too large to hold (a 4 MiB result of two small inputs; an arange of 2 MiB)."""

    def __init__(self, positions=16, width=8, large=1024):
        super().__init__()
        omega = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2))
        angles = torch.outer(torch.arange(positions, dtype=torch.float64), omega)
        self.register_buffer("embed", torch.cat([angles.sin(), angles.cos()], 1).float())
        self.register_buffer("eye", torch.eye(5, 3) * 2)
        steps = torch.arange(large, dtype=torch.float32)
        self.register_buffer("grid", torch.outer(steps, steps))
        self.register_buffer("long_range", torch.arange(2**18) % 7)


def test_small_tensors_no_random_op_gave_are_computed_once_large_ones_replayed():
    eager = SinCos()
    module = ti.deferred_init(SinCos)
    recorded = {op.func for op in ti._record.record_of(module)[0].ops}
    aten = torch.ops.aten
    assert not {aten.sin.default, aten.cos.default, aten.cat.default, aten.eye.m} & recorded
    assert {aten.mul.Tensor, aten.arange.default, aten.remainder.Scalar} <= recorded  # large
    ti.materialize(module)
    for (name, a), (_, b) in zip(module.named_buffers(), eager.named_buffers()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


# What a constructor computes from a random tensor no one has read yet (so it runs on meta):
# shaped by the CPU on zeros (_record._shaped_on_cpu) where torch's meta kernels are Python.
UNREAD = {
    "broadcast": lambda w: w.view(8, 8) * w[:8].view(8, 1) - 1,
    "promotion": lambda w: (w.view(8, 8) > 0).int() + w.double().view(8, 8),
    "channels_last": lambda w: w.view(1, 4, 4, 4).contiguous(memory_format=torch.channels_last) + 1,
    "transposed": lambda w: w.view(8, 8).t() * 2,
    "reduction": lambda w: w.view(4, 4, 4).mean(dim=(0, 2), keepdim=True),
    "all": lambda w: (w.view(8, 8) > 0).all(dim=1),
    "mm": lambda w: w.view(8, 8).t() @ w.view(8, 8),
    "cholesky_ex": lambda w: torch.linalg.cholesky_ex(w.view(8, 8) @ w.view(8, 8).t())[0],
    "in place": lambda w: (w.view(8, 8) * 2).add_(w[:8]).mul_(3),
    # On zeros, an integer division by zero, which the CPU refuses: the meta kernel shapes it.
    "fails on zeros": lambda w: torch.div((w > 0).long(), (w > -9).long(), rounding_mode="floor"),
    "in place fails on zeros": lambda w: (
        (w > 0).long().div_((w > -9).long(), rounding_mode="floor")
    ),
}


class Unread(nn.Module):
    def __init__(self, compute, size=64):
        super().__init__()
        self.register_buffer("w", torch.randn(size))
        out = compute(self.w)
        self.register_buffer("out", out)
        self.layout = (out.shape, out.stride(), out.dtype)


def spy_on_shaping(monkeypatch) -> list[bool]:
    """Whether the CPU shaped each op it was asked to (_record._shaped_on_cpu), from now on."""
    shaped = []
    unspied = _record._shaped_on_cpu

    def spy(func, traits, args, kwargs):
        out = unspied(func, traits, args, kwargs)
        shaped.append(out is not None)
        return out

    monkeypatch.setattr(_record, "_shaped_on_cpu", spy)
    return shaped


@pytest.mark.parametrize("name", UNREAD.keys())
def test_what_is_computed_on_meta_is_shaped_as_eager_construction_shapes_it(name, monkeypatch):
    compute = UNREAD[name]
    torch.manual_seed(0)
    eager = Unread(compute)
    shaped = spy_on_shaping(monkeypatch)
    torch.manual_seed(0)
    module = ti.deferred_init(Unread, compute)
    assert module.layout == eager.layout and module.out.is_meta
    if name.endswith("fails on zeros"):
        assert not all(shaped)
    elif name == "in place":
        assert shaped == [True] * 3  # mul, then add_ and mul_ too
    elif name != "reduction" or hasattr(torch.Tag, "reduction"):  # (a recent tag)
        assert any(shaped)
    ti.materialize(module)
    assert torch.equal(module.w, eager.w)
    assert torch.equal(module.out, eager.out) and module.out.stride() == eager.out.stride()


def test_a_few_columns_of_a_large_tensor_are_not_shaped_on_zeros_of_its_size(monkeypatch):
    # 2 columns of 2048 x 1024: 16 KiB of values spread over 8 MiB, more than zeros are made for.
    def columns(w):
        return w.view(2048, 1024)[:, :2] * 2

    shaped = spy_on_shaping(monkeypatch)
    module = ti.deferred_init(Unread, columns, 2048 * 1024)
    assert shaped == [False] and module.layout[:2] == ((2048, 2), (2, 1))


@pytest.mark.parametrize(
    "compute",
    [
        lambda w: w.view(1024, 1) - w.view(1, 1024),  # 1 Mi elements from 8 KiB
        lambda w: w.view(1024, 1).expand(1024, 128).t() @ w.view(1024, 1).expand(1024, 128),
        lambda w: w.view(1024, 1).expand(1024, 64).sum(0),  # sum's meta kernel is short
    ],
    ids=["broadcast", "mm", "reduction"],
)
def test_an_op_of_much_work_on_little_memory_is_shaped_by_its_meta_kernel(compute, monkeypatch):
    shaped = spy_on_shaping(monkeypatch)
    eager = Unread(compute, 1024)
    module = ti.deferred_init(Unread, compute, 1024)
    assert shaped[-1] is False and module.layout == eager.layout


def test_a_reduction_of_long_meta_code_is_shaped_on_the_cpu_up_to_more_work(monkeypatch):
    # mean's meta kernel is torch's Python reference code: 64 Ki elements cost the CPU less.
    def compute(w):
        return w.view(1024, 1).expand(1024, 64).mean(0)

    shaped = spy_on_shaping(monkeypatch)
    eager = Unread(compute, 1024)
    module = ti.deferred_init(Unread, compute, 1024)
    assert shaped[-1] is True and module.layout == eager.layout
    ti.materialize(module)
    assert torch.equal(module.out, compute(module.w))


# ---- small drawless tensors: real while building, as eager construction makes them -----------


class Positions(nn.Module):
    """Position tables computed from a small arange: on the CPU in eager construction."""

    def __init__(self):
        super().__init__()
        steps = torch.arange(8.0)
        self.steps_seen = steps.tolist()  # a read, as eager reads it
        table = torch.outer(steps, 1.0 / 10 ** torch.linspace(0, 1, 4))
        self.register_buffer("table", torch.cat([table.sin(), table.cos()], dim=1))
        self.original_table = self.table  # transformers keeps original_inv_freq so
        both = torch.arange(8.0) * 3
        self.register_buffer("low", both[:4])  # two views of one storage, as eager's
        self.register_buffer("high", both[4:])
        self.kept = torch.arange(3)  # an attribute, not a buffer: stays a real tensor


def test_small_drawless_tensors_are_real_while_building_and_kept_ones_go_on_meta():
    eager = Positions()
    module = ti.deferred_init(Positions)
    assert module.steps_seen == eager.steps_seen
    assert all(b.is_meta for b in module.buffers())
    assert module.original_table is module.table  # the alias follows the buffer onto meta
    assert module.low.untyped_storage()._cdata == module.high.untyped_storage()._cdata
    assert not module.kept.is_meta and torch.equal(module.kept, eager.kept)
    ti.materialize(module)
    for (name, a), (_, b) in zip(module.named_buffers(), eager.named_buffers()):
        assert torch.equal(a, b), name
    assert module.original_table is module.table
    assert module.low.untyped_storage().data_ptr() == module.high.untyped_storage().data_ptr()


class DrawsIntoReal(nn.Module):
    """A parameter made from a small drawless tensor, then drawn into: the draw is recorded."""

    def __init__(self, make):
        super().__init__()
        self.weight = nn.Parameter(make())
        nn.init.normal_(self.weight)


def test_a_draw_into_a_real_tensor_is_recorded_as_a_draw_into_an_empty_one():
    # Under a seed, values follow from the name and the law: as from an uninitialized tensor.
    from_eye = ti.materialize(ti.deferred_init(DrawsIntoReal, lambda: torch.eye(4)), seed=3)
    from_empty = ti.materialize(ti.deferred_init(DrawsIntoReal, lambda: torch.empty(4, 4)), seed=3)
    assert torch.equal(from_eye.weight, from_empty.weight)
    assert not torch.equal(from_eye.weight, torch.eye(4))
    state = torch.get_rng_state()
    module = ti.deferred_init(DrawsIntoReal, lambda: torch.eye(4))
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn while building
    torch.manual_seed(5)
    ti.materialize(module)
    torch.manual_seed(5)
    assert torch.equal(
        module.weight,
        ti.materialize(ti.deferred_init(DrawsIntoReal, lambda: torch.empty(4, 4))).weight,
    )


class MixesRealAndMeta(nn.Module):
    """A real tensor written into a meta parameter, then changed, then kept as a buffer."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(4))
        steps = torch.arange(4.0)
        with torch.no_grad():
            self.bias.add_(steps)  # meta + real: the real storage goes to meta here
        steps.mul_(10)  # and this write follows it there
        self.register_buffer("steps", steps)
        # 1.4 MB made from small real tensors: recorded, not held while building.
        self.register_buffer("big", torch.outer(torch.arange(600.0), torch.arange(600.0)))


def test_a_real_tensor_read_with_meta_ones_goes_to_meta_and_its_writes_follow():
    eager = MixesRealAndMeta()
    module = ti.deferred_init(MixesRealAndMeta)
    assert module.steps.is_meta and module.big.is_meta
    ti.materialize(module)
    for (name, a), (_, b) in zip(module.state_dict().items(), eager.state_dict().items()):
        assert torch.equal(a, b), name


class ReadThenTransposed(nn.Module):
    """Results computed on values the constructor read, in their several layouts."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(4, 3))
        self.total = self.w.sum().item()  # read: w is computed now
        self.register_buffer("transposed", self.w.t() * 2)  # on the values, column-major
        self.register_buffer("whole", self.w * 2)
        # Data-dependent: on the CPU, a part of a larger storage (a run per element at most).
        self.register_buffer("runs", torch.unique_consecutive((self.w > 0).long().view(-1)))


def test_results_on_read_values_keep_their_values_in_every_layout():
    module = ti.materialize(ti.deferred_init(ReadThenTransposed))
    w = module.w
    assert module.total == pytest.approx(w.sum().item())
    assert torch.equal(module.transposed, w.t() * 2)
    assert torch.equal(module.whole, w * 2)
    assert torch.equal(module.runs, torch.unique_consecutive((w > 0).long().view(-1)))


@pytest.mark.parametrize(
    "value",
    [torch.arange(10.0), torch.arange(10.0)[3:7], torch.arange(12.0).view(3, 4).t()],
    ids=["whole", "inside its storage", "transposed"],
)
def test_a_captured_value_is_read_back_as_it_was(value):
    record = _record.Record()
    meta = _record._captured(record, value)
    read = _record._compute(record, {_record.storage_key(meta)}).tensor(_record.ref(meta))
    assert torch.equal(read, value)
