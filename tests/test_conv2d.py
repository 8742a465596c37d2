"""conv2d, depthwise_conv2d and pointwise_conv2d against the NumPy reference."""

import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _compare, _params, reference

from conftest import Device
from helpers import ISA_CHOICES, check_against_reference, num_threads, random_array

ACTIVATIONS = [None, "relu", "relu6", "sigmoid", "tanh", "silu"]
hsettings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    c_in = groups * draw(st.integers(1, 7))
    c_out = groups * draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.integers(0, 2),
            st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))),
        )
    )
    # Large enough for the dilated window to fit the unpadded input.
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, 14))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, 14))
    n = draw(st.integers(1, 3))
    return dict(
        x_shape=(n, h, w, c_in), w_shape=(kh, kw, c_in // groups, c_out), bias=draw(st.booleans()),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    activation=draw(st.sampled_from(ACTIVATIONS))),
    )


@hsettings
@given(case=conv_cases())
def test_conv2d_random_geometry(case, device, isa, rng):
    x = random_array(rng, case["x_shape"])
    w = random_array(rng, case["w_shape"])
    b = random_array(rng, (case["w_shape"][3],)) if case["bias"] else None
    k = case["w_shape"][0] * case["w_shape"][1] * case["w_shape"][2]
    check_against_reference(device, "conv2d", [x, w, b], case["kwargs"], terms=k)


@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((1, 32, 32, 1), (5, 5, 1, 6), {}),  # LeNet C1
        ((2, 23, 23, 3), (11, 11, 3, 16), dict(stride=4)),  # AlexNet-like first layer
        ((1, 14, 14, 33), (3, 3, 33, 70), dict(padding="same")),  # channels past the 16/64 blocks
        ((2, 9, 9, 300), (3, 3, 300, 20), dict(padding=1)),  # C_in past one chunk
        ((1, 7, 7, 8), (3, 3, 8, 300), dict(padding=1, activation="relu")),  # C_out past one chunk
        ((1, 12, 10, 16), (3, 3, 4, 24), dict(groups=4, stride=2, padding="same")),
        ((1, 11, 13, 6), (3, 3, 6, 5), dict(dilation=3, padding="same")),
        ((3, 1, 1, 5), (1, 1, 5, 4), {}),  # 1x1 image
        ((1, 5, 5, 2), (5, 5, 2, 3), {}),  # 1x1 output
        ((1, 6, 8, 4), (2, 3, 4, 4), dict(stride=(2, 3), padding=((0, 3), (2, 1)))),
        ((1, 9, 9, 4), (3, 3, 4, 4), dict(stride=5, padding="same")),  # stride > kernel
        # Register-tiled kernel edges: channel blocks of 8/16/32, tiles of 6/8 pixels spanning rows.
        ((1, 7, 5, 64), (3, 3, 64, 40), dict(padding="same", activation="relu6")),  # C_out % 16 != 0
        ((2, 6, 7, 3), (3, 3, 3, 17), dict(padding=1)),  # C_in < 8, batch > 1, 84 pixels % 6 == 0
        ((3, 5, 5, 5), (3, 3, 5, 33), dict(padding=1, activation="silu")),  # 75 pixels, partial tile
        ((1, 11, 11, 2), (5, 5, 2, 7), dict(padding=(2, 3), stride=2)),  # every tile at a border
        ((1, 16, 16, 8), (3, 3, 8, 16), dict(padding="same", dilation=(2, 3))),  # gathered windows
        ((1, 4, 30, 1), (1, 7, 1, 9), dict(padding=((0, 0), (3, 3)))),  # wide kernel, C_in = 1
        # groups > 1: one segment per tap, group g shifted by g * C_in / groups channels.
        ((2, 9, 9, 24), (3, 3, 8, 63), dict(groups=3, padding="same")),  # 21 per group: a partial block
        ((1, 10, 9, 64), (3, 3, 4, 64), dict(groups=16, stride=2, padding=1, activation="relu")),  # ResNeXt-like
        ((1, 13, 11, 40), (5, 5, 20, 70), dict(groups=2, padding="same", dilation=(1, 2), activation="silu")),
        ((2, 7, 8, 12), (1, 1, 3, 36), dict(groups=4)),  # grouped 1x1
        ((1, 6, 6, 9), (3, 2, 3, 3), dict(groups=3, padding=((2, 0), (1, 3)), stride=(1, 2))),  # 1 channel per group
    ],
)
def test_conv2d_shapes(x_shape, w_shape, kwargs, device, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    check_against_reference(device, "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


# Narrow outputs of stride-1 and stride-2 rows (cpp/conv2d.cpp, slide_conv: each input column
# broadcast once for the pixels it meets): rows cut into tiles of up to 16 / 8 pixels with a shorter
# last one, the tiles that reach padding columns on a copy with them, kernel rows outside the input skipped. C_out (per group) up to 4 takes
# it on every ISA (SSE's vector), up to 8 on AVX2 and 16 on AVX-512, where the lanes-across-groups
# kernel does not (a group that fills the vector: 4 on SSE, 8 on AVX2, 16 on AVX-512; or C_in / groups
# past a vector). "direct" keeps Winograd away; the weights are also given packed.
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((4, 14, 14, 6), (5, 5, 6, 16), {}),  # LeNet C3: rows of 10
        ((2, 9, 23, 20), (3, 3, 20, 4), dict(padding="same", activation="tanh")),  # 23 = 12 + 11 or 8 + 8 + 7
        ((1, 17, 12, 24), (5, 5, 24, 3), dict(stride=(2, 1), dilation=(2, 1), padding=((3, 1), (2, 2)))),
        ((1, 8, 37, 9), (3, 3, 9, 7), dict(padding=((0, 0), (0, 2)), activation="relu")),  # right padding only
        ((3, 5, 4, 33), (5, 3, 33, 1), dict(padding=((4, 4), (1, 1)), activation="silu")),  # rows wholly padding
        ((1, 3, 40, 2), (3, 5, 2, 12), dict(padding=((1, 1), (4, 0)))),  # left padding wider than half a window
        ((2, 6, 19, 70), (3, 3, 70, 16), dict(padding=1, activation="sigmoid")),
        # groups: each group's channels at its offset in the pixel, its own weights and bias
        ((1, 9, 13, 24), (3, 3, 8, 24), dict(groups=3, padding="same", activation="relu")),  # RegNet-like
        ((2, 7, 11, 64), (5, 5, 4, 64), dict(groups=16, padding=2)),
        ((1, 8, 12, 40), (5, 5, 8, 40), dict(groups=5, padding=((2, 2), (0, 3)), activation="silu")),
        ((1, 6, 20, 32), (3, 5, 16, 32), dict(groups=2, padding=((1, 0), (2, 2)))),
        ((2, 5, 17, 48), (3, 3, 24, 16), dict(groups=2, padding=((3, 3), (1, 1)), activation="tanh")),  # 24 in, 8 out
        # stride 2 along the rows: 2R + 1 input columns (3x3) for R pixels
        ((1, 13, 17, 24), (3, 3, 8, 24), dict(groups=3, stride=2, padding="same", activation="relu")),
        ((2, 11, 21, 16), (5, 5, 16, 6), dict(stride=(1, 2), padding=((2, 1), (2, 2)))),
        ((1, 9, 40, 64), (3, 3, 4, 64), dict(groups=16, stride=2, padding=((0, 0), (3, 1)))),  # windows all padding
        ((1, 10, 38, 32), (5, 3, 16, 32), dict(groups=2, stride=2, padding=1, activation="relu6")),
        ((3, 6, 36, 12), (3, 5, 12, 7), dict(stride=2, padding="same", activation="silu")),  # 18 = 16 + 2 or 8 + 8 + 2
    ],
)
def test_conv2d_narrow_sliding_rows(x_shape, w_shape, kwargs, device, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    for threads in (1, 2):
        with num_threads(threads):
            got = check_against_reference(device, "conv2d", [x, w, b], kwargs,
                                          terms=w_shape[0] * w_shape[1] * w_shape[2], algorithm="direct")
            if device.name == "cpu":
                packed = fastconv.conv2d(x, fastconv.pack_weights(w), b, **kwargs, algorithm="direct")
                np.testing.assert_array_equal(packed, got)


# Groups of fewer output channels than a vector holds (cpp/conv2d_grouped.cpp: the lanes run across
# groups, one permutation of an input vector per input channel of a group). AVX-512 / AVX2 / SSE hold
# 16 / 8 / 4 channels, so each ISA takes some of these cases there and the rest on the tiled engine,
# as it does where a vector's groups need more than one input vector (C_in / groups > C_out / groups).
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((1, 20, 21, 128), (3, 3, 4, 128), dict(groups=32, padding="same")),  # ResNeXt stage 1
        ((2, 15, 13, 256), (3, 3, 8, 256), dict(groups=32, stride=2, padding=1, activation="relu")),
        ((3, 9, 10, 32), (3, 3, 2, 64), dict(groups=16, padding="same", activation="silu")),  # 2 in, 4 out
        # 12 out per group: the vectors span groups unevenly
        ((1, 8, 9, 60), (3, 3, 6, 120), dict(groups=10, padding=1, activation="sigmoid")),
        # C_out not a multiple of the vector: the last vector overlaps
        ((1, 11, 12, 30), (3, 3, 3, 50), dict(groups=10, padding=1, activation="tanh")),
        ((1, 7, 5, 48), (3, 3, 3, 32), dict(groups=16, padding="same")),  # rows of 5 columns: 4-pixel blocks
        ((2, 9, 7, 64), (3, 3, 4, 64), dict(groups=16, padding="same")),  # one 7-pixel block, padding both sides
        ((2, 6, 3, 64), (3, 3, 4, 64), dict(groups=16, padding=1, activation="relu6")),  # 3 columns: pixel by pixel
        ((1, 1, 17, 32), (3, 3, 4, 32), dict(groups=8, padding=1)),  # one row: two kernel rows in the padding
        ((1, 9, 14, 64), (3, 3, 4, 64), dict(groups=16, padding=((3, 1), (4, 2)))),  # outputs wholly in the padding
        ((1, 12, 19, 64), (3, 3, 8, 64), dict(groups=8, stride=(2, 3), padding=((0, 2), (1, 1)))),
        ((2, 13, 16, 40), (5, 3, 4, 40), dict(groups=10, dilation=(2, 3), padding="same")),  # tap by tap
        ((1, 10, 11, 36), (1, 1, 3, 48), dict(groups=12)),  # grouped 1x1
        ((1, 9, 9, 48), (3, 3, 8, 24), dict(groups=6, padding=1)),  # 8 in, 4 out: the tiled engine
    ],
)
def test_grouped_conv2d_few_channels_per_group(x_shape, w_shape, kwargs, device, isa, rng):
    x = random_array(rng, x_shape, scale=3.0)  # wide enough to reach the activations' tails
    w, b = random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    check_against_reference(device, "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


@pytest.mark.parametrize(
    "x_shape, w_shape, groups, min_lanes",
    [
        ((1, 20, 21, 128), (3, 3, 4, 128), 32, 8),  # 4 out per group: grouped wherever a vector holds more
        ((1, 14, 14, 256), (3, 3, 8, 256), 32, 16),  # 8: AVX-512 only (AVX2's 8 lanes are one group)
        ((1, 8, 9, 60), (3, 3, 6, 120), 10, 16),
        ((1, 9, 9, 48), (3, 3, 8, 24), 6, 0),  # 8 in, 4 out: a vector's 4 groups read 32 channels
        ((1, 14, 14, 512), (3, 3, 16, 512), 32, 0),  # 16 out: the tiled engine fills the vector
    ],
)
def test_grouped_conv2d_kernel_choice(x_shape, w_shape, groups, min_lanes, isa):
    """min_lanes: the fewest vector lanes (floats) that take the grouped kernel; 0: never."""
    p = _params.conv2d_problem("conv2d", x_shape, w_shape, None, 1, 1, 1, groups, None)
    lanes = {"portable": 4, "avx2": 8}.get(isa, 16)
    assert fastconv._cpu.conv2d_kernel(p) == ("grouped" if lanes >= min_lanes > 0 else "direct")


@hsettings
@given(
    groups=st.integers(2, 24), c_in_g=st.integers(2, 8), c_out_g=st.integers(1, 15),
    k=st.tuples(st.integers(1, 4), st.integers(1, 4)), stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.integers(1, 2), padding=st.sampled_from(["valid", "same", 1]),
    hw=st.tuples(st.integers(7, 13), st.integers(7, 21)), n=st.integers(1, 3), bias=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
)
def test_grouped_conv2d_random(groups, c_in_g, c_out_g, k, stride, dilation, padding, hw, n, bias, activation, device,
                               isa, rng):
    x = random_array(rng, (n, *hw, groups * c_in_g))
    w = random_array(rng, (*k, c_in_g, groups * c_out_g))
    b = random_array(rng, (groups * c_out_g,)) if bias else None
    kwargs = dict(groups=groups, stride=stride, dilation=dilation, padding=padding, activation=activation)
    check_against_reference(device, "conv2d", [x, w, b], kwargs, terms=k[0] * k[1] * c_in_g)


@hsettings
@given(
    c=st.integers(1, 40), mult=st.sampled_from([1, 1, 2, 3]), k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2), dilation=st.integers(1, 2), padding=st.sampled_from(["valid", "same", 1, 2]),
    hw=st.tuples(st.integers(9, 17), st.integers(9, 17)), n=st.integers(1, 2), bias=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
)
def test_depthwise_random(c, mult, k, stride, dilation, padding, hw, n, bias, activation, device, isa, rng):
    x = random_array(rng, (n, *hw, c))
    w = random_array(rng, (k, k, c, mult) if mult > 1 or c % 2 else (k, k, c))
    b = random_array(rng, (c * mult,)) if bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, activation=activation)
    check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)


