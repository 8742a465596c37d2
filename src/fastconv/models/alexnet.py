"""AlexNet as torchvision builds it (adaptive average pooling to 6x6 before the classifier)."""

from ._layers import AdaptiveAvgPool2d, Conv2d, Dense, Flatten, LocalResponseNorm, MaxPool2d, Sequential
from ._model import Model


def alexnet(num_classes=1000, lrn=False):
    """torchvision's AlexNet: 61,100,840 parameters at 1000 classes. lrn=True adds the paper's local
    response normalisation (size 5, alpha 1e-4, beta 0.75, k 2) after the first two ReLUs (no weights).
    Layer names are torchvision's (features.0, classifier.1, ...), so its state dicts load directly."""
    f = []
    f.append(Conv2d("features.0", 3, 64, 11, stride=4, padding=2, activation="relu"))
    if lrn:
        f.append(LocalResponseNorm("features.lrn1"))
    f.append(MaxPool2d("features.2", 3, 2))
    f.append(Conv2d("features.3", 64, 192, 5, padding=2, activation="relu"))
    if lrn:
        f.append(LocalResponseNorm("features.lrn2"))
    f += [
        MaxPool2d("features.5", 3, 2),
        Conv2d("features.6", 192, 384, 3, padding=1, activation="relu"),
        Conv2d("features.8", 384, 256, 3, padding=1, activation="relu"),
        Conv2d("features.10", 256, 256, 3, padding=1, activation="relu"),
        MaxPool2d("features.12", 3, 2),
        AdaptiveAvgPool2d("avgpool", 6),
        Flatten("flatten"),
        Dense("classifier.1", 256 * 6 * 6, 4096, activation="relu", torch_chw=(256, 6, 6)),
        Dense("classifier.4", 4096, 4096, activation="relu"),
        Dense("classifier.6", 4096, num_classes),
    ]
    return Model("alexnet" + ("_lrn" if lrn else ""), Sequential("alexnet", f), (224, 224, 3), num_classes)
