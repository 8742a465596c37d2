"""One library per process: `python -m fastconv.bench.worker DEVICE PEER THREADS`.

Why a process per library: the thread pools of two runtimes in one process (OpenMP in fastconv,
PyTorch's, onnxruntime's, the BLAS under NumPy) spin against each other on a small machine and
distort both. Each worker sets its library's threads once; the parent lets one worker run at a
time, so pools never overlap.

Protocol: one JSON object per line. The parent writes a command to stdin, the worker answers one
line on the original stdout (library output is redirected to stderr so it cannot corrupt the
protocol).
  {"cmd": "prepare", "case": {...}, "seed": S, "reference": PATH, "warmup": SECONDS}
      -> {"ok": true, "first_s": T, "error_rel": E}  |  {"unsupported": true}  |  {"error": MSG}
      Builds the inputs from the seed (identical in every worker), runs once, checks the answer
      against the reference (a wrong answer is an error and is never timed), then warms up.
  {"cmd": "prepare", "case": {"model": NAME, "batch": B, ...}, "seed": S, "output" | "reference": PATH,
   "warmup": SECONDS, "warmup_calls": K}
      A whole model (--models): built from the seed and batch-norm folded once per worker (cached
      across batch sizes), checked once (fastconv: Model.check against fastconv.reference), run once;
      with "output" the answer is saved there (fastconv's, the peers' reference), with "reference"
      it is compared with that file (MODEL_RTOL) and a mismatch is an error, never timed.
  {"cmd": "time", "seconds": S, "min_calls": K}  -> {"times": [seconds per call, ...]}
  {"cmd": "quit"}
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

# Peer vs fastconv on a whole network's output, relative to |ours| + RMS(ours) (_compare's measure).
# Two float32 runs of the same graph differ by ~1e-5 after 50 layers; a wrong weight layout, padding
# or routing gives O(1).
MODEL_RTOL = 1e-4


def _protocol_stream():
    """Keep the real stdout for the protocol; send everything else written to fd 1 to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


