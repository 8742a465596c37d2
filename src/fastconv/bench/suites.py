"""Benchmark suites and the cost model of a case.

A suite is a JSON file: {"name": ..., "cases": [case, ...]}. A case names one public fastconv op and
its arguments, NHWC:

    {"name": "vgg_c1_2", "op": "conv2d", "family": "dense_conv",
     "x": [1, 224, 224, 64], "kernel": [3, 3], "c_out": 64, "stride": 1, "padding": "same",
     "bias": true, "activation": null}

ops: conv2d, depthwise_conv2d, pointwise_conv2d, dense ("x": [N, in], "c_out": out), max_pool2d,
avg_pool2d ("kernel" is the window), global_avg_pool2d. conv2d also takes "groups" (default 1; the
weights are then (KH, KW, C_in / groups, C_out)). families: dense_conv, first_layer, pointwise,
depthwise, pooling (the summary's geometric means are taken per family).

The FLOP / byte model lives here and nowhere else (`cost`):
  FLOPs  = 2 x multiply-adds for convolutions and dense layers (padding taps included, as in
           `problem.macs`); pooling counts one operation per window element (compare or add).
  bytes  = 4 x (x.size + w.size + b.size + out.size): each input read once, the output written
           once, the fewest bytes any implementation must move through DRAM when nothing is cached.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from fastconv import _params

BUILTIN_SUITES = ("tiny", "quick", "full", "gpu", "probe", "probe2", "probe3", "probe4")
FAMILIES = ("dense_conv", "first_layer", "pointwise", "depthwise", "pooling")
OPS = (
    "conv2d",
    "depthwise_conv2d",
    "pointwise_conv2d",
    "dense",
    "max_pool2d",
    "avg_pool2d",
    "global_avg_pool2d",
)
CONV_OPS = ("conv2d", "depthwise_conv2d", "pointwise_conv2d", "dense")
POOL_OPS = ("max_pool2d", "avg_pool2d")


def _padding(value):
    """JSON padding -> the ops' padding argument (lists become tuples)."""
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


@dataclass(frozen=True)
class Case:
    """One benchmark case: an op, its input shapes and its keyword arguments."""

    name: str
    op: str
    family: str
    x: tuple
    kernel: tuple = (1, 1)
    c_out: int = 0
    stride: int | tuple = 1
    padding: object = "valid"
    bias: bool = True
    activation: str | None = None
    groups: int = 1
    dilation: int | tuple = 1
    spec: dict = field(default_factory=dict, compare=False, hash=False)

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def weight_shape(self) -> tuple | None:
        kh, kw = self.kernel
        c = self.x[-1]
        if self.op == "conv2d":
            return (kh, kw, c // self.groups, self.c_out)
        if self.op == "depthwise_conv2d":
            return (kh, kw, c)
        if self.op in ("pointwise_conv2d", "dense"):
            return (c, self.c_out)
        return None

    @property
    def bias_shape(self) -> tuple | None:
        if not self.bias or self.weight_shape is None:
            return None
        return (self.x[-1],) if self.op == "depthwise_conv2d" else (self.c_out,)

    def problem(self):
        """The validated problem object of `fastconv._params` (also checks the suite entry)."""
        op, ws, bs = self.op, self.weight_shape, self.bias_shape
        if op == "conv2d":
            return _params.conv2d_problem(op, self.x, ws, bs, self.stride, self.padding, self.dilation, self.groups,
                                          self.activation)
        if op == "depthwise_conv2d":
            return _params.depthwise_problem(op, self.x, ws, bs, self.stride, self.padding, self.dilation, self.activation)
        if op == "pointwise_conv2d":
            return _params.pointwise_problem(op, self.x, ws, bs, self.activation)
        if op == "dense":
            return _params.dense_problem(op, self.x, ws, bs, self.activation)
        if op in POOL_OPS:
            return _params.pool2d_problem(op, self.x, self.kernel, self.stride, self.padding, False)
        return _params.global_pool_problem(op, self.x)

    def kwargs(self) -> dict:
        """Keyword arguments of the public op (besides the arrays)."""
        if self.op == "conv2d":
            return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups,
                    "activation": self.activation}
        if self.op == "depthwise_conv2d":
            return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                    "activation": self.activation}
        if self.op in ("pointwise_conv2d", "dense"):
            return {"activation": self.activation}
        if self.op in POOL_OPS:
            return {"size": self.kernel, "stride": self.stride, "padding": self.padding}
        return {}

    def inputs(self, seed: int) -> dict:
        """Fresh random float32 inputs, identical in every worker for the same seed; never zeros.

        Weights are scaled by 1/sqrt(fan-in) so outputs stay O(1) and activations are not saturated.
        """
        rng = np.random.default_rng([seed, _stable_hash(self.name)])
        arrays = {"x": rng.standard_normal(self.x, dtype=np.float32)}
        if self.weight_shape is not None:
            fan_in = int(np.prod(self.weight_shape[:-1])) if self.op != "depthwise_conv2d" else self.kernel[0] * self.kernel[1]
            arrays["w"] = rng.standard_normal(self.weight_shape, dtype=np.float32) / np.float32(np.sqrt(fan_in))
            arrays["b"] = rng.standard_normal(self.bias_shape, dtype=np.float32) if self.bias else None
        return arrays

    def terms(self) -> int:
        """Summands per output element (the comparison tolerance grows with it)."""
        p = self.problem()
        if self.op in CONV_OPS:
            return p.macs // int(np.prod(p.out_shape))
        if self.op in POOL_OPS:
            return p.kh * p.kw
        return p.h * p.w

    def describe(self) -> str:
        """Short human-readable shape, e.g. '1x56x56x64 3x3/1 ->64'."""
        shape = "x".join(map(str, self.x))
        if self.op == "dense":
            return f"{shape} ->{self.c_out}"
        if self.op == "global_avg_pool2d":
            return f"{shape} global"
        stride = self.stride if isinstance(self.stride, int) else "x".join(map(str, self.stride))
        k = f"{self.kernel[0]}x{self.kernel[1]}/{stride}"
        if self.dilation != 1:
            k += f" d{self.dilation if isinstance(self.dilation, int) else 'x'.join(map(str, self.dilation))}"
        if self.op == "depthwise_conv2d":
            return f"{shape} dw{k}"
        if self.op in POOL_OPS:
            return f"{shape} {'max' if self.op == 'max_pool2d' else 'avg'}{k}"
        return f"{shape} {k} ->{self.c_out}" + (f" g{self.groups}" if self.groups > 1 else "")


