"""Every CUDA kernel version side by side on the GPU suite: checked, then timed, in one process.

For each case of a suite (default: the built-in `gpu` suite) and each kernel version that applies
to it (the `version` argument of fastconv._cuda, see cuda/launch.h; "w2" / "w4": Winograd with 2x2 /
4x4 output tiles for 3x3 / 5x5 stride-1 convolutions, "wf": 4x4 tiles fused, 5x5 only), the output is poisoned with
NaN, computed, and its first image compared with the float64 reference; then the version is timed
with CUDA events over rotating input copies (more bytes than the L2 holds, so DRAM is timed, not
the cache). Prints a table (median microseconds, TFLOP/s, GB/s of the minimal traffic, and the
fraction of the card's FP32 peak and copy bandwidth as measured by `fastconv bench`) and writes
every figure as JSON. Last, the host cost of one call on a tiny problem (the kernel takes a few
microseconds, so the host is the bottleneck): the public op, the bare `_gpu.run`, its module call
and output allocation alone, and PyTorch's F.conv2d when PyTorch is installed.

    python bench/gpu_versions.py [--suite gpu] [--ops depthwise,pooling] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys

import cupy as cp
import numpy as np

import fastconv
import fastconv._params
from fastconv import _gpu
from fastconv import reference as ref
from fastconv._compare import assert_close, max_relative_error
from fastconv.bench import ceilings, suites
from fastconv.bench.peers import call_op

VERSIONS_OF_KERNEL = {"conv2d": (1, 2, 3, 4), "dense": (1, 2, 4), "max_pool2d": (1, 2, 3, 4), "avg_pool2d": (1, 2, 3, 4)}
KERNEL_OF_OP = {"conv2d": "conv2d", "depthwise_conv2d": "conv2d", "pointwise_conv2d": "conv2d", "dense": "dense",
                "max_pool2d": "max_pool2d", "avg_pool2d": "avg_pool2d", "global_avg_pool2d": "global_avg_pool2d"}


def device_arrays(case, problem, arrays):
    """The kernel's positional arrays on the GPU, weights reshaped as the public op does."""
    x = cp.asarray(arrays["x"])
    if case.op not in suites.CONV_OPS:
        return (x,)
    w = cp.asarray(arrays["w"])
    if case.op in ("depthwise_conv2d", "pointwise_conv2d"):
        w = w.reshape(problem.weight_shape)
    b = None if arrays.get("b") is None else cp.asarray(arrays["b"])
    return (x, w, b)


def reference_head(case, arrays):
    """The float64 reference of the first image (rows 0..3 for dense), and that count."""
    head = 4 if case.op == "dense" else 1
    sliced = {k: None if a is None else a.astype(np.float64) for k, a in arrays.items()}
    sliced["x"] = sliced["x"][:head]
    return np.asarray(call_op(ref, case, sliced)), head


def check(problem, kernel, version, gpu_arrays, want, head, terms) -> float:
    """Max relative error of the first `head` images of the output against `want`."""
    out = cp.full(problem.out_shape, np.nan, dtype=cp.float32)
    _gpu.run(kernel, problem, *gpu_arrays, out=out, version=version)
    got = cp.asnumpy(out[:head])
    assert_close(got, want, terms=terms)
    return float(max_relative_error(got, want)[0])


def time_version(problem, kernel, version, copies, samples=15) -> float:
    """Median seconds per call: CUDA events around batches of calls that last >= ~1 ms."""
    calls = [lambda a=a: _gpu.run(kernel, problem, *a, version=version) for a in copies]
    for call in calls[:3]:
        call()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    batch, times, i = 1, [], 0
    while len(times) < samples:
        start.record()
        for _ in range(batch):
            calls[i % len(calls)]()
            i += 1
        stop.record()
        stop.synchronize()
        t = cp.cuda.get_elapsed_time(start, stop) / 1e3
        if t < 1e-3 and batch < 1024:
            batch *= 2  # too short to time well: discard and grow
            continue
        times.append(t / batch)
    return statistics.median(times)


