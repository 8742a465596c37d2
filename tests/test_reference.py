"""Tests of the NumPy reference (fastconv.reference) against independent computations.

The reference is the oracle for every compiled kernel, so it is checked here against SciPy
(signal.correlate, ndimage filters), per-output-element Python formulas on tiny shapes, and
worked examples whose answers are known by hand. Layouts: NHWC activations, HWIO weights.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import reference as ref

FAST = settings(max_examples=30, deadline=None)
ACTIVATIONS = [None, "relu", "relu6", "sigmoid", "tanh", "silu"]


# --------------------------------------------------------------------------------------------
# Independent helpers (deliberately not shared with the reference or _params)


def _rng(seed):
    return np.random.default_rng(seed)


def _same_pads(n, window, stride):
    """SAME_UPPER: output ceil(n / stride); the odd pad element goes after."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + window - n, 0)
    return total // 2, total - total // 2


def _dilate(w, dh, dw):
    """Insert dh - 1 / dw - 1 zero rows / columns between the taps of a (KH, KW, ...) kernel."""
    kh, kw = w.shape[:2]
    out = np.zeros(((kh - 1) * dh + 1, (kw - 1) * dw + 1) + w.shape[2:])
    out[::dh, ::dw] = w
    return out


def _pad_nhwc(x, pads, fill=0.0):
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def _expected_activation(v, activation):
    if activation is None:
        return v
    if activation == "relu":
        return np.where(v > 0, v, 0.0)
    if activation == "relu6":
        return np.minimum(np.where(v > 0, v, 0.0), 6.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-v))
    if activation == "tanh":
        return np.tanh(v)
    return v / (1.0 + np.exp(-v))  # silu


def _conv2d_scipy(x, w, stride, pads, dilation, groups):
    """Grouped conv as scipy.signal.correlate over each group's channels, valid on the padded input."""
    sh, sw = stride
    xp = _pad_nhwc(x, pads)
    wd = _dilate(w, *dilation)
    c_in_g = x.shape[3] // groups
    c_out = w.shape[3]
    c_out_g = c_out // groups
    images = []
    for n in range(x.shape[0]):
        channels = []
        for o in range(c_out):
            g = o // c_out_g
            full = scipy.signal.correlate(xp[n, :, :, g * c_in_g : (g + 1) * c_in_g], wd[:, :, :, o], mode="valid", method="direct")
            channels.append(full[::sh, ::sw, 0])  # stride = the stride-1 result subsampled
        images.append(np.stack(channels, axis=-1))
    return np.stack(images)


def _conv2d_loops(x, w, stride, pads, dilation, groups):
    """y[n, i, j, o] = sum over taps and the group's channels of x[...] * w[...], as written on paper."""
    n_, h, w_, c_in = x.shape
    kh, kw, c_in_g, c_out = w.shape
    (pt, pb), (pl, pr) = pads
    sh, sw = stride
    dh, dw = dilation
    oh = (h + pt + pb - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w_ + pl + pr - (dw * (kw - 1) + 1)) // sw + 1
    y = np.zeros((n_, oh, ow, c_out))
    for n in range(n_):
        for i in range(oh):
            for j in range(ow):
                for o in range(c_out):
                    g = o // (c_out // groups)
                    total = 0.0
                    for ky in range(kh):
                        for kx in range(kw):
                            r, c = i * sh + ky * dh - pt, j * sw + kx * dw - pl
                            if 0 <= r < h and 0 <= c < w_:
                                for ci in range(c_in_g):
                                    total += x[n, r, c, g * c_in_g + ci] * w[ky, kx, ci, o]
                    y[n, i, j, o] = total
    return y


def _pool_out(n, window, stride, pads, ceil_mode):
    span = n + pads[0] + pads[1] - window
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    return out - 1 if (out - 1) * stride >= n + pads[0] else out


def _pool_loops(x, kind, size, stride, pads, ceil_mode, count_include_pad=False):
    """Pooling by explicit windows: max over the real elements, or sum / PyTorch's divisor."""
    _, h, w, _ = x.shape
    (kh, kw), (sh, sw) = size, stride
    (pt, pb), (pl, pr) = pads
    oh = _pool_out(h, kh, sh, (pt, pb), ceil_mode)
    ow = _pool_out(w, kw, sw, (pl, pr), ceil_mode)
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * sh - pt, j * sw - pl
            window = x[:, max(r0, 0) : min(r0 + kh, h), max(c0, 0) : min(c0 + kw, w), :]
            if kind == "max":
                y[:, i, j] = window.max(axis=(1, 2))
                continue
            if count_include_pad:
                divisor = (min(r0 + kh, h + pb) - r0) * (min(c0 + kw, w + pr) - c0)
            else:
                divisor = window.shape[1] * window.shape[2]
            y[:, i, j] = window.sum(axis=(1, 2)) / divisor
    return y


