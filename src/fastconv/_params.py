"""Argument parsing and validation for every op, shared by the CPU and GPU backends.

Each public op turns its arguments into one frozen *problem* object here (shapes, strides, pads,
output size, activation). Every ValueError / TypeError a user can see is raised in this module,
and its message starts with the public function and names the argument. Nothing below this layer
(the backend, the compiled kernels) checks arguments again.

Layouts: activations NHWC, dense-conv weights HWIO (KH, KW, C_in // groups, C_out).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass, replace

ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "silu")
ALGORITHMS = ("auto", "direct", "winograd")  # conv2d's algorithm=
# The integer codes of the C++ enums Activation (fastconv/activation.h) and ConvAlgorithm
# (fastconv/params.h): None -> 0, then ACTIVATIONS / ALGORITHMS in order.
_ACTIVATION_CODE = {None: 0, **{name: i + 1 for i, name in enumerate(ACTIVATIONS)}}
_ALGORITHM_CODE = {name: i for i, name in enumerate(ALGORITHMS)}

# Guards the 64-bit index arithmetic of the kernels with a wide margin.
_MAX_ELEMENTS = 2**62


# --------------------------------------------------------------------------------------------
# Scalars and pairs


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_pair(op: str, name: str, value) -> tuple[int, int]:
    """int or (h, w) of ints >= 1."""
    pair = (value, value) if _is_int(value) else value
    try:
        ok = len(pair) == 2 and all(_is_int(v) for v in pair)
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"{op}: {name} must be an int or a pair of ints (h, w), got {value!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_activation(op: str, activation) -> str | None:
    if activation is None or activation in ACTIVATIONS:
        return activation
    raise ValueError(
        f"{op}: unknown activation {activation!r}; expected None or one of {', '.join(ACTIVATIONS)}"
    )


def check_float_dtype(op: str, name: str, dtype) -> None:
    """Real floating dtypes are accepted (and converted to float32 by the backend)."""
    if getattr(dtype, "kind", None) != "f":
        raise TypeError(f"{op}: {name} must be a real floating-point array, got dtype {dtype}")


def _check_shape(op: str, name: str, shape, ndim: int, layout: str) -> None:
    if len(shape) != ndim:
        raise ValueError(f"{op}: {name} must be {ndim}-D {layout}, got shape {tuple(shape)}")
    if any(d == 0 for d in shape):
        raise ValueError(f"{op}: {name} has a zero-size dimension, shape {tuple(shape)} {layout}")
    total = 1
    for d in shape:
        total *= int(d)
    if total >= _MAX_ELEMENTS:
        raise ValueError(f"{op}: {name} is too large ({total} elements)")


def _check_bias(op: str, b_shape, c_out: int) -> None:
    if b_shape is not None and tuple(b_shape) != (c_out,):
        raise ValueError(f"{op}: b must have shape ({c_out},) (one per output channel), got {tuple(b_shape)}")


# --------------------------------------------------------------------------------------------
# Padding and output size


def _same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow / ONNX SAME_UPPER: out = ceil(size / stride); an odd total goes bottom/right."""
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def _explicit_pads(op: str, padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """int | (ph, pw) | ((top, bottom), (left, right)) -> ((top, bottom), (left, right))."""
    bad = TypeError(
        f"{op}: padding must be 'valid', 'same', an int, (ph, pw) or ((top, bottom), (left, right)), "
        f"got {padding!r}"
    )
    if _is_int(padding):
        pads = ((padding, padding), (padding, padding))
    else:
        try:
            if len(padding) != 2:
                raise bad
            pads = tuple((p, p) if _is_int(p) else tuple(p) for p in padding)
        except TypeError:
            raise bad from None
        if any(len(p) != 2 or not all(_is_int(v) for v in p) for p in pads):
            raise bad
    if any(v < 0 for p in pads for v in p):
        raise ValueError(f"{op}: padding must be >= 0, got {padding!r}")
    return (int(pads[0][0]), int(pads[0][1])), (int(pads[1][0]), int(pads[1][1]))


def _resolve_pads(op, padding, size_hw, window_hw, stride_hw):
    """Padding argument -> ((top, bottom), (left, right)) for a 2-D window."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0)
        if mode == "same":
            return tuple(_same_pads(n, f, s) for n, f, s in zip(size_hw, window_hw, stride_hw))
        raise ValueError(f"{op}: unknown padding {padding!r}; expected 'valid', 'same' or integers")
    return _explicit_pads(op, padding)


def _window_count(n: int, pads: tuple[int, int], window: int, stride: int, ceil_mode: bool) -> int:
    """Number of window positions along one axis; <= 0 when the window does not fit."""
    span = n + pads[0] + pads[1] - window
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # PyTorch / ONNX: a last window that would start in the bottom/right padding is dropped.
    if (out - 1) * stride >= n + pads[0]:
        out -= 1
    return out


def conv_output_size(n, f, padding=0, stride=1, dilation=1) -> int:
    """Output length of a convolution along one axis.

    padding: an int per side, (before, after), "valid" or "same". With padding p per side this is
    the familiar floor((n + 2p - f) / s) + 1; dilation d widens the window to d(f - 1) + 1.
    """
    op = "conv_output_size"
    for name, value, low in (("n", n, 1), ("f", f, 1), ("stride", stride, 1), ("dilation", dilation, 1)):
        if not _is_int(value):
            raise TypeError(f"{op}: {name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{op}: {name} must be >= {low}, got {value!r}")
    window = dilation * (f - 1) + 1
    if isinstance(padding, str):
        (before, after), _ = _resolve_pads(op, padding, (n, 1), (window, 1), (stride, 1))
    elif _is_int(padding):
        before = after = padding
    else:
        try:
            before, after = padding
        except (TypeError, ValueError):
            raise TypeError(f"{op}: padding must be an int, (before, after), 'valid' or 'same', got {padding!r}") from None
        if not (_is_int(before) and _is_int(after)):
            raise TypeError(f"{op}: padding must be an int, (before, after), 'valid' or 'same', got {padding!r}")
    if before < 0 or after < 0:
        raise ValueError(f"{op}: padding must be >= 0, got {padding!r}")
    out = _window_count(n, (before, after), window, stride, False)
    if out < 1:
        raise ValueError(f"{op}: window {window} is larger than the padded input {n + before + after}")
    return out


# --------------------------------------------------------------------------------------------
# Problems: what the kernels are told. The compiled bindings read `kernel_fields`: the members of
# the matching C++ struct of fastconv/params.h, in its order, as one tuple built once per problem
# (the builders below memoise problems, so a layer called again pays one attribute lookup).


@dataclass(frozen=True)
class Conv2dProblem:
    """A grouped, strided, dilated, padded NHWC convolution with HWIO weights."""

    op: str
    n: int
    h: int
    w: int
    c_in: int
    kh: int
    kw: int
    c_out: int
    groups: int
    stride_h: int
    stride_w: int
    dilation_h: int
    dilation_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    out_h: int
    out_w: int
    activation: str | None
    has_bias: bool
    # conv2d's algorithm=: "auto" (the CPU dispatch's cost model picks), "direct" or "winograd".
    algorithm: str = "auto"

    @functools.cached_property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.out_h, self.out_w, self.c_out)

    @property
    def folded_kernel(self) -> tuple[int, int]:
        """The filter after folding the stride into the channels (space to depth, as params.h):
        ceil(KH / stride_h) x ceil(KW / stride_w) over stride_h * stride_w * C_in channels."""
        return (-(-self.kh // self.stride_h), -(-self.kw // self.stride_w))

    @property
    def winograd_eligible(self) -> bool:
        """The shapes the Winograd kernels compute: filters that fold to 3x3 or 5x5 (3x3 and 5x5 at
        stride 1, 11x11 at stride 4, 5x5 at stride 2, ...) or strided ones that fold to 4x4 (7x7 at
        stride 2), dilation 1, groups 1, any padding. The GPU runs the strided ones with its direct
        kernel."""
        fh, fw = self.folded_kernel
        strided = self.stride_h > 1 or self.stride_w > 1
        return fh == fw and (fh in (3, 5) or (strided and fh == 4)) and (
            self.dilation_h, self.dilation_w, self.groups) == (1, 1, 1)

    @property
    def is_pointwise(self) -> bool:
        """1x1, stride 1, no padding, one group: a GEMM over the pixels (as params.h's is_pointwise)."""
        return (self.kh, self.kw, self.stride_h, self.stride_w, self.groups) == (1, 1, 1, 1, 1) and not (
            self.pad_top or self.pad_bottom or self.pad_left or self.pad_right)

    @functools.cached_property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.kh, self.kw, self.c_in // self.groups, self.c_out)

    @property
    def macs(self) -> int:
        """Multiply-adds, padding taps included (output elements x filter volume)."""
        return self.n * self.out_h * self.out_w * self.c_out * self.kh * self.kw * (self.c_in // self.groups)

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """Conv2dParams."""
        return (self.n, self.h, self.w, self.c_in, self.kh, self.kw, self.c_out, self.groups, self.stride_h,
                self.stride_w, self.dilation_h, self.dilation_w, self.pad_top, self.pad_left, self.out_h, self.out_w,
                _ACTIVATION_CODE[self.activation], _ALGORITHM_CODE[self.algorithm])

    @functools.cached_property
    def operand_sizes(self) -> tuple[int, int, int, int]:
        """Elements of x, w, b and the output."""
        return (self.n * self.h * self.w * self.c_in, self.kh * self.kw * (self.c_in // self.groups) * self.c_out,
                self.c_out, self.n * self.out_h * self.out_w * self.c_out)


@dataclass(frozen=True)
class Pool2dProblem:
    op: str  # "max_pool2d" or "avg_pool2d"
    n: int
    h: int
    w: int
    c: int
    kh: int
    kw: int
    stride_h: int
    stride_w: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    out_h: int
    out_w: int
    count_include_pad: bool

    @functools.cached_property
    def out_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.out_h, self.out_w, self.c)

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """Pool2dParams."""
        return (self.n, self.h, self.w, self.c, self.kh, self.kw, self.stride_h, self.stride_w, self.pad_top,
                self.pad_bottom, self.pad_left, self.pad_right, self.out_h, self.out_w, int(self.count_include_pad))

    @functools.cached_property
    def operand_sizes(self) -> tuple[int, int]:
        """Elements of x and the output."""
        return (self.n * self.h * self.w * self.c, self.n * self.out_h * self.out_w * self.c)


@dataclass(frozen=True)
class GlobalPoolProblem:
    op: str  # "global_avg_pool2d" or "global_max_pool2d"
    n: int
    h: int
    w: int
    c: int

    @functools.cached_property
    def out_shape(self) -> tuple[int, int]:
        return (self.n, self.c)

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """GlobalPoolParams."""
        return (self.n, self.h, self.w, self.c)

    @functools.cached_property
    def operand_sizes(self) -> tuple[int, int]:
        """Elements of x and the output."""
        return (self.n * self.h * self.w * self.c, self.n * self.c)


@dataclass(frozen=True)
class ElementwiseProblem:
    """y = activation(a + b) ("add") or activation(x) ("activate"), elementwise over `shape`."""

    op: str
    shape: tuple[int, ...]
    activation: str | None = None

    @functools.cached_property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """ElementwiseParams."""
        return (math.prod(self.shape), _ACTIVATION_CODE[self.activation])


@dataclass(frozen=True)
class ChannelAffineProblem(ElementwiseProblem):
    """y = activation(x * scale + shift) over x's last (channel) axis: inference batch norm."""

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """ChannelAffineParams."""
        return (math.prod(self.shape[:-1]), self.shape[-1], _ACTIVATION_CODE[self.activation])


@dataclass(frozen=True)
class ScaleChannelsProblem(ElementwiseProblem):
    """y = x (N, H, W, C) * s (N, C), broadcast over H and W."""

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """ScaleChannelsParams."""
        n, h, w, c = self.shape
        return (n, h * w, c)


@dataclass(frozen=True)
class DenseProblem:
    """y (N, out) = x (N, in) @ w (in, out) + b, then the activation."""

    op: str
    n: int
    k: int  # input features
    m: int  # output features
    activation: str | None
    has_bias: bool

    @functools.cached_property
    def out_shape(self) -> tuple[int, int]:
        return (self.n, self.m)

    @property
    def macs(self) -> int:
        return self.n * self.k * self.m

    @functools.cached_property
    def kernel_fields(self) -> tuple[int, ...]:
        """GemmParams (rows, k, m, activation)."""
        return (self.n, self.k, self.m, _ACTIVATION_CODE[self.activation])

    @functools.cached_property
    def operand_sizes(self) -> tuple[int, int, int, int]:
        """Elements of x, w, b and the output."""
        return (self.n * self.k, self.k * self.m, self.m, self.n * self.m)


# --------------------------------------------------------------------------------------------
# Builders, one per public op


def _int_leaves(value) -> bool:
    """A pair argument whose members (or members' members: padding) are all exactly int."""
    return all(type(v) is int or (type(v) is tuple and all(type(e) is int for e in v)) for v in value)


def _memoized(*pair_args):
    """Cache a builder's problems: a network calls each layer with the same arguments every time,
    and building a problem costs more than a small kernel. Keys are typed (stride=1.0 or True after
    stride=1 must still fail validation, though 1.0 == True == 1 in a dict). Typing covers only the
    top-level arguments, so a call whose `pair_args` (arguments that may be tuples: stride, padding,
    ...) hold anything but exact ints is built again, as are calls with unhashable arguments (pads
    given as lists). Exceptions are never cached."""

    def wrap(builder):
        names = list(inspect.signature(builder).parameters)
        checked = tuple(names.index(name) for name in pair_args)
        cached = functools.lru_cache(maxsize=1024, typed=True)(builder)

        @functools.wraps(builder)
        def build(*args):
            for i in checked:
                if i < len(args) and type(args[i]) is tuple and not _int_leaves(args[i]):
                    return builder(*args)
            try:
                return cached(*args)
            except TypeError:
                # An unhashable argument, or the builder's own TypeError, which building again raises.
                return builder(*args)

        return build

    return wrap


@_memoized("stride", "padding", "dilation")
def conv2d_problem(op, x_shape, w_shape, b_shape, stride, padding, dilation, groups, activation,
                   algorithm="auto") -> Conv2dProblem:
    """Validate conv2d arguments. w_shape is HWIO (KH, KW, C_in // groups, C_out)."""
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise ValueError(f"{op}: unknown algorithm {algorithm!r}; expected one of {', '.join(map(repr, ALGORITHMS))}")
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C_in)")
    _check_shape(op, "w", w_shape, 4, "(KH, KW, C_in // groups, C_out)")
    n, h, w, c_in = (int(d) for d in x_shape)
    kh, kw, c_per_group, c_out = (int(d) for d in w_shape)
    if not _is_int(groups):
        raise TypeError(f"{op}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{op}: groups must be >= 1, got {groups}")
    if c_in % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the input channels C_in={c_in} of x")
    if c_out % groups:
        raise ValueError(f"{op}: groups={groups} does not divide the output channels C_out={c_out} of w")
    if c_per_group != c_in // groups:
        raise ValueError(
            f"{op}: w must have shape (KH, KW, C_in // groups, C_out) = ({kh}, {kw}, {c_in // groups}, {c_out}) "
            f"for x with C_in={c_in} and groups={groups}, got {tuple(w_shape)}"
        )
    _check_bias(op, b_shape, c_out)
    p = _conv_geometry(op, (n, h, w, c_in), (kh, kw), c_out, groups, stride, padding, dilation, activation, b_shape,
                       algorithm)
    if algorithm == "winograd" and not p.winograd_eligible:
        raise ValueError(
            f"{op}: algorithm='winograd' needs a 3x3 or 5x5 kernel (or one that folds to 3x3 or 5x5 with its "
            f"stride: ceil(KH / stride_h) = ceil(KW / stride_w) = 3 or 5, or 4 with a stride above 1), "
            f"dilation 1 and groups 1, got a "
            f"{kh}x{kw} kernel with stride {(p.stride_h, p.stride_w)}, dilation {(p.dilation_h, p.dilation_w)} "
            f"and groups {groups}; use algorithm='auto' or 'direct'"
        )
    if algorithm == "winograd" and p.folded_kernel[0] in (4, 5) and p.activation in ("sigmoid", "tanh"):
        # The 4x4 and 5x5 transforms round 3x (2x2 tiles) or more worse than the direct sum; sigmoid and tanh
        # squeeze the output's scale while keeping the absolute error near 0, which exceeds the
        # float32 tolerance (measured: 1.1x of it on CPU and GPU). Algorithm is a speed choice, never
        # an accuracy one. (squeezes_rounding in activation.h is the kernels' side of this rule.)
        p = replace(p, algorithm="direct")
    return p


def _conv_geometry(op, x_dims, k_hw, c_out, groups, stride, padding, dilation, activation, b_shape, algorithm="auto"):
    n, h, w, c_in = x_dims
    kh, kw = k_hw
    sh, sw = _positive_pair(op, "stride", stride)
    dh, dw = _positive_pair(op, "dilation", dilation)
    window = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    (pt, pb), (pl, pr) = _resolve_pads(op, padding, (h, w), window, (sh, sw))
    oh = _window_count(h, (pt, pb), window[0], sh, False)
    ow = _window_count(w, (pl, pr), window[1], sw, False)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: the kernel window {window[0]}x{window[1]} (dilation included) is larger than the padded "
            f"input {h + pt + pb}x{w + pl + pr}: the output would be empty"
        )
    _check_shape(op, "output", (n, oh, ow, c_out), 4, "(N, OH, OW, C_out)")
    return Conv2dProblem(
        op, n, h, w, c_in, kh, kw, c_out, groups, sh, sw, dh, dw, pt, pb, pl, pr, oh, ow,
        _check_activation(op, activation), b_shape is not None, algorithm,
    )


@_memoized("stride", "padding", "dilation")
def depthwise_problem(op, x_shape, w_shape, b_shape, stride, padding, dilation, activation) -> Conv2dProblem:
    """w (KH, KW, C) or (KH, KW, C, M): output channel c * M + m, i.e. conv2d with groups = C."""
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    if len(w_shape) not in (3, 4):
        raise ValueError(f"{op}: w must be 3-D (KH, KW, C) or 4-D (KH, KW, C, M), got shape {tuple(w_shape)}")
    _check_shape(op, "w", w_shape, len(w_shape), "(KH, KW, C[, M])")
    n, h, w, c = (int(d) for d in x_shape)
    kh, kw, c_w = (int(d) for d in w_shape[:3])
    mult = int(w_shape[3]) if len(w_shape) == 4 else 1
    if c_w != c:
        raise ValueError(f"{op}: w must have C={c} channels to match x, got shape {tuple(w_shape)}")
    _check_bias(op, b_shape, c * mult)
    return _conv_geometry(op, (n, h, w, c), (kh, kw), c * mult, c, stride, padding, dilation, activation, b_shape)


@_memoized()
def pointwise_problem(op, x_shape, w_shape, b_shape, activation) -> Conv2dProblem:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C_in)")
    _check_shape(op, "w", w_shape, 2, "(C_in, C_out)")
    c_in, c_out = int(w_shape[0]), int(w_shape[1])
    if c_in != x_shape[3]:
        raise ValueError(f"{op}: w must have shape (C_in, C_out) with C_in={x_shape[3]} as in x, got {tuple(w_shape)}")
    _check_bias(op, b_shape, c_out)
    return _conv_geometry(op, tuple(int(d) for d in x_shape), (1, 1), c_out, 1, 1, 0, 1, activation, b_shape)


