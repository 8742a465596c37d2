"""max_pool2d, avg_pool2d and the global pools against the NumPy reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import reference

from conftest import Device
from helpers import check_against_reference, num_threads, random_array

hsettings = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def pool_cases(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    padding = draw(
        st.one_of(
            st.sampled_from(["valid", "same"]),
            st.tuples(st.tuples(st.integers(0, kh - 1), st.integers(0, kh - 1)),
                      st.tuples(st.integers(0, kw - 1), st.integers(0, kw - 1))),
        )
    )
    shape = (draw(st.integers(1, 3)), draw(st.integers(kh, 13)), draw(st.integers(kw, 13)), draw(st.integers(1, 40)))
    return shape, dict(size=(kh, kw), stride=stride, padding=padding, ceil_mode=draw(st.booleans()))


@hsettings
@given(case=pool_cases())
def test_max_pool_random(case, device, isa, rng):
    shape, kwargs = case
    check_against_reference(device, "max_pool2d", [random_array(rng, shape)], kwargs)


@hsettings
@given(case=pool_cases(), count_include_pad=st.booleans())
def test_avg_pool_random(case, count_include_pad, device, isa, rng):
    shape, kwargs = case
    kwargs = dict(kwargs, count_include_pad=count_include_pad)
    check_against_reference(device, "avg_pool2d", [random_array(rng, shape)], kwargs, terms=16)


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 112, 112, 64), dict(size=3, stride=2, padding=1)),  # ResNet stem pool
        ((1, 28, 28, 6), dict(size=2)),  # LeNet S2
        ((1, 7, 7, 3), dict(size=3, stride=2, ceil_mode=True)),  # last window runs past the edge
        ((1, 6, 6, 300), dict(size=2, stride=1, padding="same")),  # channels past one chunk
    ],
)
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool_shapes(op, shape, kwargs, device, isa, rng):
    check_against_reference(device, op, [random_array(rng, shape)], kwargs, terms=9)


# The paths of cpp/pool.cpp: channels in lanes (C past / below one vector, overlapping last
# block), the row-buffer path for small C, and streaming stores for outputs past kStreamMinBytes.
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 15, 17, 19), dict(size=3, stride=2, padding=1)),
        ((1, 16, 9, 37), dict(size=(2, 3), stride=(1, 2), padding=((1, 0), (0, 2)), ceil_mode=True)),
        ((3, 13, 11, 6), dict(size=2, stride=2, ceil_mode=True)),  # LeNet-like C, odd sizes
        ((1, 12, 14, 5), dict(size=3, stride=1, padding=1)),
        ((2, 9, 10, 3), dict(size=(3, 2), stride=(2, 3), padding=((1, 2), (1, 1)), ceil_mode=True)),
        ((1, 7, 1, 16), dict(size=(3, 1), stride=1, padding=((1, 1), (0, 0)))),  # W = 1
        ((2, 300, 300, 16), dict(size=2, stride=1)),  # streamed output, aligned pixels
        ((2, 300, 300, 17), dict(size=2, stride=1, padding=1)),  # streamed, unaligned pixels
    ],
)
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_vector_paths(op, extra, shape, kwargs, device, isa, rng):
    check_against_reference(device, op, [random_array(rng, shape)], dict(kwargs, **extra), terms=9)


# Small C (below one vector): full-vector column loads and stores that overlap the next pixel's,
# the row's last pixels stored partially (C = 1 reaches seven pixels ahead); inputs past 512 KiB so
# that 2 and 3 threads split the rows (the thread count follows the bytes moved).
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((48, 28, 28, 6), dict(size=2)),  # LeNet S2
        ((5, 61, 67, 1), dict(size=3, stride=2, padding=1, ceil_mode=True)),
        ((9, 33, 29, 7), dict(size=(2, 3), stride=(2, 1), padding=((0, 1), (1, 1)), ceil_mode=True)),
        ((4, 40, 45, 3), dict(size=3, stride=3, ceil_mode=True)),
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_small_channels_threads(op, extra, shape, kwargs, threads, isa, rng):
    x = random_array(rng, shape)
    with num_threads(threads):
        check_against_reference(Device("cpu"), op, [x], dict(kwargs, **extra), terms=9)


# C up to half a vector: the interior pixels of a row go several to a vector through a lane
# permutation (pool.cpp, PackedPixels), 16 at C = 1; rows wide enough for several such blocks and
# an overlapping last one, between border pixels clipped by padding or ceil_mode on both sides,
# or none; stride 3 and a C = 5 that fit too few pixels take the pixel-by-pixel path beside them.
@pytest.mark.parametrize("c", [1, 2, 3, 4, 5])
@pytest.mark.parametrize(
    "hw, kwargs",
    [
        ((5, 53), dict(size=2, stride=2)),
        ((6, 71), dict(size=3, stride=2, padding=1, ceil_mode=True)),
        ((4, 40), dict(size=3, stride=1, padding=1)),
        ((7, 38), dict(size=(2, 4), stride=(1, 1), padding=((0, 1), (2, 1)))),
        ((5, 47), dict(size=(1, 3), stride=(2, 3), ceil_mode=True)),
        # No column padding (rows read in place, PackedPixels::direct): stride 1 and 2, windows 2-3
        # wide, rows clipped by padding above and below, a row of a single block.
        ((6, 37), dict(size=3, stride=1)),
        ((5, 33), dict(size=2, stride=1, padding=((1, 0), (0, 0)))),
        ((7, 29), dict(size=3, stride=2, padding=((1, 1), (0, 0)), ceil_mode=True)),
        ((3, 16), dict(size=2, stride=2)),
    ],
)
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_packed_small_channels(op, extra, c, hw, kwargs, isa, rng):
    x = random_array(rng, (2, *hw, c))
    check_against_reference(Device("cpu"), op, [x], dict(kwargs, **extra), terms=12)


# Wide C (pool.cpp's kWideMinC = 256 and up): on inputs past kWideMinInputBytes (16 MiB) and for
# stride-1 windows the input rows reduced first into the row buffer, then the columns, elsewhere tap
# by tap; C not a multiple of the vector (overlapping last block), windows clipped by padding and
# ceil_mode, a stride past the window (columns never read), W = 1, a streamed output, and 2 and 3
# threads over the rows.
@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((2, 15, 17, 256), dict(size=3, stride=2, padding=1)),
        ((1, 16, 9, 261), dict(size=(2, 3), stride=(1, 2), padding=((1, 0), (0, 2)), ceil_mode=True)),
        ((2, 9, 10, 300), dict(size=(3, 2), stride=(2, 3), padding=((1, 2), (1, 1)), ceil_mode=True)),
        ((1, 11, 13, 512), dict(size=2, stride=3, ceil_mode=True)),
        ((1, 7, 1, 264), dict(size=(3, 1), stride=1, padding=((1, 1), (0, 0)))),  # W = 1
        ((1, 65, 64, 520), dict(size=2, stride=1)),  # streamed output (> 8 MiB)
        ((1, 33, 250, 520), dict(size=3, stride=2, padding=1, ceil_mode=True)),  # 17 MB: the row buffer
        # Stride-1 rows in pairs (pool.cpp, reduce_row_pair) and single rows where a window is
        # clipped: odd and even heights, window heights 2-5, batch 2 (one image's last row beside
        # the next image's first).
        ((2, 12, 9, 256), dict(size=3, stride=1, padding="same")),
        ((1, 13, 10, 272), dict(size=5, stride=1, padding=2)),
        ((2, 9, 8, 256), dict(size=(4, 2), stride=1)),
        ((1, 8, 7, 300), dict(size=(2, 3), stride=(1, 2), padding=((0, 1), (1, 1)))),
    ],
)
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_wide_channels(op, extra, shape, kwargs, device, isa, rng):
    check_against_reference(device, op, [random_array(rng, shape)], dict(kwargs, **extra), terms=9)


# Stride-1 windows with C of one vector or more take the wide path's rows first, in pairs (pool.cpp):
# C at and off the vector (8, 16 lanes), window heights 2-5, padding that clips the first and last
# rows, odd heights, batch 2 (several threads: test_pool_wide_channels_threads).
@pytest.mark.parametrize("c", [8, 16, 17, 40, 192])
@pytest.mark.parametrize("shape_hw, kwargs", [
    ((12, 11), dict(size=3, stride=1, padding=1)),
    ((9, 10), dict(size=(2, 2), stride=1)),
    ((13, 9), dict(size=5, stride=1, padding=2)),
    ((8, 12), dict(size=(4, 3), stride=(1, 2), padding=((2, 1), (1, 1)))),
])
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_stride1_rows_first(op, extra, c, shape_hw, kwargs, isa, rng):
    x = random_array(rng, (2, *shape_hw, c))
    check_against_reference(Device("cpu"), op, [x], dict(kwargs, **extra), terms=25)


# 3 x 3 stride-2 pools in blocks of 2 x 2 outputs (pool.cpp, pool_rows_3s2) where two output rows'
# windows lie inside the input, pixel by pixel elsewhere: every width from 1 to 13 (no block, one
# block and a border pixel, several blocks), padding on either side or both, ceil_mode, odd and even
# heights, batch 2; C at and off the vector (8 for AVX2, 16, 21, 64).
@pytest.mark.parametrize("c", [8, 16, 21, 64])
@pytest.mark.parametrize("padding, ceil_mode", [(0, False), (1, False), ((0, 1), False), (((1, 0), (0, 1)), True)])
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_3x3_stride2_blocks(op, extra, c, padding, ceil_mode, isa, rng):
    pad_w = {0: 0, 1: 2, (0, 1): 2}.get(padding, 1)  # columns of padding, both sides
    for height in (5, 8, 9):
        for width in range(max(1, 3 - pad_w), 14):  # from the narrowest input a window fits
            x = random_array(rng, (2, height, width, c))
            kwargs = dict(size=3, stride=2, padding=padding, ceil_mode=ceil_mode, **extra)
            check_against_reference(Device("cpu"), op, [x], kwargs, terms=9)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("c, stride", [(264, 1), (264, 2), (192, 1)])
@pytest.mark.parametrize("op, extra", [("max_pool2d", {}), ("avg_pool2d", dict(count_include_pad=True))])
def test_pool_wide_channels_threads(op, extra, c, stride, threads, isa, rng):
    x = random_array(rng, (3, 20, 22, c))
    with num_threads(threads):
        check_against_reference(Device("cpu"), op, [x], dict(size=3, stride=stride, padding=1, **extra), terms=9)


@pytest.mark.parametrize("c", [1, 3, 6, 16, 21, 256, 261])
def test_max_pool_nan_in_every_path(c, device, isa):
    x = np.zeros((1, 6, 8, c), np.float32)
    x[0, 1, 1, 0] = np.nan  # inside a window
    x[0, 5, 7, c - 1] = np.nan  # in the last column and channel (the overlapping block)
    x[0, 2, 4, c // 2] = np.nan
    for kwargs in [dict(size=2), dict(size=3, stride=2, padding=1), dict(size=3, stride=1, padding=1)]:
        y = device.get(fastconv.max_pool2d(device.put(x), **kwargs))
        np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.max_pool2d(x, **kwargs)), err_msg=str(kwargs))


# (2, 33, 35, 19): 1155 pixels, folded a quarter of the map at a time over 18 float runs, one short
# run and 3 pixels left over.
@pytest.mark.parametrize("shape", [(1, 7, 7, 1280), (3, 5, 9, 100), (2, 4, 3, 7), (1, 90, 90, 40), (2, 33, 35, 19)])
def test_global_pools_shapes(shape, device, isa, rng):
    x = random_array(rng, shape)
    check_against_reference(device, "global_avg_pool2d", [x], terms=shape[1] * shape[2])
    check_against_reference(device, "global_max_pool2d", [x])
    x[-1, -1, -1, -1] = np.nan  # the last pixel of the last (overlapping) channel block
    y = device.get(fastconv.global_max_pool2d(device.put(x)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.global_max_pool2d(x)))


@pytest.mark.parametrize("shape", [(1, 7, 7, 40), (2, 9, 10, 3), (1, 12, 12, 20)])
def test_global_max_pool_keeps_nan_from_any_pixel(shape, device, isa, rng):
    """Pixels are folded several at a time: a NaN in any position of a group (and in the runs past
    the first) must reach its channel's output, and only there."""
    x = random_array(rng, shape)
    n, h, w, c = shape
    for channel, pixel in enumerate([1, 2, 3, 4, 5, 6, 65, h * w - 2]):
        if pixel < h * w:
            x[-1, pixel // w, pixel % w, channel % c] = np.nan
    y = device.get(fastconv.global_max_pool2d(device.put(x)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.global_max_pool2d(x)))
    check_against_reference(device, "global_avg_pool2d", [np.nan_to_num(x)], terms=h * w)


def test_ceil_mode_drops_a_window_starting_in_padding():
    # 6 wide, window 2, stride 2, pad 1: padded 8 gives 4 windows; the 4th starts at input
    # column 5, inside the input, so it stays.
    x = np.arange(36, dtype=np.float32).reshape(1, 6, 6, 1)
    assert fastconv.max_pool2d(x, 2, 2, padding=1, ceil_mode=True).shape == (1, 4, 4, 1)
    # 5 wide, window 2, stride 2, pad 1: padded 7, ceil((7-2)/2)+1 = 4, but window 4 starts at
    # 6 - 1 = 5 >= 5 (in the padding): dropped.
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    y = fastconv.max_pool2d(x, 2, 2, padding=1, ceil_mode=True)
    assert y.shape == (1, 3, 3, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 2, 4], [10, 12, 14], [20, 22, 24]])


