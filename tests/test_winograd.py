"""conv2d(algorithm=...): the Winograd kernels (F(4x4, 3x3) and F(2x2, 5x5) on the CPU, strided filters
folded into them) against the float64 reference, "auto" against "direct", and the argument's errors."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _compare, reference

from helpers import full_width_units, num_threads, random_array, sums_scale

ACTIVATIONS = [None, "relu", "relu6", "sigmoid", "tanh", "silu"]
hsettings = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

PADDINGS = st.one_of(
    st.sampled_from(["valid", "same"]),
    st.integers(0, 3),
    st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))),
)


def _check(device, x, w, b, algorithm, **kwargs):
    got = fastconv.conv2d(device.put(x), device.put(w), device.put(b), algorithm=algorithm, **kwargs)
    got = device.get(got)
    args = (x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64))
    want = reference.conv2d(*args, **kwargs)
    scale = sums_scale(reference.conv2d, args, kwargs)
    terms = w.shape[0] * w.shape[1] * w.shape[2]
    _compare.assert_close(got, want, terms=terms, what=f"conv2d(algorithm={algorithm!r}, {kwargs})", scale=scale)
    return got, _compare.max_relative_error(got, want, scale)[0] / _compare.tolerance(terms)


@st.composite
def winograd_cases(draw):
    padding = draw(PADDINGS)
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    return dict(
        kernel=draw(st.sampled_from([3, 5])),
        x_shape=(draw(st.integers(1, 2)), h, w, draw(st.integers(1, 70))), c_out=draw(st.integers(1, 70)),
        bias=draw(st.booleans()), padding=padding, activation=draw(st.sampled_from(ACTIVATIONS)),
    )


def _fits(x_shape, kernel, padding, stride=1):
    from fastconv import _params

    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    try:
        _params.conv2d_problem("conv2d", x_shape, (kh, kw, x_shape[3], 1), None, stride, padding, 1, 1, None)
        return True
    except ValueError:
        return False


def _case_arrays(rng, case, kernel):
    """x, w (kernel = (KH, KW)) and b (or None) for a drawn case."""
    x = random_array(rng, case["x_shape"])
    w = random_array(rng, kernel + (case["x_shape"][3], case["c_out"]))
    b = random_array(rng, (case["c_out"],)) if case["bias"] else None
    return x, w, b


def _check_threads_and_packed(case, x, w, b, **kwargs):
    """_check on case["threads"] threads, and the same call with pack_weights' form bit for bit equal."""
    with num_threads(case["threads"]):
        got, ratio = _check(_cpu_device(), x, w, b, "winograd", activation=case["activation"], **kwargs)
        packed = fastconv.conv2d(x, fastconv.pack_weights(w), b, activation=case["activation"], algorithm="winograd",
                                 **kwargs)
    np.testing.assert_array_equal(packed, got)
    return ratio


@hsettings
@given(case=winograd_cases())
def test_winograd_random_shapes(case, device, isa, rng):
    k = case["kernel"]
    if not _fits(case["x_shape"], k, case["padding"]):
        return  # the window does not fit: conv2d raises for every algorithm (tested elsewhere)
    x, w, b = _case_arrays(rng, case, (k, k))
    _check(device, x, w, b, "winograd", padding=case["padding"], activation=case["activation"])


# (KH, KW), (stride_h, stride_w) pairs that fold to 3x3 or 5x5 (params.h, folded_kh): ceil(K / s).
FOLDING = [((5, 5), (2, 2)), ((6, 6), (2, 2)), ((11, 11), (4, 4)), ((9, 9), (4, 4)), ((7, 7), (3, 3)),
           ((9, 9), (2, 2)), ((10, 10), (2, 2)), ((13, 13), (3, 3)), ((5, 3), (2, 1)), ((3, 9), (1, 3)),
           ((8, 5), (3, 2)), ((3, 3), (1, 1)), ((7, 7), (2, 2)), ((8, 8), (2, 2)), ((8, 7), (2, 2))]


@st.composite
def folded_cases(draw):
    (kh, kw), stride = draw(st.sampled_from(FOLDING))
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    return dict(
        kernel=(kh, kw), stride=stride, x_shape=(draw(st.integers(1, 2)), h, w, draw(st.integers(1, 20))),
        c_out=draw(st.integers(1, 40)), bias=draw(st.booleans()), padding=draw(PADDINGS),
        activation=draw(st.sampled_from(ACTIVATIONS)),
    )


