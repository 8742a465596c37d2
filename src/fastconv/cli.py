"""The `fastconv` command line: `fastconv info`, `fastconv bench`, `fastconv demo edges [IMAGE]`
(and `python -m fastconv ...`)."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def info() -> dict:
    """What this installation is: version, build, CPU instruction set in use, threads, CUDA module."""
    import numpy as np

    import fastconv
    from fastconv import _cpu

    facts = {
        "fastconv": fastconv.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "compiler": _cpu.compiler,
        "openmp": _cpu.openmp,
        "cpu_isa": _cpu.active_isa() + (f" ({_cpu.narrow_isa()} for few channels; {_cpu.active_isa()} FMA rate "
                                         f"{_cpu.narrow_fma_ratio():.1f}x {_cpu.narrow_isa()}'s)" if _cpu.narrow_isa() else ""),
        "cpu_isas_supported": ", ".join(_cpu.supported_isas()),
        "FASTCONV_ISA": os.environ.get("FASTCONV_ISA", "(unset)"),
        "threads": fastconv.get_num_threads(),
        "cores": os.cpu_count(),
        "caches_planned": "L1d {} KiB, L2 {} KiB, last level {} MiB".format(
            *(size >> shift for size, shift in zip(_cpu.planned_cache_bytes(), (10, 10, 20)))),
    }
    facts.update(_cuda_facts())
    return facts


def _cuda_facts() -> dict:
    try:
        from fastconv import _gpu
    except ImportError:
        return {"cuda": "not built (no CUDA compiler at build time)"}
    return _gpu.describe()


def _print_info(args) -> int:
    for key, value in info().items():
        print(f"{key:>20}: {value}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description="Fast NHWC convolution kernels for CPU and GPU.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("info", help="version, build flags, CPU ISA in use, threads, CUDA module").set_defaults(
        handler=_print_info
    )
    from . import bench, demo

    bench.add_parser(commands)  # `fastconv bench`
    demo.add_parser(commands)  # `fastconv demo edges [IMAGE]`
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
