"""`fastconv bench` on the tiny suite with NumPy as the only peer: structure and sanity of the JSON.

Speed is never asserted (CI machines are noisy); what is checked is that every figure is there and
plausible, that answers are verified before they are timed, that a wrong answer is reported as an
error rather than a speed, and that the machine's ceilings are measured and cached.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv.bench import peers, suites

# Where the fastconv under test lives (the source tree or site-packages): the subprocesses import the same.
SRC = str(Path(fastconv.__file__).resolve().parents[1])

BROKEN_PEER = textwrap.dedent(
    """
    from fastconv.bench.peers import Fastconv

    class Broken(Fastconv):
        '''fastconv with its answer scaled: must show up as an error, never as a time.'''
        name = "broken"

        def prepare(self, case, arrays):
            run, fetch = super().prepare(case, arrays)
            return run, lambda y: fetch(y) * 1.5 + 1.0
    """
)


def _bench(tmp: Path, *args) -> tuple[subprocess.CompletedProcess, dict]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, str(tmp), env.get("PYTHONPATH")) if p)
    out = tmp / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--suite", "tiny", "--device", "cpu", "--min-time", "0.01",
         "--threads", "2", "--json", str(out), *args],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    (tmp / "broken_peer.py").write_text(BROKEN_PEER)
    return tmp, _bench(tmp, "--peers", "numpy,broken_peer:Broken,no_such_module:Adapter")


def test_json_structure_and_sanity(tiny_run):
    _, (proc, result) = tiny_run
    assert result["schema"] == "fastconv-bench/1"
    assert result["machine"]["isa"] and result["machine"]["cores"] >= 1
    _, cases = suites.load_suite("tiny")
    cpu = result["devices"]["cpu"]
    assert [c["name"] for c in cpu["cases"]] == [c.name for c in cases]
    for spec, entry in zip(cases, cpu["cases"]):
        flops, nbytes = suites.cost(spec)
        assert entry["flops"] == flops > 0 and entry["bytes"] == nbytes > 0
        assert entry["floor_s"] > 0 and entry["bound"] in ("compute", "memory")
        ours = entry["ours"]
        assert ours["status"] == "ok" and ours["verified"] is True, ours
        assert 0 < ours["min_s"] <= ours["median_s"] <= ours["max_s"]
        assert ours["samples"] >= 1 and ours["gflops"] > 0 and ours["gbs"] > 0 and ours["pct_roofline"] > 0
        numpy_cell = entry["peers"]["numpy"]
        assert numpy_cell["status"] == "ok" and numpy_cell["verified"] is True
        assert numpy_cell["median_s"] > 0 and numpy_cell["ratio"] > 0
        assert len(numpy_cell["ratio_rounds"]) >= 1
    assert set(cpu["summary"]) == {c.family for c in cases}
    assert "tiny_conv" in proc.stdout and "best peer" in proc.stdout


def test_ceilings_present_and_cached(tiny_run):
    tmp, (_, result) = tiny_run
    ceiling = result["ceilings"]["cpu"]
    for key in ("fma_gflops", "fma_gflops_1t", "triad_gbs", "triad_gbs_1t"):
        assert ceiling[key] > 0, key
    assert ceiling["fingerprint"]["isa"] == result["machine"]["isa"]
    cache = Path(ceiling["cache"])
    assert cache.is_file() and str(cache).startswith(str(tmp / "cache" / "fastconv"))
    assert json.loads(cache.read_text())["figures"]["fma_gflops"] == ceiling["fma_gflops"]


def test_wrong_answer_is_an_error_not_a_speed(tiny_run):
    _, (proc, result) = tiny_run
    for entry in result["devices"]["cpu"]["cases"]:
        cell = entry["peers"]["broken_peer:Broken"]
        assert cell["status"] == "error" and "wrong answer" in cell["error"], cell
        assert "median_s" not in cell and "ratio" not in cell
        assert entry.get("best_peer") != "broken_peer:Broken"
    assert "ERROR" in proc.stdout


def test_missing_peer_is_na_with_a_hint(tiny_run):
    _, (proc, result) = tiny_run
    lib = result["devices"]["cpu"]["libraries"]["no_such_module:Adapter"]
    assert lib["status"] == "n/a" and "no_such_module" in lib["hint"]
    assert "n/a" in proc.stdout


def test_cost_model_is_2x_macs_and_each_array_once():
    case = suites.case_from_dict(
        {"name": "c", "op": "conv2d", "x": [2, 9, 9, 5], "kernel": [3, 3], "c_out": 7, "padding": "same"}
    )
    flops, nbytes = suites.cost(case)
    assert flops == 2 * 2 * 9 * 9 * 7 * 3 * 3 * 5
    assert nbytes == 4 * (2 * 9 * 9 * 5 + 3 * 3 * 5 * 7 + 7 + 2 * 9 * 9 * 7)


def test_grouped_case_weights_cost_and_numpy_peer(rng):
    spec = {"name": "g", "op": "conv2d", "x": [2, 9, 10, 12], "kernel": [3, 3], "c_out": 18, "groups": 3,
            "stride": 2, "padding": "same"}
    case = suites.case_from_dict(spec)
    assert case.weight_shape == (3, 3, 4, 18) and case.describe().endswith("g3")
    assert suites.cost(case)[0] == 2 * 2 * 5 * 5 * 18 * 3 * 3 * 4
    arrays = case.inputs(int(rng.integers(1 << 30)))
    run, fetch = peers.NumpyIm2col().prepare(case, arrays)
    want = fastconv.reference.conv2d(*(arrays[k].astype(np.float64) for k in "xwb"), **case.kwargs())
    np.testing.assert_allclose(fetch(run()), want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="groups applies to conv2d only"):
        suites.case_from_dict(dict(spec, op="depthwise_conv2d", groups=2))


@pytest.mark.parametrize("op, extra", [("conv2d", {"c_out": 6, "groups": 2}), ("depthwise_conv2d", {})])
def test_dilated_case_runs_dilated_in_every_cpu_peer(rng, op, extra):
    spec = {"name": "d", "op": op, "x": [2, 13, 11, 4], "kernel": [3, 3], "dilation": [3, 2], "stride": [1, 2],
            "padding": "same", **extra}
    case = suites.case_from_dict(spec)
    assert " d3x2" in case.describe()
    arrays = case.inputs(int(rng.integers(1 << 30)))
    ref_op = getattr(fastconv.reference, op)
    want = ref_op(*(arrays[k].astype(np.float64) for k in "xwb"), **case.kwargs())
    undilated = ref_op(*(arrays[k].astype(np.float64) for k in "xwb"), **dict(case.kwargs(), dilation=1))
    assert not np.allclose(want, undilated, atol=1e-3)
    for adapter in (peers.NumpyIm2col(), peers.TorchNhwc(), peers.OrtNchw(), peers.Fastconv()):
        if adapter.missing():
            continue
        adapter.setup(2)
        run, fetch = adapter.prepare(case, arrays)
        np.testing.assert_allclose(fetch(run()), want, rtol=1e-4, atol=1e-4, err_msg=adapter.name)
    with pytest.raises(ValueError, match="dilation applies to conv2d and depthwise_conv2d only"):
        suites.case_from_dict(dict(spec, op="max_pool2d", groups=1))


@pytest.mark.parametrize("name", suites.BUILTIN_SUITES)
def test_builtin_suites_load_with_identical_inputs_per_seed(name):
    _, cases = suites.load_suite(name)
    assert cases
    for case in cases[:3]:
        a, b = case.inputs(7), case.inputs(7)
        # Random data, not zeros (a rare exact 0.0 among millions of normal draws is fine).
        assert np.array_equal(a["x"], b["x"]) and np.count_nonzero(a["x"]) > 0.999 * a["x"].size


def test_full_suite_has_the_issue_cases():
    _, cases = suites.load_suite("full")
    names = {c.name for c in cases}
    for required in ("lenet_c1", "alexnet_c1", "vgg_c1_2", "resnet_3x3_s2", "mbv2_dw_112", "maxpool_2s2",
                     "avgpool_global", "lenet_avgpool", "dense_4096_1000"):
        assert required in names
    assert any(c.op == "depthwise_conv2d" and c.kernel == (5, 5) and c.activation == "silu" for c in cases)