@hsettings
@given(case=folded_cases())
def test_winograd_strided_filters_folded(case, device, isa, rng):
    """Strided filters that fold to 3x3 / 5x5 run as a stride-1 Winograd convolution over the input's
    phases stacked as channels (conv2d_winograd.cpp; the GPU runs them direct): borders, padding on
    any side, rows and columns the stride leaves unread, zero taps past the filter."""
    (kh, kw), stride = case["kernel"], case["stride"]
    x, w, b = _case_arrays(rng, case, (kh, kw))
    if not _fits(case["x_shape"], (kh, kw), case["padding"], stride):
        return  # the window does not fit: conv2d raises for every algorithm (tested elsewhere)
    _check(device, x, w, b, "winograd", stride=stride, padding=case["padding"], activation=case["activation"])


@pytest.mark.parametrize("kernel, activation", [(3, None), (5, None), (3, "tanh"), (3, "sigmoid")])
@pytest.mark.parametrize("c_in", [1, 3, 7, 8, 64, 512])
def test_winograd_error_growth(kernel, activation, c_in, isa, rng):
    """The transforms amplify rounding; the error must stay well inside the float32 tolerance,
    whose sqrt(KH * KW * C_in) growth covers the long reductions (measured: <= 0.5 of it, see
    bench/NOTES.md (Winograd sections)). 5x5 changes tiles at 8 input channels (F(2x2, 5x5) below,
    F(4x4, 5x5) from there, kernels.h). Sigmoid and tanh, judged at the scale of the sums they
    squeeze, keep F(4x4, 3x3)'s margin (activation.h, squeezes_rounding)."""
    x = random_array(rng, (1, 14, 13, c_in), scale=3.0 if activation else 1.0)
    w = random_array(rng, (kernel, kernel, c_in, 24))
    b = random_array(rng, (24,))
    _, ratio = _check(_cpu_device(), x, w, b, "winograd", padding="same", activation=activation)
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


@pytest.mark.parametrize("kernel, stride", [(11, 4), (5, 2), (9, 2), (13, 3), (7, 2)])  # fold to 3, 3, 5, 5, 4
@pytest.mark.parametrize("c_in", [1, 3, 64])
def test_winograd_folded_error_growth(kernel, stride, c_in, isa, rng):
    """Folding adds zero taps and stride^2 x more channels to the reduction: the error must keep the
    same margin to the tolerance of the direct sum's KH * KW * C_in terms."""
    x = random_array(rng, (1, 4 * stride + kernel, 3 * stride + kernel, c_in))
    w = random_array(rng, (kernel, kernel, c_in, 24))
    b = random_array(rng, (24,))
    _, ratio = _check(_cpu_device(), x, w, b, "winograd", stride=stride, padding="same")
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


@st.composite
def few_channel_cases(draw):
    """C_in <= 4 (conv2d_winograd.cpp, run_winograd_few): rows of 1-40 tiles (strips of several tile
    rows on narrow maps), output channels past one vector and not a multiple of it, 3x3 and 5x5."""
    return dict(
        kernel=draw(st.sampled_from([3, 5])),
        x_shape=(draw(st.integers(1, 3)), draw(st.integers(1, 30)), draw(st.integers(1, 150)), draw(st.integers(1, 4))),
        c_out=draw(st.integers(1, 70)), bias=draw(st.booleans()), padding=draw(PADDINGS),
        activation=draw(st.sampled_from(ACTIVATIONS)), threads=draw(st.integers(1, 3)),
    )


@hsettings
@given(case=few_channel_cases())
def test_winograd_few_input_channels(case, isa, rng):
    """Each tile's products reduced over C_in in registers, V computed for a vector of tiles at once
    from the input split by channel and column phase, strips of tile rows sharing the lanes."""
    k = case["kernel"]
    if not _fits(case["x_shape"], k, case["padding"]):
        return  # the window does not fit: conv2d raises for every algorithm (tested elsewhere)
    x, w, b = _case_arrays(rng, case, (k, k))
    _check_threads_and_packed(case, x, w, b, padding=case["padding"])


