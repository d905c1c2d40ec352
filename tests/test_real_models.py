"""Real models (HF transformers, timm, torchvision; tests/helpers/real_models.py), initialized
three ways with torchinit_ext and compared with stock torch's initialization: patched eager
construction, deferred_init() then materialize(), and a plain meta build then materialize(). Plus
materialize(seed=...)'s reproducibility, and a library imported for the first time inside
patched() behaving as stock afterwards.

torchtitan is left out: 0.3 imports triton and needs a nightly torch, so it cannot be imported
beside torch 2.13.0+cpu.
"""

import importlib.util
import os
import re
import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import torchinit_ext
from tests.helpers.real_models import (
    MODELS,
    assert_same_init,
    assert_stock_init,
    ensure_torchvision_importable,
    init_problems,
    named_tensors,
    require,
    stock_reference,
)

pytestmark = pytest.mark.slow  # about 2 minutes on 2 cores, most of it building stock references

NAMES = list(MODELS)


def _spec(name):
    spec = MODELS[name]
    require(spec)
    stock_reference(spec.build)  # built unpatched, before any mode runs (cached per model)
    return spec


def _on_meta(model):
    return [name for name, t in named_tensors(model).items() if t.is_meta]


# ---- the comparison catches what it must -----------------------------------------------------


class _Toy(nn.Module):
    """Random and deterministic values, a padding row, a non-random buffer and a tie."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(512, 64, padding_idx=0)
        self.proj = nn.Linear(256, 1024)  # kaiming_uniform_(a=sqrt(5)): fan_in 256
        self.small = nn.Parameter(nn.init.normal_(torch.empty(256, 256), std=0.02))
        self.norm = nn.LayerNorm(64)
        self.head = nn.Linear(64, 512, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("position_ids", torch.arange(64), persistent=False)


def _normal_like_proj(model):
    bound = 1 / 16  # kaiming_uniform_(a=sqrt(5)) of fan_in 256: U(-1/16, 1/16)
    nn.init.normal_(model.proj.weight, std=bound / 3**0.5)  # the same std, another law


def _untie(model):
    model.head.weight = nn.Parameter(model.embed.weight.detach().clone())


MUTATIONS = {
    "std_1_not_0.02": lambda m: nn.init.normal_(m.small, std=1.0),
    "std_0.021_not_0.02": lambda m: nn.init.normal_(m.small, std=0.021),
    "normal_not_uniform_same_std": _normal_like_proj,
    "fan_out_not_fan_in": lambda m: nn.init.kaiming_uniform_(
        m.proj.weight, a=5**0.5, mode="fan_out"
    ),
    "padding_row_random": lambda m: nn.init.normal_(m.embed.weight[0]),
    "bias_shifted": lambda m: m.proj.bias.add_(0.02),
    "constant_changed": lambda m: nn.init.constant_(m.norm.weight, 1.0 + 2**-20),
    "buffer_changed": lambda m: m.position_ids.add_(1),
    "untied": _untie,
}
EXPECTED = {  # the tensor each mutation's failure must name
    "std_1_not_0.02": "small",
    "std_0.021_not_0.02": "small",
    "normal_not_uniform_same_std": "proj.weight",
    "fan_out_not_fan_in": "proj.weight",
    "padding_row_random": "embed.weight",
    "bias_shifted": "proj.bias",
    "constant_changed": "norm.weight",
    "buffer_changed": "position_ids",
    "untied": "head.weight",
}


def test_a_stock_build_under_another_seed_passes():
    for seed in (3, 4, 5):
        torch.manual_seed(seed)
        assert_same_init(_Toy, _Toy())


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_wrong_initialization_is_caught_and_named(mutation):
    torch.manual_seed(3)
    model = _Toy()
    with torch.no_grad():
        MUTATIONS[mutation](model)
    problems = init_problems(stock_reference(_Toy), model)
    assert problems and all(EXPECTED[mutation] in p for p in problems), problems


def test_the_torchvision_shim_is_idempotent():
    ensure_torchvision_importable()
    ensure_torchvision_importable()
    torchvision = pytest.importorskip("torchvision")
    assert torchvision.models.resnet18 is not None
    assert hasattr(torch.ops.torchvision, "nms")


def _torchvision_pairs_with_torch() -> bool:
    """Whether the installed torchvision is the build made for this torch: release 0.N+15 for
    2.N with the same local tag, as 0.29.1+cu130 beside 2.14.1+cu130. Its C ops then load and no
    shim is used. Read from torchvision/version.py, without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    with open(os.path.join(spec.submodule_search_locations[0], "version.py")) as f:
        vision = re.search(r"^__version__ = '([^']*)'", f.read(), re.MULTILINE).group(1)
    vision_release, _, vision_tag = vision.partition("+")
    torch_release, _, torch_tag = torch.__version__.partition("+")
    return (
        int(vision_release.split(".")[1]) == int(torch_release.split(".")[1]) + 15
        and vision_tag == torch_tag
    )


def test_a_matching_torchvision_runs_on_its_own_ops_not_the_shim():
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    if not _torchvision_pairs_with_torch():
        pytest.skip("this torchvision is not the build of this torch: its models use the shim")
    ensure_torchvision_importable()
    import torchvision

    # The shim defines schemas without kernels; torchvision's own library registers CPU kernels.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("torchvision::nms", "CPU")
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]


# ---- three ways of building with torchinit_ext -----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_patched_construction(name):
    spec = _spec(name)
    torch.manual_seed(3)
    with torchinit_ext.patched():
        model = spec.build()
    assert_stock_init()  # stock again on exit
    assert_same_init(spec.build, model)


