"""``kldm data convert``: ISMRMRD raw datasets <-> fastMRI HDF5 volumes, both directions.

ISMRMRD -> fastMRI does what fastMRI's own data pipeline did: k-space on the encoded grid
(readout oversampling kept, unacquired lines zero), the ISMRMRD XML as ``ismrmrd_header``; an
undersampled file also gets ``mask`` ``[W]`` (the lines present) and the test-file attributes
``acceleration`` and ``num_low_frequency``; the calibration block is kept as ``acs_start`` /
``acs_stop`` and the slice geometry as ``ismrmrd_position`` / ``_read_dir`` / ``_phase_dir`` /
``_slice_dir`` / ``_patient_table_position`` (``[S, 3]``) so that the way back restores them.
Only repetition 0 is converted (a fastMRI file holds one image per slice); the per-acquisition
header fields other than the line, slice, flags and geometry are not carried over.

fastMRI -> ISMRMRD writes one acquisition per slice and present line (the file's mask, else
every line of the header's acquired window) with the samples unchanged, so a round trip
ISMRMRD -> fastMRI -> ISMRMRD keeps every sample bit for bit and the same lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kspace_ldm.data.fastmri import (
    FastMRIFile,
    list_h5_files,
    make_ismrmrd_header,
    write_fastmri_file,
)
from kspace_ldm.data.ismrmrd_io import SliceGeometry, is_ismrmrd_file, read_ismrmrd, write_ismrmrd
from kspace_ldm.errors import InputError

DIRECTIONS = ("fastmri", "ismrmrd")
_GEOMETRY_KEYS = ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position")


def ismrmrd_to_fastmri(src: str | Path, dst: str | Path) -> Path:
    """Convert one ISMRMRD raw dataset into a fastMRI-format file ``dst`` (atomically)."""
    vol = read_ismrmrd(src)
    attrs: dict = {"source_format": "ismrmrd"}
    if vol.calibration is not None:
        attrs["acs_start"], attrs["acs_stop"] = vol.calibration
    for key in _GEOMETRY_KEYS:
        attrs[f"ismrmrd_{key}"] = np.asarray(
            [getattr(g, key) for g in vol.geometry], dtype=np.float64
        )
    mask = None
    if vol.has_mask:
        mask = vol.lines
        attrs["acceleration"] = float(vol.acceleration)
        attrs["num_low_frequency"] = int(vol.num_low_frequency or 0)
    return write_fastmri_file(dst, vol.kspace, header=vol.header_xml, attrs=attrs, mask=mask)


def _fastmri_calibration(f: FastMRIFile, width: int) -> tuple[int, int] | None:
    attrs = f.attrs
    if "acs_start" in attrs and "acs_stop" in attrs:
        start, stop = int(attrs["acs_start"]), int(attrs["acs_stop"])
        if not 0 <= start < stop <= width:
            raise InputError(f.path, f"acs_start/acs_stop {start}/{stop} outside 0..{width}")
        return start, stop
    nlf = f.num_low_frequency
    if nlf:
        # fastMRI's centred block: columns pad .. pad + nlf with pad = (W - nlf + 1) // 2.
        pad = (width - nlf + 1) // 2
        return pad, pad + nlf
    return None


def _fastmri_geometry(f: FastMRIFile) -> list[SliceGeometry] | None:
    attrs = f.attrs
    if not all(f"ismrmrd_{k}" in attrs for k in _GEOMETRY_KEYS):
        return None
    arrays = [np.asarray(attrs[f"ismrmrd_{k}"], dtype=np.float64) for k in _GEOMETRY_KEYS]
    if any(a.shape != (f.num_slices, 3) for a in arrays):
        raise InputError(f.path, f"ismrmrd_* geometry attributes are not [{f.num_slices}, 3]")
    return [
        SliceGeometry(*(tuple(float(v) for v in a[s]) for a in arrays)) for s in range(f.num_slices)
    ]


def fastmri_to_ismrmrd(src: str | Path, dst: str | Path) -> Path:
    """Convert one fastMRI-format file into an ISMRMRD raw dataset ``dst`` (atomically)."""
    with FastMRIFile(src) as f:
        kspace = f.read_volume_kspace()
        hdr = f.header
        width = f.kspace_shape[-1]
        xml = f.header_xml
        if xml is None:
            xml = make_ismrmrd_header(
                hdr.encoding_size, hdr.recon_size, width // 2, hdr.padding_right - 1
            )
        lines = np.zeros(width, dtype=bool)
        lines[hdr.padding_left : hdr.padding_right] = True
        if f.has_mask:
            lines &= f.mask
        return write_ismrmrd(
            dst,
            kspace,
            xml,
            lines,
            calibration=_fastmri_calibration(f, width),
            geometry=_fastmri_geometry(f),
        )


def convert(
    src: str | Path, dst: str | Path, to: str | None = None, overwrite: bool = False
) -> list[tuple[Path, Path]]:
    """Convert a file or every ``*.h5`` of a folder; the direction is from each file's layout
    (ISMRMRD -> fastMRI, fastMRI -> ISMRMRD) unless ``to`` names the target format.

    ``dst`` is a folder (outputs keep the input names) unless ``src`` is one file and ``dst``
    ends in ``.h5``. An existing output file is refused unless ``overwrite`` (raw data are never
    replaced by accident), and so is an output folder that is an input folder. Returns
    ``(source, output)`` pairs.
    """
    from ..io import check_output_dir

    if to is not None and to not in DIRECTIONS:
        raise InputError("--to", f"unknown format {to!r} (available: {', '.join(DIRECTIONS)})")
    src, dst = Path(src), Path(dst)
    files = list_h5_files(src)
    single = src.is_file() and dst.suffix == ".h5"
    if not single:
        check_output_dir(dst, sorted({src if src.is_dir() else src.parent}))
    plans = []
    for path in files:
        kind = "ismrmrd" if is_ismrmrd_file(path) else "fastmri"
        target = to or ("fastmri" if kind == "ismrmrd" else "ismrmrd")
        if target == kind:
            raise InputError(path, f"is already a {kind} file")
        out = dst if single else dst / path.name
        if out.resolve() == path.resolve():
            raise InputError(path, "the output would overwrite the input")
        if out.is_dir():
            raise InputError(out, "is a directory, where the converted file would be written")
        if out.exists() and not overwrite:
            raise InputError(
                out, "exists; refusing to overwrite it (give --overwrite to replace it)"
            )
        plans.append((path, out, target))
    done = []
    for path, out, target in plans:
        func = ismrmrd_to_fastmri if target == "fastmri" else fastmri_to_ismrmrd
        done.append((path, func(path, out)))
    return done