def test_avg_pool_padding_counts(device):
    x = np.ones((1, 3, 3, 1), np.float32)
    excl = device.get(fastconv.avg_pool2d(device.put(x), 3, 1, padding=1))
    incl = device.get(fastconv.avg_pool2d(device.put(x), 3, 1, padding=1, count_include_pad=True))
    np.testing.assert_allclose(excl, 1.0)
    np.testing.assert_allclose(incl[0, :, :, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9], [4 / 9, 6 / 9, 4 / 9]], rtol=1e-6)


@hsettings
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12), st.integers(1, 300)))
def test_global_pools_random(shape, device, isa, rng):
    x = random_array(rng, shape)
    check_against_reference(device, "global_avg_pool2d", [x], terms=shape[1] * shape[2])
    check_against_reference(device, "global_max_pool2d", [x])


# Fewer channels than a vector: the map as one flat run folded a period of lcm(C, lanes) floats at a
# time (whole periods, then the pixels after the last one). Fewer images than threads, on maps worth
# two threads, split the map into parts combined after (C = 7 and 32). NaN in a period and in the
# pixels after the last.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(3, 13, 11, 1), (2, 13, 11, 2), (1, 9, 7, 5), (3, 13, 11, 6), (1, 17, 3, 9),
                                   (2, 5, 5, 12), (1, 31, 29, 15), (1, 50, 47, 6), (1, 1, 3, 7),
                                   (1, 200, 190, 7), (1, 130, 131, 32)])  # large enough for parts
