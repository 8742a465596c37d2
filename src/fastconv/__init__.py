"""fastconv: fast convolution, pooling and dense kernels for NumPy (CPU) and CuPy (GPU) arrays.

Activations are NHWC (N, H, W, C); dense-conv weights HWIO (KH, KW, C_in // groups, C_out); float32.
`fastconv.reference` holds a plain NumPy version of every op, the oracle the kernels are tested against.
"""

from importlib.metadata import PackageNotFoundError, version

from . import reference
from ._params import conv_output_size
from .ops import (
    avg_pool2d,
    conv2d,
    dense,
    depthwise_conv2d,
    get_num_threads,
    global_avg_pool2d,
    global_max_pool2d,
    max_pool2d,
    pointwise_conv2d,
    set_num_threads,
)

try:
    __version__ = version("fastconv")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "avg_pool2d",
    "conv2d",
    "conv_output_size",
    "dense",
    "depthwise_conv2d",
    "get_num_threads",
    "global_avg_pool2d",
    "global_max_pool2d",
    "max_pool2d",
    "pointwise_conv2d",
    "reference",
    "set_num_threads",
]
