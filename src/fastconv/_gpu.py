"""The CUDA backend: CuPy arrays in, CuPy arrays out, kernels from the compiled `fastconv._cuda`.

`_backend` calls into this module only for arrays that expose `__cuda_array_interface__`.
Kernels are enqueued on CuPy's current stream of the arrays' device, the output comes from CuPy's
memory pool, and nothing synchronises or copies to the host: results are ordered with later CuPy
work on the same stream like any CuPy op.

Importing this module needs neither CuPy, nor a driver, nor the compiled module: they are loaded
on first use, so that `fastconv info` can report why the GPU path is unavailable.
"""

from __future__ import annotations

import sys

import numpy as np

_cuda = None  # the loaded fastconv._cuda, once cuda_module() has vetted it
_FLOAT32 = np.dtype(np.float32)
_KERNELS = ("conv2d", "dense", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "global_max_pool2d")
VERSIONED_KERNELS = ("conv2d", "dense", "max_pool2d", "avg_pool2d")  # kernels with a `version` argument
_OPERANDS = {"conv2d": ("x", "w", "b"), "dense": ("x", "w", "b")}  # the pools take x alone


def _cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(f"the GPU backend needs CuPy, which is not importable: {exc}") from exc
    return cupy


def cuda_module():
    """The compiled `fastconv._cuda`, checked against the visible devices.

    Raises ImportError when the module was not built or does not load, RuntimeError when there is
    no usable CUDA device (no driver, no device, or only devices older than the module's code).
    """
    global _cuda
    if _cuda is not None:
        return _cuda
    try:
        from . import _cuda as module
    except ImportError as exc:
        raise ImportError(
            f"fastconv._cuda is not available ({exc}); build with FASTCONV_CUDA=ON and a CUDA compiler"
        ) from exc
    count = module.device_count()  # RuntimeError with CUDA's reason when there is no driver
    if count < 1:
        raise RuntimeError("no CUDA device is visible")
    oldest = tuple(module.min_compute_capability)
    capabilities = [tuple(module.device_info(d)["compute_capability"]) for d in range(count)]
    if all(cc < oldest for cc in capabilities):
        raise RuntimeError(
            f"fastconv._cuda holds code for compute capability >= {oldest[0]}.{oldest[1]} "
            f"({module.architectures}); the visible devices are {capabilities}"
        )
    _cuda = module
    return module


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def describe() -> dict:
    """Facts about the GPU path for `fastconv info`. Never raises."""
    try:
        from . import _cuda as module
    except ImportError as exc:
        return {"cuda": f"not built or not loadable ({exc})"}
    facts = {
        "cuda": f"built for {module.architectures}",
        "cuda_runtime": _version(module.runtime_version()),
    }
    try:
        driver = module.driver_version()
        facts["cuda_driver"] = _version(driver) if driver else "none installed"
        count = module.device_count()
        facts["cuda_devices"] = count
        for d in range(count):
            info = module.device_info(d)
            major, minor = info["compute_capability"]
            facts[f"cuda_device_{d}"] = (
                f"{info['name']}, compute capability {major}.{minor}, {info['multiprocessors']} SMs, "
                f"{info['total_memory'] / 2**30:.1f} GiB"
            )
    except RuntimeError as exc:
        facts["cuda_devices"] = f"unavailable: {exc}"
    try:
        import cupy

        facts["cupy"] = cupy.__version__
    except ImportError:
        facts["cupy"] = "not installed (needed for GPU arrays)"
    return facts


# --------------------------------------------------------------------------------------------
# Called by _backend


def ready(arrays) -> bool:
    """True when every array (None allowed, at least one not None) is a float32 C-contiguous CuPy
    array and all live on one device: the public ops then use them as they are. Cheap, and never
    imports CuPy (a CuPy array implies CuPy is loaded)."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return False
    device = None
    for a in arrays:
        if a is None:
            continue
        if type(a) is not cupy.ndarray or a.dtype != _FLOAT32 or not a.flags.c_contiguous:
            return False
        d = a.data.device_id
        if device is None:
            device = d
        elif d != device:
            return False
    return device is not None


def as_array(a):
    """A CuPy view of any object exposing __cuda_array_interface__ (zero-copy)."""
    cupy = _cupy()
    return a if isinstance(a, cupy.ndarray) else cupy.asarray(a)


def check_same_device(op: str, arrays: dict) -> None:
    """ValueError naming each argument's device when the arrays live on different GPUs."""
    devices = {name: a.device.id for name, a in arrays.items()}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on GPU {d}" for name, d in devices.items())
        raise ValueError(f"{op}: all arrays must live on the same GPU, got {where}")