@hsettings
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(1, 70)),
    c_out=st.integers(1, 300), bias=st.booleans(), activation=st.sampled_from(ACTIVATIONS),
)
def test_pointwise_random(shape, c_out, bias, activation, device, isa, rng):
    x, w = random_array(rng, shape), random_array(rng, (shape[3], c_out))
    b = random_array(rng, (c_out,)) if bias else None
    check_against_reference(device, "pointwise_conv2d", [x, w, b], dict(activation=activation), terms=shape[3])


# The vector paths of cpp/depthwise.cpp: interior blocks of 8 output pixels (3x3 / 5x5, stride 1 /
# 2), clipped border pixels, channel counts past / below one vector, M > 1, every activation.
@pytest.mark.parametrize(
    "x_shape, k, mult, kwargs",
    [
        ((1, 20, 37, 19), 3, 1, dict(padding=1)),  # C not a multiple of 8 or 16: overlapping last block
        ((2, 21, 23, 13), 3, 1, dict(stride=2, padding=1)),  # stride 2, odd sizes
        ((1, 17, 30, 40), 5, 1, dict(padding=2, activation="silu")),
        ((1, 19, 41, 24), 5, 1, dict(stride=2, padding=((1, 2), (2, 1)), activation="tanh")),
        ((1, 12, 26, 16), 3, 1, dict(stride=(1, 2), padding=((0, 3), (3, 0)), activation="sigmoid")),
        ((1, 14, 33, 17), 3, 1, dict(stride=(2, 1), dilation=(2, 1), padding="same", activation="relu6")),
        ((1, 9, 1, 16), 3, 1, dict(padding=1, activation="relu")),  # W = 1: border pixels only
        ((1, 11, 10, 16), 3, 1, dict(padding=1)),  # interior narrower than one block
        # dilated 3- and 5-wide rows at stride 1 (row_staged_dilated: each column phase in blocks of
        # 8 / 4 / 1 of its pixels): phases of 15 and 14 pixels, of 5-6 (blocks of 4), of 1-2 (single
        # pixels), dilation only across, a channel multiplier, C past one vector by a few channels
        ((1, 10, 29, 20), 3, 1, dict(dilation=2, padding="same")),
        ((2, 13, 22, 24), 3, 1, dict(dilation=4, padding="same", activation="relu6")),
        ((1, 11, 9, 19), 3, 1, dict(dilation=(1, 4), padding=((0, 2), (5, 3)), activation="silu")),
        ((1, 18, 33, 16), 5, 1, dict(dilation=3, padding="valid")),
        ((1, 12, 17, 8), 5, 2, dict(dilation=2, padding="same", activation="relu")),
        ((1, 14, 14, 40), 3, 1, dict(dilation=(2, 6), stride=(2, 1), padding="same")),
        ((1, 13, 27, 5), 3, 1, dict(padding=1)),  # C below one vector
        ((1, 12, 20, 8), 3, 2, dict(stride=2, padding=1)),  # channel multiplier
        ((2, 15, 24, 3), 5, 3, dict(padding=2, activation="silu")),
        # 7x7 (row_staged_general): widths that are multiples of 7 go in blocks of 7
        ((1, 14, 14, 40), 7, 1, dict(padding="same", activation="silu")),
        ((2, 21, 21, 24), 7, 1, dict(padding=3)),
        ((1, 14, 13, 20), 7, 1, dict(stride=2, padding="same", activation="relu")),  # 7 output columns
        ((1, 9, 28, 33), 7, 1, dict(padding="same")),
        ((1, 12, 56, 16), 7, 1, dict(padding="same")),  # 56: blocks of 8
        # bands of rows a column strip at a time (rows_staged_strips): 41 output rows as several bands
        # per image (the last shorter) over 3 images, a last channel block overlapping, kernel rows
        # clipped by the padding at the top and bottom of the image; stride 2; an even kernel width
        ((3, 40, 23, 36), 7, 1, dict(padding=((5, 2), (3, 3)), activation="relu6")),
        ((2, 37, 30, 20), 7, 1, dict(stride=2, padding="same", activation="silu")),
        ((1, 35, 19, 16), 6, 1, dict(padding="valid")),
    ],
)
def test_depthwise_vector_paths(x_shape, k, mult, kwargs, device, isa, rng):
    c = x_shape[3]
    x = random_array(rng, x_shape, scale=3.0)  # wide enough to reach the activations' tails
    w, b = random_array(rng, (k, k, c, mult)), random_array(rng, (c * mult,))
    check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)


# The staged rows of cpp/depthwise.cpp: channel multiplier M > 1 (expanded copies), narrow maps
# (blocks of 8 / 4 / 1 pixels), W = 1, strides and paddings larger than the kernel's reach.
@pytest.mark.parametrize("mult", [2, 3])
@pytest.mark.parametrize(
    "x_shape, k, kwargs",
    [
        ((1, 13, 21, 8), 3, dict(stride=1, padding=1)),
        ((2, 15, 19, 5), 3, dict(stride=2, padding=((0, 2), (1, 0)), activation="relu")),
        ((1, 9, 1, 12), 3, dict(padding=1)),  # W = 1
        ((1, 11, 6, 7), 5, dict(stride=(1, 2), padding=2, activation="silu")),
        ((1, 17, 23, 9), 5, dict(stride=2, padding=((2, 1), (3, 2)), dilation=(2, 1))),
        ((1, 5, 3, 16), 3, dict(stride=(2, 1), padding=((3, 3), (2, 2)))),  # rows wholly in padding
    ],
)
def test_depthwise_multiplier(x_shape, k, mult, kwargs, device, isa, rng):
    c = x_shape[3]
    x, w, b = random_array(rng, x_shape), random_array(rng, (k, k, c, mult)), random_array(rng, (c * mult,))
    check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)


