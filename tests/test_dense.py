"""dense against the NumPy reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import _compare, reference

from helpers import check_against_reference, isa_choice, num_threads, random_array


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 9), k=st.integers(1, 600), m=st.integers(1, 300), bias=st.booleans(),
       activation=st.sampled_from([None, "relu", "relu6", "sigmoid", "tanh", "silu"]))
def test_dense_random(n, k, m, bias, activation, device, isa, rng):
    x, w = random_array(rng, (n, k)), random_array(rng, (k, m))
    b = random_array(rng, (m,)) if bias else None
    check_against_reference(device, "dense", [x, w, b], dict(activation=activation), terms=k)


def test_dense_matches_matmul(device, rng):
    x, w, b = random_array(rng, (8, 4096)), random_array(rng, (4096, 100), 0.02), random_array(rng, (100,))
    got = device.get(fastconv.dense(device.put(x), device.put(w), device.put(b)))
    np.testing.assert_allclose(got, x.astype(np.float64) @ w + b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows, k, m", [(1, 3, 1), (5, 64, 16), (7, 1, 33), (13, 20, 47), (25, 300, 130), (6, 2000, 8),
                                        (4, 512, 10), (3, 700, 53), (4, 37, 1), (8, 100, 70)])
def test_dense_tile_edges(rows, k, m, device, isa, rng):
    """Rows not a multiple of the 6/8-row tile, columns past the 8/16/32-column blocks, tiny k; one
    row group (<= 4 rows on AVX2, 8 on AVX-512) walking all k steps per strip."""
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    check_against_reference(device, "dense", [x, w, b], dict(activation="relu"), terms=k)


def test_relu_keeps_nan_in_full_tiles(isa):
    x = np.ones((12, 4), np.float32)
    x[3, 1] = np.nan
    got = fastconv.dense(x, np.ones((4, 32), np.float32), activation="relu")
    assert np.isnan(got[3]).all() and np.isfinite(np.delete(got, 3, axis=0)).all()


# Outputs of at most 16 columns past 16 rows on AVX-512 (gemm.cpp, kgroup_gemm): each broadcast
# carries 2 or 4 reduction steps, so a NaN anywhere in a row's steps, the last partial group
# included, must reach every column of that row and no other row.
@pytest.mark.parametrize("k, m", [(7, 16), (7, 5), (4, 9), (3, 3)])
def test_nan_stays_in_its_row_in_step_groups(k, m, isa):
    for col in range(k):
        x = np.ones((40, k), np.float32)
        x[21, col] = np.nan
        got = fastconv.dense(x, np.ones((k, m), np.float32), activation="relu")
        assert np.isnan(got[21]).all() and np.isfinite(np.delete(got, 21, axis=0)).all()


# The weight-streaming path (rows <= 16): row groups of 4 / 8, strips of 3 vectors, a column tail
# narrower than one vector read from a padded copy, reduction chunks of 16 with the sum kept in y.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 32, 33])
@pytest.mark.parametrize("k, m", [(1, 1), (15, 7), (16, 8), (17, 25), (100, 40), (49, 1000), (300, 131)])
def test_dense_streaming_edges(rows, k, m, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    check_against_reference(device, "dense", [x, w, b], dict(activation="silu"), terms=k)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows, k, m", [(1, 700, 1000), (8, 100, 33), (3, 64, 17), (9, 40, 200), (40, 50, 70)])
def test_dense_thread_counts(threads, rows, k, m, device, isa, rng):
    """Threads split the columns in whole cache lines; fewer lines than threads leaves some idle."""
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation="relu6"), terms=k)


@pytest.mark.parametrize("activation", ["relu", "relu6", "sigmoid", "tanh", "silu"])
def test_streaming_activations_nan_and_saturation(activation, isa):
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    x[2] = [1e30, -1e30, 30.0, -100.0]
    w = np.zeros((4, 27), np.float32)
    w[0, :9], w[1, 9:18], w[2, 18:], w[3, :] = 1.0, 1.0, 1.0, 0.5
    got = fastconv.dense(x, w, activation=activation)
    want = reference.dense(x.astype(np.float64), w.astype(np.float64), activation=activation)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=2e-6, atol=1e-6)



# The panel path (rows > 16, fewer than 2 column blocks per thread up to 100 rows): row tiles of 6 / 8 (the last one short), column blocks of 2 vectors
# with a 1-vector block for a tail of <= one vector, 1-vector blocks only when m <= one vector,
# weights packed per call; groups of tiles (8 KiB of input) swept once per column block.
@pytest.mark.parametrize("rows", [17, 24, 33, 37, 48, 50, 100])
@pytest.mark.parametrize("k, m", [(1, 1), (2, 7), (3, 8), (5, 9), (16, 16), (24, 144), (17, 33), (31, 17),
                                  (64, 40), (70, 65), (9, 300), (67, 131), (256, 64)])
def test_dense_panel_edges(rows, k, m, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    check_against_reference(device, "dense", [x, w, b], dict(activation="relu6"), terms=k)
    check_against_reference(device, "dense", [x, w, None], {}, terms=k)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(17, 100), k=st.integers(1, 70), m=st.integers(1, 300), threads=st.sampled_from([1, 2, 3]),
       activation=st.sampled_from([None, "relu", "relu6", "silu"]))
def test_dense_panel_random(rows, k, m, threads, activation, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation=activation), terms=k)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("rows, k, m", [(4000, 24, 144), (3001, 67, 33), (777, 256, 64), (1000, 5, 7)])
def test_dense_panel_threads(threads, rows, k, m, device, isa, rng):
    """Large enough to run on several threads: each takes a contiguous run of row tiles."""
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation="relu6"), terms=k)


# panel_gemm's paired tiles (AVX-512, more than 3 vectors of columns: tiles of two packed blocks):
# a pair whose second block is partly filled (49, 63), pairs then a narrow tail (65, 80) or a lone
# full block (81, 96, 112), several pairs (144, 200, 257); row tails of every size (203 = 33 x 6 + 5
# rows on one thread); reductions of 1 step and chunked ones (k = 800: a pair's weights past the
# chunking size); weights packed per call and by pack_weights.
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m", [49, 63, 64, 65, 80, 81, 96, 112, 144, 200, 257])
@pytest.mark.parametrize("k", [1, 37, 800])
def test_dense_panel_pairs(threads, k, m, isa, rng):
    x, w, b = random_array(rng, (203, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    want = reference.dense(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu6")
    with num_threads(threads):
        got = fastconv.dense(x, w, b, activation="relu6")
        got_packed = fastconv.dense(x, fastconv.pack_weights(w), b, activation="relu6")
    _compare.assert_close(got, want, terms=k, what="dense, paired panel")
    _compare.assert_close(got_packed, want, terms=k, what="dense, paired panel, packed weights")


# panel_gemm's dot-product tail (gemm.cpp, dot_tail): a last block of at most a quarter vector of
# columns (1-4 on AVX-512, 1-2 on AVX2, 1 on SSE2; wider tails take the one-vector tile) after full
# blocks; 203 rows (every remainder of the tiles and of dot_tail's groups of 4 rows); reductions of
# 1 step, below, off and past one vector; weights packed per call and by pack_weights; a NaN input row
# stays a NaN output row.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m", [17, 18, 19, 20, 33, 34, 36, 65, 131])
@pytest.mark.parametrize("k", [1, 7, 16, 67, 300])
def test_dense_panel_dot_tail(threads, k, m, isa, rng):
    activation = [None, "relu6", "sigmoid"][m % 3]
    x, w, b = random_array(rng, (203, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    x[101, k // 2] = np.nan
    want = reference.dense(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation=activation)
    with num_threads(threads):
        got = fastconv.dense(x, w, b, activation=activation)
        got_packed = fastconv.dense(x, fastconv.pack_weights(w), b, activation=activation)
    for result, what in ((got, "dense, dot tail"), (got_packed, "dense, dot tail, packed weights")):
        assert np.isnan(result[101]).all(), what
        finite = np.arange(203) != 101
        _compare.assert_close(result[finite], want[finite], terms=k, what=what)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("m", [5, 16, 33])
def test_panel_keeps_nan(activation, m, isa):
    x = np.ones((40, 3), np.float32)
    x[7, 1] = np.nan
    x[38, 0] = np.nan
    got = fastconv.dense(x, np.ones((3, m), np.float32), activation=activation)
    assert np.isnan(got[[7, 38]]).all() and np.isfinite(np.delete(got, [7, 38], axis=0)).all()


# sweep_gemm (17-100 rows and at least 2 column blocks per thread, 101-200 rows with >= 256 columns):
# threads split the column blocks, each packs a group of its blocks one reduction chunk (<= 128
# steps, uneven ends) at a time, partial sums wait in y; several groups per thread (m = 2500), a
# partly filled last block, 1-step chunks; 169 / 200 rows with 255 / 256 / 1000 columns and 201 rows
# on either side of the wide rule; 33.7 MB of weights (past 32 MiB: the next pack's rows prefetched
# during the tiles, across chunks and groups).
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, k, m", [(17, 2048, 1000), (32, 129, 37), (33, 129, 37), (49, 512, 700), (64, 1000, 200),
                                        (100, 300, 1025), (49, 7, 2500), (97, 1, 65), (169, 130, 1000),
                                        (200, 33, 256), (200, 33, 255), (201, 40, 300), (40, 4099, 2053)])
def test_dense_sweep(threads, rows, k, m, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation="silu"), terms=k)
        check_against_reference(device, "dense", [x, w, None], dict(activation="relu"), terms=k)


# Rows 1-32 on 1-3 threads (streaming up to 16, then sweep or panel): every row count, odd
# reductions that end inside a 16-step chunk, column counts that are not a multiple of any vector
# width (a tail on the last thread), and fewer cache lines of columns than threads.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows", list(range(1, 33)))
@pytest.mark.parametrize("k, m, bias, activation", [(1, 5, True, None), (31, 13, False, "relu"),
                                                    (97, 61, True, "silu"), (515, 203, False, "tanh")])
def test_streaming_rows_threads(threads, rows, k, m, bias, activation, device, isa, rng):
    x, w = random_array(rng, (rows, k)), random_array(rng, (k, m))
    b = random_array(rng, (m,)) if bias else None
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation=activation), terms=k)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_streaming_keeps_nan_on_threads(threads, activation, isa):
    """NaN passes through relu / relu6 in every thread's columns, including the column tail."""
    rows, k, m = 5, 333, 1001
    x = np.full((rows, k), 0.01, np.float32)
    x[2, 200] = np.nan
    w = np.full((k, m), -1.0, np.float32)
    with num_threads(threads):
        got = fastconv.dense(x, w, np.zeros(m, np.float32), activation=activation)
    assert np.isnan(got[2]).all()
    assert (np.delete(got, 2, axis=0) == 0.0).all()