@pytest.mark.parametrize(
    "x_shape, c_out, stride, kernel",
    [
        ((1, 40, 230, 3), 64, 1, 3),  # 58 tiles a row: a strip of one row, four vectors of tiles
        ((5, 32, 32, 3), 16, 1, 3),  # 8 tiles a row: strips of several rows, across images
        ((2, 13, 9, 4), 33, 1, 3),  # 3 tiles a row, partial tiles and channel vectors
        ((3, 41, 47, 1), 20, 2, 5),  # 5x5 stride 2 folds to 3x3 over 4 channels
        ((2, 30, 31, 2), 24, 1, 5),  # F(2x2, 5x5)
    ],
)
@pytest.mark.parametrize("activation", [None, "relu6", "sigmoid", "silu"])
def test_winograd_few_input_channels_layers(x_shape, c_out, stride, kernel, activation, isa, rng):
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    for threads in (1, 2):
        with num_threads(threads):
            _, ratio = _check(_cpu_device(), x, w, b, "winograd", stride=stride, padding="same", activation=activation)
        assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


def _few_channel_winograd(out_w):
    """Whether auto's few-input-channel Winograd runs on this machine (dispatch.cpp,
    prefer_few_channel_winograd): on 16-lane vectors, and with full-width 512-bit units (AVX-512 at
    over 1.5x AVX2's FMA rate) only from 48 output columns."""
    return fastconv._cpu.active_isa() == "avx512" and (out_w >= 48 or not full_width_units())


@pytest.mark.parametrize("width", [46, 64])
def test_auto_takes_winograd_for_rgb_3x3_layers(width, rng):
    """"auto" runs 3x3 stride-1 layers over 3-4 channels with Winograd on 16-lane vectors (dispatch.cpp,
    prefer_few_channel_winograd; 0.6-0.75 of the first-layer kernel's time, bench/NOTES.md), and over 2
    (0.78-0.87) from 64 x 64 output pixels, also with sigmoid or tanh, not with one input channel or
    8 / 24 output channels; with full-width 512-bit units from 48 output columns."""
    x = random_array(rng, (2, 48, width, 3))
    wide = _few_channel_winograd(width)
    for c_in, c_out, activation, winograd in [(3, 32, "relu", wide), (3, 16, None, wide), (3, 64, "sigmoid", wide),
                                              (2, 32, "relu6", wide), (1, 32, "relu", False), (3, 24, "relu", False)]:
        xc = x[..., :c_in].copy()
        w = random_array(rng, (3, 3, c_in, c_out))
        auto = fastconv.conv2d(xc, w, padding="same", activation=activation)
        picked = fastconv.conv2d(xc, w, padding="same", activation=activation,
                                 algorithm="winograd" if winograd else "direct")
        assert np.array_equal(auto, picked), (c_in, c_out, activation)


