"""One small adapter per library the bench runs: fastconv itself and its peers.

An adapter lives inside its own worker process (worker.py) and answers four questions:
  missing()            None when the library imports, else a one-line hint on how to add it
  setup(threads)       pin the library's thread pool once (every CPU library gets the same count)
  supports(case)       whether the library has this op at all (else the table shows '-')
  prepare(case, arrays) -> (run, fetch)
                       `run()` is the timed region: the op on data already in the library's own
                       format and memory (layout conversions are not timed); `fetch(result)` turns
                       what `run` returned into an NHWC float NumPy array for the correctness check.

Peer names (`--peers`): numpy (im2col + matmul baseline), numpy_ref (the float64 oracle; slow,
opt-in), torch_nchw, torch_nhwc (channels_last), ort_nchw (onnxruntime, one-node model);
on the GPU: cudnn (PyTorch, channels_last, TF32 off) and cupy (only where CuPy has the op).
`fastconv@ISA` (e.g. fastconv@avx2) is fastconv itself with FASTCONV_ISA=ISA in its worker: one ISA
path against another, side by side. `module:attribute` loads an adapter class from elsewhere
(experiments, tests).

Whole models (`--models`): an adapter with `supports_models` also answers
  prepare_model(case, model, x) -> (run, fetch)
                       `run()` is one forward pass of the (batch-norm folded) fastconv model `model`
                       on the NHWC batch `x`, in the library's own format. PyTorch runs the graph
                       that `torch_forward` translates from the model's layers, with the same weights.
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np

from .suites import CONV_OPS, POOL_OPS, Case

CPU_PEERS = ("numpy", "torch_nchw", "torch_nhwc", "ort_nchw")
GPU_PEERS = ("cudnn", "cupy")
OPT_IN_PEERS = ("numpy_ref",)


def bind_op(module, case: Case, arrays: dict):
    """A no-argument call of `module.<op>` (fastconv or fastconv.reference: same signatures) on the
    case's arrays, with the function, arrays and keywords looked up once, as the other peers' calls."""
    fn, x, kwargs = getattr(module, case.op), arrays["x"], case.kwargs()
    if case.op in CONV_OPS:
        w, b = arrays["w"], arrays.get("b")
        return lambda: fn(x, w, b, **kwargs)
    return lambda: fn(x, **kwargs)


def call_op(module, case: Case, arrays: dict):
    """One call of bind_op's function (the runner's reference check)."""
    return bind_op(module, case, arrays)()


def _missing_module(module: str, hint: str) -> str | None:
    return None if importlib.util.find_spec(module) is not None else hint


class Adapter:
    """Base: a CPU library that takes NumPy arrays and returns NHWC NumPy arrays."""

    name = "?"
    device = "cpu"
    label = None  # column header; defaults to name

    def missing(self) -> str | None:
        return None

    def version(self) -> str:
        return ""

    def setup(self, threads: int) -> None:
        pass

    def supports(self, case: Case) -> bool:
        return True

    def prepare(self, case: Case, arrays: dict):
        raise NotImplementedError

    supports_models = False

    def prepare_model(self, case, model, x):
        raise NotImplementedError

    def check_model(self, case, model) -> dict:
        """Checks of the model itself before its first timing (fastconv: Model.check); raise on failure."""
        return {}

    def synchronize(self) -> None:
        """Wait for queued device work (GPU adapters)."""


# --------------------------------------------------------------------------------------------
# CPU


class Fastconv(Adapter):
    name = "fastconv"

    def version(self):
        import fastconv

        return f"{fastconv.__version__} ({fastconv._cpu.active_isa()})"

    def setup(self, threads):
        import fastconv

        fastconv.set_num_threads(threads)

    def prepare(self, case, arrays):
        import fastconv

        # A layer's weights packed once, outside the timed calls, as a network holds them (and as
        # onnxruntime packs its constant weights once per session).
        if case.op in ("dense", "pointwise_conv2d", "conv2d"):
            arrays = dict(arrays, w=fastconv.pack_weights(arrays["w"]))
        return bind_op(fastconv, case, arrays), np.asarray

    supports_models = True

    def prepare_model(self, case, model, x):
        return (lambda: model(x)), np.asarray

    def check_model(self, case, model):
        """Model.check (layer by layer against fastconv.reference) on one image at <= 64x64, so that the
        float64 reference stays quick; the timed resolution is then checked against PyTorch."""
        _, h, w, c = case.input_shape(model)
        small = (1, min(h, 64), min(w, 64), c)
        x = np.random.default_rng(0).standard_normal(small).astype(np.float32)
        report = model.check(x)
        return {"check": f"{'x'.join(map(str, small))}: worst layer {report.worst_layer} {report.worst_error:.3g} "
                         f"(tolerance {report.worst_tolerance:.3g}), end to end {report.end_to_end_error:.3g}",
                "check_error": report.end_to_end_error}


class NumpyRef(Adapter):
    """fastconv.reference: float64 NumPy, written for clarity. A floor for 'did we beat NumPy'."""

    name = "numpy_ref"

    def version(self):
        return np.__version__

    def prepare(self, case, arrays):
        from fastconv import reference

        return bind_op(reference, case, arrays), np.asarray


class NumpyIm2col(Adapter):
    """What a NumPy user writes: im2col + one float32 matmul (BLAS), per-tap sums for depthwise."""

    name = "numpy"

    def version(self):
        return np.__version__

    def prepare(self, case, arrays):
        p = case.problem()
        x, w, b = arrays["x"], arrays.get("w"), arrays.get("b")
        if case.op == "dense":
            fn = lambda: _epilogue(x @ w, b, case.activation)  # noqa: E731
        elif case.op == "pointwise_conv2d":
            fn = lambda: _epilogue((x.reshape(-1, p.c_in) @ w).reshape(p.out_shape), b, case.activation)  # noqa: E731
        elif case.op == "conv2d":
            fn = lambda: _epilogue(_im2col_conv(p, x, w), b, case.activation)  # noqa: E731
        elif case.op == "depthwise_conv2d":
            fn = lambda: _epilogue(_tap_depthwise(p, x, w), b, case.activation)  # noqa: E731
        elif case.op in POOL_OPS:
            fn = lambda: _window_pool(p, x)  # noqa: E731
        else:
            fn = lambda: x.mean(axis=(1, 2))  # noqa: E731
        return fn, np.asarray


def _pad(p, x, fill=0.0):
    pads = ((0, 0), (p.pad_top, p.pad_bottom), (p.pad_left, p.pad_right), (0, 0))
    return x if not any(a or b for a, b in pads) else np.pad(x, pads, constant_values=fill)


def _windows(p, xp):
    """(N, OH, OW, C, KH, KW) strided view of the padded input (dilated taps where the problem has them)."""
    dh, dw = getattr(p, "dilation_h", 1), getattr(p, "dilation_w", 1)
    view = np.lib.stride_tricks.sliding_window_view(xp, ((p.kh - 1) * dh + 1, (p.kw - 1) * dw + 1), axis=(1, 2))
    return view[:, :: p.stride_h, :: p.stride_w, :, ::dh, ::dw][:, : p.out_h, : p.out_w]


def _im2col_conv(p, x, w):
    cols = _windows(p, _pad(p, x)).transpose(0, 1, 2, 4, 5, 3)  # (N, OH, OW, KH, KW, C_in)
    # One matmul per group, batched (one group: a single matmul, timed the same as a plain one):
    # (G, pixels, KH * KW * C_in / G) @ (G, KH * KW * C_in / G, C_out / G).
    g, cig, cog = p.groups, p.c_in // p.groups, p.c_out // p.groups
    cols = cols.reshape(-1, p.kh, p.kw, g, cig).transpose(3, 0, 1, 2, 4).reshape(g, -1, p.kh * p.kw * cig)
    wg = w.reshape(p.kh, p.kw, cig, g, cog).transpose(3, 0, 1, 2, 4).reshape(g, -1, cog)
    return (cols @ wg).transpose(1, 0, 2).reshape(p.out_shape)


def _tap_depthwise(p, x, w):
    xp = _pad(p, x)
    acc = np.zeros(p.out_shape, dtype=np.float32)
    for ky in range(p.kh):
        for kx in range(p.kw):
            iy, ix = ky * p.dilation_h, kx * p.dilation_w
            tap = xp[:, iy : iy + (p.out_h - 1) * p.stride_h + 1 : p.stride_h,
                     ix : ix + (p.out_w - 1) * p.stride_w + 1 : p.stride_w]
            acc += tap * w[ky, kx]
    return acc


def _window_pool(p, x):
    if p.op == "max_pool2d":
        return _windows(p, _pad(p, x, -np.inf)).max(axis=(-2, -1))
    total = _windows(p, _pad(p, x)).sum(axis=(-2, -1))
    # Padding counts toward the divisor only with count_include_pad.
    ones = _pad(p, np.ones((1, p.h, p.w, 1), dtype=np.float32), 1.0 if p.count_include_pad else 0.0)
    return total / _windows(p, ones).sum(axis=(-2, -1))


def _epilogue(y, b, activation):
    from fastconv.reference import activate

    if b is not None:
        y += b
    return activate(y, activation)


# ---- PyTorch ---------------------------------------------------------------------------------


class _Torch(Adapter):
    channels_last = False
    device = "cpu"

    def missing(self):
        return _missing_module("torch", "pip install torch (a CPU build is enough)")

    def version(self):
        import torch

        return torch.__version__

    def setup(self, threads):
        import torch

        torch.set_grad_enabled(False)
        if self.device == "cpu":
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(1)
            except RuntimeError:  # already set
                pass

    def _tensor(self, a):
        import torch

        return torch.from_numpy(a)

    def prepare(self, case, arrays):
        fn, out = _torch_op(case, arrays, self._tensor, self.channels_last)
        return fn, lambda y: _torch_to_nhwc(y, out)

    supports_models = True

    def prepare_model(self, case, model, x):
        import torch

        forward = torch_forward(model, self.channels_last, self._tensor)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        xt = self._tensor(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt)
        return (lambda: forward(xt)), lambda y: _torch_to_nhwc(y, "nchw" if y.dim() == 4 else "nc")


class TorchNchw(_Torch):
    name = "torch_nchw"


class TorchNhwc(_Torch):
    name = "torch_nhwc"
    channels_last = True


def _torch_activation(activation):
    import torch
    import torch.nn.functional as F

    return {
        None: lambda y: y,
        "relu": lambda y: F.relu(y, inplace=True),
        "relu6": lambda y: F.relu6(y, inplace=True),
        "sigmoid": torch.sigmoid_,
        "tanh": torch.tanh_,
        "silu": lambda y: F.silu(y, inplace=True),
    }[activation]


def _torch_op(case: Case, arrays: dict, tensor, channels_last: bool):
    """The PyTorch call for a case. `tensor` moves a NumPy array to the library's device."""
    import torch
    import torch.nn.functional as F

    p = case.problem()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = tensor(arrays["x"])
    b = tensor(arrays["b"]) if arrays.get("b") is not None else None
    act = _torch_activation(getattr(p, "activation", None))
    if case.op == "dense":
        wt = tensor(np.ascontiguousarray(arrays["w"].T))
        return (lambda: act(F.linear(x, wt, b))), "nc"
    x = x.permute(0, 3, 1, 2).contiguous(memory_format=fmt)  # NHWC memory is channels_last already
    if case.op == "global_avg_pool2d":
        return (lambda: x.mean(dim=(2, 3))), "nc"
    symmetric = p.pad_top == p.pad_bottom and p.pad_left == p.pad_right
    pad = (p.pad_top, p.pad_left) if symmetric else (0, 0)
    extra = None if symmetric else (p.pad_left, p.pad_right, p.pad_top, p.pad_bottom)
    stride = (p.stride_h, p.stride_w)
    if case.op in POOL_OPS:
        if case.op == "max_pool2d":
            fill = -float("inf")
            op = lambda v: F.max_pool2d(v, (p.kh, p.kw), stride, pad)  # noqa: E731
        else:
            fill = 0.0
            op = lambda v: F.avg_pool2d(v, (p.kh, p.kw), stride, pad, count_include_pad=p.count_include_pad)  # noqa: E731
        if extra and case.op == "avg_pool2d" and not p.count_include_pad:
            # Padding PyTorch cannot place (one side more than the other) is padded first, and then
            # counts: what a PyTorch user divides back out, with the fraction of each window inside
            # the input computed once.
            inside = F.avg_pool2d(F.pad(torch.ones((1, 1, p.h, p.w), dtype=x.dtype, device=x.device), extra),
                                  (p.kh, p.kw), stride)
            return (lambda: op(F.pad(x, extra)).div_(inside)), "nchw"
        if extra:
            return (lambda: op(F.pad(x, extra, value=fill))), "nchw"
        return (lambda: op(x)), "nchw"
    w = arrays["w"]
    if case.op == "depthwise_conv2d":
        w = w.reshape(p.kh, p.kw, p.c_out).transpose(2, 0, 1)[:, None]  # (C, 1, KH, KW)
    elif case.op == "pointwise_conv2d":
        w = w.T[:, :, None, None]
    else:
        w = w.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    wt = tensor(np.ascontiguousarray(w)).contiguous(memory_format=fmt)
    groups, dilation = p.groups, (p.dilation_h, p.dilation_w)

    def run():
        v = F.pad(x, extra) if extra else x
        return act(F.conv2d(v, wt, b, stride=stride, padding=pad, dilation=dilation, groups=groups))

    return run, "nchw"


