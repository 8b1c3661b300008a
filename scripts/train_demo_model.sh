#!/usr/bin/env bash
# Reproduce the bundled demo model (kspace_ldm/pretrained/demo) from scratch, end to end:
#   generate the synthetic data -> train the K-AE (configs/demo_ae.yaml) -> evaluate it on the
#   held-out test split -> extract latents -> train the LDenoiser (configs/demo_ldm.yaml) ->
#   copy both `best` models into the bundle layout with a sha256 manifest.
#
#   scripts/train_demo_model.sh [WORK_DIR]          (default WORK_DIR: runs/demo_model)
#
# Every stage is resumable: rerunning continues a training run from its last checkpoint and skips
# what is done, so the K-AE can be trained in phases (each phase: rerun the script, or raise
# AE_STEPS and rerun). Environment (defaults = the bundled model):
#   AE_STEPS=4000 LDM_STEPS=3000    training steps of each stage
#   EVERY=250                       validation and checkpoint interval of both stages
#   BUNDLE_OUT=kspace_ldm/pretrained/demo   where the bundle goes (replaced as a whole)
#   KLDM=.venv/bin/kldm PY=.venv/bin/python
# Time on 2 CPU cores (docs/model_card.md): ~25 min (K-AE) + ~1 min (latents) + ~26 min (LDM).
# A smoke run with tiny step counts: AE_STEPS=4 LDM_STEPS=4 EVERY=2 BUNDLE_OUT=/tmp/b scripts/...
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_train_stages.sh
WORK=${1:-runs/demo_model}
AE_STEPS=${AE_STEPS:-4000}
LDM_STEPS=${LDM_STEPS:-3000}
EVERY=${EVERY:-250}
BUNDLE_OUT=${BUNDLE_OUT:-kspace_ldm/pretrained/demo}
DATA=$WORK/data/synth96
AE=$WORK/ae
LAT=$WORK/latents
LDM=$WORK/ldm
SEED=0   # the training data's seed; `kldm demo` generates its held-out volumes with another

echo "[1/6] data: $DATA"
if [[ ! -d "$DATA/singlecoil_test" ]]; then
  "$KLDM" data synth "$DATA" --train 32 --val 2 --test 4 --shape 96x96 --recon-size 48 \
    --slices 8 --seed "$SEED"
fi

echo "[2/6] first stage (K-AE): $AE"
kldm_train_stage ae configs/demo_ae.yaml "$AE" "$DATA/singlecoil_train" "$DATA/singlecoil_val" \
  "$AE_STEPS" "$EVERY"

echo "[3/6] first stage on the held-out test split (fully sampled k-space)"
"$KLDM" eval-ae "$AE/best" "$DATA/singlecoil_test" --out "$AE/test_recon" \
  --markdown "$AE/test_metrics.md"

echo "[4/6] latents: $LAT"
kldm_extract_latents "$AE/best" "$DATA/singlecoil_" "$LAT"

echo "[5/6] latent denoiser (LDM): $LDM"
kldm_train_stage ldm configs/demo_ldm.yaml "$LDM" "$LAT/train" "$LAT/val" "$LDM_STEPS" "$EVERY"

echo "[6/6] bundle: $BUNDLE_OUT"
"$PY" scripts/bundle_demo_model.py --first-stage "$AE/best" --ldm "$LDM/best" --data "$DATA" \
  --data-seed "$SEED" --out "$BUNDLE_OUT"
echo "done. Evaluate: scripts/eval_ldm_synth.sh $DATA/singlecoil_test $BUNDLE_OUT/ldm OUT_DIR"
