#!/usr/bin/env bash
# Quick start, command 1: set everything up on a fresh machine and run the demo.
#   scripts/demo.sh [kldm demo options...]      (default output folder: demo_out/)
# Creates .venv (CPU torch 2.13.0), installs kspace-ldm (compiling the native core) and runs
# `kldm demo`: synthetic fastMRI-format data -> undersampling at 4x and 8x -> reconstruction ->
# fastMRI-protocol evaluation -> PNG panel and metrics table.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$KLDM_ROOT"
kldm_setup_venv
exec "$KLDM_VENV/bin/kldm" demo "$@"
