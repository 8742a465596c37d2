"""fastconv: fast convolution, pooling and dense kernels for NumPy (CPU) and CuPy (GPU) arrays.

Activations are NHWC (N, H, W, C); dense-conv weights HWIO (KH, KW, C_in // groups, C_out); float32.
`fastconv.reference` holds a plain NumPy version of every op, the oracle the kernels are tested against.
"""

from importlib.metadata import PackageNotFoundError, version

from . import reference
from ._params import conv_output_size
from .ops import (
    PackedWeights,
    activate,
    adaptive_avg_pool2d,
    add,
    avg_pool2d,
    batch_norm,
    concat,
    conv2d,
    dense,
    depthwise_conv2d,
    flatten,
    get_num_threads,
    global_avg_pool2d,
    global_max_pool2d,
    local_response_norm,
    max_pool2d,
    pack_weights,
    pointwise_conv2d,
    scale_channels,
    set_num_threads,
    softmax,
)

try:
    __version__ = version("fastconv")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "PackedWeights",
    "activate",
    "adaptive_avg_pool2d",
    "add",
    "avg_pool2d",
    "batch_norm",
    "concat",
    "conv2d",
    "conv_output_size",
    "dense",
    "depthwise_conv2d",
    "flatten",
    "get_num_threads",
    "global_avg_pool2d",
    "global_max_pool2d",
    "local_response_norm",
    "max_pool2d",
    "pack_weights",
    "pointwise_conv2d",
    "reference",
    "scale_channels",
    "set_num_threads",
    "softmax",
]