class Worker:
    def __init__(self, device: str, peer: str, threads: int):
        from . import peers

        self.adapter = peers.load_adapter(peer, device)
        self.threads = threads
        self.run = None
        self.models: dict = {}  # (model, resolution, seed) -> (built model, check reply fields)

    def hello(self) -> dict:
        hint = self.adapter.missing()
        if hint:
            return {"missing": hint}
        self.adapter.setup(self.threads)
        return {"ready": True, "version": self.adapter.version(), "label": self.adapter.label or self.adapter.name}

    def prepare(self, msg: dict) -> dict:
        import numpy as np

        from fastconv._compare import max_relative_error, tolerance

        from .suites import case_from_dict

        self.run = None
        if "model" in msg["case"]:
            return self.prepare_model(msg)
        case = case_from_dict(msg["case"])
        if not self.adapter.supports(case):
            return {"unsupported": True}
        arrays = case.inputs(msg["seed"])
        run, fetch = self.adapter.prepare(case, arrays)
        start = time.perf_counter()
        result = run()
        self.adapter.synchronize()
        first = time.perf_counter() - start
        got = np.asarray(fetch(result))
        want = np.load(msg["reference"])
        if got.shape != want.shape:
            return {"error": f"wrong answer: shape {got.shape}, reference {want.shape}"}
        err, where = max_relative_error(got, want)
        tol = tolerance(case.terms())
        if not err <= tol:
            return {"error": f"wrong answer: relative error {err:.3g} > {tol:.3g} at {list(where)}",
                    "error_rel": err if np.isfinite(err) else None}
        del result, got, want
        self.run = run
        self._warm_up(msg.get("warmup", 0.05), first)
        return {"ok": True, "first_s": first, "error_rel": err}

    def prepare_model(self, msg: dict) -> dict:
        import numpy as np

        from fastconv._compare import max_relative_error

        from .suites import model_case_from_dict

        case = model_case_from_dict(msg["case"])
        if not self.adapter.supports_models:
            return {"unsupported": True}
        key = (case.model, case.resolution, msg["seed"])
        if key not in self.models:
            model = case.build(msg["seed"])  # prepared once per model, outside every timed region
            try:
                checked = self.adapter.check_model(case, model)
            except AssertionError as exc:
                return {"error": f"wrong answer: {exc}"}
            self.models[key] = (model, checked)
        model, checked = self.models[key]
        run, fetch = self.adapter.prepare_model(case, model, case.inputs(msg["seed"], model)["x"])
        start = time.perf_counter()
        result = run()
        self.adapter.synchronize()
        first = time.perf_counter() - start
        got = np.asarray(fetch(result))
        reply = dict(checked, ok=True, first_s=first)
        if msg.get("output"):
            np.save(msg["output"], got)
        if msg.get("reference"):
            want = np.load(msg["reference"])
            if got.shape != want.shape:
                return {"error": f"wrong answer: shape {got.shape}, fastconv {want.shape}"}
            err, where = max_relative_error(got, want)
            if not err <= MODEL_RTOL:
                return {"error": f"wrong answer: differs from fastconv by {err:.3g} > {MODEL_RTOL:g} at {list(where)}",
                        "error_rel": err if np.isfinite(err) else None}
            reply["error_rel"] = err
        del result, got
        self.run = run
        self._warm_up(msg.get("warmup", 0.0), first, msg.get("warmup_calls", 1))
        return reply

    def _warm_up(self, seconds: float, first: float, min_calls: int = 1) -> None:
        """At least `min_calls` more calls (default 1), and `seconds` of them: caches, page faults, pools, autotuners."""
        deadline = time.perf_counter() + seconds
        calls = 0
        while calls < min_calls or (time.perf_counter() < deadline and calls < 1000):
            self.run()
            calls += 1
        self.adapter.synchronize()

    def time(self, msg: dict) -> dict:
        """Per-call times until `seconds` have been measured and at least `min_calls` made."""
        if self.run is None:
            return {"error": "time before a successful prepare"}
        seconds, min_calls = float(msg["seconds"]), int(msg.get("min_calls", 1))
        max_calls = int(msg.get("max_calls", 100000))
        if self.adapter.device == "gpu":
            return {"times": self._time_gpu(seconds, min_calls, max_calls)}
        times, total = [], 0.0
        clock, run = time.perf_counter, self.run
        while (total < seconds or len(times) < min_calls) and len(times) < max_calls:
            start = clock()
            run()
            t = clock() - start
            times.append(t)
            total += t
        return {"times": times}

    def _time_gpu(self, seconds, min_calls, max_calls):
        """CUDA events around batches of calls (per-call host timing would time the launch only)."""
        import cupy

        run = self.run
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        batch, times, total = 1, [], 0.0
        while (total < seconds or len(times) < min_calls) and len(times) < max_calls:
            start.record()
            for _ in range(batch):
                run()
            stop.record()
            stop.synchronize()
            t = cupy.cuda.get_elapsed_time(start, stop) / 1e3 / batch
            times.append(t)
            total += t * batch
            if t * batch < 1e-3 and batch < 1024:  # keep each measured region >= ~1 ms
                batch *= 2
        return times

    def serve(self, proto) -> None:
        def send(obj):
            proto.write(json.dumps(obj) + "\n")
            proto.flush()

        hello = self.hello()
        send(hello)
        if "missing" in hello:
            return
        for line in sys.stdin:
            msg = json.loads(line)
            cmd = msg.get("cmd")
            if cmd == "quit":
                return
            try:
                reply = self.prepare(msg) if cmd == "prepare" else self.time(msg)
            except Exception as exc:  # report, keep serving the next case
                traceback.print_exc()
                self.run = None
                reply = {"error": f"{type(exc).__name__}: {exc}".strip()}
            send(reply)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    device, peer, threads = argv[0], argv[1], int(argv[2])
    proto = _protocol_stream()
    try:
        worker = Worker(device, peer, threads)
    except Exception as exc:
        proto.write(json.dumps({"missing": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    worker.serve(proto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
