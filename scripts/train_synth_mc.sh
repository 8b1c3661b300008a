#!/usr/bin/env bash
# Reproduce the multi-coil evidence (docs/results.md, "Multi-coil (synthetic, 4 coils)") on the
# CPU, end to end: 4-coil synthetic data -> first stage (configs/synth_mc_ae_kl_3.yaml) -> its
# test-split score on fully sampled k-space -> latents (train, val) -> latent denoiser
# (configs/synth_mc_ldm.yaml) -> zero-filled / cgs-ref / cgs on the held-out test split at 4x and
# 8x -> markdown table. Every stage is skipped (or resumed) when its output already exists.
#   scripts/train_synth_mc.sh [WORK_DIR]          (default runs/synth_mc)
# Environment: KLDM (default .venv/bin/kldm), AE_STEPS (3200 in the config), LDM_STEPS (1250),
# AE_SET (one more first-stage override, e.g. AE_SET=data.coil_phase=true), PARALLEL_EVAL=1
# evaluates 4x and 8x in two processes. One torch thread per process.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-runs/synth_mc}
KLDM=${KLDM:-.venv/bin/kldm}
PY=${PY:-$(dirname "$KLDM")/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
DATA=$W/synth96mc
AE=$W/ae
LAT=$W/latents
LDM=$W/ldm
EVAL=$W/eval
mkdir -p "$W"

if [[ ! -d "$DATA/multicoil_test" ]]; then
  "$KLDM" data synth "$DATA" --coils 4 --train 32 --val 2 --test 4 --shape 96x96 \
    --recon-size 48 --slices 8 --seed 0
fi

AE_SETS=(--set "data.train=$DATA/multicoil_train" --set "data.val=$DATA/multicoil_val")
[[ -n "${AE_STEPS:-}" ]] && AE_SETS+=(--set "train.max_steps=$AE_STEPS")
[[ -n "${AE_SET:-}" ]] && AE_SETS+=(--set "$AE_SET")
if [[ -f "$AE/checkpoints/latest.json" ]]; then
  "$KLDM" train --stage ae --resume "$AE" "${AE_SETS[@]}"
else
  "$KLDM" train --stage ae --config configs/synth_mc_ae_kl_3.yaml --out "$AE" "${AE_SETS[@]}"
fi
if [[ ! -f "$AE/test_metrics.md" ]]; then
  "$KLDM" eval-ae "$AE/best" "$DATA/multicoil_test" --out "$AE/test_recon" \
    --markdown "$AE/test_metrics.md"
fi

for part in train val; do
  "$KLDM" extract-latents --ckpt "$AE/best" --data "$DATA/multicoil_$part" --out "$LAT" \
    --partition "$part"
done

LDM_SETS=(--set "data.train=$LAT/train" --set "data.val=$LAT/val")
[[ -n "${LDM_STEPS:-}" ]] && LDM_SETS+=(--set "train.max_steps=$LDM_STEPS")
if [[ -f "$LDM/checkpoints/latest.json" ]]; then
  "$KLDM" train --stage ldm --resume "$LDM" "${LDM_SETS[@]}"
else
  "$KLDM" train --stage ldm --config configs/synth_mc_ldm.yaml --out "$LDM" "${LDM_SETS[@]}"
fi

if [[ "${PARALLEL_EVAL:-0}" == 1 ]]; then
  ACCELS=4:0.08 KLDM=$KLDM scripts/eval_ldm_synth.sh "$DATA/multicoil_test" "$LDM/best" "$EVAL" &
  ACCELS=8:0.04 KLDM=$KLDM scripts/eval_ldm_synth.sh "$DATA/multicoil_test" "$LDM/best" "$EVAL"
  wait
else
  KLDM=$KLDM scripts/eval_ldm_synth.sh "$DATA/multicoil_test" "$LDM/best" "$EVAL"
fi
"$PY" scripts/ldm_results_table.py "$EVAL" --json "$EVAL/tables.json" | tee "$EVAL/tables.md"
