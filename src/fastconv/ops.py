"""The public ops. Each one: normalise the arrays, build the problem (all validation happens in
`_params`), run the backend's kernel. Activations NHWC (N, H, W, C); dense-conv weights HWIO
(KH, KW, C_in // groups, C_out); float32 results.
"""

from __future__ import annotations

import numpy as np

from . import _backend, _cpu, _params


def _shape(a):
    return None if a is None else a.shape


def conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, groups=1, activation=None, algorithm="auto"):
    """2-D convolution (cross-correlation) of x (N, H, W, C_in) with w (KH, KW, C_in // groups, C_out).

    padding: "valid", "same" (TensorFlow/ONNX SAME_UPPER), int, (ph, pw) or ((top, bottom), (left, right)).
    activation: None, "relu", "relu6", "sigmoid", "tanh" or "silu", applied after the bias.
    algorithm: "auto" (default: a cost model picks), "direct", or "winograd" (only 3x3 and 5x5 kernels
    with stride 1, dilation 1 and groups 1, else ValueError; 3x3: F(4x4, 3x3), about 4x fewer
    multiplies and a slightly larger float32 rounding error, or on the GPU F(2x2, 3x3), 2.25x fewer,
    with sigmoid or tanh or below 8 input channels; 5x5: F(4x4, 5x5), 6.25x fewer, or F(2x2, 5x5),
    2.8x fewer, below 8 input channels; 5x5 with sigmoid or tanh runs the direct kernel, as their
    rounding would exceed the float32 tolerance). Strided kernels that fold to 3x3 or 5x5
    (ceil(KH / stride_h) = ceil(KW / stride_w) = 3 or 5, e.g. AlexNet's 11x11 at stride 4) are
    eligible too, and so are those that fold to 4x4 (ResNet's 7x7 at stride 2: F(3x3, 4x4), 3x fewer;
    with sigmoid or tanh the direct kernel): the CPU runs them as a stride-1 Winograd convolution
    over the input's stride_h x stride_w phases stacked as channels; the GPU runs them with its
    direct kernel. On the CPU "auto" may also pick Winograd for dilated stride-1 3x3 / 5x5 filters (run
    over the input's dilation_h x dilation_w phases, each an undilated convolution) and for groups of 16
    or more channels both ways (group by group), where the cost model expects it to be faster; these
    cannot be forced with "winograd". Winograd mixes the inputs of each output tile, so a NaN or
    infinity in x turns the whole tile's outputs NaN (as in other libraries' Winograd); "direct" keeps
    it to the windows that read it.
    w may also be pack_weights' (of w, or of a 1x1 kernel's (C_in, C_out) matrix).
    Returns (N, OH, OW, C_out) float32.
    """
    packed = w if isinstance(w, PackedWeights) else None
    if packed is not None:
        w = packed.weights if packed.weights.ndim == 4 else packed.weights.reshape((1, 1) + packed.shape)
    x, w, b = _backend.as_inputs("conv2d", "x w b", x, w, b)
    p = _params.conv2d_problem("conv2d", x.shape, w.shape, _shape(b), stride, padding, dilation, groups, activation,
                               algorithm)
    if packed is not None and p.is_pointwise:
        return _pointwise_packed(p, x, b, packed)
    return _backend.run("conv2d", p, x, w, b, packed=packed)


def depthwise_conv2d(x, w, b=None, *, stride=1, padding="valid", dilation=1, activation=None):
    """Depthwise convolution: w (KH, KW, C) or (KH, KW, C, M); output channel c * M + m.

    The same as conv2d with groups=C and w reshaped to (KH, KW, 1, C * M).
    """
    x, w, b = _backend.as_inputs("depthwise_conv2d", "x w b", x, w, b)
    p = _params.depthwise_problem("depthwise_conv2d", x.shape, w.shape, _shape(b), stride, padding, dilation, activation)
    return _backend.run("conv2d", p, x, w, b)  # w's memory is already p.weight_shape's


