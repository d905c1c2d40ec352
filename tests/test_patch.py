"""patch()/unpatch()/patched(): every way of reaching a stock init function, or
Tensor.uniform_/normal_, runs the compiled fills while patched, with stock's semantics; after the
patch nothing differs from stock, whatever was captured or imported inside it."""

import functools
import inspect
import math
import types

import pytest
import scipy.stats
import torch
from torch import nn

import torchinit_ext as ti
from tests.helpers.common import P_MIN
from torchinit_ext import _patch


def _values(fill, seed=0, shape=(64, 32)):
    torch.manual_seed(seed)
    tensor = torch.empty(shape)
    fill(tensor)
    return tensor


def _imported_inside_patch():
    """A module that binds stock's functions its own way while the patch is active."""
    module = types.ModuleType("late_library")
    exec(
        "import functools, torch\n"
        "from torch.nn.init import normal_, xavier_uniform_\n"
        "FUNCTIONS = {'trunc_normal_': torch.nn.init.trunc_normal_}\n"
        "small = functools.partial(torch.nn.init.normal_, std=0.02)\n",
        module.__dict__,
    )
    return module


def _references():
    """Each way code reaches a stock init function, with the call it makes and ours."""
    import torch.nn.modules.activation as activation

    captured = {"normal_": torch.nn.init.normal_}
    return {
        "torch.nn.init attribute": (
            lambda t: torch.nn.init.kaiming_uniform_(t),
            ti.kaiming_uniform_,
        ),
        "imported by name": (lambda t: activation.xavier_uniform_(t), ti.xavier_uniform_),
        "deprecated alias": (
            lambda t: torch.nn.init.uniform(t, -1, 1),
            lambda t: ti.uniform_(t, -1, 1),
        ),
        "captured in a dict": (
            lambda t: captured["normal_"](t, 0, 2),
            lambda t: ti.normal_(t, 0, 2),
        ),
        "functools.partial": (
            functools.partial(torch.nn.init.trunc_normal_, std=0.02),
            lambda t: ti.trunc_normal_(t, std=0.02),
        ),
        "Tensor.normal_": (lambda t: t.normal_(1, std=3), lambda t: ti.normal_(t, 1, 3)),
        "Tensor.uniform_": (lambda t: t.uniform_(to=4), lambda t: ti.uniform_(t, 0, 4)),
        "orthogonal_": (torch.nn.init.orthogonal_, ti.orthogonal_),
        "sparse_": (lambda t: torch.nn.init.sparse_(t, 0.5), lambda t: ti.sparse_(t, 0.5)),
    }


@pytest.mark.filterwarnings("ignore:`nn.init.uniform` is now deprecated")
@pytest.mark.parametrize("way", list(_references()))
def test_every_reference_runs_ours_while_patched_and_stock_after(way):
    call, ours = _references()[way]
    stock = _values(call)
    with ti.patched():
        patched = _values(call)
    assert torch.equal(patched, _values(ours))
    assert not torch.equal(patched, stock)
    assert torch.equal(_values(call), stock)


def test_a_library_first_imported_inside_the_patch_gets_stock_after_it():
    with ti.patched():
        library = _imported_inside_patch()
        inside = _values(library.small)
    assert torch.equal(inside, _values(lambda t: ti.normal_(t, std=0.02)))
    for call, stock in [
        (library.small, lambda t: torch.nn.init._no_grad_normal_(t, 0.0, 0.02)),
        (library.normal_, lambda t: torch.nn.init._no_grad_normal_(t, 0.0, 1.0)),
        (
            library.FUNCTIONS["trunc_normal_"],
            lambda t: torch.nn.init._no_grad_trunc_normal_(t, 0.0, 1.0, -2.0, 2.0),
        ),
    ]:
        assert torch.equal(_values(call), _values(stock))


def test_patched_restores_on_exception_and_nests():
    stock = _values(torch.nn.init.normal_)
    with pytest.raises(KeyError), ti.patched():
        raise KeyError("boom")
    assert torch.equal(_values(torch.nn.init.normal_), stock)
    with ti.patched():
        with ti.patched():
            pass
        assert torch.equal(_values(torch.nn.init.normal_), _values(ti.normal_))
    ti.patch()
    ti.patch()
    ti.unpatch()
    assert torch.equal(_values(torch.nn.init.normal_), _values(ti.normal_))
    ti.unpatch()
    assert torch.equal(_values(torch.nn.init.normal_), stock)
    assert torch.Tensor.normal_ is torch._C.TensorBase.normal_
    with pytest.raises(RuntimeError, match="without a matching patch"):
        ti.unpatch()


