"""`fastconv demo edges [IMAGE]`: vertical, horizontal, Sobel and Scharr edge maps of a photograph,
computed with fastconv.conv2d and written as one PNG grid (matplotlib: the `plot` extra).

The image: IMAGE when given (read with Pillow, else matplotlib), else scikit-image's bundled
`camera` photograph when scikit-image is installed, else a synthetic image (said so on stderr).
"""

from __future__ import annotations

import sys

import numpy as np

VERTICAL = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float32)
SOBEL = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float32)
SCHARR = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]], dtype=np.float32)


def edge_filters() -> dict:
    """name -> 3x3 filter (cross-correlation, as conv2d computes it). Vertical filters respond to vertical edges."""
    return {"vertical": VERTICAL, "horizontal": VERTICAL.T.copy(), "sobel x": SOBEL, "sobel y": SOBEL.T.copy(),
            "scharr x": SCHARR, "scharr y": SCHARR.T.copy()}


def synthetic_image(size=256) -> np.ndarray:
    """A square, a disc and a diagonal ramp on a dark background, values in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.15 + 0.2 * xx
    img[(yy > 0.15) & (yy < 0.45) & (xx > 0.1) & (xx < 0.4)] = 0.9
    img[(yy - 0.65) ** 2 + (xx - 0.65) ** 2 < 0.04] = 0.6
    img[np.abs(yy - (1 - xx)) < 0.01] = 1.0
    return img.astype(np.float32)


def load_image(path=None):
    """(grayscale float32 image in [0, 1], description)."""
    if path is not None:
        try:
            from PIL import Image

            img = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        except ImportError:
            import matplotlib.image

            img = np.asarray(matplotlib.image.imread(path), dtype=np.float32)
            if img.ndim == 3:
                img = img[..., :3].mean(axis=-1)
            if img.max() > 1.0:
                img = img / 255.0
        return img, str(path)
    try:
        from skimage import data

        return data.camera().astype(np.float32) / 255.0, "scikit-image sample 'camera'"
    except ImportError:
        print("fastconv demo edges: no IMAGE given and scikit-image is not installed: using a synthetic image "
              "(pass a photograph's path, or pip install scikit-image for its sample photographs)", file=sys.stderr)
        return synthetic_image(), "synthetic image"


def edge_maps(img: np.ndarray) -> dict:
    """All filters in one conv2d call: (1, H, W, 1) * (3, 3, 1, K) -> K maps of the input's size (its
    border replicated, so the frame shows no false edges); Sobel / Scharr as gradient magnitudes."""
    import fastconv

    filters = edge_filters()
    w = np.stack(list(filters.values()), axis=-1)[:, :, None, :]  # HWIO (3, 3, 1, K)
    padded = np.pad(np.asarray(img, dtype=np.float32), 1, mode="edge")
    out = fastconv.conv2d(padded[None, :, :, None], w)[0]
    maps = {name: out[..., k] for k, name in enumerate(filters)}
    return {
        "vertical": maps["vertical"],
        "horizontal": maps["horizontal"],
        "sobel": np.hypot(maps["sobel x"], maps["sobel y"]),
        "scharr": np.hypot(maps["scharr x"], maps["scharr y"]),
    }


def edges(image=None, output="edges.png") -> str:
    """Write the grid (original + 4 edge maps) to output; returns its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("fastconv demo edges needs matplotlib: pip install 'fastconv[plot]'") from None
    img, what = load_image(image)
    maps = edge_maps(img)
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.6))
    panels = [("input: " + what, img, "gray")] + [
        (name, m, "RdBu" if name in ("vertical", "horizontal") else "magma") for name, m in maps.items()]
    for ax, (title, m, cmap) in zip(axes, panels):
        if cmap == "RdBu":
            lim = float(np.abs(m).max()) or 1.0
            ax.imshow(m, cmap=cmap, vmin=-lim, vmax=lim)
        else:
            ax.imshow(m, cmap=cmap)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(output, dpi=80)
    plt.close(fig)
    return str(output)


def main(args) -> int:
    """Entry for the CLI's `demo` subcommand."""
    path = edges(args.image, args.output)
    print(f"wrote {path}")
    return 0


def add_parser(commands) -> None:
    """Register `demo edges [IMAGE] [-o OUT]` on the CLI's subparsers."""
    demo = commands.add_parser("demo", help="demonstrations: edges (edge maps of a photograph)")
    kinds = demo.add_subparsers(dest="demo", required=True)
    p = kinds.add_parser("edges", help="vertical, horizontal, Sobel and Scharr edge maps as one PNG grid")
    p.add_argument("image", nargs="?", help="image path (default: scikit-image's sample, else a synthetic image)")
    p.add_argument("-o", "--output", default="edges.png", help="PNG to write (default: edges.png)")
    p.set_defaults(handler=main)