def test_global_pools_few_channels(shape, threads, device, isa, rng):
    x = random_array(rng, shape) + 3.0  # an offset: float sums over long runs would drift
    with num_threads(threads):
        check_against_reference(device, "global_avg_pool2d", [x], terms=shape[1] * shape[2])
        check_against_reference(device, "global_max_pool2d", [x])
        n, h, w, c = shape
        x[-1, 0, 0, 0] = np.nan
        x[0, -1, -1, c - 1] = np.nan
        y = device.get(fastconv.global_max_pool2d(device.put(x)))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(reference.global_max_pool2d(x)))


def test_global_avg_pool_large_map(device, rng):
    x = random_array(rng, (1, 224, 224, 3)) + 100.0  # a large offset: a float32 running sum would drift
    check_against_reference(device, "global_avg_pool2d", [x])


def test_max_pool_propagates_nan(device, isa):
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 3, 3, 1] = np.nan
    y = device.get(fastconv.max_pool2d(device.put(x), 2))
    want = reference.max_pool2d(x, 2)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    assert np.isnan(y[0, 0, 0, 0]) and np.isnan(y[0, 1, 1, 1]) and not np.isnan(y[0, 0, 0, 1])
    g = device.get(fastconv.global_max_pool2d(device.put(x)))
    assert np.isnan(g).all()


