"""Runs every CUDA kernel version once on small, odd shapes: the workload for compute-sanitizer
(bench/gpu_check.sh runs it under memcheck and racecheck). Each case runs with every kernel
version that applies to it (the `version` argument, cuda/launch.h), not only the one auto picks.

CuPy's memory pool is switched off so that each array is its own cudaMalloc and the sanitizer can
see an access past its end. Every output starts as NaN and is compared with the float64 reference,
so the script also fails, with exit status 1, when a kernel leaves an element unwritten.
"""

from __future__ import annotations

import sys

import cupy as cp
import numpy as np

from fastconv import _gpu, _params
from fastconv import reference as ref
from fastconv._compare import assert_close


def conv(x, w, b, **kw):
    """(problem, float64 reference result) of a relu conv2d."""
    problem = _params.conv2d_problem("conv2d", x.shape, w.shape, b.shape, kw["stride"], kw["padding"],
                                     kw["dilation"], kw["groups"], "relu")
    return problem, ref.conv2d(x, w, b, activation="relu", **kw)


def depthwise(x, w, **kw):
    problem = _params.depthwise_problem("depthwise_conv2d", x.shape, w.shape, None, kw["stride"], kw["padding"],
                                        kw["dilation"], None)
    return problem, ref.depthwise_conv2d(x, w, **kw)


