#!/usr/bin/env bash
# The supervised U-Net baseline at the demo geometry (docs/results.md, "Supervised U-Net
# baseline"): train fastMRI's U-Net recipe (configs/demo_unet.yaml) on the demo model's synthetic
# training split at 4x random masks (a new mask per slice and step), then reconstruct the held-out
# test split at 4x random (the training mask), 8x random and 4x equispaced (mask shift) with
# zero-filled, the U-Net and (when the bundled demo model is present) cgs at its defaults, and
# score everything with kldm evaluate (fastMRI protocol, per volume).
#
#   scripts/train_unet_baseline.sh [WORK_DIR]      (default WORK_DIR: runs/unet_baseline)
#
# Environment: STEPS (default: the config's 6000), EVERY (validation/checkpoint interval, 500),
#   CGS=0 skips the cgs rows, DATA=... reuses existing demo data (kldm data synth --seed 0 ...),
#   KLDM=.venv/bin/kldm PY=.venv/bin/python. Training resumes when rerun. Time at one torch
#   thread on the 2-core machine: see docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_train_stages.sh
WORK=${1:-runs/unet_baseline}
EVERY=${EVERY:-500}
DATA=${DATA:-$WORK/data/synth96}
RUN=$WORK/unet
EVAL=$WORK/eval
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

echo "[1/3] data: $DATA (the demo model's: scripts/train_demo_model.sh)"
if [[ ! -d "$DATA/singlecoil_test" ]]; then
  "$KLDM" data synth "$DATA" --train 32 --val 2 --test 4 --shape 96x96 --recon-size 48 \
    --slices 8 --seed 0
fi

echo "[2/3] U-Net: $RUN"
t0=$(date +%s)
kldm_train_stage unet configs/demo_unet.yaml "$RUN" "$DATA/singlecoil_train" "$DATA/singlecoil_val" \
  "${STEPS:-}" "$EVERY"
echo "training wall time: $(( $(date +%s) - t0 )) s"

echo "[3/3] test split: zero-filled / unet / cgs at 4x random, 8x random, 4x equispaced"
methods=(zero-filled unet)
[[ "${CGS:-1}" != 0 ]] && methods+=(cgs)
mkdir -p "$EVAL"
for setting in random:4:0.08 random:8:0.04 equispaced:4:0.08; do
  IFS=: read -r mask accel cf <<<"$setting"
  for m in "${methods[@]}"; do
    args=()
    case $m in
      unet) args=(--model "$RUN") ;;
      cgs) args=(--model kspace_ldm/pretrained/demo/ldm) ;;
    esac
    dest="$EVAL/${m}_${mask}_${accel}x"
    rm -rf "$dest"
    "$KLDM" recon "$DATA/singlecoil_test" --out "$dest" --sampler "$m" --mask "$mask" \
      --accel "$accel" --center-fraction "$cf" --batch-size 8 "${args[@]}" 2>&1 \
      | grep -v '^recon' | tee "$dest.log"
    "$KLDM" evaluate --pred "$dest" --target "$DATA/singlecoil_test" --json "$dest.json" \
      > /dev/null
  done
done

"$PY" - "$EVAL" "${methods[@]}" <<'PY'
import json, re, sys
from pathlib import Path
ev, methods = Path(sys.argv[1]), sys.argv[2:]
print("| method | mask | PSNR (dB) | SSIM | NMSE | s/slice |")
print("|---|---|---|---|---|---|")
for setting in ("random_4x", "random_8x", "equispaced_4x"):
    for m in methods:
        s = json.loads((ev / f"{m}_{setting}.json").read_text())["summary"]
        log = (ev / f"{m}_{setting}.log").read_text()
        sec = re.search(r"\(([0-9.]+) s/slice", log)
        eff = re.search(r"effective acceleration ([0-9.]+)", log)
        print(f"| {m} | {setting.replace('_', ' ')} (eff. {eff.group(1)}x) | "
              f"{s['psnr']['mean']:.2f} ± {s['psnr']['std']:.2f} | "
              f"{s['ssim']['mean']:.4f} ± {s['ssim']['std']:.4f} | "
              f"{s['nmse']['mean']:.4f} | {sec.group(1) if sec else '?'} |")
PY