def _torch_to_nhwc(y, layout):
    y = y.detach()
    if layout == "nchw":
        y = y.permute(0, 2, 3, 1)
    return y.contiguous().cpu().numpy()


# ---- fastconv model -> PyTorch ---------------------------------------------------------------


def torch_forward(model, channels_last: bool = True, tensor=None):
    """A PyTorch function equivalent to a fastconv model: x (N, C, H, W) tensor -> what model(x) returns
    (NCHW where ours is NHWC; (N, classes) for a classifier), with the same weights.

    Each leaf layer becomes torch.nn.functional calls on weights converted once (the layers' own
    PyTorch conversion, Layer.to_torch: HWIO -> OIHW, depthwise -> (C * M, 1, KH, KW), dense ->
    (out, in) with PyTorch's (C, H, W) flattening); the model's blocks (Sequential, Residual,
    Branches, SqueezeExcite) route tensors exactly as they route our arrays. Batch norm is whatever
    the model holds: folded into the convolutions (as fastconv runs it) or BatchNorm in eval mode.
    channels_last: weights and activations in NHWC memory (PyTorch's fast CPU path for convolutions).
    A layer type without a translation raises NotImplementedError naming it.
    """
    import torch

    from fastconv.models import _layers

    tensor = tensor or torch.from_numpy
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    leaves = {id(layer): _torch_leaf(layer, tensor, fmt) for layer in model.layers()}

    class _TorchRun:
        def call(self, layer, *xs):
            if isinstance(layer, _layers.Block):
                return layer.forward(self, *xs)
            return leaves[id(layer)](*xs)

    ctx = _TorchRun()
    return lambda x: ctx.call(model.body, x)