def float32_contiguous(a):
    """a itself when already float32 and C-contiguous, else a converted copy on a's device."""
    cupy = _cupy()
    if a.dtype == cupy.float32 and a.flags.c_contiguous:
        return a
    with a.device:
        return cupy.ascontiguousarray(a, dtype=cupy.float32)


def _checked(op: str, name: str, a, expected: int, device_id: int, cupy):
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{op}: {name} must be a CuPy array, got {type(a).__name__}")
    if a.dtype != _FLOAT32 or not a.flags.c_contiguous:
        raise TypeError(f"{op}: {name} must be float32 and C-contiguous, got {a.dtype}")
    if a.size != expected:
        raise ValueError(f"{op}: {name} must hold {expected} elements, got shape {a.shape}")
    if a.data.device_id != device_id:
        raise ValueError(f"{op}: {name} is on GPU {a.data.device_id}, x on GPU {device_id}")
    return a.data.ptr


def run(kernel: str, problem, *arrays, out=None, version: int = 0):
    """Enqueue `kernel` on the current stream of x's device; return out (allocated when None).

    arrays: (x, w, b-or-None) for conv2d and dense, (x,) for the pools, float32 C-contiguous CuPy
    arrays of the sizes `problem` describes (problem.operand_sizes: every size is checked here,
    the last line of defence against an out-of-bounds kernel). out, when given, must be such an
    array of the output's size: every element is overwritten. version: 0 lets the module pick the
    kernel; n > 0 forces kernel version n (conv2d, dense, max/avg pooling; for benchmarks and
    tests of each version), a ValueError where it does not apply.
    """
    if kernel not in _KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {', '.join(_KERNELS)}")
    cupy = _cupy()
    module = cuda_module()
    names = _OPERANDS.get(kernel, ("x",))
    if len(arrays) != len(names):
        raise TypeError(f"{kernel}: expected arrays ({', '.join(names)}), got {len(arrays)}")
    x = arrays[0]
    if not isinstance(x, cupy.ndarray):
        raise TypeError(f"{kernel}: x must be a CuPy array, got {type(x).__name__}")
    device_id = x.data.device_id
    sizes = problem.operand_sizes
    pointers = []
    for name, size, a in zip(names, sizes, arrays):
        if name == "b" and a is None:
            if problem.has_bias:
                raise ValueError(f"{kernel}: the problem has a bias but b is None")
            pointers.append(0)
            continue
        pointers.append(_checked(kernel, name, a, size, device_id, cupy))
    if len(names) == 3 and arrays[2] is not None and not problem.has_bias:
        raise ValueError(f"{kernel}: b given for a problem without bias")
    if version and kernel not in VERSIONED_KERNELS:
        raise ValueError(f"{kernel}: has a single kernel version")

    extra = {"version": version} if version else {}
    if device_id == cupy.cuda.runtime.getDevice():
        out = _output(kernel, problem, out, device_id, cupy)
        stream = cupy.cuda.get_current_stream().ptr
        getattr(module, kernel)(problem, *pointers, out.data.ptr, stream, device_id, **extra)
        return out
    with cupy.cuda.Device(device_id):  # the output, and the current stream, of x's device
        out = _output(kernel, problem, out, device_id, cupy)
        stream = cupy.cuda.get_current_stream().ptr
        getattr(module, kernel)(problem, *pointers, out.data.ptr, stream, device_id, **extra)
    return out


def _output(kernel, problem, out, device_id, cupy):
    if out is None:
        return cupy.empty(problem.out_shape, dtype=cupy.float32)
    _checked(kernel, "out", out, problem.operand_sizes[-1], device_id, cupy)
    return out
