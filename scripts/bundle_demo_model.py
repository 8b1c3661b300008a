"""Copy a trained first stage and LDM into the package's demo bundle, with its sha256 manifest.

    python scripts/bundle_demo_model.py --first-stage RUN_AE/best --ldm RUN_LDM/best \
        --data DATA_DIR [--data-seed 0] [--out kspace_ldm/pretrained/demo]

DATA_DIR is the `kldm data synth` folder both stages were trained on: the manifest records its
geometry, seed and file names, so `kldm demo` generates matching held-out volumes and can check
that none of them was used in training. The last step of scripts/train_demo_model.sh.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kspace_ldm.data.fastmri import FastMRIFile, list_h5_files
from kspace_ldm.pretrained import build_bundle, sha256_file

ROOT = Path(__file__).resolve().parents[1]


def data_info(data: Path, seed: int) -> dict:
    splits = {}
    for folder in sorted(data.glob("*coil_*")):
        splits[folder.name.split("_", 1)[1]] = [p.name for p in list_h5_files(folder)]
    first = next(p for names in splits.values() for p in names)
    folder = next(f for f in data.glob("*coil_*") if (f / first).is_file())
    with FastMRIFile(folder / first) as f:
        shape = list(f.kspace_shape[-2:])
        info = {
            "generator": "kldm data synth",
            "seed": seed,
            "coils": f.kspace_shape[1] if f.is_multicoil else 1,
            "shape": shape,
            "recon_size": int(f.header.recon_size[0]),
            "slices": f.num_slices,
        }
    info["files"] = splits
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--first-stage", required=True, type=Path)
    ap.add_argument("--ldm", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "kspace_ldm" / "pretrained" / "demo")
    args = ap.parse_args()
    metrics = {
        k: json.loads((d / "metrics.json").read_text())
        for k, d in (("first_stage", args.first_stage), ("ldm", args.ldm))
    }
    info = {
        "name": "demo",
        "description": "K-AE (AutoencoderKL, f = 4) + latent denoiser (UNet2DModel) trained on "
        "generated single-coil phantoms; research use only, not for clinical use",
        "model_card": "docs/model_card.md",
        "data": data_info(args.data, args.data_seed),
        "training": {
            "first_stage": {"config": "configs/demo_ae.yaml", "best": metrics["first_stage"]},
            "ldm": {"config": "configs/demo_ldm.yaml", "best": metrics["ldm"]},
        },
    }
    out = build_bundle(args.first_stage, args.ldm, args.out, info)
    manifest = json.loads((out / "manifest.json").read_text())
    total = sum(e["bytes"] for e in manifest["files"].values())
    print(f"bundle: {out} ({len(manifest['files'])} files, {total / 2**20:.2f} MiB)")
    print(f"manifest sha256: {sha256_file(out / 'manifest.json')}")


if __name__ == "__main__":
    main()