def host_overhead(calls=3000) -> dict:
    """Microseconds of host time per call of a depthwise 3x3 on (1, 8, 8, 32), queued back to back."""
    import time

    rng = np.random.default_rng(0)
    x = cp.asarray(rng.standard_normal((1, 8, 8, 32), dtype=np.float32))
    w = cp.asarray(rng.standard_normal((3, 3, 32), dtype=np.float32))
    problem = fastconv._params.depthwise_problem("depthwise_conv2d", x.shape, w.shape, None, 1, 1, 1, "relu")
    w4 = w.reshape(problem.weight_shape)
    # The parts of one call, to see where the host time goes: the public op, the checks and the
    # output allocation around the module call (_gpu.run), the module call alone (argument
    # conversion, problem fields, set-device and the launch), and CuPy's allocation alone.
    module, y = _gpu.cuda_module(), cp.empty(problem.out_shape, dtype=cp.float32)
    stream, device = cp.cuda.get_current_stream().ptr, x.data.device_id
    candidates = {
        "fastconv.depthwise_conv2d": lambda: fastconv.depthwise_conv2d(x, w, padding=1, activation="relu"),
        "_gpu.run": lambda: _gpu.run("conv2d", problem, x, w4, None),
        "_cuda.conv2d": lambda: module.conv2d(problem, x.data.ptr, w4.data.ptr, 0, y.data.ptr, stream, device),
        "cupy.empty": lambda: cp.empty(problem.out_shape, dtype=cp.float32),
    }
    try:
        import torch
        import torch.nn.functional as F

        xt = torch.randn(1, 32, 8, 8, device="cuda").to(memory_format=torch.channels_last)
        wt = torch.randn(32, 1, 3, 3, device="cuda")
        candidates["torch F.conv2d + relu"] = lambda: F.relu(F.conv2d(xt, wt, padding=1, groups=32))
    except Exception:  # no PyTorch, or no CUDA build of it
        pass
    result = {}
    for name, call in candidates.items():
        for _ in range(100):
            call()
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        result[name] = (time.perf_counter() - start) / calls * 1e6
        cp.cuda.Device().synchronize()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="gpu")
    parser.add_argument("--ops", help="comma-separated ops, families or case names")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)

    _, cases = suites.load_suite(args.suite)
    cases = suites.select_ops(cases, args.ops.split(",") if args.ops else None)
    ceiling = ceilings.gpu_ceilings()
    peak, bandwidth = ceiling["fma_gflops"] * 1e9, ceiling["copy_gbs"] * 1e9
    l2 = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["l2CacheSize"]
    rows, failed = [], False
    for case in cases:
        problem, kernel = case.problem(), KERNEL_OF_OP[case.op]
        arrays = case.inputs(seed=0)
        flops, nbytes = suites.cost(case)
        n_copies = int(min(16, max(1, -(-2 * l2 // int(nbytes)))))
        copies = [device_arrays(case, problem, arrays) for _ in range(n_copies)]
        want, head = reference_head(case, arrays)  # once per case: the float64 sum is slow
        versions = VERSIONS_OF_KERNEL.get(kernel, (0,))
        variants = [(v, v, problem) for v in versions]  # (label, kernel version, problem)
        # The GPU's Winograd kernels: stride 1 only (strided filters eligible on the CPU run direct here);
        # their versions pick the output tile.
        if case.op == "conv2d" and problem.winograd_eligible and (problem.stride_h, problem.stride_w) == (1, 1):
            winograd = dataclasses.replace(problem, algorithm="winograd")
            variants += [("w2", 1, winograd), ("w4", 2, winograd)]
            if problem.kh == 5:
                variants.append(("wf", 3, winograd))
        for label, version, variant in variants:
            row = {"case": case.name, "shape": case.describe(), "version": label}
            try:
                row["max_rel_error"] = check(variant, kernel, version, copies[0], want, head, case.terms())
            except ValueError as exc:  # this version does not apply to the case
                row["status"] = f"n/a: {exc}"
                rows.append(row)
                continue
            except AssertionError as exc:
                row["status"], failed = f"WRONG: {str(exc).splitlines()[0]}", True
                rows.append(row)
                continue
            seconds = time_version(variant, kernel, version, copies)
            row.update(status="ok", median_us=seconds * 1e6, tflops=flops / seconds / 1e12, gbs=nbytes / seconds / 1e9,
                       peak_fraction=flops / seconds / peak, bandwidth_fraction=nbytes / seconds / bandwidth)
            rows.append(row)
        del copies
        cp.get_default_memory_pool().free_all_blocks()

    print(f"{ceiling['fingerprint']['gpu']}: FP32 peak {ceiling['fma_gflops'] / 1e3:.1f} TFLOP/s, "
          f"copy {ceiling['copy_gbs']:.0f} GB/s (fastconv {fastconv.__version__})")
    print(f"{'case':<22} {'v':>2} {'us':>9} {'TFLOP/s':>8} {'GB/s':>7} {'%peak':>6} {'%bw':>5}  status")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['case']:<22} {r['version']:>2} {'':>9} {'':>8} {'':>7} {'':>6} {'':>5}  {r['status'][:70]}")
            continue
        print(f"{r['case']:<22} {r['version']:>2} {r['median_us']:>9.1f} {r['tflops']:>8.2f} {r['gbs']:>7.0f} "
              f"{100 * r['peak_fraction']:>5.0f}% {100 * r['bandwidth_fraction']:>4.0f}%  ok")
    overhead = host_overhead()
    print("host time per call, depthwise 3x3 on 1x8x8x32: " + ", ".join(f"{k} {v:.1f} us" for k, v in overhead.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ceilings": ceiling, "rows": rows, "host_overhead_us": overhead}, f, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
