"""Output sizes, padding forms and the errors every op raises on bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastconv
from fastconv import conv_output_size

F32 = np.float32


@given(n=st.integers(1, 300), f=st.integers(1, 12), p=st.integers(0, 6), s=st.integers(1, 5))
def test_conv_output_size_is_the_lecture_formula(n, f, p, s):
    if n + 2 * p < f:
        with pytest.raises(ValueError, match="larger than the padded input"):
            conv_output_size(n, f, p, s)
    else:
        assert conv_output_size(n, f, p, s) == (n + 2 * p - f) // s + 1


def test_conv_output_size_examples():
    assert conv_output_size(7, 3, 0, 2) == 3
    assert conv_output_size(6, 3) == 4
    assert conv_output_size(224, 3, "same", 2) == 112
    assert conv_output_size(225, 3, "same", 2) == 113
    assert conv_output_size(32, 5, "valid") == 28
    assert conv_output_size(10, 3, (1, 0)) == 9
    assert conv_output_size(10, 3, 0, 1, dilation=2) == 6


@given(n=st.integers(1, 100), f=st.integers(1, 9), s=st.integers(1, 4), d=st.integers(1, 3))
def test_same_gives_ceil_of_input_over_stride(n, f, s, d):
    assert conv_output_size(n, f, "same", s, d) == -(-n // s)


def test_same_puts_the_odd_pad_bottom_right():
    x = np.zeros((1, 4, 4, 1), F32)
    x[0, 3, 3, 0] = 1.0  # bottom-right pixel
    w = np.ones((2, 2, 1, 1), F32)
    # Input 4, kernel 2, stride 1: total pad 1, all of it after. Output (3,3) sees x[3,3] only
    # through the padded bottom-right window.
    y = fastconv.conv2d(x, w, padding="same")
    assert y.shape == (1, 4, 4, 1)
    assert y[0, 3, 3, 0] == 1.0 and y[0, 2, 2, 0] == 1.0 and y[0, 0, 0, 0] == 0.0


def _conv(**kw):
    args = dict(x=np.zeros((1, 8, 8, 4), F32), w=np.zeros((3, 3, 4, 6), F32))
    args.update(kw)
    return fastconv.conv2d(args.pop("x"), args.pop("w"), **args)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(x=np.zeros((8, 8, 4), F32)), ValueError, "x must be 4-D"),
        (dict(w=np.zeros((3, 3, 6), F32)), ValueError, "w must be 4-D"),
        (dict(w=np.zeros((3, 3, 5, 6), F32)), ValueError, "w must have shape"),
        (dict(groups=3), ValueError, "groups=3 does not divide the input channels"),
        (dict(groups=4, w=np.zeros((3, 3, 1, 6), F32)), ValueError, "groups=4 does not divide the output channels"),
        (dict(groups=0), ValueError, "groups must be >= 1"),
        (dict(groups=1.5), TypeError, "groups must be an int"),
        (dict(b=np.zeros(5, F32)), ValueError, "b must have shape"),
        (dict(stride=0), ValueError, "stride must be >= 1"),
        (dict(stride=(1, -1)), ValueError, "stride must be >= 1"),
        (dict(stride="2"), TypeError, "stride must be an int"),
        (dict(dilation=0), ValueError, "dilation must be >= 1"),
        (dict(padding=-1), ValueError, "padding must be >= 0"),
        (dict(padding=((1, -1), (0, 0))), ValueError, "padding must be >= 0"),
        (dict(padding="full"), ValueError, "unknown padding"),
        (dict(padding=(1, 2, 3)), TypeError, "padding must be"),
        (dict(padding=1.0), TypeError, "padding must be"),
        (dict(activation="gelu"), ValueError, "unknown activation"),
        (dict(w=np.zeros((9, 9, 4, 6), F32)), ValueError, "larger than the padded input"),
        (dict(dilation=4), ValueError, "larger than the padded input"),
        (dict(x=np.zeros((0, 8, 8, 4), F32)), ValueError, "x has a zero-size dimension"),
        (dict(w=np.zeros((3, 3, 4, 0), F32)), ValueError, "w has a zero-size dimension"),
        (dict(x=np.zeros((1, 8, 8, 4), np.int32)), TypeError, "x must be a real floating-point array"),
        (dict(w=np.zeros((3, 3, 4, 6), bool)), TypeError, "w must be a real floating-point array"),
        (dict(b=np.zeros(6, np.complex64)), TypeError, "b must be a real floating-point array"),
        (dict(x=np.array([[["a"]]], object)), TypeError, "x must be a real floating-point array"),
    ],
)
def test_conv2d_errors_name_the_argument(kwargs, exc, words):
    with pytest.raises(exc, match=words) as info:
        _conv(**kwargs)
    assert str(info.value).startswith("conv2d: ")


@pytest.mark.parametrize(
    "valid, invalid",
    [
        (dict(stride=1), dict(stride=1.0)),
        (dict(stride=1), dict(stride=True)),
        (dict(stride=(1, 1)), dict(stride=(1.0, 1))),
        (dict(dilation=(1, 1)), dict(dilation=(True, 1))),
        (dict(padding=1), dict(padding=1.0)),
        (dict(padding=((1, 1), (0, 0))), dict(padding=((1.0, 1), (0, 0)))),
        (dict(groups=1), dict(groups=1.0)),
    ],
)
def test_problem_cache_does_not_admit_equal_values_of_other_types(valid, invalid):
    """Problems are memoised, and 1 == 1.0 == True: a valid call first must not let the look-alike through."""
    _conv(**valid)
    with pytest.raises(TypeError, match="must be"):
        _conv(**invalid)


def test_pool_problem_cache_does_not_admit_a_float_size():
    x = np.zeros((1, 6, 6, 2), F32)
    fastconv.max_pool2d(x, (2, 2))
    with pytest.raises(TypeError, match="size must be an int"):
        fastconv.max_pool2d(x, (2.0, 2))


@pytest.mark.parametrize(
    "call, exc, words",
    [
        (lambda: fastconv.depthwise_conv2d(np.zeros((1, 5, 5, 3), F32), np.zeros((3, 3, 4), F32)), ValueError, "depthwise_conv2d: w must have C=3"),
        (lambda: fastconv.depthwise_conv2d(np.zeros((1, 5, 5, 3), F32), np.zeros((3, 3), F32)), ValueError, "depthwise_conv2d: w must be 3-D"),
        (lambda: fastconv.depthwise_conv2d(np.zeros((1, 5, 5, 3), F32), np.zeros((3, 3, 3, 2), F32), np.zeros(3, F32)), ValueError, r"b must have shape \(6,\)"),
        (lambda: fastconv.pointwise_conv2d(np.zeros((1, 5, 5, 3), F32), np.zeros((4, 2), F32)), ValueError, "pointwise_conv2d: w must have shape"),
        (lambda: fastconv.dense(np.zeros((2, 5), F32), np.zeros((4, 2), F32)), ValueError, "dense: w must have shape"),
        (lambda: fastconv.dense(np.zeros(5, F32), np.zeros((5, 2), F32)), ValueError, "dense: x must be 2-D"),
        (lambda: fastconv.dense(np.zeros((2, 5), F32), np.zeros((5, 2), F32), activation="softplus"), ValueError, "dense: unknown activation"),
        (lambda: fastconv.max_pool2d(np.zeros((1, 5, 5, 3), F32), 0), ValueError, "max_pool2d: size must be >= 1"),
        (lambda: fastconv.max_pool2d(np.zeros((1, 5, 5, 3), F32), 2, 0), ValueError, "max_pool2d: stride must be >= 1"),
        (lambda: fastconv.max_pool2d(np.zeros((1, 5, 5, 3), F32), 6), ValueError, "max_pool2d: the window 6x6 is larger"),
        (lambda: fastconv.max_pool2d(np.zeros((1, 5, 5, 3), F32), 2, padding=2), ValueError, "smaller than the window"),
        (lambda: fastconv.avg_pool2d(np.zeros((1, 5, 5, 3), F32), 2, padding=-1), ValueError, "avg_pool2d: padding must be >= 0"),
        (lambda: fastconv.avg_pool2d(np.zeros((5, 5, 3), F32), 2), ValueError, "avg_pool2d: x must be 4-D"),
        (lambda: fastconv.avg_pool2d(np.zeros((1, 5, 5, 3), F32), 2, ceil_mode="yes"), TypeError, "ceil_mode must be a bool"),
        (lambda: fastconv.global_avg_pool2d(np.zeros((1, 0, 5, 3), F32)), ValueError, "global_avg_pool2d: x has a zero-size"),
        (lambda: fastconv.global_max_pool2d(np.zeros((1, 5, 5, 3), np.int64)), TypeError, "global_max_pool2d: x must be a real"),
        (lambda: fastconv.set_num_threads(0), ValueError, "set_num_threads: n must be >= 1"),
        (lambda: fastconv.set_num_threads(2.0), TypeError, "set_num_threads: n must be an int"),
        (lambda: conv_output_size(5, 0), ValueError, "conv_output_size: f must be >= 1"),
        (lambda: conv_output_size(5, 3, "whole"), ValueError, "conv_output_size: unknown padding"),
    ],
)
def test_other_ops_errors(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_lists_are_accepted_and_int_lists_refused():
    x = np.random.default_rng(0).standard_normal((1, 4, 4, 1)).tolist()
    assert fastconv.max_pool2d(x, 2).shape == (1, 2, 2, 1)
    with pytest.raises(TypeError, match="x must be a real floating-point array"):
        fastconv.max_pool2d([[[[1], [2]], [[3], [4]]]], 2)