def main() -> int:
    cp.cuda.set_allocator(None)
    rng = np.random.default_rng(0)

    def data(*shape):
        return rng.standard_normal(shape)

    x = data(2, 11, 9, 12)  # C = 12: float4 paths; the odd spatial size leaves partial tiles
    x_odd = data(1, 7, 13, 5)  # C = 5: scalar paths

    cases = []  # (label, kernel, problem, arrays, reference result, terms)
    w = data(3, 3, 6, 70)
    b = data(70)
    cases.append(("implicit GEMM, float4 A", "conv2d", *conv(x, w, b, stride=2, padding=1, dilation=1, groups=2),
                  (x, w, b), 54))
    w = data(2, 3, 5, 7)
    b = data(7)
    cases.append(("implicit GEMM, scalar A", "conv2d", *conv(x_odd, w, b, stride=1, padding="same", dilation=2,
                                                             groups=1), (x_odd, w, b), 30))
    w, b = data(3, 3, 12, 72), data(72)
    cases.append(("implicit GEMM, 128-wide tile", "conv2d", *conv(x, w, b, stride=1, padding="same", dilation=1,
                                                                  groups=1), (x, w, b), 108))
    x3, w, b = data(2, 13, 11, 3), data(7, 7, 3, 16), data(16)
    cases.append(("first-layer direct", "conv2d", *conv(x3, w, b, stride=2, padding=3, dilation=1, groups=1),
                  (x3, w, b), 147))
    w, b = data(3, 3, 12, 70), data(70)
    cases.append(("Winograd F(2x2, 3x3)", "conv2d",
                  _params.conv2d_problem("conv2d", x.shape, w.shape, b.shape, 1, ((1, 0), (2, 1)), 1, 1, "relu",
                                         "winograd"),
                  ref.conv2d(x, w, b, padding=((1, 0), (2, 1)), activation="relu"), (x, w, b), 108))
    w, b = data(5, 5, 12, 37), data(37)
    cases.append(("Winograd F(2x2, 5x5)", "conv2d",
                  _params.conv2d_problem("conv2d", x.shape, w.shape, b.shape, 1, ((2, 1), (0, 3)), 1, 1, "relu",
                                         "winograd"),
                  ref.conv2d(x, w, b, padding=((2, 1), (0, 3)), activation="relu"), (x, w, b), 300))
    for k, stride in ((3, 1), (5, 2)):
        w = data(k, k, 12)
        cases.append((f"depthwise {k}x{k}/{stride}, strip", "conv2d",
                      *depthwise(x, w, stride=stride, padding=k // 2, dilation=1), (x, w.reshape(k, k, 1, 12), None),
                      k * k))
    w = data(3, 3, 12)
    cases.append(("depthwise, float4, dilated", "conv2d", *depthwise(x, w, stride=1, padding="same", dilation=1),
                  (x, w.reshape(3, 3, 1, 12), None), 9))
    w = data(3, 3, 5, 3)
    cases.append(("depthwise, scalar, multiplier 3", "conv2d", *depthwise(x_odd, w, stride=2, padding=1, dilation=1),
                  (x_odd, w.reshape(3, 3, 1, 15), None), 9))
    x_big = data(1, 60, 60, 3)
    w = data(7, 7, 3)
    cases.append(("depthwise, direct (window 55)", "conv2d",
                  *depthwise(x_big, w, stride=3, padding=2, dilation=9), (x_big, w.reshape(7, 7, 1, 3), None), 49))
    w = data(12, 9)
    cases.append(("pointwise GEMM", "conv2d", _params.pointwise_problem("pointwise_conv2d", x.shape, w.shape, None,
                                                                         "silu"),
                  ref.pointwise_conv2d(x, w, activation="silu"), (x, w.reshape(1, 1, 12, 9), None), 12))
    w = data(12, 72)
    cases.append(("pointwise GEMM, 128-wide tile", "conv2d",
                  _params.pointwise_problem("pointwise_conv2d", x.shape, w.shape, None, None),
                  ref.pointwise_conv2d(x, w), (x, w.reshape(1, 1, 12, 72), None), 12))
    xd, w, b = data(3, 13), data(13, 67), data(67)
    cases.append(("dense GEMM", "dense", _params.dense_problem("dense", xd.shape, w.shape, b.shape, "tanh"),
                  ref.dense(xd, w, b, activation="tanh"), (xd, w, b), 13))
    for xp in (x_odd, x):  # C = 5: scalar kernel; C = 12: float4 kernel too
        for kind, ceil_mode, count_include_pad in (("max", True, False), ("avg", True, True), ("avg", False, False)):
            op = f"{kind}_pool2d"
            problem = _params.pool2d_problem(op, xp.shape, 3, 2, 1, ceil_mode, count_include_pad)
            want = (ref.max_pool2d(xp, 3, 2, 1, ceil_mode) if kind == "max"
                    else ref.avg_pool2d(xp, 3, 2, 1, count_include_pad, ceil_mode))
            cases.append((f"{op} C={xp.shape[3]}, ceil_mode={ceil_mode}", op, problem, want, (xp,), 9))
    for op in ("global_avg_pool2d", "global_max_pool2d"):
        xg = data(2, 5, 7, 37)
        cases.append((op, op, _params.global_pool_problem(op, xg.shape), getattr(ref, op)(xg), (xg,), 35))

    failures = 0
    for label, kernel, problem, want, arrays, terms in cases:
        gpu_arrays = [None if a is None else cp.asarray(a, dtype=cp.float32) for a in arrays]
        for version in (0, 1, 2, 3, 4) if kernel in _gpu.VERSIONED_KERNELS else (0,):
            out = cp.full(problem.out_shape, np.nan, dtype=cp.float32)
            try:
                _gpu.run(kernel, problem, *gpu_arrays, out=out, version=version)
            except ValueError:
                continue  # this version does not apply to the case
            try:
                assert_close(cp.asnumpy(out), want, terms=terms, what=f"{label}, v{version}")
                print(f"ok    {label}, v{version}")
            except AssertionError as exc:
                failures += 1
                print(f"FAIL  {exc}")

    module = _gpu.cuda_module()
    stream = cp.cuda.get_current_stream().ptr
    print(f"ok    copy bandwidth {module.measure_copy_bandwidth(1 << 20, stream):.1f} GB/s (1 MiB, instrumented)")
    print(f"ok    FMA peak {module.measure_fma_peak(stream):.1f} GFLOP/s (instrumented)")
    cp.cuda.Device().synchronize()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