@pytest.mark.parametrize(
    "kernel, c_in, c_out, x_shape, activation, winograd",
    [
        (5, 3, 32, (2, 48, 46), "relu", "wide"),  # F(2x2, 5x5) over few channels on 16-lane vectors
        (5, 3, 32, (1, 64, 64), "relu", "wide"),  # (with full-width units from 48 columns)
        (5, 3, 32, (1, 32, 30), "relu", False),  # below 64 x 64 output pixels
        (5, 1, 64, (2, 48, 46), None, "wide"),
        (5, 1, 32, (2, 48, 46), "relu", False),  # one channel: from 64 output channels on
        (3, 2, 32, (2, 48, 46), "relu6", "wide"),
        (3, 2, 32, (1, 32, 30), "relu6", False),
        (5, 6, 32, (2, 23, 26), "relu", False),  # 5-7 channels stay direct
        (5, 8, 16, (2, 23, 26), "relu6", True),  # F(4x4, 5x5) from 8 channels, any vector width
        (5, 8, 16, (1, 7, 7), "relu6", False),  # 4 tiles
        (5, 12, 32, (2, 23, 26), "sigmoid", False),  # 5x5 with sigmoid or tanh: direct
        (3, 8, 48, (2, 23, 26), "silu", True),  # F(4x4, 3x3) over 8-15 channels from 48 outputs
        (3, 12, 32, (2, 23, 26), "relu", False),
        (3, 12, 64, (2, 23, 26), "tanh", True),  # sigmoid / tanh at 3x3 like the others
    ],
)
def test_auto_takes_winograd_for_few_and_narrow_channels(kernel, c_in, c_out, x_shape, activation, winograd, rng):
    """"auto" at stride 1 below 16 input channels (dispatch.cpp, prefer_few_channel_winograd and
    prefer_narrow_winograd): the measured crossovers of bench/NOTES.md, "Few and narrow channels into
    Winograd"."""
    if winograd == "wide":
        winograd = _few_channel_winograd(x_shape[2])
    x = random_array(rng, (*x_shape, c_in))
    w = random_array(rng, (kernel, kernel, c_in, c_out))
    b = random_array(rng, (c_out,))
    auto = fastconv.conv2d(x, w, b, padding="same", activation=activation)
    picked = fastconv.conv2d(x, w, b, padding="same", activation=activation,
                             algorithm="winograd" if winograd else "direct")
    assert np.array_equal(auto, picked)
    args = (x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    kwargs = dict(padding="same", activation=activation)
    _compare.assert_close(auto, reference.conv2d(*args, **kwargs), terms=kernel * kernel * c_in,
                          scale=sums_scale(reference.conv2d, args, kwargs))


@st.composite
def folded_rgb_cases(draw):
    """7x7 / 8x8 filters at stride 2 over 3 channels: 4x4 over 12 folded ones (conv2d_winograd.cpp,
    run_winograd_folded_rgb), runs of 1-16 tiles, odd counts (a tile paired with itself)."""
    return dict(
        kernel=draw(st.sampled_from([7, 8])),
        x_shape=(draw(st.integers(1, 2)), draw(st.integers(7, 40)), draw(st.integers(7, 120)), 3),
        c_out=draw(st.integers(1, 70)), bias=draw(st.booleans()), padding=draw(PADDINGS),
        activation=draw(st.sampled_from([None, "relu", "relu6", "silu"])), threads=draw(st.integers(1, 3)),
    )


@hsettings
@given(case=folded_rgb_cases())
def test_winograd_folded_rgb_stems(case, isa, rng):
    k = case["kernel"]
    if not _fits(case["x_shape"], k, case["padding"], 2):
        return  # the window does not fit: conv2d raises for every algorithm (tested elsewhere)
    x, w, b = _case_arrays(rng, case, (k, k))
    ratio = _check_threads_and_packed(case, x, w, b, stride=2, padding=case["padding"])
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


def test_auto_takes_winograd_for_resnet_stems(rng):
    """"auto" runs 7x7 stride-2 stems over RGB with F(3x3, 4x4) on 16-lane vectors for output channels
    in whole vectors (dispatch.cpp, prefer_folded_rgb_winograd), and the direct kernel for 24 outputs,
    sigmoid or tanh, and other input channel counts."""
    wide = fastconv._cpu.active_isa() == "avx512"
    for c_in, c_out, activation, winograd in [(3, 64, "relu", wide), (3, 16, None, wide), (3, 24, "relu", False),
                                              (3, 64, "tanh", False), (4, 64, "relu", False)]:
        x = random_array(rng, (1, 45, 50, c_in))
        w = random_array(rng, (7, 7, c_in, c_out))
        auto = fastconv.conv2d(x, w, stride=2, padding=3, activation=activation)
        picked = fastconv.conv2d(x, w, stride=2, padding=3, activation=activation,
                                 algorithm="winograd" if winograd else "direct")
        assert np.array_equal(auto, picked), (c_in, c_out, activation)


def test_auto_folds_alexnet_c1(rng):
    """"auto" takes the folded Winograd path for AlexNet's first layer (11x11, stride 4, 3 -> 96
    channels; bench/NOTES.md: about half the direct kernel's time) and keeps the direct kernel for
    outputs narrower than 24 channels (dispatch.cpp, prefer_winograd)."""
    x = random_array(rng, (1, 75, 79, 3))
    for c_out, folded in [(96, True), (16, False)]:
        w = random_array(rng, (11, 11, 3, c_out))
        auto = fastconv.conv2d(x, w, stride=4, activation="relu")
        winograd = fastconv.conv2d(x, w, stride=4, activation="relu", algorithm="winograd")
        direct = fastconv.conv2d(x, w, stride=4, activation="relu", algorithm="direct")
        want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), stride=4, activation="relu")
        for got in (winograd, direct):
            _compare.assert_close(got, want, terms=11 * 11 * 3)
        assert not np.array_equal(winograd, direct)  # the two algorithms round differently
        assert np.array_equal(auto, winograd if folded else direct)


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, activation, winograd",
    [
        (5, (1, 14, 14, 32), 64, "relu", True),  # F(4x4, 5x5) ~2x faster than direct (bench/NOTES.md)
        (5, (1, 7, 7, 256), 256, "relu", False),  # 4 tiles: its weight transform costs more than it saves
        (3, (1, 28, 28, 64), 64, "tanh", True),  # F(4x4, 3x3), with tanh too
        (3, (1, 7, 7, 512), 512, "tanh", False),
    ],
)
def test_auto_weighs_the_weight_transform_on_small_maps(kernel, x_shape, c_out, activation, winograd, rng):
    """The CPU cost model (dispatch.cpp, prefer_winograd) on either side of the measured crossovers."""
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    auto = fastconv.conv2d(x, w, padding="same", activation=activation)
    picked = fastconv.conv2d(x, w, padding="same", activation=activation,
                             algorithm="winograd" if winograd else "direct")
    assert np.array_equal(auto, picked)


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, padding",
    [
        (3, (1, 9, 11, 160), 203, "same"),  # > 4 MB of transformed weights, 9 tiles: per-block weights
        (5, (2, 6, 5, 200), 150, ((2, 1), (0, 3))),
        (3, (1, 44, 43, 160), 180, 1),  # 121 tiles: per-block weights with AVX-512's wider blocks only
    ],
)
def test_winograd_weights_transformed_per_channel_block(kernel, x_shape, c_out, padding, isa, rng):
    """Small maps with wide layers transform the weights one output-channel block at a time
    (conv2d_winograd.cpp, stream_weights); C_out is not a multiple of the block or the vector."""
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    _, ratio = _check(_cpu_device(), x, w, b, "winograd", padding=padding, activation="relu")
    assert ratio < 0.75, f"error is {ratio:.2f} of the tolerance: too little margin"


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, padding",
    [
        (3, (4, 64, 66, 16), 16, "same"),  # 1088 tiles: several blocks per thread (C 16: 112-tile blocks at most)
        (3, (2, 70, 65, 40), 72, ((2, 0), (1, 3))),  # border tiles in the last block of each image
        (5, (3, 50, 50, 24), 20, "same"),
    ],
)
def test_winograd_threads_run_blocks_of_their_own(kernel, x_shape, c_out, padding, isa, rng):
    """Maps with many tiles: each thread transforms and multiplies whole blocks of tiles in its own V
    and M (conv2d_winograd.cpp, own_blocks), blocks taken dynamically; on one thread the shared path.
    With weights packed ahead too."""
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    for threads in (2, 1):
        with num_threads(threads):
            got, _ = _check(_cpu_device(), x, w, b, "winograd", padding=padding, activation="relu")
            packed = fastconv.conv2d(x, fastconv.pack_weights(w), b, padding=padding, activation="relu",
                                     algorithm="winograd")
            np.testing.assert_array_equal(packed, got)


