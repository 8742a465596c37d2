"""ResNet-18 / 34 / 50 (He et al. 2015) as torchvision builds them: batch norm after every convolution,
1x1 projection shortcuts where the shape changes, the stride in the 3x3 convolution of a bottleneck."""

from ._layers import BatchNorm, Conv2d, Dense, GlobalAvgPool2d, MaxPool2d, Residual, Sequential
from ._model import Model


def _shortcut(name, c_in, c_out, stride):
    if stride == 1 and c_in == c_out:
        return None
    return Sequential(f"{name}.downsample", [
        Conv2d(f"{name}.downsample.0", c_in, c_out, 1, stride=stride, bias=False),
        BatchNorm(f"{name}.downsample.1", c_out),
    ])


def _basic(name, c_in, planes, stride):
    body = Sequential(f"{name}.body", [
        Conv2d(f"{name}.conv1", c_in, planes, 3, stride, 1, bias=False),
        BatchNorm(f"{name}.bn1", planes, activation="relu"),
        Conv2d(f"{name}.conv2", planes, planes, 3, 1, 1, bias=False),
        BatchNorm(f"{name}.bn2", planes),
    ])
    return Residual(name, body, _shortcut(name, c_in, planes, stride), activation="relu"), planes


def _bottleneck(name, c_in, planes, stride):
    out = planes * 4
    body = Sequential(f"{name}.body", [
        Conv2d(f"{name}.conv1", c_in, planes, 1, bias=False),
        BatchNorm(f"{name}.bn1", planes, activation="relu"),
        Conv2d(f"{name}.conv2", planes, planes, 3, stride, 1, bias=False),
        BatchNorm(f"{name}.bn2", planes, activation="relu"),
        Conv2d(f"{name}.conv3", planes, out, 1, bias=False),
        BatchNorm(f"{name}.bn3", out),
    ])
    return Residual(name, body, _shortcut(name, c_in, out, stride), activation="relu"), out


def _resnet(name, block, depths, num_classes):
    layers = [
        Conv2d("conv1", 3, 64, 7, 2, 3, bias=False),
        BatchNorm("bn1", 64, activation="relu"),
        MaxPool2d("maxpool", 3, 2, 1),
    ]
    c = 64
    for stage, (planes, n) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        blocks = []
        for i in range(n):
            b, c = block(f"layer{stage}.{i}", c, planes, 2 if i == 0 and stage > 1 else 1)
            blocks.append(b)
        layers.append(Sequential(f"layer{stage}", blocks))
    layers += [GlobalAvgPool2d("avgpool"), Dense("fc", c, num_classes)]
    return Model(name, Sequential(name, layers), (224, 224, 3), num_classes)


def resnet18(num_classes=1000):
    """11,689,512 parameters at 1000 classes."""
    return _resnet("resnet18", _basic, (2, 2, 2, 2), num_classes)


def resnet34(num_classes=1000):
    """21,797,672 parameters at 1000 classes."""
    return _resnet("resnet34", _basic, (3, 4, 6, 3), num_classes)


def resnet50(num_classes=1000):
    """25,557,032 parameters at 1000 classes."""
    return _resnet("resnet50", _bottleneck, (3, 4, 6, 3), num_classes)
