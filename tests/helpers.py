"""Run a public op on a device and compare it with fastconv.reference in float64."""

import numpy as np

import fastconv
from fastconv import _compare, reference


def random_array(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def check_against_reference(device, op_name, arrays, kwargs=None, terms=1):
    """arrays: the op's leading array arguments (float32 NumPy, None allowed). Returns the result."""
    kwargs = kwargs or {}
    got = getattr(fastconv, op_name)(*[device.put(a) for a in arrays], **kwargs)
    assert got.dtype == np.float32
    got = device.get(got)
    want = getattr(reference, op_name)(*[None if a is None else a.astype(np.float64) for a in arrays], **kwargs)
    _compare.assert_close(got, want, terms=terms, what=f"{op_name}{kwargs}")
    return got
