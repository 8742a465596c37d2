"""`fastconv bench`: kernel microbenchmarks against peers and against the machine's own ceilings.

    fastconv bench --quick                      # under a minute on 2 cores
    fastconv bench --suite full --json out.json --plot roofline.png
    fastconv bench --models                     # ResNet-50, MobileNet v2, EfficientNet-B0 vs PyTorch

For every case of a suite: FLOPs and the fewest bytes it must move (suites.cost), the roofline
floor time from the measured ceilings (ceilings.py), our median time, GFLOP/s, GB/s, % of the
roofline, and peer / ours ratios for every installed peer (peers.py), each library in its own
worker process (worker.py) taking turns with the others (runner.py). report.py prints and saves.

`--models`: end-to-end batch-1 and batch-8 inference of whole fastconv.models networks (batch norm
folded, weights prepared once) against PyTorch running the same graph with the same weights
(peers.torch_forward), each checked before it is timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time

DEFAULT_MIN_TIME = {"tiny": 0.02, "quick": 0.12, "full": 0.3, "gpu": 0.1}
MODELS_MIN_TIME = 2.0  # seconds per model at batch 1 (larger batches: divided by the batch, >= 1 call a round)
MODEL_PEERS = ("torch_nhwc",)


def add_parser(commands) -> argparse.ArgumentParser:
    """Register the `bench` subcommand on the CLI's subparsers."""
    p = commands.add_parser(
        "bench",
        help="kernel microbenchmarks vs peers (NumPy, PyTorch, onnxruntime, cuDNN) and the machine's roofline",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("--device", choices=("cpu", "gpu", "all"), default="all",
                   help="where to run (all: the CPU, and the GPU when there is one)")
    p.add_argument("--suite", help="quick, full, tiny, gpu (batch-32 layers sized for a large GPU), probe (27 layers "
                                   "outside the full suite), probe2 (55 more, from other networks), probe3 (14 from post-2020 networks: "
                                   "patch embeddings, ConvNeXt), probe4 (33 more: dilated, ShuffleNet, DenseNet), "
                                   "or a suite "
                                   "JSON file (default: gpu with --device gpu, else quick)")
    p.add_argument("--quick", action="store_const", const="quick", dest="suite", help="= --suite quick")
    p.add_argument("--ops", help="comma-separated ops, families or case names to keep (e.g. depthwise,dense)")
    p.add_argument("--peers", help="comma-separated peers (default: all; 'none' for fastconv alone). CPU: numpy, "
                                   "numpy_ref (float64 oracle, slow), torch_nchw, torch_nhwc, ort_nchw; GPU: cudnn, "
                                   "cupy; or module:Adapter")
    p.add_argument("--threads", type=int, help="threads for fastconv and every CPU peer (default: fastconv's)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the suite N times in alternating order, keep each cell's best median")
    p.add_argument("--min-time", type=float,
                   help="seconds measured per case and library, after warm-up (default: by suite)")
    p.add_argument("--seed", type=int, default=0, help="input seed (the same data for every library)")
    p.add_argument("--json", metavar="PATH", help="write every figure and the machine description as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a roofline PNG (needs matplotlib: fastconv[plot])")
    p.add_argument("--remeasure", action="store_true", help="measure the machine's ceilings again (else cached)")
    p.add_argument("--models", action="store_true",
                   help="end-to-end batch-1 and batch-8 latency of ResNet-50, MobileNet v2 and EfficientNet-B0 "
                        "vs PyTorch (CPU, channels_last, the same weights and threads) instead of the kernel suite")
    p.add_argument("--model-list", help=argparse.SUPPRESS)  # NAME[@RESOLUTION],... for --models (tests, experiments)
    p.add_argument("--no-progress", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(handler=main)
    return p


def _apply_run_options(args, default_min_time: float) -> None:
    """--threads, --repeat and --min-time, shared by the kernel suites and --models."""
    import fastconv

    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("fastconv bench: --threads must be >= 1")
        fastconv.set_num_threads(args.threads)
    args.threads = fastconv.get_num_threads()
    if args.repeat < 1:
        raise SystemExit("fastconv bench: --repeat must be >= 1")
    if args.min_time is None:
        args.min_time = default_min_time


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def machine() -> dict:
    import numpy as np

    import fastconv
    from fastconv import _cpu

    from .ceilings import cpu_model

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "isa": _cpu.active_isa(),
        "isas_supported": _cpu.supported_isas(),
        "compiler": _cpu.compiler,
        "platform": platform.platform(),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "fastconv": fastconv.__version__,
    }


def _devices(requested: str, notes: list[str]) -> list[str]:
    """The devices to run; --device gpu without a usable GPU is an error, --device all skips it."""
    if requested == "cpu":
        return ["cpu"]
    from .peers import gpu_missing

    why = gpu_missing()
    if requested == "gpu":
        if why:
            raise SystemExit(f"fastconv bench: no GPU: {why}")
        return ["gpu"]
    if why:
        notes.append(f"GPU skipped: {why}")
        return ["cpu"]
    return ["cpu", "gpu"]


def _peer_list(device: str, requested: list[str] | None) -> list[str]:
    from .peers import CPU_PEERS, GPU_PEERS, forced_isa, known_peers

    if requested is None:
        return list(CPU_PEERS if device == "cpu" else GPU_PEERS)
    if requested == ["none"]:
        return []
    known = known_peers(device)
    other = known_peers("gpu" if device == "cpu" else "cpu")
    unknown = [p for p in requested if ":" not in p and p not in known + other
               and not (device == "cpu" and forced_isa(p))]
    if unknown:
        raise SystemExit(f"fastconv bench: unknown peer {', '.join(unknown)}; expected "
                         f"{', '.join(dict.fromkeys(known + other))}, fastconv@ISA or module:Adapter")
    # A peer of the other device (e.g. cudnn in a CPU run) is simply not that device's business.
    return [p for p in requested if ":" in p or p in known or (device == "cpu" and forced_isa(p))]


def run(args) -> dict:
    """Run the bench for parsed arguments; returns the JSON-ready result."""
    from . import suites
    from .report import Progress

    start = time.perf_counter()
    if getattr(args, "models", False):
        return _run_models(args, start)
    if args.suite is None:
        args.suite = "gpu" if args.device == "gpu" else "quick"
    suite_name, cases = suites.load_suite(args.suite)
    cases = suites.select_ops(cases, _split(args.ops))
    if not cases:
        raise SystemExit(f"fastconv bench: --ops {args.ops!r} matches no case of suite {suite_name}")
    _apply_run_options(args, DEFAULT_MIN_TIME.get(suite_name, 0.2))
    notes: list[str] = []
    devices = _devices(args.device, notes)
    progress = Progress(enabled=not args.no_progress)
    result = {
        "schema": "fastconv-bench/1",
        "suite": suite_name,
        "options": {k: v for k, v in vars(args).items() if k not in ("handler",)},
        "machine": machine(),
        "model": {"flops": "2 x multiply-adds (pooling: 1 per window element)",
                  "bytes": "4 x (x.size + w.size + b.size + out.size)",
                  "floor_s": "max(flops / peak, bytes / bandwidth)",
                  "ratio": "peer median / fastconv median, per round, median over rounds (> 1: fastconv faster)"},
        "ceilings": {},
        "devices": {},
        "notes": notes,
        "cases_run": [c.name for c in cases],
    }
    logdir = tempfile.mkdtemp(prefix="fastconv-bench-logs-")  # workers' stderr; crash messages quote it
    try:
        _run_devices(args, cases, devices, result, progress, logdir)
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    result["elapsed_s"] = time.perf_counter() - start
    return result


def _run_models(args, start: float) -> dict:
    """`--models`: whole networks on the CPU, fastconv and each peer in its own worker."""
    from pathlib import Path

    from . import runner, suites
    from .report import Progress

    if args.device == "gpu":
        raise SystemExit("fastconv bench: --models runs on the CPU only")
    try:
        cases = suites.model_cases(_split(args.model_list))
    except ValueError as exc:
        raise SystemExit(f"fastconv bench: --model-list: {exc}") from None
    _apply_run_options(args, MODELS_MIN_TIME)
    peers = list(MODEL_PEERS) if args.peers is None else _peer_list("cpu", _split(args.peers))
    result = {
        "schema": "fastconv-bench/1",
        "suite": "models",
        "options": {k: v for k, v in vars(args).items() if k not in ("handler",)},
        "machine": machine(),
        "model": {"latency": "one forward pass of the whole batch (batch norm folded, weights ready)",
                  "peer": "PyTorch runs the same folded graph (peers.torch_forward), eval, no_grad",
                  "check": "fastconv: Model.check against fastconv.reference (<= 64x64); peers: vs fastconv",
                  "spread": "(max - min) / median of one library's calls",
                  "ratio": "peer median / fastconv median, per round, median over rounds (> 1: fastconv faster)"},
        "ceilings": {},
        "devices": {},
        "notes": [],
        "cases_run": [c.name for c in cases],
    }
    logdir = tempfile.mkdtemp(prefix="fastconv-bench-logs-")
    try:
        result["models"] = runner.run_models(cases, peers, args, Progress(enabled=not args.no_progress), Path(logdir))
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    result["elapsed_s"] = time.perf_counter() - start
    return result


def _run_devices(args, cases, devices, result, progress, logdir) -> None:
    from pathlib import Path

    from . import ceilings, runner

    for device in devices:
        if device == "cpu":
            progress.status("measuring CPU ceilings (cached afterwards)")
            ceiling = ceilings.cpu_ceilings(args.threads, args.remeasure)
        else:
            ceiling = ceilings.gpu_ceilings(args.remeasure)
        result["ceilings"][device] = ceiling
        peers = _peer_list(device, _split(args.peers))
        result["devices"][device] = runner.run_device(device, cases, peers, args, ceiling, progress, Path(logdir))


def main(args) -> int:
    """The `fastconv bench` handler: run, print the table, write --json / --plot."""
    from .report import text_report, write_json, write_plot

    result = run(args)
    print(text_report(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.plot and result["devices"]:
        problem = write_plot(result, args.plot)
        print(problem or f"wrote {args.plot}", file=sys.stderr if problem else sys.stdout)
    # A wrong answer from fastconv fails the command (CI); a peer's error is only reported.
    parts = list(result["devices"].values()) + ([result["models"]] if "models" in result else [])
    ours_failed = any(c["ours"]["status"] != "ok" for d in parts for c in d["cases"])
    return 1 if ours_failed else 0
