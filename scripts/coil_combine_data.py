"""Write ESPIRiT-combined single-coil copies of multi-coil fastMRI files (training data of the
coil-agnostic model, :mod:`kspace_ldm.data.coil_combine`).

    python scripts/coil_combine_data.py SRC_DIR DST_DIR
"""

from __future__ import annotations

import argparse
import sys

import torch

from kspace_ldm.data.coil_combine import coil_combine_folder
from kspace_ldm.errors import InputError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src_dir")
    ap.add_argument("dst_dir")
    a = ap.parse_args()
    torch.set_num_threads(1)
    try:
        paths = coil_combine_folder(a.src_dir, a.dst_dir)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"[coil-combine] {len(paths)} files -> {a.dst_dir}")


if __name__ == "__main__":
    main()