@st.composite
def _padding(draw, size_hw, window_hw, stride_hw, max_pad):
    """A padding argument in one of its accepted forms, and the ((top, bottom), (left, right)) it means."""
    kind = draw(st.sampled_from(["valid", "same", "int", "pair", "explicit"]))
    if kind == "valid":
        return "valid", ((0, 0), (0, 0))
    if kind == "same":
        pads = tuple(_same_pads(n, f, s) for n, f, s in zip(size_hw, window_hw, stride_hw))
        if max(max(p) for p in pads) > max_pad:
            return "valid", ((0, 0), (0, 0))
        return "same", pads
    pad = st.integers(0, max_pad)
    if kind == "int":
        p = draw(pad)
        return p, ((p, p), (p, p))
    if kind == "pair":
        ph, pw = draw(pad), draw(pad)
        return (ph, pw), ((ph, ph), (pw, pw))
    pads = ((draw(pad), draw(pad)), (draw(pad), draw(pad)))
    return pads, pads


# --------------------------------------------------------------------------------------------
# Lecture worked examples

VERTICAL_EDGE = np.array([[1.0, 0.0, -1.0]] * 3)
SOBEL = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
SCHARR = np.array([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]])


def _edge_image(left, right):
    """6x6 single-channel NHWC image: left three columns `left`, right three `right`."""
    row = [left] * 3 + [right] * 3
    return np.array([row] * 6, dtype=np.float64).reshape(1, 6, 6, 1)


@pytest.mark.parametrize(
    "left, right, kernel, middle",
    [
        (10, 0, VERTICAL_EDGE, 30),
        (0, 10, VERTICAL_EDGE, -30),
        (10, 0, SOBEL, 40),
        (10, 0, SCHARR, 160),
    ],
)
def test_edge_detection_examples(left, right, kernel, middle):
    y = ref.conv2d(_edge_image(left, right), kernel.reshape(3, 3, 1, 1))
    assert y.shape == (1, 4, 4, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], np.array([[0, middle, middle, 0]] * 4, dtype=np.float64))


def test_conv_output_size_examples():
    assert ref.conv_output_size(7, 3, 0, 2) == 3
    assert ref.conv_output_size(224, 3, "same", 2) == 112
    assert ref.conv_output_size(6, 3) == 4


def test_conv_output_size_formula():
    for n in range(1, 16):
        for f in range(1, 6):
            for p in range(3):
                for s in range(1, 4):
                    if n + 2 * p >= f:
                        assert ref.conv_output_size(n, f, p, s) == (n + 2 * p - f) // s + 1, (n, f, p, s)
                    for d in range(1, 3):
                        if n + 2 * p >= d * (f - 1) + 1:
                            expected = (n + 2 * p - d * (f - 1) - 1) // s + 1
                            assert ref.conv_output_size(n, f, p, s, d) == expected


def test_parameter_count_of_ten_filters():
    rng = _rng(0)
    x = rng.standard_normal((1, 6, 6, 3))
    w = rng.standard_normal((3, 3, 3, 10))
    b = rng.standard_normal(10)
    assert w.size + b.size == 10 * (27 + 1) == 280
    y = ref.conv2d(x, w, b)
    assert y.shape == (1, 4, 4, 10)
    np.testing.assert_allclose(y, _conv2d_scipy(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1), 1) + b, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# conv2d against SciPy and hand formulas


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    window = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
    # Sizes chosen so that the padded input holds at least one window.
    h = window[0] + draw(st.integers(-2, 5))
    w = window[1] + draw(st.integers(-2, 5))
    h, w = max(h, 1), max(w, 1)
    padding, pads = draw(_padding((h, w), window, stride, max_pad=3))
    if h + sum(pads[0]) < window[0] or w + sum(pads[1]) < window[1]:
        padding, pads = ((window[0], window[0]), (window[1], window[1])), ((window[0],) * 2, (window[1],) * 2)
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    return dict(n=n, hw=(h, w), c_in=c_in, c_out=c_out, k=(kh, kw), stride=stride, dilation=dilation,
                groups=groups, padding=padding, pads=pads, seed=seed)