@_memoized()
def dense_problem(op, x_shape, w_shape, b_shape, activation) -> DenseProblem:
    _check_shape(op, "x", x_shape, 2, "(N, in_features)")
    _check_shape(op, "w", w_shape, 2, "(in_features, out_features)")
    if w_shape[0] != x_shape[1]:
        raise ValueError(
            f"{op}: w must have shape (in_features, out_features) with in_features={x_shape[1]} as in x, "
            f"got {tuple(w_shape)}"
        )
    _check_bias(op, b_shape, int(w_shape[1]))
    return DenseProblem(
        op, int(x_shape[0]), int(x_shape[1]), int(w_shape[1]), _check_activation(op, activation), b_shape is not None
    )


def pack_weights_problem(op, w_shape) -> None:
    if len(w_shape) == 4:
        _check_shape(op, "w", w_shape, 4, "(KH, KW, C_in // groups, C_out)")
    else:
        _check_shape(op, "w", w_shape, 2, "(in_features, out_features), or 4-D (KH, KW, C_in // groups, C_out)")


@_memoized("size", "stride", "padding")
def pool2d_problem(op, x_shape, size, stride, padding, ceil_mode, count_include_pad=False) -> Pool2dProblem:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    n, h, w, c = (int(d) for d in x_shape)
    kh, kw = _positive_pair(op, "size", size)
    sh, sw = (kh, kw) if stride is None else _positive_pair(op, "stride", stride)
    for name, flag in (("ceil_mode", ceil_mode), ("count_include_pad", count_include_pad)):
        if not isinstance(flag, (bool, numbers.Integral)):
            raise TypeError(f"{op}: {name} must be a bool, got {flag!r}")
    (pt, pb), (pl, pr) = _resolve_pads(op, padding, (h, w), (kh, kw), (sh, sw))
    # A window lying wholly in the padding would have nothing to reduce.
    if max(pt, pb) >= kh or max(pl, pr) >= kw:
        raise ValueError(
            f"{op}: padding {((pt, pb), (pl, pr))} must be smaller than the window {kh}x{kw} on every side"
        )
    oh = _window_count(h, (pt, pb), kh, sh, bool(ceil_mode))
    ow = _window_count(w, (pl, pr), kw, sw, bool(ceil_mode))
    if oh < 1 or ow < 1:
        raise ValueError(
            f"{op}: the window {kh}x{kw} is larger than the padded input {h + pt + pb}x{w + pl + pr}: "
            "the output would be empty"
        )
    return Pool2dProblem(op, n, h, w, c, kh, kw, sh, sw, pt, pb, pl, pr, oh, ow, bool(count_include_pad))