def _nhwc_shape(x) -> tuple:
    n, c, h, w = x.shape
    return (n, h, w, c)


def _per_shape(plan):
    """Memoise plan(nhwc_shape) per input shape: padding etc. are resolved once, not on every call."""
    cache = {}

    def get(x):
        key = tuple(x.shape)
        if key not in cache:
            cache[key] = plan(_nhwc_shape(x))
        return cache[key]

    return get


def _window_args(p):
    """(stride, symmetric padding, F.pad argument or None) of a conv / pool problem."""
    stride = (p.stride_h, p.stride_w)
    if p.pad_top == p.pad_bottom and p.pad_left == p.pad_right:
        return stride, (p.pad_top, p.pad_left), None
    return stride, (0, 0), (p.pad_left, p.pad_right, p.pad_top, p.pad_bottom)


def _torch_leaf(layer, tensor, fmt):
    """One fastconv leaf layer -> a function of torch tensors (NCHW, `fmt` memory)."""
    import torch
    import torch.nn.functional as F

    from fastconv import _params
    from fastconv.models import _layers as L

    sd = {k.rsplit(".", 1)[1]: tensor(np.ascontiguousarray(v)) for k, v in layer.to_torch().items()
          if not k.endswith("num_batches_tracked")}
    act = _torch_activation(getattr(layer, "activation", None))  # in place: on fresh outputs only
    kind = type(layer)
    if kind in (L.Conv2d, L.DepthwiseConv2d):
        w, b = sd["weight"].contiguous(memory_format=fmt), sd.get("bias")
        groups = layer.groups if kind is L.Conv2d else layer.channels

        def conv_plan(s):
            p = layer.problem(s)
            return _window_args(p) + ((p.dilation_h, p.dilation_w),)

        plan = _per_shape(conv_plan)

        def conv(x):
            stride, pad, extra, dilation = plan(x)
            if extra:
                x = F.pad(x, extra)
            return act(F.conv2d(x, w, b, stride, pad, dilation, groups))

        return conv
    if kind is L.Dense:
        w, b = sd["weight"].reshape(layer.n_out, layer.n_in), sd.get("bias")
        return lambda x: act(F.linear(x, w, b))
    if kind is L.BatchNorm:
        mean, var, gamma, beta = sd["running_mean"], sd["running_var"], sd["weight"], sd["bias"]
        return lambda x: act(F.batch_norm(x, mean, var, gamma, beta, False, 0.0, layer.eps))
    if kind in (L.MaxPool2d, L.AvgPool2d):
        is_max = kind is L.MaxPool2d
        op = "max_pool2d" if is_max else "avg_pool2d"
        include = getattr(layer, "count_include_pad", False)

        def pool_plan(s):
            p = _params.pool2d_problem(op, s, layer.size, layer.stride, layer.padding, layer.ceil_mode, include)
            stride, pad, extra = _window_args(p)
            if extra and not (is_max or include):
                raise NotImplementedError(f"{layer.name}: asymmetric padding in avg_pool2d without count_include_pad")
            return (p.kh, p.kw), stride, pad, extra, (p.out_h, p.out_w)

        plan = _per_shape(pool_plan)

        def pool(x):
            size, stride, pad, extra, out_hw = plan(x)
            if extra:
                x = F.pad(x, extra, value=-float("inf") if is_max else 0.0)
            if is_max:
                y = F.max_pool2d(x, size, stride, pad, ceil_mode=layer.ceil_mode)
            else:
                y = F.avg_pool2d(x, size, stride, pad, ceil_mode=layer.ceil_mode, count_include_pad=include)
            if tuple(y.shape[2:]) != out_hw:  # a window rule PyTorch does not share: never compare wrong shapes
                raise NotImplementedError(f"{layer.name}: PyTorch pools to {tuple(y.shape[2:])}, fastconv to {out_hw}")
            return y

        return pool
    if kind is L.GlobalAvgPool2d:
        return lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1)  # as torchvision's models do
    if kind is L.AdaptiveAvgPool2d:
        return lambda x: F.adaptive_avg_pool2d(x, layer.output_size)
    if kind is L.Flatten:
        return lambda x: torch.flatten(x, 1)  # (C, H, W) order: Dense.to_torch reorders for torch_chw
    if kind is L.Softmax:
        return lambda x: F.softmax(x, dim=-1)
    if kind is L.LocalResponseNorm:
        return lambda x: F.local_response_norm(x, layer.size, layer.alpha, layer.beta, layer.k)
    if kind is L.Activation:  # its input may be shared (a residual's): not in place
        fn = {"relu": F.relu, "relu6": F.relu6, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "silu": F.silu}
        return fn[layer.activation]
    if kind is L.Add:
        return lambda a, b: act(torch.add(a, b))
    if kind is L.Concat:
        return lambda *xs: torch.cat(xs, dim=1)
    if kind is L.ScaleChannels:
        return lambda x, s: x * s[:, :, None, None]
    raise NotImplementedError(f"{layer.name}: no PyTorch translation for {layer.kind}")


