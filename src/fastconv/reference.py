"""Pure-NumPy reference implementations of every fastconv op: the oracle the compiled kernels are tested against.

Layouts:
  activations       NHWC (N, H, W, C)
  conv2d weights    HWIO (KH, KW, C_in // groups, C_out); group g reads input channels
                    [g * C_in/groups, (g+1) * C_in/groups) and writes output channels
                    [g * C_out/groups, (g+1) * C_out/groups)
  depthwise weights (KH, KW, C) or (KH, KW, C, M); input channel c with multiplier m is output channel c * M + m
  pointwise weights (C_in, C_out)
  dense             x (N, in_features) @ w (in_features, out_features)

Arguments go through the same builders in _params as the compiled backend, so every error reads the same.
Everything is computed in float64; the result is float64 when any input is float64 (or wider), else float32.
Written for clarity, not speed: Python loops run over kernel taps only, and each tap is vectorised over
N, OH, OW and C.
"""

from __future__ import annotations

import numpy as np

from fastconv._params import (
    _check_activation,
    check_float_dtype,
    conv2d_problem,
    conv_output_size,
    dense_problem,
    depthwise_problem,
    global_pool_problem,
    pointwise_problem,
    pool2d_problem,
)

__all__ = [
    "activate",
    "adaptive_avg_pool2d",
    "add",
    "avg_pool2d",
    "batch_norm",
    "concat",
    "conv2d",
    "conv_output_size",
    "dense",
    "depthwise_conv2d",
    "global_avg_pool2d",
    "flatten",
    "global_max_pool2d",
    "local_response_norm",
    "max_pool2d",
    "pointwise_conv2d",
    "scale_channels",
    "softmax",
]


# --------------------------------------------------------------------------------------------
# Helpers


def activate(v, activation):
    """Apply a fused activation elementwise. NaN stays NaN, as in the kernels."""
    activation = _check_activation("activate", activation)
    if activation is None:
        return v
    if activation == "relu":
        return np.maximum(v, 0.0)
    if activation == "relu6":
        return np.clip(v, 0.0, 6.0)
    if activation == "tanh":
        return np.tanh(v)
    # exp(-v) overflows to inf for very negative v, which correctly gives sigmoid 0.
    with np.errstate(over="ignore"):
        sigmoid = 1.0 / (1.0 + np.exp(-v))
    return sigmoid if activation == "sigmoid" else v * sigmoid


def _float_inputs(op, **arrays):
    """np.asarray each argument and reject non-float dtypes; None (an absent bias) passes through."""
    converted = []
    for name, value in arrays.items():
        if value is not None:
            value = np.asarray(value)
            check_float_dtype(op, name, value.dtype)
        converted.append(value)
    return converted


def _result_dtype(*arrays):
    """float64 when any input carries float64 (or wider) precision, else float32."""
    wide = any(a is not None and a.dtype.itemsize >= 8 for a in arrays)
    return np.float64 if wide else np.float32


def _shape_or_none(a):
    return None if a is None else a.shape


def _pad_hw(a, top, bottom, left, right, fill):
    """Pad the H and W axes of an NHWC array with a constant."""
    return np.pad(a, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def _tap(padded, top, left, out_h, out_w, stride_h, stride_w):
    """The (N, OH, OW, C) slice that one kernel tap, offset (top, left) in the padded input, reads."""
    rows = slice(top, top + (out_h - 1) * stride_h + 1, stride_h)
    cols = slice(left, left + (out_w - 1) * stride_w + 1, stride_w)
    return padded[:, rows, cols, :]


# --------------------------------------------------------------------------------------------
# Convolutions: one code path, grouped conv2d; depthwise and pointwise are special weights


def _conv(p, x, w, b):
    """Grouped, strided, dilated, padded NHWC convolution for a Conv2dProblem; w is HWIO."""
    out_dtype = _result_dtype(x, w, b)
    groups = p.groups
    c_in_g, c_out_g = p.c_in // groups, p.c_out // groups
    padded = _pad_hw(x.astype(np.float64), p.pad_top, p.pad_bottom, p.pad_left, p.pad_right, 0.0)
    acc = np.zeros((p.n, p.out_h, p.out_w, groups, c_out_g))
    for ky in range(p.kh):
        for kx in range(p.kw):
            patch = _tap(padded, ky * p.dilation_h, kx * p.dilation_w, p.out_h, p.out_w, p.stride_h, p.stride_w)
            patch = patch.reshape(p.n, p.out_h, p.out_w, groups, c_in_g)
            # w[ky, kx] is (C_in // groups, C_out); output channel g * c_out_g + o belongs to group g.
            taps = w[ky, kx].astype(np.float64).reshape(c_in_g, groups, c_out_g)
            acc += np.einsum("nhwgc,cgo->nhwgo", patch, taps, optimize=True)  # optimize: BLAS when it can
    y = acc.reshape(p.out_shape)
    if b is not None:
        y = y + b.astype(np.float64)
    return activate(y, p.activation).astype(out_dtype)


def conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, groups=1, activation=None):
    """x (N, H, W, C_in), w (KH, KW, C_in // groups, C_out), b (C_out,) -> (N, OH, OW, C_out)."""
    op = "conv2d"
    x, w, b = _float_inputs(op, x=x, w=w, b=b)
    p = conv2d_problem(op, x.shape, w.shape, _shape_or_none(b), stride, padding, dilation, groups, activation)
    return _conv(p, x, w, b)