# The row-streaming path (rows <= 4, weights past 32 MiB): k split across threads (contiguous runs of
# weight rows, 4 or 2 at a time with a remainder), partial sums in column blocks of 64 KiB / rows,
# columns not a multiple of the vector. rows = 5 takes the strip path on the same weights.
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_row_streaming(rows, threads, device, isa, rng):
    k, m = 4099, 2053  # 33.7 MB of weights
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation="tanh"), terms=k)


# Narrow outputs at 1-2 rows (a classifier head): the sums of up to 4 vectors of columns held in
# registers over the thread's whole run of k, the last vector partial; k leaving a remainder of the
# 4- / 2-step unroll.
@pytest.mark.parametrize("rows", [1, 2])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("k, m", [(3, 1), (1283, 10), (1283, 16), (515, 17), (1283, 33), (515, 40), (1283, 64), (66, 65)])
def test_dense_narrow_heads(rows, threads, k, m, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    with num_threads(threads):
        check_against_reference(device, "dense", [x, w, b], dict(activation="relu"), terms=k)


# panel_gemm with its reduction in chunks (a block's weights past 192 KiB: K > 1536 / 3072 / 6144 on
# AVX-512 / AVX2 / SSE2): equal chunks of <= 256 steps, partial sums kept in y, the activation after
# the last; a narrow last block (m = 37), a 1-vector problem (m = 5), rows past one tile group.
@pytest.mark.parametrize("rows, k, m", [(40, 6200, 37), (33, 6151, 5), (200, 6300, 70)])
def test_dense_chunked_reduction(rows, k, m, device, isa, rng):
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    check_against_reference(device, "dense", [x, w, b], dict(activation="sigmoid"), terms=k)


# pack_weights: dense and pointwise_conv2d with weights packed ahead of the calls. sweep_gemm (17-100
# rows) reads the packed blocks in place of its per-call pack (chunks of <= 128 steps, several groups
# per thread, a partly filled last block, 33.7 MB past the last-level cache with its prefetch; an odd
# number of blocks, whose last is split by row tiles between the threads). panel_gemm reads them too:
# more rows, 101-200 rows that sweep_gemm takes unpacked (169 x 130 x 1000, 200 x 33 x 255), and 17-100
# rows whose last block holds at most one vector of columns (m = 100, 240); such a last block through
# the one-vector tile (m = 40, 144, 176), and the one-vector panel (m <= one vector: 1, 10, 16) reading
# the first vector of each step. stream_gemm (3-16 rows) walks them block by block (one row group
# whole, more in 128-step chunks, past L2 with a prefetch into the next block); the other paths run
# from the PackedWeights' own copy.
def _packed_case(rng, rows, k, m):
    return random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("rows, k, m", [(17, 2048, 1000), (32, 129, 37), (49, 512, 700), (64, 1000, 200), (49, 7, 2500),
                                        (97, 1, 65), (169, 130, 1000), (200, 33, 255), (3, 40, 50), (300, 70, 90),
                                        (40, 4099, 2053), (4, 512, 10), (8, 700, 33), (16, 100, 1), (4, 2100, 300),
                                        (5, 3000, 170), (300, 70, 40), (150, 33, 144), (101, 45, 176), (260, 20, 16),
                                        (17, 64, 160), (64, 70, 100), (20, 300, 100), (33, 64, 240), (24, 784, 10),
                                        (40, 33, 1)])
def test_packed_weights_dense(threads, rows, k, m, isa, rng):
    x, w, b = _packed_case(rng, rows, k, m)
    want = reference.dense(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="silu")
    packed = fastconv.pack_weights(w)
    with num_threads(threads):
        got = fastconv.dense(x, packed, b, activation="silu")
        got_no_bias = fastconv.dense(x, packed, activation="relu")
    assert got.dtype == np.float32 and got.shape == (rows, m)
    _compare.assert_close(got, want, terms=k, what="dense packed")
    want_no_bias = reference.dense(x.astype(np.float64), w.astype(np.float64), activation="relu")
    _compare.assert_close(got_no_bias, want_no_bias, terms=k, what="dense packed, no bias")


@pytest.mark.parametrize("shape, c_out", [((1, 7, 7, 512), 2048), ((2, 5, 5, 64), 100), ((1, 13, 13, 96), 300),
                                          ((1, 30, 30, 16), 24)])
def test_packed_weights_pointwise(shape, c_out, isa, rng):
    x, w, b = random_array(rng, shape), random_array(rng, (shape[3], c_out)), random_array(rng, (c_out,))
    got = fastconv.pointwise_conv2d(x, fastconv.pack_weights(w), b, activation="relu6")
    want = reference.pointwise_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu6")
    assert got.shape == want.shape
    _compare.assert_close(got, want, terms=shape[3], what="pointwise packed")


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2), dict(padding=1), dict(stride=(1, 2), padding="same")])
def test_packed_weights_conv2d_1x1(kwargs, isa, rng):
    """conv2d takes a 1x1 kernel's packed (C_in, C_out) matrix; strided or padded, the direct kernel
    packs its own form from it."""
    x, w, b = random_array(rng, (2, 9, 11, 40)), random_array(rng, (1, 1, 40, 300)), random_array(rng, (300,))
    got = fastconv.conv2d(x, fastconv.pack_weights(w.reshape(40, 300)), b, activation="relu", **kwargs)
    want = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), activation="relu", **kwargs)
    assert got.shape == want.shape
    _compare.assert_close(got, want, terms=40, what=f"conv2d 1x1 packed {kwargs}")