def _stable_hash(text: str) -> int:
    """A per-case seed component that, unlike hash(), is the same in every process."""
    value = 0
    for ch in text.encode():
        value = (value * 131 + ch) % (2**31 - 1)
    return value


def cost(case: Case) -> tuple[float, float]:
    """(FLOPs, bytes) of a case: the one FLOP / byte model of the bench (see the module docstring)."""
    p = case.problem()
    out = int(np.prod(p.out_shape))
    if case.op in CONV_OPS:
        flops = 2.0 * p.macs
    elif case.op in POOL_OPS:
        flops = float(out * p.kh * p.kw)
    else:
        flops = float(p.n * p.h * p.w * p.c)
    elements = int(np.prod(case.x)) + out
    if case.weight_shape is not None:
        elements += int(np.prod(case.weight_shape))
    if case.bias_shape is not None:
        elements += int(np.prod(case.bias_shape))
    return flops, 4.0 * elements


# --------------------------------------------------------------------------------------------
# Loading


def case_from_dict(d: dict) -> Case:
    """Build and validate one case; errors name the case."""
    name = d.get("name", "?")
    try:
        op = d["op"]
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected one of {', '.join(OPS)}")
        family = d.get("family") or _default_family(op)
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
        kernel = d.get("kernel", [1, 1])
        kernel = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        stride = d.get("stride", kernel if op in POOL_OPS else 1)
        stride = tuple(stride) if isinstance(stride, list) else stride
        dilation = d.get("dilation", 1)
        dilation = tuple(dilation) if isinstance(dilation, list) else dilation
        case = Case(
            name=name,
            op=op,
            family=family,
            x=tuple(int(v) for v in d["x"]),
            kernel=kernel,
            c_out=int(d.get("c_out", 0)),
            stride=stride,
            padding=_padding(d.get("padding", "valid")),
            bias=bool(d.get("bias", op in CONV_OPS)),
            activation=d.get("activation"),
            groups=int(d.get("groups", 1)),
            dilation=dilation,
            spec=dict(d),
        )
        if case.groups != 1 and op != "conv2d":
            raise ValueError(f"groups applies to conv2d only, not {op}")
        if case.dilation != 1 and op not in ("conv2d", "depthwise_conv2d"):
            raise ValueError(f"dilation applies to conv2d and depthwise_conv2d only, not {op}")
        case.problem()
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"suite case {name!r}: {exc}") from None
    return case


