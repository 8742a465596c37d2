"""VGG-16, configuration D (Simonyan & Zisserman 2014), as torchvision builds it."""

from ._layers import AdaptiveAvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Sequential
from ._model import Model

CONFIG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16(num_classes=1000):
    """torchvision's vgg16 (no batch norm): 138,357,544 parameters at 1000 classes."""
    layers, c_in, i = [], 3, 0
    for v in CONFIG_D:
        if v == "M":
            layers.append(MaxPool2d(f"features.{i}", 2, 2))
            i += 1
        else:
            layers.append(Conv2d(f"features.{i}", c_in, v, 3, padding=1, activation="relu"))
            c_in, i = v, i + 2  # torchvision: conv, ReLU
    layers += [
        AdaptiveAvgPool2d("avgpool", 7),
        Flatten("flatten"),
        Dense("classifier.0", 512 * 7 * 7, 4096, activation="relu", torch_chw=(512, 7, 7)),
        Dense("classifier.3", 4096, 4096, activation="relu"),
        Dense("classifier.6", 4096, num_classes),
    ]
    return Model("vgg16", Sequential("vgg16", layers), (224, 224, 3), num_classes)