def _cpu_device():
    class Cpu:
        put = get = staticmethod(lambda a: a)

    return Cpu()


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, padding",
    [
        (3, (1, 28, 28, 64), 64, "same"),  # auto picks Winograd
        (3, (2, 9, 11, 32), 48, 1),
        (3, (1, 6, 6, 8), 8, "valid"),  # auto picks direct
        (3, (1, 17, 15, 40), 70, ((0, 2), (3, 1))),
        (5, (1, 28, 28, 96), 32, "same"),  # auto picks Winograd
        (5, (1, 7, 9, 8), 8, "valid"),  # auto picks direct
        (5, (2, 13, 12, 40), 36, ((2, 1), (0, 3))),
    ],
)
@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_auto_and_direct_match_reference(kernel, x_shape, c_out, padding, activation, device, isa, rng):
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    results = {}
    for algorithm in ("auto", "direct", "winograd"):
        results[algorithm], _ = _check(device, x, w, b, algorithm, padding=padding, activation=activation)
    terms = kernel * kernel * x_shape[3]
    # Judged at the scale of the sums the two round (as _check judges each against the reference):
    # tanh squeezes sums of RMS ~10 to outputs near 1, and an output near 0 keeps its sum's rounding
    # (portable ISA, 1x28x28x64 -> 64: 1.1e-3 apart, above twice the tolerance of outputs of size 1).
    args = tuple(a.astype(np.float64) for a in (x, w, b))
    scale = max(sums_scale(reference.conv2d, args, dict(padding=padding, activation=activation)),
                float(np.sqrt(np.mean(results["direct"].astype(np.float64) ** 2))))
    diff = np.abs(results["auto"].astype(np.float64) - results["direct"])
    assert diff.max() <= 2 * _compare.tolerance(terms) * (np.abs(results["direct"]).max() + scale)


