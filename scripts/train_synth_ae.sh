#!/usr/bin/env bash
# Reproduce the first-stage acceptance result (docs/results.md): generate the synthetic set, train
# configs/synth_ae_kl_3.yaml on the CPU, and evaluate the best checkpoint on the held-out test
# split by the fastMRI protocol. Resumable: rerunning continues the run from its last checkpoint.
#   [CONFIG=configs/synth_ae_kl_3.yaml] scripts/train_synth_ae.sh [DATA_DIR] [RUN_DIR] [KEY=VALUE...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/synth96}
RUN=${2:-runs/synth_ae_kl_3}
shift $(( $# > 2 ? 2 : $# ))
KLDM=${KLDM:-.venv/bin/kldm}
CONFIG=${CONFIG:-configs/synth_ae_kl_3.yaml}
if [[ ! -d "$DATA/singlecoil_test" ]]; then
  "$KLDM" data synth "$DATA" --train 32 --val 2 --test 4 --shape 96x96 --recon-size 48 \
    --slices 8 --seed 0
fi
SETS=(--set "data.train=$DATA/singlecoil_train" --set "data.val=$DATA/singlecoil_val")
for o in "$@"; do SETS+=(--set "$o"); done
if [[ -f "$RUN/checkpoints/latest.json" ]]; then
  "$KLDM" train --stage ae --resume "$RUN" "${SETS[@]}"
else
  "$KLDM" train --stage ae --config "$CONFIG" --out "$RUN" "${SETS[@]}"
fi
"$KLDM" eval-ae "$RUN/best" "$DATA/singlecoil_test" --out "$RUN/test_recon" \
  --markdown "$RUN/test_metrics.md"
