"""bench/gpu_stages.py's table mode, which reads Nsight Compute's CSV: it runs on any machine, so the
GPU check's stage table is tested here rather than only on a GPU."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_stages.py"

# The columns of `ncu --csv --metrics gpu__time_duration.sum` that the table reads, among others.
HEADER = ["ID", "Process ID", "Process Name", "Host Name", "Kernel Name", "Context", "Stream", "Block Size",
          "Grid Size", "Device", "CC", "Section Name", "Metric Name", "Metric Unit", "Metric Value"]


@pytest.fixture(scope="module")
def gpu_stages():
    spec = importlib.util.spec_from_file_location("gpu_stages", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_csv(path, kernels):
    """kernels: (demangled name, unit, value string) in launch order, as ncu lists them."""
    with open(path, "w", newline="") as f:
        f.write("==PROF== Connected to process 1 (python3)\n")
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(HEADER)
        for i, (name, unit, value) in enumerate(kernels):
            writer.writerow([str(i), "1", "python3", "127.0.0.1", name, "1", "7", "(256, 1, 1)", "(24, 1, 1)", "0",
                             "9.0", "Command line profiler metrics", "gpu__time_duration.sum", unit, value])
        f.write("==PROF== Disconnected from process 1\n")


def _layer(m, r, scale_us):
    """One Winograd layer's four kernels, both name forms ncu prints, durations in ns."""
    anon = "void fastconv::cuda::(anonymous namespace)::"
    return [
        (f"{anon}winograd_weight_kernel<{m}, {r}>(const float *, long, float *)", "nsecond", f"{4 * scale_us:,}"),
        (f"void <unnamed>::winograd_input_kernel<{m}, {r}>(<unnamed>::WinogradGeometry, const float *, float *)",
         "nsecond", f"{40 * scale_us:,}"),
        (f"{anon}gemm_kernel<32>(GemmGeometry, const float *, const float *, const float *, float *, float *)",
         "usecond", f"{0.07 * scale_us:.2f}"),
        (f"{anon}winograd_output_kernel<{m}, {r}>(WinogradGeometry, const float *, const float *, float *)",
         "nsecond", f"{8 * scale_us:,}"),
    ]


def test_table_groups_kernels_by_layer_and_names_the_suites_layers(gpu_stages, tmp_path, capsys):
    names = [case.name for case, _ in gpu_stages.winograd_cases("gpu")]
    assert len(names) >= 2  # the suite's stride-1 3x3 / 5x5 layers
    csv_path = tmp_path / "stages.csv"
    _write_csv(csv_path, [k for i in range(len(names)) for k in _layer(4, 5 if i % 2 else 3, 1000 * (i + 1))])
    assert gpu_stages.main(["--table", str(csv_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == names
    for i, line in enumerate(lines):
        scale = i + 1  # each kernel's time in us: weight 4, input 40, products 70, output 8, times scale
        total = float(line.split()[1])
        assert total == pytest.approx(122.0 * scale, rel=1e-6)
        r = 5 if i % 2 else 3
        assert f"weight<4, {r}> {4.0 * scale:.1f}" in line and f"gemm<32> {70.0 * scale:.1f}" in line
        assert f"input<4, {r}> {40.0 * scale:.1f}" in line and f"output<4, {r}> {8.0 * scale:.1f}" in line


def test_table_numbers_layers_that_do_not_match_the_suite(gpu_stages, tmp_path, capsys):
    csv_path = tmp_path / "stages.csv"
    _write_csv(csv_path, _layer(2, 3, 1000) + _layer(4, 3, 2000))
    assert gpu_stages.main(["--table", str(csv_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["layer", "0"], ["layer", "1"]]
    assert "weight<2, 3> 4.0" in lines[0] and "gemm<32> 140.0" in lines[1]


def test_table_without_kernel_records_fails(gpu_stages, tmp_path, capsys):
    csv_path = tmp_path / "stages.csv"
    csv_path.write_text("==PROF== No kernels were profiled.\n")
    assert gpu_stages.main(["--table", str(csv_path)]) == 1
    assert "no kernel records" in capsys.readouterr().out


def test_table_refuses_an_unknown_time_unit(gpu_stages, tmp_path):
    csv_path = tmp_path / "stages.csv"
    _write_csv(csv_path, [("void <unnamed>::winograd_weight_kernel<4, 3>(float *)", "cycle", "1,234")])
    with pytest.raises(ValueError, match="unknown unit 'cycle'"):
        gpu_stages.main(["--table", str(csv_path)])
