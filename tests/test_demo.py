"""`fastconv demo edges`: the edge maps themselves, and the PNG written through the CLI."""

import numpy as np
import pytest

from fastconv import cli, demo, reference


def test_edge_maps_find_the_right_edges():
    img = np.zeros((20, 30), np.float32)
    img[:, 15:] = 1.0  # one vertical edge between columns 14 and 15
    maps = demo.edge_maps(img)
    assert set(maps) == {"vertical", "horizontal", "sobel", "scharr"}
    assert all(m.shape == img.shape for m in maps.values())
    assert np.abs(maps["horizontal"]).max() == 0
    cols = np.nonzero(np.abs(maps["vertical"]).max(axis=0))[0]
    np.testing.assert_array_equal(cols, [14, 15])
    assert maps["scharr"][10, 14] == pytest.approx(16.0) and maps["sobel"][10, 14] == pytest.approx(4.0)


def test_edge_maps_match_the_reference():
    img = demo.synthetic_image(40)
    w = demo.edge_filters()["sobel x"][:, :, None, None]
    want = reference.conv2d(np.pad(img, 1, mode="edge")[None, :, :, None].astype(np.float64), w)[0, :, :, 0]
    got = demo.edge_maps(img)
    sobel_y = reference.conv2d(np.pad(img, 1, mode="edge")[None, :, :, None].astype(np.float64),
                               demo.edge_filters()["sobel y"][:, :, None, None])[0, :, :, 0]
    np.testing.assert_allclose(got["sobel"], np.hypot(want, sobel_y), rtol=1e-5, atol=1e-5)


def test_cli_writes_a_png_grid(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plot' extra) is not installed")
    Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
    photo = tmp_path / "photo.png"
    Image.fromarray((demo.synthetic_image(64) * 255).astype(np.uint8)).save(photo)
    out = tmp_path / "grid.png"
    assert cli.main(["demo", "edges", str(photo), "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_without_image_or_scikit_image_says_so(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib", reason="matplotlib (the 'plot' extra) is not installed")
    import sys

    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    img, what = demo.load_image(None)
    assert what == "synthetic image" and img.ndim == 2
    assert "synthetic image" in capsys.readouterr().err
