#!/usr/bin/env bash
# Quick start, command 1: set everything up on a fresh machine and run the demo.
#   scripts/demo.sh [kldm demo options...]      (default output folder: demo_out/)
# Creates .venv (CPU torch 2.13.0), installs kspace-ldm (compiling the native core) and runs
# `kldm demo` on the bundled pretrained model: held-out synthetic single-coil volumes ->
# undersampling (4x random mask) -> zero-filled and cgs (latent diffusion in k-space)
# reconstruction -> fastMRI-protocol evaluation -> demo_out/panel.png, metrics.md, metrics.json.
# The setup time is recorded in metrics.json ("seconds": {"setup": ...}).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$KLDM_ROOT"
t_setup=$SECONDS
kldm_setup_venv
export KLDM_SETUP_SECONDS=$((SECONDS - t_setup))
exec "$KLDM_VENV/bin/kldm" demo "$@"