def _phase_images(p, x):
    """x's dilation phases as params.h's dilation_phases lays them out: image (n * dh + ry) * dw + rx,
    pixel (m, q) = x[n, ry + dh m - pad_top, rx + dw q - pad_left], zero outside x."""
    dh, dw = p.dilation_h, p.dilation_w
    h, w = -(-p.out_h // dh) + p.kh - 1, -(-p.out_w // dw) + p.kw - 1
    xp = np.pad(x, ((0, 0), (p.pad_top, max(0, h * dh - p.pad_top - p.h)), (p.pad_left, max(0, w * dw - p.pad_left - p.w)),
                    (0, 0)))[:, : h * dh, : w * dw]
    return np.ascontiguousarray(xp.reshape(p.n, h, dh, w, dw, p.c_in).transpose(0, 2, 4, 1, 3, 5).reshape(-1, h, w, p.c_in))


def _phase_outputs(p, y):
    """The inverse of _phase_images for the phases' outputs: the dilated convolution's output."""
    dh, dw = p.dilation_h, p.dilation_w
    oh, ow = y.shape[1:3]
    y = y.reshape(p.n, dh, dw, oh, ow, p.c_out).transpose(0, 3, 1, 4, 2, 5).reshape(p.n, oh * dh, ow * dw, p.c_out)
    return y[:, : p.out_h, : p.out_w]


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, dilation, padding, activation",
    [
        (3, (1, 30, 28, 32), 32, 2, "same", "relu"),
        (3, (2, 23, 29, 40), 48, (2, 3), "same", None),  # phases of uneven sizes
        (3, (1, 26, 21, 24), 40, 3, ((3, 1), (0, 5)), "silu"),
        (3, (1, 31, 33, 64), 20, 2, "valid", "tanh"),
        (5, (1, 28, 28, 32), 32, 2, "same", "relu6"),
        (5, (2, 21, 19, 16), 24, (3, 2), 4, None),
    ],
)
def test_auto_runs_dilated_filters_as_winograd_over_phases(kernel, x_shape, c_out, dilation, padding, activation, isa,
                                                           rng):
    """"auto" on a dilated stride-1 3x3 / 5x5 filter (dispatch.cpp, prefer_dilated_winograd; 0.36-0.7 of
    the direct kernel's time at dilation 2-4, bench/NOTES.md): Winograd over the input's dilation_h x
    dilation_w phases, each an undilated convolution (params.h, dilation_phases). The result is, bit for
    bit, algorithm="winograd" on the phases gathered here, put back in place; with packed weights too;
    and within Winograd's tolerance of the float64 reference."""
    from fastconv import _params

    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    b = random_array(rng, (c_out,))
    kwargs = dict(padding=padding, dilation=dilation, activation=activation)
    p = _params.conv2d_problem("conv2d", x.shape, w.shape, b.shape, 1, padding, dilation, 1, activation)
    assert fastconv._cpu.conv2d_kernel(p) == "winograd"
    got, _ = _check(_cpu_device(), x, w, b, "auto", **kwargs)
    phases = fastconv.conv2d(_phase_images(p, x), w, b, activation=activation, algorithm="winograd")
    np.testing.assert_array_equal(got, _phase_outputs(p, phases))
    np.testing.assert_array_equal(fastconv.conv2d(x, fastconv.pack_weights(w), b, **kwargs), got)


