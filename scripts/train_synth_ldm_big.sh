#!/usr/bin/env bash
# Reproduce docs/results.md "Third setting: a latent denoiser trained on 8x more slices": the same
# first stage and test split as the single-coil results, a latent denoiser (configs/synth_ldm.yaml,
# 6000 steps) trained on the 32 original training volumes plus 224 new synthetic volumes (seed 7,
# file names checked disjoint from every split of DATA), then zero-filled / cgs-ref / cgs (default,
# and 8 samples from t0 700, the setting chosen on the validation split) on the held-out test split.
#   scripts/train_synth_ldm_big.sh DATA AE_RUN [WORK_DIR]
# DATA: the single-coil synthetic folder of the results (kldm data synth DATA --train 32 --val 2
# --test 4 --shape 96x96 --recon-size 48 --slices 8 --seed 0); AE_RUN: its first stage (the
# step-4000 K-AE, configs/synth_ae_kl_3.yaml). Stages whose output exists are skipped.
# Environment: KLDM (default .venv/bin/kldm). One torch thread per process (~40 min of LDM
# training on one core of the 2-core CPU box, ~3.6 steps/s).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=$1; AE=$2; W=${3:-runs/synth_ldm_big}
KLDM=${KLDM:-.venv/bin/kldm}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
EXTRA=$W/synth_extra
LAT=$W/latents
mkdir -p "$W"

if [[ ! -d "$EXTRA/singlecoil_train" ]]; then
  "$KLDM" data synth "$EXTRA" --train 224 --val 1 --test 1 --shape 96x96 --recon-size 48 \
    --slices 8 --seed 7
fi
# The new training volumes must not be any volume of DATA (above all its test split).
clash=$(comm -12 <(ls "$EXTRA/singlecoil_train" | sort) <(ls "$DATA"/singlecoil_* | sort) || true)
if [[ -n "$clash" ]]; then echo "error: $EXTRA repeats volumes of $DATA: $clash" >&2; exit 1; fi

if [[ ! -f "$LAT/stats.json" ]]; then
  # Statistics (stats.json) from the 224 new volumes; the 32 original ones are added as shards.
  "$KLDM" extract-latents --ckpt "$AE" --data "$EXTRA/singlecoil_train" --out "$LAT" \
    --partition train
  "$KLDM" extract-latents --ckpt "$AE" --data "$DATA/singlecoil_train" --out "$W/latents_orig" \
    --partition train
  cp "$W/latents_orig/train/"*.safetensors "$LAT/train/"
  "$KLDM" extract-latents --ckpt "$AE" --data "$DATA/singlecoil_val" --out "$LAT" --partition val
fi

if [[ -f "$W/ldm/checkpoints/latest.json" ]]; then  # resume (a finished run has nothing left)
  "$KLDM" train --stage ldm --resume "$W/ldm"
else
  "$KLDM" train --stage ldm --config configs/synth_ldm.yaml --out "$W/ldm" \
    --set "data.train=$LAT/train" --set "data.val=$LAT/val"
fi

KLDM=$KLDM SAMPLERS="zero-filled cgs" scripts/eval_ldm_synth.sh "$DATA/singlecoil_test" \
  "$W/ldm/best" "$W/eval_n8" --t0 700 --samples 8
KLDM=$KLDM SAMPLERS="cgs cgs-ref" scripts/eval_ldm_synth.sh "$DATA/singlecoil_test" \
  "$W/ldm/best" "$W/eval"
