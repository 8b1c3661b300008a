#!/usr/bin/env bash
# Coil-agnostic multi-coil evaluation: the bundled single-coil demo model on held-out synthetic
# multi-coil volumes (varied coil geometry; 6, 12, 15 coils, counts never used in any training),
# zero-filled RSS vs regularised CG-SENSE (ESPIRiT maps) vs cgs with SENSE data consistency.
#   scripts/eval_multicoil_agnostic.sh OUT_DIR
set -euo pipefail
out=$1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
model=kspace_ldm/pretrained/demo/ldm
for c in 6 12 15; do
  kldm data synth "$out/data$c" --test 2 --coils "$c" --coil-geometry varied --shape 96x96 \
    --recon-size 48 --slices 8 --seed "400$c" > /dev/null
done
for ac in 4:0.08 8:0.04; do
  accel=${ac%%:*}; cf=${ac##*:}
  for c in 6 12 15; do
    test_dir=$out/data$c/multicoil_test
    for s in zero-filled cgs cg-sense; do
      dest=$out/${s}_${c}c_${accel}x
      rm -rf "$dest"
      if [ "$s" = cg-sense ]; then
        python scripts/cg_sense_baseline.py "$test_dir" "$dest" --accel "$accel" \
          --center-fraction "$cf"
      else
        args=(); [ "$s" = cgs ] && args=(--model "$model")
        kldm recon "$test_dir" --out "$dest" --sampler "$s" --accel "$accel" \
          --center-fraction "$cf" "${args[@]}" 2>&1 | grep -v '^recon'
      fi
      kldm evaluate --pred "$dest" --target "$test_dir" --json "$dest.json" > /dev/null
    done
  done
done
