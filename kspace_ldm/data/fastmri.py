"""fastMRI HDF5 volumes: validated lazy reading, atomic writing and PyTorch datasets.

File layout (one HDF5 file per volume, as released by fastMRI):

* ``kspace``: complex64, ``[slices, H, W]`` (single-coil, emulated single-coil "ESC" data) or
  ``[slices, coils, H, W]`` (multi-coil). ``H`` is the readout (frequency-encode) direction, 2x
  oversampled in the knee data, ``W`` the phase-encode direction that masks undersample.
* ``reconstruction_esc`` (single-coil files) and ``reconstruction_rss`` (multi-coil files; the
  single-coil knee files carry it too): float32 ``[slices, R, R]`` magnitude targets, ``R = 320``.
* ``ismrmrd_header``: a scalar string dataset holding ISMRMRD XML. We use the encoded matrix size,
  the recon matrix size and the ``kspace_encoding_step_1`` limits, from which
  ``padding_left = enc_y // 2 - center`` and ``padding_right = padding_left + maximum + 1`` exactly
  as fastMRI's ``SliceDataset`` computes them (the range of acquired phase-encode columns).
* root attributes ``max`` and ``norm`` (maximum and Euclidean norm of the target volume),
  ``acquisition`` and ``patient_id``.
* test-set files: undersampled ``kspace``, a ``mask`` dataset ``[W]`` and the attributes
  ``acceleration`` and ``num_low_frequency``; no target.

Reading never loads more than asked for: :class:`FastMRIFile` validates shapes, dtypes, the mask
and the header at open and reads k-space one slice at a time. Every problem with a file is an
:class:`~kspace_ldm.errors.InputError` naming the file. Every file written goes through
:func:`~kspace_ldm.io.atomic_path`, so a crash never leaves a torn file behind.
"""

from __future__ import annotations

import collections
import os
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from kspace_ldm.errors import InputError, KldmWarning
from kspace_ldm.io import atomic_path

ISMRMRD_NAMESPACE = "http://www.ismrm.org/ISMRMRD"
TARGET_KEYS = ("reconstruction_esc", "reconstruction_rss")
CHALLENGES = ("singlecoil", "multicoil")
# fastMRI's recon matrix; used only when a file has no header and no target to take it from.
DEFAULT_RECON_SIZE = 320
# Pixel size of the synthetic header's field of view (fastMRI knee: 140 mm over 320 pixels).
_PIXEL_MM = 140.0 / 320.0


# --------------------------------------------------------------------------------------------
# ISMRMRD header
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """The parts of the ISMRMRD header the reconstruction needs.

    Attributes:
        encoding_size: encoded matrix ``(x, y, z)``; ``x`` = readout ``H``, ``y`` = phase-encode
            width ``W`` of the k-space.
        recon_size: reconstruction matrix ``(x, y, z)``; ``(x, y)`` is the target crop size.
        padding_left: first acquired phase-encode column (``enc_y // 2 - step1.center``).
        padding_right: one past the last acquired column (``padding_left + step1.maximum + 1``).
        inferred: ``True`` when the file had no ``ismrmrd_header`` and these values were derived
            from the dataset shapes instead.
    """

    encoding_size: tuple[int, int, int]
    recon_size: tuple[int, int, int]
    padding_left: int
    padding_right: int
    inferred: bool = False


