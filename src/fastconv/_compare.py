"""The one tolerance rule for comparing a float32 kernel with the float64 reference.

A result passes when every element satisfies |got - want| <= atol + rtol * |want|, with
rtol = 1e-5 * sqrt(terms) + 1e-5 for a sum of `terms` float32 products (the expected growth of
rounding error) and atol scaled by the reference's RMS value so that results near zero, where
cancellation leaves only rounding noise, are judged against the size of the whole output.
Where an activation squeezes or clips the sums (sigmoid, tanh, relu) the caller may give the scale
of the sums before it (`scale`): the rounding is that of the sums, and a small output, a single
element near 0, say, would otherwise be judged against its own size.
Used by the tests and by models' self-checks.
"""

from __future__ import annotations

import math

import numpy as np


def tolerance(terms: int = 1) -> float:
    return 1e-5 * math.sqrt(max(terms, 1)) + 1e-5


def max_relative_error(got, want, scale: float = 0.0) -> tuple[float, tuple]:
    """Worst |got - want| relative to (|want| + the larger of `scale` and the RMS of want's finite
    values), and where it occurs."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    finite = want[np.isfinite(want)]  # NaN / Inf expected in the result must not void the scale
    scale = max(scale, float(np.sqrt(np.mean(finite**2))) if finite.size else 0.0)
    err = np.abs(got - want) / (np.abs(want) + scale + 1e-30)
    # NaN in one and not the other is an infinite error; NaN in both matches.
    both_nan = np.isnan(got) & np.isnan(want)
    same_inf = np.isinf(want) & (got == want)
    err = np.where(both_nan | same_inf, 0.0, np.where(np.isnan(err), np.inf, err))
    if err.size == 0:
        return 0.0, ()
    where = np.unravel_index(int(np.argmax(err)), err.shape)
    return float(err[where]), tuple(int(i) for i in where)


def assert_close(got, want, terms: int = 1, what: str = "result", scale: float = 0.0) -> None:
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what}: shape {got.shape} != reference {want.shape}")
    err, where = max_relative_error(got, want, scale)
    tol = tolerance(terms)
    if not err <= tol:
        raise AssertionError(
            f"{what}: relative error {err:.3g} > {tol:.3g} at {where}: got {got[where]!r}, reference {want[where]!r}"
        )
