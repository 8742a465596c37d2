"""Drives the workers through a suite: reference, correctness check, rounds of timing, figures.

Per case: the parent computes the float64 reference once and hands its path to every worker; each
worker builds the same inputs from the seed, checks its answer (a wrong answer becomes an error,
never a time), warms up. Then `ROUNDS` rounds in which the workers take turns (A B C, C B A, ...),
each timing for min_time / ROUNDS; the ratio peer / ours is taken per round and its median kept,
so slow drifts of a noisy machine hit both sides of each ratio alike. On the CPU each turn starts
SETTLE_S after the previous one ended: a library's idle threads keep spinning for a while after its
last call (OpenBLAS, under NumPy, for ~2^28 cycles, ~80 ms), and without the pause they took a core
from whichever library came next (measured, bench/NOTES.md: fastconv's resnet_1x1_n8 timed 14-16 ms
right after NumPy's turns against 6.7 ms with the pause, the same as alone).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import ceilings
from .peers import call_op, forced_isa
from .report import Progress
from .suites import Case, ModelCase, cost

ROUNDS = 4
SETTLE_S = 0.12


class WorkerDied(RuntimeError):
    pass


class WorkerProcess:
    """A `python -m fastconv.bench.worker` child, spoken to one JSON line at a time."""

    def __init__(self, device: str, peer: str, threads: int, logdir: Path):
        self.device, self.peer, self.threads = device, peer, threads
        self.log_path = logdir / f"{device}-{peer.replace(':', '_').replace('/', '_')}.log"
        self._start()

    def _start(self):
        env = dict(os.environ)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            env[var] = str(self.threads)  # BLAS and OpenMP pools of every library: the same count
        isa = forced_isa(self.peer)
        if isa is not None:
            env["FASTCONV_ISA"] = isa  # read once, when the worker imports fastconv
        package_root = str(Path(__file__).resolve().parents[2])  # so a source-tree run finds fastconv
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastconv.bench.worker", self.device, self.peer, str(self.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
        )

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise WorkerDied(f"{self.peer} worker exited (code {self.proc.returncode}): {self.log_tail()}")
        return json.loads(line)

    def request(self, msg: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(f"{self.peer} worker is gone: {self.log_tail()}") from None
        return self.read()

    def restart(self) -> dict:
        self.close()
        self._start()
        return self.read()

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = Path(self.log_path).read_text().strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------


def _stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "samples": len(times)}


def geomean(values) -> float | None:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


class Runner:
    """One device's run: workers started once, then every case of every pass."""

    def __init__(self, device, peer_names, threads, min_time, seed, ceiling, progress: Progress, logdir: Path):
        self.device, self.threads, self.min_time, self.seed = device, threads, min_time, seed
        self.ceiling = ceiling
        self.progress = progress
        self.logdir = logdir
        self.workers: dict[str, WorkerProcess] = {}
        self.libraries: dict[str, dict] = {}
        names = ["fastconv"] + [p for p in peer_names if p != "fastconv"]
        starting = {name: WorkerProcess(device, name, threads, logdir) for name in names}
        for name, worker in starting.items():  # started together, imports overlap
            try:
                hello = worker.read()
            except WorkerDied as exc:
                hello = {"missing": str(exc)}
            if "missing" in hello:
                self.libraries[name] = {"status": "n/a", "hint": hello["missing"]}
                worker.close()
                continue
            self.libraries[name] = {"status": "ok", "version": hello.get("version", ""), "label": hello.get("label", name)}
            self.workers[name] = worker
        if "fastconv" not in self.workers:
            raise RuntimeError(f"fastconv worker failed to start: {self.libraries['fastconv'].get('hint')}")

    def close(self):
        for worker in self.workers.values():
            worker.close()

    # ---- one case ---------------------------------------------------------------------------
    def run_case(self, case: Case, tmp: Path) -> dict:
        """Measurements of one pass over one case: {library: cell}."""
        from fastconv import reference

        self.progress.status(f"{case.name}: reference")
        want = np.asarray(call_op(reference, case, case.inputs(self.seed)), dtype=np.float64)
        ref_path = tmp / f"{case.name}.npy"
        np.save(ref_path, want)
        del want
        cells, active = {}, []
        for name, worker in self.workers.items():
            self.progress.status(f"{case.name}: {name} check + warm-up")
            reply = self._request(name, {"cmd": "prepare", "case": case.spec, "seed": self.seed,
                                         "reference": str(ref_path), "warmup": min(0.05, self.min_time / 4)})
            if reply.get("unsupported"):
                cells[name] = {"status": "unsupported"}
            elif "error" in reply:
                cells[name] = {"status": "error", "error": reply["error"]}
            else:
                cells[name] = {"status": "ok", "verified": True, "error_rel": reply.get("error_rel"),
                               "rounds": [], "times": []}
                active.append(name)
        ref_path.unlink()
        self._rounds(case.name, cells, active, {"cmd": "time", "seconds": self.min_time / ROUNDS, "min_calls": 1})
        return cells

    def _rounds(self, label: str, cells: dict, active: list, msg: dict) -> None:
        """ROUNDS rounds of `msg` in which the active libraries take turns (A B C, C B A, ...)."""
        for r in range(ROUNDS):
            for name in active if r % 2 == 0 else active[::-1]:
                if cells[name]["status"] != "ok":
                    continue
                self.progress.status(f"{label}: {name} round {r + 1}/{ROUNDS}")
                if self.device == "cpu":
                    time.sleep(SETTLE_S)
                reply = self._request(name, msg)
                if "error" in reply:
                    cells[name] = {"status": "error", "error": reply["error"]}
                    continue
                cells[name]["rounds"].append(statistics.median(reply["times"]))
                cells[name]["times"].extend(reply["times"])

    # ---- one whole model (--models) ----------------------------------------------------------
    def run_model_case(self, case: ModelCase, tmp: Path) -> dict:
        """Like run_case, but fastconv's answer (itself checked by Model.check) is the peers' reference.

        Timing: min_time / ROUNDS / batch seconds per round and at least 2 calls (batch 1) or 1 call
        (larger batches, which are slow and steadier), so batch 8 costs about as much as batch 1.
        """
        out_path = tmp / f"{case.name.replace('/', '_')}.npy"
        cells, active = {}, []
        for name in self.workers:  # fastconv first: its output is the others' reference
            self.progress.status(f"{case.name}: {name} check + warm-up")
            msg = {"cmd": "prepare", "case": case.spec, "seed": self.seed,
                   "warmup_calls": 1 if case.batch == 1 else 0}
            if name == "fastconv":
                msg["output"] = str(out_path)
            elif out_path.exists():
                msg["reference"] = str(out_path)
            else:
                cells[name] = {"status": "error", "error": "not checked: fastconv has no answer to compare with"}
                continue
            reply = self._request(name, msg)
            if reply.get("unsupported"):
                cells[name] = {"status": "unsupported"}
            elif "error" in reply:
                cells[name] = {"status": "error", "error": reply["error"]}
            else:
                cells[name] = {"status": "ok", "verified": True, "error_rel": reply.get("error_rel"),
                               "rounds": [], "times": []}
                if "check" in reply:
                    cells[name]["check"] = reply["check"]
                active.append(name)
        out_path.unlink(missing_ok=True)
        self._rounds(case.name, cells, active, {"cmd": "time", "seconds": self.min_time / ROUNDS / case.batch,
                                                "min_calls": 2 if case.batch == 1 else 1})
        return cells

    def _request(self, name: str, msg: dict) -> dict:
        """A request that survives a crashed worker: the case gets the error, the worker restarts."""
        worker = self.workers[name]
        try:
            return worker.request(msg)
        except WorkerDied as exc:
            try:
                worker.restart()
            except WorkerDied:
                pass
            return {"error": f"crashed: {exc}"}


