"""LeNet-5 (LeCun et al. 1998) on 32x32x1: C1 6@5x5, S2 2x2 pool, C3 16@5x5, S4, C5 120@5x5, F6 84, output."""

from ._layers import AvgPool2d, Conv2d, Dense, Flatten, MaxPool2d, Sequential
from ._model import Model


def lenet5(num_classes=10, activation="tanh", pool="avg"):
    """Classic LeNet-5 (tanh, average pooling): 61,706 parameters at 10 classes.
    activation="relu", pool="max" gives the modern variant. C3 is fully connected to S2 here."""
    if pool not in ("avg", "max"):
        raise ValueError(f"lenet5: pool must be 'avg' or 'max', got {pool!r}")
    Pool = AvgPool2d if pool == "avg" else MaxPool2d
    body = Sequential("lenet5", [
        Conv2d("c1", 1, 6, 5, activation=activation),
        Pool("s2", 2),
        Conv2d("c3", 6, 16, 5, activation=activation),
        Pool("s4", 2),
        Conv2d("c5", 16, 120, 5, activation=activation),
        Flatten("flatten"),
        Dense("f6", 120, 84, activation=activation),
        Dense("output", 84, num_classes),
    ])
    return Model("lenet5", body, (32, 32, 1), num_classes)