@pytest.mark.parametrize("name", NAMES)
def test_deferred_init_then_materialize(name):
    spec = _spec(name)
    torch.manual_seed(3)
    model = torchinit_ext.deferred_init(spec.build)
    # No real storage for what initialization fills (a BatchNorm's int64 num_batches_tracked
    # scalar may be real).
    real = [
        n
        for n, t in named_tensors(model).items()
        if not t.is_meta and (isinstance(t, nn.Parameter) or t.is_floating_point())
    ]
    assert not real, f"deferred_init() allocated real storage for {real}"
    torchinit_ext.materialize(model)
    assert not _on_meta(model)
    assert_same_init(spec.build, model)


def _named_in(raised, model):
    """The model's tensor names that the raised errors and warnings name: in their message, each
    as a whole word, or in a `names` attribute (for lists too long for a message)."""
    text = "\n".join(map(str, raised))
    listed = {n for r in raised for n in getattr(r, "names", ())}
    return {
        name
        for name in named_tensors(model)
        if name in listed or re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", text)
    }


@pytest.mark.parametrize("name", NAMES)
def test_meta_then_materialize_is_never_silently_wrong(name):
    # materialize() runs each submodule's reset_parameters(): a constructor that initializes
    # otherwise cannot be reproduced. Then it must raise or warn, naming the tensors concerned;
    # every tensor it does not name must be initialized as stock's.
    spec = _spec(name)
    try:
        with torch.device("meta"):
            model = spec.build()
    except Exception as error:  # loud, and not torchinit_ext's: the library's constructor
        pytest.skip(f"{name} cannot be built on the meta device: {type(error).__name__}: {error}")
    torch.manual_seed(3)
    raised = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torchinit_ext.materialize(model)
        except RuntimeError as error:
            raised.append(error)
    raised += [w.message for w in caught]
    named = _named_in(raised, model)
    problems = init_problems(stock_reference(spec.build), model, skip=named)
    said = "".join(f"\n  {type(r).__name__}: {str(r)[:400]}" for r in raised) or " nothing"
    if problems:
        pytest.fail(
            f"materialize() of a meta-built {name} is silently wrong: it named {len(named)} "
            f"tensors and said{said}\nbut these differ from stock:\n  " + "\n  ".join(problems)
        )


@pytest.mark.parametrize("name", NAMES)
def test_materialize_with_a_seed_is_reproducible(name):
    spec = _spec(name)
    builds = []
    for global_seed in (1, 2):  # the global RNG plays no part
        torch.manual_seed(global_seed)
        model = torchinit_ext.deferred_init(spec.build)
        builds.append(named_tensors(torchinit_ext.materialize(model, seed=7)))
    first, second = builds
    assert list(first) == list(second)
    differ = [n for n, t in first.items() if not torch.equal(t.detach(), second[n].detach())]
    assert not differ, f"materialize(seed=7) gave other values for {differ}"
    assert_same_init(spec.build, model)


# ---- a library first imported inside patched() ----------------------------------------------

# Builds each of MODELS[name] for the names in argv in a fresh interpreter, under
# torch.manual_seed(0), and saves their tensors. "patched-first": the libraries are first imported
# (and each model built once) inside torchinit_ext.patched(), and the saved builds run after the
# block. "stock": torchinit_ext is never imported.
_BUILD_SCRIPT = """
import importlib, sys
import torch
from tests.helpers import real_models

mode, out, *names = sys.argv[1:]
specs = [real_models.MODELS[name] for name in names]
assert not any(s.library in sys.modules for s in specs), "a library was imported already"
real_models.ensure_torchvision_importable()
if mode == "patched-first":
    import torchinit_ext

    with torchinit_ext.patched():
        for spec in specs:
            importlib.import_module(spec.library)
            spec.build()
    real_models.assert_stock_init()
builds = {}
for spec in specs:
    torch.manual_seed(0)
    builds[spec.name] = {n: t.detach() for n, t in real_models.named_tensors(spec.build()).items()}
assert (mode == "patched-first") == ("torchinit_ext" in sys.modules)
torch.save(builds, out)
"""

LEAK_MODELS = ["hf_llama", "timm_vit_base_patch16_224", "torchvision_vit_b_16"]


@pytest.fixture(scope="module")
def fresh_builds(tmp_path_factory):
    """{mode: {model name: tensors}} from two fresh interpreters, run side by side."""
    names = []
    for name in LEAK_MODELS:
        ensure_torchvision_importable()
        if importlib.util.find_spec(MODELS[name].library) is not None:
            names.append(name)
    folder = tmp_path_factory.mktemp("fresh_builds")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {
        **os.environ,
        "PYTHONPATH": root,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",  # two interpreters side by side on two cores
    }
    modes = ("patched-first", "stock")
    runs = {
        mode: subprocess.Popen(
            [sys.executable, "-c", _BUILD_SCRIPT, mode, str(folder / f"{mode}.pt"), *names],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for mode in modes
    }
    for mode, run in runs.items():
        output, _ = run.communicate(timeout=300)
        assert run.returncode == 0, f"the {mode} interpreter failed:\n{output}"
    return {mode: torch.load(folder / f"{mode}.pt") for mode in modes}


@pytest.mark.parametrize("name", LEAK_MODELS)
def test_a_library_first_imported_inside_patched_is_stock_after_it(name, fresh_builds):
    require(MODELS[name])
    leaked, stock = fresh_builds["patched-first"][name], fresh_builds["stock"][name]
    assert list(leaked) == list(stock)
    differ = [n for n, t in stock.items() if not torch.equal(t, leaked[n])]
    assert not differ, (
        f"{MODELS[name].library}, first imported inside patched(), still initializes otherwise "
        f"than stock after it: under torch.manual_seed(0), {len(differ)} of {len(stock)} "
        f"tensors differ from a fresh interpreter's stock build: {differ}"
    )