# --------------------------------------------------------------------------------------------
# Figures


def merge_passes(passes: list[dict]) -> dict:
    """Several passes' cells for one case -> one cell per library: best median, pooled rounds."""
    merged = {}
    for name in passes[0]:
        cells = [p[name] for p in passes]
        ok = [c for c in cells if c["status"] == "ok" and c["rounds"]]
        if len(ok) < len(cells):
            bad = next(c for c in cells if c["status"] != "ok" or not c["rounds"])
            merged[name] = {k: v for k, v in bad.items() if k not in ("rounds", "times")}
            if bad["status"] == "ok":
                merged[name] = {"status": "error", "error": "no timing"}
            continue
        best = min(ok, key=lambda c: statistics.median(c["times"]))
        merged[name] = dict(_stats(best["times"]), status="ok", verified=True, error_rel=best["error_rel"],
                            round_medians=[r for c in ok for r in c["rounds"]])
        if "check" in best:
            merged[name]["check"] = best["check"]
    return merged


def case_figures(case: Case, cells: dict, peak_gflops: float, bandwidth_gbs: float) -> dict:
    """Everything the table, the JSON and the plot show for one case."""
    flops, nbytes = cost(case)
    floor = ceilings.roofline(flops, nbytes, peak_gflops, bandwidth_gbs)
    entry = {
        "name": case.name, "op": case.op, "family": case.family, "shape": case.describe(),
        "activation": case.activation, "flops": flops, "bytes": nbytes, "intensity": flops / nbytes,
        "floor_s": floor, "bound": "compute" if flops / (peak_gflops * 1e9) >= nbytes / (bandwidth_gbs * 1e9) else "memory",
    }
    ours = cells.get("fastconv", {"status": "error", "error": "no result"})
    if ours["status"] == "ok":
        t = ours["median_s"]
        ours = dict(ours, gflops=flops / t / 1e9, gbs=nbytes / t / 1e9, pct_roofline=100.0 * floor / t)
    entry["ours"] = ours
    return _add_peers(entry, cells)