@_memoized()
def global_pool_problem(op, x_shape) -> GlobalPoolProblem:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    n, h, w, c = (int(d) for d in x_shape)
    return GlobalPoolProblem(op, n, h, w, c)


# --------------------------------------------------------------------------------------------
# Layers for whole networks (batch norm, residual add, concat, softmax, adaptive pooling, LRN,
# channel scaling, flatten, standalone activation). These are memory-bound elementwise ops that
# run with the input's array module; only their arguments are checked here.


def _check_nd(op: str, name: str, shape, min_ndim: int, layout: str) -> None:
    if len(shape) < min_ndim:
        raise ValueError(f"{op}: {name} must be at least {min_ndim}-D {layout}, got shape {tuple(shape)}")
    _check_shape(op, name, shape, len(shape), layout)


def activate_problem(op, x_shape, activation) -> ElementwiseProblem:
    _check_nd(op, "x", x_shape, 1, "array")
    if activation is None:
        raise ValueError(f"{op}: activation must be one of {', '.join(ACTIVATIONS)}, got None")
    return ElementwiseProblem(op, tuple(int(d) for d in x_shape), _check_activation(op, activation))


def batch_norm_problem(op, x_shape, shapes: dict, eps, activation) -> ChannelAffineProblem:
    """x (..., C); each of mean, var, gamma, beta (C,) (gamma / beta may be None)."""
    _check_nd(op, "x", x_shape, 2, "(N, ..., C)")
    c = int(x_shape[-1])
    for name, shape in shapes.items():
        if shape is not None and tuple(shape) != (c,):
            raise ValueError(f"{op}: {name} must have shape ({c},) (one per channel of x), got {tuple(shape)}")
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
        raise TypeError(f"{op}: eps must be a number, got {eps!r}")
    if not eps >= 0:
        raise ValueError(f"{op}: eps must be >= 0, got {eps!r}")
    return ChannelAffineProblem(op, tuple(int(d) for d in x_shape), _check_activation(op, activation))


