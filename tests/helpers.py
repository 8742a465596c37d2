"""Run a public op on a device and compare it with fastconv.reference in float64."""

import contextlib

import numpy as np

import fastconv
from fastconv import _compare, reference


def _gpu_skip_reason():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as exc:  # ImportError, or CUDA driver errors without a GPU
        return f"CuPy with a CUDA device is not available ({type(exc).__name__})"
    try:
        from fastconv import _gpu

        _gpu.cuda_module()
    except Exception as exc:
        return f"fastconv CUDA module unavailable: {exc}"
    return None


# Why GPU tests cannot run here, or None when they can.
GPU_SKIP_REASON = _gpu_skip_reason()


def random_array(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# Ops whose third argument is a bias added to sums of products.
_BIASED_OPS = ("conv2d", "depthwise_conv2d", "pointwise_conv2d", "dense")


def sums_scale(reference_op, args, kwargs) -> float:
    """The scale `_compare` judges a result at (0: the output's own RMS), from the sums the rounding
    happens in. With an activation, the RMS of the sums it acts on (reference_op without it): one
    that squeezes (sigmoid, tanh) or clips them (relu) shrinks the output's RMS below their
    rounding. With a bias, the products' sums and the bias count apart (the root of their mean
    squares): a bias that cancels the products leaves outputs far below the rounding of either (one
    product plus a bias per output left a single SiLU output near 5e-5, 8e-9 off)."""
    biased = reference_op.__name__ in _BIASED_OPS and len(args) > 2 and args[2] is not None
    if kwargs.get("activation") is None and not biased:
        return 0.0
    if reference_op.__name__ == "batch_norm":  # x s - mean s + beta, s = gamma / sqrt(var + eps): each term apart
        x, mean, var, gamma, beta = (list(args) + [None, None])[:5]
        s = (1.0 if gamma is None else gamma) / np.sqrt(var + kwargs.get("eps", 1e-5))
        terms = [x * s, np.broadcast_to(mean * s, x.shape)] + ([] if beta is None else [np.broadcast_to(beta, x.shape)])
        return float(np.sqrt(sum(np.mean(t**2) for t in terms))) if x.size else 0.0
    plain = dict(kwargs, activation=None)
    if not biased:
        sums = reference_op(*args, **plain)
        return float(np.sqrt(np.mean(sums**2))) if sums.size else 0.0
    products = reference_op(args[0], args[1], None, *args[3:], **plain)
    if products.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(products**2) + np.mean(args[2] ** 2)))


def check_against_reference(device, op_name, arrays, kwargs=None, terms=1, algorithm=None):
    """arrays: the op's leading array arguments (float32 NumPy, None allowed). algorithm: conv2d's,
    for fastconv only (the reference has one). Returns the result."""
    kwargs = kwargs or {}
    options = {} if algorithm is None else dict(algorithm=algorithm)
    got = getattr(fastconv, op_name)(*[device.put(a) for a in arrays], **kwargs, **options)
    assert got.dtype == np.float32
    got = device.get(got)
    ref_arrays = [None if a is None else a.astype(np.float64) for a in arrays]
    want = getattr(reference, op_name)(*ref_arrays, **kwargs)
    scale = sums_scale(getattr(reference, op_name), ref_arrays, kwargs)
    _compare.assert_close(got, want, terms=terms, what=f"{op_name}{kwargs}", scale=scale)
    return got


@contextlib.contextmanager
def num_threads(n):
    """Run the block with the CPU kernels on n threads, restoring the previous count after."""
    previous = fastconv.get_num_threads()
    fastconv.set_num_threads(n)
    try:
        yield
    finally:
        fastconv.set_num_threads(previous)



# The instruction-set choices a test can run under: each ISA forced alone, and "auto" where it differs
# from all of them (AVX-512 with AVX2 serving few channels, dispatch.cpp's channel_table).
ISA_CHOICES = fastconv._cpu.supported_isas() + (["auto"] if fastconv._cpu.narrow_isa() else [])


@contextlib.contextmanager
def isa_choice(name):
    """Run the block under one ISA choice, restoring the previous one (forced or auto) after."""
    previous = "auto" if fastconv._cpu.narrow_isa() else fastconv._cpu.active_isa()
    fastconv._cpu.set_isa(name)
    try:
        yield
    finally:
        fastconv._cpu.set_isa(previous)


def full_width_units() -> bool:
    """Whether dispatch.cpp treats this CPU as having full-width 512-bit units: AVX-512 beside AVX2,
    at more than 1.5x AVX2's measured FMA rate (kFullWidthRatio); 0 when no narrower ISA is beside."""
    return fastconv._cpu.narrow_fma_ratio() > 1.5
