"""calculate_gain, fans and the xavier_ / kaiming_ scales built on them: every gain's value and
its argument errors, fan_in / fan_out of 2-D to 5-D weights, the laws of xavier_* and kaiming_*
for every mode, gain and slope (scipy.stats, fixed seeds), the rank errors and the zero-element
warning. Each law is also checked to reject the law a swapped fan would give, so the shapes used
here can tell the modes apart."""

import math

import pytest
import torch
from scipy import stats

import torchinit_ext as init
from tests.helpers.common import gen

P_MIN = 1e-3  # fixed seeds: deterministic p-values; the threshold guards regressions
P_REJECT = 1e-6  # a law the sample must clearly not follow


def _fans(shape):
    """fan_in and fan_out from the definition: feature maps times the receptive field."""
    field = math.prod(shape[2:])
    return shape[1] * field, shape[0] * field


def _pvalue(w, dist):
    return stats.kstest(w.double().flatten().numpy(), dist.cdf).pvalue


def _uniform_law(std):
    bound = math.sqrt(3.0) * std
    return stats.uniform(-bound, 2 * bound)


def _normal_law(std):
    return stats.norm(0.0, std)


# ---- calculate_gain -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "linear",
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "sigmoid",
    ],
)
def test_identity_like_gains_are_one(name):
    assert init.calculate_gain(name) == 1


@pytest.mark.parametrize(
    "name,gain",
    [
        ("tanh", 5 / 3),
        ("relu", math.sqrt(2)),
        ("selu", 0.75),
        ("leaky_relu", math.sqrt(2 / 1.0001)),
    ],
)
def test_nonlinear_gains(name, gain):
    assert init.calculate_gain(name) == pytest.approx(gain, rel=1e-14)


@pytest.mark.parametrize("slope", [None, 0, 0.01, 0.2, -0.2, 1, 3, 10, 0.5])
def test_leaky_relu_gain_follows_the_slope(slope):
    s = 0.01 if slope is None else slope
    assert init.calculate_gain("leaky_relu", slope) == pytest.approx(
        math.sqrt(2 / (1 + s * s)), rel=1e-14
    )


def test_leaky_relu_slope_zero_is_relu_and_ten_is_small():
    assert init.calculate_gain("leaky_relu", 0) == pytest.approx(
        init.calculate_gain("relu"), rel=1e-14
    )
    assert init.calculate_gain("leaky_relu", 10) == pytest.approx(0.140719508946058, rel=1e-12)


@pytest.mark.parametrize("slope", [True, False, [1], {"a": "b"}, "0.1", (0.1,), torch.tensor(0.1)])
def test_leaky_relu_slope_must_be_a_plain_number(slope):
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", slope)


@pytest.mark.parametrize(
    "name", ["softmax", "gelu", "Relu", "RELU", "", "qz", "linears", "conv4d", "tan"]
)
def test_unknown_nonlinearity_is_refused(name):
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain(name)


@pytest.mark.parametrize(
    "name,gain", [("relu", math.sqrt(2)), ("tanh", 5 / 3), ("linear", 1.0), ("selu", 0.75)]
)
def test_param_only_matters_for_leaky_relu(name, gain):
    for param in (0.0, 0.3, 7, None):
        assert init.calculate_gain(name, param) == pytest.approx(gain, rel=1e-14)


# ---- fans ---------------------------------------------------------------------------------------

SHAPES = [(200, 60), (150, 25, 3), (60, 20, 3, 3), (32, 8, 3, 3, 5)]  # a few thousand elements each


@pytest.mark.parametrize("shape", SHAPES + [(1, 1), (3, 7, 1, 1), (2, 5, 4, 1, 6)])
def test_fans_are_feature_maps_times_receptive_field(shape):
    w = torch.empty(shape)
    fan_in, fan_out = _fans(shape)
    assert init._calculate_fan_in_and_fan_out(w) == (fan_in, fan_out)
    assert init._calculate_correct_fan(w, "fan_in") == fan_in
    assert init._calculate_correct_fan(w, "fan_out") == fan_out
    assert init._calculate_correct_fan(w, "Fan_Out") == fan_out  # the mode is case-insensitive


@pytest.mark.parametrize(
    "fill", [init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_]
)
@pytest.mark.parametrize("shape", [(), (1,), (9,)])
def test_fewer_than_two_dims_refused_before_any_write(fill, shape):
    w = torch.full(shape, 4.0)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        fill(w)
    assert (w == 4.0).all()


