"""Between the public ops and the compiled kernels: which backend, which dtype, which memory.

- NumPy arrays (and anything np.asarray accepts) run on the CPU module `fastconv._cpu`.
- Arrays exposing `__cuda_array_interface__` (CuPy) run on the CUDA module through `_gpu`.
  Mixing the two in one call is a TypeError naming each argument's device.
- float32 C-contiguous inputs are used as they are. Other real float dtypes and non-contiguous
  arrays are converted once, here, to float32 C-contiguous copies. The output is always a new
  float32 array of the input's kind (on the CPU, from 32 MiB on, a view of memory it reuses:
  _LargeOutputs).
"""

from __future__ import annotations

import math
import sys
import threading

import numpy as np

from . import _cpu, _gpu, _params


def _on_gpu(array) -> bool:
    return hasattr(array, "__cuda_array_interface__")


_FLOAT32 = np.dtype(np.float32)


def as_inputs(op: str, names, *arrays):
    """Type-check and normalise the arrays (None stays None); returns them in order. names: theirs,
    for error messages, as one space-separated string ("x w b") or a list."""
    # The common case, first and inline (this runs on every call, and a tiny layer's whole call is
    # ~4 us): every array a float32 C-contiguous NumPy array or None, used as it is. A float32
    # dtype that is not NumPy's shared instance takes the general path below, which keeps it too.
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype is not _FLOAT32 or not a.flags.c_contiguous):
            break
    else:
        return arrays
    if _gpu.ready(arrays):
        return arrays
    names = names.split() if isinstance(names, str) else names
    present = {name: a for name, a in zip(names, arrays) if a is not None}
    on_gpu = {name: _on_gpu(a) for name, a in present.items()}
    if any(on_gpu.values()) and not all(on_gpu.values()):
        where = ", ".join(f"{name} on {'GPU' if gpu else 'CPU'}" for name, gpu in on_gpu.items())
        raise TypeError(f"{op}: all arrays must live on the same device, got {where}")
    out = []
    for name, a in zip(names, arrays):
        if a is None:
            out.append(None)
            continue
        if on_gpu[name]:
            a = _gpu.as_array(a)
        else:
            try:
                a = np.asarray(a)
            except Exception as exc:  # ragged lists and other objects NumPy refuses
                raise TypeError(f"{op}: {name} must be an array, got {type(a).__name__}") from exc
        _params.check_float_dtype(op, name, a.dtype)
        out.append(a)
    if any(on_gpu.values()):
        _gpu.check_same_device(op, {name: a for name, a in zip(names, out) if a is not None})
    return [None if a is None else _float32_contiguous(a) for a in out]


def _float32_contiguous(a):
    if _on_gpu(a):
        return _gpu.float32_contiguous(a)
    return np.ascontiguousarray(a, dtype=np.float32)


class _LargeOutputs:
    """CPU outputs of 1 MiB or more. glibc's malloc serves a request past its mmap threshold (up to
    32 MiB, raised by each large free) from fresh pages on every call, and the kernel then faults
    each page in and zeroes it: measured here 3.1-3.5x the time of writing the same output into
    memory already mapped (~0.1 ms per MiB; 37.8 MB, a batch of four 222 x 222 x 48 outputs, lost 3.4
    ms a call). A network's layers ask for many sizes in turn, so below 32 MiB too: ResNet-50 at
    batch 8 faulted 15 MB a forward pass with a pool from 32 MiB, none from 1 MiB with 16 blocks.
    So a large output takes a block that an earlier output used once every array viewing it is gone,
    else a new block; the pool keeps the last MAX_BLOCKS blocks it handed out (used or not), at most
    MAX_POOL_BYTES of them (the least recently used go first).

    A block is free when nothing but the pool refers to it: NumPy points every view's .base at the
    array that owns the memory, so each live output or view of it holds one reference to its block.
    The reference count of a block referred to by the pool alone is measured when the block is made,
    by the same call that checks it later, so the interpreter's counting conventions cancel out."""

    MIN_BYTES = 1 << 20
    MAX_BLOCKS = 16
    MAX_POOL_BYTES = 256 << 20  # ResNet-50 at batch 8 keeps 116 MB, EfficientNet-B0 181 MB
    ALIGN = 64  # outputs start on a cache line (malloc's large blocks start 16 bytes past one)

    def __init__(self):
        self._blocks = []  # [block, its reference count when free]; least recently used first
        self._lock = threading.Lock()  # two Python threads must not take one block

    def _references(self, i):
        return sys.getrefcount(self._blocks[i][0])

    def empty(self, shape):
        nbytes = 4 * math.prod(shape)  # (np.prod took 3 us: a tiny layer's whole kernel time)
        if nbytes < self.MIN_BYTES:
            return np.empty(shape, _FLOAT32)
        with self._lock:
            for i in range(len(self._blocks)):
                block, free_refs = self._blocks[i]
                fits = nbytes <= block.nbytes - self.ALIGN <= 2 * nbytes
                del block
                if fits and self._references(i) == free_refs:
                    self._blocks.append(self._blocks.pop(i))
                    return self._view(self._blocks[-1][0], shape, nbytes)
            self._blocks.append([np.empty(nbytes + self.ALIGN, np.uint8), 0])
            self._blocks[-1][1] = self._references(len(self._blocks) - 1)
            del self._blocks[: -self.MAX_BLOCKS]
            kept = sum(block.nbytes for block, _ in self._blocks)
            while len(self._blocks) > 1 and kept > self.MAX_POOL_BYTES:
                kept -= self._blocks.pop(0)[0].nbytes
            return self._view(self._blocks[-1][0], shape, nbytes)

    def _view(self, block, shape, nbytes):
        offset = -block.ctypes.data % self.ALIGN
        return block[offset : offset + nbytes].view(_FLOAT32).reshape(shape)


_large_outputs = _LargeOutputs()


def run(kernel: str, problem, *arrays, packed=None):
    """Allocate the output and call the kernel `kernel` of the arrays' backend (arrays as
    as_inputs returns them: NumPy ones for the CPU, CuPy ones for the GPU). The kernels read each
    array by its size, in the layout `problem` describes, whatever its shape. packed: the
    ops.PackedWeights that w (arrays[1]) came from, for the "dense" and "conv2d" kernels."""
    if not isinstance(arrays[0], np.ndarray):
        return _gpu.run(kernel, problem, *arrays)
    out = _large_outputs.empty(problem.out_shape)
    if packed is None:
        getattr(_cpu, kernel)(problem, *arrays, out)
    else:
        getattr(_cpu, kernel)(problem, *arrays, out, packed.forms)
    return out


def array_module(array):
    """numpy for CPU arrays, cupy for GPU ones: the elementwise layers compute with it directly."""
    if _on_gpu(array):
        import cupy

        return cupy
    return np
