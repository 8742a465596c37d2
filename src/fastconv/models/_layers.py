"""Layer objects for fastconv.models: each holds its weights (float32 NumPy, NHWC / HWIO) and calls
public ops only, through an ops namespace `F` that is either `fastconv` or `fastconv.reference`.

Leaves (Conv2d, Dense, BatchNorm, pools, ...) compute; blocks (Sequential, Residual, Branches,
SqueezeExcite) only route their inputs through `ctx.call(child, *inputs)`, so one graph serves
running, shape inference (summary, macs) and the layer-by-layer check.
"""

from __future__ import annotations

import math

import numpy as np

from .. import _params


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


class Layer:
    """A leaf: weights in `params` (name -> float32 array), `compute`, `infer` (output shape), `macs`."""

    children: tuple = ()
    statistics: tuple = ()  # params that are statistics, not trained (batch norm's running mean / var)

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, np.ndarray] = {}
        self._on_device: dict = {}

    @property
    def kind(self) -> str:
        return type(self).__name__

    def num_parameters(self, statistics: bool = False) -> int:
        return sum(int(v.size) for k, v in self.params.items() if statistics or k not in self.statistics)

    def set_params(self, **arrays) -> None:
        """Copies the arrays in (float32): the layer owns its weights, and what the devices keep of
        them (device_params) lasts until the next set_params."""
        for key, value in arrays.items():
            value = np.array(value, dtype=np.float32, order="C")
            if key in self.params and value.shape != self.params[key].shape:
                raise ValueError(f"{self.name}.{key}: expected shape {self.params[key].shape}, got {value.shape}")
            self.params[key] = value
        self._on_device.clear()

    def device_params(self, device: str) -> dict:
        """The weights as the run on `device` reads them ("host": the arrays as they are, for the
        reference; "cpu": fastconv's CPU kernels; "cuda"), prepared once and kept, not on every call."""
        if device in ("host", "cpu"):
            return self.params
        if device not in self._on_device:
            import cupy

            self._on_device[device] = {k: cupy.asarray(v) for k, v in self.params.items()}
        return self._on_device[device]

    def init(self, rng) -> None:
        pass

    def macs(self, out_shape, *in_shapes) -> int:
        return 0

    def terms(self, *in_shapes) -> int:
        """Products summed per output element: sets the tolerance of the layer-by-layer check."""
        return 1

    # PyTorch-style state dict: this layer's entries under its name
    def to_torch(self) -> dict:
        return {}

    def from_torch(self, get) -> None:
        pass

    def describe(self) -> str:
        return ""


# ------------------------------------------------------------------------------------------------
# Weighted leaves


