"""GPU-only tests of the CUDA kernels (fastconv._cuda through fastconv._gpu), against the float64
NumPy reference. Skipped with the reason when CuPy, a CUDA device or the compiled module is
missing, except test_describe_without_gpu, which must pass everywhere.

Outputs are poisoned with NaN before each kernel writes them (through CuPy's pool for the public
ops, through `out=` for direct `_gpu.run` calls), so an element a kernel forgets to write fails.
Shapes are chosen to hit each kernel version and its edges: batch 1, sizes that are not multiples
of the 128x64 GEMM tile or the 32-channel depthwise chunk, split K (grids too small for the GPU), channel counts that are not multiples
of 4 (scalar paths), misaligned pointers, large strides and dilations, 1x1 outputs, groups.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastconv
from fastconv import _params
from fastconv import reference as ref
from fastconv._compare import assert_close, max_relative_error, tolerance
from helpers import GPU_SKIP_REASON as _GPU_SKIP

gpu = pytest.mark.skipif(_GPU_SKIP is not None, reason=str(_GPU_SKIP))


@pytest.fixture
def cp():
    import cupy

    return cupy


def _poison_pool(cp, shape):
    """Free a NaN-filled block of the output's size into CuPy's pool: the op's cupy.empty output
    most likely reuses it, so unwritten elements read back as NaN."""
    cp.full(shape, np.nan, dtype=cp.float32)


def _data(rng, *shape):
    return rng.standard_normal(shape)  # float64: the reference computes in float64


def _check(cp, got, want, terms):
    assert isinstance(got, cp.ndarray), f"expected a CuPy result, got {type(got).__name__}"
    assert got.dtype == cp.float32
    assert_close(cp.asnumpy(got), want, terms=terms)


# --------------------------------------------------------------------------------------------
# Runs everywhere


def test_describe_without_gpu():
    from fastconv import _gpu

    facts = _gpu.describe()
    assert isinstance(facts, dict) and "cuda" in facts
    assert all(isinstance(k, str) and isinstance(v, (str, int)) for k, v in facts.items())


# --------------------------------------------------------------------------------------------
# Convolutions

# (n, h, w, c_in, kh, kw, c_out, groups, stride, padding, dilation, activation, bias)
CONV_CASES = [
    (1, 7, 9, 3, 3, 3, 5, 1, 1, "same", 1, None, True),  # scalar gathers, odd C_out
    (2, 17, 13, 8, 3, 3, 16, 1, 2, 1, 1, "relu", True),  # float4 paths
    (1, 33, 31, 12, 5, 3, 70, 1, (2, 1), ((2, 1), (0, 3)), (1, 2), "silu", False),  # 2 column tiles
    (2, 20, 20, 64, 3, 3, 128, 1, 1, "same", 1, "relu6", True),  # K = 576: many k-steps, 7 row tiles
    (3, 9, 9, 16, 3, 3, 24, 4, 1, "valid", 2, "tanh", True),  # groups, Cg = 4, C_out/groups = 6
    (1, 20, 20, 6, 3, 3, 9, 3, 3, 2, 3, "sigmoid", True),  # groups, Cg = 2
    (2, 15, 15, 4, 7, 7, 4, 1, 5, 0, 2, "relu6", True),  # window 13, stride 5
    (1, 3, 3, 5, 3, 3, 7, 1, 1, "valid", 1, None, True),  # 1x1 output
    (1, 1, 40, 7, 1, 3, 3, 1, (1, 4), (0, 1), 1, None, False),  # H = 1
    (3, 30, 31, 3, 7, 7, 64, 1, 2, 3, 1, "relu", True),  # first-layer kernel: a stem, W not a multiple of 4 pixels
    (1, 17, 17, 1, 5, 5, 8, 1, 1, "same", 1, "silu", False),  # first-layer kernel, C_in = 1
    (2, 12, 12, 2, 3, 3, 12, 1, (1, 2), ((0, 1), (2, 0)), (2, 1), "tanh", True),  # C_in = 2, dilated, asymmetric
    (1, 12, 12, 64, 3, 3, 32, 2, 1, "same", 1, "relu", True),  # split K across groups (4 tiles, 36 k-steps)
    (1, 10, 10, 30, 3, 3, 20, 1, 1, 1, 1, "silu", True),  # split K with scalar gathers
    (4, 48, 48, 32, 3, 3, 256, 1, 1, "same", 1, None, True),  # 128-wide tile: 72 x 2 tiles fill an H100
]


@gpu
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d(cp, rng, case):
    n, h, w, c_in, kh, kw, c_out, groups, stride, padding, dilation, act, bias = case
    x, wt = _data(rng, n, h, w, c_in), _data(rng, kh, kw, c_in // groups, c_out)
    b = _data(rng, c_out) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, activation=act)
    want = ref.conv2d(x, wt, b, **kwargs)
    _poison_pool(cp, want.shape)
    got = fastconv.conv2d(cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b), **kwargs)
    _check(cp, got, want, kh * kw * c_in // groups)


# (n, h, w, c, kh, kw, multiplier, stride, padding, dilation, activation, bias)
DEPTHWISE_CASES = [
    (1, 10, 12, 32, 3, 3, 1, 1, "same", 1, "relu", True),  # float4 channels
    (2, 17, 19, 36, 3, 3, 1, 2, 1, 1, None, False),  # float4, a partial second channel chunk
    (1, 9, 11, 5, 3, 3, 1, 1, "same", 1, "relu6", True),  # scalar, odd C
    (2, 8, 8, 3, 5, 5, 3, 1, 2, 1, "silu", True),  # multiplier 3
    (1, 30, 40, 8, 3, 3, 2, 3, "same", 4, "tanh", True),  # multiplier 2 (C*M % 4 == 0), dilation 4
    (1, 40, 40, 16, 5, 5, 1, 2, 2, 3, "sigmoid", True),  # window 13: the output tile shrinks
    (1, 64, 64, 4, 7, 7, 1, 4, 3, 9, None, True),  # window 55: no tile fits, direct kernel
    (1, 3, 3, 8, 3, 3, 1, 1, "valid", 1, None, True),  # 1x1 output
    (3, 7, 7, 64, 3, 3, 1, 1, "same", 1, "relu", True),  # small maps, batch 3
    (1, 5, 70, 33, 1, 7, 1, (1, 3), (0, 3), 1, None, True),  # 1x7 window, C = 33
    (2, 13, 15, 20, 5, 5, 1, 1, 2, 1, "silu", True),  # strip kernel 5x5/1, W not a multiple of the strip
    (1, 23, 21, 24, 5, 5, 1, 2, 2, 1, "relu6", True),  # strip kernel 5x5/2
    (1, 6, 9, 8, 3, 3, 1, 2, "valid", 1, None, False),  # strip kernel 3x3/2, no padding
    (1, 4, 4, 12, 3, 3, 1, 2, ((0, 2), (2, 0)), 1, None, True),  # strip kernel, asymmetric padding
]


@gpu
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=str)
def test_depthwise_conv2d(cp, rng, case):
    n, h, w, c, kh, kw, mult, stride, padding, dilation, act, bias = case
    x, wt = _data(rng, n, h, w, c), _data(rng, kh, kw, c, mult)
    b = _data(rng, c * mult) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, activation=act)
    want = ref.depthwise_conv2d(x, wt, b, **kwargs)
    _poison_pool(cp, want.shape)
    got = fastconv.depthwise_conv2d(cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b), **kwargs)
    _check(cp, got, want, kh * kw)


@gpu
def test_grouped_conv2d_routes_to_depthwise(cp, rng):
    x, wt, b = _data(rng, 2, 9, 10, 6), _data(rng, 3, 3, 1, 12), _data(rng, 12)
    want = ref.conv2d(x, wt, b, padding="same", groups=6)
    got = fastconv.conv2d(cp.asarray(x), cp.asarray(wt), cp.asarray(b), padding="same", groups=6)
    _check(cp, got, want, 9)


@gpu
@pytest.mark.parametrize(
    "n, h, w, c_in, c_out, act",
    [(1, 5, 7, 3, 5, None), (2, 16, 16, 64, 96, "relu"), (1, 1, 1, 130, 257, "silu"), (3, 11, 13, 17, 130, "tanh")],
)
def test_pointwise_conv2d(cp, rng, n, h, w, c_in, c_out, act):
    x, wt, b = _data(rng, n, h, w, c_in), _data(rng, c_in, c_out), _data(rng, c_out)
    want = ref.pointwise_conv2d(x, wt, b, activation=act)
    _poison_pool(cp, want.shape)
    got = fastconv.pointwise_conv2d(cp.asarray(x), cp.asarray(wt), cp.asarray(b), activation=act)
    _check(cp, got, want, c_in)


@gpu
@pytest.mark.parametrize(
    "rows, k, m, act, bias",
    [(1, 1, 1, None, True), (1, 300, 1000, "relu", True), (7, 33, 65, "sigmoid", False), (130, 64, 64, None, True),
     (257, 513, 129, "relu6", True)],
)
def test_dense(cp, rng, rows, k, m, act, bias):
    x, wt = _data(rng, rows, k), _data(rng, k, m)
    b = _data(rng, m) if bias else None
    want = ref.dense(x, wt, b, activation=act)
    _poison_pool(cp, want.shape)
    got = fastconv.dense(cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b), activation=act)
    _check(cp, got, want, k)


def _misaligned(cp, a):
    """A C-contiguous float32 copy of a whose data pointer is 4 bytes past a 16-byte boundary."""
    flat = cp.empty(a.size + 1, dtype=cp.float32)
    out = flat[1:].reshape(a.shape)
    out[...] = cp.asarray(a, dtype=cp.float32)
    assert out.data.ptr % 16 == 4 and out.flags.c_contiguous
    return out


@gpu
@pytest.mark.parametrize("op", ["conv2d", "depthwise", "pointwise", "dense"])
def test_misaligned_pointers_take_scalar_paths(cp, rng, op):
    if op == "conv2d":
        x, wt = _data(rng, 2, 9, 9, 8), _data(rng, 3, 3, 8, 16)
        want, run, terms = ref.conv2d(x, wt, padding=1), lambda x, w: fastconv.conv2d(x, w, padding=1), 72
    elif op == "depthwise":
        x, wt = _data(rng, 2, 9, 9, 8), _data(rng, 3, 3, 8)
        want, run, terms = ref.depthwise_conv2d(x, wt), fastconv.depthwise_conv2d, 9
    elif op == "pointwise":
        x, wt = _data(rng, 2, 9, 9, 8), _data(rng, 8, 12)
        want, run, terms = ref.pointwise_conv2d(x, wt), fastconv.pointwise_conv2d, 8
    else:
        x, wt = _data(rng, 9, 16), _data(rng, 16, 12)
        want, run, terms = ref.dense(x, wt), fastconv.dense, 16
    _check(cp, run(_misaligned(cp, x), _misaligned(cp, wt)), want, terms)


# --------------------------------------------------------------------------------------------
# Pooling

# (shape, size, stride, padding, ceil_mode, count_include_pad)
POOL_CASES = [
    ((2, 9, 11, 5), 3, 2, 1, True, True),
    ((2, 9, 11, 5), 3, 2, 1, True, False),
    ((1, 8, 8, 64), 2, None, "valid", False, False),
    ((1, 7, 10, 3), (3, 2), (2, 3), "same", True, False),
    ((1, 1, 1, 7), 1, None, 0, False, False),
    ((2, 15, 15, 33), 5, 4, 2, True, True),
]


@gpu
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d(cp, rng, kind, case):
    shape, size, stride, padding, ceil_mode, count_include_pad = case
    x = _data(rng, *shape)
    if kind == "max":
        x.flat[rng.integers(x.size)] = np.nan  # NaN must propagate to the windows holding it
        want = ref.max_pool2d(x, size, stride, padding, ceil_mode)
        _poison_pool(cp, want.shape)
        got = fastconv.max_pool2d(cp.asarray(x), size, stride, padding, ceil_mode)
    else:
        want = ref.avg_pool2d(x, size, stride, padding, count_include_pad, ceil_mode)
        _poison_pool(cp, want.shape)
        got = fastconv.avg_pool2d(cp.asarray(x), size, stride, padding, count_include_pad, ceil_mode)
    _check(cp, got, want, np.prod(size))


@gpu
@pytest.mark.parametrize("shape", [(1, 7, 7, 513), (3, 1, 1, 5), (2, 56, 56, 40), (1, 224, 224, 3)])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_global_pool2d(cp, rng, kind, shape):
    x = _data(rng, *shape)
    if kind == "max":
        x[0, 0, 0, 0] = np.nan
    op, ref_op = (fastconv.global_max_pool2d, ref.global_max_pool2d) if kind == "max" else (
        fastconv.global_avg_pool2d, ref.global_avg_pool2d)
    want = ref_op(x)
    _poison_pool(cp, want.shape)
    _check(cp, op(cp.asarray(x)), want, shape[1] * shape[2])


# --------------------------------------------------------------------------------------------
# Winograd with 2x2 and 4x4 output tiles, F(2x2 | 4x4, 3x3 | 5x5)

# (kernel size, n, h, w, c_in, c_out, padding, activation, bias)
WINOGRAD_CASES = [(3, *case) for case in [
    (1, 5, 5, 1, 1, "same", None, False),  # one channel, odd sizes: partial 2x2 tiles at the edges
    (2, 9, 7, 3, 5, 0, "relu", True),  # no padding, C not a multiple of 4 (scalar GEMM loads)
    (1, 16, 16, 32, 64, 1, "relu6", True),
    (3, 6, 11, 20, 130, ((0, 2), (3, 1)), "silu", True),  # asymmetric padding, two GEMM column tiles
    (1, 2, 2, 8, 8, 1, "tanh", True),  # a single tile
    (2, 14, 14, 16, 16, "same", "relu", True),  # the smallest channel counts "auto" sends to Winograd
    (1, 9, 9, 16, 15, 1, None, True),  # one count below: "auto" stays direct
    (1, 9, 10, 64, 64, 1, "tanh", True),  # tanh: 2x2 tiles, and "auto" from 64 channels
    (1, 9, 10, 63, 64, 1, "sigmoid", True),  # one count below: "auto" stays direct
    (2, 17, 13, 24, 40, "same", "silu", True),  # 4x4 tiles, partial at the edges
]] + [(5, *case) for case in [
    (1, 5, 5, 1, 1, "same", None, False),
    (2, 9, 7, 3, 5, 0, "relu", True),
    (1, 3, 4, 8, 8, 2, "tanh", True),  # a single tile row
    (3, 6, 11, 20, 130, ((0, 2), (3, 1)), "silu", True),
    (2, 14, 14, 16, 16, "same", "relu", True),  # the smallest channel counts "auto" sends to Winograd
    (1, 11, 9, 40, 36, 2, "sigmoid", True),  # sigmoid: "auto" stays direct
    (1, 10, 10, 15, 64, 2, None, False),  # one count below: "auto" stays direct
    (1, 28, 28, 192, 32, "same", "relu", True),  # Inception's 5x5 branch
]]


def _auto_is_winograd(k, c_in, c_out, act):
    if act in ("sigmoid", "tanh"):  # 2x2 tiles for 3x3, direct for 5x5
        return k == 3 and min(c_in, c_out) >= 64
    return min(c_in, c_out) >= 16


@gpu
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=str)
def test_winograd(cp, rng, case):
    k, n, h, w, c_in, c_out, padding, act, bias = case
    x, wt = _data(rng, n, h, w, c_in), _data(rng, k, k, c_in, c_out)
    b = _data(rng, c_out) if bias else None
    want = ref.conv2d(x, wt, b, padding=padding, activation=act)
    args = (cp.asarray(x), cp.asarray(wt), None if b is None else cp.asarray(b))
    _poison_pool(cp, want.shape)
    got = fastconv.conv2d(*args, padding=padding, activation=act, algorithm="winograd")
    _check(cp, got, want, k * k * c_in)
    # Well inside the tolerance, not at its edge.
    err = max_relative_error(cp.asnumpy(got), want)[0]
    assert err < 0.5 * tolerance(k * k * c_in), f"error {err:.3g} is too close to the tolerance"
    direct = fastconv.conv2d(*args, padding=padding, activation=act, algorithm="direct")
    auto = fastconv.conv2d(*args, padding=padding, activation=act)
    # "auto" is the Winograd kernel, bit for bit, exactly where winograd_pays (conv2d_winograd.cu).
    assert cp.array_equal(auto, got if _auto_is_winograd(k, c_in, c_out, act) else direct)


# --------------------------------------------------------------------------------------------
# Every kernel version, forced through _gpu.run's version argument


def _version_cases(rng):
    """label -> (kernel, problem, arrays, reference result, terms, versions that apply)."""
    x16, x6, x12 = _data(rng, 2, 13, 11, 16), _data(rng, 1, 9, 10, 6), _data(rng, 2, 11, 13, 12)
    w = _data(rng, 3, 3, 16, 200)
    w6 = _data(rng, 3, 3, 6, 100)
    wp = _data(rng, 16, 130)
    xd, wd, bd = _data(rng, 70, 50), _data(rng, 50, 300), _data(rng, 300)
    w3, w5 = _data(rng, 3, 3, 12), _data(rng, 5, 5, 12)
    x8 = _data(rng, 2, 9, 11, 8)
    x3, w3c, b16 = _data(rng, 2, 15, 13, 3), _data(rng, 5, 5, 3, 16), _data(rng, 16)
    x4, w4c = _data(rng, 1, 10, 19, 4), _data(rng, 3, 3, 4, 8)
    w3w, b20, w5w = _data(rng, 3, 3, 12, 20), _data(rng, 20), _data(rng, 5, 5, 12, 37)  # Winograd: 2x2 or 4x4 tiles
    conv = _params.conv2d_problem
    dw = _params.depthwise_problem
    pool = _params.pool2d_problem
    return {
        "conv 128-wide": ("conv2d", conv("conv2d", x16.shape, w.shape, None, 1, "same", 1, 1, "relu"), (x16, w, None),
                          ref.conv2d(x16, w, padding="same", activation="relu"), 144, (1, 2, 4)),
        "conv scalar A": ("conv2d", conv("conv2d", x6.shape, w6.shape, None, 2, 1, 1, 1, None), (x6, w6, None),
                          ref.conv2d(x6, w6, stride=2, padding=1), 54, (1, 4)),
        "conv first layer": ("conv2d", conv("conv2d", x3.shape, w3c.shape, (16,), 2, 2, 1, 1, "relu"),
                             (x3, w3c, b16), ref.conv2d(x3, w3c, b16, stride=2, padding=2, activation="relu"), 75,
                             (1, 3, 4)),
        "conv C_in=4": ("conv2d", conv("conv2d", x4.shape, w4c.shape, None, 1, "same", 2, 1, "silu"), (x4, w4c, None),
                        ref.conv2d(x4, w4c, padding="same", dilation=2, activation="silu"), 36, (1, 2, 3, 4)),
        "winograd 3x3": ("conv2d", conv("conv2d", x12.shape, w3w.shape, (20,), 1, ((1, 0), (2, 1)), 1, 1, "relu",
                                        "winograd"), (x12, w3w, b20),
                         ref.conv2d(x12, w3w, b20, padding=((1, 0), (2, 1)), activation="relu"), 108, (1, 2)),
        "winograd 5x5": ("conv2d", conv("conv2d", x12.shape, w5w.shape, None, 1, ((2, 1), (0, 3)), 1, 1, None,
                                        "winograd"), (x12, w5w, None),
                         ref.conv2d(x12, w5w, padding=((2, 1), (0, 3))), 300, (1, 2, 3)),
        "pointwise": ("conv2d", _params.pointwise_problem("pointwise_conv2d", x16.shape, wp.shape, None, "silu"),
                      (x16, wp.reshape(1, 1, 16, 130), None), ref.pointwise_conv2d(x16, wp, activation="silu"), 16,
                      (1, 2, 4)),
        "dense": ("dense", _params.dense_problem("dense", xd.shape, wd.shape, bd.shape, None), (xd, wd, bd),
                  ref.dense(xd, wd, bd), 50, (1, 2, 4)),
        "depthwise 3x3/2": ("conv2d", dw("depthwise_conv2d", x12.shape, w3.shape, None, 2, 1, 1, "relu6"),
                            (x12, w3.reshape(3, 3, 1, 12), None),
                            ref.depthwise_conv2d(x12, w3, stride=2, padding=1, activation="relu6"), 9, (1, 2, 3)),
        "depthwise 5x5/1": ("conv2d", dw("depthwise_conv2d", x12.shape, w5.shape, None, 1, "same", 1, None),
                            (x12, w5.reshape(5, 5, 1, 12), None), ref.depthwise_conv2d(x12, w5, padding="same"), 25,
                            (1, 2, 3)),
        "depthwise dilated": ("conv2d", dw("depthwise_conv2d", x12.shape, w3.shape, None, 1, "same", 2, None),
                              (x12, w3.reshape(3, 3, 1, 12), None),
                              ref.depthwise_conv2d(x12, w3, padding="same", dilation=2), 9, (1,)),
        "max pool C=8": ("max_pool2d", pool("max_pool2d", x8.shape, 3, 2, 1, True), (x8,),
                         ref.max_pool2d(x8, 3, 2, 1, True), 9, (1, 2, 3, 4)),
        "avg pool C=8": ("avg_pool2d", pool("avg_pool2d", x8.shape, 3, 2, 1, True, True), (x8,),
                         ref.avg_pool2d(x8, 3, 2, 1, True, True), 9, (1, 2, 3, 4)),
        "avg pool odd width": ("avg_pool2d", pool("avg_pool2d", x8.shape, 2, 2, 0, False), (x8,),
                               ref.avg_pool2d(x8, 2, 2, 0), 4, (1, 2, 3, 4)),  # out_w 5: v4's last pair is half
        "max pool C=6": ("max_pool2d", pool("max_pool2d", x6.shape, 2, 2, 0, False), (x6,),
                         ref.max_pool2d(x6, 2, 2, 0), 4, (1,)),
    }


@gpu
@pytest.mark.parametrize(
    "label", ["conv 128-wide", "conv scalar A", "conv first layer", "conv C_in=4", "winograd 3x3", "winograd 5x5",
              "pointwise", "dense", "depthwise 3x3/2", "depthwise 5x5/1",
              "depthwise dilated", "max pool C=8", "avg pool C=8", "avg pool odd width", "max pool C=6"]
)
def test_every_kernel_version(cp, rng, label):
    from fastconv import _gpu

    kernel, problem, arrays, want, terms, versions = _version_cases(rng)[label]
    gpu_arrays = [None if a is None else cp.asarray(a, dtype=cp.float32) for a in arrays]
    for version in (1, 2, 3, 4):
        out = cp.full(problem.out_shape, np.nan, dtype=cp.float32)
        if version in versions:
            _gpu.run(kernel, problem, *gpu_arrays, out=out, version=version)
            _check(cp, out, want, terms)
        else:
            with pytest.raises(ValueError, match="version"):
                _gpu.run(kernel, problem, *gpu_arrays, out=out, version=version)


def _fused_winograd_shapes(count, seed=5):
    """Shapes for the fused F(4x4, 5x5) kernel (version 3): tiles and output channels that fill
    its 16 x 16 blocks partly or several times over, input channels around its steps of 8."""
    draw = np.random.default_rng(seed)
    shapes = []
    while len(shapes) < count:
        n, h, w = int(draw.integers(1, 4)), int(draw.integers(1, 36)), int(draw.integers(1, 36))
        c_in, c_out = int(draw.integers(8, 41)), int(draw.choice([1, 3, 16, 17, 32, 45, 64, 70]))
        pads = tuple(int(p) for p in draw.integers(0, 4, size=4))
        if h + pads[0] + pads[1] < 5 or w + pads[2] + pads[3] < 5:
            continue
        act = str(draw.choice(["none", "relu", "relu6", "silu"]))
        shapes.append((n, h, w, c_in, c_out, ((pads[0], pads[1]), (pads[2], pads[3])), act, bool(draw.integers(2))))
    return shapes


@gpu
@pytest.mark.parametrize("shape", _fused_winograd_shapes(14) + [
    (2, 28, 28, 192, 32, ((2, 2), (2, 2)), "relu", True),  # Inception's 5x5 branch
    (1, 27, 27, 96, 40, ((2, 2), (2, 2)), "none", False),  # AlexNet's 5x5 layer, narrowed
], ids=str)
def test_winograd_fused(cp, rng, shape):
    from fastconv import _gpu

    n, h, w, c_in, c_out, padding, act, bias = shape
    act = None if act == "none" else act
    x, wt = _data(rng, n, h, w, c_in), _data(rng, 5, 5, c_in, c_out)
    b = _data(rng, c_out) if bias else None
    want = ref.conv2d(x, wt, b, padding=padding, activation=act)
    problem = _params.conv2d_problem("conv2d", x.shape, wt.shape, None if b is None else b.shape, 1, padding, 1, 1,
                                     act, "winograd")
    out = cp.full(problem.out_shape, np.nan, dtype=cp.float32)
    arrays = [None if a is None else cp.asarray(a, dtype=cp.float32) for a in (x, wt, b)]
    _gpu.run("conv2d", problem, *arrays, out=out, version=3)
    _check(cp, out, want, 25 * c_in)
    err = max_relative_error(cp.asnumpy(out), want)[0]
    assert err < 0.5 * tolerance(25 * c_in), f"error {err:.3g} is too close to the tolerance"


# --------------------------------------------------------------------------------------------
# Direct _gpu.run calls into NaN-filled outputs


def _direct_cases(rng):
    x4 = _data(rng, 2, 11, 9, 6)
    return {
        "conv2d": (
            _params.conv2d_problem("conv2d", x4.shape, (3, 3, 3, 10), (10,), 2, 1, 1, 2, "relu"),
            (x4, _data(rng, 3, 3, 3, 10), _data(rng, 10)),
            lambda x, w, b: ref.conv2d(x, w, b, stride=2, padding=1, groups=2, activation="relu"),
            27,
        ),
        "depthwise": (
            _params.depthwise_problem("depthwise_conv2d", x4.shape, (3, 3, 6, 2), None, 1, "same", 2, None),
            (x4, _data(rng, 3, 3, 1, 12), None),
            lambda x, w, b: ref.depthwise_conv2d(x, w.reshape(3, 3, 6, 2), padding="same", dilation=2),
            9,
        ),
        "pointwise": (
            _params.pointwise_problem("pointwise_conv2d", x4.shape, (6, 5), (5,), "tanh"),
            (x4, _data(rng, 1, 1, 6, 5), _data(rng, 5)),
            lambda x, w, b: ref.pointwise_conv2d(x, w.reshape(6, 5), b, activation="tanh"),
            6,
        ),
        "dense": (
            _params.dense_problem("dense", (5, 7), (7, 3), (3,), None),
            (_data(rng, 5, 7), _data(rng, 7, 3), _data(rng, 3)),
            ref.dense,
            7,
        ),
        "max_pool2d": (
            _params.pool2d_problem("max_pool2d", x4.shape, 3, 2, 1, True),
            (x4,),
            lambda x: ref.max_pool2d(x, 3, 2, 1, True),
            9,
        ),
        "avg_pool2d": (
            _params.pool2d_problem("avg_pool2d", x4.shape, 3, 2, 1, True, True),
            (x4,),
            lambda x: ref.avg_pool2d(x, 3, 2, 1, True, True),
            9,
        ),
        "global_avg_pool2d": (_params.global_pool_problem("global_avg_pool2d", x4.shape), (x4,), ref.global_avg_pool2d, 99),
        "global_max_pool2d": (_params.global_pool_problem("global_max_pool2d", x4.shape), (x4,), ref.global_max_pool2d, 1),
    }


@gpu
@pytest.mark.parametrize(
    "name", ["conv2d", "depthwise", "pointwise", "dense", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
             "global_max_pool2d"]
)
def test_direct_run_overwrites_nan_output(cp, rng, name):
    from fastconv import _gpu

    problem, arrays, reference, terms = _direct_cases(rng)[name]
    kernel = name if name in _gpu._KERNELS else "conv2d"
    out = cp.full(problem.out_shape, np.nan, dtype=cp.float32)
    gpu_arrays = [None if a is None else cp.asarray(a, dtype=cp.float32) for a in arrays]
    result = _gpu.run(kernel, problem, *gpu_arrays, out=out)
    assert result is out
    _check(cp, out, reference(*arrays), terms)


@gpu
def test_direct_run_rejects_wrong_sizes(cp):
    from fastconv import _gpu

    problem = _params.global_pool_problem("global_avg_pool2d", (1, 2, 2, 3))
    with pytest.raises(ValueError, match="x must hold 12 elements"):
        _gpu.run("global_avg_pool2d", problem, cp.zeros(11, dtype=cp.float32))
    with pytest.raises(ValueError, match="out must hold 3 elements"):
        _gpu.run("global_avg_pool2d", problem, cp.zeros(12, dtype=cp.float32), out=cp.zeros(4, dtype=cp.float32))


# --------------------------------------------------------------------------------------------
# Streams, array kinds, devices


@gpu
def test_results_are_ordered_on_a_non_default_stream(cp, rng):
    x, wt, b = _data(rng, 8, 64, 64, 32), _data(rng, 3, 3, 32, 64), _data(rng, 64)
    want = ref.conv2d(x, wt, b, padding="same")
    stream = cp.cuda.Stream(non_blocking=True)  # no implicit sync with the legacy default stream
    with stream:
        x_gpu = cp.zeros(x.shape, dtype=cp.float32)
        x_gpu[...] = cp.asarray(x)  # the write the conv must wait for, queued on `stream`
        y = fastconv.conv2d(x_gpu, cp.asarray(wt), cp.asarray(b), padding="same")
        z = cp.tanh(y) * 2.0 + 1.0  # CuPy work that must wait for the conv
        got_y, got_z = cp.asnumpy(y), cp.asnumpy(z)  # both wait for `stream`, the current one
    assert_close(got_y, want, terms=9 * 32)
    # z from the finished y. (Not against tanh of the reference: tanh squeezes the output's scale
    # but not the absolute rounding error near 0, and this layer takes Winograd F(4x4, 3x3).)
    np.testing.assert_allclose(got_z, np.tanh(got_y.astype(np.float64)) * 2.0 + 1.0, rtol=1e-5, atol=1e-5)


@gpu
def test_numpy_and_cupy_arguments_do_not_mix(cp, rng):
    x, wt = _data(rng, 1, 5, 5, 3), _data(rng, 3, 3, 3, 4)
    with pytest.raises(TypeError, match="same device"):
        fastconv.conv2d(x, cp.asarray(wt))


@gpu
def test_foreign_cuda_array_interface_objects_are_accepted(cp, rng):
    class Foreign:  # exposes only the interface, like a Numba or PyTorch tensor would
        def __init__(self, a):
            self._a = a

        @property
        def __cuda_array_interface__(self):
            return self._a.__cuda_array_interface__

    x, wt = _data(rng, 2, 6, 7, 4), _data(rng, 3, 3, 4, 5)
    got = fastconv.conv2d(Foreign(cp.asarray(x, dtype=cp.float32)), Foreign(cp.asarray(wt, dtype=cp.float32)))
    _check(cp, got, ref.conv2d(x, wt), 36)


@gpu
def test_float64_and_strided_inputs_are_converted(cp, rng):
    x, wt = _data(rng, 2, 6, 14, 4), _data(rng, 3, 3, 4, 5)
    x_gpu = cp.asarray(x)[:, :, ::2, :]  # float64, not contiguous
    _check(cp, fastconv.conv2d(x_gpu, cp.asarray(wt)), ref.conv2d(x[:, :, ::2, :], wt), 36)


@gpu
def test_arrays_on_different_devices_are_rejected(cp, rng):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    with cp.cuda.Device(0):
        x = cp.asarray(_data(rng, 1, 5, 5, 3))
    with cp.cuda.Device(1):
        wt = cp.asarray(_data(rng, 3, 3, 3, 4))
    with pytest.raises(ValueError, match=r"x on GPU 0, w on GPU 1"):
        fastconv.conv2d(x, wt)


@gpu
def test_second_device(cp, rng):
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two CUDA devices")
    x, wt = _data(rng, 1, 9, 9, 8), _data(rng, 3, 3, 8, 8)
    with cp.cuda.Device(1):
        x_gpu, w_gpu = cp.asarray(x), cp.asarray(wt)
    got = fastconv.conv2d(x_gpu, w_gpu)  # current device is 0: the op must follow the arrays
    assert got.device.id == 1
    _check(cp, got, ref.conv2d(x, wt), 72)


# --------------------------------------------------------------------------------------------
# 64-bit indexing: an input of more than 2^31 elements (about 10 GB)


@gpu
def test_tensors_beyond_2_pow_31_elements(cp, rng):
    if cp.cuda.Device().mem_info[0] < 40 * 2**30:
        pytest.skip("needs 40 GiB of free GPU memory")
    shape = (1, 8192, 8192, 36)  # 2.4e9 elements; the last rows sit past 2^31
    x = cp.random.standard_normal(shape, dtype=cp.float32)
    x_tail = cp.asnumpy(x[:, -5:]).astype(np.float64)
    wt = _data(rng, 3, 3, 36, 8)
    dw = _data(rng, 3, 3, 36)
    pw = _data(rng, 36, 8)

    y = fastconv.conv2d(x, cp.asarray(wt))
    _check(cp, y[:, -3:], ref.conv2d(x_tail, wt), 9 * 36)
    del y
    y = fastconv.depthwise_conv2d(x, cp.asarray(dw))
    _check(cp, y[:, -3:], ref.depthwise_conv2d(x_tail, dw), 9)
    del y
    y = fastconv.pointwise_conv2d(x, cp.asarray(pw))
    _check(cp, y[:, -5:], ref.pointwise_conv2d(x_tail, pw), 36)
    del y
    y = fastconv.max_pool2d(x, 2)
    _check(cp, y[:, -2:], ref.max_pool2d(x_tail[:, 1:], 2), 4)
    del y
    _check(cp, fastconv.global_max_pool2d(x), cp.asnumpy(x.max(axis=(1, 2))), 1)
    _check(cp, fastconv.global_avg_pool2d(x), cp.asnumpy(x.mean(axis=(1, 2), dtype=cp.float64)), 8192 * 8192)
