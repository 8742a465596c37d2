"""fastconv.cost: the lecture's numbers, and agreement with the models' per-layer counts."""

import pytest

from fastconv import cost, models


def test_plain_convolution():
    c = cost.conv2d((28, 28, 192), 5, 32, padding="same")
    assert c.output_shape == (28, 28, 32)
    assert c.multiplies == 120_422_400  # about 120.4M
    assert c.parameters == 5 * 5 * 192 * 32 + 32


def test_inception_bottleneck():
    cmp = cost.bottleneck((28, 28, 192), 5, 32, 16, padding="same")
    assert cmp.plain.multiplies == 120_422_400
    assert [p.multiplies for p in cmp.parts] == [28 * 28 * 16 * 192, 28 * 28 * 32 * 25 * 16]
    assert cmp.alternative.multiplies == 12_443_648  # about 12.4M
    assert cmp.alternative.output_shape == (28, 28, 32)
    assert cmp.ratio == pytest.approx(0.1033, abs=1e-4)
    assert "12,443,648" in str(cmp)


def test_depthwise_separable():
    cmp = cost.depthwise_separable((6, 6, 3), 3, 5)
    assert cmp.plain.output_shape == (4, 4, 5)
    assert cmp.plain.multiplies == 2160
    assert [p.multiplies for p in cmp.parts] == [432, 240]
    assert cmp.alternative.multiplies == 672
    assert cmp.ratio == pytest.approx(1 / 5 + 1 / 9)


def test_other_layers_and_errors():
    assert cost.dense(120, 84).parameters == 10164
    assert cost.pool2d((28, 28, 6), 2).output_shape == (14, 14, 6)
    assert cost.conv2d((32, 32, 1), 5, 6).output_shape == (28, 28, 6)
    assert cost.conv2d((224, 224, 3), 11, 64, stride=4, padding=2).output_shape == (55, 55, 64)
    with pytest.raises(ValueError, match=r"^cost.conv2d: input_shape must be \(H, W, C\)"):
        cost.conv2d((28, 28), 3, 4)
    with pytest.raises(ValueError, match=r"^cost.conv2d: the kernel window 7x7"):
        cost.conv2d((5, 5, 3), 7, 4)


def test_agrees_with_model_layer_table():
    rows = {r.name: r for r in models.mobilenet_v1().layer_table()}
    dw = cost.depthwise_conv2d((112, 112, 32), 3, padding=1, bias=False)
    assert (1,) + dw.output_shape == rows["conv_dw_1"].output_shape
    assert dw.multiplies == rows["conv_dw_1"].macs and dw.parameters == rows["conv_dw_1"].trainable_parameters