def _add_peers(entry: dict, cells: dict) -> dict:
    """entry["peers"] with per-round ratios peer / ours, and the best peer."""
    ours = entry["ours"]
    entry["peers"] = {}
    for name, cell in cells.items():
        if name == "fastconv":
            continue
        cell = dict(cell)
        if cell["status"] == "ok" and ours["status"] == "ok":
            ratios = [p / o for p, o in zip(cell["round_medians"], ours["round_medians"])]
            cell["ratio"] = statistics.median(ratios)  # > 1: the peer is slower than fastconv
            cell["ratio_rounds"] = ratios
        entry["peers"][name] = cell
    timed = {n: c for n, c in entry["peers"].items() if "ratio" in c}
    if timed:
        # The peer that comes closest to us round by round (the smallest ratio), so the "best peer"
        # column never shows a better ratio than one of the peers' own columns.
        best = min(timed, key=lambda n: timed[n]["ratio"])
        entry["best_peer"], entry["ratio_best"] = best, timed[best]["ratio"]
    return entry


def model_figures(case: ModelCase, cells: dict, macs: int) -> dict:
    """One --models row: latencies, images/s, spread ((max - min) / median) and peer / ours ratios."""
    entry = {"name": case.name, "model": case.model, "batch": case.batch, "shape": case.describe(),
             "macs": macs, "flops": 2.0 * macs}
    ours = cells.get("fastconv", {"status": "error", "error": "no result"})
    if ours["status"] == "ok":
        ours = dict(ours, images_per_s=case.batch / ours["median_s"])
    entry["ours"] = ours
    entry = _add_peers(entry, cells)
    for cell in [entry["ours"], *entry["peers"].values()]:
        if cell["status"] == "ok":
            cell["spread"] = (cell["max_s"] - cell["min_s"]) / cell["median_s"]
    return entry


def summarize(cases: list[dict], peer_names: list[str]) -> dict:
    """Geometric means per op family: % of roofline, and peer/ours ratios (> 1: we are faster)."""
    families = {}
    for fam in dict.fromkeys(c["family"] for c in cases):
        members = [c for c in cases if c["family"] == fam]
        row = {
            "cases": len(members),
            "pct_roofline": geomean(c["ours"].get("pct_roofline") for c in members),
            "ratio_best": geomean(c.get("ratio_best") for c in members),
        }
        for name in peer_names:
            row[f"ratio_{name}"] = geomean(c["peers"].get(name, {}).get("ratio") for c in members)
        families[fam] = row
    return families


def run_device(device, cases, peer_names, options, ceiling, progress, logdir) -> dict:
    """All passes of a suite on one device -> its part of the JSON."""
    threads = options.threads if device == "cpu" else 1
    if device == "cpu":
        peak, bandwidth = ceiling["fma_gflops"], ceiling["triad_gbs"]
    else:
        peak, bandwidth = ceiling["fma_gflops"], ceiling["copy_gbs"]
    runner = Runner(device, peer_names, threads, options.min_time, options.seed, ceiling, progress, logdir)
    passes = _run_passes(runner, runner.run_case, cases, options.repeat, progress, device)
    entries = [case_figures(c, merge_passes(passes[c.name]), peak, bandwidth) for c in cases]
    peers_used = [n for n in runner.libraries if n != "fastconv"]
    return {
        "threads": threads,
        "peak_gflops": peak,
        "bandwidth_gbs": bandwidth,
        "libraries": runner.libraries,
        "cases": entries,
        "summary": summarize(entries, peers_used),
    }


def _run_passes(runner, run_one, cases, repeat: int, progress, label: str) -> dict[str, list]:
    """Every case `repeat` times, in alternating order, closing the workers at the end ->
    {case name: [cells of each pass]}."""
    passes: dict[str, list] = {c.name: [] for c in cases}
    try:
        progress.start(len(cases) * repeat, label)
        tmp = Path(tempfile.mkdtemp(prefix="fastconv-bench-"))
        try:
            for p in range(repeat):
                for case in cases if p % 2 == 0 else cases[::-1]:
                    cells = run_one(case, tmp)
                    passes[case.name].append(cells)
                    progress.case_done(case.name, _one_line(cells))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        runner.close()
        progress.finish()
    return passes


def _one_line(cells: dict) -> str:
    ours = cells.get("fastconv", {})
    if ours.get("status") == "ok" and ours["times"]:
        return f"fastconv {statistics.median(ours['times']) * 1e3:.3f} ms"
    return f"fastconv {ours.get('status', '?')}: {ours.get('error', '')}"


def run_models(cases: list[ModelCase], peer_names, options, progress, logdir) -> dict:
    """All passes of --models on the CPU -> the JSON's "models" part."""
    from fastconv.models import MODELS

    runner = Runner("cpu", peer_names, options.threads, options.min_time, options.seed, None, progress, logdir)
    passes = _run_passes(runner, runner.run_model_case, cases, options.repeat, progress, "models")
    entries = []
    for c in cases:
        model = MODELS[c.model]()
        entries.append(model_figures(c, merge_passes(passes[c.name]), model.macs(c.input_shape(model)[1:], c.batch)))
    return {"threads": options.threads, "libraries": runner.libraries, "cases": entries}