class Conv2d(Layer):
    def __init__(self, name, c_in, c_out, kernel, stride=1, padding=0, dilation=1, groups=1, bias=True,
                 activation=None):
        super().__init__(name)
        self.kernel, self.stride, self.padding = _pair(kernel), stride, padding
        self.dilation, self.groups, self.activation = dilation, groups, activation
        self.c_in, self.c_out = c_in, c_out
        kh, kw = self.kernel
        self.params["weight"] = np.zeros((kh, kw, c_in // groups, c_out), np.float32)
        if bias:
            self.params["bias"] = np.zeros(c_out, np.float32)

    def _pointwise(self):
        return self.kernel == (1, 1) and self.stride in (1, (1, 1)) and self.padding in (0, "valid", "same") \
            and self.groups == 1

    def device_params(self, device):
        """On the CPU, the weights of a spatial convolution as a PackedWeights over the layer's own
        array: the kernels' packed forms (the direct kernel's blocks, Winograd's transformed weights)
        are made by the first call and kept (ResNet-50 at batch 1: 0.91-0.94 of the time, for 86 MB
        of forms beside its 90 MB of weights). Pointwise layers read their weights in place."""
        if device != "cpu" or self._pointwise():
            return super().device_params(device)
        if device not in self._on_device:
            from ..ops import PackedWeights

            self._on_device[device] = dict(self.params, weight=PackedWeights(self.params["weight"]))
        return self._on_device[device]

    def compute(self, F, P, x):
        w, b = P["weight"], P.get("bias")
        if self._pointwise():
            return F.pointwise_conv2d(x, w.reshape(self.c_in, self.c_out), b, activation=self.activation)
        return F.conv2d(x, w, b, stride=self.stride, padding=self.padding, dilation=self.dilation,
                        groups=self.groups, activation=self.activation)

    def problem(self, x_shape):
        b = self.params.get("bias")
        return _params.conv2d_problem("conv2d", x_shape, self.params["weight"].shape, None if b is None else b.shape,
                                      self.stride, self.padding, self.dilation, self.groups, self.activation)

    def infer(self, x_shape):
        return self.problem(x_shape).out_shape

    def macs(self, out_shape, x_shape):
        return self.problem(x_shape).macs

    def terms(self, x_shape):
        kh, kw = self.kernel
        return kh * kw * (self.c_in // self.groups)

    def init(self, rng):
        fan_in = self.terms(None)
        self.set_params(weight=rng.standard_normal(self.params["weight"].shape) * math.sqrt(2.0 / fan_in))
        if "bias" in self.params:
            self.set_params(bias=rng.standard_normal(self.c_out) * 0.05)

    def to_torch(self):
        out = {f"{self.name}.weight": self.params["weight"].transpose(3, 2, 0, 1).copy()}  # HWIO -> OIHW
        if "bias" in self.params:
            out[f"{self.name}.bias"] = self.params["bias"].copy()
        return out

    def from_torch(self, get):
        self.set_params(weight=get(f"{self.name}.weight").transpose(2, 3, 1, 0))  # OIHW -> HWIO
        if "bias" in self.params:
            self.set_params(bias=get(f"{self.name}.bias"))

    def describe(self):
        kh, kw = self.kernel
        s = f"{kh}x{kw}/{self.stride}" + (f" g{self.groups}" if self.groups > 1 else "")
        return s + (f" {self.activation}" if self.activation else "")


class DepthwiseConv2d(Layer):
    """Weights (KH, KW, C) (channel multiplier 1) or (KH, KW, C, M)."""

    def __init__(self, name, channels, kernel, stride=1, padding=0, multiplier=1, bias=False, activation=None):
        super().__init__(name)
        self.kernel, self.stride, self.padding = _pair(kernel), stride, padding
        self.channels, self.multiplier, self.activation = channels, multiplier, activation
        kh, kw = self.kernel
        self.params["weight"] = np.zeros((kh, kw, channels) + ((multiplier,) if multiplier > 1 else ()), np.float32)
        if bias:
            self.params["bias"] = np.zeros(channels * multiplier, np.float32)

    def compute(self, F, P, x):
        return F.depthwise_conv2d(x, P["weight"], P.get("bias"), stride=self.stride, padding=self.padding,
                                  activation=self.activation)

    def problem(self, x_shape):
        b = self.params.get("bias")
        return _params.depthwise_problem("depthwise_conv2d", x_shape, self.params["weight"].shape,
                                         None if b is None else b.shape, self.stride, self.padding, 1, self.activation)

    def infer(self, x_shape):
        return self.problem(x_shape).out_shape

    def macs(self, out_shape, x_shape):
        return self.problem(x_shape).macs

    def terms(self, x_shape):
        return self.kernel[0] * self.kernel[1]

    def init(self, rng):
        w = self.params["weight"]
        self.set_params(weight=rng.standard_normal(w.shape) * math.sqrt(2.0 / self.terms(None)))
        if "bias" in self.params:
            self.set_params(bias=rng.standard_normal(self.params["bias"].shape) * 0.05)

    def to_torch(self):
        kh, kw = self.kernel
        w = self.params["weight"].reshape(kh, kw, -1)  # (KH, KW, C * M), channel c * M + m
        out = {f"{self.name}.weight": w.transpose(2, 0, 1)[:, None].copy()}  # (C * M, 1, KH, KW)
        if "bias" in self.params:
            out[f"{self.name}.bias"] = self.params["bias"].copy()
        return out

    def from_torch(self, get):
        w = get(f"{self.name}.weight")[:, 0].transpose(1, 2, 0)  # (KH, KW, C * M)
        self.set_params(weight=w.reshape(self.params["weight"].shape))
        if "bias" in self.params:
            self.set_params(bias=get(f"{self.name}.bias"))

    def describe(self):
        kh, kw = self.kernel
        return f"dw {kh}x{kw}/{self.stride}" + (f" {self.activation}" if self.activation else "")


class Dense(Layer):
    """x (N, in) @ w (in, out) + b. torch_chw=(C, H, W): the input is an NHWC-flattened (H, W, C)
    feature map that PyTorch flattens as (C, H, W); the state-dict conversion reorders the rows.
    torch_conv=True: PyTorch stores this as a 1x1 Conv2d (out, in, 1, 1), as squeeze-and-excitation does."""

    def __init__(self, name, n_in, n_out, bias=True, activation=None, torch_chw=None, torch_conv=False):
        super().__init__(name)
        self.n_in, self.n_out, self.activation = n_in, n_out, activation
        self.torch_chw, self.torch_conv = torch_chw, torch_conv
        self.params["weight"] = np.zeros((n_in, n_out), np.float32)
        if bias:
            self.params["bias"] = np.zeros(n_out, np.float32)

    def compute(self, F, P, x):
        return F.dense(x, P["weight"], P.get("bias"), activation=self.activation)

    def problem(self, x_shape):
        b = self.params.get("bias")
        return _params.dense_problem("dense", x_shape, self.params["weight"].shape, None if b is None else b.shape,
                                     self.activation)

    def infer(self, x_shape):
        return self.problem(x_shape).out_shape

    def macs(self, out_shape, x_shape):
        return self.problem(x_shape).macs

    def terms(self, x_shape):
        return self.n_in

    def init(self, rng):
        self.set_params(weight=rng.standard_normal((self.n_in, self.n_out)) * math.sqrt(2.0 / self.n_in))
        if "bias" in self.params:
            self.set_params(bias=rng.standard_normal(self.n_out) * 0.05)

    def to_torch(self):
        w = self.params["weight"]
        if self.torch_chw is not None:
            c, h, wd = self.torch_chw
            w = w.reshape(h, wd, c, self.n_out).transpose(3, 2, 0, 1).reshape(self.n_out, -1)
        else:
            w = w.T
        w = w.reshape(self.n_out, self.n_in, 1, 1) if self.torch_conv else w
        out = {f"{self.name}.weight": np.ascontiguousarray(w)}
        if "bias" in self.params:
            out[f"{self.name}.bias"] = self.params["bias"].copy()
        return out

    def from_torch(self, get):
        w = get(f"{self.name}.weight").reshape(self.n_out, -1)
        if self.torch_chw is not None:
            c, h, wd = self.torch_chw
            w = w.reshape(self.n_out, c, h, wd).transpose(2, 3, 1, 0).reshape(self.n_in, self.n_out)
        else:
            w = w.T
        self.set_params(weight=w)
        if "bias" in self.params:
            self.set_params(bias=get(f"{self.name}.bias"))

    def describe(self):
        return self.activation or ""


class BatchNorm(Layer):
    """Inference batch norm; params weight (gamma), bias (beta), running_mean, running_var."""

    statistics = ("running_mean", "running_var")

    def __init__(self, name, channels, eps=1e-5, activation=None):
        super().__init__(name)
        self.channels, self.eps, self.activation = channels, eps, activation
        for key, fill in (("weight", 1), ("bias", 0), ("running_mean", 0), ("running_var", 1)):
            self.params[key] = np.full(channels, fill, np.float32)

    def compute(self, F, P, x):
        return F.batch_norm(x, P["running_mean"], P["running_var"], P["weight"], P["bias"], eps=self.eps,
                            activation=self.activation)

    def infer(self, x_shape):
        _params.batch_norm_problem("batch_norm", x_shape, {"mean": (self.channels,)}, self.eps, self.activation)
        return tuple(x_shape)

    def terms(self, x_shape):
        return 4

    def init(self, rng):
        # Non-trivial statistics, so that folding and the check exercise every term.
        c = self.channels
        self.set_params(weight=rng.uniform(0.8, 1.2, c), bias=rng.standard_normal(c) * 0.1,
                        running_mean=rng.standard_normal(c) * 0.1, running_var=rng.uniform(0.8, 1.2, c))

    def to_torch(self):
        out = {f"{self.name}.{k}": v.copy() for k, v in self.params.items()}
        out[f"{self.name}.num_batches_tracked"] = np.array(0, dtype=np.int64)
        return out

    def from_torch(self, get):
        self.set_params(**{k: get(f"{self.name}.{k}") for k in self.params})

    def scale_shift(self):
        """y = x * scale + shift, in float64."""
        p = {k: v.astype(np.float64) for k, v in self.params.items()}
        scale = p["weight"] / np.sqrt(p["running_var"] + self.eps)
        return scale, p["bias"] - p["running_mean"] * scale

    def describe(self):
        return f"eps={self.eps:g}" + (f" {self.activation}" if self.activation else "")


# ------------------------------------------------------------------------------------------------
# Weightless leaves


class MaxPool2d(Layer):
    def __init__(self, name, size, stride=None, padding=0, ceil_mode=False):
        super().__init__(name)
        self.size, self.stride, self.padding, self.ceil_mode = size, stride, padding, ceil_mode

    def compute(self, F, P, x):
        return F.max_pool2d(x, self.size, self.stride, self.padding, self.ceil_mode)

    def infer(self, x_shape):
        return _params.pool2d_problem("max_pool2d", x_shape, self.size, self.stride, self.padding,
                                      self.ceil_mode).out_shape

    def describe(self):
        return f"{self.size}/{self.stride or self.size}" + (" ceil" if self.ceil_mode else "")


class AvgPool2d(MaxPool2d):
    def __init__(self, name, size, stride=None, padding=0, ceil_mode=False, count_include_pad=False):
        super().__init__(name, size, stride, padding, ceil_mode)
        self.count_include_pad = count_include_pad

    def compute(self, F, P, x):
        return F.avg_pool2d(x, self.size, self.stride, self.padding, self.count_include_pad, self.ceil_mode)

    def terms(self, x_shape):
        kh, kw = _pair(self.size)
        return kh * kw


class GlobalAvgPool2d(Layer):
    def compute(self, F, P, x):
        return F.global_avg_pool2d(x)

    def infer(self, x_shape):
        return _params.global_pool_problem("global_avg_pool2d", x_shape).out_shape

    def terms(self, x_shape):
        return x_shape[1] * x_shape[2]


class AdaptiveAvgPool2d(Layer):
    def __init__(self, name, output_size):
        super().__init__(name)
        self.output_size = output_size

    def compute(self, F, P, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def infer(self, x_shape):
        return _params.adaptive_pool_problem("adaptive_avg_pool2d", x_shape, self.output_size)

    def terms(self, x_shape):
        oh, ow = _pair(self.output_size)
        return (-(-x_shape[1] // oh) + 1) * (-(-x_shape[2] // ow) + 1)

    def describe(self):
        return f"to {_pair(self.output_size)}"


class Flatten(Layer):
    def compute(self, F, P, x):
        return F.flatten(x)

    def infer(self, x_shape):
        return _params.flatten_problem("flatten", x_shape)


class Softmax(Layer):
    def compute(self, F, P, x):
        return F.softmax(x, axis=-1)

    def infer(self, x_shape):
        _params.softmax_problem("softmax", x_shape, -1)
        return tuple(x_shape)

    def terms(self, x_shape):
        return 4 * x_shape[-1]


class LocalResponseNorm(Layer):
    def __init__(self, name, size=5, alpha=1e-4, beta=0.75, k=2.0):
        super().__init__(name)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def compute(self, F, P, x):
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def infer(self, x_shape):
        _params.lrn_problem("local_response_norm", x_shape, self.size, self.alpha, self.beta, self.k)
        return tuple(x_shape)

    def terms(self, x_shape):
        return self.size + 4

    def describe(self):
        return f"size={self.size} alpha={self.alpha:g} beta={self.beta:g} k={self.k:g}"


class Activation(Layer):
    def __init__(self, name, activation):
        super().__init__(name)
        self.activation = activation

    def compute(self, F, P, x):
        return F.activate(x, self.activation)

    def infer(self, x_shape):
        _params.activate_problem("activate", x_shape, self.activation)
        return tuple(x_shape)

    def terms(self, x_shape):
        return 4

    def describe(self):
        return self.activation


class Add(Layer):
    def __init__(self, name, activation=None):
        super().__init__(name)
        self.activation = activation

    def compute(self, F, P, a, b):
        return F.add(a, b, activation=self.activation)

    def infer(self, a_shape, b_shape):
        _params.add_problem("add", a_shape, b_shape, self.activation)
        return tuple(a_shape)

    def terms(self, *shapes):
        return 2

    def describe(self):
        return self.activation or ""


class Concat(Layer):
    def compute(self, F, P, *xs):
        return F.concat(xs)

    def infer(self, *shapes):
        return _params.concat_problem("concat", shapes)


class ScaleChannels(Layer):
    def compute(self, F, P, x, s):
        return F.scale_channels(x, s)

    def infer(self, x_shape, s_shape):
        _params.scale_channels_problem("scale_channels", x_shape, s_shape)
        return tuple(x_shape)


# ------------------------------------------------------------------------------------------------
# Blocks: route inputs through children with ctx.call


class Block:
    statistics: tuple = ()

    def __init__(self, name, children):
        self.name = name
        self.children = list(children)

    @property
    def kind(self):
        return type(self).__name__


class Sequential(Block):
    def forward(self, ctx, x):
        for layer in self.children:
            x = ctx.call(layer, x)
        return x


class Residual(Block):
    """add(body(x), shortcut(x) or x), with the add's activation (ReLU in ResNet, none in MobileNet V2)."""

    def __init__(self, name, body, shortcut=None, activation=None):
        self.body, self.shortcut = body, shortcut
        self.add = Add(f"{name}.add", activation)
        super().__init__(name, [body] + ([shortcut] if shortcut is not None else []) + [self.add])

    def forward(self, ctx, x):
        y = ctx.call(self.body, x)
        s = x if self.shortcut is None else ctx.call(self.shortcut, x)
        return ctx.call(self.add, y, s)


class Branches(Block):
    """Inception: the same input through each branch, outputs concatenated along channels."""

    def __init__(self, name, branches):
        self.branches = list(branches)
        self.concat = Concat(f"{name}.concat")
        super().__init__(name, self.branches + [self.concat])

    def forward(self, ctx, x):
        return ctx.call(self.concat, *[ctx.call(b, x) for b in self.branches])


class SqueezeExcite(Block):
    """Squeeze-and-excitation: x * sigmoid(fc2(act(fc1(mean over H, W of x)))), per channel.
    fc1 / fc2 are Dense layers stored by PyTorch as 1x1 convolutions named fc1 / fc2."""

    def __init__(self, name, channels, squeeze, activation="silu"):
        self.pool = GlobalAvgPool2d(f"{name}.avgpool")
        self.fc1 = Dense(f"{name}.fc1", channels, squeeze, activation=activation, torch_conv=True)
        self.fc2 = Dense(f"{name}.fc2", squeeze, channels, activation="sigmoid", torch_conv=True)
        self.scale = ScaleChannels(f"{name}.scale")
        super().__init__(name, [self.pool, self.fc1, self.fc2, self.scale])

    def forward(self, ctx, x):
        s = ctx.call(self.fc2, ctx.call(self.fc1, ctx.call(self.pool, x)))
        return ctx.call(self.scale, x, s)


def conv_bn(name, c_in, c_out, kernel, stride=1, padding=None, groups=1, eps=1e-5, activation=None,
            conv_name="0", bn_name="1"):
    """torchvision's Conv2dNormActivation: conv (no bias) + batch norm (+ activation), named name.0 / name.1.
    groups == c_in == c_out makes the convolution depthwise."""
    k = kernel
    padding = (k - 1) // 2 if padding is None else padding
    if groups > 1 and groups == c_in == c_out:
        conv = DepthwiseConv2d(f"{name}.{conv_name}", c_in, k, stride, padding)
    else:
        conv = Conv2d(f"{name}.{conv_name}", c_in, c_out, k, stride, padding, groups=groups, bias=False)
    return Sequential(name, [conv, BatchNorm(f"{name}.{bn_name}", c_out, eps, activation)])


def fold_batch_norm(block):
    """A copy-free pass over a graph: every Conv2d / DepthwiseConv2d directly followed by a BatchNorm
    in a Sequential becomes one convolution with scaled weights, a shifted bias and the BN's activation."""
    for child in getattr(block, "children", ()):
        fold_batch_norm(child)
    if not isinstance(block, Sequential):
        return block
    out = []
    for layer in block.children:
        prev = out[-1] if out else None
        if isinstance(layer, BatchNorm) and isinstance(prev, (Conv2d, DepthwiseConv2d)) and prev.activation is None:
            scale, shift = layer.scale_shift()
            w = prev.params["weight"].astype(np.float64)
            if isinstance(prev, DepthwiseConv2d):
                w = (w.reshape(w.shape[0], w.shape[1], -1) * scale).reshape(w.shape)
            else:
                w = w * scale  # HWIO: the last axis is the output channel
            b = prev.params["bias"].astype(np.float64) if "bias" in prev.params else 0.0
            prev.params["bias"] = np.zeros(len(scale), np.float32)
            prev.set_params(weight=w, bias=b * scale + shift)
            prev.activation = layer.activation
            prev.folded_from = layer.name
            continue
        out.append(layer)
    block.children = out
    return block