def pointwise_conv2d(x, w, b=None, *, activation=None):
    """1x1 convolution: x (N, H, W, C_in) times w (C_in, C_out) at every pixel; w may be pack_weights'."""
    packed = w if isinstance(w, PackedWeights) else None
    if packed is not None:
        w = packed.matrix("pointwise_conv2d")
    x, w, b = _backend.as_inputs("pointwise_conv2d", "x w b", x, w, b)
    p = _params.pointwise_problem("pointwise_conv2d", x.shape, w.shape, _shape(b), activation)
    if packed is None:
        return _backend.run("conv2d", p, x, w, b)  # w's memory is already (1, 1, C_in, C_out)'s
    return _pointwise_packed(p, x, b, packed)


def _pointwise_packed(p, x, b, packed):
    """A pointwise problem as the same GEMM over its N * H * W pixels, which the dense path runs with
    the packed weights."""
    pixels = _params.dense_problem(p.op, (p.n * p.h * p.w, p.c_in), (p.c_in, p.c_out), _shape(b), p.activation)
    return _backend.run("dense", pixels, x.reshape(pixels.n, p.c_in), packed.matrix(p.op), b,
                        packed=packed).reshape(p.out_shape)


def dense(x, w, b=None, *, activation=None):
    """Fully connected layer: x (N, in) @ w (in, out) + b, then the activation; w may be pack_weights'."""
    packed = w if isinstance(w, PackedWeights) else None
    x, w, b = _backend.as_inputs("dense", "x w b", x, w if packed is None else packed.matrix("dense"), b)
    p = _params.dense_problem("dense", x.shape, w.shape, _shape(b), activation)
    return _backend.run("dense", p, x, w, b, packed=packed)


class PackedWeights:
    """Weights copied and packed once for the CPU kernels, for layers called many times with the same
    weights: made by pack_weights from a dense layer's (in, out) matrix, a 1x1 convolution's (C_in,
    C_out) one, or any convolution's HWIO w. dense, pointwise_conv2d and conv2d accept it as w and skip
    the packing (or, for Winograd, the weight transform) they otherwise do on every call. CPU arrays
    only. It keeps its own copy of the weights, so later changes to the array it came from do not
    reach it. The packed form depends on the instruction set in use and, for a convolution, on the
    kernel a call's shape selects (the direct kernel, or one of the Winograd transforms): each form is
    made by the first call that needs it and kept in `forms`, so a layer pays its packing once per
    form. PackedWeights(w) wraps a float32 C-contiguous w without copying it, for an owner that never
    changes w in place (the models' layers)."""

    def __init__(self, weights):
        self.weights = weights
        # Layout name (the kernels' own, with the ISA) -> packed floats: the dense and conv2d
        # bindings look their form up here, or make it and add it, within the call.
        self.forms = {}
        self._matrix = weights.reshape(weights.shape[-2:]) if weights.ndim == 2 or weights.shape[:2] == (1, 1) else None

    @property
    def shape(self):
        return self.weights.shape

    def matrix(self, op):
        """The weights as the (in, out) matrix of a dense or pointwise layer."""
        if self._matrix is None:
            kh, kw = self.weights.shape[:2]
            raise ValueError(f"{op}: w is packed from a {kh}x{kw} kernel, not an (in, out) matrix")
        return self._matrix

    def __repr__(self):
        return f"PackedWeights(shape={self.weights.shape}, forms={sorted(self.forms)})"


def pack_weights(w) -> PackedWeights:
    """w, a float32-convertible NumPy array -> PackedWeights: (in, out) for dense, pointwise_conv2d and a
    1x1 conv2d (whose HWIO w is then w.reshape(C_in, C_out)), or HWIO (KH, KW, C_in // groups, C_out)
    for conv2d. The packing itself happens in the first call (the form depends on the kernel)."""
    (w,) = _backend.as_inputs("pack_weights", "w", w)
    _params.pack_weights_problem("pack_weights", w.shape)
    if _backend._on_gpu(w):
        raise TypeError("pack_weights: w must be a CPU (NumPy) array; the GPU kernels take CuPy weights as they are")
    return PackedWeights(w.copy())


