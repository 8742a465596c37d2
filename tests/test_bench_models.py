"""`fastconv bench --models`: the PyTorch translation of a fastconv model (peers.torch_forward) computes
what the model computes, and the --models JSON has every figure (LeNet-5 only, to stay fast).

Speed is never asserted; the translation is checked on small inputs, with batch norm kept (BatchNorm
in eval mode) and folded (as the bench runs it), in both PyTorch memory formats.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import models
from fastconv._compare import max_relative_error
from fastconv.bench import suites

# Where the fastconv under test lives (the source tree or site-packages): the subprocesses import the same.
SRC = str(Path(fastconv.__file__).resolve().parents[1])

try:
    import torch
except ImportError:  # the translation needs PyTorch; the JSON test runs without it (peer n/a)
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (pip install torch)")


def _torch_vs_ours(model, x, channels_last=True):
    from fastconv.bench.peers import torch_forward

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        y = torch_forward(model, channels_last)(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt))
    ours = np.asarray(model(x))
    got = y.numpy()
    assert got.shape == ours.shape
    return max_relative_error(got, ours)[0]


@needs_torch
@pytest.mark.parametrize("name, resolution", [("lenet5", None), ("mobilenet_v2", 32), ("efficientnet_b0", 32),
                                              ("resnet18", 32)])
@pytest.mark.parametrize("fold", [False, True], ids=["bn", "folded"])
def test_translated_model_matches_ours(name, resolution, fold):
    model = models.MODELS[name]().init(3)
    if fold:
        model = model.fold_batch_norm()
    h, w, c = model.input_shape
    if resolution:
        h = w = resolution
    x = np.random.default_rng(1).standard_normal((2, h, w, c)).astype(np.float32)
    for channels_last in (True, False):
        assert _torch_vs_ours(model, x, channels_last) < 1e-4


@needs_torch
def test_translation_of_a_wrong_weight_is_caught():
    """The worker's MODEL_RTOL separates a layout slip from rounding: transposing one kernel fails it."""
    from fastconv.bench.worker import MODEL_RTOL

    model = models.mobilenet_v2().init(0).fold_batch_norm()
    x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
    assert _torch_vs_ours(model, x) <= MODEL_RTOL
    conv = model["features.0.0"]
    conv.set_params(weight=conv.params["weight"].transpose(1, 0, 2, 3))  # swap KH and KW in ours only
    from fastconv.bench.peers import torch_forward

    broken = np.asarray(model(x))
    conv.set_params(weight=conv.params["weight"].transpose(1, 0, 2, 3))
    with torch.no_grad():
        y = torch_forward(model)(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last))
    assert max_relative_error(y.numpy(), broken)[0] > MODEL_RTOL


def test_model_cases():
    cases = suites.model_cases(None)
    assert [(c.model, c.batch) for c in cases] == [(m, b) for m in suites.DEFAULT_MODELS for b in (1, 8)]
    assert cases[0].input_shape() == (1, 224, 224, 3) and cases[1].input_shape() == (8, 224, 224, 3)
    small = suites.model_cases(["mobilenet_v2@32"], batches=(2,))[0]
    assert small.name == "mobilenet_v2@32/b2" and small.input_shape() == (2, 32, 32, 3)
    assert suites.model_case_from_dict(small.spec) == small
    a, b = small.inputs(0)["x"], suites.model_cases(["mobilenet_v2@32"], batches=(1,))[0].inputs(0)["x"]
    assert a.dtype == np.float32 and np.array_equal(a[:1], b)  # the same images whatever the batch
    with pytest.raises(ValueError, match="unknown model"):
        suites.model_cases(["no_such_net"])


def test_models_json_structure(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH")) if p)
    out = tmp_path / "models.json"
    proc = subprocess.run(
        [sys.executable, "-m", "fastconv", "bench", "--models", "--model-list", "lenet5", "--min-time", "0.01",
         "--threads", "2", "--json", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["suite"] == "models" and result["devices"] == {}
    part = result["models"]
    assert part["threads"] == 2 and part["libraries"]["fastconv"]["status"] == "ok"
    assert [(c["model"], c["batch"]) for c in part["cases"]] == [("lenet5", 1), ("lenet5", 8)]
    torch_ok = part["libraries"].get("torch_nhwc", {}).get("status") == "ok"
    for entry in part["cases"]:
        assert entry["shape"] == f"{entry['batch']}x32x32x1" and entry["macs"] > 0
        ours = entry["ours"]
        assert ours["status"] == "ok" and ours["verified"] is True, ours
        assert 0 < ours["min_s"] <= ours["median_s"] <= ours["max_s"] and ours["samples"] >= 4
        assert ours["images_per_s"] > 0 and ours["spread"] >= 0 and "end to end" in ours["check"]
        peer = entry["peers"].get("torch_nhwc")
        if torch_ok:
            assert peer["status"] == "ok" and peer["verified"] is True, peer
            assert peer["error_rel"] <= 1e-4 and peer["median_s"] > 0 and peer["ratio"] > 0
            assert len(peer["ratio_rounds"]) == 4
        else:  # not installed: no cell, a hint in the notes
            assert peer is None and "torch_nhwc: n/a" in proc.stdout
    assert "lenet5" in proc.stdout and "fastconv" in proc.stdout and "GMACs" in proc.stdout
