"""conv2d with weights packed ahead of the calls (pack_weights of an HWIO w): the direct kernel's
channel blocks and the Winograd kernels' transformed weights U, made by the first call that needs
each form and read by the later ones, against the float64 reference and against the same kernel
packing per call (the same arithmetic, so bit for bit)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _compare, _params, reference

from helpers import full_width_units, isa_choice, num_threads, random_array, sums_scale

ACTIVATIONS = [None, "relu", "relu6", "sigmoid", "tanh", "silu"]


def _check_packed(x, w, b, packed=None, **kwargs):
    """conv2d from packed weights: within tolerance of the reference and, unless the algorithm is
    "auto" (whose cost model weighs packed weights differently) or the packed form moves a layer
    to another kernel (a few patches: the GEMM per call, the tiled engine from its packed form),
    equal to the per-call packing."""
    packed = packed if packed is not None else fastconv.pack_weights(w)
    got = fastconv.conv2d(x, packed, b, **kwargs)
    args = (x.astype(np.float64), w.astype(np.float64), None if b is None else b.astype(np.float64))
    ref_kwargs = {k: v for k, v in kwargs.items() if k != "algorithm"}
    want = reference.conv2d(*args, **ref_kwargs)
    assert got.shape == want.shape and got.dtype == np.float32
    scale = sums_scale(reference.conv2d, args, ref_kwargs)
    terms = w.shape[0] * w.shape[1] * w.shape[2]
    _compare.assert_close(got, want, terms=terms, what=f"conv2d packed {kwargs}", scale=scale)
    p = _problem(x.shape, w.shape, **kwargs)
    moved = fastconv._cpu.conv2d_kernel(p) == "window gemm" and "direct" in fastconv._cpu.conv2d_packing(p)[0]
    if kwargs.get("algorithm", "auto") != "auto" and not moved:
        np.testing.assert_array_equal(got, fastconv.conv2d(x, w, b, **kwargs))
    return packed


def _problem(x_shape, w_shape, **kwargs):
    return _params.conv2d_problem("conv2d", x_shape, w_shape, None, kwargs.get("stride", 1), kwargs.get("padding", 0),
                                  kwargs.get("dilation", 1), kwargs.get("groups", 1), kwargs.get("activation"),
                                  kwargs.get("algorithm", "auto"))


@st.composite
def packed_cases(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if draw(st.booleans()):
        kh = kw = draw(st.sampled_from([3, 5]))
    stride = draw(st.sampled_from([1, 1, 2, (1, 2), 3]))
    dilation = draw(st.sampled_from([1, 1, 1, 2]))
    padding = draw(st.sampled_from(["valid", "same", 0, 1, 2, (1, 0)]))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 24)), draw(st.integers(1, 24))
    c_in, c_out = groups * draw(st.integers(1, 24)), groups * draw(st.integers(1, 24))
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  activation=draw(st.sampled_from(ACTIVATIONS)))
    return (n, h, w, c_in), (kh, kw, c_in // groups, c_out), draw(st.booleans()), kwargs, draw(st.integers(1, 3))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=packed_cases())
def test_packed_conv2d_random(case, isa, rng):
    x_shape, w_shape, bias, kwargs, threads = case
    try:
        p = _problem(x_shape, w_shape, **kwargs)
    except ValueError:  # the window does not fit the padded input, or "same" with a stride and dilation
        return
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    b = random_array(rng, (w_shape[3],)) if bias else None
    algorithms = ["auto", "direct"] + (["winograd"] if p.winograd_eligible else [])
    with num_threads(threads):
        for algorithm in algorithms:
            _check_packed(x, w, b, algorithm=algorithm, **kwargs)


# Each path the packed forms take: the direct kernel's sweeps and its one block-major sweep (few
# pixels, 512 x 512 weights), narrow and grouped tiles, channel counts past the vector blocks; every
# Winograd transform (F(4x4, 3x3), F(2x2, 3x3) with tanh, F(4x4, 5x5), F(2x2, 5x5) below 8 input
# channels), its single block on small maps with large U, and strided filters folded into it.
@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 7, 7, 512), (3, 3, 512, 512), dict(padding=1, algorithm="direct")),
    ((1, 7, 7, 512), (3, 3, 512, 512), dict(padding=1, algorithm="winograd")),
    ((1, 14, 14, 256), (3, 3, 256, 260), dict(padding="same", algorithm="winograd", activation="relu")),
    ((2, 13, 11, 40), (3, 3, 40, 37), dict(padding=1, algorithm="winograd", activation="tanh")),
    ((1, 27, 27, 96), (5, 5, 96, 70), dict(padding=2, algorithm="winograd", activation="silu")),
    ((2, 12, 9, 5), (5, 5, 5, 24), dict(padding=(1, 3), algorithm="winograd")),
    ((1, 35, 33, 3), (11, 11, 3, 40), dict(stride=4, algorithm="winograd")),
    ((2, 15, 16, 24), (5, 5, 24, 33), dict(stride=2, padding="same", algorithm="winograd")),
    ((2, 30, 30, 16), (3, 3, 16, 6), dict(padding=1, algorithm="direct", activation="relu6")),
    ((1, 17, 17, 64), (1, 7, 64, 96), dict(padding=(0, 3))),
    ((2, 20, 19, 48), (3, 3, 12, 36), dict(groups=4, padding=1, stride=2)),
    ((1, 12, 12, 32), (3, 3, 4, 16), dict(groups=8, dilation=2, padding="same")),
    ((3, 9, 9, 130), (2, 2, 130, 70), dict(dilation=(2, 1))),
    # windows apart over few pixels (window_gemm): the GEMM's packed form of the (K, C_out) matrix
    ((1, 8, 8, 64), (2, 2, 64, 40), dict(stride=2, algorithm="direct")),  # 16 pixels: stream_gemm
    ((1, 64, 64, 3), (8, 8, 3, 50), dict(stride=8, activation="relu", algorithm="direct")),  # 64: sweep_gemm
    ((1, 14, 14, 96), (1, 1, 96, 200), dict(stride=2, algorithm="direct")),  # strided 1x1
])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_conv2d_paths(x_shape, w_shape, kwargs, threads, isa, rng):
    x, w, b = random_array(rng, x_shape), random_array(rng, w_shape, 0.1), random_array(rng, (w_shape[3],))
    with num_threads(threads):
        packed = _check_packed(x, w, b, **kwargs)
        _check_packed(x, w, None, packed, **kwargs)  # the form made by the first call, read again


def test_packed_conv2d_forms_per_kernel_and_isa(rng):
    """One PackedWeights serves maps that select different kernels, and every instruction set: each
    (ISA, kernel) gets its own form, made once."""
    w, b = random_array(rng, (3, 3, 64, 64), 0.1), random_array(rng, (64,))
    packed = fastconv.pack_weights(w)
    for name in fastconv._cpu.supported_isas():
        with isa_choice(name):
            for algorithm in ("direct", "winograd"):
                _check_packed(random_array(rng, (1, 10, 12, 64)), w, b, packed, padding=1, algorithm=algorithm)
                _check_packed(random_array(rng, (2, 6, 5, 64)), w, b, packed, padding=1, algorithm=algorithm)
    layouts = sorted(packed.forms)
    assert len(layouts) == 2 * len(fastconv._cpu.supported_isas()), layouts
    assert all(layout.split()[0] in fastconv._cpu.supported_isas() for layout in layouts)


def test_packed_weights_on_kernels_that_read_w_in_place(rng):
    """Depthwise, first-layer and pointwise convolutions take packed weights too; the first two read
    the copy as it is, the last one the dense layout."""
    for x_shape, w_shape, kwargs in [((2, 16, 16, 8), (3, 3, 1, 8), dict(groups=8, padding=1)),
                                     ((2, 32, 32, 3), (3, 3, 3, 32), dict(stride=2, padding=1)),
                                     ((1, 9, 9, 40), (1, 1, 40, 50), dict())]:
        x, w = random_array(rng, x_shape), random_array(rng, w_shape)
        packed = _check_packed(x, w, None, activation="relu", **kwargs)
        kernel_layouts = [layout for layout in packed.forms if "direct" in layout or "winograd" in layout]
        assert kernel_layouts == [], packed.forms


def test_packed_conv2d_keeps_its_own_copy(rng):
    x, w = random_array(rng, (1, 7, 7, 64)), random_array(rng, (3, 3, 64, 64))
    packed = fastconv.pack_weights(w)
    want = fastconv.conv2d(x, w, padding=1)
    w[:] = 0.0
    np.testing.assert_array_equal(fastconv.conv2d(x, packed, padding=1, algorithm="direct"),
                                  fastconv.conv2d(x, packed.weights, padding=1, algorithm="direct"))
    _compare.assert_close(fastconv.conv2d(x, packed, padding=1), want, terms=9 * 64, what="packed copy")


@pytest.mark.parametrize("algorithm", ["direct", "winograd"])
def test_packed_conv2d_reads_its_form_not_w(algorithm, rng):
    """After the first call, the kernel reads the packed form instead of packing w again: with the
    form zeroed, every output is the bias alone."""
    x, w, b = random_array(rng, (1, 9, 9, 32)), random_array(rng, (3, 3, 32, 40)), random_array(rng, (40,))
    packed = _check_packed(x, w, b, padding=1, algorithm=algorithm)
    (form,) = packed.forms.values()
    form[:] = 0.0
    got = fastconv.conv2d(x, packed, b, padding=1, algorithm=algorithm)
    np.testing.assert_array_equal(got, np.broadcast_to(b, got.shape))


def test_packed_window_gemm_reads_the_dense_form(rng):
    """A patch convolution over few pixels reads the GEMM's form of its weights, the one dense
    makes of the same (KH * KW * C_in, C_out) matrix: zeroed, every output is the bias alone."""
    x, w, b = random_array(rng, (1, 32, 32, 3)), random_array(rng, (8, 8, 3, 24)), random_array(rng, (24,))
    packed = _check_packed(x, w, b, stride=8, algorithm="direct")
    assert sorted(packed.forms) == [fastconv._cpu.active_isa()], packed.forms
    (form,) = packed.forms.values()
    form[:] = 0.0
    got = fastconv.conv2d(x, packed, b, stride=8)
    np.testing.assert_array_equal(got, np.broadcast_to(b, got.shape))


def test_packed_patch_layers_choose_by_weight_size():
    """A few patches over small weights go back to the tiled engine once packed (its packed form
    beats the GEMM's there); over 8 MiB or more, and on first-layer shapes, they stay a GEMM."""
    isa = fastconv._cpu.active_isa()
    small = _problem((1, 8, 8, 64), (2, 2, 64, 40), stride=2)
    assert fastconv._cpu.conv2d_kernel(small) == "window gemm"
    assert " direct, groups 1" in fastconv._cpu.conv2d_packing(small)[0]  # on AVX2 where 40 channels fit it better
    large = _problem((1, 7, 7, 768), (2, 2, 768, 1536), stride=2)
    assert fastconv._cpu.conv2d_packing(large) == (isa, fastconv._cpu.conv2d_packing(large)[1])
    first = _problem((1, 64, 64, 3), (8, 8, 3, 50), stride=8)
    assert fastconv._cpu.conv2d_packing(first)[0] == isa


def test_packed_conv2d_errors(rng):
    with pytest.raises(ValueError, match="pack_weights: w must be 2-D"):
        fastconv.pack_weights(random_array(rng, (3, 3, 4)))
    packed = fastconv.pack_weights(random_array(rng, (3, 3, 16, 16)))
    with pytest.raises(ValueError, match=r"conv2d: w must have shape \(KH, KW, C_in // groups, C_out\)"):
        fastconv.conv2d(random_array(rng, (1, 8, 8, 9)), packed)
    with pytest.raises(ValueError, match="pointwise_conv2d: w is packed from a 3x3 kernel"):
        fastconv.pointwise_conv2d(random_array(rng, (1, 8, 8, 16)), packed)
    with pytest.raises(ValueError, match="dense: w is packed from a 3x3 kernel"):
        fastconv.dense(random_array(rng, (2, 8)), packed)
    # The binding checks what it finds: a dict of forms, and the size of the layout's form.
    x = random_array(rng, (1, 8, 8, 16))
    p = _problem(x.shape, packed.shape, padding=1, algorithm="direct")
    layout, floats = fastconv._cpu.conv2d_packing(p)
    out = np.empty(p.out_shape, np.float32)
    with pytest.raises(ValueError, match="w_packed: expected"):
        fastconv._cpu.conv2d(p, x, packed.weights, None, out, {layout: np.zeros(floats - 1, np.float32)})
    with pytest.raises(TypeError, match="forms: expected a dict"):
        fastconv._cpu.conv2d(p, x, packed.weights, None, out, [])
    depthwise = _problem((1, 8, 8, 8), (3, 3, 1, 8), groups=8)
    assert fastconv._cpu.conv2d_packing(depthwise) == ("", 0)


@pytest.mark.parametrize("x_shape, c_out, kernel", [((1, 7, 7, 512), 512, "direct"), ((1, 7, 7, 1024), 1024, "direct"),
                                                     ((1, 7, 7, 160), 160, "winograd"), ((1, 7, 7, 256), 256, "winograd"),
                                                     ((1, 7, 7, 384), 384, "winograd"), ((1, 14, 14, 256), 256, "winograd")])
def test_auto_with_packed_weights_weighs_reading_u(x_shape, c_out, kernel):
    """With packed weights "auto" prices Winograd's transformed weights by their read, not their
    transform: on 7x7 maps a U that stays in the L3 between calls is cheap to read (256 and 384
    channels: 0.40-0.46 of the direct kernel's time), one past it is not (512 -> 512, 37.7 MB per
    call: 0.53-1.26 of direct over sessions, kept direct; 1024: a tie), bench/NOTES.md."""
    p = _problem(x_shape, (3, 3, x_shape[3], c_out), padding=1, activation="relu")
    layout, floats = fastconv._cpu.conv2d_packing(p)
    assert layout.split()[1].rstrip(",") == kernel and floats > 0, layout


def test_packed_weights_shared_between_python_threads(rng):
    """Threads calling with one PackedWeights at once, before any form exists: each call may pack with
    the GIL released; the dict keeps the first form stored and no call reads one it let go (a version
    that replaced the stored form freed it under a running kernel: wrong results in most rounds)."""
    from concurrent.futures import ThreadPoolExecutor

    w, b = random_array(rng, (3, 3, 48, 40), 0.1), random_array(rng, (40,))
    wd = random_array(rng, (700, 300))
    xs = [random_array(rng, (1, 12, 12, 48)) for _ in range(8)]
    xd = [random_array(rng, (8, 700)) for _ in range(8)]
    want = [fastconv.conv2d(x, w, b, padding=1, algorithm="direct") for x in xs]
    want_dense = [fastconv.dense(x, wd) for x in xd]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            packed, packed_dense = fastconv.pack_weights(w), fastconv.pack_weights(wd)
            got = list(pool.map(lambda x: fastconv.conv2d(x, packed, b, padding=1, algorithm="direct"), xs))
            got_dense = list(pool.map(lambda x: fastconv.dense(x, packed_dense), xd))
            for y, expected in zip(got, want):
                np.testing.assert_array_equal(y, expected)
            for y, expected in zip(got_dense, want_dense):
                _compare.assert_close(y, expected, terms=700, what="dense, packed in threads")
            assert len(packed.forms) == 1 and len(packed_dense.forms) == 1


@pytest.mark.skipif(not fastconv._cpu.narrow_isa(), reason="this CPU has no narrower ISA beside its best (AVX-512 with AVX2)")
@pytest.mark.parametrize("x_shape, c_out, algorithm, narrow", [
    ((2, 16, 16, 16), 16, "winograd", True),   # 32-channel column blocks half empty
    ((2, 16, 16, 24), 32, "winograd", "halves"),  # 24 input channels pad to 32 lanes
    ((2, 16, 16, 64), 48, "winograd", "halves"),  # 48 outputs pad to 64
    ((2, 16, 16, 64), 64, "winograd", False),
    ((2, 16, 16, 16), 16, "direct", False),    # the direct engine keeps AVX-512 at one vector
    ((2, 16, 16, 16), 48, "direct", False),    # 32 + a one-vector last block: 48 lanes on either
    ((2, 12, 12, 16), 80, "direct", False),
    ((2, 12, 12, 16), 8, "direct", True),      # one vector: 16 lanes against AVX2's 8
    ((2, 12, 12, 16), 20, "direct", False),    # 32 lanes on either
    ((2, 12, 12, 16), 40, "direct", False),    # 48 lanes either way (AVX2 keeps two-vector blocks)
    ((2, 12, 12, 16), 176, "direct", False),   # 176 on either
])
def test_auto_isa_serves_few_channels_with_the_narrower_isa(rng, x_shape, c_out, algorithm, narrow):
    """Under "auto" on an AVX-512 CPU, the kernels whose lanes carry channels run AVX2's kernels where
    16 lanes fill worse than 8 (dispatch.cpp, channel_table); the packed layout names the ISA that
    runs, and the answer is checked against the reference either way. (First layers, depthwise and
    pooling take no packed weights: the "auto" choice of the `isa` fixture checks their answers.)
    "halves": narrower only where 512-bit FMAs run as two halves (Zen 4); with full-width units
    (AVX-512 at more than 1.5x AVX2's measured FMA rate) Winograd stays on AVX-512 unless it pads to
    twice the lanes."""
    if narrow == "halves":
        narrow = not full_width_units()
    w_shape = (3, 3, x_shape[3], c_out)
    with isa_choice("auto"):
        layout, _ = fastconv._cpu.conv2d_packing(_problem(x_shape, w_shape, padding=1, algorithm=algorithm))
        assert layout.split()[0] == (fastconv._cpu.narrow_isa() if narrow else fastconv._cpu.active_isa()), layout
        w = random_array(rng, w_shape, 0.2)
        _check_packed(random_array(rng, x_shape), w, random_array(rng, (c_out,)), padding=1, algorithm=algorithm)
