#!/usr/bin/env bash
# Shared by the training recipes (scripts/train_demo_model.sh, train_multicoil_agnostic.sh,
# train_unet_baseline.sh; sourced after `cd` to the repository root): the tool paths and the two
# stage runners, so every recipe resumes and skips the same way.
#   KLDM [.venv/bin/kldm] PY [.venv/bin/python]
KLDM=${KLDM:-.venv/bin/kldm}
PY=${PY:-.venv/bin/python}

# kldm_train_stage STAGE CONFIG RUN_DIR TRAIN_DIR VAL_DIR STEPS EVERY
# Train STAGE (ae | ldm | unet) from CONFIG into RUN_DIR, or resume RUN_DIR from its last
# checkpoint when it has one (raising STEPS and rerunning continues a run), validating and
# checkpointing every EVERY steps; an empty STEPS keeps the config's train.max_steps.
kldm_train_stage() {
  local stage=$1 config=$2 run=$3 train=$4 val=$5 steps=$6 every=$7
  local sets=(--set "data.train=$train" --set "data.val=$val" --set "train.val_every=$every"
    --set "train.ckpt_every=$every")
  [[ -n "$steps" ]] && sets+=(--set "train.max_steps=$steps")
  if [[ -f "$run/checkpoints/latest.json" ]]; then
    "$KLDM" train --stage "$stage" --resume "$run" "${sets[@]}"
  else
    "$KLDM" train --stage "$stage" --config "$config" --out "$run" "${sets[@]}"
  fi
}

# kldm_extract_latents AE_CKPT DATA_PREFIX LATENT_DIR
# Latents of DATA_PREFIX{train,val} (e.g. DATA/singlecoil_) under LATENT_DIR/{train,val}.
kldm_extract_latents() {
  local ckpt=$1 prefix=$2 out=$3 part
  for part in train val; do
    "$KLDM" extract-latents --ckpt "$ckpt" --data "$prefix$part" --out "$out" --partition "$part"
  done
}
