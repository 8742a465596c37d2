"""conv2d(algorithm=...): the Winograd kernels (F(4x4, 3x3) and F(2x2, 5x5) on the CPU) against the
float64 reference, "auto" against "direct", and the argument's errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _compare, reference

from helpers import random_array

ACTIVATIONS = [None, "relu", "relu6", "sigmoid", "tanh", "silu"]
hsettings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PADDINGS = st.one_of(
    st.sampled_from(["valid", "same"]),
    st.integers(0, 3),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))),
)


def _check(device, x, w, b, algorithm, **kwargs):
    got = fastconv.conv2d(device.put(x), device.put(w), device.put(b), algorithm=algorithm, **kwargs)
    got = device.get(got)
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64),
                            None if b is None else b.astype(np.float64), **kwargs)
    terms = w.shape[0] * w.shape[1] * w.shape[2]
    _compare.assert_close(got, want, terms=terms, what=f"conv2d(algorithm={algorithm!r}, {kwargs})")
    return got, _compare.max_relative_error(got, want)[0] / _compare.tolerance(terms)


@st.composite
def winograd_cases(draw):
    padding = draw(PADDINGS)
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    return dict(
        kernel=draw(st.sampled_from([3, 5])),
        x_shape=(draw(st.integers(1, 2)), h, w, draw(st.integers(1, 70))), c_out=draw(st.integers(1, 70)),
        bias=draw(st.booleans()), padding=padding, activation=draw(st.sampled_from(ACTIVATIONS)),
    )


def _fits(x_shape, kernel, padding):
    from fastconv import _params

    try:
        _params.conv2d_problem("conv2d", x_shape, (kernel, kernel, x_shape[3], 1), None, 1, padding, 1, 1, None)
        return True
    except ValueError:
        return False


@hsettings
@given(case=winograd_cases())
def test_winograd_random_shapes(case, device, isa, rng):
    k = case["kernel"]
    if not _fits(case["x_shape"], k, case["padding"]):
        return  # the window does not fit: conv2d raises for every algorithm (tested elsewhere)
    x = random_array(rng, case["x_shape"])
    w = random_array(rng, (k, k, case["x_shape"][3], case["c_out"]))
    b = random_array(rng, (case["c_out"],)) if case["bias"] else None
    _check(device, x, w, b, "winograd", padding=case["padding"], activation=case["activation"])


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("c_in", [1, 3, 64, 512])
def test_winograd_error_growth(kernel, c_in, isa, rng):
    """The transforms amplify rounding; the error must stay well inside the float32 tolerance,
    whose sqrt(KH * KW * C_in) growth covers the long reductions (measured: <= 0.5 of it, see
    bench/NOTES.md (Winograd sections))."""
    x = random_array(rng, (1, 14, 13, c_in))
    w = random_array(rng, (kernel, kernel, c_in, 24))
    b = random_array(rng, (24,))
    _, ratio = _check(_cpu_device(), x, w, b, "winograd", padding="same")
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, padding",
    [
        (3, (1, 9, 11, 160), 203, "same"),  # > 4 MB of transformed weights, 9 tiles: per-block weights
        (5, (2, 6, 5, 200), 150, ((2, 1), (0, 3))),
        (3, (1, 44, 43, 160), 180, 1),  # 121 tiles: per-block weights with AVX-512's wider blocks only
    ],
)
def test_winograd_weights_transformed_per_channel_block(kernel, x_shape, c_out, padding, isa, rng):
    """Small maps with wide layers transform the weights one output-channel block at a time
    (conv2d_winograd.cpp, stream_weights); C_out is not a multiple of the block or the vector."""
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    _, ratio = _check(_cpu_device(), x, w, b, "winograd", padding=padding, activation="relu")
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


def _cpu_device():
    class Cpu:
        put = get = staticmethod(lambda a: a)

    return Cpu()


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, padding",
    [
        (3, (1, 28, 28, 64), 64, "same"),  # auto picks Winograd
        (3, (2, 9, 11, 32), 48, 1),
        (3, (1, 6, 6, 8), 8, "valid"),  # auto picks direct
        (3, (1, 17, 15, 40), 70, ((0, 2), (3, 1))),
        (5, (1, 28, 28, 96), 32, "same"),  # auto picks Winograd
        (5, (1, 7, 9, 8), 8, "valid"),  # auto picks direct
        (5, (2, 13, 12, 40), 36, ((2, 1), (0, 3))),
    ],
)
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_auto_and_direct_match_reference(kernel, x_shape, c_out, padding, activation, device, isa, rng):
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    results = {}
    for algorithm in ("auto", "direct", "winograd"):
        results[algorithm], _ = _check(device, x, w, b, algorithm, padding=padding, activation=activation)
    terms = kernel * kernel * x_shape[3]
    scale = float(np.sqrt(np.mean(results["direct"].astype(np.float64) ** 2)))
    diff = np.abs(results["auto"].astype(np.float64) - results["direct"])
    assert diff.max() <= 2 * _compare.tolerance(terms) * (np.abs(results["direct"]).max() + scale)


def test_direct_kernel_shapes_still_accept_auto_and_direct(rng):
    x = random_array(rng, (1, 9, 9, 4))
    for kernel, kwargs in [((5, 5, 4, 6), {}), ((7, 7, 4, 6), {}), ((3, 3, 4, 6), dict(stride=2)), ((3, 3, 2, 6), dict(groups=2)),
                           ((3, 3, 4, 6), dict(dilation=2)), ((1, 1, 4, 6), {})]:
        w = random_array(rng, kernel)
        for algorithm in ("auto", "direct"):
            got = fastconv.conv2d(x, w, algorithm=algorithm, **kwargs)
            want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), **kwargs)
            _compare.assert_close(got, want, terms=kernel[0] * kernel[1] * kernel[2])


@pytest.mark.parametrize(
    "kernel, kwargs, what",
    [
        ((7, 7, 4, 6), {}, "7x7"),
        ((5, 3, 4, 6), {}, "5x3"),
        ((5, 5, 4, 6), dict(stride=2), "stride"),
        ((3, 3, 4, 6), dict(stride=2), "stride"),
        ((3, 3, 4, 6), dict(dilation=2), "dilation"),
        ((3, 3, 2, 6), dict(groups=2), "groups"),
        ((1, 1, 4, 6), {}, "1x1"),
    ],
)
def test_winograd_unsupported_shapes_raise(kernel, kwargs, what, rng):
    x = random_array(rng, (1, 9, 9, 4))
    with pytest.raises(ValueError, match=r"conv2d: algorithm='winograd' needs a 3x3 or 5x5 kernel"):
        fastconv.conv2d(x, random_array(rng, kernel), algorithm="winograd", **kwargs)


@pytest.mark.parametrize("algorithm", ["fast", "Winograd", "", None, 3])
def test_unknown_algorithm_raises(algorithm, rng):
    x = random_array(rng, (1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"conv2d: unknown algorithm"):
        fastconv.conv2d(x, random_array(rng, (3, 3, 2, 2)), algorithm=algorithm)


def test_algorithm_is_part_of_the_memoised_problem():
    from fastconv import _params

    args = ("conv2d", (1, 8, 8, 4), (3, 3, 4, 4), None, 1, "same", 1, 1, None)
    assert _params.conv2d_problem(*args).algorithm == "auto"
    assert _params.conv2d_problem(*args, "winograd").algorithm == "winograd"
    assert _params.conv2d_problem(*args, "direct").algorithm == "direct"
    assert _params.depthwise_problem("depthwise_conv2d", (1, 8, 8, 4), (3, 3, 4), None, 1, "same", 1, None).algorithm == "auto"


@pytest.mark.parametrize("activation, kernel, expected", [
    ("tanh", 5, "direct"), ("sigmoid", 5, "direct"), ("silu", 5, "winograd"), (None, 5, "winograd"),
    ("tanh", 3, "winograd"), ("sigmoid", 3, "winograd"),
])
def test_winograd_5x5_with_sigmoid_or_tanh_runs_direct(activation, kernel, expected):
    """F(2x2, 5x5)'s rounding after sigmoid / tanh can exceed the tolerance: algorithm='winograd'
    then runs the direct kernel (3x3 has F(2x2, 3x3) for those activations on the CPU)."""
    from fastconv import _params

    p = _params.conv2d_problem("conv2d", (1, 8, 8, 4), (kernel, kernel, 4, 4), None, 1, "same", 1, 1, activation,
                               "winograd")
    assert p.algorithm == expected