@pytest.mark.parametrize(
    "x_shape, c_out, dilation, kernel",
    [
        ((1, 33, 33, 256), 256, 6, 3),  # DeepLab's ASPP at output stride 16: phases of 6 x 6 outputs
        ((1, 24, 24, 8), 32, 2, 3),  # under 16 input channels
        ((1, 30, 30, 32), 32, 2, 5),  # 5x5 with sigmoid: direct as without dilation (below)
    ],
)
def test_auto_keeps_dilated_filters_direct_where_phases_do_not_pay(x_shape, c_out, dilation, kernel, rng):
    from fastconv import _params

    activation = "sigmoid" if kernel == 5 else None
    p = _params.conv2d_problem("conv2d", x_shape, (kernel, kernel, x_shape[3], c_out), None, 1, "same", dilation, 1,
                               activation)
    assert fastconv._cpu.conv2d_kernel(p) != "winograd"
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, x_shape[3], c_out))
    _check(_cpu_device(), x, w, None, "auto", padding="same", dilation=dilation, activation=activation)


@pytest.mark.parametrize(
    "kernel, x_shape, c_out, groups, kwargs",
    [
        (5, (1, 27, 27, 96), 256, 2, dict(padding="same", activation="relu")),  # AlexNet's second layer
        (3, (1, 28, 28, 72), 72, 3, dict(padding="same")),  # 24 channels a group (RegNet)
        (3, (2, 21, 17, 64), 96, 4, dict(padding=((1, 2), (0, 1)), activation="silu")),  # 16 in, 24 out a group
        (3, (1, 30, 28, 64), 64, 2, dict(padding="same", dilation=2, activation="tanh")),  # and dilated
        (5, (1, 57, 55, 64), 64, 2, dict(padding=2, stride=2)),  # and strided: folded to 3x3
    ],
)
def test_auto_runs_grouped_filters_as_winograd_group_by_group(kernel, x_shape, c_out, groups, kwargs, isa, rng):
    """"auto" on groups of 16 or more channels both ways and 2 M multiply-adds or more a group
    (dispatch.cpp, prefer_grouped_winograd; AlexNet's 5x5 in 2 groups in 0.28 of the direct kernel's
    time, bench/NOTES.md): each group through Winograd as an ungrouped convolution, bit for bit the
    groups' own calls side by side; with packed weights too; within tolerance of the reference."""
    from fastconv import _params

    c_in = x_shape[3]
    x = random_array(rng, x_shape)
    w = random_array(rng, (kernel, kernel, c_in // groups, c_out))
    b = random_array(rng, (c_out,))
    p = _params.conv2d_problem("conv2d", x.shape, w.shape, b.shape, kwargs.get("stride", 1), kwargs["padding"],
                               kwargs.get("dilation", 1), groups, kwargs.get("activation"))
    assert fastconv._cpu.conv2d_kernel(p) == "winograd"
    got, _ = _check(_cpu_device(), x, w, b, "auto", groups=groups, **kwargs)
    cig, cog = c_in // groups, c_out // groups
    # Dilated groups cannot ask for algorithm="winograd"; auto takes it for them (checked just above).
    algorithm = "auto" if "dilation" in kwargs else "winograd"
    each = [fastconv.conv2d(np.ascontiguousarray(x[..., g * cig:(g + 1) * cig]),
                            np.ascontiguousarray(w[..., g * cog:(g + 1) * cog]), b[g * cog:(g + 1) * cog],
                            algorithm=algorithm, **kwargs) for g in range(groups)]
    np.testing.assert_array_equal(got, np.concatenate(each, axis=-1))
    np.testing.assert_array_equal(fastconv.conv2d(x, fastconv.pack_weights(w), b, groups=groups, **kwargs), got)


@pytest.mark.parametrize(
    "x_shape, c_out, groups",
    [
        ((1, 14, 14, 240), 240, 10),  # 1 M multiply-adds a group: Winograd 1.02-1.15x slower
        ((1, 28, 28, 64), 64, 8),  # 8 channels a group
    ],
)
def test_auto_keeps_small_groups_direct(x_shape, c_out, groups, rng):
    from fastconv import _params

    p = _params.conv2d_problem("conv2d", x_shape, (3, 3, x_shape[3] // groups, c_out), None, 1, "same", 1, groups,
                               None)
    assert fastconv._cpu.conv2d_kernel(p) != "winograd"


def test_direct_kernel_shapes_still_accept_auto_and_direct(rng):
    x = random_array(rng, (1, 9, 9, 4))
    for kernel, kwargs in [((5, 5, 4, 6), {}), ((7, 7, 4, 6), {}), ((3, 3, 4, 6), dict(stride=2)), ((3, 3, 2, 6), dict(groups=2)),
                           ((3, 3, 4, 6), dict(dilation=2)), ((1, 1, 4, 6), {})]:
        w = random_array(rng, kernel)
        for algorithm in ("auto", "direct"):
            got = fastconv.conv2d(x, w, algorithm=algorithm, **kwargs)
            want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), **kwargs)
            _compare.assert_close(got, want, terms=kernel[0] * kernel[1] * kernel[2])


@pytest.mark.parametrize(
    "kernel, kwargs, what",
    [
        ((7, 7, 4, 6), {}, "7x7"),
        ((5, 3, 4, 6), {}, "5x3"),
        ((4, 4, 4, 6), {}, "4x4"),  # 4x4 only as a strided filter's fold
        ((7, 5, 4, 6), dict(stride=2), "stride"),  # folds to 4x3
        ((3, 3, 4, 6), dict(stride=2), "stride"),  # folds to 2x2
        ((5, 5, 4, 6), dict(stride=(2, 1)), "stride"),  # folds to 3x5
        ((3, 3, 4, 6), dict(dilation=2), "dilation"),
        ((3, 3, 2, 6), dict(groups=2), "groups"),
        ((1, 1, 4, 6), {}, "1x1"),
    ],
)
def test_winograd_unsupported_shapes_raise(kernel, kwargs, what, rng):
    x = random_array(rng, (1, 9, 9, 4))
    with pytest.raises(ValueError, match=r"conv2d: algorithm='winograd' needs a 3x3 or 5x5 kernel"):
        fastconv.conv2d(x, random_array(rng, kernel), algorithm="winograd", **kwargs)


@pytest.mark.parametrize("algorithm", ["fast", "Winograd", "", None, 3])
def test_unknown_algorithm_raises(algorithm, rng):
    x = random_array(rng, (1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"conv2d: unknown algorithm"):
        fastconv.conv2d(x, random_array(rng, (3, 3, 2, 2)), algorithm=algorithm)


def test_algorithm_is_part_of_the_memoised_problem():
    from fastconv import _params

    args = ("conv2d", (1, 8, 8, 4), (3, 3, 4, 4), None, 1, "same", 1, 1, None)
    assert _params.conv2d_problem(*args).algorithm == "auto"
    assert _params.conv2d_problem(*args, "winograd").algorithm == "winograd"
    assert _params.conv2d_problem(*args, "direct").algorithm == "direct"
    assert _params.depthwise_problem("depthwise_conv2d", (1, 8, 8, 4), (3, 3, 4), None, 1, "same", 1, None).algorithm == "auto"


@pytest.mark.parametrize("activation, kernel, stride, expected", [
    ("tanh", 5, 1, "direct"), ("sigmoid", 5, 1, "direct"), ("silu", 5, 1, "winograd"), (None, 5, 1, "winograd"),
    ("tanh", 3, 1, "winograd"), ("sigmoid", 3, 1, "winograd"),
    ("tanh", 9, 2, "direct"), ("sigmoid", 10, 2, "direct"), ("tanh", 5, 2, "winograd"), (None, 9, 2, "winograd"),
    ("tanh", 7, 2, "direct"), ("sigmoid", 8, 2, "direct"), ("silu", 7, 2, "winograd"),
])
def test_winograd_5x5_with_sigmoid_or_tanh_runs_direct(activation, kernel, stride, expected):
    """F(2x2, 5x5)'s rounding after sigmoid / tanh can exceed the tolerance: algorithm='winograd'
    then runs the direct kernel (3x3 runs F(4x4, 3x3) with them on the CPU), and so does
    F(3x3, 4x4). Strided filters count by their folded size (9x9 and 10x10 at stride 2 fold to 5x5,
    7x7 and 8x8 to 4x4, 5x5 to 3x3)."""
    from fastconv import _params

    p = _params.conv2d_problem("conv2d", (1, 24, 24, 4), (kernel, kernel, 4, 4), None, stride, "same", 1, 1,
                               activation, "winograd")
    assert p.algorithm == expected