def make_ismrmrd_header(
    encoded: Sequence[int], recon: Sequence[int], step1_center: int, step1_max: int
) -> str:
    """Return minimal valid ISMRMRD header XML that fastMRI's ``SliceDataset`` parses.

    Args:
        encoded: encoded matrix size ``(x, y, z)``: ``(H, W, 1)`` for k-space ``[..., H, W]``.
        recon: reconstruction matrix size ``(x, y, z)``, e.g. ``(320, 320, 1)``.
        step1_center: ``encodingLimits/kspace_encoding_step_1/center`` (the DC column index
            relative to the first acquired column).
        step1_max: ``encodingLimits/kspace_encoding_step_1/maximum`` (number of acquired
            columns minus one).

    Returns:
        The XML document as a ``str`` (UTF-8 declaration included). With ``step1_center = W // 2``
        and ``step1_max = W - 1`` the paddings are ``0`` and ``W`` (every column acquired).
    """
    enc = _int_triple(encoded, "encoded")
    rec = _int_triple(recon, "recon")
    center, maximum = int(step1_center), int(step1_max)
    if maximum < 0 or not 0 <= center <= maximum:
        raise InputError(
            "ismrmrd_header",
            f"need 0 <= step1_center <= step1_max, got center {center}, maximum {maximum}",
        )

    def size(tag: str, xyz: tuple[int, int, int]) -> str:
        return f"<{tag}><x>{xyz[0]}</x><y>{xyz[1]}</y><z>{xyz[2]}</z></{tag}>"

    def fov(xyz: tuple[int, int, int]) -> str:
        mx, my = (f"{v * _PIXEL_MM:.4f}" for v in xyz[:2])
        return f"<fieldOfView_mm><x>{mx}</x><y>{my}</y><z>3.0000</z></fieldOfView_mm>"

    # Element order follows ismrmrd.xsd (experimentalConditions before encoding; encodedSpace,
    # reconSpace, encodingLimits, trajectory inside encoding) so schema validators accept it.
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<ismrmrdHeader xmlns="{ISMRMRD_NAMESPACE}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        "  <experimentalConditions><H1resonanceFrequency_Hz>127740000"
        "</H1resonanceFrequency_Hz></experimentalConditions>\n"
        "  <encoding>\n"
        f"    <encodedSpace>{size('matrixSize', enc)}{fov(enc)}</encodedSpace>\n"
        f"    <reconSpace>{size('matrixSize', rec)}{fov(rec)}</reconSpace>\n"
        "    <encodingLimits><kspace_encoding_step_1>"
        f"<minimum>0</minimum><maximum>{maximum}</maximum><center>{center}</center>"
        "</kspace_encoding_step_1></encodingLimits>\n"
        "    <trajectory>cartesian</trajectory>\n"
        "  </encoding>\n"
        "</ismrmrdHeader>\n"
    )


