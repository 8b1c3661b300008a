#!/usr/bin/env bash
# Optional system tools that tests and benchmarks use as references (never requirements of
# `pip install .`): BART (`bart pics`, `bart ecalib`), ISMRMRD tools and library
# (`ismrmrd_generate_cartesian_shepp_logan`, libismrmrd for kldm-recon's ISMRMRD input) and
# dicom3tools (`dciodvfy`, a DICOM validator). CI installs them when they are missing; if apt is
# not usable the tests that need them skip with the reason, so this step never fails CI.
set -uo pipefail
missing=()
command -v bart >/dev/null || missing+=(bart)
command -v ismrmrd_generate_cartesian_shepp_logan >/dev/null || missing+=(ismrmrd-tools)
[[ -f /usr/include/ismrmrd/ismrmrd.h ]] || missing+=(libismrmrd-dev)
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
if (( ${#missing[@]} == 0 )); then
  echo "system-deps: bart, ismrmrd-tools, libismrmrd-dev, dicom3tools present"; exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]} (not root or no apt-get): tests that need them skip"; exit 0
fi
echo "system-deps: installing ${missing[*]}"
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"; } \
    >/tmp/kldm-system-deps.log 2>&1; then
  echo "system-deps: apt-get failed (log /tmp/kldm-system-deps.log): tests that need them skip"
fi
exit 0