def add_problem(op, a_shape, b_shape, activation) -> ElementwiseProblem:
    _check_nd(op, "a", a_shape, 1, "array")
    if tuple(a_shape) != tuple(b_shape):
        raise ValueError(f"{op}: a and b must have the same shape, got {tuple(a_shape)} and {tuple(b_shape)}")
    return ElementwiseProblem(op, tuple(int(d) for d in a_shape), _check_activation(op, activation))


def concat_problem(op, shapes) -> tuple[int, ...]:
    """xs: a non-empty sequence of (N, H, W, C_i) sharing N, H, W -> (N, H, W, sum C_i)."""
    if len(shapes) == 0:
        raise ValueError(f"{op}: xs must be a non-empty sequence of arrays")
    for i, shape in enumerate(shapes):
        _check_nd(op, f"xs[{i}]", shape, 2, "(N, ..., C)")
        if tuple(shape[:-1]) != tuple(shapes[0][:-1]):
            raise ValueError(
                f"{op}: xs[{i}] has shape {tuple(shape)}; all arrays must match xs[0] {tuple(shapes[0])} "
                "in every axis but the last (channels)"
            )
    return tuple(int(d) for d in shapes[0][:-1]) + (sum(int(s[-1]) for s in shapes),)


def softmax_problem(op, x_shape, axis) -> int:
    _check_nd(op, "x", x_shape, 1, "array")
    if not _is_int(axis):
        raise TypeError(f"{op}: axis must be an int, got {axis!r}")
    if not -len(x_shape) <= axis < len(x_shape):
        raise ValueError(f"{op}: axis {axis} is out of range for x with {len(x_shape)} dimensions")
    return int(axis) % len(x_shape)


