"""PNG figures: labelled image panels (reconstructions, error maps), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from kspace_ldm.io import atomic_path

_LABEL_HEIGHT = 14


def to_uint8(image: np.ndarray, vmax: float | None = None, vmin: float = 0.0) -> np.ndarray:
    """Scale a real ``[H, W]`` image to uint8 over ``[vmin, vmax]`` (default: its own max)."""
    image = np.asarray(image, dtype=np.float64)
    vmax = float(image.max()) if vmax is None else float(vmax)
    scale = vmax - vmin if vmax > vmin else 1.0
    return (np.clip((image - vmin) / scale, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def panel(
    rows: Sequence[Sequence[np.ndarray]],
    labels: Sequence[Sequence[str]] | None = None,
    vmax: Sequence[Sequence[float | None]] | None = None,
    gap: int = 4,
) -> Image.Image:
    """Arrange grey images ``[H, W]`` in a grid with a text label above each.

    Args:
        rows: rows of images (each row may have its own length; sizes may differ).
        labels: same structure as ``rows``; drawn above each image.
        vmax: same structure; the display maximum of each image (None: the image's own max).
            Pass one shared value per figure row so intensities compare across columns.
    """
    cell_w = max(im.shape[1] for row in rows for im in row)
    cell_h = max(im.shape[0] for row in rows for im in row) + _LABEL_HEIGHT
    ncols = max(len(row) for row in rows)
    canvas = Image.new("L", (ncols * cell_w + (ncols - 1) * gap, len(rows) * cell_h), 0)
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            vm = vmax[r][c] if vmax is not None else None
            x0, y0 = c * (cell_w + gap), r * cell_h
            canvas.paste(Image.fromarray(to_uint8(im, vm)), (x0, y0 + _LABEL_HEIGHT))
            if labels is not None:
                draw.text((x0 + 2, y0 + 1), labels[r][c], fill=255)
    return canvas


def save_png(image: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Write a PIL image (or a real ``[H, W]`` array, scaled to its max) to ``path`` atomically."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(to_uint8(image))
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
