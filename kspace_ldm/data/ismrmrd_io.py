"""ISMRMRD raw data: read Cartesian 2-D datasets into the fastMRI in-memory layout, write them back.

An ISMRMRD HDF5 file holds a group (``/dataset`` by default) with ``xml`` (the ISMRMRD header) and
``data`` (one record per acquired readout line: a header with flags and encoding counters, and the
samples ``[coils, readout]``). Reading turns it into what :class:`~kspace_ldm.data.fastmri.
FastMRIFile` gives, so every sampler and ``kldm recon`` work on it unchanged:

* k-space ``[slices, H, W]`` (one coil) or ``[slices, coils, H, W]``, complex64, ``H`` the readout
  (the encodedSpace ``x`` samples, oversampling included, as in fastMRI's files), ``W`` the
  encodedSpace ``y`` phase-encode grid. Line ``kspace_encode_step_1 = l`` lands in column
  ``l + W // 2 - center`` (``center`` from ``encodingLimits/kspace_encoding_step_1``), the layout
  fastMRI's converter used, so :class:`~kspace_ldm.data.fastmri.Header` paddings apply as-is.
* the sampling mask ``[W]``: exactly the lines present in the file (the same lines in every slice;
  anything else is an error). Calibration-only lines (``ACQ_IS_PARALLEL_CALIBRATION``) are real
  samples at their k-space positions and count as measured.
* the calibration region: the contiguous run of columns flagged ``ACQ_IS_PARALLEL_CALIBRATION`` or
  ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING`` around the centre.
* readout oversampling is removed as fastMRI removes it: the image is cropped to the reconSpace
  matrix after the inverse FFT (:func:`kspace_ldm.recon.recon_size`). The models are trained on
  oversampled k-space (fastMRI's and the synthetic files are 2x oversampled in the readout), so
  the k-space handed to a sampler keeps the encoded grid.

Noise, navigator, phase-correction, feedback and dummy-scan acquisitions are skipped; only the
repetition asked for (default 0) is read. Everything else that does not fit -- no encoding
section, a non-Cartesian trajectory, 3-D encoding, several contrasts/phases/sets/averages, lines
that differ in length or coil count, a line acquired twice, slices with different lines, a
truncated file -- is an :class:`~kspace_ldm.errors.InputError` naming the file and the problem.

The ``ismrmrd`` package is imported lazily (``pip install 'kspace-ldm[formats]'``).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kspace_ldm.data.fastmri import Header
from kspace_ldm.errors import InputError
from kspace_ldm.io import atomic_path

DATASET = "dataset"
# Geometry written when a source has none: the scanner's identity orientation.
DEFAULT_READ_DIR = (1.0, 0.0, 0.0)
DEFAULT_PHASE_DIR = (0.0, 1.0, 0.0)
DEFAULT_SLICE_DIR = (0.0, 0.0, 1.0)


def require(module: str) -> Any:
    """Import an optional package or raise a one-line :class:`InputError` naming it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        dist = {"ismrmrd": "ismrmrd", "pydicom": "pydicom", "nibabel": "nibabel"}.get(
            module, module
        )
        raise InputError(
            None,
            f"the Python package {dist!r} is not installed "
            f"(pip install {dist}, or pip install 'kspace-ldm[formats]')",
        ) from None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def ismrmrd_group(path: str | Path) -> str | None:
    """Name of the ISMRMRD dataset group of an HDF5 file (one holding ``data`` and ``xml``),
    ``None`` for any other file (fastMRI files, unreadable files)."""
    try:
        with h5py.File(path, "r") as f:
            names = [DATASET, *sorted(k for k in f if k != DATASET)]
            for name in names:
                obj = f.get(name)
                if isinstance(obj, h5py.Group) and "xml" in obj and "data" in obj:
                    return name
    except (OSError, ValueError):
        return None
    return None


