#!/usr/bin/env bash
# The README's overview figure and the demo tables of docs/results.md: `kldm demo` on the bundled
# model at 4x and 8x; the 4x panel becomes docs/images/demo_panel.png, the 8x one
# docs/images/demo_panel_8x.png; the tables are printed (and kept in OUT/<a>x/metrics.md).
#   scripts/make_overview_figure.sh [OUT]        (default OUT: build/overview)
set -euo pipefail
cd "$(dirname "$0")/.."
KLDM=${KLDM:-.venv/bin/kldm}
OUT=${1:-build/overview}
for accel in 4 8; do
  rm -rf "$OUT/${accel}x"
  "$KLDM" demo --accel "$accel" --out "$OUT/${accel}x" 2>/dev/null
done
cp "$OUT/4x/panel.png" docs/images/demo_panel.png
cp "$OUT/8x/panel.png" docs/images/demo_panel_8x.png
echo "figures: docs/images/demo_panel.png docs/images/demo_panel_8x.png"