@pytest.mark.parametrize("c", [1, 7, 8, 9, 16, 23, 40])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_narrow_and_odd(c, k, stride, device, isa, rng):
    for hw in [(1, 1), (9, 3), (11, 7), (13, 15), (19, 17)]:
        x = random_array(rng, (1, *hw, c))
        w, b = random_array(rng, (k, k, c)), random_array(rng, (c,))
        check_against_reference(device, "depthwise_conv2d", [x, w, b], dict(stride=stride, padding=k // 2), terms=k * k)


# row_narrow in cpp/depthwise.cpp (C below one vector, M = 1): each tap loads a full vector that
# reaches into the next pixel's channels, each pixel stores a full vector over the next pixel's
# outputs, and the rows that touch an image's last input row load partial vectors. Batches of 3
# (the last image's end), widths of 1-17, strides, dilations and paddings; then non-finite inputs
# in one channel must not reach the others.
@pytest.mark.parametrize("c", [2, 3, 5, 7])
@pytest.mark.parametrize("k, stride, dilation, padding", [(3, 1, 1, "valid"), (3, 2, 1, "same"), (5, 1, 2, 2),
                                                          (1, 3, 1, 0), (7, 1, 1, 3), (3, 1, 1, ((2, 0), (0, 3)))])
def test_depthwise_few_channels(c, k, stride, dilation, padding, device, isa, rng):
    span = (k - 1) * dilation + 1
    pads = {"valid": (0, 0), "same": (span, span)}.get(padding) if isinstance(padding, str) else (
        (2 * padding, 2 * padding) if isinstance(padding, int) else (sum(padding[0]), sum(padding[1])))
    for hw in [(1, 1), (4, 9), (10, 3), (13, 17)]:
        if hw[0] + pads[0] < span or hw[1] + pads[1] < span:
            continue
        x = random_array(rng, (3, *hw, c))
        w, b = random_array(rng, (k, k, c)), random_array(rng, (c,))
        kwargs = dict(stride=stride, dilation=dilation, padding=padding, activation="silu")
        check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)
    x = random_array(rng, (2, 9, 11, c))
    w = random_array(rng, (k, k, c))
    dirty = x.copy()
    dirty[..., 0] = np.inf
    dirty[1, ::2, :, 0] = np.nan
    kwargs = dict(stride=stride, dilation=dilation, padding="same" if stride == 1 else 1)
    got = device.get(fastconv.depthwise_conv2d(device.put(dirty), device.put(w), **kwargs))
    want = reference.depthwise_conv2d(x.astype(np.float64), w.astype(np.float64), **kwargs)
    _compare.assert_close(got[..., 1:], want[..., 1:], terms=k * k, what=f"channels 1-{c - 1} beside a non-finite one")


# Channel counts that are multiples of 512 are staged with each staged pixel one cache line longer
# than its channels (cpp/depthwise.cpp, kAliasedChannels): single rows and row pairs, 3x3 / 5x5,
# strides 1 / 2, output widths below and above one block of 8, and an unaligned input.
@pytest.mark.parametrize("c", [512, 1024])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_aliased_channels_staged(c, k, stride, device, isa, rng):
    for shape, padding in [((1, 7, 7, c), "same"), ((2, 9, 14, c), "valid"), ((1, 12, 19, c), 1)]:
        x, w, b = random_array(rng, shape), random_array(rng, (k, k, c)), random_array(rng, (c,))
        kwargs = dict(stride=stride, padding=padding, activation="relu6")
        check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)
    flat = random_array(rng, (1 + 5 * 6 * c,))
    x = flat[1:].reshape(1, 5, 6, c)  # 4 bytes past NumPy's alignment
    w = random_array(rng, (k, k, c))
    check_against_reference(device, "depthwise_conv2d", [x, w, None], dict(stride=stride, padding="same"), terms=k * k)
    # A channel multiplier whose C * M is the multiple of 512 (channels expanded into padded pixels).
    x, w = random_array(rng, (1, 9, 10, c // 2)), random_array(rng, (k, k, c // 2, 2))
    check_against_reference(device, "depthwise_conv2d", [x, w, None], dict(stride=stride, padding="same"), terms=k * k)


# row_direct's border blocks in cpp/depthwise.cpp: every left padding and right overhang from 0 to
# KW (KW itself is staged) for 3x3 / 5x5, stride 1 / 2, and output widths 15-24, which give every
# remainder between the two border blocks (none, one block of 4, one overlapping block of 8).
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_border_blocks(k, stride, device, isa, rng):
    c = 12
    w, b = random_array(rng, (k, k, c)), random_array(rng, (c,))
    for pad_left in range(k + 1):
        for pad_right in range(k + 1):
            first = 14 * stride + k - pad_left - pad_right
            for width in range(first, first + 10 * stride):
                x = random_array(rng, (1, 3, width, c))
                kwargs = dict(stride=stride, padding=((1, 1), (pad_left, pad_right)), activation="relu6")
                check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)


# Narrow rows in cpp/depthwise.cpp: output widths 1-15, padding 0 to KW - 1 a side. row_direct's
# two border blocks of 8 (widths 8-15; 5-7 at 9-13 with 16 lanes, 7 at 14) or 4 (widths 4-7),
# overlapping on odd widths, where each meets the padding
# on its own side only, staged rows elsewhere; 5 output rows (3x3 row pairs and single rows),
# batch 2. C = 20: at least one vector and not a multiple of one (AVX2 and AVX-512).
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_narrow_rows(k, stride, device, isa, rng):
    c = 20
    w, b = random_array(rng, (k, k, c)), random_array(rng, (c,))
    height = 4 * stride + k - 2
    for pad_left in range(k):
        for pad_right in range(k):
            for out_w in range(1, 16):
                width = (out_w - 1) * stride + k - pad_left - pad_right
                if width < 1:
                    continue
                x = random_array(rng, (2, height, width, c))
                kwargs = dict(stride=stride, padding=((1, 1), (pad_left, pad_right)), activation="relu6")
                check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)


# row_pair in cpp/depthwise.cpp (3x3, stride_h = stride_w): two output rows per pass where both
# windows lie inside the input vertically, single rows elsewhere (top and bottom padding, the last
# row of an odd height); padding 0-2 on every side and output widths 16-19 (every remainder of the
# pair blocks of 4); batch 2, so an image's last row and the next image's first are neighbours.
@pytest.mark.parametrize("stride", [1, 2])
def test_depthwise_row_pairs(stride, device, isa, rng):
    c = 24
    w, b = random_array(rng, (3, 3, c)), random_array(rng, (c,))
    for pad_top, pad_bottom in [(0, 0), (1, 1), (2, 0), (0, 2)]:
        for pad_left in range(3):
            for pad_right in range(3):
                for out_h in (6, 7):
                    height = (out_h - 1) * stride + 3 - pad_top - pad_bottom
                    for out_w in range(16, 20):
                        width = (out_w - 1) * stride + 3 - pad_left - pad_right
                        x = random_array(rng, (2, height, width, c))
                        kwargs = dict(stride=stride, padding=((pad_top, pad_bottom), (pad_left, pad_right)))
                        check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=9)


# 5x5 row pairs (cpp/depthwise.cpp, row_pair; AVX-512): 14 columns (two border blocks of 7), stride 2
# from 24 columns and stride 1 from 48 (border blocks of 8, interior blocks and an overlapping last
# one), padding of 0-4 columns a side, odd heights (single rows at the top and bottom), batch 2.
@pytest.mark.parametrize("shape, stride, padding", [
    ((1, 14, 14, 48), 1, 2),
    ((2, 15, 14, 32), 1, ((2, 2), (1, 3))),
    ((1, 27, 27, 17), 2, ((1, 2), (2, 2))),
    ((2, 13, 51, 48), 2, ((2, 1), (4, 0))),
    ((1, 11, 50, 32), 1, ((0, 2), (2, 2))),
    ((2, 9, 57, 64), 1, ((2, 2), (1, 4))),
])
def test_depthwise_5x5_row_pairs(shape, stride, padding, isa, rng):
    c = shape[-1]
    x, w, b = random_array(rng, shape), random_array(rng, (5, 5, c)), random_array(rng, (c,))
    check_against_reference(Device("cpu"), "depthwise_conv2d", [x, w, b], dict(stride=stride, padding=padding), terms=25)


