"""Figure: the data flow of kspace-ldm (docs/images/dataflow.png, shown in docs/architecture.md).

    python scripts/make_dataflow_figure.py [--out docs/images/dataflow.png]

Drawn with Pillow (a dependency already): boxes are the stages and what they write, arrows what
flows between them; the two inference paths (Python, C++) share the native ops at the bottom.
Edit NODES / EDGES below and run this again to update the picture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

# Lanes (rows) and their colours: data, training, inference (Python), export + C++, native core.
LANES = [
    ("data", "#e8f1fb"),
    ("training", "#fdf1e3"),
    ("inference (Python)", "#e9f6ea"),
    ("export + C++", "#f3eaf7"),
    ("native core", "#eeeeee"),
]
COL_W, ROW_H, BOX_W, BOX_H, LEFT, TOP = 300, 150, 262, 104, 150, 20

# One box a line: name | lane | column (fractional: between two columns) | text, "; " breaking
# lines (the stage, then what it is or writes).
BOXES = """
h5   | 0 | 0   | fastMRI HDF5 volumes; or kldm data synth; (same format)
data | 0 | 1   | data/: FastMRIFile,; SliceDataset, masks; (fastMRI semantics)
ae   | 1 | 1   | kldm train --stage ae; models/autoencoders.py; training/ -> AE run
lat  | 1 | 2   | kldm extract-latents; latents.py -> shards; + stats.json
ldm  | 1 | 3   | kldm train --stage ldm; models/ldm.py, training/; -> LDM run (EMA)
load | 2 | 3   | models/loading.py; load_first_stage,; models/ldm.py load_ldm
py   | 2 | 2   | kldm recon --backend python; recon.py ->; sampling/cgs.py
sub  | 2 | 1   | submission HDF5; (reconstruction,; per volume)
eval | 2 | 0   | kldm evaluate; evaluate.py: NMSE,; PSNR, SSIM
exp  | 3 | 3   | kldm export; export.py -> .pt2 packages; + manifest.json
cpp  | 3 | 1   | kldm recon --backend cpp,; kldm-recon, kldm::Sampler; (csrc/sampler)
ops  | 4 | 1.5 | libkldm ops (csrc/ops):; dc_project, ddpm_step,; ifft2c, rss, ...
"""
NODES = {
    name: (int(lane), float(col), text.replace("; ", "\n"))
    for name, lane, col, text in (
        [f.strip() for f in row.split("|")] for row in BOXES.strip().splitlines()
    )
}
EDGES = [
    ("h5", "data"),
    ("data", "ae"),
    ("ae", "lat"),
    ("lat", "ldm"),
    ("ldm", "load"),
    ("load", "py"),
    ("load", "exp"),
    ("exp", "cpp"),
    ("py", "sub"),
    ("cpp", "sub"),
    ("sub", "eval"),
    ("py", "ops"),
    ("cpp", "ops"),
]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable built-in font
    except TypeError:
        return ImageFont.load_default()


def _box(name: str) -> tuple[int, int, int, int]:
    lane, col, _ = NODES[name]
    x0 = int(LEFT + col * COL_W + (COL_W - BOX_W) // 2)
    y0 = TOP + lane * ROW_H + (ROW_H - BOX_H) // 2
    return x0, y0, x0 + BOX_W, y0 + BOX_H


def _anchor(box, towards) -> tuple[float, float]:
    """The middle of the side of ``box`` that faces the centre ``towards``."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    dx, dy = towards[0] - cx, towards[1] - cy
    if abs(dx) * BOX_H >= abs(dy) * BOX_W:
        return (x1 if dx > 0 else x0), cy
    return cx, (y1 if dy > 0 else y0)


def _arrow(draw: ImageDraw.ImageDraw, a, b, colour="#333333") -> None:
    draw.line([a, b], fill=colour, width=3)
    dx, dy = b[0] - a[0], b[1] - a[1]
    n = max((dx * dx + dy * dy) ** 0.5, 1e-9)
    ux, uy = dx / n, dy / n
    size = 14
    left = (b[0] - size * ux + 0.5 * size * uy, b[1] - size * uy - 0.5 * size * ux)
    right = (b[0] - size * ux - 0.5 * size * uy, b[1] - size * uy + 0.5 * size * ux)
    draw.polygon([b, left, right], fill=colour)


def draw() -> Image.Image:
    cols = 1 + int(max(c for _, c, _ in NODES.values()))
    width = LEFT + cols * COL_W + 20
    height = TOP + len(LANES) * ROW_H + 20
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    lane_font, box_font = _font(20), _font(17)
    for i, (label, colour) in enumerate(LANES):
        y0 = TOP + i * ROW_H
        d.rectangle([10, y0 + 4, width - 10, y0 + ROW_H - 4], fill=colour)
        d.multiline_text(
            (20, y0 + ROW_H // 2),
            label.replace(" (", "\n("),
            fill="#555555",
            font=lane_font,
            anchor="lm",
        )
    for a, b in EDGES:
        ba, bb = _box(a), _box(b)
        ca = ((ba[0] + ba[2]) / 2, (ba[1] + ba[3]) / 2)
        cb = ((bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2)
        _arrow(d, _anchor(ba, cb), _anchor(bb, ca))
    for name, (_, _, text) in NODES.items():
        x0, y0, x1, y1 = _box(name)
        d.rounded_rectangle([x0, y0, x1, y1], radius=12, fill="white", outline="#333333", width=2)
        d.multiline_text(
            ((x0 + x1) / 2, (y0 + y1) / 2),
            text,
            fill="black",
            font=box_font,
            anchor="mm",
            align="center",
            spacing=6,
        )
    return img


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/images/dataflow.png"))
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(args.out, optimize=True)
    print(args.out)


if __name__ == "__main__":
    main()
