"""The layers whole networks need (batch norm, add, concat, softmax, adaptive pooling, LRN, channel
scaling, flatten, activation) against the NumPy reference, the reference against its definition
(and against PyTorch when installed), and the argument errors."""

import numpy as np
import pytest

import fastconv
from fastconv import reference

from conftest import Device
from helpers import check_against_reference, num_threads, random_array


def test_batch_norm(device, rng):
    c = 13
    x = random_array(rng, (2, 5, 6, c))
    mean, gamma, beta = random_array(rng, (c,)), random_array(rng, (c,)), random_array(rng, (c,))
    var = rng.uniform(0.1, 2.0, c).astype(np.float32)
    for act in (None, "relu", "silu"):
        check_against_reference(device, "batch_norm", [x, mean, var, gamma, beta], dict(eps=1e-3, activation=act), terms=4)
    check_against_reference(device, "batch_norm", [x, mean, var], dict(eps=1e-5), terms=4)
    want = (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + 1e-3) * gamma + beta
    np.testing.assert_allclose(reference.batch_norm(x, mean, var, gamma, beta, eps=1e-3), want, rtol=1e-5, atol=1e-5)


def test_add_concat_scale_flatten_activate(device, rng):
    a, b = random_array(rng, (2, 4, 3, 5)), random_array(rng, (2, 4, 3, 5))
    check_against_reference(device, "add", [a, b])
    check_against_reference(device, "add", [a, b], dict(activation="relu"))
    s = random_array(rng, (2, 5))
    check_against_reference(device, "scale_channels", [a, s])
    check_against_reference(device, "flatten", [a])
    for act in ("relu", "relu6", "sigmoid", "tanh", "silu"):
        check_against_reference(device, "activate", [a * 4], dict(activation=act), terms=4)
    xs = [random_array(rng, (2, 4, 3, c)) for c in (1, 7, 2)]
    got = device.get(fastconv.concat([device.put(x) for x in xs]))
    np.testing.assert_array_equal(got, np.concatenate(xs, axis=-1))
    np.testing.assert_array_equal(reference.concat(xs), got)


# The CPU kernel of add and activate (elementwise.cpp): runs cut into chunks of 4096 floats that the
# threads share, vectors and a partial last vector per chunk, every activation on every ISA; the
# inputs stay untouched and NaN passes through.
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 9), (3, 5, 17), (4095,), (1, 4096), (2, 3, 4097), (3, 4096 * 5 + 11),
                                   (2, 56, 56, 32)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid", "tanh", "silu"])
def test_add_activate_kernel(threads, shape, activation, isa, rng):
    a, b = random_array(rng, shape, 4.0), random_array(rng, shape, 4.0)
    a0, b0 = a.copy(), b.copy()
    with num_threads(threads):
        check_against_reference(Device("cpu"), "add", [a, b], dict(activation=activation), terms=4)
        if activation is not None:
            check_against_reference(Device("cpu"), "activate", [a], dict(activation=activation), terms=4)
        np.testing.assert_array_equal(a, a0)
        np.testing.assert_array_equal(b, b0)
        middle = a.size // 2
        a.flat[middle] = np.nan
        assert np.isnan(fastconv.add(a, b, activation=activation).flat[middle])
        if activation is not None:
            assert np.isnan(fastconv.activate(a, activation).flat[middle])


# The CPU kernel of batch_norm (elementwise.cpp, channel_affine): channel counts around the vector,
# row blocks of about 4096 floats shared by the threads, every activation and ISA.
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (2, 7, 9, 16), (3, 5, 5, 33), (2, 56, 56, 24), (4, 7, 7, 1152)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid", "tanh", "silu"])
def test_batch_norm_kernel(threads, shape, activation, isa, rng):
    c = shape[-1]
    x, mean, gamma, beta = random_array(rng, shape, 3.0), random_array(rng, (c,)), random_array(rng, (c,)), random_array(rng, (c,))
    var = rng.uniform(0.1, 2.0, c).astype(np.float32)
    with num_threads(threads):
        check_against_reference(Device("cpu"), "batch_norm", [x, mean, var, gamma, beta],
                                dict(eps=1e-3, activation=activation), terms=4)


# The CPU kernel of scale_channels (elementwise.cpp): channel counts around the vector (a partial
# last vector per pixel), pixel blocks of about 4096 floats shared by the threads, every ISA.
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 7), (3, 4, 4, 16), (1, 9, 11, 33), (2, 56, 56, 24),
                                   (4, 7, 7, 1152), (1, 64, 65, 3)])
def test_scale_channels_kernel(threads, shape, isa, rng):
    x, s = random_array(rng, shape, 3.0), random_array(rng, (shape[0], shape[3]))
    with num_threads(threads):
        got = check_against_reference(Device("cpu"), "scale_channels", [x, s])
    np.testing.assert_array_equal(got, x * s[:, None, None, :])  # one float32 product each


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax(device, rng, axis):
    x = random_array(rng, (3, 17), 10.0)
    got = check_against_reference(device, "softmax", [x], dict(axis=axis), terms=17)
    np.testing.assert_allclose(got.sum(axis=axis), 1.0, rtol=1e-5)
    big = np.array([[1000.0, 0.0, -1000.0]], dtype=np.float32)  # stable: no overflow
    np.testing.assert_allclose(device.get(fastconv.softmax(device.put(big))), [[1, 0, 0]], atol=1e-7)


