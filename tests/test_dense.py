"""dense against the NumPy reference."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv

from helpers import check_against_reference, random_array


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


@pytest.mark.parametrize("rows, k, m", [(1, 3, 1), (5, 64, 16), (7, 1, 33), (13, 20, 47), (25, 300, 130), (6, 2000, 8)])
def test_dense_tile_edges(rows, k, m, device, isa, rng):
    """Rows not a multiple of the 6/8-row tile, columns past the 8/16/32-column blocks, tiny k."""
    x, w, b = random_array(rng, (rows, k)), random_array(rng, (k, m)), random_array(rng, (m,))
    check_against_reference(device, "dense", [x, w, b], dict(activation="relu"), terms=k)


def test_relu_keeps_nan_in_full_tiles(isa):
    x = np.ones((12, 4), np.float32)
    x[3, 1] = np.nan
    got = fastconv.dense(x, np.ones((4, 32), np.float32), activation="relu")
    assert np.isnan(got[3]).all() and np.isfinite(np.delete(got, 3, axis=0)).all()