def max_pool2d(x, size, stride=None, padding="valid", ceil_mode=False):
    """Max pooling over size (int or (h, w)) windows; stride defaults to size; padding counts as -inf."""
    (x,) = _backend.as_inputs("max_pool2d", "x", x)
    p = _params.pool2d_problem("max_pool2d", x.shape, size, stride, padding, ceil_mode)
    return _backend.run("max_pool2d", p, x)


def avg_pool2d(x, size, stride=None, padding="valid", count_include_pad=False, ceil_mode=False):
    """Average pooling; padding is left out of each window's count unless count_include_pad."""
    (x,) = _backend.as_inputs("avg_pool2d", "x", x)
    p = _params.pool2d_problem("avg_pool2d", x.shape, size, stride, padding, ceil_mode, count_include_pad)
    return _backend.run("avg_pool2d", p, x)


def global_avg_pool2d(x):
    """Mean over H and W: (N, H, W, C) -> (N, C)."""
    (x,) = _backend.as_inputs("global_avg_pool2d", "x", x)
    return _backend.run("global_avg_pool2d", _params.global_pool_problem("global_avg_pool2d", x.shape), x)


def global_max_pool2d(x):
    """Maximum over H and W: (N, H, W, C) -> (N, C)."""
    (x,) = _backend.as_inputs("global_max_pool2d", "x", x)
    return _backend.run("global_max_pool2d", _params.global_pool_problem("global_max_pool2d", x.shape), x)


def set_num_threads(n) -> None:
    """Threads the CPU kernels use (default: OpenMP's, usually one per core). Calls in flight at
    once from several Python threads share them: each takes its share, at least one."""
    if not _params._is_int(n):
        raise TypeError(f"set_num_threads: n must be an int, got {n!r}")
    if n < 1:
        raise ValueError(f"set_num_threads: n must be >= 1, got {n}")
    _cpu.set_num_threads(int(n))


def get_num_threads() -> int:
    return _cpu.get_num_threads()


# --------------------------------------------------------------------------------------------
# Layers for whole networks. Memory-bound and elementwise, so they compute in float32 with the
# input's own array module (NumPy or CuPy) rather than a compiled kernel; validation in _params.


def _activate(xp, v, activation, out=None):
    """out=v where v is a temporary of the caller's: the common activations then need no new array."""
    if activation is None:
        return v
    if activation == "relu":
        return xp.maximum(v, 0, out=out)
    if activation == "relu6":
        return xp.clip(v, 0, 6, out=out)
    if activation == "tanh":
        return xp.tanh(v, out=out)
    sigmoid = 1 / (1 + xp.exp(-v))
    return sigmoid if activation == "sigmoid" else v * sigmoid


def _f32(xp, a):
    return a if a.dtype == xp.float32 else a.astype(xp.float32)


def activate(x, activation):
    """Standalone activation: "relu", "relu6", "sigmoid", "tanh" or "silu", elementwise."""
    (x,) = _backend.as_inputs("activate", "x", x)
    p = _params.activate_problem("activate", x.shape, activation)
    if _backend._on_gpu(x):
        return _f32(_backend.array_module(x), _activate(_backend.array_module(x), x, p.activation))
    return _backend.run("activate", p, x)


def batch_norm(x, mean, var, gamma=None, beta=None, *, eps=1e-5, activation=None):
    """Inference batch normalisation over the last (channel) axis:
    (x - mean) / sqrt(var + eps) * gamma + beta, then the activation. mean, var, gamma, beta: (C,).
    """
    x, mean, var, gamma, beta = _backend.as_inputs("batch_norm", "x mean var gamma beta", x, mean, var, gamma, beta)
    shapes = dict(mean=mean.shape, var=var.shape, gamma=_shape(gamma), beta=_shape(beta))
    p = _params.batch_norm_problem("batch_norm", x.shape, shapes, eps, activation)
    xp = _backend.array_module(x)
    scale = 1 / xp.sqrt(var + xp.float32(eps))
    if gamma is not None:
        scale = scale * gamma
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta
    if not _backend._on_gpu(x):
        scale, shift = (np.ascontiguousarray(a, dtype=np.float32) for a in (scale, shift))
        return _backend.run("batch_norm", p, x, scale, shift)
    v = x * scale
    v += shift
    return _f32(xp, _activate(xp, v, p.activation, out=v))