def adaptive_pool_problem(op, x_shape, output_size) -> tuple[int, int, int, int]:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    oh, ow = _positive_pair(op, "output_size", output_size)
    n, h, w, c = (int(d) for d in x_shape)
    return (n, oh, ow, c)


def adaptive_bounds(n: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows along one axis: [floor(i n / out), ceil((i + 1) n / out))."""
    return [((i * n) // out, -(-((i + 1) * n) // out)) for i in range(out)]


def lrn_problem(op, x_shape, size, alpha, beta, k) -> None:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    if not _is_int(size):
        raise TypeError(f"{op}: size must be an int, got {size!r}")
    if size < 1:
        raise ValueError(f"{op}: size must be >= 1, got {size}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{op}: {name} must be a number, got {value!r}")
    if not k > 0:
        raise ValueError(f"{op}: k must be > 0 (it keeps the denominator positive), got {k!r}")


def scale_channels_problem(op, x_shape, s_shape) -> ScaleChannelsProblem:
    _check_shape(op, "x", x_shape, 4, "(N, H, W, C)")
    _check_shape(op, "s", s_shape, 2, "(N, C)")
    if tuple(s_shape) != (x_shape[0], x_shape[3]):
        raise ValueError(
            f"{op}: s must have shape (N, C) = ({x_shape[0]}, {x_shape[3]}) to match x {tuple(x_shape)}, "
            f"got {tuple(s_shape)}"
        )
    return ScaleChannelsProblem(op, tuple(int(d) for d in x_shape))


def flatten_problem(op, x_shape) -> tuple[int, int]:
    _check_nd(op, "x", x_shape, 2, "(N, ...)")
    total = 1
    for d in x_shape[1:]:
        total *= int(d)
    return (int(x_shape[0]), total)