def depthwise_conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, activation=None):
    """x (N, H, W, C), w (KH, KW, C) or (KH, KW, C, M), b (C * M,) -> (N, OH, OW, C * M)."""
    op = "depthwise_conv2d"
    x, w, b = _float_inputs(op, x=x, w=w, b=b)
    p = depthwise_problem(op, x.shape, w.shape, _shape_or_none(b), stride, padding, dilation, activation)
    # Flattening (C, M) gives output channel c * M + m in group c: exactly conv2d with groups = C.
    return _conv(p, x, w.reshape(p.kh, p.kw, 1, p.c_out), b)


def pointwise_conv2d(x, w, b=None, *, activation=None):
    """x (N, H, W, C_in), w (C_in, C_out), b (C_out,) -> (N, H, W, C_out): a 1x1 conv2d."""
    op = "pointwise_conv2d"
    x, w, b = _float_inputs(op, x=x, w=w, b=b)
    p = pointwise_problem(op, x.shape, w.shape, _shape_or_none(b), activation)
    return _conv(p, x, w.reshape(1, 1, p.c_in, p.c_out), b)


# --------------------------------------------------------------------------------------------
# Pooling


def _pad_for_pool(p, a, fill):
    """Pad an NHWC array like the pooling input, plus room for ceil_mode windows past the padded border."""
    over_h = (p.out_h - 1) * p.stride_h + p.kh - (p.pad_top + p.h + p.pad_bottom)
    over_w = (p.out_w - 1) * p.stride_w + p.kw - (p.pad_left + p.w + p.pad_right)
    return _pad_hw(a, p.pad_top, p.pad_bottom + max(over_h, 0), p.pad_left, p.pad_right + max(over_w, 0), fill)


def _pool_windows(p, padded):
    """Yield, per window tap, the (N, OH, OW, C) slice of an array padded by _pad_for_pool."""
    for ky in range(p.kh):
        for kx in range(p.kw):
            yield _tap(padded, ky, kx, p.out_h, p.out_w, p.stride_h, p.stride_w)


def max_pool2d(x, size, stride=None, padding="valid", ceil_mode=False):
    """x (N, H, W, C) -> (N, OH, OW, C). Padding acts as -inf; NaN propagates like numpy.max."""
    op = "max_pool2d"
    (x,) = _float_inputs(op, x=x)
    p = pool2d_problem(op, x.shape, size, stride, padding, ceil_mode)
    padded = _pad_for_pool(p, x.astype(np.float64), -np.inf)
    out = np.full(p.out_shape, -np.inf)
    for window in _pool_windows(p, padded):
        out = np.maximum(out, window)  # np.maximum, unlike np.fmax, propagates NaN
    return out.astype(_result_dtype(x))


def avg_pool2d(x, size, stride=None, padding="valid", count_include_pad=False, ceil_mode=False):
    """x (N, H, W, C) -> (N, OH, OW, C).

    Divides by the window elements inside the real input, or with count_include_pad inside the padded
    input (PyTorch's rule: a ceil_mode window hanging past the padded border counts only up to it).
    """
    op = "avg_pool2d"
    (x,) = _float_inputs(op, x=x)
    p = pool2d_problem(op, x.shape, size, stride, padding, ceil_mode, count_include_pad)
    padded = _pad_for_pool(p, x.astype(np.float64), 0.0)
    # 1 where an element counts toward the divisor: the real input, its padding too with
    # count_include_pad, but never the ceil_mode overhang past the padded border.
    counted = _pad_for_pool(p, np.ones((1, p.h, p.w, 1)), 1.0 if p.count_include_pad else 0.0)
    counted[:, p.pad_top + p.h + p.pad_bottom :, :, :] = 0.0
    counted[:, :, p.pad_left + p.w + p.pad_right :, :] = 0.0
    total = np.zeros(p.out_shape)
    count = np.zeros((1, p.out_h, p.out_w, 1))
    for window, window_counted in zip(_pool_windows(p, padded), _pool_windows(p, counted)):
        total += window
        count += window_counted
    return (total / count).astype(_result_dtype(x))


def global_avg_pool2d(x):
    """x (N, H, W, C) -> (N, C): the mean over H and W."""
    op = "global_avg_pool2d"
    (x,) = _float_inputs(op, x=x)
    global_pool_problem(op, x.shape)
    return x.astype(np.float64).mean(axis=(1, 2)).astype(_result_dtype(x))


