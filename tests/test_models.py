"""fastconv.models: parameter counts, shape inference, the layer-by-layer check against the reference
(CPU, and GPU through the device fixture), batch-norm folding, save / load, summaries and state dicts.
Big networks run at reduced resolution with one image; VGG is counted and shape-inferred only."""

import numpy as np
import pytest

import fastconv
from fastconv import _compare, models
from fastconv.models import _layers

PARAMS = {
    "lenet5": 61_706, "alexnet": 61_100_840, "vgg16": 138_357_544, "resnet18": 11_689_512,
    "resnet34": 21_797_672, "resnet50": 25_557_032, "googlenet": 6_624_904, "mobilenet_v1": 4_253_864,
    "mobilenet_v2": 3_504_872, "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184,
    "efficientnet_b2": 9_109_994, "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616,
    "efficientnet_b5": 30_389_784, "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
}


def _image(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_and_output_shape(name):
    model = models.MODELS[name]()
    assert model.num_parameters() == PARAMS[name]
    classes = 10 if name == "lenet5" else 1000
    assert model.output_shape() == (1, classes)  # shape inference at the standard resolution
    assert model.output_shape(batch=3) == (3, classes)


def test_keras_mobilenet_counts_trainable_separately():
    m = models.mobilenet_v1()
    assert m.num_parameters(statistics=False) == 4_231_976  # Keras: trainable
    assert m.num_parameters() - m.num_parameters(statistics=False) == 21_888  # moving mean / variance


def test_num_classes_is_configurable():
    assert models.resnet18(num_classes=10).num_parameters() == PARAMS["resnet18"] - 990 * 513
    assert models.efficientnet_b0(num_classes=7).output_shape() == (1, 7)
    assert models.lenet5(num_classes=3).output_shape((32, 32, 1), batch=2) == (2, 3)


@pytest.mark.parametrize("name, layer, shape", [
    ("vgg16", "features.28", (1, 14, 14, 512)),
    ("vgg16", "classifier.0", (1, 4096)),
    ("alexnet", "features.12", (1, 6, 6, 256)),
    ("resnet50", "layer4", (1, 7, 7, 2048)),
    ("resnet34", "layer3", (1, 14, 14, 256)),
    ("googlenet", "inception4e", (1, 14, 14, 832)),
    ("googlenet", "inception5b", (1, 7, 7, 1024)),
    ("mobilenet_v1", "conv_pw_13_bn", (1, 7, 7, 1024)),
    ("mobilenet_v2", "features.18.1", (1, 7, 7, 1280)),
    ("efficientnet_b0", "features.8.1", (1, 7, 7, 1280)),
    ("efficientnet_b7", "features.8.1", (1, 19, 19, 2560)),  # at B7's 600x600
])
def test_intermediate_shapes_at_standard_resolution(name, layer, shape):
    rows = {r.name: r.output_shape for r in models.MODELS[name]().layer_table()}
    if layer not in rows:  # a block: its last leaf
        rows = {layer: [v for k, v in rows.items() if k.startswith(layer + ".")][-1]}
    assert rows[layer] == shape


def test_lenet5_shape_chain():
    rows = models.lenet5().layer_table()
    assert [r.output_shape[1:] for r in rows] == [
        (28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (1, 1, 120), (120,), (84,), (10,)]
    assert [r.trainable_parameters for r in rows] == [156, 0, 2416, 0, 48120, 0, 10164, 850]
    assert rows[0].macs == 28 * 28 * 6 * 25


# Small inputs where the architecture allows; one image for the big ones.
CHECK_CASES = [
    ("lenet5", {}, (2, 32, 32, 1)),
    ("lenet5", dict(activation="relu", pool="max"), (2, 32, 32, 1)),
    ("resnet18", {}, (1, 64, 64, 3)),
    ("resnet50", dict(num_classes=10), (1, 32, 32, 3)),
    ("googlenet", dict(num_classes=10), (1, 32, 32, 3)),
    ("mobilenet_v1", {}, (1, 64, 64, 3)),
    ("mobilenet_v2", {}, (1, 64, 64, 3)),
    ("efficientnet_b0", {}, (1, 64, 64, 3)),
    ("alexnet", dict(lrn=True, num_classes=10), (1, 67, 67, 3)),  # 67: a 2x2 map adaptively pooled to 6x6
]


@pytest.mark.parametrize("name, kwargs, shape", CHECK_CASES, ids=[f"{c[0]}{'-' + str(len(c[1])) if c[1] else ''}"
                                                                  for c in CHECK_CASES])
def test_check_against_reference(name, kwargs, shape, device):
    model = models.MODELS[name](**kwargs).init(seed=1)
    x = _image(shape)
    report = model.check(device.put(x))
    assert report.worst_error <= report.worst_tolerance
    assert len(report.layers) == len(model.layers())
    assert report.end_to_end_error < 1e-3
    y = device.get(model(device.put(x)))
    assert y.shape == (shape[0], model.num_classes) and y.dtype == np.float32 and np.isfinite(y).all()


def test_check_raises_on_mismatch():
    model = models.lenet5().init(0)
    with pytest.raises(AssertionError, match=r"^lenet5: \d+ layer\(s\) differ from fastconv.reference: c1 "):
        model.check(rtol=1e-12)
    model["c3"].compute = lambda F, P, x: F.conv2d(
        x, model["c3"].params["weight"] * (1.001 if F is fastconv else 1.0), P["bias"], activation="tanh")
    with pytest.raises(AssertionError, match=r"c3 \(Conv2d\)"):
        model.check()


@pytest.mark.parametrize("name, shape", [("resnet18", (2, 32, 32, 3)), ("mobilenet_v1", (1, 64, 64, 3)),
                                         ("efficientnet_b0", (1, 64, 64, 3))])
def test_batch_norm_folding_equals_unfolded(name, shape, device):
    model = models.MODELS[name]().init(seed=2)
    folded = model.fold_batch_norm()
    assert any(isinstance(layer, _layers.BatchNorm) for layer in model.layers())  # the original is untouched
    assert not any(isinstance(layer, _layers.BatchNorm) for layer in folded.layers())
    x = device.put(_image(shape))
    want, got = device.get(model(x)), device.get(folded(x))
    _compare.assert_close(got, want, terms=10_000, what=f"{name} folded vs unfolded")
    assert folded.num_parameters(statistics=False) < model.num_parameters(statistics=False)


def test_folded_model_checks_and_has_no_state_dict():
    folded = models.mobilenet_v2().init(3).fold_batch_norm()
    folded.check(_image((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="folded"):
        folded.state_dict()


def test_init_is_reproducible():
    a, b, c = (models.efficientnet_b0().init(s) for s in (5, 5, 6))
    for key, value in a.state().items():
        np.testing.assert_array_equal(value, b.state()[key])
    assert any(not np.array_equal(v, c.state()[k]) for k, v in a.state().items())
    w = a["features.1.0.block.0.0"].params["weight"]  # depthwise 3x3: He-normal std sqrt(2 / 9)
    assert w.dtype == np.float32 and w.flags.c_contiguous


def test_weights_are_prepared_once():
    """Pointwise layers read their own arrays; spatial convolutions a PackedWeights over them, whose
    packed forms the first call makes and the later ones reuse, until set_params."""
    model = models.lenet5().init(0)
    before = {k: id(v) for k, v in model["c3"].params.items()}
    cpu = model["c3"].device_params("cpu")
    assert model["c3"].device_params("cpu") is cpu
    assert isinstance(cpu["weight"], fastconv.PackedWeights) and cpu["weight"].weights is model["c3"].params["weight"]
    assert model["c3"].device_params("host") is model["c3"].params
    x = _image((1, 32, 32, 1))
    want = model(x)
    forms = {k: id(v) for k, v in cpu["weight"].forms.items()}
    assert forms  # LeNet C3 (6 -> 16, 5x5) runs the direct kernel, from its packed form
    np.testing.assert_array_equal(model(x), want)
    assert {k: id(v) for k, v in cpu["weight"].forms.items()} == forms
    assert {k: id(v) for k, v in model["c3"].params.items()} == before
    model["c3"].set_params(weight=model["c3"].params["weight"] * 2.0)
    assert model["c3"].device_params("cpu") is not cpu
    assert not np.array_equal(model(x), want)
    pointwise = models.resnet50(num_classes=10)["layer1.0.conv1"]
    assert pointwise.device_params("cpu") is pointwise.params


def test_save_load_round_trip(tmp_path):
    model = models.resnet18(num_classes=10).init(seed=7)
    path = tmp_path / "resnet18.npz"
    model.save(path)
    other = models.resnet18(num_classes=10).init(seed=8).load(path)
    x = _image((1, 32, 32, 3))
    np.testing.assert_array_equal(other(x), model(x))
    with pytest.raises(ValueError, match=r"^resnet34: weights do not match the model: missing"):
        models.resnet34(num_classes=10).load(path)


@pytest.mark.parametrize("name", ["lenet5", "resnet50", "googlenet", "mobilenet_v1", "efficientnet_b0"])
def test_summary_totals_are_the_sums_of_the_rows(name):
    model = models.MODELS[name]()
    rows = model.layer_table()
    key = "parameters_with_statistics" if model.count_statistics else "trainable_parameters"
    assert sum(getattr(r, key) for r in rows) == model.num_parameters()
    assert sum(r.macs for r in rows) == model.macs()
    text = model.summary()
    assert f"Total parameters: {model.num_parameters():,}" in text
    assert f"Total multiplies: {model.macs():,}" in text
    assert len(text.splitlines()) == len(rows) + 6 + (1 if model.count_statistics else 0)


def test_macs_of_known_networks():
    assert models.resnet50().macs() == pytest.approx(4.09e9, rel=0.01)
    assert models.vgg16().macs() == pytest.approx(15.47e9, rel=0.01)
    assert models.mobilenet_v2().macs() == pytest.approx(300e6, rel=0.01)
    assert models.lenet5().macs() == 416_520


# ---------------------------------------------------------------------------------------------
# PyTorch-style state dicts

TORCHVISION = ["alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet", "mobilenet_v2",
               "efficientnet_b0"]

EXPECTED_KEYS = {  # torchvision's names and PyTorch's shapes for a few entries of each
    "resnet18": {"layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.running_var": (512,),
                 "fc.weight": (10, 512)},
    "googlenet": {"inception4a.branch3.1.conv.weight": (48, 16, 3, 3), "inception5b.branch4.1.bn.bias": (128,)},
    "mobilenet_v2": {"features.1.conv.0.0.weight": (32, 1, 3, 3), "features.2.conv.3.weight": (24,),
                     "features.18.0.weight": (1280, 320, 1, 1), "classifier.1.weight": (10, 1280)},
    "efficientnet_b0": {"features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
                        "features.2.0.block.1.0.weight": (96, 1, 3, 3),
                        "features.7.0.block.3.1.running_mean": (320,), "features.8.0.weight": (1280, 320, 1, 1)},
}


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "mobilenet_v2", "efficientnet_b0"])
def test_state_dict_round_trip_without_torchvision(name):
    model = models.MODELS[name](num_classes=10).init(seed=4)
    sd = model.state_dict()
    for key, shape in EXPECTED_KEYS.get(name, {}).items():
        assert sd[key].shape == shape, key
    other = models.MODELS[name](num_classes=10).load_state_dict(sd)
    for key, value in model.state().items():
        np.testing.assert_array_equal(other.state()[key], value, err_msg=key)
    with pytest.raises(KeyError, match="state dict has no"):
        models.MODELS[name](num_classes=10).load_state_dict({k: v for k, v in list(sd.items())[1:]})
    with pytest.raises(KeyError, match="not used by the model"):
        models.MODELS[name](num_classes=10).load_state_dict({**sd, "extra.weight": np.zeros(1)})


def test_flattened_dense_state_dict_round_trip():
    """AlexNet / VGG's first Linear reads PyTorch's (C, H, W) flattening; NHWC flattens (H, W, C)."""
    dense = _layers.Dense("classifier.1", 2 * 3 * 4, 5, torch_chw=(4, 2, 3))
    dense.init(np.random.default_rng(0))
    w = dense.to_torch()["classifier.1.weight"]
    assert w.shape == (5, 24)
    # PyTorch's column c * 6 + h * 3 + w is NHWC's row (h * 3 + w) * 4 + c.
    np.testing.assert_array_equal(w[:, 3 * 6 + 1 * 3 + 2], dense.params["weight"][(1 * 3 + 2) * 4 + 3])
    other = _layers.Dense("classifier.1", 24, 5, torch_chw=(4, 2, 3))
    other.from_torch(dense.to_torch().__getitem__)
    np.testing.assert_array_equal(other.params["weight"], dense.params["weight"])


def test_state_dict_conversions_match_pytorch_layers():
    """Conv2d (OIHW), depthwise, 1x1-conv SE and a Linear after PyTorch's (C, H, W) flatten, against torch.nn."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 5, 4)).astype(np.float32)
    t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())

    def to_nhwc(y):
        return y.detach().numpy().transpose(0, 2, 3, 1)

    cases = [
        (torch.nn.Conv2d(4, 7, 3, stride=2, padding=1), _layers.Conv2d("m", 4, 7, 3, 2, 1)),
        (torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False), _layers.DepthwiseConv2d("m", 4, 3, 1, 1)),
    ]
    for tm, layer in cases:
        layer.from_torch({f"m.{k}": v.detach().numpy() for k, v in tm.state_dict().items()}.__getitem__)
        got = layer.compute(fastconv, layer.params, x)
        np.testing.assert_allclose(got, to_nhwc(tm(t)), rtol=1e-4, atol=1e-5)
    lin = torch.nn.Linear(4 * 6 * 5, 3)
    dense = _layers.Dense("m", 120, 3, torch_chw=(4, 6, 5))
    dense.from_torch({f"m.{k}": v.detach().numpy() for k, v in lin.state_dict().items()}.__getitem__)
    np.testing.assert_allclose(fastconv.dense(fastconv.flatten(x), dense.params["weight"], dense.params["bias"]),
                               lin(torch.flatten(t, 1)).detach().numpy(), rtol=1e-4, atol=1e-5)
    conv1x1 = torch.nn.Conv2d(4, 3, 1)
    se = _layers.Dense("m", 4, 3, torch_conv=True)
    se.from_torch({f"m.{k}": v.detach().numpy() for k, v in conv1x1.state_dict().items()}.__getitem__)
    pooled = x.mean(axis=(1, 2))
    np.testing.assert_allclose(fastconv.dense(pooled, se.params["weight"], se.params["bias"]),
                               conv1x1(t.mean(dim=(2, 3), keepdim=True))[:, :, 0, 0].detach().numpy(), rtol=1e-4,
                               atol=1e-5)
    assert set(dense.to_torch()) == {"m.weight", "m.bias"}
    np.testing.assert_array_equal(dense.to_torch()["m.weight"], lin.weight.detach().numpy())


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("googlenet", 64), ("mobilenet_v2", 64),
                                        ("efficientnet_b0", 64), ("alexnet", 64)])
def test_matches_torchvision(name, size):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    tv = pytest.importorskip("torchvision", reason="torchvision is not installed (or not usable with this torch)")
    import torch

    torch.manual_seed(0)
    kwargs = dict(aux_logits=False, init_weights=True) if name == "googlenet" else {}
    net = getattr(tv.models, name)(weights=None, num_classes=10, **kwargs).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    model = models.MODELS[name](num_classes=10).load_state_dict(net.state_dict())
    x = _image((2, size, size, 3))
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    _compare.assert_close(model(x), want.astype(np.float64), terms=100_000, what=name)
    _compare.assert_close(model.fold_batch_norm()(x), want.astype(np.float64), terms=100_000, what=name)


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"^lenet5: pool must be 'avg' or 'max'"):
        models.lenet5(pool="min")
    with pytest.raises(ValueError, match=r"^efficientnet: variant must be one of"):
        models.efficientnet("b9")
    with pytest.raises(KeyError, match="no layer named"):
        models.lenet5()["nope"]
