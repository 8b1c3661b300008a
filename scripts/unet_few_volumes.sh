#!/usr/bin/env bash
# Few training volumes: the supervised U-Net (configs/demo_unet.yaml) trained
# on the first N of the demo model's 32 synthetic training volumes (N in $COUNTS), against the
# bundled cgs demo model (trained, unpaired, on all 32) on the same held-out test split, 4x and 8x
# random masks (kldm compare: one mask per volume seeded by file name, fastMRI metrics).
#
#   scripts/unet_few_volumes.sh [WORK_DIR]         (default WORK_DIR: runs/unet_few)
#
# Environment: COUNTS="2 8 32", STEPS=1500 (a short cosine schedule: the full 6000-step run's
#   best validation checkpoint was step 1500, docs/results.md), EVERY=250 (validation and
#   checkpoint interval; the test rows use RUN/best), DATA=... reuses existing demo data,
#   KLDM=.venv/bin/kldm. One torch thread. Results: docs/results.md, "Supervised U-Net baseline".
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-runs/unet_few}
KLDM=${KLDM:-.venv/bin/kldm}
COUNTS=${COUNTS:-"2 8 32"}
STEPS=${STEPS:-1500}
EVERY=${EVERY:-250}
DATA=${DATA:-$WORK/data/synth96}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

if [[ ! -d "$DATA/singlecoil_test" ]]; then
  "$KLDM" data synth "$DATA" --train 32 --val 2 --test 4 --shape 96x96 --recon-size 48 \
    --slices 8 --seed 0
fi
mapfile -t files < <(ls "$DATA"/singlecoil_train/*.h5 | sort)
for n in $COUNTS; do
  sub=$WORK/train_$n
  if [[ ! -d "$sub" ]]; then
    mkdir -p "$sub.tmp"
    cp "${files[@]:0:$n}" "$sub.tmp/"
    mv "$sub.tmp" "$sub"
  fi
  run=$WORK/unet_$n
  sets=(--set "data.train=$sub" --set "data.val=$DATA/singlecoil_val" --set "train.max_steps=$STEPS"
    --set "train.val_every=$EVERY" --set "train.ckpt_every=$EVERY")
  t0=$(date +%s)
  if [[ -f "$run/checkpoints/latest.json" ]]; then
    "$KLDM" train --stage unet --resume "$run" "${sets[@]}"
  else
    "$KLDM" train --stage unet --config configs/demo_unet.yaml --out "$run" "${sets[@]}"
  fi
  echo "[unet_few] N=$n training wall time: $(( $(date +%s) - t0 )) s"
  rm -rf "$WORK/compare_$n"
  "$KLDM" compare "$DATA/singlecoil_test" --out "$WORK/compare_$n" --accel 4,8 \
    --methods unet --unet-model "$run" --threads 1
done
# The methods that do not depend on N, once (cgs: the bundled demo model).
if [[ ! -f "$WORK/compare_baselines/compare.md" ]]; then
  rm -rf "$WORK/compare_baselines"
  "$KLDM" compare "$DATA/singlecoil_test" --out "$WORK/compare_baselines" --accel 4,8 \
    --methods zero-filled,cs-wavelet,cgs --threads 1
fi