def _default_family(op: str) -> str:
    return {
        "depthwise_conv2d": "depthwise",
        "pointwise_conv2d": "pointwise",
        "dense": "pointwise",
        "max_pool2d": "pooling",
        "avg_pool2d": "pooling",
        "global_avg_pool2d": "pooling",
    }.get(op, "dense_conv")


def load_suite(name_or_path: str) -> tuple[str, list[Case]]:
    """A built-in suite by name (tiny, quick, full) or a JSON file path -> (suite name, cases)."""
    if name_or_path in BUILTIN_SUITES:
        text = resources.files("fastconv.bench").joinpath("suites").joinpath(f"{name_or_path}.json").read_text()
        source = name_or_path
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--suite: {name_or_path!r} is neither {', '.join(BUILTIN_SUITES)} nor a JSON file")
        text, source = path.read_text(), str(path)
    data = json.loads(text)
    entries = data["cases"] if isinstance(data, dict) else data
    cases = [case_from_dict(d) for d in entries]
    names = [c.name for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"suite {source}: duplicate case names {', '.join(dupes)}")
    return (data.get("name", source) if isinstance(data, dict) else source), cases


def select_ops(cases: list[Case], ops: list[str] | None) -> list[Case]:
    """Keep the cases whose op, family or name is in `ops` (--ops)."""
    if not ops:
        return cases
    wanted = set(ops)
    return [c for c in cases if c.op in wanted or c.family in wanted or c.name in wanted]


# --------------------------------------------------------------------------------------------
# Whole models (`fastconv bench --models`)

DEFAULT_MODELS = ("resnet50", "mobilenet_v2", "efficientnet_b0")
MODEL_BATCHES = (1, 8)


@dataclass(frozen=True)
class ModelCase:
    """End-to-end inference of one fastconv.models network at one batch size.

    Every worker builds the same weights from the seed (Model.init), folds batch norm once and
    feeds the same input; `resolution` None means the model's standard one (224 for ResNet-50).
    """

    name: str
    model: str
    batch: int
    resolution: int | None = None
    spec: dict = field(default_factory=dict, compare=False, repr=False)

    def build(self, seed: int):
        """The model as it is timed: initialised from the seed, batch norm folded (weights ready)."""
        from fastconv.models import MODELS

        return MODELS[self.model]().init(seed).fold_batch_norm()

    def input_shape(self, model=None) -> tuple[int, int, int, int]:
        from fastconv.models import MODELS

        h, w, c = (model or MODELS[self.model]()).input_shape
        if self.resolution is not None:
            h = w = self.resolution
        return (self.batch, h, w, c)

    def inputs(self, seed: int, model=None) -> dict:
        """{"x": NHWC float32}, the same in every process for a seed (the batch size is not hashed,
        so image 0 of batch 8 is batch 1's image)."""
        rng = np.random.default_rng([seed, _stable_hash(f"{self.model}@{self.resolution}")])
        return {"x": rng.standard_normal(self.input_shape(model), dtype=np.float32)}

    def describe(self) -> str:
        return "x".join(map(str, self.input_shape()))


def model_case_from_dict(d: dict) -> ModelCase:
    from fastconv.models import MODELS

    name = d.get("name", "?")
    if d.get("model") not in MODELS:
        raise ValueError(f"model case {name!r}: unknown model {d.get('model')!r}; expected one of {', '.join(MODELS)}")
    resolution = d.get("resolution")
    return ModelCase(name, d["model"], int(d.get("batch", 1)), None if resolution is None else int(resolution), dict(d))


def model_cases(names: list[str] | None, batches=MODEL_BATCHES) -> list[ModelCase]:
    """Cases for `--models`: each model (NAME or NAME@RESOLUTION) at each batch size, model by model."""
    cases = []
    for entry in names or DEFAULT_MODELS:
        model, _, res = entry.partition("@")
        if _ and not res.isdigit():
            raise ValueError(f"{entry!r}: expected NAME or NAME@RESOLUTION (e.g. mobilenet_v2@32)")
        for batch in batches:
            spec = {"name": f"{model}{'@' + res if res else ''}/b{batch}", "model": model, "batch": batch}
            if res:
                spec["resolution"] = int(res)
            cases.append(model_case_from_dict(spec))
    return cases
