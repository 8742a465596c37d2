"""CPU outputs of 1 MiB or more reuse the memory of earlier outputs nobody holds any more
(_backend._LargeOutputs): never one that a live array or view still uses, and always correct."""

import threading

import numpy as np

import fastconv
from fastconv import _backend, reference

from helpers import random_array

# 1 x 512 x 520 x 4 -> 32 channels: a 34 MB output.
X_SHAPE, C_OUT = (1, 512, 520, 4), 32


def _arrays(rng):
    return random_array(rng, X_SHAPE), random_array(rng, (1, 1, X_SHAPE[3], C_OUT))


def _want(x, w):
    return reference.conv2d(x.astype(np.float64), w.astype(np.float64))


def test_a_dropped_output_is_reused_and_a_held_one_is_not(rng):
    x, w = _arrays(rng)
    first = fastconv.conv2d(x, w)
    assert first.nbytes >= _backend._LargeOutputs.MIN_BYTES
    assert first.ctypes.data % _backend._LargeOutputs.ALIGN == 0
    kept = first.copy()
    second = fastconv.conv2d(x * 2, w)  # first is held: new memory
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    address = first.ctypes.data
    del first
    third = fastconv.conv2d(x * 3, w)
    assert third.ctypes.data == address  # first's block, free again
    np.testing.assert_allclose(third, 3 * _want(x, w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, 2 * _want(x, w), rtol=1e-4, atol=1e-4)


def test_a_view_keeps_its_block(rng):
    x, w = _arrays(rng)
    y = fastconv.conv2d(x, w)
    row = y[0, 100]
    kept = row.copy()
    del y
    for scale in range(2, _backend._LargeOutputs.MAX_BLOCKS + 3):  # more calls than the pool keeps blocks
        fastconv.conv2d(x * scale, w)
    np.testing.assert_array_equal(row, kept)


def test_threads_take_distinct_blocks(rng):
    x, w = _arrays(rng)
    results = [None] * 4

    def work(i):
        results[i] = fastconv.conv2d(x * (i + 1), w)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    want = _want(x, w)
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, (i + 1) * want, rtol=1e-4, atol=1e-4)
    for i in range(4):
        for j in range(i):
            assert not np.shares_memory(results[i], results[j])


def test_small_outputs_are_plain_arrays(rng):
    x, w = random_array(rng, (1, 8, 8, 3)), random_array(rng, (3, 3, 3, 4))
    y = fastconv.conv2d(x, w)
    assert y.flags.owndata and y.flags.c_contiguous


def test_the_pool_keeps_at_most_its_bytes():
    pool = _backend._LargeOutputs()
    pool.MAX_POOL_BYTES = 5 << 20
    held = [pool.empty((1 << 19,)) for _ in range(6)]  # 2 MiB each, all held
    assert sum(block.nbytes for block, _ in pool._blocks) <= pool.MAX_POOL_BYTES
    for i, a in enumerate(held):
        a[:] = i
    for i, a in enumerate(held):
        assert (a == i).all()  # six distinct blocks, whatever the pool forgot


def test_large_concat_and_add_outputs_come_from_the_pool(rng):
    xs = [random_array(rng, (1, 64, 64, c)) for c in (40, 33)]  # 1.2 MB out
    got = fastconv.concat(xs)
    assert got.nbytes >= _backend._LargeOutputs.MIN_BYTES and got.ctypes.data % _backend._LargeOutputs.ALIGN == 0
    np.testing.assert_array_equal(got, np.concatenate(xs, axis=-1))
    summed = fastconv.add(got, got)
    assert summed.ctypes.data % _backend._LargeOutputs.ALIGN == 0 and not np.shares_memory(summed, got)
    np.testing.assert_array_equal(summed, got + got)