def parse_ismrmrd_header(xml: str | bytes, source: str | Path | None = None) -> Header:
    """Parse the header fields fastMRI uses from ISMRMRD XML (namespaced or not).

    Raises:
        InputError: ``"<source>: invalid ismrmrd_header (...)"`` for malformed XML or a missing
            or non-integer element.
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise InputError(source, f"invalid ismrmrd_header (XML parse error: {err})") from None

    def query(path: Sequence[str]) -> int:
        # Like fastMRI's et_query (".//ns:a//ns:b..."): each step takes the first descendant with
        # that local name in document order. Matching local names also accepts headers written
        # without the ISMRMRD namespace.
        node = root
        for name in path:
            found = next(
                (el for el in node.iter() if el is not node and _local(el.tag) == name), None
            )
            if found is None:
                raise InputError(source, f"invalid ismrmrd_header (no element {'/'.join(path)})")
            node = found
        text = (node.text or "").strip()
        try:
            return int(text)
        except ValueError:
            try:
                # Some scanners write integral sizes as "320.0".
                value = float(text)
            except ValueError:
                value = float("nan")
            if not value.is_integer():
                raise InputError(
                    source, f"invalid ismrmrd_header ({'/'.join(path)} is {text!r}, not an integer)"
                ) from None
            return int(value)

    enc = ["encoding", "encodedSpace", "matrixSize"]
    rec = ["encoding", "reconSpace", "matrixSize"]
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    enc_size = (query([*enc, "x"]), query([*enc, "y"]), query([*enc, "z"]))
    recon_size = (query([*rec, "x"]), query([*rec, "y"]), query([*rec, "z"]))
    center = query([*lims, "center"])
    maximum = query([*lims, "maximum"])
    padding_left = enc_size[1] // 2 - center
    return Header(enc_size, recon_size, padding_left, padding_left + maximum + 1)


def _local(tag: Any) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _int_triple(values: Sequence[int], name: str) -> tuple[int, int, int]:
    vals = tuple(int(v) for v in values)
    if len(vals) != 3 or min(vals) < 1:
        raise InputError("ismrmrd_header", f"{name} size must be 3 positive ints, got {values}")
    return vals  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def list_h5_files(path_or_dir: str | Path) -> list[Path]:
    """Return ``[path]`` for a file, or the sorted ``*.h5`` files directly inside a folder.

    Raises:
        InputError: the path does not exist, or a folder holds no ``*.h5`` file.
    """
    path = Path(path_or_dir)
    if path.is_file():
        return [path]
    if not path.exists():
        raise InputError(path, "no such file or directory")
    candidates = sorted(path.glob("*.h5"))
    for p in candidates:
        if p.is_symlink() and not p.exists():
            # never skipped silently: the volume the user meant to include is missing
            raise InputError(p, f"dangling symlink (its target {os.readlink(p)} does not exist)")
    files = [p for p in candidates if p.is_file()]
    if not files:
        raise InputError(path, "no *.h5 files found in folder")
    return files


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _open_h5(path: Path) -> h5py.File:
    if path.is_dir():
        raise InputError(path, "is a directory, expected an HDF5 file")
    if not path.exists():
        raise InputError(path, "no such file")
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise InputError(path, f"not a readable HDF5 file ({_one_line(err)})") from None


def _attr_value(value: Any) -> Any:
    """HDF5 attribute -> plain Python value (numpy scalars -> int/float/bool, bytes -> str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return _attr_value(value.item())
    return value


class FastMRIFile:
    """Lazy, validated reader of one fastMRI volume. Use as a context manager.

    Opening reads only metadata (shapes, dtypes, attributes, the XML header and the ``[W]`` mask)
    and validates it; k-space and targets are read slice by slice on request.

    Raises (at open):
        InputError: ``"<path>: not a readable HDF5 file (...)"`` (missing, truncated, not HDF5),
            ``"<path>: missing HDF5 key 'kspace'"``, a non-complex k-space dtype, a rank other than
            3 or 4, a target whose shape does not match, a mask whose length is not ``W``, or an
            invalid ``ismrmrd_header``. A file without a header gets one inferred from the shapes
            (``Header.inferred``): paddings ``0, W``, recon size from the target (or 320).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._h5 = _open_h5(self.path)
        try:
            self._load_metadata()
        except BaseException:
            self._h5.close()
            raise

    # ---- validation at open -----------------------------------------------------------------

    def _fail(self, problem: str) -> InputError:
        return InputError(self.path, problem)

    def _dataset(self, key: str) -> h5py.Dataset:
        try:
            obj = self._h5[key]
        except KeyError:
            raise self._fail(f"missing HDF5 key {key!r}") from None
        except (OSError, RuntimeError) as err:
            raise self._fail(f"cannot read HDF5 key {key!r} ({_one_line(err)})") from None
        if not isinstance(obj, h5py.Dataset):
            raise self._fail(f"HDF5 key {key!r} is a group, expected a dataset")
        return obj

    def _load_metadata(self) -> None:
        try:
            keys = set(self._h5.keys())
            attrs = {k: _attr_value(v) for k, v in self._h5.attrs.items()}
        except (OSError, RuntimeError) as err:
            raise self._fail(f"not a readable HDF5 file ({_one_line(err)})") from None
        self._attrs: dict[str, Any] = attrs

        ks = self._dataset("kspace")
        shape = tuple(int(s) for s in ks.shape)
        if ks.dtype.kind != "c":
            raise self._fail(
                f"kspace has dtype {ks.dtype} and shape {list(shape)}, expected complex "
                "(complex64) [slices, H, W] or [slices, coils, H, W]"
            )
        if len(shape) not in (3, 4):
            raise self._fail(
                f"kspace has shape {list(shape)} (rank {len(shape)}), expected rank 3 "
                "[slices, H, W] (single-coil) or rank 4 [slices, coils, H, W] (multi-coil)"
            )
        if min(shape) == 0:
            raise self._fail(f"kspace has shape {list(shape)} with an empty dimension")
        self._kspace = ks
        self._kspace_shape = shape
        num_slices, width = shape[0], shape[-1]

        self._targets: dict[str, h5py.Dataset] = {}
        for key in TARGET_KEYS:
            if key not in keys:
                continue
            ds = self._dataset(key)
            if ds.dtype.kind != "f" or ds.ndim != 3 or ds.shape[0] != num_slices:
                raise self._fail(
                    f"{key} has dtype {ds.dtype} and shape {list(ds.shape)}, expected float32 "
                    f"[{num_slices}, R, R] to match kspace {list(shape)}"
                )
            self._targets[key] = ds

        self._mask: np.ndarray | None = None
        if "mask" in keys:
            ds = self._dataset("mask")
            if ds.dtype.kind not in "biuf":
                raise self._fail(f"mask has dtype {ds.dtype}, expected bool or numeric")
            if ds.ndim != 1:
                raise self._fail(f"mask has shape {list(ds.shape)}, expected [{width}] (kspace W)")
            if ds.shape[0] != width:
                raise self._fail(
                    f"mask has length {ds.shape[0]}, expected {width} (the k-space width W)"
                )
            try:
                mask = np.asarray(ds[()])
            except (OSError, RuntimeError) as err:
                raise self._fail(f"cannot read HDF5 key 'mask' ({_one_line(err)})") from None
            if mask.dtype.kind == "f" and not np.isfinite(mask).all():
                raise self._fail("mask contains NaN/Inf")
            self._mask = mask != 0

        if "ismrmrd_header" in keys:
            raw = self._dataset("ismrmrd_header")
            try:
                xml = raw[()]
            except (OSError, RuntimeError) as err:
                raise self._fail(f"cannot read ismrmrd_header ({_one_line(err)})") from None
            if isinstance(xml, np.ndarray):
                # A 1-element array of strings (some converters write it that way).
                if xml.size != 1:
                    raise self._fail(f"invalid ismrmrd_header (array of shape {list(xml.shape)})")
                xml = xml.reshape(()).item()
            if not isinstance(xml, (bytes, str)):
                raise self._fail(f"invalid ismrmrd_header (type {type(xml).__name__})")
            self._header_xml: str | None = (
                xml.decode("utf-8", errors="replace") if isinstance(xml, bytes) else xml
            )
            self._header = parse_ismrmrd_header(xml, self.path)
            enc = self._header.encoding_size[:2]
            if enc != shape[-2:]:
                # Warned, not refused: the k-space array is what is reconstructed, and converters
                # disagree on the header; but the acquired-column window (padding) comes from the
                # header's encoded y, so a mismatch may mean a wrong window.
                warnings.warn(
                    f"{self.path}: k-space is {shape[-2]}x{shape[-1]} but the header's encoded "
                    f"size is {enc[0]}x{enc[1]}; using the k-space shape (the acquired-column "
                    "window from the header may be wrong)",
                    KldmWarning,
                    stacklevel=2,
                )
        else:
            self._header_xml = None
            height = shape[-2]
            target = next(iter(self._targets.values()), None)
            if target is not None:
                recon = (int(target.shape[1]), int(target.shape[2]), 1)
            else:
                side = min(DEFAULT_RECON_SIZE, height, width)
                recon = (side, side, 1)
            self._header = Header((height, width, 1), recon, 0, width, inferred=True)

    # ---- metadata ---------------------------------------------------------------------------

    @property
    def num_slices(self) -> int:
        return self._kspace_shape[0]

    @property
    def is_multicoil(self) -> bool:
        return len(self._kspace_shape) == 4

    @property
    def num_coils(self) -> int:
        """Number of coils (1 for single-coil files)."""
        return self._kspace_shape[1] if self.is_multicoil else 1

    @property
    def kspace_shape(self) -> tuple[int, ...]:
        """``(slices, H, W)`` or ``(slices, coils, H, W)``."""
        return self._kspace_shape

    @property
    def header(self) -> Header:
        return self._header

    @property
    def header_xml(self) -> str | None:
        """The raw ``ismrmrd_header`` XML text, or ``None`` if the file has none."""
        return self._header_xml

    @property
    def attrs(self) -> dict[str, Any]:
        """Root attributes as plain Python values (a copy)."""
        return dict(self._attrs)

    @property
    def has_mask(self) -> bool:
        return self._mask is not None

    @property
    def mask(self) -> np.ndarray | None:
        """Sampling mask, bool ``[W]`` (test-set files), else ``None``."""
        return None if self._mask is None else self._mask.copy()

    @property
    def acceleration(self) -> float | int | None:
        return self._attrs.get("acceleration")

    @property
    def num_low_frequency(self) -> int | None:
        value = self._attrs.get("num_low_frequency")
        return None if value is None else int(value)

    @property
    def target_keys(self) -> tuple[str, ...]:
        """The target datasets present, in ``TARGET_KEYS`` order."""
        return tuple(self._targets)

    @property
    def target_key(self) -> str | None:
        """Default target: ``reconstruction_esc`` for single-coil files (``reconstruction_rss``
        if that is all there is), ``reconstruction_rss`` for multi-coil; ``None`` if absent."""
        order = ("reconstruction_rss",) if self.is_multicoil else TARGET_KEYS
        return next((k for k in order if k in self._targets), None)

    @property
    def has_target(self) -> bool:
        return self.target_key is not None

    def target_shape(self, key: str | None = None) -> tuple[int, ...] | None:
        """Shape ``(slices, R, R)`` of target ``key`` (default :attr:`target_key`), or ``None``."""
        key = key or self.target_key
        ds = self._targets.get(key) if key else None
        return None if ds is None else tuple(int(s) for s in ds.shape)

    # ---- data -------------------------------------------------------------------------------

    def _slice_index(self, slice_idx: int) -> int:
        n = self.num_slices
        idx = int(slice_idx)
        if not -n <= idx < n:
            raise IndexError(f"{self.path}: slice {slice_idx} out of range (volume has {n} slices)")
        return idx % n

    def _read(self, ds: h5py.Dataset, selection: Any, what: str) -> np.ndarray:
        try:
            return np.asarray(ds[selection])
        except (OSError, RuntimeError, ValueError) as err:
            raise self._fail(f"cannot read {what} ({_one_line(err)})") from None

    def read_kspace(self, slice_idx: int) -> np.ndarray:
        """Read one k-space slice from disk (only that slice's bytes).

        Returns:
            complex64 ``[H, W]`` (single-coil) or ``[coils, H, W]`` (multi-coil).

        Raises:
            IndexError: ``slice_idx`` outside ``[-num_slices, num_slices)``.
            InputError: ``"<path>: k-space slice i contains NaN/Inf"`` or an unreadable slice.
        """
        idx = self._slice_index(slice_idx)
        arr = self._read(self._kspace, idx, f"k-space slice {idx}").astype(np.complex64, copy=False)
        if not np.isfinite(arr).all():
            raise self._fail(f"k-space slice {idx} contains NaN/Inf")
        return arr

    def read_target(self, slice_idx: int, key: str | None = None) -> np.ndarray | None:
        """Read one target slice, float32 ``[R, R]``; ``None`` if the file has no such target.

        ``key`` defaults to :attr:`target_key`.
        """
        key = key or self.target_key
        if key is None or key not in self._targets:
            return None
        idx = self._slice_index(slice_idx)
        arr = self._read(self._targets[key], idx, f"{key} slice {idx}").astype(
            np.float32, copy=False
        )
        if not np.isfinite(arr).all():
            raise self._fail(f"{key} slice {idx} contains NaN/Inf")
        return arr

    def read_volume_kspace(self) -> np.ndarray:
        """Whole k-space volume, complex64 ``[slices, H, W]`` / ``[slices, coils, H, W]``."""
        arr = self._read(self._kspace, (), "kspace").astype(np.complex64, copy=False)
        self._check_volume_finite(arr, "k-space")
        return arr

    def read_volume_target(self, key: str | None = None) -> np.ndarray | None:
        """Whole target volume, float32 ``[slices, R, R]``, or ``None`` without a target."""
        key = key or self.target_key
        if key is None or key not in self._targets:
            return None
        arr = self._read(self._targets[key], (), key).astype(np.float32, copy=False)
        self._check_volume_finite(arr, key)
        return arr

    def _check_volume_finite(self, arr: np.ndarray, what: str) -> None:
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            raise self._fail(f"{what} slice {int(np.argmax(bad))} contains NaN/Inf")

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FastMRIFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> None:
        # An open HDF5 handle must not travel to another process (see SliceDataset).
        raise TypeError("FastMRIFile holds an open HDF5 handle and cannot be pickled")

    def __repr__(self) -> str:
        return f"FastMRIFile({str(self.path)!r}, kspace={list(self._kspace_shape)})"


def is_kldm_reconstruction(path: str | Path) -> bool:
    """Whether ``path`` is a reconstruction written by kldm (``kldm recon`` or ``kldm-recon``):
    an HDF5 file with a ``reconstruction`` dataset, the ``written_by`` (or, from kldm-recon,
    ``sampler``) attribute, and no ``kspace``. Only such files are replaced by ``kldm recon``
    without ``--overwrite``."""
    try:
        with h5py.File(path, "r") as f:
            ours = "written_by" in f.attrs or "sampler" in f.attrs  # sampler: kldm-recon
            return "reconstruction" in f and "kspace" not in f and ours
    except (OSError, ValueError):
        return False


def read_reconstruction(path: str | Path) -> np.ndarray:
    """Read a fastMRI submission file's ``reconstruction`` (float32 ``[slices, R, R]``).

    Raises:
        InputError: unreadable file, missing key, wrong dtype/rank, or NaN/Inf values.
    """
    path = Path(path)
    with _open_h5(path) as f:
        if "reconstruction" not in f:
            raise InputError(path, "missing HDF5 key 'reconstruction'")
        ds = f["reconstruction"]
        if not isinstance(ds, h5py.Dataset):
            raise InputError(path, "HDF5 key 'reconstruction' is a group, expected a dataset")
        if ds.dtype.kind != "f" or ds.ndim != 3 or min(ds.shape) == 0:
            raise InputError(
                path,
                f"reconstruction has dtype {ds.dtype} and shape {list(ds.shape)}, "
                "expected float32 [slices, R, R]",
            )
        try:
            arr = np.asarray(ds[()], dtype=np.float32)
        except (OSError, RuntimeError) as err:
            raise InputError(path, f"cannot read reconstruction ({_one_line(err)})") from None
    if not np.isfinite(arr).all():
        raise InputError(path, "reconstruction contains NaN/Inf")
    return arr


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _checked_target(path: Path, key: str, value: Any, num_slices: int) -> np.ndarray | None:
    if value is None:
        return None
    arr = _as_numpy(value)
    if arr.dtype.kind not in "fiu" or arr.ndim != 3 or arr.shape[0] != num_slices:
        raise InputError(
            path,
            f"{key} has dtype {arr.dtype} and shape {list(arr.shape)}, expected real "
            f"[{num_slices}, R, R]",
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(path, f"refusing to write {key} containing NaN/Inf")
    return arr


def write_fastmri_file(
    path: str | Path,
    kspace: np.ndarray | torch.Tensor,
    *,
    reconstruction_esc: np.ndarray | torch.Tensor | None = None,
    reconstruction_rss: np.ndarray | torch.Tensor | None = None,
    header: str | None = None,
    attrs: Mapping[str, Any] | None = None,
    mask: np.ndarray | torch.Tensor | None = None,
) -> Path:
    """Write one fastMRI-format volume atomically (deterministic bytes for equal inputs).

    Args:
        path: output ``.h5`` path (parent folders are created).
        kspace: complex ``[slices, H, W]`` or ``[slices, coils, H, W]``; stored as complex64.
        reconstruction_esc, reconstruction_rss: optional real ``[slices, R, R]`` targets; stored as
            float32.
        header: ISMRMRD XML; default :func:`make_ismrmrd_header` with encoded ``(H, W, 1)``, recon
            ``(R, R', 1)`` from a target (else ``min(320, H, W)`` square), step-1 centre ``W // 2``
            and maximum ``W - 1`` (paddings ``0, W``).
        attrs: root attributes. ``max`` and ``norm`` default to the maximum and Euclidean norm of
            the challenge target volume (``reconstruction_esc`` for single-coil, else
            ``reconstruction_rss``), as in fastMRI; they are omitted without a target.
        mask: optional ``[W]`` sampling mask (test-set files), stored as bool.

    Returns:
        ``Path(path)``.

    Raises:
        InputError: bad shapes/dtypes, NaN/Inf in the data, or a mask of the wrong length.
    """
    path = Path(path)
    ks = _as_numpy(kspace)
    if ks.dtype.kind != "c":
        raise InputError(path, f"kspace has dtype {ks.dtype}, expected complex")
    if ks.ndim not in (3, 4) or min(ks.shape) == 0:
        raise InputError(
            path,
            f"kspace has shape {list(ks.shape)}, expected [slices, H, W] or [slices, coils, H, W]",
        )
    ks = ks.astype(np.complex64)
    if not np.isfinite(ks).all():
        raise InputError(path, "refusing to write k-space containing NaN/Inf")
    num_slices, height, width = ks.shape[0], ks.shape[-2], ks.shape[-1]

    esc = _checked_target(path, "reconstruction_esc", reconstruction_esc, num_slices)
    rss = _checked_target(path, "reconstruction_rss", reconstruction_rss, num_slices)
    target = rss if ks.ndim == 4 or esc is None else esc

    mask_arr = None
    if mask is not None:
        mask_arr = _as_numpy(mask)
        if mask_arr.ndim != 1 or mask_arr.shape[0] != width:
            raise InputError(
                path, f"mask has shape {list(mask_arr.shape)}, expected [{width}] (the k-space W)"
            )
        mask_arr = mask_arr != 0

    if header is None:
        if target is not None:
            recon = (target.shape[1], target.shape[2], 1)
        else:
            side = min(DEFAULT_RECON_SIZE, height, width)
            recon = (side, side, 1)
        header = make_ismrmrd_header((height, width, 1), recon, width // 2, width - 1)
    else:
        # Refuse to write a header that our own reader (and fastMRI) could not parse.
        parse_ismrmrd_header(header, path)

    all_attrs: dict[str, Any] = {}
    if target is not None:
        # fastMRI: "max" and "norm" are the maximum and the Euclidean norm of the target volume.
        all_attrs["max"] = float(target.max())
        all_attrs["norm"] = float(np.linalg.norm(target.astype(np.float64).ravel()))
    all_attrs.update(attrs or {})

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        # track_times=False: HDF5 otherwise stamps each dataset with its creation time, which
        # would make equal inputs produce different bytes.
        f.create_dataset("kspace", data=ks, track_times=False)
        if esc is not None:
            f.create_dataset("reconstruction_esc", data=esc, track_times=False)
        if rss is not None:
            f.create_dataset("reconstruction_rss", data=rss, track_times=False)
        if mask_arr is not None:
            f.create_dataset("mask", data=mask_arr, track_times=False)
        f.create_dataset(
            "ismrmrd_header", data=header, dtype=h5py.string_dtype("utf-8"), track_times=False
        )
        _write_attrs(f, all_attrs, path)
    return path


def write_reconstruction(
    path: str | Path,
    reconstruction: np.ndarray | torch.Tensor,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a fastMRI submission file (dataset ``reconstruction``, float32 ``[slices, R, R]``).

    Raises:
        InputError: wrong rank/dtype or NaN/Inf values.
    """
    path = Path(path)
    arr = _as_numpy(reconstruction)
    if arr.dtype.kind not in "fiu" or arr.ndim != 3 or min(arr.shape) == 0:
        raise InputError(
            path,
            f"reconstruction has dtype {arr.dtype} and shape {list(arr.shape)}, "
            "expected real [slices, R, R]",
        )
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise InputError(path, "refusing to write reconstruction containing NaN/Inf")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("reconstruction", data=arr, track_times=False)
        # marks the file as kldm's own output: kldm recon replaces it without --overwrite
        _write_attrs(f, {"written_by": "kspace-ldm", **(attrs or {})}, path)
    return path


def _write_attrs(f: h5py.File, attrs: Mapping[str, Any], path: Path) -> None:
    for key, value in attrs.items():
        try:
            f.attrs[key] = value
        except (TypeError, ValueError) as err:
            # Raised inside atomic_path, so the half-written file is discarded.
            raise InputError(
                path, f"attribute {key!r} = {value!r} cannot be stored ({_one_line(err)})"
            ) from None


# --------------------------------------------------------------------------------------------
# PyTorch datasets
# --------------------------------------------------------------------------------------------


@dataclass
class SliceSample:
    """One slice of a volume.

    Attributes:
        kspace: complex64 ``[H, W]`` (single-coil) or ``[coils, H, W]`` (multi-coil).
        target: float32 ``[R, R]`` or ``None`` (test-set files).
        mask: bool ``[W]`` (test-set files) or ``None``.
        fname: file name (no folder), as fastMRI reports it.
        slice_num: slice index within the volume.
        max_value: root attribute ``max`` (the target volume's maximum) or ``None``.
        header: the parsed :class:`Header`.
        attrs: the file's root attributes.
    """

    kspace: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor | None
    fname: str
    slice_num: int
    max_value: float | None
    header: Header
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class VolumeSample:
    """A whole volume: like :class:`SliceSample` with a leading ``slices`` dimension on
    ``kspace`` (``[S, H, W]`` / ``[S, C, H, W]``) and ``target`` (``[S, R, R]``)."""

    kspace: torch.Tensor
    target: torch.Tensor | None
    mask: torch.Tensor | None
    fname: str
    num_slices: int
    max_value: float | None
    header: Header
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _FileInfo:
    path: Path
    num_slices: int
    kspace_shape: tuple[int, ...]
    target_key: str | None
    header: Header
    attrs: dict[str, Any]
    mask: np.ndarray | None


def _resolve_files(root_or_files: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(root_or_files, (str, Path)):
        return list_h5_files(root_or_files)
    files: list[Path] = []
    for item in root_or_files:
        files.extend(list_h5_files(item))
    if not files:
        raise InputError(None, "no input files given")
    return files


def _index_file(path: Path, challenge: str | None) -> _FileInfo:
    with FastMRIFile(path) as f:
        if challenge is None:
            key = f.target_key
        else:
            wanted_multi = challenge == "multicoil"
            if f.is_multicoil != wanted_multi:
                kind = "multi-coil" if f.is_multicoil else "single-coil"
                raise InputError(
                    path,
                    f"{kind} k-space {list(f.kspace_shape)} cannot be used with challenge "
                    f"{challenge!r}",
                )
            want = "reconstruction_rss" if wanted_multi else "reconstruction_esc"
            key = want if want in f.target_keys else None
        return _FileInfo(path, f.num_slices, f.kspace_shape, key, f.header, f.attrs, f.mask)


class _HandleCache:
    """Per-process LRU of open :class:`FastMRIFile` handles.

    h5py handles must not be shared across ``fork``: a DataLoader worker that inherits the
    parent's open file reads through a copied HDF5 library state, which is the source of the
    well-known h5py + DataLoader leaks and corrupt reads. Handles are therefore keyed to the
    process id that opened them and are dropped (never used) in any other process, and the cache
    is emptied when the dataset is pickled for ``spawn`` workers.
    """

    def __init__(self, max_open: int):
        self.max_open = max_open
        self._pid = os.getpid()
        self._handles: collections.OrderedDict[Path, FastMRIFile] = collections.OrderedDict()

    def get(self, path: Path) -> FastMRIFile | None:
        if self.max_open <= 0:
            return None
        if os.getpid() != self._pid:
            # Inherited from the parent through fork: forget, do not touch.
            self._handles = collections.OrderedDict()
            self._pid = os.getpid()
        handle = self._handles.get(path)
        if handle is None:
            handle = FastMRIFile(path)
            self._handles[path] = handle
            while len(self._handles) > self.max_open:
                _, old = self._handles.popitem(last=False)
                old.close()
        else:
            self._handles.move_to_end(path)
        return handle

    def close(self) -> None:
        if os.getpid() == self._pid:
            for handle in self._handles.values():
                handle.close()
        self._handles = collections.OrderedDict()


class _FastMRIDatasetBase(torch.utils.data.Dataset):
    def __init__(
        self,
        root_or_files: str | Path | Iterable[str | Path],
        transform: Callable[[Any], Any] | None,
        challenge: str | None,
        max_open_files: int,
    ):
        if challenge is not None and challenge not in CHALLENGES:
            raise InputError(
                None, f"challenge must be 'singlecoil', 'multicoil' or None, got {challenge!r}"
            )
        self.challenge = challenge
        self.transform = transform
        self.files = _resolve_files(root_or_files)
        # Index from metadata only: opening a file reads shapes, attrs and the header, no data.
        self._infos = [_index_file(p, challenge) for p in self.files]
        self._cache = _HandleCache(max_open_files)

    def _open(self, info: _FileInfo) -> tuple[FastMRIFile, bool]:
        """Return (handle, owned): owned handles must be closed by the caller."""
        handle = self._cache.get(info.path)
        if handle is not None:
            return handle, False
        return FastMRIFile(info.path), True

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = _HandleCache(self._cache.max_open)
        return state

    def close(self) -> None:
        """Close cached file handles of this process."""
        self._cache.close()


class SliceDataset(_FastMRIDatasetBase):
    """Slices of fastMRI volumes as :class:`SliceSample` (optionally passed through ``transform``).

    Args:
        root_or_files: a folder (its sorted ``*.h5``), a file, or an iterable of files/folders.
        transform: optional callable applied to each :class:`SliceSample`.
        challenge: ``"singlecoil"`` (target ``reconstruction_esc``), ``"multicoil"`` (target
            ``reconstruction_rss``), or ``None`` to take each file's :attr:`FastMRIFile.target_key`.
            A file whose coil layout contradicts the challenge is an InputError.
        max_open_files: per-process LRU of open handles (0 opens the file for every item).

    The index of ``(file, slice)`` pairs is built from shapes only; each item reads one slice.
    """

    def __init__(
        self,
        root_or_files: str | Path | Iterable[str | Path],
        transform: Callable[[SliceSample], Any] | None = None,
        challenge: str | None = None,
        *,
        max_open_files: int = 8,
    ):
        super().__init__(root_or_files, transform, challenge, max_open_files)
        self.samples: list[tuple[int, int]] = [
            (fi, s) for fi, info in enumerate(self._infos) for s in range(info.num_slices)
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Any:
        file_idx, slice_num = self.samples[index]
        info = self._infos[file_idx]
        handle, owned = self._open(info)
        try:
            kspace = handle.read_kspace(slice_num)
            target = handle.read_target(slice_num, info.target_key) if info.target_key else None
        finally:
            if owned:
                handle.close()
        sample = SliceSample(
            kspace=torch.from_numpy(kspace),
            target=None if target is None else torch.from_numpy(target),
            mask=None if info.mask is None else torch.from_numpy(info.mask.copy()),
            fname=info.path.name,
            slice_num=slice_num,
            max_value=_max_value(info.attrs),
            header=info.header,
            attrs=dict(info.attrs),
        )
        return sample if self.transform is None else self.transform(sample)


class VolumeDataset(_FastMRIDatasetBase):
    """Whole volumes as :class:`VolumeSample` (for per-volume evaluation), one item per file.

    Arguments as for :class:`SliceDataset`. :meth:`open` gives a lazy :class:`FastMRIFile` for
    slice-by-slice access when a whole volume should not be held in memory.
    """

    def __init__(
        self,
        root_or_files: str | Path | Iterable[str | Path],
        transform: Callable[[VolumeSample], Any] | None = None,
        challenge: str | None = None,
        *,
        max_open_files: int = 0,
    ):
        super().__init__(root_or_files, transform, challenge, max_open_files)

    def __len__(self) -> int:
        return len(self._infos)

    def num_slices(self, index: int) -> int:
        return self._infos[index].num_slices

    def open(self, index: int) -> FastMRIFile:
        """Open volume ``index`` lazily; the caller closes it (use ``with``)."""
        return FastMRIFile(self._infos[index].path)

    def __getitem__(self, index: int) -> Any:
        info = self._infos[index]
        handle, owned = self._open(info)
        try:
            kspace = handle.read_volume_kspace()
            target = handle.read_volume_target(info.target_key) if info.target_key else None
        finally:
            if owned:
                handle.close()
        sample = VolumeSample(
            kspace=torch.from_numpy(kspace),
            target=None if target is None else torch.from_numpy(target),
            mask=None if info.mask is None else torch.from_numpy(info.mask.copy()),
            fname=info.path.name,
            num_slices=info.num_slices,
            max_value=_max_value(info.attrs),
            header=info.header,
            attrs=dict(info.attrs),
        )
        return sample if self.transform is None else self.transform(sample)


def _max_value(attrs: Mapping[str, Any]) -> float | None:
    value = attrs.get("max")
    return None if value is None else float(value)