def test_packed_weights_keep_their_own_copy(rng):
    x, w, b = _packed_case(rng, 49, 300, 700)
    packed = fastconv.pack_weights(w)
    want = fastconv.dense(x, w, b)
    w[:] = 0.0  # later changes to the source array do not reach the packed weights
    np.testing.assert_allclose(fastconv.dense(x, packed, b), want, rtol=1e-5, atol=1e-4)


def test_packed_weights_survive_an_isa_switch(rng):
    x, w, b = _packed_case(rng, 49, 300, 700)
    packed = fastconv.pack_weights(w)  # each call packs for the ISA in use, once
    want = reference.dense(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
    for name in fastconv._cpu.supported_isas():
        with isa_choice(name):
            _compare.assert_close(fastconv.dense(x, packed, b), want, terms=300, what=f"dense packed, {name}")
    assert sorted(packed.forms) == sorted(fastconv._cpu.supported_isas())  # one form per ISA, each made once


def test_packed_weights_errors(rng):
    x = random_array(rng, (20, 30))
    packed = fastconv.pack_weights(random_array(rng, (30, 40)))
    with pytest.raises(ValueError, match="dense: w must have shape"):
        fastconv.dense(random_array(rng, (20, 31)), packed)
    with pytest.raises(ValueError, match="pack_weights: w must be 2-D"):
        fastconv.pack_weights(random_array(rng, (30, 40, 2)))
    with pytest.raises(TypeError, match="pack_weights: w must be a real floating-point array"):
        fastconv.pack_weights(np.ones((3, 4), np.int32))
    # The binding checks what it finds: a dict of forms, and the size of the ISA's form.
    p = fastconv._params.dense_problem("dense", x.shape, packed.shape, None, None)
    out = np.empty(p.out_shape, np.float32)
    with pytest.raises(ValueError, match="w_packed: expected"):
        fastconv._cpu.dense(p, x, packed.weights, None, out, {fastconv._cpu.active_isa(): np.zeros(7, np.float32)})
    with pytest.raises(TypeError, match="forms: expected a dict"):
        fastconv._cpu.dense(p, x, packed.weights, None, out, [])
