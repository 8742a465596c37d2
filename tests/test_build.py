"""The installed package as a user meets it: `fastconv info`, ISA selection, 64-bit guards."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _cpu, _params


def _run(code, **env):
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )


def test_info_command_reports_the_build():
    out = subprocess.run([sys.executable, "-m", "fastconv", "info"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for key in ("fastconv", "cpu_isa", "threads", "openmp", "cuda"):
        assert f"{key}:" in out.stdout
    assert _cpu.active_isa() in out.stdout


def _os_cache_bytes(level):
    """cpu0's level-1 data, level-2 or level-3 cache as Linux lists it, else as sysconf reports it, or -1."""
    root = "/sys/devices/system/cpu/cpu0/cache"

    def read(index, name):
        with open(os.path.join(root, index, name)) as f:
            return f.read().strip()

    for index in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if index.startswith("index") and int(read(index, "level")) == level and read(index, "type") != "Instruction":
            size = read(index, "size")
            return int(size.rstrip("KM")) << {"K": 10, "M": 20}.get(size[-1], 0)
    name = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE"}[level]
    return os.sysconf(name) if name in os.sysconf_names else -1


def test_planned_cache_sizes_follow_the_os_or_the_environment():
    # In a child process: the sizes are read once per process, and the tests' conftest pins the last level.
    code = "import fastconv._cpu as c; print(*c.planned_cache_bytes())"
    plain = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_CACHE_BYTES", "FASTCONV_L1_BYTES", "FASTCONV_L2_BYTES")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=plain, timeout=120)
    assert done.returncode == 0, done.stderr
    fallbacks = (32 << 10, 1 << 20, 32 << 20)
    want = [size if size > 0 else fallback for size, fallback in zip(map(_os_cache_bytes, (1, 2, 3)), fallbacks)]
    want[2] = min(want[2], 64 << 20)  # a virtual machine may report its host's whole cache
    assert [int(v) for v in done.stdout.split()] == want

    forced = _run(code, FASTCONV_L1_BYTES="12345", FASTCONV_L2_BYTES="234567", FASTCONV_CACHE_BYTES=str(100 << 20))
    assert forced.returncode == 0, forced.stderr
    assert [int(v) for v in forced.stdout.split()] == [12345, 234567, 100 << 20]

    out = subprocess.run([sys.executable, "-m", "fastconv", "info"], capture_output=True, text=True, env=plain, timeout=120)
    assert f"L1d {want[0] >> 10} KiB, L2 {want[1] >> 10} KiB, last level {want[2] >> 20} MiB" in out.stdout


@pytest.mark.parametrize("isa", _cpu.supported_isas())
def test_fastconv_isa_forces_the_instruction_set(isa):
    out = _run("import fastconv._cpu as c; print(c.active_isa())", FASTCONV_ISA=isa)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == isa


def test_fastconv_isa_auto_is_the_import_default():
    code = "import fastconv._cpu as c; print(c.active_isa(), c.narrow_isa() or '-')"
    assert _run(code, FASTCONV_ISA="auto").stdout == _run(code, FASTCONV_ISA="").stdout  # "" = unset
    forced = _run(code, FASTCONV_ISA=_cpu.supported_isas()[0]).stdout.split()
    assert forced == [_cpu.supported_isas()[0], "-"]  # a forced ISA serves every kernel alone


def test_fastconv_isa_rejects_unknown_names():
    out = _run("import fastconv", FASTCONV_ISA="sse9")
    assert out.returncode != 0
    assert "FASTCONV_ISA" in out.stderr and "unknown ISA 'sse9'" in out.stderr


def test_portable_path_is_always_available():
    assert _cpu.supported_isas()[-1] == "portable"
    with pytest.raises(ValueError, match="unknown ISA"):
        _cpu.set_isa("neon9")


def test_element_counts_beyond_64_bit_indexing_are_refused():
    # Validation works on shapes alone, before anything is allocated.
    with pytest.raises(ValueError, match="x is too large"):
        _params.conv2d_problem("conv2d", (2**31, 2**31, 2, 1), (1, 1, 1, 1), None, 1, "valid", 1, 1, None)


def test_binding_refuses_buffers_smaller_than_the_problem():
    # The private binding checks buffer sizes, so even a direct call cannot write out of bounds.
    x = np.zeros((1, 4, 4, 2), np.float32)
    p = _params.conv2d_problem("conv2d", (1, 8, 8, 2), (3, 3, 2, 2), None, 1, "valid", 1, 1, None)
    with pytest.raises(ValueError, match="x: expected 128 elements"):
        _cpu.conv2d(p, x, np.zeros((3, 3, 2, 2), np.float32), None, np.zeros((1, 6, 6, 2), np.float32))
    w, out = np.zeros((3, 3, 2, 2), np.float32), np.zeros((1, 6, 6, 2), np.float32)
    x = np.zeros((1, 8, 8, 2), np.float32)
    # Arrays are checked, never converted, at this level: float64, strided views and lists are refused.
    with pytest.raises(TypeError, match="x: expected a float32 C-contiguous NumPy array"):
        _cpu.conv2d(p, x.astype(np.float64), w, None, out)
    with pytest.raises(TypeError, match="w: expected a float32 C-contiguous"):
        _cpu.conv2d(p, x, np.zeros((3, 3, 2, 4), np.float32)[..., ::2], None, out)
    with pytest.raises(TypeError, match="b: expected a float32 C-contiguous"):
        _cpu.conv2d(p, x, w, [0.0, 0.0], out)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="not writeable"):
        _cpu.conv2d(p, x, w, None, out)


def test_public_api_names():
    for name in ("conv2d", "depthwise_conv2d", "pointwise_conv2d", "dense", "max_pool2d", "avg_pool2d",
                 "global_avg_pool2d", "global_max_pool2d", "conv_output_size", "set_num_threads", "get_num_threads"):
        assert callable(getattr(fastconv, name)), name
        if name not in ("set_num_threads", "get_num_threads"):
            assert callable(getattr(fastconv.reference, name)), name