# ---- onnxruntime -----------------------------------------------------------------------------


class OrtNchw(Adapter):
    """onnxruntime CPU on a one-node model (plus the activation node) built with onnx.helper.

    Standard ONNX Conv is NCHW; the input is converted outside the timed region. Weights are
    initializers, so ORT may pre-pack them as it would in deployment.
    """

    name = "ort_nchw"

    def missing(self):
        for module in ("onnxruntime", "onnx"):
            if importlib.util.find_spec(module) is None:
                return "pip install onnxruntime onnx"
        return None

    def version(self):
        import onnxruntime

        return onnxruntime.__version__

    def setup(self, threads):
        self.threads = threads

    def prepare(self, case, arrays):
        import onnxruntime as ort

        model, feed = _onnx_model(case, arrays)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        nchw = case.op not in ("dense", "global_avg_pool2d")
        return (lambda: session.run(None, feed)[0]), (
            lambda y: np.ascontiguousarray(y.transpose(0, 2, 3, 1)) if nchw else y.reshape(y.shape[0], -1)
        )


def _onnx_model(case: Case, arrays: dict):
    from onnx import TensorProto, helper, numpy_helper

    p = case.problem()
    x = arrays["x"]
    nodes, inits = [], []
    if case.op == "dense":
        feed = {"x": x}
        inits.append(numpy_helper.from_array(arrays["w"], "w"))
        inputs = ["x", "w"]
        if arrays.get("b") is not None:
            inits.append(numpy_helper.from_array(arrays["b"], "b"))
            inputs.append("b")
        nodes.append(helper.make_node("Gemm", inputs, ["y0"]))
    else:
        feed = {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))}
        if case.op == "global_avg_pool2d":
            nodes.append(helper.make_node("GlobalAveragePool", ["x"], ["y0"]))
        elif case.op in POOL_OPS:
            kind = "MaxPool" if case.op == "max_pool2d" else "AveragePool"
            attrs = dict(kernel_shape=[p.kh, p.kw], strides=[p.stride_h, p.stride_w],
                         pads=[p.pad_top, p.pad_left, p.pad_bottom, p.pad_right])
            if kind == "AveragePool":
                attrs["count_include_pad"] = int(p.count_include_pad)
            nodes.append(helper.make_node(kind, ["x"], ["y0"], **attrs))
        else:
            w = arrays["w"]
            if case.op == "depthwise_conv2d":
                w = w.reshape(p.kh, p.kw, p.c_out).transpose(2, 0, 1)[:, None]
            elif case.op == "pointwise_conv2d":
                w = w.T[:, :, None, None]
            else:
                w = w.transpose(3, 2, 0, 1)
            inits.append(numpy_helper.from_array(np.ascontiguousarray(w), "w"))
            inputs = ["x", "w"]
            if arrays.get("b") is not None:
                inits.append(numpy_helper.from_array(arrays["b"], "b"))
                inputs.append("b")
            nodes.append(helper.make_node(
                "Conv", inputs, ["y0"], kernel_shape=[p.kh, p.kw], strides=[p.stride_h, p.stride_w],
                pads=[p.pad_top, p.pad_left, p.pad_bottom, p.pad_right], group=p.groups,
                dilations=[p.dilation_h, p.dilation_w],
            ))
    nodes += _onnx_activation(getattr(p, "activation", None), "y0", "y")
    if len(nodes) == 1 or nodes[-1].output[0] != "y":
        nodes[-1].output[0] = "y"
    graph = helper.make_graph(
        nodes, case.name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(feed["x"].shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, feed


def _onnx_activation(activation, src, dst):
    from onnx import helper

    if activation is None:
        return []
    if activation == "relu6":
        return _clip6(src, dst)
    if activation == "silu":
        return [helper.make_node("Sigmoid", [src], ["sig"]), helper.make_node("Mul", [src, "sig"], [dst])]
    kind = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[activation]
    return [helper.make_node(kind, [src], [dst])]


def _clip6(src, dst):
    """Clip(0, 6) with its bounds as Constant nodes (opset >= 11 takes them as inputs)."""
    from onnx import helper, numpy_helper

    lo = helper.make_node("Constant", [], ["clip_lo"], value=numpy_helper.from_array(np.array(0, np.float32)))
    hi = helper.make_node("Constant", [], ["clip_hi"], value=numpy_helper.from_array(np.array(6, np.float32)))
    return [lo, hi, helper.make_node("Clip", [src, "clip_lo", "clip_hi"], [dst])]


# --------------------------------------------------------------------------------------------
# GPU: inputs rotate over several copies so that repeated runs do not time the L2 cache.


def gpu_missing() -> str | None:
    """None when CuPy, a CUDA device and fastconv's CUDA module are all present, else why not."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as exc:  # ImportError, or driver errors without a GPU
        return f"CuPy with a CUDA device is not available ({type(exc).__name__}: {exc})"
    try:
        from fastconv import _gpu

        _gpu.cuda_module()
    except Exception as exc:
        return f"fastconv's CUDA module is unavailable ({exc})"
    return None


def _copies_for(arrays: dict, l2_bytes: int) -> int:
    """Enough input sets that cycling through them overflows L2 twice over (at most 64)."""
    nbytes = sum(a.nbytes for a in arrays.values() if a is not None)
    return int(min(64, max(1, -(-2 * l2_bytes // max(nbytes, 1)))))


def _l2_bytes() -> int:
    import cupy

    return int(cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("l2CacheSize", 64 << 20))


class _Rotating:
    """Cycles over prepared callables, one per copy of the inputs."""

    def __init__(self, runs):
        self.runs, self.i = runs, 0

    def __call__(self):
        self.i = (self.i + 1) % len(self.runs)
        return self.runs[self.i]()


class FastconvGpu(Adapter):
    name = "fastconv"
    device = "gpu"

    def missing(self):
        return gpu_missing()

    def version(self):
        import fastconv

        return fastconv.__version__

    def synchronize(self):
        import cupy

        cupy.cuda.get_current_stream().synchronize()

    def prepare(self, case, arrays):
        import cupy

        import fastconv

        sets = [{k: None if a is None else cupy.asarray(a) for k, a in arrays.items()}
                for _ in range(_copies_for(arrays, _l2_bytes()))]
        runs = [bind_op(fastconv, case, s) for s in sets]
        return _Rotating(runs), cupy.asnumpy


class Cudnn(_Torch):
    """cuDNN through PyTorch, channels_last, TF32 off (plain FP32 math, like ours)."""

    name = "cudnn"
    device = "gpu"
    channels_last = True
    label = "cudnn (TF32 off)"

    def missing(self):
        hint = _Torch.missing(self)
        if hint:
            return "pip install torch (a CUDA build)"
        import torch

        return None if torch.cuda.is_available() else "PyTorch has no CUDA device (CPU-only build?)"

    def setup(self, threads):
        import torch

        super().setup(threads)
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True

    def synchronize(self):
        import torch

        torch.cuda.synchronize()

    def _tensor(self, a):
        import torch

        return torch.from_numpy(a).cuda()

    def prepare(self, case, arrays):
        runs = []
        for _ in range(_copies_for(arrays, _l2_bytes_torch())):
            fn, out = _torch_op(case, arrays, self._tensor, True)
            runs.append(fn)
        return _Rotating(runs), lambda y: _torch_to_nhwc(y, out)


def _l2_bytes_torch() -> int:
    import torch

    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 64 << 20))


class Cupy(Adapter):
    """CuPy where it has the op: matmul (cuBLAS) for dense / pointwise, mean for global pooling."""

    name = "cupy"
    device = "gpu"

    def missing(self):
        return _missing_module("cupy", "pip install cupy-cuda12x")

    def version(self):
        import cupy

        return cupy.__version__

    def synchronize(self):
        import cupy

        cupy.cuda.get_current_stream().synchronize()

    def supports(self, case):
        return case.op in ("dense", "pointwise_conv2d", "global_avg_pool2d") and case.activation is None

    def prepare(self, case, arrays):
        import cupy

        p = case.problem()
        runs = []
        for _ in range(_copies_for(arrays, _l2_bytes())):
            x = cupy.asarray(arrays["x"])
            if case.op == "global_avg_pool2d":
                runs.append(lambda x=x: x.mean(axis=(1, 2)))
                continue
            w = cupy.asarray(arrays["w"])
            b = None if arrays.get("b") is None else cupy.asarray(arrays["b"])
            x2 = x.reshape(-1, x.shape[-1])

            def run(x2=x2, w=w, b=b):
                y = x2 @ w
                return y if b is None else y.__iadd__(b)

            runs.append(run)
        shape = getattr(p, "out_shape", None)
        return _Rotating(runs), lambda y: cupy.asnumpy(y).reshape(shape)


# --------------------------------------------------------------------------------------------

REGISTRY = {
    ("cpu", "fastconv"): Fastconv,
    ("cpu", "numpy"): NumpyIm2col,
    ("cpu", "numpy_ref"): NumpyRef,
    ("cpu", "torch_nchw"): TorchNchw,
    ("cpu", "torch_nhwc"): TorchNhwc,
    ("cpu", "ort_nchw"): OrtNchw,
    ("gpu", "fastconv"): FastconvGpu,
    ("gpu", "cudnn"): Cudnn,
    ("gpu", "cupy"): Cupy,
}


def known_peers(device: str) -> list[str]:
    return [name for (dev, name) in REGISTRY if dev == device and name != "fastconv"]


def forced_isa(spec: str) -> str | None:
    """The instruction set a `fastconv@ISA` peer forces (its worker's FASTCONV_ISA), else None."""
    name, at, isa = spec.partition("@")
    return isa if at and name == "fastconv" else None


def load_adapter(spec: str, device: str) -> Adapter:
    """A registered peer name, `fastconv@ISA`, or 'module:attribute' naming an Adapter subclass
    (or instance)."""
    if forced_isa(spec) is not None and device == "cpu":
        adapter = Fastconv()
        adapter.name = spec
        return adapter
    if ":" in spec:
        module, attr = spec.split(":", 1)
        obj = getattr(importlib.import_module(module), attr)
        adapter = obj() if isinstance(obj, type) else obj
        adapter.name = spec if adapter.name == "?" else adapter.name
        return adapter
    try:
        return REGISTRY[(device, spec)]()
    except KeyError:
        raise ValueError(
            f"--peers: unknown {device} peer {spec!r}; expected one of {', '.join(known_peers(device))} "
            "or module:attribute"
        ) from None
