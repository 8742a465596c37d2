"""MobileNet V1 (Howard et al. 2017) as Keras Applications builds it, and MobileNet V2 (Sandler et al.
2018) as torchvision builds it."""

from ._layers import (BatchNorm, Conv2d, Dense, DepthwiseConv2d, GlobalAvgPool2d, Residual, Sequential, Softmax,
                      conv_bn)
from ._model import Model

_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def _keras_pad(stride):
    # Keras pads a strided 3x3 convolution with ZeroPadding2D(((0, 1), (0, 1))) and uses 'valid';
    # unstrided ones use 'same' (1 on each side).
    return ((0, 1), (0, 1)) if stride == 2 else 1


def mobilenet_v1(num_classes=1000, alpha=1.0, classifier_activation="softmax"):
    """Keras' MobileNet: depthwise separable blocks, batch norm (eps 1e-3) and ReLU6. At alpha 1.0 and
    1000 classes: 4,253,864 parameters as Keras counts them (batch-norm moving mean / variance included;
    num_parameters(statistics=False) gives the 4,231,976 trainable ones). Layer names are Keras'."""
    c = int(32 * alpha)
    layers = [Conv2d("conv1", 3, c, 3, 2, _keras_pad(2), bias=False), BatchNorm("conv1_bn", c, 1e-3, "relu6")]
    for i, (filters, stride) in enumerate(_V1_BLOCKS, start=1):
        out = int(filters * alpha)
        layers += [
            DepthwiseConv2d(f"conv_dw_{i}", c, 3, stride, _keras_pad(stride)),
            BatchNorm(f"conv_dw_{i}_bn", c, 1e-3, "relu6"),
            Conv2d(f"conv_pw_{i}", c, out, 1, bias=False),
            BatchNorm(f"conv_pw_{i}_bn", out, 1e-3, "relu6"),
        ]
        c = out
    layers += [GlobalAvgPool2d("global_average_pooling2d"), Dense("conv_preds", c, num_classes)]
    if classifier_activation == "softmax":
        layers.append(Softmax("predictions"))
    elif classifier_activation is not None:
        raise ValueError(f"mobilenet_v1: classifier_activation must be 'softmax' or None, got {classifier_activation!r}")
    return Model("mobilenet_v1", Sequential("mobilenet_v1", layers), (224, 224, 3), num_classes,
                 count_statistics=True)


def make_divisible(v, divisor=8, min_value=None):
    """torchvision's channel rounding: to a multiple of divisor, never more than 10% below v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
               (6, 320, 1, 1)]


def _inverted_residual(name, c_in, c_out, stride, expand):
    hidden = int(round(c_in * expand))
    layers, j = [], 0
    if expand != 1:
        layers.append(conv_bn(f"{name}.conv.0", c_in, hidden, 1, activation="relu6"))
        j = 1
    layers += [
        conv_bn(f"{name}.conv.{j}", hidden, hidden, 3, stride, groups=hidden, activation="relu6"),
        Conv2d(f"{name}.conv.{j + 1}", hidden, c_out, 1, bias=False),
        BatchNorm(f"{name}.conv.{j + 2}", c_out),
    ]
    body = Sequential(f"{name}.conv", layers)
    return Residual(name, body) if stride == 1 and c_in == c_out else body


def mobilenet_v2(num_classes=1000, width_mult=1.0):
    """torchvision's mobilenet_v2: inverted residuals, expansion 6, linear bottlenecks, ReLU6;
    3,504,872 parameters at width 1.0 and 1000 classes. Layer names are torchvision's."""
    c = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    features = [conv_bn("features.0", 3, c, 3, 2, activation="relu6")]
    for t, ch, n, s in _V2_SETTING:
        out = make_divisible(ch * width_mult)
        for i in range(n):
            features.append(_inverted_residual(f"features.{len(features)}", c, out, s if i == 0 else 1, t))
            c = out
    features.append(conv_bn(f"features.{len(features)}", c, last, 1, activation="relu6"))
    layers = [Sequential("features", features), GlobalAvgPool2d("avgpool"), Dense("classifier.1", last, num_classes)]
    return Model("mobilenet_v2", Sequential("mobilenet_v2", layers), (224, 224, 3), num_classes)