# pixel_block's vector-aligned channel blocks (cpp/depthwise.cpp): C a multiple of the vector,
# the input (and output) at every 16-byte offset from a 64-byte boundary; 144 channels are enough
# blocks for the shift (kShiftMinBlocks), 16 and 48 too few.
@pytest.mark.parametrize("c", [16, 48, 144])
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_depthwise_misaligned_input(k, stride, c, isa, rng):
    shape = (1, 9, 17 * stride + 3, c)  # 9 rows: row pairs inside for 3x3 at both strides
    w, b = random_array(rng, (k, k, c)), random_array(rng, (c,))
    size = int(np.prod(shape))
    for offset in range(0, 16, 4):  # floats past a 64-byte boundary
        buffer = np.empty(size + 16, np.float32)
        start = (-(buffer.ctypes.data // 4) + offset) % 16
        x = buffer[start:start + size].reshape(shape)
        x[...] = random_array(rng, shape)
        assert x.ctypes.data % 64 == 4 * offset
        check_against_reference(Device("cpu"), "depthwise_conv2d", [x, w, b], dict(stride=stride, padding=k // 2), terms=k * k)


# Input + output past stage_min_bytes() (twice the planned cache: 16 MiB with the 8 MiB set here, in
# a child process since the setting is read once per process): the staged path for M = 1, and an
# output past stream_min_bytes() (2 MiB): non-temporal stores. Odd heights and uneven padding: single
# rows and row pairs (3x3, stride_h = stride_w) at the top and bottom, pairs inside.
@pytest.mark.parametrize("shape, k, stride, padding", [
    ((9, 40, 40, 160), 3, 1, 1),
    ((9, 41, 43, 160), 3, 1, ((0, 1), (2, 1))),
    ((9, 79, 81, 160), 3, 2, ((1, 0), (0, 2))),
    ((9, 39, 40, 160), 5, 1, 2),
    ((500, 40, 3, 36), 3, 1, 1),  # single pixels, C not a multiple of the vector: stream_copy's tail
])
def test_depthwise_large_batch_is_staged(shape, k, stride, padding, rng):
    import os
    import subprocess
    import sys

    # The same check as in process (check_against_reference), from this directory's helpers.
    script = f"""
import sys
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import numpy as np
from conftest import Device
from helpers import check_against_reference, random_array
rng = np.random.default_rng({int(rng.integers(2**32))})
shape, k = {shape!r}, {k}
x = random_array(rng, shape)
w, b = random_array(rng, (k, k, shape[3])), random_array(rng, (shape[3],))
kwargs = dict(stride={stride!r}, padding={padding!r}, activation="relu6")
check_against_reference(Device("cpu"), "depthwise_conv2d", [x, w, b], kwargs, terms=k * k)
print("ok")
"""

    for isa in ISA_CHOICES:
        env = dict(os.environ, FASTCONV_CACHE_BYTES=str(8 << 20), FASTCONV_ISA=isa)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (isa, done.stderr)


# FASTCONV_CACHE_BYTES sets the cache the size rules plan for (read once per process, so in a child
# process): at 1 byte every depthwise layer of at least one vector of channels is staged and, C a
# multiple of 4, streamed; small maps, both kernel widths and strides, pairs and single rows.
def test_depthwise_cache_size_setting_stages_everything(tmp_path):
    script = """
import numpy as np
import fastconv
from fastconv import _compare, reference
rng = np.random.default_rng(5)
for shape, k, stride in [((2, 9, 11, 16), 3, 1), ((1, 12, 13, 36), 3, 2), ((2, 8, 9, 20), 5, 1), ((1, 11, 17, 48), 5, 2)]:
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((k, k, shape[3])).astype(np.float32)
    got = fastconv.depthwise_conv2d(x, w, stride=stride, padding="same", activation="relu6")
    want = reference.depthwise_conv2d(x.astype(np.float64), w.astype(np.float64), stride=stride, padding="same", activation="relu6")
    _compare.assert_close(got, want, terms=k * k, what=str(shape))
print("ok")
"""
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTCONV_CACHE_BYTES="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# FASTCONV_L2_BYTES sets the L2 the depthwise channel slabs plan for (read once per process, so in
# a child process under each ISA): small values split the general path's staged rows (7x7, 4x4, 6x6,
# dilated 3x3) into slabs of one or a few vectors, with a last slab narrower or wider than the rest,
# batches whose images restage every slab, and each activation applied per pixel of a slab.
@pytest.mark.parametrize("l2_bytes", [1, 2000, 20000, 200000])
def test_depthwise_channel_slabs(l2_bytes, rng):
    script = f"""
import numpy as np
import fastconv
from fastconv import _compare, reference
rng = np.random.default_rng({int(rng.integers(2**32))})
cases = [((2, 9, 11, 40), 7, 1, 1, "same"), ((1, 12, 13, 48), 7, 2, 1, "same"), ((2, 8, 9, 33), 4, 1, 1, "valid"),
         ((1, 11, 17, 64), 3, 2, 2, "same"), ((1, 10, 10, 16), 7, 1, 1, "same"), ((1, 13, 12, 270), 6, 2, 1, "same"),
         ((3, 9, 9, 50), 3, 1, 3, ((2, 1), (3, 0)))]
for shape, k, stride, dilation, padding in cases:
    for activation in (None, "relu6", "silu"):
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal((k, k, shape[3])).astype(np.float32)
        b = rng.standard_normal(shape[3]).astype(np.float32)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, activation=activation)
        got = fastconv.depthwise_conv2d(x, w, b, **kwargs)
        want = reference.depthwise_conv2d(*(a.astype(np.float64) for a in (x, w, b)), **kwargs)
        _compare.assert_close(got, want, terms=k * k, what=str((shape, k, kwargs)))
print("ok")
"""
    import os
    import subprocess
    import sys

    for isa in ISA_CHOICES:
        env = dict(os.environ, FASTCONV_L2_BYTES=str(l2_bytes), FASTCONV_ISA=isa)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (isa, done.stderr)


# Bands of rows on the direct path (direct_band_rows: the input rows an output row reads past half
# of FASTCONV_L2_BYTES) and column blocks down them (columns_pay: those rows past FASTCONV_L1_BYTES
# and within a quarter of L2, no pairs); the sizes are read once per process, so in a child process
# under each ISA. 3x3 and 5x5, strides 1 and 2, pairs (with single rows before and after them at the
# padded borders) and single rows, bands of 2-16 rows with a shorter last one, kernel heights other
# than the width, stride_h other than stride_w, dilation_h. At an L2 of 1 byte every such layer runs
# in bands of rows, at 40000 only the widest; at an L1 of 1 byte and a large L2 every layer without
# pairs runs in columns, with an L2 of 40000 the narrow ones.
@pytest.mark.parametrize("l1_bytes, l2_bytes", [("", 1), ("", 40000), (1, 10**9), (1, 40000)])
def test_depthwise_direct_bands(l1_bytes, l2_bytes, rng):
    script = f"""
import numpy as np
import fastconv
from fastconv import _compare, reference
rng = np.random.default_rng({int(rng.integers(2**32))})
cases = [((2, 21, 19, 32), (3, 3), 1, 1, "same"), ((1, 23, 30, 48), (3, 3), 2, 1, "same"),
         ((2, 17, 17, 40), (5, 5), 1, 1, "same"), ((1, 14, 14, 64), (5, 5), 1, 1, "same"),
         ((1, 37, 50, 32), (5, 5), 1, 1, "same"), ((1, 29, 51, 16), (5, 5), 2, 1, ((2, 1), (2, 2))),
         ((3, 9, 12, 20), (3, 3), 1, 1, "valid"), ((1, 134, 20, 16), (3, 3), 1, 1, "same"),
         ((2, 15, 18, 24), (4, 3), 1, 1, ((1, 2), (1, 1))), ((1, 19, 22, 16), (3, 3), (2, 1), 1, "same"),
         ((2, 16, 21, 32), (3, 5), 1, (2, 1), "same"), ((1, 40, 90, 144), (5, 5), 1, 1, "valid")]
for shape, k, stride, dilation, padding in cases:
    for activation in (None, "relu6", "silu"):
        x = rng.standard_normal(shape).astype(np.float32)
        w = rng.standard_normal(k + (shape[3],)).astype(np.float32)
        b = rng.standard_normal(shape[3]).astype(np.float32)
        kwargs = dict(stride=stride, padding=padding, dilation=dilation, activation=activation)
        got = fastconv.depthwise_conv2d(x, w, b, **kwargs)
        want = reference.depthwise_conv2d(*(a.astype(np.float64) for a in (x, w, b)), **kwargs)
        _compare.assert_close(got, want, terms=k[0] * k[1], what=str((shape, k, kwargs)))
print("ok")
"""
    import os
    import subprocess
    import sys

    for isa in ISA_CHOICES:
        env = dict(os.environ, FASTCONV_L1_BYTES=str(l1_bytes), FASTCONV_L2_BYTES=str(l2_bytes), FASTCONV_ISA=isa)
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() == "ok", (isa, done.stderr)


# 3x3 row pairs on the staged path (row_staged_pair), small enough not to stream: maps narrower than
# 16 columns, and padding of 3 columns on a side (wider than row_direct takes), with M = 1 and 2,
# strides 1 and 2, padding on every side, odd and even output heights, batch 2.
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_staged_row_pairs(stride, mult, device, isa, rng):
    c = 12
    w, b = random_array(rng, (3, 3, c, mult)), random_array(rng, (c * mult,))
    cases = [(out_w, pl, pr) for out_w in (4, 5, 7, 9) for pl, pr in [(0, 0), (1, 2), (2, 1)]] + [(17, 3, 1), (18, 1, 3)]
    for pad_top, pad_bottom in [(0, 0), (1, 1), (2, 0), (0, 2)]:
        for out_h in (6, 7):
            height = (out_h - 1) * stride + 3 - pad_top - pad_bottom
            for out_w, pad_left, pad_right in cases:
                width = max(1, (out_w - 1) * stride + 3 - pad_left - pad_right)
                x = random_array(rng, (2, height, width, c))
                kwargs = dict(stride=stride, padding=((pad_top, pad_bottom), (pad_left, pad_right)))
                check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=9)


# row_staged_general in cpp/depthwise.cpp: kernel widths other than 3 and 5 (pieces of up to 7
# columns: 9 = 7 + 2), dilation_w > 1 (interleaved column sets, segments of 4 paired across sets,
# single pixels on sets narrower than 4), stride with dilation (SW = stride / gcd in {1, 2}; stride 3
# undilated falls back), M = 2 / 3, C below / not a multiple of / a power-of-two multiple of the
# vector (padded staged pixels), windows wider than the image, 1-column outputs, activations over
# rows whose length is not a multiple of the 4-vector step; rows split into blocks of every width
# 4-8 (out_w 30 = 8 + 8 + 7 + 7, 19 = 7 + 6 + 6, 17 = 6 + 6 + 5, 16 = 8 + 8, 9 = 5 + 4, 4-8 one
# block) and, on AVX-512, 4-10 (30 = 10 + 10 + 10, 19 = 10 + 9, 17 = 9 + 8, 16 = 8 + 8, 13 = 7 + 6).
@pytest.mark.parametrize(
    "k, mult, kwargs",
    [
        ((7, 7), 1, dict(padding=3)),
        ((7, 7), 1, dict(padding=3, stride=2, activation="silu")),
        ((7, 7), 2, dict(padding=3, activation="relu6")),
        ((7, 7), 3, dict(padding=((3, 2), (1, 3)), stride=(1, 2))),
        ((9, 9), 1, dict(padding=4, activation="tanh")),
        ((1, 7), 1, dict(padding=((0, 0), (3, 3)))),
        ((7, 1), 2, dict(padding=((3, 3), (0, 0)), activation="relu")),
        ((4, 6), 1, dict(padding=((1, 2), (2, 3)), activation="sigmoid")),
        ((2, 2), 1, dict(stride=2)),
        ((3, 3), 1, dict(padding=2, dilation=2, activation="relu6")),
        ((3, 3), 2, dict(padding=3, dilation=3)),
        ((3, 3), 1, dict(padding=((1, 3), (4, 4)), dilation=(1, 4), activation="silu")),
        ((5, 5), 1, dict(padding=4, dilation=2)),
        ((3, 3), 1, dict(padding=2, dilation=2, stride=2)),
        ((3, 3), 1, dict(padding=3, dilation=3, stride=2, activation="relu")),
        ((7, 7), 1, dict(padding=6, dilation=2, stride=(1, 4))),
        ((3, 3), 1, dict(padding=1, stride=3)),
    ],
)
@pytest.mark.parametrize("c", [5, 12, 20, 128])
def test_depthwise_general_kernels(k, mult, kwargs, c, device, isa, rng):
    w, b = random_array(rng, (*k, c, mult)), random_array(rng, (c * mult,))
    for hw in [(15, 30), (9, 13), (6, 19), (3, 17), (2, 16), (4, 9), (5, 7), (3, 1), (1, 4)]:
        x = random_array(rng, (2 if hw[0] < 10 else 1, *hw, c), scale=3.0)
        try:
            check_against_reference(device, "depthwise_conv2d", [x, w, b], kwargs, terms=k[0] * k[1])
        except ValueError as e:  # the window does not fit this image: no output
            assert "empty" in str(e), e


# row_staged_general past stream_min_bytes() (8 MiB output): non-temporal stores through the block
# buffer (undilated, so each block's outputs are contiguous), activation on the buffer first; and
# dilated (no streaming) on the same size.
@pytest.mark.parametrize("dilation", [1, 2])
def test_depthwise_general_large_output(dilation, isa, rng):
    shape, c = (5, 48, 48, 196), 196
    w, b = random_array(rng, (1, 7, c)), random_array(rng, (c,))
    kwargs = dict(padding=((0, 0), (3 * dilation, 3 * dilation)), dilation=dilation, activation="relu6")
    check_against_reference(Device("cpu"), "depthwise_conv2d", [random_array(rng, shape), w, b], kwargs, terms=7)


def test_depthwise_nan_and_large_values(device, isa):
    x = np.ones((1, 12, 24, 20), np.float32)
    x[0, 5, 10, 3] = np.nan  # interior pixel
    x[0, 0, 0, 4] = np.nan  # corner: border path
    x[0, 7, 15, 6] = 1e30  # exp(+-huge) in sigmoid / tanh / silu must saturate, not give NaN
    x[0, 3, 20, 7] = -1e30
    w = np.ones((3, 3, 20), np.float32)
    for act in ACTIVATIONS:
        got = device.get(fastconv.depthwise_conv2d(device.put(x), device.put(w), padding=1, activation=act))
        want = reference.depthwise_conv2d(x.astype(np.float64), w.astype(np.float64), padding=1, activation=act)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(act))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6, err_msg=str(act))


def test_depthwise_activation_range(isa):
    # A 1x1 depthwise with unit weights is the activation alone (vec::activate): a dense sweep over
    # exp's range reduction (n rounding at odd multiples of ln2 / 2) and its clamps at -87 / 88, and
    # over tanh's rational form from tiny values (relative error, no cancellation) to its clamp at 9.
    tiny_to_clamp = np.geomspace(1e-30, 9.5, 4001)
    v = np.concatenate([np.linspace(-100, 100, 40001), np.arange(-130, 131) * (np.log(2) / 2), tiny_to_clamp, -tiny_to_clamp,
                        [-88.5, -88.0, -87.5, -87.0, -86.5, 86.5, 87.0, 87.5, 88.0, 88.5, 0.0, -0.0, 1e-30, -1e-30],
                        [8.99, 9.0, 9.01, 9.02, -9.0, -9.01]])
    v = np.resize(v, (len(v) + 15) // 16 * 16).astype(np.float32)
    x = v.reshape(1, 1, -1, 16)
    w = np.ones((1, 1, 16), np.float32)
    for act in ACTIVATIONS:
        got = fastconv.depthwise_conv2d(x, w, activation=act).ravel()
        want = reference.activate(v.astype(np.float64), act)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-30, err_msg=str(act))


def test_depthwise_equals_grouped_conv2d(device, rng):
    x, w = random_array(rng, (2, 10, 10, 6)), random_array(rng, (3, 3, 6, 2))
    dw = device.get(fastconv.depthwise_conv2d(device.put(x), device.put(w), stride=2, padding="same"))
    grouped = device.get(fastconv.conv2d(device.put(x), device.put(w.reshape(3, 3, 1, 12)), stride=2, padding="same", groups=6))
    np.testing.assert_allclose(dw, grouped, rtol=1e-5, atol=1e-5)


def test_pointwise_equals_1x1_conv2d(device, rng):
    x, w, b = random_array(rng, (2, 5, 7, 12)), random_array(rng, (12, 9)), random_array(rng, (9,))
    pw = device.get(fastconv.pointwise_conv2d(device.put(x), device.put(w), device.put(b), activation="relu6"))
    conv = device.get(fastconv.conv2d(device.put(x), device.put(w.reshape(1, 1, 12, 9)), device.put(b), activation="relu6"))
    np.testing.assert_allclose(pw, conv, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float64, ">f4"])