def add(a, b, *, activation=None):
    """Elementwise a + b of equal shapes (a residual connection), then the activation."""
    a, b = _backend.as_inputs("add", "a b", a, b)
    p = _params.add_problem("add", a.shape, b.shape, activation)
    if _backend._on_gpu(a):
        xp = _backend.array_module(a)
        v = a + b
        return _f32(xp, _activate(xp, v, p.activation, out=v))
    return _backend.run("add", p, a, b)


def concat(xs):
    """Concatenate (N, H, W, C_i) arrays along the channel axis -> (N, H, W, sum C_i)."""
    xs = list(xs) if not hasattr(xs, "shape") else [xs]
    arrays = _backend.as_inputs("concat", [f"xs[{i}]" for i in range(len(xs))], *xs) if xs else []
    out_shape = _params.concat_problem("concat", [a.shape for a in arrays])
    if _backend._on_gpu(arrays[0]):
        return _backend.array_module(arrays[0]).concatenate(arrays, axis=-1)
    # Into the large-output pool's memory (a network's concatenations: no fresh pages to fault in).
    return np.concatenate(arrays, axis=-1, out=_backend._large_outputs.empty(out_shape))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis, computed stably (the maximum subtracted first)."""
    (x,) = _backend.as_inputs("softmax", "x", x)
    axis = _params.softmax_problem("softmax", x.shape, axis)
    xp = _backend.array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return _f32(xp, e / e.sum(axis=axis, keepdims=True))


def adaptive_avg_pool2d(x, output_size):
    """Average pooling to a fixed (OH, OW) with PyTorch's windows: rows [floor(i H / OH), ceil((i+1) H / OH)).

    When OH divides H and OW divides W this is avg_pool2d with size = stride = (H / OH, W / OW).
    """
    (x,) = _backend.as_inputs("adaptive_avg_pool2d", "x", x)
    n, oh, ow, c = _params.adaptive_pool_problem("adaptive_avg_pool2d", x.shape, output_size)
    h, w = x.shape[1], x.shape[2]
    if h % oh == 0 and w % ow == 0:
        return avg_pool2d(x, (h // oh, w // ow))
    xp = _backend.array_module(x)
    out = xp.empty((n, oh, ow, c), dtype=xp.float32)
    for i, (r0, r1) in enumerate(_params.adaptive_bounds(h, oh)):
        for j, (c0, c1) in enumerate(_params.adaptive_bounds(w, ow)):
            out[:, i, j, :] = x[:, r0:r1, c0:c1, :].mean(axis=(1, 2))
    return out


def local_response_norm(x, size=5, alpha=1e-4, beta=0.75, k=2.0):
    """Local response normalisation across channels, PyTorch's definition (AlexNet paper constants):
    y_c = x_c / (k + alpha / size * sum of x_j^2 over j in [c - size // 2, c + (size - 1) // 2]) ** beta.
    """
    (x,) = _backend.as_inputs("local_response_norm", "x", x)
    _params.lrn_problem("local_response_norm", x.shape, size, alpha, beta, k)
    xp = _backend.array_module(x)
    c = x.shape[3]
    sq = xp.pad(x * x, ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2)))
    total = xp.zeros_like(x)
    for shift in range(size):
        total += sq[..., shift : shift + c]
    return _f32(xp, x / (total * xp.float32(alpha / size) + xp.float32(k)) ** xp.float32(beta))


def scale_channels(x, s):
    """Squeeze-and-excitation's rescaling: x (N, H, W, C) times s (N, C), broadcast over H and W."""
    x, s = _backend.as_inputs("scale_channels", "x s", x, s)
    p = _params.scale_channels_problem("scale_channels", x.shape, s.shape)
    if _backend._on_gpu(x):
        return x * s[:, None, None, :]
    return _backend.run("scale_channels", p, x, s)


def flatten(x):
    """(N, ...) -> (N, product of the rest), in the array's (NHWC) order."""
    (x,) = _backend.as_inputs("flatten", "x", x)
    return x.reshape(_params.flatten_problem("flatten", x.shape))
