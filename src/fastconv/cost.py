"""Cost of a layer, by arithmetic only: output shape, parameters and multiplies (output elements x filter
volume), and the savings of a 1x1 bottleneck or a depthwise separable block against a plain convolution.

    >>> from fastconv import cost
    >>> cost.conv2d((28, 28, 192), 5, 32, padding="same").multiplies      # 120,422,400
    >>> cost.bottleneck((28, 28, 192), 5, 32, 16, padding="same")         # about 12.4M against 120.4M
    >>> cost.depthwise_separable((6, 6, 3), 3, 5)                         # 672 against 2160: 1/5 + 1/9

Shapes are per image, (H, W, C); argument checks are _params', so errors read as the ops' do.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import _params


@dataclass(frozen=True)
class Cost:
    layer: str
    input_shape: tuple
    output_shape: tuple
    parameters: int
    multiplies: int

    def __str__(self):
        return (f"{self.layer}: {self.input_shape} -> {self.output_shape}, {self.parameters:,} parameters, "
                f"{self.multiplies:,} multiplies")


@dataclass(frozen=True)
class Comparison:
    """A cheaper block (`parts`, summed into `alternative`) against the plain convolution it replaces."""

    plain: Cost
    parts: tuple
    alternative: Cost
    formula: str = ""

    @property
    def ratio(self) -> float:
        return self.alternative.multiplies / self.plain.multiplies

    def __str__(self):
        lines = [f"plain        {self.plain}"] + [f"  part       {p}" for p in self.parts]
        lines.append(f"alternative  {self.alternative}")
        lines.append(f"ratio {self.ratio:.4f} ({self.plain.multiplies / self.alternative.multiplies:.2f}x fewer "
                     f"multiplies)" + (f"; {self.formula}" if self.formula else ""))
        return "\n".join(lines)


def _hwc(op, shape):
    if len(shape) != 3:
        raise ValueError(f"{op}: input_shape must be (H, W, C), got {tuple(shape)}")
    return (1,) + tuple(int(d) for d in shape)


def conv2d(input_shape, f, c_out, stride=1, padding="valid", dilation=1, groups=1, bias=True) -> Cost:
    """A convolution of an (H, W, C_in) input with c_out filters f x f (or (fh, fw))."""
    op = "cost.conv2d"
    x = _hwc(op, input_shape)
    fh, fw = (f, f) if isinstance(f, int) else f
    p = _params.conv2d_problem(op, x, (fh, fw, x[3] // groups if groups else 0, c_out), (c_out,) if bias else None,
                               stride, padding, dilation, groups, None)
    params = fh * fw * (x[3] // groups) * c_out + (c_out if bias else 0)
    return Cost(f"conv {fh}x{fw}/{p.stride_h}" + (f" groups={groups}" if groups > 1 else ""), tuple(input_shape),
                p.out_shape[1:], params, p.macs)


def depthwise_conv2d(input_shape, f, stride=1, padding="valid", multiplier=1, bias=True) -> Cost:
    op = "cost.depthwise_conv2d"
    x = _hwc(op, input_shape)
    fh, fw = (f, f) if isinstance(f, int) else f
    c = x[3]
    p = _params.depthwise_problem(op, x, (fh, fw, c, multiplier), (c * multiplier,) if bias else None, stride,
                                  padding, 1, None)
    return Cost(f"depthwise {fh}x{fw}/{p.stride_h}", tuple(input_shape), p.out_shape[1:],
                fh * fw * c * multiplier + (c * multiplier if bias else 0), p.macs)


def pointwise_conv2d(input_shape, c_out, bias=True) -> Cost:
    c = conv2d(input_shape, 1, c_out, bias=bias)
    return Cost("pointwise 1x1", c.input_shape, c.output_shape, c.parameters, c.multiplies)


def dense(n_in, n_out, bias=True) -> Cost:
    p = _params.dense_problem("cost.dense", (1, n_in), (n_in, n_out), (n_out,) if bias else None, None)
    return Cost("dense", (n_in,), (n_out,), n_in * n_out + (n_out if bias else 0), p.macs)


def pool2d(input_shape, size, stride=None, padding="valid", ceil_mode=False) -> Cost:
    """Pooling: no parameters, no multiplies (comparisons or additions only)."""
    op = "cost.pool2d"
    p = _params.pool2d_problem(op, _hwc(op, input_shape), size, stride, padding, ceil_mode)
    return Cost(f"pool {p.kh}x{p.kw}/{p.stride_h}", tuple(input_shape), p.out_shape[1:], 0, 0)


def _total(name, input_shape, parts):
    return Cost(name, tuple(input_shape), parts[-1].output_shape, sum(p.parameters for p in parts),
                sum(p.multiplies for p in parts))


def bottleneck(input_shape, f, c_out, bottleneck_channels, stride=1, padding="same", bias=False) -> Comparison:
    """Inception's trick: a 1x1 convolution down to `bottleneck_channels` before the f x f one.
    28x28x192 -> 5x5 same, 32 channels: 120.4M multiplies; through 16 channels: 2.4M + 10.0M = 12.4M."""
    plain = conv2d(input_shape, f, c_out, stride, padding, bias=bias)
    squeeze = pointwise_conv2d(input_shape, bottleneck_channels, bias=bias)
    conv = conv2d(squeeze.output_shape, f, c_out, stride, padding, bias=bias)
    return Comparison(plain, (squeeze, conv), _total(f"1x1 bottleneck to {bottleneck_channels}", input_shape,
                                                      (squeeze, conv)))


def depthwise_separable(input_shape, f, c_out, stride=1, padding="valid", bias=False) -> Comparison:
    """MobileNet's block: a depthwise f x f convolution, then a pointwise 1x1 one, against the plain f x f
    convolution; the ratio of multiplies is 1 / C_out + 1 / f^2 (6x6x3 -> 3x3, 5 filters: 672 / 2160)."""
    plain = conv2d(input_shape, f, c_out, stride, padding, bias=bias)
    dw = depthwise_conv2d(input_shape, f, stride, padding, bias=bias)
    pw = pointwise_conv2d(dw.output_shape, c_out, bias=bias)
    fh, fw = (f, f) if isinstance(f, int) else f
    formula = f"1/C_out + 1/(fh fw) = 1/{c_out} + 1/{fh * fw} = {1 / c_out + 1 / (fh * fw):.4f}"
    return Comparison(plain, (dw, pw), _total("depthwise separable", input_shape, (dw, pw)), formula)