def test_other_float_dtypes_are_converted(dtype, rng):
    x, w = random_array(rng, (1, 6, 6, 3)), random_array(rng, (3, 3, 3, 2))
    got = fastconv.conv2d(x.astype(dtype), w.astype(dtype))
    assert got.dtype == np.float32
    want = reference.conv2d(x.astype(dtype).astype(np.float64), w.astype(dtype).astype(np.float64))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_non_contiguous_input(device, rng):
    base = random_array(rng, (2, 12, 16, 8))
    w = random_array(rng, (3, 3, 4, 5))
    view = device.put(base)[:, ::2, 1::2, ::2]  # a strided view, converted once by the backend
    got = device.get(fastconv.conv2d(view, device.put(w), padding="same"))
    want = reference.conv2d(base[:, ::2, 1::2, ::2].astype(np.float64), w.astype(np.float64), padding="same")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_inputs_are_not_modified(rng):
    x, w, b = random_array(rng, (1, 8, 8, 4)), random_array(rng, (3, 3, 4, 4)), random_array(rng, (4,))
    copies = [a.copy() for a in (x, w, b)]
    fastconv.conv2d(x, w, b, activation="relu")
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)


def test_nan_and_inf_propagate(device, isa):
    x = np.ones((1, 5, 5, 2), np.float32)
    x[0, 2, 2, 0] = np.nan
    x[0, 0, 0, 1] = np.inf
    w = np.ones((3, 3, 2, 1), np.float32)
    got = device.get(fastconv.conv2d(device.put(x), device.put(w)))
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got).all()  # every 3x3 window of a 5x5 image covers the centre
    x[0, 2, 2, 0] = 1.0
    got = device.get(fastconv.conv2d(device.put(x), device.put(w)))
    assert np.isinf(got[0, 0, 0, 0]) and np.isfinite(got[0, 2, 2, 0])


def test_calls_from_many_threads_agree(rng):
    from concurrent.futures import ThreadPoolExecutor

    x, w = random_array(rng, (2, 20, 20, 16)), random_array(rng, (3, 3, 16, 32))
    want = fastconv.conv2d(x, w, padding="same")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: fastconv.conv2d(x, w, padding="same"), range(16)))
    for got in results:
        np.testing.assert_array_equal(got, want)


