#!/usr/bin/env bash
# Phantom-family transfer: a cgs model trained on one `kldm data synth`
# phantom family, tested on both. Per family in $FAMILIES: the demo-geometry data (32 train / 2
# val / 4 test volumes, 96x96 k-space, 48x48 targets, 8 slices, seed 0) and the demo recipe
# (scripts/train_demo_model.sh: K-AE + latents + LDenoiser) on a SHORT schedule; then
# kldm compare (zero-filled, cs-wavelet, cgs; 4x and 8x random, masks seeded by file name) for
# every (model, test family) pair. The ellipses family can also use the bundled demo model
# (full schedule, trained on exactly this ellipses data): MODEL_ellipses=kspace_ldm/pretrained/demo/ldm.
#
#   scripts/phantom_transfer.sh [WORK_DIR]          (default WORK_DIR: runs/phantom_transfer)
#
# Environment: FAMILIES="ellipses anatomy" (families to train), TEST_FAMILIES="ellipses anatomy",
#   AE_STEPS=1000 LDM_STEPS=800 EVERY=200, MODEL_<family>=<LDM run or bundle> (skip training),
#   KLDM=.venv/bin/kldm. Resumable (reruns continue / skip finished stages).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/phantom_transfer}
KLDM=${KLDM:-.venv/bin/kldm}
FAMILIES=${FAMILIES-"ellipses anatomy"}
TEST_FAMILIES=${TEST_FAMILIES-"ellipses anatomy"}
export AE_STEPS=${AE_STEPS:-1000} LDM_STEPS=${LDM_STEPS:-800} EVERY=${EVERY:-200}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

data_of() { echo "$WORK/$1/data/synth96"; }
for fam in $TEST_FAMILIES $FAMILIES; do
  d=$(data_of "$fam")
  if [[ ! -d "$d/singlecoil_test" ]]; then
    "$KLDM" data synth "$d" --phantom "$fam" --train 32 --val 2 --test 4 --shape 96x96 \
      --recon-size 48 --slices 8 --seed 0
  fi
done

declare -A model
for fam in ellipses anatomy; do
  var="MODEL_$fam"
  if [[ -n "${!var:-}" ]]; then
    model[$fam]=${!var}
  elif [[ " $FAMILIES " == *" $fam "* ]]; then
    t0=$(date +%s)
    BUNDLE_OUT="$WORK/$fam/bundle" scripts/train_demo_model.sh "$WORK/$fam"
    echo "[transfer] $fam: demo recipe ($AE_STEPS + $LDM_STEPS steps) in $(( $(date +%s) - t0 )) s"
    model[$fam]=$WORK/$fam/bundle/ldm
  fi
done

for m in "${!model[@]}"; do
  for t in $TEST_FAMILIES; do
    out="$WORK/compare/${m}_model_on_${t}"
    [[ -f "$out/compare.md" ]] && continue
    rm -rf "$out"
    "$KLDM" compare "$(data_of "$t")/singlecoil_test" --out "$out" --accel 4,8 \
      --methods zero-filled,cs-wavelet,cgs --model "${model[$m]}" --threads 1
  done
done
