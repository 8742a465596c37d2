"""Shared fixtures: the device each op test runs on, and the CPU instruction set in use.

`device` runs every op test on the CPU and, when CuPy and a CUDA device are present together with
the compiled CUDA module, again on the GPU (skipped with the reason otherwise). `isa` runs a test
under each instruction set this CPU supports (AVX-512, AVX2, portable), each forced alone, and under
"auto" where that mixes them (AVX-512 with AVX2 for few channels).
"""

import os

# The kernels' size rules (depthwise staging and streaming) plan for the last-level cache; the
# tests' large cases are sized for 32 MiB, so they reach the same paths on any machine.
os.environ.setdefault("FASTCONV_CACHE_BYTES", str(32 << 20))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fastconv import _cpu  # noqa: E402
from helpers import GPU_SKIP_REASON as _GPU_SKIP
from helpers import ISA_CHOICES
from helpers import isa_choice


class Device:
    """Moves test data to a device and back."""

    def __init__(self, name):
        self.name = name

    def put(self, a):
        if a is None or self.name == "cpu":
            return a
        import cupy

        return cupy.asarray(a)

    def get(self, a):
        if self.name == "cpu":
            return a
        import cupy

        assert isinstance(a, cupy.ndarray), f"expected a CuPy result, got {type(a).__name__}"
        return cupy.asnumpy(a)

    def __repr__(self):
        return self.name


@pytest.fixture(
    params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(_GPU_SKIP is not None, reason=str(_GPU_SKIP)))]
)
def device(request):
    return Device(request.param)


@pytest.fixture(params=ISA_CHOICES)
def isa(request):
    with isa_choice(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    # A fresh seed per test run, printed on failure through the test id's node.
    seed = np.random.SeedSequence().entropy % (2**32)
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)
