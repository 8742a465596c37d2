"""The tolerance rule every kernel test uses (fastconv._compare)."""

import numpy as np
import pytest

from fastconv._compare import assert_close, max_relative_error, tolerance


def test_rounding_passes_and_a_wrong_element_fails(rng):
    want = rng.standard_normal((3, 5, 7))
    got = want.astype(np.float32)
    assert_close(got, want, terms=9)
    got[1, 2, 3] += 1e-3
    with pytest.raises(AssertionError, match=r"at \(1, 2, 3\)"):
        assert_close(got, want, terms=9)


def test_expected_nan_keeps_the_scale_of_the_finite_values(rng):
    want = rng.standard_normal((4, 6))
    want[0, 0] = np.nan
    got = want.astype(np.float32)
    assert max_relative_error(got, want)[0] < tolerance(1)
    assert_close(got, want)
    got[2, 3] *= 1.01  # still judged against the finite values' size, not voided by the NaN
    with pytest.raises(AssertionError, match=r"at \(2, 3\)"):
        assert_close(got, want)


@pytest.mark.parametrize("position", [(0, 0), (3, 5)])
def test_nan_must_appear_exactly_where_expected(rng, position):
    want = rng.standard_normal((4, 6))
    want[position] = np.nan
    got = np.where(np.isnan(want), 0.0, want)  # NaN lost
    with pytest.raises(AssertionError):
        assert_close(got, want)
    got = want.copy()
    got[1, 1] = np.nan  # NaN invented
    with pytest.raises(AssertionError):
        assert_close(got, want)


def test_all_nan_reference():
    want = np.full((2, 2), np.nan)
    assert_close(want.copy(), want)
    with pytest.raises(AssertionError):
        assert_close(np.zeros((2, 2)), want)


def test_scale_of_the_sums_before_a_squeezing_activation():
    """A single tanh output near 0 carries the rounding of its sum (here ~20 in size): judged
    against its own size it fails, against the sum's scale it passes; a scale below the output's
    own RMS changes nothing."""
    sums = np.array([0.0119, 25.0, -18.0])
    want = np.tanh(sums)
    got = np.tanh(sums + np.array([2e-5, 0.0, 0.0]))  # float32-sized rounding of the first sum
    with pytest.raises(AssertionError):
        assert_close(got[:1], want[:1], terms=414)
    assert_close(got[:1], want[:1], terms=414, scale=float(np.sqrt(np.mean(sums**2))))
    assert max_relative_error(got, want, scale=1e-3)[0] == max_relative_error(got, want)[0]