def test_max_pool_with_negative_inputs_and_padding(device):
    # Padding must act as -inf, not 0.
    x = -np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    y = device.get(fastconv.max_pool2d(device.put(x), 3, 1, padding=1))
    np.testing.assert_array_equal(y, reference.max_pool2d(x, 3, 1, padding=1))
    assert y[0, 0, 0, 0] == -1.0


# A window over the whole unpadded image runs the global kernels (dispatch.cpp covers_image); a
# window one pixel short, or padded, stays with the windowed kernel.
@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize(
    "shape, size, kwargs",
    [
        ((3, 7, 7, 37), 7, {}),
        ((2, 5, 9, 20), (5, 9), dict(stride=3)),
        ((1, 4, 4, 8), 4, dict(ceil_mode=True, stride=2)),
        ((2, 7, 7, 16), 7, dict(count_include_pad=True)),
        ((2, 7, 7, 16), 7, dict(padding=1, count_include_pad=True)),
        ((2, 7, 7, 16), (7, 6), {}),
    ],
)
def test_pool_window_covering_the_image(op, shape, size, kwargs, device, isa, rng):
    if op == "max_pool2d":
        kwargs = {k: v for k, v in kwargs.items() if k != "count_include_pad"}
    x = random_array(rng, shape)
    check_against_reference(device, op, [x], dict(size=size, **kwargs), terms=shape[1] * shape[2])