# Calls in flight at once share the threads of set_num_threads: four Python threads calling on 2
# threads each must not start a 2-thread OpenMP team each (every calling thread's team is its own
# set of OS threads, kept while that thread lives). Counted in a child process from its /proc
# entry: OS threads present while the four callers are alive, after their calls, less those before.
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads in /proc")
def test_concurrent_calls_share_the_threads():
    script = """
import os, threading
import numpy as np
import fastconv
fastconv.set_num_threads(2)
rng = np.random.default_rng(3)
x = rng.standard_normal((8, 56, 56, 64)).astype(np.float32)
w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
fastconv.conv2d(x[:1], w, padding="same", algorithm="direct")  # the main thread's own team
start, done, leave = threading.Barrier(5), threading.Barrier(5), threading.Barrier(5)
def call():
    start.wait()
    fastconv.conv2d(x, w, padding="same", algorithm="direct")
    done.wait()
    leave.wait()
before = len(os.listdir("/proc/self/task"))
callers = [threading.Thread(target=call) for _ in range(4)]
for t in callers:
    t.start()
start.wait()
done.wait()
print(len(os.listdir("/proc/self/task")) - before - len(callers))
leave.wait()
for t in callers:
    t.join()
"""
    import subprocess

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The first caller may find itself alone and take 2 threads (1 more OS thread); the others share.
    # Without sharing, each caller's team adds one: 4.
    assert int(done.stdout) <= 2


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_counts_give_the_same_answer(threads, rng):
    x, w = random_array(rng, (1, 30, 30, 8)), random_array(rng, (3, 3, 8, 8))
    with num_threads(threads):
        assert fastconv.get_num_threads() == threads
        got = fastconv.conv2d(x, w, padding="same")
    np.testing.assert_allclose(got, reference.conv2d(x.astype(np.float64), w, padding="same"), rtol=1e-4, atol=1e-4)


# First layers: C_in 1..4 (kernel rows shorter than a cache line), C_out 1..40 (the narrow
# one-vector tile up to 4/8/16 channels, the wide tile above), stride 2 / 4, padding on every side,
# 2 and 3 threads.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((3, 12, 12, 1), (5, 5, 1, 6), {}),  # LeNet C1 shape
        ((1, 17, 19, 3), (3, 3, 3, 32), dict(stride=2, padding=1, activation="silu")),  # stem
        ((2, 23, 27, 3), (11, 11, 3, 40), dict(stride=4, activation="relu")),  # AlexNet-like
        ((1, 13, 11, 2), (3, 5, 2, 1), dict(padding=((2, 1), (3, 2)), activation="sigmoid")),
        ((1, 9, 14, 4), (3, 3, 4, 9), dict(stride=2, padding=((1, 2), (0, 3)), activation="tanh")),
        ((2, 10, 10, 1), (3, 3, 1, 17), dict(padding="same", activation="relu6")),
        ((1, 8, 9, 4), (2, 2, 4, 8), dict(stride=(2, 1), padding=((0, 1), (1, 0)))),
        ((1, 7, 7, 3), (7, 7, 3, 5), dict(padding=3)),  # every pixel at a border
    ],
)
def test_conv2d_first_layers(threads, x_shape, w_shape, kwargs, device, isa, rng):
    x, w, b = random_array(rng, x_shape, 2.0), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    with num_threads(threads):
        check_against_reference(device, "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


# First-layer kernel (conv2d_first_layer.cpp): groups 1, C_in <= 4, or C_in 5-8 with at most 100
# taps (KH * KW * C_in: the dispatch rule), not pointwise. Both tile variants (pixel vectors for
# C_out below the wide tile, channel vectors above), every stride, dilation and padding form,
# widths and heights off the 8 / 16-pixel tiles, several threads.
@st.composite
def first_layer_cases(draw):
    c_in = draw(st.integers(1, 8))
    c_out = draw(st.one_of(st.integers(1, 40), st.just(96)))
    max_k = 11 if c_in <= 4 else 3
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    stride = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))  # 5: build_panel's generic column stride
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.integers(0, 3),
            st.tuples(st.tuples(st.integers(0, 5), st.integers(0, 5)), st.tuples(st.integers(0, 5), st.integers(0, 5))),
        )
    )
    h = draw(st.integers(dilation[0] * (kh - 1) + 1, dilation[0] * (kh - 1) + 21))
    w = draw(st.integers(dilation[1] * (kw - 1) + 1, dilation[1] * (kw - 1) + 37))
    return dict(
        x_shape=(draw(st.integers(1, 3)), h, w, c_in), w_shape=(kh, kw, c_in, c_out), bias=draw(st.booleans()),
        threads=draw(st.integers(1, 3)),
        kwargs=dict(stride=stride, padding=padding, dilation=dilation, activation=draw(st.sampled_from(ACTIVATIONS))),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=first_layer_cases())
def test_conv2d_first_layer_random(case, isa, rng):
    x = random_array(rng, case["x_shape"])
    w = random_array(rng, case["w_shape"])
    b = random_array(rng, (case["w_shape"][3],)) if case["bias"] else None
    with num_threads(case["threads"]):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], case["kwargs"], terms=int(np.prod(case["w_shape"][:3])))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "x_shape, w_shape, kwargs",
    [
        ((3, 32, 32, 1), (5, 5, 1, 6), dict(activation="relu")),  # LeNet C1, pixel vectors
        ((1, 45, 45, 3), (3, 3, 3, 32), dict(stride=2, padding="same", activation="silu")),  # EfficientNet stem
        ((2, 43, 43, 3), (5, 5, 3, 96), dict(stride=4)),  # channel vectors, 3 channel blocks (AVX2)
        ((2, 43, 43, 3), (11, 11, 3, 96), dict(stride=4)),  # AlexNet C1: 363 taps
        ((1, 19, 27, 4), (5, 3, 4, 17), dict(stride=(2, 3), padding=((3, 1), (0, 4)), dilation=(2, 1))),
        ((2, 9, 70, 2), (1, 3, 2, 40), dict(padding="same", activation="relu6")),  # 1xK, many bands
        ((1, 40, 9, 1), (3, 1, 1, 1), dict(padding=((2, 2), (0, 0)))),  # C_out 1, tall image
        ((1, 5, 5, 3), (5, 5, 3, 16), {}),  # 1x1 output
        # 4 pixels x 3 vectors channel tile (AVX2 / SSE2): C_out 24 / 23 / 44 / 72, widths off the 4-pixel tile
        ((2, 39, 47, 3), (7, 11, 3, 72), dict(stride=2, activation="relu")),  # 231 taps (stride <= 2), 3 blocks
        ((3, 14, 17, 1), (7, 9, 1, 23), dict(stride=(1, 2), padding="same", activation="silu")),  # C_out < 24
        ((1, 21, 26, 4), (5, 9, 4, 44), dict(stride=(3, 2), padding=((4, 0), (2, 3)))),  # last block 20 of 24
        ((2, 30, 33, 3), (9, 9, 3, 40), dict(stride=2, padding="same", activation="relu6")),  # 243 taps
        ((2, 12, 13, 2), (4, 4, 2, 24), dict(dilation=2, padding=1, activation="tanh")),
        # C_in 5-8 on short reductions (<= 100 taps): every channel count of build_panel's split
        ((2, 20, 21, 5), (3, 3, 5, 24), dict(stride=2, padding="same", activation="relu")),
        ((1, 17, 33, 6), (3, 3, 6, 12), dict(padding=1, activation="silu")),  # pixel vectors
        ((1, 11, 14, 7), (2, 5, 7, 33), dict(stride=(1, 2), padding=((1, 0), (2, 2)), dilation=(2, 1))),
        ((3, 16, 16, 8), (3, 3, 8, 32), dict(padding="same", activation="relu6")),
        ((1, 9, 40, 8), (1, 9, 8, 5), dict(padding="same")),  # 72 taps, C_out 5 (transposed store)
        # channel vectors below the wide tile: one full vector at stride >= 2, windows that do not
        # overlap along a row (patchify stems) at any C_out up to two vectors
        ((2, 17, 29, 3), (3, 3, 3, 8), dict(stride=2, padding="same", activation="relu")),
        ((1, 20, 37, 1), (5, 5, 1, 8), dict(stride=(1, 3), activation="relu6")),
        ((2, 24, 36, 4), (4, 4, 4, 8), dict(stride=4)),  # 4 x 4 patches
        ((2, 22, 30, 3), (2, 3, 3, 6), dict(stride=(2, 3), padding=((1, 0), (2, 1)), activation="silu")),
        ((1, 16, 41, 3), (4, 4, 3, 12), dict(stride=4, activation="relu")),  # C_out 12: 8 + 4 padded lanes
        ((1, 15, 26, 2), (2, 2, 2, 15), dict(stride=(1, 4), dilation=(1, 3))),  # dilated, still apart
        # and from stride 3 with 2+ input channels; on AVX-512 at up to 8 channels (half a vector)
        # from stride 2
        ((1, 31, 40, 2), (5, 5, 2, 12), dict(stride=(2, 3), padding="same", activation="silu")),
        ((2, 26, 29, 4), (7, 7, 4, 5), dict(stride=4, padding=((2, 1), (3, 0)))),
        ((2, 30, 57, 3), (5, 5, 3, 6), dict(stride=4, padding="same", activation="relu")),
        ((1, 33, 35, 1), (3, 3, 1, 8), dict(stride=2, activation="tanh")),
        ((2, 20, 23, 2), (7, 7, 2, 3), dict(stride=(3, 2), padding=((3, 1), (2, 4)))),
        # patch embeddings: output rows that share no input rows go one row a band; weights of
        # 64 Ki floats or more are packed by the team (channel vectors, and pixel vectors)
        ((1, 64, 64, 3), (16, 16, 3, 96), dict(stride=16)),  # ViT, 4 x 4 patches
        ((2, 40, 36, 3), (8, 8, 3, 100), dict(stride=8, padding="same", activation="silu")),
        ((1, 45, 45, 2), (45, 45, 2, 20), dict(stride=45, activation="relu")),  # one pixel, 4050 taps
        ((1, 80, 80, 1), (75, 75, 1, 12), dict(activation="relu6")),  # pixel vectors, 5625 taps x 12
        # kernels past 64 a side (the tap table is sized per call)
        ((1, 3, 90, 1), (1, 70, 1, 4), dict(padding="same")),
        ((2, 80, 5, 2), (66, 3, 2, 6), dict(stride=2, activation="relu")),
    ],
)
def test_conv2d_first_layer_shapes(x_shape, w_shape, kwargs, threads, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


# Pixel-vector tiles holding every output channel (C_out <= 6 on AVX2) are stored transposed in
# registers, each pixel's vector spilling into the next pixels' slots, the pixels whose spill would
# leave the tile stored by scalars (the last 8 / C_out of them): output widths around the 8 /
# 16-pixel tiles, C_out 1-6, several threads.
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("c_out", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("out_w", [1, 2, 7, 8, 9, 15, 16, 17, 28, 33])
def test_conv2d_first_layer_transposed_store(threads, c_out, out_w, isa, rng):
    x, w = random_array(rng, (2, 9, out_w + 4, 1)), random_array(rng, (5, 5, 1, c_out))
    b = random_array(rng, (c_out,))
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], dict(activation="relu"), terms=25)


