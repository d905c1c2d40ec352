"""The elementwise laws fill_many_ takes, with parameters that reach every sampler the planner
can choose; shared by the CPU-vs-CUDA tests."""

LAWS = [
    ("constant", (0.37,)),
    ("uniform", (-0.3, 0.7)),
    ("normal", (0.1, 2.0)),
    ("trunc_normal", (0.0, 1.0, -2.0, 2.0)),  # wide: normal proposals, some redrawn
    ("trunc_normal", (0.0, 1.0, -1.3, 1.3)),  # wide, near the switch: many redrawn
    ("trunc_normal", (0.0, 1.0, -0.5, 0.5)),  # inversion
    ("trunc_normal", (0.2, 0.5, 3.0, 3.01)),  # narrow: double quantile
    ("trunc_normal", (0.0, 1.0, -45.0, -40.0)),  # far tail
    ("trunc_normal", (0.0, 1.0, 1.0, 1.0)),  # a single value
]


def padded(params):
    """fill_many_'s four parameters of one tensor."""
    return [float(p) for p in (*params, 0.0, 0.0, 0.0, 0.0)[:4]]
