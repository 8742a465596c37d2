"""Classic CNNs built from fastconv's public ops, on NumPy (CPU) or CuPy (GPU) NHWC input, each one
checkable layer by layer against fastconv.reference (Model.check)."""

from ._model import CheckReport, LayerRow, Model
from .alexnet import alexnet
from .efficientnet import (efficientnet, efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3,
                           efficientnet_b4, efficientnet_b5, efficientnet_b6, efficientnet_b7)
from .googlenet import googlenet
from .lenet import lenet5
from .mobilenet import mobilenet_v1, mobilenet_v2
from .resnet import resnet18, resnet34, resnet50
from .vgg import vgg16

MODELS = {f.__name__: f for f in (
    lenet5, alexnet, vgg16, resnet18, resnet34, resnet50, googlenet, mobilenet_v1, mobilenet_v2,
    efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4, efficientnet_b5,
    efficientnet_b6, efficientnet_b7)}

__all__ = ["CheckReport", "LayerRow", "MODELS", "Model", "efficientnet", *MODELS]