@pytest.mark.parametrize(
    "x_shape, w_shape, stride, kernel",
    [
        ((1, 60, 60, 1), (11, 11, 1, 32), 4, "first layer"),  # folds to 16 channels: Winograd from 64 outputs
        ((1, 60, 60, 4), (5, 5, 4, 48), 2, "first layer"),
        ((1, 40, 40, 3), (11, 11, 3, 16), 4, "first layer"),  # 363 taps at stride 4
        ((1, 40, 40, 4), (9, 9, 4, 32), 1, "first layer"),  # 324 taps
        ((64, 14, 14, 6), (5, 5, 6, 16), 1, "direct"),  # LeNet C3: 150 taps over 6 channels to 16
        ((1, 30, 30, 6), (5, 5, 6, 48), 1, "first layer"),
        ((1, 30, 30, 8), (7, 7, 8, 32), 2, "first layer"),
    ],
)
def test_conv2d_first_layer_kernel_choice(x_shape, w_shape, stride, kernel):
    """dispatch.cpp, prefer_first_layer and prefer_winograd's folded rule, on either side of the
    measured crossovers (bench/NOTES.md)."""
    p = _params.conv2d_problem("conv2d", x_shape, w_shape, None, stride, "same", 1, 1, "relu")
    assert fastconv._cpu.conv2d_kernel(p) == kernel


# Weights packed per call: up to 64 K floats one copy per thread, each packed by its own thread; past
# that one copy packed by the team (the first-layer kernel, the tiled engine, panel_gemm). Both sides
# of the threshold on 2 and 3 threads (the copies sit at per-thread offsets).
@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize(
    "x_shape, w_shape, stride, kernel",
    [
        ((1, 12, 12, 3), (7, 7, 3, 445), 1, "first layer"),  # 147 taps x 445 = 65415 floats
        ((1, 12, 12, 3), (7, 7, 3, 446), 1, "first layer"),  # 65562
        ((1, 24, 24, 32), (3, 3, 32, 224), 2, "direct"),  # 288 rows x 224 columns, blocks of 32 or 16
        ((1, 24, 24, 32), (3, 3, 32, 256), 2, "direct"),  # 288 x 256 = 73728
        ((1, 16, 16, 256), (1, 1, 256, 250), 1, "gemm"),  # 256 x 256 padded
        ((1, 16, 16, 256), (1, 1, 256, 288), 1, "gemm"),  # 256 x 288
    ],
)
def test_conv2d_packed_weight_copies(threads, x_shape, w_shape, stride, kernel, isa, rng):
    p = _params.conv2d_problem("conv2d", x_shape, w_shape, None, stride, "same", 1, 1, "relu")
    assert fastconv._cpu.conv2d_kernel(p) == kernel
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    kwargs = dict(stride=stride, padding="same", activation="relu")
    with num_threads(threads):
        for _ in range(2):  # the second call packs into the buffers the first one left
            check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=int(np.prod(w_shape[:3])))


# Channel-vector tiles of R pixels x V vectors (16 x 1 on AVX-512, else 8 x 1; 8 x 2 or 6 x 2; 8 x 3 on
# AVX-512, 4 x 3 on AVX2 / SSE2) and a row's last tile of the 1 .. R pixels left: every remainder of each tile shape, stride 1
# and 2, relu in the store.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c_out", [8, 16, 24, 32, 40, 48])
@pytest.mark.parametrize("out_w", range(1, 18))
def test_conv2d_first_layer_last_tile(threads, c_out, out_w, isa, rng):
    stride = 1 + out_w % 2
    x = random_array(rng, (2, 7, (out_w - 1) * stride + 3, 3))
    w, b = random_array(rng, (3, 3, 3, c_out)), random_array(rng, (c_out,))
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], dict(stride=stride, activation="relu"), terms=27)


# Pair tiles (AVX-512, C_out <= 8 in channel vectors: each FMA two neighbouring floats of a window
# row): rows of even and odd length (kw x C_in; an odd row ends in a single tap), C_out 1-8, widths
# around the 16-pixel tile, 'valid' (read in place) and 'same' (panel) padding, bias and relu.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("c_in, kw", [(1, 2), (1, 3), (1, 11), (2, 5), (3, 3), (3, 4), (4, 7)])
@pytest.mark.parametrize("c_out", [1, 3, 5, 8])
@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv2d_first_layer_pair_tiles(threads, c_in, kw, c_out, padding, isa, rng):
    out_w = int(rng.integers(1, 40))
    x = random_array(rng, (2, 9, (out_w - 1) * 2 + kw, c_in))
    w, b = random_array(rng, (3, kw, c_in, c_out)), random_array(rng, (c_out,))
    activation = [None, "relu", "relu6"][int(rng.integers(3))]  # applied at the two-pixel stores
    kwargs = dict(stride=2, padding=padding, activation=activation)
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=3 * kw * c_in)


# The float after a window row is never multiplied (a pair there would take it times a zero
# weight): an Inf in the input's last float, which no 'valid' window of stride 2 covers, leaves every
# output finite.
@pytest.mark.parametrize("c_in, kw", [(1, 3), (3, 3), (3, 5)])
def test_conv2d_first_layer_float_after_window_unread(c_in, kw, isa, rng):
    x = random_array(rng, (1, 8, 2 * 10 + kw + 1, c_in))  # the last column is outside every window
    x[0, :, -1, :] = np.inf
    w = random_array(rng, (3, kw, c_in, 8))
    y = fastconv.conv2d(x, w, stride=2, algorithm="direct")
    assert np.isfinite(y).all()
    check_against_reference(Device("cpu"), "conv2d", [x[:, :, :-1], w], dict(stride=2), terms=3 * kw * c_in)


# Sigmoid / tanh / SiLU run over each stored output row (out_w * C_out floats, in steps of 4 vectors,
# then single vectors, then a partial one): C_in 1-4, both tile variants, C_out off the vector,
# row lengths off every step, batch > 1.
@pytest.mark.parametrize("activation", ["silu", "sigmoid", "tanh"])
@pytest.mark.parametrize(
    "x_shape, w_shape, stride",
    [
        ((2, 13, 11, 1), (3, 3, 1, 5), 1),  # pixel vectors, row 9 x 5 = 45 floats
        ((3, 17, 19, 2), (5, 5, 2, 13), (1, 2)),  # pixel vectors, C_out 13
        ((2, 23, 21, 3), (3, 3, 3, 32), 2),  # stem: 11 x 32 floats
        ((2, 15, 14, 4), (3, 5, 4, 21), 1),  # channel vectors, C_out 21
        ((1, 9, 37, 3), (3, 3, 3, 50), 2),  # channel vectors, 19 x 50 floats
    ],
)
def test_conv2d_first_layer_exp_activations(activation, x_shape, w_shape, stride, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    kwargs = dict(stride=stride, padding="same", activation=activation)
    check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


@pytest.mark.parametrize("activation", ["relu", "relu6", "silu", "sigmoid", "tanh"])
@pytest.mark.parametrize("c_out", [6, 32])
def test_conv2d_first_layer_nan_propagates(activation, c_out, isa):
    x = np.ones((1, 12, 20, 3), np.float32)
    x[0, 5, 7, 1] = np.nan
    w = np.ones((3, 3, 3, c_out), np.float32)
    y = fastconv.conv2d(x, w, activation=activation, algorithm="direct")
    nan_rows, nan_cols = np.nonzero(np.isnan(y[0, :, :, 0]))
    assert set(nan_rows) == {3, 4, 5} and set(nan_cols) == {5, 6, 7}
    assert np.isnan(y[0, 3:6, 5:8]).all() and np.isfinite(np.delete(y[0], [3, 4, 5], axis=0)).all()
    # Winograd (auto's choice for some of these) mixes each tile's inputs: NaN reaches at least the same.
    assert np.isnan(fastconv.conv2d(x, w, activation=activation)[0, 3:6, 5:8]).all()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 7, 7, 96), (3, 3, 96, 80), dict(padding="same")),  # 49 pixels: one sweep, blocks shared
    ((2, 6, 8, 40), (3, 3, 40, 72), dict(padding=1)),  # 96 pixels: the last one-sweep size (AVX2)
    ((1, 17, 17, 64), (7, 1, 64, 40), dict(padding="same")),  # 289 pixels, a small input: one sweep
    ((1, 24, 25, 8), (3, 3, 8, 40), dict(padding="same")),  # 600 pixels: sweeps of 8 tiles
    ((1, 16, 16, 300), (3, 3, 300, 20), dict(padding=1)),  # 256 pixels of a 300 KB input: one sweep
    ((1, 16, 16, 1040), (3, 3, 1040, 20), dict(padding=1)),  # 256 pixels of a 1.06 MB input: sweeps
    ((1, 8, 9, 32), (3, 3, 8, 48), dict(padding=1, groups=4)),  # grouped
    ((1, 13, 13, 48), (3, 3, 48, 33), dict(stride=2, dilation=2, padding=2)),  # gathered windows
    ((1, 35, 35, 96), (3, 3, 96, 16), dict(stride=2)),  # one block: sweeps shortened to ~2 a thread
    ((1, 5, 5, 24), (3, 3, 24, 16), dict(padding=1)),  # one block, fewer tiles than 2 a thread
    ((1, 14, 14, 64), (3, 3, 64, 80), dict(padding="same")),  # 3 blocks of 32 shared: tiles in parts
    # Large kernels on small maps: the input's columns padded once instead of gathered per pixel.
    ((2, 8, 8, 24), (7, 7, 24, 40), dict(padding="same")),
    ((1, 9, 9, 20), (7, 7, 20, 36), dict(stride=2, padding=3)),
    ((1, 6, 10, 8), (5, 5, 8, 16), dict(padding=((2, 2), (0, 4)))),  # right padding only
])
def test_tiled_engine_small_maps_share_channel_blocks(x_shape, w_shape, kwargs, threads, isa, rng):
    """Small outputs (conv2d.cpp, block_major: <= 16 tiles, or <= 64 over an input of <= 1 MiB, and a
    channel block for every thread) run as one sweep whose channel blocks the threads share (in parts
    of the tiles when the blocks do not divide among the threads); others as sweeps of tiles handed
    out, shorter when there are few. Both sides of each switch, any thread count."""
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    with num_threads(threads):
        got = fastconv.conv2d(x, w, b, activation="relu", algorithm="direct", **kwargs)
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu",
                            **kwargs)
    _compare.assert_close(got, want, terms=w_shape[0] * w_shape[1] * w_shape[2])


