#!/usr/bin/env bash
# Coil-agnostic multi-coil evaluation: the bundled single-coil demo model on held-out synthetic
# multi-coil volumes (varied coil geometry; 6, 12, 15 coils, counts never used in any training),
# zero-filled RSS vs regularised CG-SENSE, cs-wavelet and cs-tv (all with the ESPIRiT maps of
# cgs), `bart pics -l1` with `bart ecalib` maps (when bart is installed) vs cgs with SENSE data
# consistency.
#   scripts/eval_multicoil_agnostic.sh OUT_DIR
# Environment: MODEL (default the bundled demo model), METHODS (default all of the above),
# BART_LAM (bart pics -r, default that of scripts/bart_pics_baseline.py), KLDM, PY.
set -euo pipefail
out=$1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
KLDM=${KLDM:-kldm}
PY=${PY:-python}
model=${MODEL:-kspace_ldm/pretrained/demo/ldm}
methods=${METHODS:-zero-filled cg-sense cs-wavelet cs-tv bart-pics cgs}
bart_lam=()
[ -n "${BART_LAM:-}" ] && bart_lam=(--lam "$BART_LAM")
for c in 6 12 15; do
  [ -d "$out/data$c/multicoil_test" ] && continue
  "$KLDM" data synth "$out/data$c" --test 2 --coils "$c" --coil-geometry varied --shape 96x96 \
    --recon-size 48 --slices 8 --seed "400$c" > /dev/null
done
for ac in 4:0.08 8:0.04; do
  accel=${ac%%:*}; cf=${ac##*:}
  for c in 6 12 15; do
    test_dir=$out/data$c/multicoil_test
    for s in $methods; do
      dest=$out/${s}_${c}c_${accel}x
      rm -rf "$dest"
      if [ "$s" = cg-sense ]; then
        "$PY" scripts/cg_sense_baseline.py "$test_dir" "$dest" --accel "$accel" \
          --center-fraction "$cf"
      elif [ "$s" = bart-pics ]; then
        if ! command -v bart > /dev/null; then echo "bart not installed: no bart-pics" >&2; continue; fi
        "$PY" scripts/bart_pics_baseline.py "$test_dir" "$dest" --accel "$accel" \
          --center-fraction "$cf" "${bart_lam[@]}"
      else
        args=(); [ "$s" = cgs ] && args=(--model "$model")
        "$KLDM" recon "$test_dir" --out "$dest" --sampler "$s" --accel "$accel" \
          --center-fraction "$cf" "${args[@]}" 2>&1 | grep -v '^recon'
      fi
      "$KLDM" evaluate --pred "$dest" --target "$test_dir" --json "$dest.json" > /dev/null
    done
  done
done
