#!/usr/bin/env bash
# Evaluate zero-filled, cgs-ref and cgs on a held-out fastMRI-format folder at 4x (0.08) and
# 8x (0.04) random masks (seeded by file name), fastMRI-protocol metrics per volume.
#   scripts/eval_ldm_synth.sh TEST_DIR LDM_RUN OUT_DIR [extra cgs args, e.g. --steps 10 --t0 400]
# Writes OUT_DIR/<sampler>_<accel>x/ (reconstructions), <sampler>_<accel>x.{json,md,log}.
# CGS_REF_ARGS (environment) are passed to cgs-ref (default: the reference's T0 100, lambda 100).
# ACCELS (environment): accel:centre-fraction pairs (default "4:0.08 8:0.04"), e.g. ACCELS=8:0.04
# to run one acceleration per process; SAMPLERS: default "zero-filled cgs-ref cgs".
set -euo pipefail
test_dir=$1; model=$2; out=$3; shift 3
kldm=${KLDM:-kldm}
mkdir -p "$out"
for ac in ${ACCELS:-4:0.08 8:0.04}; do
  accel=${ac%%:*}; cf=${ac##*:}
  for sampler in ${SAMPLERS:-zero-filled cgs-ref cgs}; do
    args=()
    case $sampler in
      cgs) args=(--model "$model" "$@") ;;
      cgs-ref) args=(--model "$model" ${CGS_REF_ARGS:-}) ;;
    esac
    dest="$out/${sampler}_${accel}x"
    rm -rf "$dest"
    "$kldm" recon "$test_dir" --out "$dest" --sampler "$sampler" --mask random \
      --accel "$accel" --center-fraction "$cf" --batch-size 8 "${args[@]}" 2>&1 \
      | grep -v '^recon' | tee "$dest.log"
    "$kldm" evaluate --pred "$dest" --target "$test_dir" --json "$dest.json" \
      --markdown "$dest.md" | tail -2
  done
done