@pytest.mark.parametrize("fill", [init.kaiming_uniform_, init.kaiming_normal_])
@pytest.mark.parametrize("shape", [(0, 1), (5, 0), (0, 3, 3, 3), (4, 2, 0)])
def test_kaiming_of_zero_elements_warns_and_returns_the_tensor(fill, shape):
    w = torch.empty(shape)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        assert fill(w, generator=gen(0)) is w


# ---- xavier_ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [None, 0.37, 1.9])
@pytest.mark.parametrize(
    "fill,law", [(init.xavier_uniform_, _uniform_law), (init.xavier_normal_, _normal_law)]
)
def test_xavier_law(fill, law, shape, gain):
    kwargs = {} if gain is None else {"gain": gain}
    w = fill(torch.empty(shape), generator=gen(1), **kwargs)
    fan_in, fan_out = _fans(shape)
    std = (1.0 if gain is None else gain) * math.sqrt(2.0 / (fan_in + fan_out))
    assert _pvalue(w, law(std)) > P_MIN
    # fan_in alone (a common mistake) gives a clearly different law on these shapes.
    assert _pvalue(w, law((1.0 if gain is None else gain) * math.sqrt(1.0 / fan_in))) < P_REJECT


@pytest.mark.parametrize("shape", SHAPES)
def test_xavier_uniform_stays_inside_and_reaches_its_bounds(shape):
    gain = 1.3
    w = init.xavier_uniform_(torch.empty(shape, dtype=torch.float64), gain=gain, generator=gen(2))
    bound = gain * math.sqrt(6.0 / sum(_fans(shape)))
    assert w.abs().max().item() <= bound
    assert w.max().item() > 0.99 * bound and w.min().item() < -0.99 * bound


# ---- kaiming_ -----------------------------------------------------------------------------------

KAIMING_CASES = [  # shape, kwargs, the gain they imply
    (SHAPES[0], {}, math.sqrt(2.0)),  # leaky_relu with a = 0
    (SHAPES[1], {"a": 0.7}, math.sqrt(2.0 / 1.49)),
    (SHAPES[2], {"a": 1.6}, math.sqrt(2.0 / 3.56)),
    (SHAPES[3], {"nonlinearity": "relu"}, math.sqrt(2.0)),
    (SHAPES[2], {"nonlinearity": "tanh", "a": 5.0}, 5 / 3),  # a is leaky_relu's slope only
    (SHAPES[1], {"nonlinearity": "linear"}, 1.0),
    (SHAPES[3], {"a": 0.2, "nonlinearity": "leaky_relu"}, math.sqrt(2.0 / 1.04)),
]


@pytest.mark.parametrize(
    "fill,law", [(init.kaiming_uniform_, _uniform_law), (init.kaiming_normal_, _normal_law)]
)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("shape,kwargs,gain", KAIMING_CASES)
def test_kaiming_law(fill, law, mode, shape, kwargs, gain):
    w = fill(torch.empty(shape), mode=mode, generator=gen(3), **kwargs)
    fan_in, fan_out = _fans(shape)
    fan, other = (fan_in, fan_out) if mode == "fan_in" else (fan_out, fan_in)
    assert _pvalue(w, law(gain / math.sqrt(fan))) > P_MIN
    assert _pvalue(w, law(gain / math.sqrt(other))) < P_REJECT  # the other mode's law


def test_kaiming_defaults_are_fan_in_and_leaky_relu_with_zero_slope():
    shape = (60, 20, 3, 3)
    explicit = init.kaiming_normal_(torch.empty(shape), 0, "fan_in", "leaky_relu", generator=gen(4))
    default = init.kaiming_normal_(torch.empty(shape), generator=gen(4))
    assert torch.equal(default, explicit)
    assert _pvalue(default, _normal_law(math.sqrt(2.0 / _fans(shape)[0]))) > P_MIN


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_uniform_stays_inside_and_reaches_its_bound(mode):
    shape = (32, 8, 3, 3, 5)
    w = init.kaiming_uniform_(
        torch.empty(shape, dtype=torch.float64), a=0.3, mode=mode, generator=gen(5)
    )
    fan = _fans(shape)[0 if mode == "fan_in" else 1]
    bound = math.sqrt(3.0) * math.sqrt(2.0 / 1.09) / math.sqrt(fan)
    assert w.abs().max().item() <= bound
    assert w.max().item() > 0.99 * bound and w.min().item() < -0.99 * bound
