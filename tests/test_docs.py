"""The data-flow picture of docs/architecture.md is made by a command in the repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_dataflow_figure_is_made_by_its_script(tmp_path):
    out = tmp_path / "dataflow.png"
    script = ROOT / "scripts" / "make_dataflow_figure.py"
    subprocess.run([sys.executable, str(script), "--out", str(out)], check=True, timeout=60)
    committed = ROOT / "docs" / "images" / "dataflow.png"
    assert "images/dataflow.png" in (ROOT / "docs" / "architecture.md").read_text()
    with Image.open(out) as made, Image.open(committed) as shown:
        # Same layout as the committed picture (pixels may differ across Pillow versions' fonts).
        assert made.size == shown.size and made.mode == shown.mode