def test_patched_functions_keep_their_identity_signature_and_source():
    functions = [getattr(torch.nn.init, name) for name in _patch._TORCH_FILLS]

    def described():
        return [(inspect.signature(f), f.__defaults__, f.__kwdefaults__) for f in functions]

    before = described()
    sources = [inspect.getsource(f) for f in functions]
    with ti.patched():
        assert [getattr(torch.nn.init, name) for name in _patch._TORCH_FILLS] == functions
        assert [
            (inspect.signature(f), f.__defaults__, f.__kwdefaults__) for f in functions
        ] == before
        assert [inspect.getsource(f) for f in functions] == sources
        assert "_torchinit_ext_patched" in vars(torch.nn.init)
    assert "_torchinit_ext_patched" not in vars(torch.nn.init)


def _error(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 (the error itself is what is compared)
        return type(e), str(e)
    return None


@pytest.mark.parametrize(
    "call",
    [
        lambda: torch.empty(3).normal_(0, -1),
        lambda: torch.empty(3).uniform_(2, 1),
        lambda: torch.empty(3).uniform_(0, math.inf),
        lambda: torch.zeros(3, dtype=torch.long).normal_(),
        lambda: nn.Parameter(torch.empty(3)).normal_(),
        lambda: torch.empty(3).normal_(0, 1, 2),
        lambda: torch.empty(3).uniform_(0, 1, generator=torch.Generator("meta")),
        lambda: torch.empty(3, dtype=torch.bool).uniform_(),
    ],
)
def test_tensor_methods_keep_stocks_errors(call):
    stock = _error(call)
    assert stock is not None
    with ti.patched():
        assert _error(call) == stock


def test_tensor_methods_keep_stocks_autograd_and_meta_behaviour():
    base = torch.ones(4, requires_grad=True)
    with ti.patched():
        derived = base * 2
        derived.normal_()
        assert derived.grad_fn is not None  # recorded by autograd, as stock does
        derived.sum().backward()
        meta = torch.empty(3, device="meta").uniform_()
    assert torch.equal(base.grad, torch.zeros(4))
    assert meta.is_meta


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_tensor_methods_take_the_compiled_law(dtype):
    with ti.patched():
        torch.manual_seed(5)
        sample = torch.empty(20_000, dtype=dtype).normal_(std=0.5)
    assert scipy.stats.kstest(sample.double().numpy(), "norm", args=(0, 0.5)).pvalue > P_MIN


# ---- timm ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_init():
    from tests.helpers.real_models import ensure_torchvision_importable

    ensure_torchvision_importable()
    timm = pytest.importorskip("timm")
    return timm.layers.weight_init


def test_timm_truncated_normals_run_ours_while_patched_and_stock_after(timm_init):
    bounded = functools.partial(timm_init.trunc_normal_, std=0.02, a=-0.04, b=0.04)
    stock = _values(bounded)
    with ti.patched():
        patched = _values(bounded)
        tf_style = _values(functools.partial(timm_init.trunc_normal_tf_, mean=1, std=0.5), seed=3)
        lecun = _values(timm_init.lecun_normal_, seed=4)
    assert torch.equal(patched, _values(lambda t: ti.trunc_normal_(t, 0, 0.02, -0.04, 0.04)))
    assert torch.equal(_values(bounded), stock)
    # trunc_normal_tf_ truncates N(0, 1) to [a, b], then scales by std and shifts by mean.
    law = scipy.stats.truncnorm(-2, 2, loc=1, scale=0.5)
    assert scipy.stats.kstest(tf_style.flatten().numpy(), law.cdf).pvalue > P_MIN
    # lecun_normal_: truncated to 2 std, scaled so the variance is 1 / fan_in.
    assert lecun.std().item() == pytest.approx(1 / math.sqrt(32), rel=0.03)
    assert lecun.abs().max().item() <= 2 / math.sqrt(32) / 0.87962566103423978
