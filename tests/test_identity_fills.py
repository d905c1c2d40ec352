"""The deterministic fills against their definitions, not against stock: constant_ / ones_ / zeros_
write one value everywhere, eye_ is the identity on any rectangle, dirac_ puts one 1 per
(group, channel) pair at the kernel's centre, so that a convolution with that weight passes its
input through (grouped or not, in 1, 2 and 3 spatial dimensions); other ranks are refused."""

import itertools

import pytest
import torch
import torch.nn.functional as F

import torchinit_ext as init
from tests.helpers.common import FLOATS, gen

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _noise(shape, dtype=torch.float32, seed=0):
    """Nonzero starting content, so that every fill has something to overwrite."""
    return (torch.rand(shape, generator=gen(seed), dtype=torch.float64) + 0.5).to(dtype)


# ---- constant_, ones_, zeros_ ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 4), (2, 1, 3, 5), (2, 2, 2, 3, 1)])
@pytest.mark.parametrize(
    "fill,args,value",
    [
        (init.constant_, (0.3,), 0.3),
        (init.constant_, (-7.25,), -7.25),
        (init.constant_, (4,), 4.0),
        (init.ones_, (), 1.0),
        (init.zeros_, (), 0.0),
    ],
)
def test_every_element_gets_the_value(fill, args, value, shape, dtype):
    t = _noise(shape, dtype)
    assert fill(t, *args) is t
    assert t.shape == shape and t.dtype == dtype
    assert (t == torch.tensor(value, dtype=torch.float64).to(dtype)).all()


def test_zeros_clears_negative_zero_and_nan():
    t = torch.tensor([-0.0, float("nan"), float("inf"), 3.0])
    init.zeros_(t)
    assert (t == 0).all() and not torch.signbit(t).any()


# ---- eye_ ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (6, 1), (4, 4), (3, 8), (8, 3), (33, 65)])
def test_eye_is_one_on_the_diagonal_and_zero_elsewhere(shape, dtype):
    rows, cols = shape
    t = init.eye_(_noise(shape, dtype))
    on_diagonal = torch.arange(rows)[:, None] == torch.arange(cols)[None, :]
    assert (t[on_diagonal] == 1).all()
    assert (t[~on_diagonal] == 0).all()
    assert int(t.sum().item()) == min(rows, cols)


# ---- dirac_ -------------------------------------------------------------------------------------


def _dirac_by_hand(shape, groups):
    """The definition, one element at a time: out channel g * per_group + d, in channel d, at the
    middle index (size // 2) of every spatial dim, for d below min(per_group, in channels)."""
    expected = torch.zeros(shape)
    per_group = shape[0] // groups
    centre = tuple(s // 2 for s in shape[2:])
    for g, d in itertools.product(range(groups), range(min(per_group, shape[1]))):
        expected[(g * per_group + d, d) + centre] = 1
    return expected


@pytest.mark.parametrize("spatial", [(3,), (4,), (3, 5), (2, 4), (3, 1, 4), (2, 2, 2)])
@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("per_group,in_channels", [(2, 5), (4, 4), (5, 2), (1, 1)])
def test_dirac_places_one_per_group_and_channel_at_the_centre(
    spatial, groups, per_group, in_channels
):
    shape = (groups * per_group, in_channels) + spatial
    t = init.dirac_(_noise(shape), groups)
    assert torch.equal(t, _dirac_by_hand(shape, groups))
    assert torch.count_nonzero(t).item() == groups * min(per_group, in_channels)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_dirac_weight_makes_a_grouped_conv_the_identity(dims, groups):
    # Weight (6, 6 / groups, 3, ...) in a conv with `groups` groups: output channel c reads input
    # channel c of its own group, so with "same" padding the conv returns its input.
    channels, kernel = 6, 3
    weight = init.dirac_(
        _noise((channels, channels // groups) + (kernel,) * dims, torch.float64), groups
    )
    x = torch.randn((2, channels) + (5,) * dims, generator=gen(1), dtype=torch.float64)
    y = CONV[dims](x, weight, padding=kernel // 2, groups=groups)
    assert torch.equal(y, x)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("groups", [1, 2, 3])
@pytest.mark.parametrize("per_group", [2, 4, 5])
def test_dirac_groups_copy_the_input_into_each_block_of_outputs(dims, groups, per_group):
    # A plain conv (groups=1) with a weight dirac_'d in `groups` blocks: each block of per_group
    # output channels starts with a copy of the first min(per_group, 4) input channels, then zeros.
    in_channels, kernel = 4, 3
    weight = init.dirac_(
        _noise((groups * per_group, in_channels) + (kernel,) * dims, torch.float64), groups
    )
    x = torch.randn((3, in_channels) + (6,) * dims, generator=gen(2), dtype=torch.float64)
    y = CONV[dims](x, weight)  # no padding: the output is the input cropped by kernel // 2
    crop = (slice(None), slice(None)) + (slice(1, -1),) * dims
    copied = min(per_group, in_channels)
    for g in range(groups):
        block = y[:, g * per_group : (g + 1) * per_group]
        assert torch.equal(block[:, :copied], x[crop][:, :copied])
        assert (block[:, copied:] == 0).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_dirac_in_every_float_dtype_is_exact(dtype):
    t = init.dirac_(_noise((6, 4, 3, 3), dtype), 2)
    assert torch.equal(t.double(), _dirac_by_hand((6, 4, 3, 3), 2).double())


# ---- ranks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fill,shape,words",
    [
        (init.eye_, (), "2 dimensions"),
        (init.eye_, (4,), "2 dimensions"),
        (init.eye_, (2, 2, 2, 2), "2 dimensions"),
        (init.dirac_, (), "3, 4, or 5 dimensions"),
        (init.dirac_, (4,), "3, 4, or 5 dimensions"),
        (init.dirac_, (4, 4), "3, 4, or 5 dimensions"),
        (init.dirac_, (2, 2, 2, 2, 2, 2), "3, 4, or 5 dimensions"),
    ],
)
def test_other_ranks_are_refused_before_any_write(fill, shape, words):
    t = torch.full(shape, 5.0)
    with pytest.raises(ValueError, match=words):
        fill(t)
    assert (t == 5.0).all()