@pytest.mark.parametrize("shape, out", [((2, 7, 9, 3), 3), ((1, 6, 6, 2), (6, 6)), ((1, 12, 8, 2), (3, 4)),
                                        ((1, 1, 1, 4), 6), ((2, 13, 5, 3), (4, 7))])
def test_adaptive_avg_pool(device, rng, shape, out):
    x = random_array(rng, shape)
    got = check_against_reference(device, "adaptive_avg_pool2d", [x], dict(output_size=out), terms=4)
    # Against the definition: a window holding the whole input gives the mean.
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(reference.adaptive_avg_pool2d(x64, 1)[:, 0, 0], x64.mean(axis=(1, 2)), rtol=1e-12, atol=1e-12)
    assert got.shape[1:3] == ((out, out) if isinstance(out, int) else out)


@pytest.mark.parametrize("size", [1, 2, 5])
def test_local_response_norm(device, rng, size):
    x = random_array(rng, (2, 3, 4, 11), 5.0)
    check_against_reference(device, "local_response_norm", [x], dict(size=size, alpha=1e-2, beta=0.75, k=2.0), terms=8)


def test_reference_layers_match_pytorch(rng):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    F = torch.nn.functional
    x = rng.standard_normal((2, 7, 9, 12)) * 3

    def nchw(a):
        return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))

    def nhwc(t):
        return t.numpy().transpose(0, 2, 3, 1)

    for size in (1, 2, 4, 5):
        want = nhwc(F.local_response_norm(nchw(x), size, alpha=1e-2, beta=0.75, k=2.0))
        np.testing.assert_allclose(reference.local_response_norm(x, size, 1e-2, 0.75, 2.0), want, rtol=1e-10)
    for out in ((3, 4), (6, 6), (2, 9), (5, 2)):
        want = nhwc(F.adaptive_avg_pool2d(nchw(x), out))
        np.testing.assert_allclose(reference.adaptive_avg_pool2d(x, out), want, rtol=1e-10)
    mean, var, g, b = (rng.standard_normal(12), rng.uniform(0.5, 2, 12), rng.standard_normal(12), rng.standard_normal(12))
    want = nhwc(F.batch_norm(nchw(x), *(torch.from_numpy(a) for a in (mean, var, g, b)), eps=1e-3))
    np.testing.assert_allclose(reference.batch_norm(x, mean, var, g, b, eps=1e-3), want, rtol=1e-10)
    np.testing.assert_allclose(reference.softmax(x, axis=-1), F.softmax(torch.from_numpy(x), -1).numpy(), rtol=1e-10)


@pytest.mark.parametrize("impl", [fastconv, reference], ids=["ops", "reference"])
def test_layer_argument_errors(impl):
    x = np.zeros((2, 4, 4, 3), np.float32)
    c3 = np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"^batch_norm: var must have shape \(3,\)"):
        impl.batch_norm(x, c3, np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"^batch_norm: eps must be >= 0"):
        impl.batch_norm(x, c3, c3, eps=-1.0)
    with pytest.raises(ValueError, match=r"^add: a and b must have the same shape"):
        impl.add(x, x[:, :2])
    with pytest.raises(ValueError, match=r"^add: unknown activation 'gelu'"):
        impl.add(x, x, activation="gelu")
    with pytest.raises(ValueError, match=r"^concat: xs\[1\] has shape"):
        impl.concat([x, x[:, :3]])
    with pytest.raises(ValueError, match=r"^concat: xs must be a non-empty"):
        impl.concat([])
    with pytest.raises(ValueError, match=r"^softmax: axis 4 is out of range"):
        impl.softmax(x, axis=4)
    with pytest.raises(ValueError, match=r"^adaptive_avg_pool2d: output_size must be >= 1"):
        impl.adaptive_avg_pool2d(x, 0)
    with pytest.raises(ValueError, match=r"^adaptive_avg_pool2d: x must be 4-D"):
        impl.adaptive_avg_pool2d(x[0], 2)
    with pytest.raises(ValueError, match=r"^local_response_norm: size must be >= 1"):
        impl.local_response_norm(x, size=0)
    with pytest.raises(ValueError, match=r"^scale_channels: s must have shape \(N, C\) = \(2, 3\)"):
        impl.scale_channels(x, np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"^softmax: x must be a real floating-point array"):
        impl.softmax(np.zeros(3, np.int32))
    if impl is fastconv:  # reference.activate is the fused-activation helper: None passes through there
        with pytest.raises(ValueError, match=r"^activate: activation must be one of"):
            impl.activate(x, None)
