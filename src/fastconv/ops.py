"""The public ops. Each one: normalise the arrays, build the problem (all validation happens in
`_params`), run the backend's kernel. Activations NHWC (N, H, W, C); dense-conv weights HWIO
(KH, KW, C_in // groups, C_out); float32 results.
"""

from __future__ import annotations

from . import _backend, _cpu, _params


def _shape(a):
    return None if a is None else a.shape


def conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, groups=1, activation=None):
    """2-D convolution (cross-correlation) of x (N, H, W, C_in) with w (KH, KW, C_in // groups, C_out).

    padding: "valid", "same" (TensorFlow/ONNX SAME_UPPER), int, (ph, pw) or ((top, bottom), (left, right)).
    activation: None, "relu", "relu6", "sigmoid", "tanh" or "silu", applied after the bias.
    Returns (N, OH, OW, C_out) float32.
    """
    x, w, b = _backend.as_inputs("conv2d", x=x, w=w, b=b)
    p = _params.conv2d_problem("conv2d", x.shape, w.shape, _shape(b), stride, padding, dilation, groups, activation)
    return _backend.run("conv2d", p, x, w, b)


def depthwise_conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, activation=None):
    """Depthwise convolution: w (KH, KW, C) or (KH, KW, C, M); output channel c * M + m.

    The same as conv2d with groups=C and w reshaped to (KH, KW, 1, C * M).
    """
    x, w, b = _backend.as_inputs("depthwise_conv2d", x=x, w=w, b=b)
    p = _params.depthwise_problem("depthwise_conv2d", x.shape, w.shape, _shape(b), stride, padding, dilation, activation)
    return _backend.run("conv2d", p, x, w.reshape(p.weight_shape), b)


def pointwise_conv2d(x, w, b=None, *, activation=None):
    """1x1 convolution: x (N, H, W, C_in) times w (C_in, C_out) at every pixel."""
    x, w, b = _backend.as_inputs("pointwise_conv2d", x=x, w=w, b=b)
    p = _params.pointwise_problem("pointwise_conv2d", x.shape, w.shape, _shape(b), activation)
    return _backend.run("conv2d", p, x, w.reshape(p.weight_shape), b)


def dense(x, w, b=None, *, activation=None):
    """Fully connected layer: x (N, in) @ w (in, out) + b, then the activation."""
    x, w, b = _backend.as_inputs("dense", x=x, w=w, b=b)
    p = _params.dense_problem("dense", x.shape, w.shape, _shape(b), activation)
    return _backend.run("dense", p, x, w, b)


def max_pool2d(x, size, stride=None, padding="valid", ceil_mode=False):
    """Max pooling over size (int or (h, w)) windows; stride defaults to size; padding counts as -inf."""
    (x,) = _backend.as_inputs("max_pool2d", x=x)
    p = _params.pool2d_problem("max_pool2d", x.shape, size, stride, padding, ceil_mode)
    return _backend.run("max_pool2d", p, x)


def avg_pool2d(x, size, stride=None, padding="valid", count_include_pad=False, ceil_mode=False):
    """Average pooling; padding is left out of each window's count unless count_include_pad."""
    (x,) = _backend.as_inputs("avg_pool2d", x=x)
    p = _params.pool2d_problem("avg_pool2d", x.shape, size, stride, padding, ceil_mode, count_include_pad)
    return _backend.run("avg_pool2d", p, x)


def global_avg_pool2d(x):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""
    (x,) = _backend.as_inputs("global_avg_pool2d", x=x)
    return _backend.run("global_avg_pool2d", _params.global_pool_problem("global_avg_pool2d", x.shape), x)


def global_max_pool2d(x):
    """Maximum over H and W: (N, H, W, C) -> (N, C)."""
    (x,) = _backend.as_inputs("global_max_pool2d", x=x)
    return _backend.run("global_max_pool2d", _params.global_pool_problem("global_max_pool2d", x.shape), x)


def set_num_threads(n) -> None:
    """Threads the CPU kernels use (default: OpenMP's, usually one per core)."""
    if not _params._is_int(n):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    return _cpu.get_num_threads()