@FAST
@given(conv_cases(), st.sampled_from(ACTIVATIONS), st.booleans())
def test_conv2d_matches_scipy_correlate(case, activation, with_bias):
    rng = _rng(case["seed"])
    x = rng.standard_normal((case["n"], *case["hw"], case["c_in"]))
    w = rng.standard_normal((*case["k"], case["c_in"] // case["groups"], case["c_out"]))
    b = rng.standard_normal(case["c_out"]) if with_bias else None
    y = ref.conv2d(x, w, b, stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                   groups=case["groups"], activation=activation)
    expected = _conv2d_scipy(x, w, case["stride"], case["pads"], case["dilation"], case["groups"])
    expected = _expected_activation(expected + (b if with_bias else 0.0), activation)
    assert y.dtype == np.float64
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "x_shape, k, groups, c_out, stride, pads, dilation",
    [
        ((1, 5, 4, 2), (3, 2), 1, 3, (1, 1), ((0, 0), (0, 0)), (1, 1)),
        ((2, 6, 7, 4), (2, 3), 2, 4, (2, 3), ((1, 2), (0, 3)), (1, 1)),
        ((1, 7, 6, 3), (3, 3), 3, 6, (1, 2), ((2, 0), (1, 1)), (2, 2)),
        ((1, 4, 4, 6), (1, 2), 2, 2, (3, 1), ((1, 1), (2, 0)), (1, 3)),
    ],
)
def test_conv2d_matches_per_element_formula(x_shape, k, groups, c_out, stride, pads, dilation):
    rng = _rng(1)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((*k, x_shape[3] // groups, c_out))
    y = ref.conv2d(x, w, stride=stride, padding=pads, dilation=dilation, groups=groups)
    np.testing.assert_allclose(y, _conv2d_loops(x, w, stride, pads, dilation, groups), rtol=1e-12, atol=1e-12)


def test_conv2d_padding_forms_agree():
    rng = _rng(2)
    x = rng.standard_normal((1, 7, 8, 2))
    w = rng.standard_normal((3, 3, 2, 2))
    explicit = ref.conv2d(x, w, padding=((1, 1), (1, 1)))
    np.testing.assert_array_equal(ref.conv2d(x, w, padding=1), explicit)
    np.testing.assert_array_equal(ref.conv2d(x, w, padding=(1, 1)), explicit)
    np.testing.assert_array_equal(ref.conv2d(x, w, padding="same"), explicit)
    np.testing.assert_array_equal(ref.conv2d(x, w, padding="SAME"), explicit)
    np.testing.assert_array_equal(ref.conv2d(x, w, stride=2), ref.conv2d(x, w, stride=(2, 2)))
    np.testing.assert_array_equal(ref.conv2d(x, w, dilation=2), ref.conv2d(x, w, dilation=(2, 2)))


def test_conv2d_same_padding_puts_odd_pad_after():
    rng = _rng(3)
    x = rng.standard_normal((1, 6, 6, 1))
    w = rng.standard_normal((2, 2, 1, 1))  # total pad 1 per axis at stride 1: all of it bottom/right
    y = ref.conv2d(x, w, padding="same")
    assert y.shape == (1, 6, 6, 1)
    np.testing.assert_allclose(y, ref.conv2d(x, w, padding=((0, 1), (0, 1))), rtol=0, atol=0)
    y2 = ref.conv2d(x, rng.standard_normal((3, 3, 1, 1)), padding="same", stride=2)
    assert y2.shape == (1, 3, 3, 1)


def test_conv2d_float32_is_float64_rounded():
    rng = _rng(4)
    x = rng.standard_normal((2, 9, 9, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = ref.conv2d(x, w, b, groups=2, padding="same", activation="silu")
    assert y.dtype == np.float32
    y64 = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), groups=2, padding="same",
                     activation="silu")
    assert y64.dtype == np.float64
    np.testing.assert_array_equal(y, y64.astype(np.float32))


@pytest.mark.parametrize(
    "dtypes, expected",
    [
        ((np.float32, np.float32, np.float32), np.float32),
        ((np.float16, np.float32, None), np.float32),
        ((np.float16, np.float16, np.float16), np.float32),
        ((np.float32, np.float64, None), np.float64),
        ((np.float32, np.float32, np.float64), np.float64),
        ((np.float64, np.float64, np.float64), np.float64),
    ],
)
def test_result_dtype(dtypes, expected):
    x_dt, w_dt, b_dt = dtypes
    x = np.ones((1, 3, 3, 2), dtype=x_dt)
    w = np.ones((3, 3, 2, 1), dtype=w_dt)
    b = None if b_dt is None else np.ones(1, dtype=b_dt)
    assert ref.conv2d(x, w, b).dtype == expected
    assert ref.dense(x.reshape(1, -1), w.reshape(-1, 1), b).dtype == expected


def test_lists_are_accepted():
    y = ref.conv2d(_edge_image(10, 0).tolist(), VERTICAL_EDGE.reshape(3, 3, 1, 1).tolist())
    assert y.dtype == np.float64 and y.shape == (1, 4, 4, 1)


# --------------------------------------------------------------------------------------------
# Depthwise, pointwise, dense


@FAST
@given(
    st.integers(1, 4), st.integers(0, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
    st.integers(1, 2), st.booleans(), st.integers(0, 2**32 - 1),
)
def test_depthwise_matches_per_channel_correlate2d(c, mult, k, stride, dilation, pad, with_bias, seed):
    """mult 0 means the 3-D weight form (KH, KW, C), i.e. multiplier 1."""
    rng = _rng(seed)
    x = rng.standard_normal((2, 7, 6, c))
    m = max(mult, 1)
    w = rng.standard_normal((k, k, c, m))
    b = rng.standard_normal(c * m) if with_bias else None
    y = ref.depthwise_conv2d(x, w[:, :, :, 0] if mult == 0 else w, b, stride=stride, padding=pad,
                             dilation=dilation)
    xp = _pad_nhwc(x, ((pad, pad), (pad, pad)))
    wd = _dilate(w, dilation, dilation)
    expected = np.stack(
        [
            np.stack(
                [
                    scipy.signal.correlate2d(xp[n, :, :, ch], wd[:, :, ch, mm], mode="valid")[::stride, ::stride]
                    for ch in range(c)
                    for mm in range(m)  # output channel ch * M + mm
                ],
                axis=-1,
            )
            for n in range(2)
        ]
    )
    if with_bias:
        expected = expected + b
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_depthwise_activation_and_same_padding():
    rng = _rng(5)
    x = rng.standard_normal((1, 5, 5, 3))
    w = rng.standard_normal((3, 3, 3))
    y = ref.depthwise_conv2d(x, w, padding="same", activation="relu6")
    xp = _pad_nhwc(x, ((1, 1), (1, 1)))
    expected = np.stack([scipy.signal.correlate2d(xp[0, :, :, c], w[:, :, c], mode="valid") for c in range(3)], -1)
    np.testing.assert_allclose(y[0], _expected_activation(expected, "relu6"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_pointwise_matches_matmul(activation):
    rng = _rng(6)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((6, 3))
    b = rng.standard_normal(3)
    y = ref.pointwise_conv2d(x, w, b, activation=activation)
    expected = (x.reshape(-1, 6) @ w + b).reshape(2, 4, 5, 3)
    np.testing.assert_allclose(y, _expected_activation(expected, activation), rtol=1e-12, atol=1e-12)


@FAST
@given(st.integers(1, 5), st.integers(1, 7), st.integers(1, 6), st.sampled_from(ACTIVATIONS), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_dense_matches_matmul(n, k, m, activation, with_bias, seed):
    rng = _rng(seed)
    x = rng.standard_normal((n, k))
    w = rng.standard_normal((k, m))
    b = rng.standard_normal(m) if with_bias else None
    expected = x @ w + (b if with_bias else 0.0)
    y = ref.dense(x, w, b, activation=activation)
    np.testing.assert_allclose(y, _expected_activation(expected, activation), rtol=1e-12, atol=1e-12)


def test_dense_float32():
    rng = _rng(7)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    y = ref.dense(x, w)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32))


# --------------------------------------------------------------------------------------------
# Pooling


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    h = max(kh + draw(st.integers(-1, 5)), 1)
    w = max(kw + draw(st.integers(-1, 5)), 1)
    pad = st.integers(0, 3)
    # Pooling requires each pad to be smaller than the window.
    pads = ((min(draw(pad), kh - 1), min(draw(pad), kh - 1)), (min(draw(pad), kw - 1), min(draw(pad), kw - 1)))
    if h + sum(pads[0]) < kh or w + sum(pads[1]) < kw:
        h, w = kh, kw
    return dict(size=(kh, kw), stride=stride, hw=(h, w), pads=pads, ceil_mode=draw(st.booleans()),
                seed=draw(st.integers(0, 2**32 - 1)))


@FAST
@given(pool_cases(), st.booleans())
def test_max_pool_matches_loops(case, with_nan):
    x = _rng(case["seed"]).standard_normal((2, *case["hw"], 3))
    if with_nan:
        x[0, 0, 0, 1] = np.nan
    y = ref.max_pool2d(x, case["size"], case["stride"], case["pads"], ceil_mode=case["ceil_mode"])
    expected = _pool_loops(x, "max", case["size"], case["stride"], case["pads"], case["ceil_mode"])
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected)  # NaN positions must match too


@FAST
@given(pool_cases(), st.booleans())
def test_avg_pool_matches_loops(case, count_include_pad):
    x = _rng(case["seed"]).standard_normal((2, *case["hw"], 3))
    y = ref.avg_pool2d(x, case["size"], case["stride"], case["pads"], count_include_pad=count_include_pad,
                       ceil_mode=case["ceil_mode"])
    expected = _pool_loops(x, "avg", case["size"], case["stride"], case["pads"], case["ceil_mode"],
                           count_include_pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, stride", [(1, 1), (3, 1), (3, 2), (5, 3)])
def test_pools_match_ndimage_filters_valid(k, stride):
    x = _rng(8).standard_normal((2, 11, 9, 3))
    size = (1, k, k, 1)
    centre = k // 2  # an odd window centred on filtered[i] starts at i - centre
    crop = (slice(None), slice(centre, 11 - centre, stride), slice(centre, 9 - centre, stride), slice(None))
    np.testing.assert_array_equal(ref.max_pool2d(x, k, stride), scipy.ndimage.maximum_filter(x, size)[crop])
    np.testing.assert_allclose(ref.avg_pool2d(x, k, stride), scipy.ndimage.uniform_filter(x, size)[crop],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_pools_match_ndimage_filters_same(k):
    x = _rng(9).standard_normal((1, 8, 7, 2))
    size = (1, k, k, 1)
    y_max = ref.max_pool2d(x, k, 1, "same")
    np.testing.assert_array_equal(y_max, scipy.ndimage.maximum_filter(x, size, mode="constant", cval=-np.inf))
    # With the padding counted the divisor is always k*k: the zero-padded mean.
    y_incl = ref.avg_pool2d(x, k, 1, "same", count_include_pad=True)
    np.testing.assert_allclose(y_incl, scipy.ndimage.uniform_filter(x, size, mode="constant"), rtol=1e-12, atol=1e-12)
    # Without it, divide the zero-padded sum by the number of real elements under each window.
    real = scipy.ndimage.uniform_filter(np.ones_like(x), size, mode="constant")
    y_excl = ref.avg_pool2d(x, k, 1, "same")
    np.testing.assert_allclose(y_excl, scipy.ndimage.uniform_filter(x, size, mode="constant") / real, rtol=1e-12,
                               atol=1e-12)


def test_pool_ceil_mode_worked_example():
    """4x4 input x[r, c] = 4r + c, 3x3 window, stride 2, padding 1, ceil_mode.

    Windows cover real rows {0,1}, {1,2,3}, {3} (the last hangs one row past the padded border), and
    padded rows 3, 3, 2 of them: the divisors with count_include_pad.
    """
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    args = dict(size=3, stride=2, padding=1, ceil_mode=True)
    y_max = ref.max_pool2d(x, **args)
    np.testing.assert_array_equal(y_max[0, :, :, 0], [[5, 7, 7], [13, 15, 15], [13, 15, 15]])
    y_excl = ref.avg_pool2d(x, **args)
    np.testing.assert_allclose(y_excl[0, :, :, 0], [[2.5, 4, 5], [8.5, 10, 11], [12.5, 14, 15]], rtol=1e-15)
    y_incl = ref.avg_pool2d(x, count_include_pad=True, **args)
    expected_incl = [[10 / 9, 8 / 3, 5 / 3], [17 / 3, 10, 11 / 2], [25 / 6, 7, 15 / 4]]
    np.testing.assert_allclose(y_incl[0, :, :, 0], expected_incl, rtol=1e-15)
    # Without ceil_mode the partial last windows are dropped.
    assert ref.max_pool2d(x, 3, 2, 1).shape == (1, 2, 2, 1)


def test_pool_ceil_mode_drops_window_starting_in_padding():
    x = _rng(10).standard_normal((1, 5, 5, 1))
    # Floor and ceil both give 3: a 4th window would start in the bottom padding.
    assert ref.max_pool2d(x, 2, 2, 1, ceil_mode=True).shape == (1, 3, 3, 1)
    assert ref.avg_pool2d(x, 2, 2, 0, ceil_mode=True).shape == (1, 3, 3, 1)
    assert ref.avg_pool2d(x, 2, 2, 0).shape == (1, 2, 2, 1)


def test_pool_default_stride_is_window():
    x = _rng(11).standard_normal((1, 6, 9, 2))
    np.testing.assert_array_equal(ref.max_pool2d(x, (2, 3)), ref.max_pool2d(x, (2, 3), (2, 3)))
    assert ref.avg_pool2d(x, (2, 3)).shape == (1, 3, 3, 2)


def test_pool_dtypes():
    x = _rng(12).standard_normal((1, 4, 4, 2))
    assert ref.max_pool2d(x.astype(np.float32), 2).dtype == np.float32
    assert ref.avg_pool2d(x.astype(np.float16), 2).dtype == np.float32
    assert ref.avg_pool2d(x, 2).dtype == np.float64
    assert ref.global_avg_pool2d(x.astype(np.float32)).dtype == np.float32
    assert ref.global_max_pool2d(x).dtype == np.float64


def test_global_pools():
    x = _rng(13).standard_normal((3, 5, 4, 6))
    y_avg = ref.global_avg_pool2d(x)
    y_max = ref.global_max_pool2d(x)
    assert y_avg.shape == y_max.shape == (3, 6)
    for n in range(3):
        for c in range(6):
            plane = x[n, :, :, c]
            assert y_avg[n, c] == pytest.approx(sum(plane.ravel().tolist()) / plane.size, rel=1e-12)
            assert y_max[n, c] == max(plane.ravel().tolist())
    np.testing.assert_allclose(y_avg, ref.avg_pool2d(x, (5, 4))[:, 0, 0, :], rtol=1e-12)
    x[1, 2, 3, 4] = np.nan
    y_max = ref.global_max_pool2d(x)
    assert np.isnan(y_max[1, 4]) and np.isnan(y_max).sum() == 1


# --------------------------------------------------------------------------------------------
# Activations


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activate_formulas(activation):
    v = np.linspace(-10, 10, 41)
    np.testing.assert_allclose(ref.activate(v, activation), _expected_activation(v, activation), rtol=1e-14, atol=0)


@pytest.mark.parametrize("activation", ACTIVATIONS[1:])
def test_activate_keeps_nan_and_survives_extremes(activation):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ref.activate(np.array([np.nan, -1e4, 1e4]), activation)
    assert np.isnan(out[0])
    assert np.all(np.isfinite(out[1:]))


def test_activate_values():
    v = np.array([-2.0, 0.0, 3.0, 7.0])
    np.testing.assert_array_equal(ref.activate(v, "relu"), [0, 0, 3, 7])
    np.testing.assert_array_equal(ref.activate(v, "relu6"), [0, 0, 3, 6])
    assert ref.activate(np.array([0.0]), "sigmoid")[0] == 0.5
    assert ref.activate(np.array([1.0]), "silu")[0] == pytest.approx(1 / (1 + math.exp(-1)))


# --------------------------------------------------------------------------------------------
# Errors: same type and wording as _params, naming the argument


def _x(shape=(1, 5, 5, 4), dtype=np.float64):
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 1, 6)), groups=3), ValueError, r"^conv2d: groups=3"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 2, 3)), groups=2), ValueError, r"^conv2d: groups=2.*C_out"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), groups=0), ValueError, r"^conv2d: groups"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), groups=1.0), TypeError, r"^conv2d: groups"),
        (lambda: ref.conv2d(_x(dtype=np.int32), np.ones((3, 3, 4, 2))), TypeError, r"^conv2d: x "),
        (lambda: ref.conv2d(_x(dtype=bool), np.ones((3, 3, 4, 2))), TypeError, r"^conv2d: x "),
        (lambda: ref.conv2d(_x(dtype=np.complex128), np.ones((3, 3, 4, 2))), TypeError, r"^conv2d: x "),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2), dtype=np.int64)), TypeError, r"^conv2d: w "),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), np.ones(2, dtype=int)), TypeError, r"^conv2d: b "),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), np.ones(3)), ValueError, r"^conv2d: b must have shape"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), activation="gelu"), ValueError, r"^conv2d: unknown activation"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), padding=-1), ValueError, r"^conv2d: padding must be >= 0"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), padding=((0, -1), (0, 0))), ValueError, r"padding"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), padding="full"), ValueError, r"^conv2d: unknown padding"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), padding=1.5), TypeError, r"^conv2d: padding"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), stride=0), ValueError, r"^conv2d: stride must be >= 1"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), stride=(1, 0)), ValueError, r"^conv2d: stride"),
        (lambda: ref.conv2d(_x(), np.ones((3, 3, 4, 2)), dilation=0), ValueError, r"^conv2d: dilation"),
        (lambda: ref.conv2d(_x(), np.ones((7, 7, 4, 2))), ValueError, r"^conv2d: the kernel window"),
        (lambda: ref.conv2d(_x((5, 5, 4)), np.ones((3, 3, 4, 2))), ValueError, r"^conv2d: x must be 4-D"),
        (lambda: ref.conv2d(_x((1, 0, 5, 4)), np.ones((3, 3, 4, 2))), ValueError, r"^conv2d: x has a zero-size"),
        (lambda: ref.depthwise_conv2d(_x(), np.ones((3, 3, 3))), ValueError, r"^depthwise_conv2d: w must have C=4"),
        (lambda: ref.depthwise_conv2d(_x(), np.ones((3, 3))), ValueError, r"^depthwise_conv2d: w must be 3-D"),
        (lambda: ref.depthwise_conv2d(_x(), np.ones((3, 3, 4, 2)), np.ones(4)), ValueError, r"^depthwise_conv2d: b"),
        (lambda: ref.depthwise_conv2d(_x(dtype=np.int8), np.ones((3, 3, 4))), TypeError, r"^depthwise_conv2d: x "),
        (lambda: ref.pointwise_conv2d(_x(), np.ones((3, 2))), ValueError, r"^pointwise_conv2d: w must have shape"),
        (lambda: ref.pointwise_conv2d(_x(), np.ones((4, 2)), activation="elu"), ValueError, r"activation"),
        (lambda: ref.dense(np.ones((2, 3)), np.ones((4, 2))), ValueError, r"^dense: w must have shape"),
        (lambda: ref.dense(np.ones((2, 3), dtype=np.int16), np.ones((3, 2))), TypeError, r"^dense: x "),
        (lambda: ref.max_pool2d(_x(), 2, padding=2), ValueError, r"^max_pool2d: padding .* smaller than the window"),
        (lambda: ref.max_pool2d(_x(), 0), ValueError, r"^max_pool2d: size must be >= 1"),
        (lambda: ref.max_pool2d(_x(), 2, stride=0), ValueError, r"^max_pool2d: stride"),
        (lambda: ref.max_pool2d(_x(), 6), ValueError, r"^max_pool2d: the window 6x6 is larger"),
        (lambda: ref.max_pool2d(_x(dtype=np.uint8), 2), TypeError, r"^max_pool2d: x "),
        (lambda: ref.avg_pool2d(_x(), 2, ceil_mode="yes"), TypeError, r"^avg_pool2d: ceil_mode"),
        (lambda: ref.avg_pool2d(_x(), 2, count_include_pad=None), TypeError, r"^avg_pool2d: count_include_pad"),
        (lambda: ref.global_avg_pool2d(_x(dtype=np.int32)), TypeError, r"^global_avg_pool2d: x "),
        (lambda: ref.global_max_pool2d(np.ones((2, 3))), ValueError, r"^global_max_pool2d: x must be 4-D"),
        (lambda: ref.activate(np.ones(3), "softmax"), ValueError, r"unknown activation 'softmax'"),
        (lambda: ref.conv_output_size(5, 3, stride=0), ValueError, r"^conv_output_size: stride"),
        (lambda: ref.conv_output_size(5, 3, padding=-1), ValueError, r"^conv_output_size: padding"),
        (lambda: ref.conv_output_size(2, 5), ValueError, r"^conv_output_size: window 5 is larger"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