def is_ismrmrd_file(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file with an ISMRMRD ``/dataset/data`` + ``/dataset/xml``."""
    return ismrmrd_group(path) is not None


@dataclass(frozen=True)
class SliceGeometry:
    """Where one slice lies in the patient coordinate system (ISMRMRD and DICOM: LPS, mm).

    ``position`` is the centre of the slice; the unit vectors give the readout (image rows of
    ``[H, W]``), phase-encode and slice-normal directions.
    """

    position: tuple[float, float, float]
    read_dir: tuple[float, float, float] = DEFAULT_READ_DIR
    phase_dir: tuple[float, float, float] = DEFAULT_PHASE_DIR
    slice_dir: tuple[float, float, float] = DEFAULT_SLICE_DIR
    patient_table_position: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class IsmrmrdVolume:
    """A Cartesian 2-D ISMRMRD dataset in fastMRI layout (see the module docstring).

    Attributes:
        path: the source file.
        kspace: complex64 ``[S, H, W]`` (one coil) or ``[S, C, H, W]``; zero where not acquired.
        lines: bool ``[W]``: the columns present in the file (the same in every slice).
        calibration: ``(start, stop)`` columns of the ACS block, or ``None`` without ACS flags.
        header: the :class:`Header` (encoded and recon matrix, acquired window).
        header_xml: the ISMRMRD XML as stored.
        encoded_fov_mm, recon_fov_mm: ``(x, y, z)`` fields of view.
        geometry: one :class:`SliceGeometry` per slice (from its first acquisition).
        acquisition_headers: per slice and column, the raw header fields (numpy records) kept so
            a conversion back to ISMRMRD can restore them.
    """

    path: Path
    kspace: np.ndarray
    lines: np.ndarray
    calibration: tuple[int, int] | None
    header: Header
    header_xml: str
    encoded_fov_mm: tuple[float, float, float]
    recon_fov_mm: tuple[float, float, float]
    geometry: list[SliceGeometry]
    attrs: dict[str, Any] = field(default_factory=dict)

    # ---- the FastMRIFile interface that kldm recon uses ---------------------------------------

    @property
    def num_slices(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def is_multicoil(self) -> bool:
        return self.kspace.ndim == 4

    @property
    def num_coils(self) -> int:
        return int(self.kspace.shape[1]) if self.is_multicoil else 1

    @property
    def kspace_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.kspace.shape)

    @property
    def fully_sampled(self) -> bool:
        """Every column of the acquired window ``[padding_left, padding_right)`` is present."""
        hdr = self.header
        return bool(self.lines[hdr.padding_left : hdr.padding_right].all())

    @property
    def has_mask(self) -> bool:
        """An undersampled file carries its own mask (like a fastMRI test file); a fully sampled
        one is undersampled retrospectively by ``kldm recon --mask`` (like a training file)."""
        return not self.fully_sampled

    @property
    def mask(self) -> np.ndarray | None:
        return self.lines.copy() if self.has_mask else None

    @property
    def acceleration(self) -> float | None:
        return float(self.lines.size / max(int(self.lines.sum()), 1)) if self.has_mask else None

    @property
    def num_low_frequency(self) -> int | None:
        return None if self.calibration is None else self.calibration[1] - self.calibration[0]

    def read_kspace(self, slice_idx: int) -> np.ndarray:
        """complex64 ``[H, W]`` or ``[C, H, W]`` of one slice."""
        return self.kspace[int(slice_idx)]

    def read_volume_kspace(self) -> np.ndarray:
        return self.kspace

    def close(self) -> None:
        """Nothing is held open (the file is read whole at open)."""

    def __enter__(self) -> IsmrmrdVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def _triple(obj: Any, cast=float) -> tuple:
    return (cast(obj.x), cast(obj.y), cast(obj.z))


def _parse_header(xml: str, path: Path) -> tuple[Any, Any]:
    """(ismrmrdHeader, its one encoding), parsed by the ismrmrd package; checks 2-D Cartesian."""
    ismrmrd = require("ismrmrd")
    try:
        hdr = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as err:  # the xsdata parser raises several types; all mean a bad document
        raise InputError(path, f"invalid ISMRMRD XML header ({_one_line(err)})") from None
    encodings = list(getattr(hdr, "encoding", None) or [])
    if not encodings:
        raise InputError(path, "the ISMRMRD header has no <encoding> section")
    if len(encodings) > 1:
        raise InputError(
            path, f"{len(encodings)} encoding spaces in the header; only one is supported"
        )
    enc = encodings[0]
    if enc.encodedSpace is None or enc.reconSpace is None or enc.encodedSpace.matrixSize is None:
        raise InputError(path, "the ISMRMRD <encoding> has no encodedSpace/reconSpace matrix")
    traj = getattr(enc.trajectory, "value", enc.trajectory)
    if str(traj).lower() != "cartesian":
        raise InputError(path, f"trajectory {traj!r} is not supported (Cartesian only)")
    ez = int(enc.encodedSpace.matrixSize.z or 1)
    lims = enc.encodingLimits
    step2 = getattr(lims, "kspace_encoding_step_2", None) if lims is not None else None
    if ez > 1 or (step2 is not None and int(step2.maximum or 0) > 0):
        raise InputError(
            path, f"3-D encoding (encodedSpace z = {ez}) is not supported (2-D Cartesian only)"
        )
    return hdr, enc


def _fastmri_header(enc: Any, path: Path) -> Header:
    ex, ey, ez = _triple(enc.encodedSpace.matrixSize, int)
    rx, ry, rz = _triple(enc.reconSpace.matrixSize, int)
    step1 = getattr(enc.encodingLimits, "kspace_encoding_step_1", None)
    if step1 is None:
        # Without limits every line of the encoded grid may be acquired, centred.
        center, maximum = ey // 2, ey - 1
    else:
        center, maximum = int(step1.center), int(step1.maximum)
    left = ey // 2 - center
    if left < 0 or left + maximum + 1 > ey:
        raise InputError(
            path,
            f"kspace_encoding_step_1 limits (maximum {maximum}, center {center}) do not fit the "
            f"encoded matrix y = {ey}",
        )
    return Header((ex, ey, max(ez, 1)), (rx, ry, max(rz, 1)), left, left + maximum + 1)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------

# Acquisitions that carry no image k-space.
_SKIP_FLAGS = (
    "ACQ_IS_NOISE_MEASUREMENT",
    "ACQ_IS_NAVIGATION_DATA",
    "ACQ_IS_PHASECORR_DATA",
    "ACQ_IS_HPFEEDBACK_DATA",
    "ACQ_IS_DUMMYSCAN_DATA",
    "ACQ_IS_RTFEEDBACK_DATA",
    "ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA",
)
_ACS_FLAGS = ("ACQ_IS_PARALLEL_CALIBRATION", "ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING")


def _bit(ismrmrd: Any, name: str) -> int:
    # ISMRMRD flag constants are 1-based bit numbers.
    return 1 << (int(getattr(ismrmrd, name)) - 1)


def _vec(values: Any) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def read_ismrmrd(path: str | Path, *, repetition: int = 0) -> IsmrmrdVolume:
    """Read a Cartesian 2-D ISMRMRD raw dataset into fastMRI layout (see the module docstring).

    Raises:
        InputError: one line naming ``path`` and what is unsupported or inconsistent.
    """
    ismrmrd = require("ismrmrd")
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    group = ismrmrd_group(path)
    if group is None:
        try:
            with h5py.File(path, "r"):
                pass
        except (OSError, ValueError) as err:
            raise InputError(path, f"not a readable HDF5 file ({_one_line(err)})") from None
        raise InputError(path, "not an ISMRMRD dataset (no /dataset/data and /dataset/xml)")
    # Read-only through h5py (the ismrmrd package's Dataset opens files writable); the table of
    # acquisitions is read in one go, each record's header parsed by ismrmrd.Acquisition.
    try:
        with h5py.File(path, "r") as f:
            raw = f[group]["xml"][()]
            table = f[group]["data"][()]
    except (OSError, RuntimeError, KeyError, ValueError) as err:
        raise InputError(path, f"cannot read the ISMRMRD dataset ({_one_line(err)})") from None
    return _read_table(ismrmrd, raw, table, path, repetition)


def _read_table(
    ismrmrd: Any, raw: Any, table: np.ndarray, path: Path, repetition: int
) -> IsmrmrdVolume:
    if isinstance(raw, np.ndarray):
        raw = raw.reshape(-1)[0] if raw.size == 1 else b""
    xml = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    count = int(table.shape[0]) if table.ndim else 0
    hdr, enc = _parse_header(xml, path)
    header = _fastmri_header(enc, path)
    ex, ey = header.encoding_size[:2]
    info = getattr(hdr, "measurementInformation", None)
    position = getattr(getattr(info, "patientPosition", None), "value", None)
    skip = sum(_bit(ismrmrd, n) for n in _SKIP_FLAGS if hasattr(ismrmrd, n))
    acs_bits = sum(_bit(ismrmrd, n) for n in _ACS_FLAGS)
    reverse = _bit(ismrmrd, "ACQ_IS_REVERSE")

    # (slice, column) -> samples [C, ex]; the first acquisition of a slice gives its geometry.
    lines: dict[tuple[int, int], np.ndarray] = {}
    acs_cols: set[int] = set()
    geometry: dict[int, SliceGeometry] = {}
    coils: int | None = None
    for i in range(count):
        try:
            acq = ismrmrd.Acquisition(table[i]["head"])
            samples = np.asarray(table[i]["data"], dtype=np.float32)
            data = samples.view(np.complex64).reshape(acq.active_channels, acq.number_of_samples)
        except Exception as err:
            raise InputError(path, f"cannot read acquisition {i} ({_one_line(err)})") from None
        flags = int(acq.flags)
        if flags & skip:
            continue
        idx = acq.idx
        if int(idx.repetition) != repetition:
            continue
        for counter in ("contrast", "phase", "set", "average"):
            if int(getattr(idx, counter)) != 0:
                raise InputError(
                    path,
                    f"acquisition {i} has {counter} {int(getattr(idx, counter))}; several "
                    f"{counter}s are not supported (one image per slice)",
                )
        if int(idx.kspace_encode_step_2) != 0:
            raise InputError(
                path,
                f"acquisition {i} has kspace_encode_step_2 {int(idx.kspace_encode_step_2)} "
                "(3-D encoding is not supported)",
            )
        if flags & reverse:
            raise InputError(path, f"acquisition {i} is a reversed (EPI) readout; not supported")
        pre, post = int(acq.discard_pre), int(acq.discard_post)
        data = data[:, pre : data.shape[1] - post]
        if data.shape[1] != ex:
            raise InputError(
                path,
                f"acquisition {i} has {data.shape[1]} readout samples (after discard), the "
                f"encodedSpace x is {ex}; partial-echo or mismatched readouts are not supported",
            )
        if coils is None:
            coils = data.shape[0]
        elif data.shape[0] != coils:
            raise InputError(
                path, f"inconsistent coil counts: acquisition {i} has {data.shape[0]}, not {coils}"
            )
        col = int(idx.kspace_encode_step_1) + header.padding_left
        if not header.padding_left <= col < header.padding_right:
            top = header.padding_right - header.padding_left - 1
            raise InputError(
                path,
                f"acquisition {i}: line {int(idx.kspace_encode_step_1)} is outside the "
                f"kspace_encoding_step_1 limits (0..{top})",
            )
        key = (int(idx.slice), col)
        if key in lines:
            raise InputError(
                path,
                f"line {int(idx.kspace_encode_step_1)} of slice {key[0]} is acquired twice "
                f"(acquisition {i}); averages or repeated lines are not supported",
            )
        lines[key] = data
        if flags & acs_bits:
            acs_cols.add(col)
        if key[0] not in geometry:
            geometry[key[0]] = _geometry_of(acq)
    if not lines:
        raise InputError(path, f"no imaging acquisitions (repetition {repetition})")

    slices = sorted({s for s, _ in lines})
    if slices != list(range(len(slices))):
        raise InputError(path, f"slice indices {slices} are not 0..{len(slices) - 1}")
    per_slice = [sorted(c for s, c in lines if s == sl) for sl in slices]
    for sl, cols in enumerate(per_slice):
        if cols != per_slice[0]:
            raise InputError(
                path,
                f"inconsistent line counts: slice {sl} has {len(cols)} lines, slice 0 has "
                f"{len(per_slice[0])} (or different lines); one mask per volume is required",
            )
    assert coils is not None
    kspace = np.zeros((len(slices), coils, ex, ey), dtype=np.complex64)
    for (sl, col), data in lines.items():
        kspace[sl, :, :, col] = data
    mask = np.zeros(ey, dtype=bool)
    mask[per_slice[0]] = True

    return IsmrmrdVolume(
        path=path,
        kspace=kspace[:, 0] if coils == 1 else kspace,
        lines=mask,
        calibration=_calibration_block(acs_cols, ey),
        header=header,
        header_xml=xml,
        encoded_fov_mm=_triple(enc.encodedSpace.fieldOfView_mm),
        recon_fov_mm=_triple(enc.reconSpace.fieldOfView_mm),
        geometry=[geometry[s] for s in slices],
        attrs={
            "source_format": "ismrmrd",
            "repetition": repetition,
            **({"patient_position": str(position)} if position else {}),
        },
    )


def _geometry_of(acq: Any) -> SliceGeometry:
    read, phase, slc = _vec(acq.read_dir), _vec(acq.phase_dir), _vec(acq.slice_dir)
    if not (any(read) and any(phase) and any(slc)):
        # Simulators (ismrmrd_generate_cartesian_shepp_logan) leave the directions zero.
        read, phase, slc = DEFAULT_READ_DIR, DEFAULT_PHASE_DIR, DEFAULT_SLICE_DIR
    return SliceGeometry(_vec(acq.position), read, phase, slc, _vec(acq.patient_table_position))


def _calibration_block(cols: set[int], width: int) -> tuple[int, int] | None:
    """The contiguous run of ACS columns containing (or nearest to) the centre ``width // 2``."""
    if not cols:
        return None
    centre = min(cols, key=lambda c: (abs(c - width // 2), c))
    start = stop = centre
    while start - 1 in cols:
        start -= 1
    while stop + 1 in cols:
        stop += 1
    return start, stop + 1


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def default_geometry(num_slices: int, thickness_mm: float) -> list[SliceGeometry]:
    """Identity orientation, slices stacked along z, ``thickness_mm`` apart, centred on 0."""
    mid = (num_slices - 1) / 2
    return [SliceGeometry((0.0, 0.0, (s - mid) * thickness_mm)) for s in range(num_slices)]


def write_ismrmrd(
    path: str | Path,
    kspace: np.ndarray,
    header_xml: str,
    lines: np.ndarray | None = None,
    *,
    calibration: tuple[int, int] | None = None,
    geometry: Sequence[SliceGeometry] | None = None,
) -> Path:
    """Write k-space ``[S, H, W]`` / ``[S, C, H, W]`` as an ISMRMRD raw dataset, atomically.

    One acquisition per slice and present column (``lines`` bool ``[W]``, default: every column
    of the header's acquired window), in slice-major, column order; the samples are stored
    exactly (complex64). Columns in ``calibration`` ``[start, stop)`` are flagged
    ``ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING``; the first and last line of each slice carry
    ``ACQ_FIRST_IN_SLICE`` / ``ACQ_LAST_IN_SLICE``.

    Raises:
        InputError: the header is not a 2-D Cartesian ISMRMRD header that fits the k-space.
    """
    ismrmrd = require("ismrmrd")
    path = Path(path)
    ks = np.asarray(kspace)
    if ks.ndim == 3:
        ks = ks[:, None]
    if ks.ndim != 4 or ks.dtype.kind != "c":
        raise InputError(path, f"k-space must be complex [S, (C,) H, W], got {ks.dtype} {ks.shape}")
    ks = ks.astype(np.complex64, copy=False)
    num_slices, coils, height, width = ks.shape
    _, enc = _parse_header(header_xml, path)
    header = _fastmri_header(enc, path)
    if header.encoding_size[:2] != (height, width):
        raise InputError(
            path,
            f"k-space {height}x{width} does not match the header's encoded matrix "
            f"{header.encoding_size[0]}x{header.encoding_size[1]}",
        )
    if lines is None:
        lines = np.zeros(width, dtype=bool)
        lines[header.padding_left : header.padding_right] = True
    lines = np.asarray(lines, dtype=bool)
    if lines.shape != (width,):
        raise InputError(path, f"lines has shape {list(lines.shape)}, expected [{width}]")
    cols = np.flatnonzero(lines)
    if cols.size == 0:
        raise InputError(path, "no line to write")
    if cols[0] < header.padding_left or cols[-1] >= header.padding_right:
        raise InputError(path, "present lines lie outside the header's kspace_encoding_step_1")
    if geometry is None:
        geometry = default_geometry(num_slices, float(enc.reconSpace.fieldOfView_mm.z or 1.0))
    if len(geometry) != num_slices:
        raise InputError(path, f"{len(geometry)} slice geometries for {num_slices} slices")
    acs = set(range(*calibration)) if calibration else set()

    with atomic_path(path) as tmp:
        tmp.unlink()  # the ismrmrd package creates the file itself
        dset = ismrmrd.Dataset(str(tmp), DATASET, create_if_needed=True)
        try:
            dset.write_xml_header(header_xml.encode("utf-8"))
            counter = 0
            for s in range(num_slices):
                g = geometry[s]
                for n, col in enumerate(cols):
                    acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(ks[s, :, :, col]))
                    acq.idx.kspace_encode_step_1 = int(col - header.padding_left)
                    acq.idx.slice = s
                    acq.center_sample = height // 2
                    acq.scan_counter = counter
                    acq.available_channels = coils
                    acq.position[:] = g.position
                    acq.read_dir[:] = g.read_dir
                    acq.phase_dir[:] = g.phase_dir
                    acq.slice_dir[:] = g.slice_dir
                    acq.patient_table_position[:] = g.patient_table_position
                    if n == 0:
                        acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
                    if n == cols.size - 1:
                        acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
                    if int(col) in acs:
                        acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
                    dset.append_acquisition(acq)
                    counter += 1
        finally:
            dset.close()
    return path
