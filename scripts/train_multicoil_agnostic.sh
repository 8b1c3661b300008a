#!/usr/bin/env bash
# Train the coil-agnostic multi-coil model from scratch on the CPU, end to end:
#   synthetic multi-coil data (4 and 8 coils, varied coil geometry) -> ESPIRiT-combined
#   single-coil copies (kspace_ldm/data/coil_combine.py: F S^H F^-1 y, what the coil-agnostic
#   sampler shows the model) -> first stage (configs/mc_agnostic_ae.yaml) -> its score on the
#   combined validation k-space -> latents -> latent denoiser (configs/mc_agnostic_ldm.yaml) ->
#   a check through `kldm recon --coil-combine espirit` on the multi-coil validation split
#   (zero-filled RSS and cgs at 4x, fastMRI metrics against reconstruction_rss).
#
#   scripts/train_multicoil_agnostic.sh [WORK_DIR]          (default runs/mc_agnostic)
#
# The trained model is WORK_DIR/ldm/best (use it as `kldm recon --model`; evaluate it on the
# held-out 6/12/15-coil volumes with MODEL=WORK_DIR/ldm/best scripts/eval_multicoil_agnostic.sh).
# Every stage is skipped or resumed when its output exists. Environment (defaults in brackets):
#   AE_STEPS [4000] LDM_STEPS [3000] EVERY [250]  steps and validation/checkpoint interval
#   TRAIN [32] VAL [2] SLICES [8] SHAPE [96x96] RECON [48]  synthetic data size
#   COILS [4,8] GEOMETRY [varied] SEED [0]        coil counts (one drawn per volume), seed
#   KLDM [.venv/bin/kldm] PY [.venv/bin/python]
# Time on 2 shared CPU cores, one torch thread: ~1 h at the defaults (the demo model's step counts
# and sizes, docs/model_card.md: ~25 min K-AE + ~26 min LDM; data and coil combination ~1 min).
# Tiny smoke run (tests/test_train_multicoil_agnostic.py):
#   AE_STEPS=2 LDM_STEPS=2 EVERY=2 TRAIN=4 VAL=1 SLICES=4 SHAPE=48x48 RECON=32 scripts/...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_train_stages.sh
W=${1:-runs/mc_agnostic}
AE_STEPS=${AE_STEPS:-4000}
LDM_STEPS=${LDM_STEPS:-3000}
EVERY=${EVERY:-250}
TRAIN=${TRAIN:-32}
VAL=${VAL:-2}
SLICES=${SLICES:-8}
SHAPE=${SHAPE:-96x96}
RECON=${RECON:-48}
COILS=${COILS:-4,8}
GEOMETRY=${GEOMETRY:-varied}
SEED=${SEED:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
MC=$W/data/multicoil
SC=$W/data/combined
AE=$W/ae
LAT=$W/latents
LDM=$W/ldm
CHECK=$W/check
mkdir -p "$W"

echo "[1/7] multi-coil data ($COILS coils, $GEOMETRY): $MC"
if [[ ! -d "$MC/multicoil_val" ]]; then
  "$KLDM" data synth "$MC" --train "$TRAIN" --val "$VAL" --test 0 --coils "$COILS" \
    --coil-geometry "$GEOMETRY" --shape "$SHAPE" --recon-size "$RECON" --slices "$SLICES" \
    --seed "$SEED" > /dev/null
fi

echo "[2/7] ESPIRiT-combined single-coil k-space: $SC"
for part in train val; do
  if [[ ! -d "$SC/singlecoil_$part" ]]; then
    "$PY" scripts/coil_combine_data.py "$MC/multicoil_$part" "$SC/singlecoil_$part.tmp"
    mv "$SC/singlecoil_$part.tmp" "$SC/singlecoil_$part"
  fi
done

echo "[3/7] first stage (K-AE): $AE"
kldm_train_stage ae configs/mc_agnostic_ae.yaml "$AE" "$SC/singlecoil_train" "$SC/singlecoil_val" \
  "$AE_STEPS" "$EVERY"

echo "[4/7] first stage on the combined validation k-space (fully sampled)"
"$KLDM" eval-ae "$AE/best" "$SC/singlecoil_val" --out "$AE/val_recon" \
  --markdown "$AE/val_metrics.md"

echo "[5/7] latents: $LAT"
kldm_extract_latents "$AE/best" "$SC/singlecoil_" "$LAT"

echo "[6/7] latent denoiser (LDM): $LDM"
kldm_train_stage ldm configs/mc_agnostic_ldm.yaml "$LDM" "$LAT/train" "$LAT/val" "$LDM_STEPS" \
  "$EVERY"

echo "[7/7] check on the multi-coil validation split (4x, cf 0.08): $CHECK"
for s in zero-filled cgs; do
  args=(); [[ "$s" == cgs ]] && args=(--model "$LDM/best" --coil-combine espirit)
  rm -rf "$CHECK/$s"
  "$KLDM" recon "$MC/multicoil_val" --out "$CHECK/$s" --sampler "$s" --accel 4 \
    --center-fraction 0.08 "${args[@]}" > /dev/null
  "$KLDM" evaluate --pred "$CHECK/$s" --target "$MC/multicoil_val" --json "$CHECK/$s.json" \
    > /dev/null
done
"$PY" - "$CHECK" <<'EOF'
import json, sys
from pathlib import Path
for s in ("zero-filled", "cgs"):
    m = json.loads((Path(sys.argv[1]) / f"{s}.json").read_text())["summary"]
    print(f"  {s}: PSNR {m['psnr']['mean']:.2f} dB, SSIM {m['ssim']['mean']:.4f}")
EOF
echo "done. Model: $LDM/best; held-out evaluation: MODEL=$LDM/best scripts/eval_multicoil_agnostic.sh OUT_DIR"
