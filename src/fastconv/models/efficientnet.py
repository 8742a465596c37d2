"""EfficientNet B0-B7 (Tan & Le 2019) as torchvision builds them: MBConv blocks with squeeze-and-excitation
and SiLU; B1-B7 scale B0's widths and depths by the paper's compound coefficients."""

import math

from ._layers import Dense, GlobalAvgPool2d, Residual, Sequential, SqueezeExcite, conv_bn
from ._model import Model
from .mobilenet import make_divisible

# expand ratio, kernel, stride, input channels, output channels, layers (B0)
_B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
       (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

# width, depth, resolution (the paper's phi = 0..7 coefficients, as torchvision uses them)
SCALING = {
    "b0": (1.0, 1.0, 224), "b1": (1.0, 1.1, 240), "b2": (1.1, 1.2, 260), "b3": (1.2, 1.4, 300),
    "b4": (1.4, 1.8, 380), "b5": (1.6, 2.2, 456), "b6": (1.8, 2.6, 528), "b7": (2.0, 3.1, 600),
}


def _mbconv(name, c_in, c_out, k, stride, expand):
    expanded = make_divisible(c_in * expand)
    layers = []
    if expanded != c_in:
        layers.append(conv_bn(f"{name}.block.{len(layers)}", c_in, expanded, 1, activation="silu"))
    layers.append(conv_bn(f"{name}.block.{len(layers)}", expanded, expanded, k, stride, groups=expanded,
                          activation="silu"))
    layers.append(SqueezeExcite(f"{name}.block.{len(layers)}", expanded, max(1, c_in // 4)))
    layers.append(conv_bn(f"{name}.block.{len(layers)}", expanded, c_out, 1))
    body = Sequential(f"{name}.block", layers)
    return Residual(name, body) if stride == 1 and c_in == c_out else body


def efficientnet(variant="b0", num_classes=1000):
    if variant not in SCALING:
        raise ValueError(f"efficientnet: variant must be one of {', '.join(SCALING)}, got {variant!r}")
    width, depth, resolution = SCALING[variant]
    ch = lambda c: make_divisible(c * width)  # noqa: E731
    c = ch(_B0[0][3])
    features = [conv_bn("features.0", 3, c, 3, 2, activation="silu")]
    for s, (t, k, stride, _, c_out, n) in enumerate(_B0, start=1):
        out, blocks = ch(c_out), []
        for i in range(int(math.ceil(n * depth))):
            blocks.append(_mbconv(f"features.{s}.{i}", c, out, k, stride if i == 0 else 1, t))
            c = out
        features.append(Sequential(f"features.{s}", blocks))
    last = 4 * c
    features.append(conv_bn(f"features.{len(features)}", c, last, 1, activation="silu"))
    layers = [Sequential("features", features), GlobalAvgPool2d("avgpool"), Dense("classifier.1", last, num_classes)]
    name = f"efficientnet_{variant}"
    return Model(name, Sequential(name, layers), (resolution, resolution, 3), num_classes)


def _variant(v, params):
    def build(num_classes=1000):
        return efficientnet(v, num_classes)

    build.__name__ = f"efficientnet_{v}"
    build.__doc__ = f"torchvision's efficientnet_{v}: {params:,} parameters at 1000 classes; input {SCALING[v][2]}^2."
    return build


efficientnet_b0 = _variant("b0", 5_288_548)
efficientnet_b1 = _variant("b1", 7_794_184)
efficientnet_b2 = _variant("b2", 9_109_994)
efficientnet_b3 = _variant("b3", 12_233_232)
efficientnet_b4 = _variant("b4", 19_341_616)
efficientnet_b5 = _variant("b5", 30_389_784)
efficientnet_b6 = _variant("b6", 43_040_704)
efficientnet_b7 = _variant("b7", 66_347_960)
