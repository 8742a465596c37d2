"""GoogLeNet / Inception v1 (Szegedy et al. 2014) as torchvision builds it, without the auxiliary heads:
batch norm (eps 1e-3) after every convolution and, as in torchvision, a 3x3 convolution in the "5x5" branch."""

from ._layers import BatchNorm, Branches, Conv2d, Dense, GlobalAvgPool2d, MaxPool2d, Sequential
from ._model import Model


def _conv(name, c_in, c_out, k, stride=1, padding=0):
    return Sequential(name, [
        Conv2d(f"{name}.conv", c_in, c_out, k, stride, padding, bias=False),
        BatchNorm(f"{name}.bn", c_out, eps=1e-3, activation="relu"),
    ])


def _inception(name, c_in, ch1, ch3red, ch3, ch5red, ch5, pool_proj):
    return Branches(name, [
        _conv(f"{name}.branch1", c_in, ch1, 1),
        Sequential(f"{name}.branch2", [_conv(f"{name}.branch2.0", c_in, ch3red, 1),
                                       _conv(f"{name}.branch2.1", ch3red, ch3, 3, padding=1)]),
        Sequential(f"{name}.branch3", [_conv(f"{name}.branch3.0", c_in, ch5red, 1),
                                       _conv(f"{name}.branch3.1", ch5red, ch5, 3, padding=1)]),
        Sequential(f"{name}.branch4", [MaxPool2d(f"{name}.branch4.0", 3, 1, 1, ceil_mode=True),
                                       _conv(f"{name}.branch4.1", c_in, pool_proj, 1)]),
    ])


def googlenet(num_classes=1000):
    """6,624,904 parameters at 1000 classes (torchvision's count without aux heads).
    torchvision's transform_input (used with its pretrained weights) is not applied: normalise inputs yourself."""
    layers = [
        _conv("conv1", 3, 64, 7, 2, 3),
        MaxPool2d("maxpool1", 3, 2, ceil_mode=True),
        _conv("conv2", 64, 64, 1),
        _conv("conv3", 64, 192, 3, padding=1),
        MaxPool2d("maxpool2", 3, 2, ceil_mode=True),
        _inception("inception3a", 192, 64, 96, 128, 16, 32, 32),
        _inception("inception3b", 256, 128, 128, 192, 32, 96, 64),
        MaxPool2d("maxpool3", 3, 2, ceil_mode=True),
        _inception("inception4a", 480, 192, 96, 208, 16, 48, 64),
        _inception("inception4b", 512, 160, 112, 224, 24, 64, 64),
        _inception("inception4c", 512, 128, 128, 256, 24, 64, 64),
        _inception("inception4d", 512, 112, 144, 288, 32, 64, 64),
        _inception("inception4e", 528, 256, 160, 320, 32, 128, 128),
        MaxPool2d("maxpool4", 2, 2, ceil_mode=True),
        _inception("inception5a", 832, 256, 160, 320, 32, 128, 128),
        _inception("inception5b", 832, 384, 192, 384, 48, 128, 128),
        GlobalAvgPool2d("avgpool"),
        Dense("fc", 1024, num_classes),
    ]
    return Model("googlenet", Sequential("googlenet", layers), (224, 224, 3), num_classes)
