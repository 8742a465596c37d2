"""Winograd's stages on the GPU, kernel by kernel: where a 3x3 / 5x5 layer's time goes.

Two modes, for a run under Nsight Compute (the profiler only records between the start and stop
calls, so the warm-up calls and CuPy's own kernels stay out):

    ncu --csv --metrics gpu__time_duration.sum --profile-from-start off --cache-control none \\
        --clock-control none python bench/gpu_stages.py > stages.csv
    python bench/gpu_stages.py --table stages.csv

The first runs each stride-1 3x3 / 5x5 convolution of a suite (default `gpu`) once through
`algorithm="winograd"`, after two warm-up calls, inside the profiled range. The second groups the
recorded kernels by layer (each layer's stages start with its weight transform) and prints each
kernel's duration and the layer's sum. Caches and clocks are left as they are: the stages see the
L2 state a real call sees, and the card keeps the settings it has.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys


def winograd_cases(suite: str):
    from fastconv.bench import suites

    _, cases = suites.load_suite(suite)
    for case in cases:
        problem = case.problem()
        if case.op == "conv2d" and problem.winograd_eligible and (problem.stride_h, problem.stride_w) == (1, 1):
            yield case, dataclasses.replace(problem, algorithm="winograd")


def profile(suite: str) -> None:
    import cupy as cp
    from cupy.cuda import profiler

    from gpu_versions import device_arrays  # bench/ is this script's directory
    from fastconv import _gpu

    calls = []
    for case, problem in winograd_cases(suite):
        arrays = device_arrays(case, problem, case.inputs(seed=0))
        for _ in range(2):
            _gpu.run("conv2d", problem, *arrays)
        calls.append((case.name, problem, arrays))
    cp.cuda.Device().synchronize()
    profiler.start()
    for _, problem, arrays in calls:
        _gpu.run("conv2d", problem, *arrays)
        cp.cuda.Device().synchronize()
    profiler.stop()
    print("layers: " + ",".join(name for name, _, _ in calls), file=sys.stderr)


def table(path: str, suite: str) -> int:
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if len(r) > 10]
    header = next((r for r in rows if r and r[0] == "ID"), None)
    if header is None:
        print(f"no kernel records in {path}")
        return 1
    name_col, value_col, unit_col = (header.index(k) for k in ("Kernel Name", "Metric Value", "Metric Unit"))
    scale = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}
    layers: list[list[tuple[str, float]]] = []
    for r in rows:
        if not r[0].isdigit():
            continue
        name = r[name_col].replace("(anonymous namespace)", "").split("(")[0].split("::")[-1].replace("void ", "")
        if r[unit_col] not in scale:
            raise ValueError(f"{path}: kernel time in unknown unit {r[unit_col]!r}")
        us = float(r[value_col].replace(",", "")) * scale[r[unit_col]]
        if name.startswith("winograd_weight_kernel") or not layers:
            layers.append([])
        layers[-1].append((name.replace("winograd_", "").replace("_kernel", ""), us))
    names = [case.name for case, _ in winograd_cases(suite)]
    if len(names) != len(layers):
        names = [f"layer {i}" for i in range(len(layers))]
    for name, stages in zip(names, layers):
        total = sum(us for _, us in stages)
        print(f"{name:<22} {total:8.1f} us: " + ", ".join(f"{k} {us:.1f}" for k, us in stages))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="gpu")
    parser.add_argument("--table", metavar="CSV", help="print the stages recorded in this ncu CSV")
    args = parser.parse_args(argv)
    if args.table:
        return table(args.table, args.suite)
    profile(args.suite)
    return 0


if __name__ == "__main__":
    sys.exit(main())
