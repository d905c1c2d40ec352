"""Golden values: a SHA-256 of every law x dtype x layout on fixed Philox states, and of the
model-level paths, against tests/golden_values.json. The RNG contract makes these bits the same on
every machine, SIMD level and thread count, so any change here is a change of the contract, which
users must be told of: rerun with TORCHINIT_UPDATE_GOLDEN=1 only for an intended change, and record
it in docs/rng-contract.md, "Changes". (orthogonal_ is left out: its GEMMs come from the BLAS, whose
rounding varies by machine.)"""

import hashlib
import json
import os
import pathlib

import pytest
import torch
from torch import nn

import torchinit_ext as init
from tests.helpers.common import ops

GOLDEN = pathlib.Path(__file__).with_name("golden_values.json")
KEY = [0x0123456789ABCDE, -0x0FEDCBA98765432]

LAWS = {
    "constant": ("constant", [0.25, 0, 0, 0]),
    "uniform": ("uniform", [-1.0, 2.0, 0, 0]),
    "normal": ("normal", [0.5, 2.0, 0, 0]),
    "trunc-wide": ("trunc_normal", [0.0, 1.0, -2.0, 2.0]),
    "trunc-inverse": ("trunc_normal", [0.0, 1.0, -0.5, 0.5]),
    "trunc-tail": ("trunc_normal", [0.0, 1.0, 5.0, 6.0]),
    "trunc-narrow": ("trunc_normal", [0.0, 1.0, 1.0, 1.001]),
    "trunc-narrow-scaled": ("trunc_normal", [0.1, 0.3, 0.4, 0.401]),
    "trunc-far-tail": ("trunc_normal", [0.0, 1.0, -41.0, -40.0]),
    "trunc-far-tail-scaled": ("trunc_normal", [0.5, 0.02, 1.3, 1.4]),
    "trunc-flat": ("trunc_normal", [0.0, 1e15, -2.0, 2.0]),
    "trunc-huge-mean": ("trunc_normal", [1e30, 1e29, -2.0, 2.0]),
}
DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}


def _layout(kind, dtype):
    """(target, full sizes, shard starts) of a 37 x 53 fill in the given layout."""
    if kind == "contiguous":
        return torch.empty(37, 53, dtype=dtype), [], []
    if kind == "transposed":
        return torch.empty(53, 37, dtype=dtype).t(), [], []
    if kind == "sliced":
        return torch.empty(80, 60, dtype=dtype)[3::2, 5:58][:37], [], []
    return torch.empty(37, 53, dtype=dtype), [100, 71], [41, 9]  # a shard


def _digest(tensor):
    data = tensor.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _elementwise_hashes():
    hashes = {}
    for law_name, (law, params) in LAWS.items():
        for dtype_name, dtype in DTYPES.items():
            for layout in ("contiguous", "transposed", "sliced", "shard"):
                target, full, starts = _layout(layout, dtype)
                ops.fill_many_([target], [law], params, KEY, full, starts)
                hashes[f"{law_name}/{dtype_name}/{layout}"] = _digest(target)
    return hashes


def _generator_hashes():
    def gen():
        return torch.Generator().manual_seed(1234)

    calls = {
        "uniform_": lambda t: init.uniform_(t, -1, 2, generator=gen()),
        "normal_": lambda t: init.normal_(t, 0.5, 2, generator=gen()),
        "trunc_normal_": lambda t: init.trunc_normal_(t, 0.0, 0.02, generator=gen()),
        "xavier_uniform_": lambda t: init.xavier_uniform_(t, generator=gen()),
        "kaiming_normal_": lambda t: init.kaiming_normal_(t, generator=gen()),
        "sparse_0.3": lambda t: init.sparse_(t, 0.3, generator=gen()),
        "sparse_0.9": lambda t: init.sparse_(t, 0.9, generator=gen()),
    }
    hashes = {}
    for name, call in calls.items():
        for dtype_name, dtype in DTYPES.items():
            hashes[f"{name}/{dtype_name}"] = _digest(call(torch.empty(61, 29, dtype=dtype)))
    return hashes


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16, padding_idx=0)
        self.conv = nn.Conv1d(16, 24, 3)
        self.norm = nn.LayerNorm(24)
        self.lstm = nn.LSTM(24, 8)
        self.head = nn.Linear(8, 50)


def _model_hashes():
    hashes = {}
    for seed in (None, 7):
        with torch.device("meta"):
            model = _Net()
        torch.manual_seed(99)
        init.materialize(model, device="cpu", seed=seed)
        for name, tensor in model.state_dict().items():
            hashes[f"materialize(seed={seed})/{name}"] = _digest(tensor)
    return hashes


def _all_hashes():
    return {**_elementwise_hashes(), **_generator_hashes(), **_model_hashes()}


@pytest.mark.filterwarnings("ignore::torchinit_ext.UnrecordedInitWarning")  # _Net is built on meta
def test_values_equal_the_golden_hashes():
    got = _all_hashes()
    if os.environ.get("TORCHINIT_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    changed = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    assert not changed, f"{len(changed)} of {len(expected)} cases changed, e.g. {changed[:8]}"