# Strided 1x1 convolutions with at most 100 output pixels, or at most 200 under more than 1 MiB of
# weights, gather them and run the GEMM (stream_gemm up to 16 rows, sweep_gemm or panel_gemm above);
# larger ones stay with the tiled engine. Strides on either axis, odd sizes, batches, bias and
# activation, on both sides of both rules.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 14, 14, 96), (1, 1, 96, 200), dict(stride=2, activation="relu")),  # 49 rows
    ((2, 13, 11, 40), (1, 1, 40, 33), dict(stride=(3, 2))),  # 2 x 5 x 6 = 60 rows
    ((1, 9, 9, 64), (1, 1, 64, 130), dict(stride=(1, 3), activation="silu")),  # 27 rows: stream_gemm
    ((4, 10, 10, 24), (1, 1, 24, 72), dict(stride=2)),  # exactly 100 rows
    ((1, 21, 19, 16), (1, 1, 16, 40), dict(stride=2, activation="relu6")),  # 110 rows: tiled engine
    ((1, 27, 25, 520), (1, 1, 520, 510), dict(stride=2)),  # 14 x 13 = 182 rows, 1.01 MiB: GEMM
    ((1, 27, 25, 500), (1, 1, 500, 500), dict(stride=2)),  # 182 rows, 0.95 MiB: tiled engine
    ((1, 3, 3, 8), (1, 1, 8, 5), dict(stride=4)),  # one pixel
    # bottom / right padding that outputs read: not a gather (the tiled engine writes bias there)
    ((2, 5, 6, 8), (1, 1, 8, 12), dict(stride=2, padding=((0, 2), (0, 1)))),
    ((2, 1, 2, 1), (1, 1, 1, 96), dict(stride=(1, 2), padding=((0, 0), (0, 1)))),
])
def test_conv2d_strided_pointwise(x_shape, w_shape, kwargs, threads, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=w_shape[2])


# Windows that do not overlap over few output pixels (dispatch.cpp, prefer_patch_gemm) gather into
# rows and run the GEMM: up to 16 pixels on any channel count, up to 64 where the first-layer
# kernel would serve from 192 taps, any count from 512 taps to 32 or more channels where it would
# run vectors of 8 floats or fewer (AVX2, SSE; a pair: (16 lanes, 8 or 4)). Windows that reach into the padding, dilated
# windows still apart, every activation, several threads; the kernel choice on both sides of each rule.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("x_shape, w_shape, kwargs, kernel", [
    ((1, 8, 8, 64), (2, 2, 64, 40), dict(stride=2, activation="relu"), "window gemm"),  # 16 pixels
    ((1, 10, 8, 64), (2, 2, 64, 40), dict(stride=2), "direct"),  # 20 pixels
    ((1, 7, 9, 33), (3, 3, 33, 20), dict(stride=3, padding="same", activation="silu"), "window gemm"),
    ((1, 9, 11, 5), (2, 3, 5, 17), dict(stride=(3, 4), padding=((1, 2), (0, 3)), dilation=(2, 1),
                                        activation="sigmoid"), "window gemm"),  # dilated, still apart
    ((1, 64, 64, 3), (8, 8, 3, 50), dict(stride=8, activation="tanh"), "window gemm"),  # 64 pixels, 192 taps
    ((1, 72, 64, 3), (8, 8, 3, 50), dict(stride=8), "first layer"),  # 72 pixels
    ((1, 56, 56, 3), (7, 7, 3, 24), dict(stride=7, activation="relu6"), "first layer"),  # 147 taps
    ((1, 70, 70, 1), (14, 14, 1, 96), dict(stride=14, padding="same"), "window gemm"),  # 25 pixels
    ((3, 12, 12, 4), (6, 6, 4, 9), dict(stride=6), "window gemm"),  # 12 pixels of 144 taps
    # (C_out a multiple of 32: AVX-512 machines' "auto" keeps their first layers on AVX-512)
    ((1, 144, 144, 3), (16, 16, 3, 64), dict(stride=16, activation="relu"), ("first layer", "window gemm")),  # 81
    ((2, 112, 100, 3), (14, 14, 3, 96), dict(stride=14, padding="same"), ("first layer", "window gemm")),  # 588 taps
    ((1, 117, 117, 3), (13, 13, 3, 40), dict(stride=13), "first layer"),  # 81 pixels of 507 taps
    ((1, 144, 160, 3), (16, 16, 3, 24), dict(stride=16), "first layer"),  # 90 pixels to 24 channels
])
def test_conv2d_patch_gemm(x_shape, w_shape, kwargs, kernel, threads, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape), random_array(rng, (w_shape[3],))
    p = _params.conv2d_problem("conv2d", x_shape, w_shape, b.shape, kwargs.get("stride", 1), kwargs.get("padding", 0),
                               kwargs.get("dilation", 1), 1, kwargs.get("activation"))
    if isinstance(kernel, tuple):  # by the first-layer kernel's vector width: 16 lanes, or 8 / 4
        kernel = kernel[0] if {"portable": 4, "avx2": 8}.get(isa, 16) == 16 else kernel[1]
    assert fastconv._cpu.conv2d_kernel(p) == kernel
    with num_threads(threads):
        check_against_reference(Device("cpu"), "conv2d", [x, w, b], kwargs, terms=w_shape[0] * w_shape[1] * w_shape[2])


@pytest.mark.parametrize("activation", ["silu", "sigmoid", "tanh"])
@pytest.mark.parametrize("c_in, kernel, kwargs", [
    (3, 3, {}),  # first-layer kernel
    (16, 3, dict(algorithm="direct")),  # tiled engine
    (16, 1, {}),  # GEMM
    (8, 3, dict(groups=8)),  # depthwise
])
def test_exp_activations_saturate_and_keep_nan(activation, c_in, kernel, kwargs, isa):
    """Huge pre-activations saturate (no NaN from exp overflow), -inf gives SiLU's NaN like the
    reference (-inf / inf), NaN stays NaN, on every kernel family's epilogue."""
    x = np.full((1, 9, 10, c_in), 0.5, np.float32)
    x[0, 1, 1] = 1e30
    x[0, 4, 1] = -1e30
    x[0, 7, 5] = -np.inf
    x[0, 4, 8] = np.nan
    w = np.full((kernel, kernel, c_in // kwargs.get("groups", 1), c_in), 0.25, np.float32)
    got = fastconv.conv2d(x, w, padding="same", activation=activation, **kwargs)
    with np.errstate(invalid="ignore", over="ignore"):  # -inf / inf in the reference's SiLU is the point
        want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), padding="same", activation=activation,
                                groups=kwargs.get("groups", 1))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(want).any() and (activation != "silu" or np.isnan(want[0, 7, 5]).all())
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("x_shape, c_out, activation", [((3, 15, 17, 67), 33, None), ((1, 56, 56, 24), 144, "relu6"),
                                                        ((2, 7, 7, 70), 9, "relu"), ((1, 9, 11, 1), 300, "relu6"),
                                                        ((1, 7, 7, 520), 1030, "silu")])
def test_pointwise_panel_shapes(threads, x_shape, c_out, activation, device, isa, rng):
    """MobileNet / EfficientNet-like 1x1 layers and odd widths on the panel and sweep GEMMs, on 1-3 threads."""
    x, w, b = random_array(rng, x_shape), random_array(rng, (x_shape[-1], c_out)), random_array(rng, (c_out,))
    with num_threads(threads):
        check_against_reference(device, "pointwise_conv2d", [x, w, b], dict(activation=activation), terms=x_shape[-1])