def global_max_pool2d(x):
    """x (N, H, W, C) -> (N, C): the maximum over H and W; NaN propagates like numpy.max."""
    op = "global_max_pool2d"
    (x,) = _float_inputs(op, x=x)
    global_pool_problem(op, x.shape)
    return x.astype(np.float64).max(axis=(1, 2)).astype(_result_dtype(x))


# --------------------------------------------------------------------------------------------
# Dense


def dense(x, w, b=None, *, activation=None):
    """x (N, in_features), w (in_features, out_features), b (out_features,) -> (N, out_features)."""
    op = "dense"
    x, w, b = _float_inputs(op, x=x, w=w, b=b)
    p = dense_problem(op, x.shape, w.shape, _shape_or_none(b), activation)
    y = x.astype(np.float64) @ w.astype(np.float64)
    if b is not None:
        y = y + b.astype(np.float64)
    return activate(y, p.activation).astype(_result_dtype(x, w, b))


# --------------------------------------------------------------------------------------------
# Layers for whole networks: written from the textbook / PyTorch definitions, in float64.

from fastconv import _params as _p  # noqa: E402  (kept with the additions it serves)


def _f64(a):
    return None if a is None else a.astype(np.float64)


def batch_norm(x, mean, var, gamma=None, beta=None, *, eps=1e-5, activation=None):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis, then the activation."""
    op = "batch_norm"
    x, mean, var, gamma, beta = _float_inputs(op, x=x, mean=mean, var=var, gamma=gamma, beta=beta)
    shapes = dict(mean=mean.shape, var=var.shape, gamma=_shape_or_none(gamma), beta=_shape_or_none(beta))
    activation = _p.batch_norm_problem(op, x.shape, shapes, eps, activation).activation
    y = (_f64(x) - _f64(mean)) / np.sqrt(_f64(var) + eps)
    if gamma is not None:
        y = y * _f64(gamma)
    if beta is not None:
        y = y + _f64(beta)
    return activate(y, activation).astype(_result_dtype(x, mean, var, gamma, beta))


def add(a, b, *, activation=None):
    op = "add"
    a, b = _float_inputs(op, a=a, b=b)
    activation = _p.add_problem(op, a.shape, b.shape, activation).activation
    return activate(_f64(a) + _f64(b), activation).astype(_result_dtype(a, b))


def concat(xs):
    op = "concat"
    xs = list(xs) if not hasattr(xs, "shape") else [xs]
    arrays = _float_inputs(op, **{f"xs[{i}]": a for i, a in enumerate(xs)}) if xs else []
    _p.concat_problem(op, [a.shape for a in arrays])
    return np.concatenate([_f64(a) for a in arrays], axis=-1).astype(_result_dtype(*arrays))


def softmax(x, axis=-1):
    op = "softmax"
    (x,) = _float_inputs(op, x=x)
    axis = _p.softmax_problem(op, x.shape, axis)
    v = _f64(x)
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(_result_dtype(x))


def adaptive_avg_pool2d(x, output_size):
    """PyTorch's adaptive average pooling: output cell i averages rows [floor(i H / OH), ceil((i+1) H / OH))."""
    op = "adaptive_avg_pool2d"
    (x,) = _float_inputs(op, x=x)
    n, oh, ow, c = _p.adaptive_pool_problem(op, x.shape, output_size)
    v = _f64(x)
    out = np.empty((n, oh, ow, c))
    for i, (r0, r1) in enumerate(_p.adaptive_bounds(x.shape[1], oh)):
        for j, (c0, c1) in enumerate(_p.adaptive_bounds(x.shape[2], ow)):
            out[:, i, j, :] = v[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return out.astype(_result_dtype(x))


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """PyTorch's local_response_norm over the channel axis (zero-padded, divided by size)."""
    op = "local_response_norm"
    (x,) = _float_inputs(op, x=x)
    _p.lrn_problem(op, x.shape, size, alpha, beta, k)
    v = _f64(x)
    c = x.shape[3]
    out = np.empty_like(v)
    for ch in range(c):
        lo, hi = max(ch - size // 2, 0), min(ch + (size - 1) // 2, c - 1)
        div = k + alpha / size * (v[..., lo : hi + 1] ** 2).sum(axis=-1)
        out[..., ch] = v[..., ch] / div**beta
    return out.astype(_result_dtype(x))


def scale_channels(x, s):
    """x (N, H, W, C) * s (N, C) broadcast over H and W."""
    op = "scale_channels"
    x, s = _float_inputs(op, x=x, s=s)
    _p.scale_channels_problem(op, x.shape, s.shape)
    return (_f64(x) * _f64(s)[:, None, None, :]).astype(_result_dtype(x, s))


def flatten(x):
    op = "flatten"
    (x,) = _float_inputs(op, x=x)
    return x.reshape(_p.flatten_problem(op, x.shape))
