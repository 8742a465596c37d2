"""The machine's ceilings: the roofline every case is placed against.

CPU: float32 FMA peak of the instruction set the kernels use, with 1 thread and all threads (a
register-only FMA loop in the extension, `_cpu.fma_peak`), and STREAM-triad bandwidth on arrays
far beyond the last-level cache (`_cpu.triad_bandwidth`, bytes read + written). GPU: FP32 FMA peak
and device-to-device copy bandwidth from the CUDA module's own small kernels.

Measuring takes a few seconds, so the figures are cached per machine in a small JSON file under
$XDG_CACHE_HOME/fastconv (default ~/.cache/fastconv), keyed by a fingerprint of what could change
them (CPU model, ISA, thread count, hostname); `--remeasure` refreshes it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import time
from pathlib import Path

SCHEMA = 1
FMA_SECONDS = 0.25  # per thread count; the best of 4 passes is kept
# Each triad array at least this large and 4x the last-level cache.
MIN_TRIAD_BYTES = 128 << 20


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo; platform.processor() elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_level_cache_bytes() -> int:
    """Largest cache size sysfs reports (0 when unknown)."""
    best = 0
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = path.read_text().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            best = max(best, int(text.rstrip("KMG")) * scale)
        except (OSError, ValueError):
            continue
    return best


def cpu_fingerprint(threads: int) -> dict:
    from fastconv import _cpu

    return {
        "cpu": cpu_model(),
        "isa": _cpu.active_isa(),
        "threads": int(threads),
        "cores": os.cpu_count(),
        "hostname": socket.gethostname(),
    }


def cache_path(fingerprint: dict) -> Path:
    """One small file per machine fingerprint under $XDG_CACHE_HOME/fastconv."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastconv"
    digest = hashlib.sha1(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]
    return root / f"ceilings-{digest}.json"


def _load(path: Path, fingerprint: dict) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("schema") != SCHEMA or data.get("fingerprint") != fingerprint:
        return None
    return data


def _store(path: Path, data: dict) -> None:
    """Best effort: an unwritable cache only costs a re-measurement next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
    except OSError:
        pass


def measure_cpu(threads: int) -> dict:
    """FMA peak (1 thread and `threads`) and triad bandwidth (1 thread and `threads`)."""
    from fastconv import _cpu

    floats = max(MIN_TRIAD_BYTES, 4 * last_level_cache_bytes()) // 4
    start = time.perf_counter()
    figures = {
        "fma_gflops_1t": _cpu.fma_peak(1, FMA_SECONDS),
        "fma_gflops": _cpu.fma_peak(threads, FMA_SECONDS) if threads > 1 else None,
        "triad_gbs_1t": _cpu.triad_bandwidth(floats, 1),
        "triad_gbs": _cpu.triad_bandwidth(floats, threads) if threads > 1 else None,
    }
    if threads == 1:
        figures["fma_gflops"], figures["triad_gbs"] = figures["fma_gflops_1t"], figures["triad_gbs_1t"]
    figures.update(
        {
            "triad_array_bytes": 4 * floats,
            "last_level_cache_bytes": last_level_cache_bytes(),
            "measure_seconds": time.perf_counter() - start,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    return figures


def cpu_ceilings(threads: int, remeasure: bool = False) -> dict:
    """The CPU ceilings for `threads` threads, from the cache unless stale or `remeasure`."""
    fingerprint = cpu_fingerprint(threads)
    path = cache_path(fingerprint)
    cached = None if remeasure else _load(path, fingerprint)
    if cached is not None:
        return dict(cached["figures"], fingerprint=fingerprint, cache=str(path), cached=True)
    figures = measure_cpu(threads)
    _store(path, {"schema": SCHEMA, "fingerprint": fingerprint, "figures": figures})
    return dict(figures, fingerprint=fingerprint, cache=str(path), cached=False)


# --------------------------------------------------------------------------------------------
# GPU


def gpu_fingerprint() -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return {
        "gpu": name.decode() if isinstance(name, bytes) else str(name),
        "sms": int(props.get("multiProcessorCount", 0)),
        "l2_bytes": int(props.get("l2CacheSize", 0)),
        "hostname": socket.gethostname(),
    }


def measure_gpu() -> dict:
    """FP32 FMA peak and device-to-device copy bandwidth from the CUDA module's own kernels.

    Assumes `measure_fma_peak(stream)` returns GFLOP/s and `measure_copy_bandwidth(nbytes, stream)`
    returns GB/s counting bytes read + written.
    """
    import cupy

    from fastconv import _gpu

    cuda = _gpu.cuda_module()
    stream = cupy.cuda.get_current_stream().ptr
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    nbytes = max(256 << 20, 8 * int(props.get("l2CacheSize", 0)))
    return {
        "fma_gflops": float(cuda.measure_fma_peak(stream)),
        "copy_gbs": float(cuda.measure_copy_bandwidth(nbytes, stream)),
        "copy_bytes": nbytes,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def gpu_ceilings(remeasure: bool = False) -> dict:
    fingerprint = gpu_fingerprint()
    path = cache_path(fingerprint)
    cached = None if remeasure else _load(path, fingerprint)
    if cached is not None:
        return dict(cached["figures"], fingerprint=fingerprint, cache=str(path), cached=True)
    figures = measure_gpu()
    _store(path, {"schema": SCHEMA, "fingerprint": fingerprint, "figures": figures})
    return dict(figures, fingerprint=fingerprint, cache=str(path), cached=False)


def roofline(flops: float, nbytes: float, peak_gflops: float, bandwidth_gbs: float) -> float:
    """Floor time in seconds: the slower of computing at peak and moving the bytes at full bandwidth."""
    return max(flops / (peak_gflops * 1e9), nbytes / (bandwidth_gbs * 1e9))
