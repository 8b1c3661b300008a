"""Viewer-side outputs of ``kldm recon --format``: ISMRMRD images, DICOM MR series, NIfTI, PNG.

A reconstruction is float32 ``[S, Rx, Ry]``: slice ``s``, row ``i`` along the readout (the
ISMRMRD ``read_dir``), column ``j`` along the phase encode (``phase_dir``). Its geometry
(:class:`VolumeGeometry`) comes from the ISMRMRD acquisition headers (slice centres and
directions) and the header's reconSpace field of view and matrix; fastMRI files, which carry no
positions, get the identity orientation with slices stacked ``SliceThickness`` apart.

Pixel ``(i, j)`` of slice ``s`` lies at ``position_s + (i - Rx // 2) dx read + (j - Ry // 2) dy
phase`` (LPS, mm; ``dx, dy`` = FOV / matrix): the FFT-centred grid has its centre at index
``R // 2``. DICOM gets this as ImagePositionPatient / ImageOrientationPatient / PixelSpacing, NIfTI
as an affine (converted to RAS), ISMRMRD images as their own header fields.

Every writer is atomic: a DICOM series is written into a temporary folder renamed into place.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kspace_ldm.data.ismrmrd_io import SliceGeometry, default_geometry, require
from kspace_ldm.errors import InputError
from kspace_ldm.io import atomic_path

FORMATS = ("h5", "ismrmrd", "dicom", "nifti", "png")
RESEARCH_NOTE = "kspace-ldm reconstruction: research use only, not for clinical or diagnostic use"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


@dataclass(frozen=True)
class VolumeGeometry:
    """Pixel spacing ``(dx, dy)`` (mm, readout and phase), slice thickness (mm) and one
    :class:`SliceGeometry` per slice."""

    spacing_mm: tuple[float, float]
    thickness_mm: float
    slices: tuple[SliceGeometry, ...]

    def slice_step_mm(self) -> float:
        """Distance between consecutive slice centres (the thickness for one slice)."""
        if len(self.slices) < 2:
            return self.thickness_mm
        p0, p1 = (np.asarray(g.position) for g in self.slices[:2])
        step = float(np.linalg.norm(p1 - p0))
        return step if step > 0 else self.thickness_mm

    def corner(self, s: int, shape: tuple[int, int]) -> np.ndarray:
        """LPS position of pixel ``(0, 0)`` of slice ``s`` for an ``[Rx, Ry]`` image."""
        g = self.slices[s]
        dx, dy = self.spacing_mm
        return (
            np.asarray(g.position, dtype=np.float64)
            - (shape[0] // 2) * dx * np.asarray(g.read_dir)
            - (shape[1] // 2) * dy * np.asarray(g.phase_dir)
        )


def volume_geometry(
    recon_fov_mm: Sequence[float] | None,
    recon_matrix: Sequence[int],
    num_slices: int,
    slices: Sequence[SliceGeometry] | None = None,
) -> VolumeGeometry:
    """Geometry from the header's reconSpace FOV ``(x, y, z)`` mm and matrix ``(x, y)``.

    Without a FOV the pixels are 1 mm and the slices 1 mm thick.
    """
    fx, fy, fz = (float(v) for v in recon_fov_mm) if recon_fov_mm else (0.0, 0.0, 0.0)
    rx, ry = int(recon_matrix[0]), int(recon_matrix[1])
    dx = fx / rx if fx > 0 else 1.0
    dy = fy / ry if fy > 0 else 1.0
    thick = fz if fz > 0 else 1.0
    if slices is None or len(slices) != num_slices:
        slices = default_geometry(num_slices, thick)
    return VolumeGeometry((dx, dy), thick, tuple(slices))


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


def nifti_affine(geom: VolumeGeometry, shape: tuple[int, int]) -> np.ndarray:
    """4x4 voxel ``(i, j, k)`` -> RAS mm affine of a ``[Rx, Ry, S]`` NIfTI array."""
    g = geom.slices[0]
    dx, dy = geom.spacing_mm
    lps = np.eye(4)
    lps[:3, 0] = np.asarray(g.read_dir) * dx
    lps[:3, 1] = np.asarray(g.phase_dir) * dy
    lps[:3, 2] = np.asarray(g.slice_dir) * geom.slice_step_mm()
    if len(geom.slices) > 1:
        step = np.asarray(geom.slices[1].position) - np.asarray(g.position)
        if np.linalg.norm(step) > 0:
            lps[:3, 2] = step  # follow the actual slice positions (their sign included)
    lps[:3, 3] = geom.corner(0, shape)
    # DICOM / ISMRMRD patient coordinates are LPS, NIfTI world coordinates RAS.
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def write_nifti(path: str | Path, recon: np.ndarray, geom: VolumeGeometry) -> Path:
    """Write ``[S, Rx, Ry]`` float32 as NIfTI-1 ``[Rx, Ry, S]`` with the geometry's affine."""
    nib = require("nibabel")
    path = Path(path)
    data = np.ascontiguousarray(np.transpose(np.asarray(recon, dtype=np.float32), (1, 2, 0)))
    affine = nifti_affine(geom, recon.shape[1:])
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"kspace-ldm research use only"
    img.set_qform(affine, code=1)  # scanner coordinates
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        # nibabel picks compression from the suffix.
        real = tmp.with_name(tmp.name + ("".join(path.suffixes[-2:]) or ".nii"))
        try:
            nib.save(img, str(real))
            os.replace(real, tmp)
        finally:
            real.unlink(missing_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def _quantise(recon: np.ndarray) -> tuple[np.ndarray, float]:
    """uint16 pixels and the rescale slope so that ``value = pixel * slope`` (intercept 0).

    The slope is the one a reader parses back from its decimal string, so the only error left
    is the rounding to the nearest pixel value (at most ``slope / 2``)."""
    vmax = float(np.max(recon)) if recon.size else 0.0
    slope = float(_ds(vmax / 65535.0)) if vmax > 0 else 1.0
    pixels = np.clip(np.rint(np.maximum(recon, 0.0) / slope), 0, 65535).astype(np.uint16)
    return pixels, slope


def _ds(value: float) -> str:
    """A DICOM decimal string: the most precise ``%g`` form within the 16 characters allowed."""
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"


def write_dicom_series(
    out_dir: str | Path,
    recon: np.ndarray,
    geom: VolumeGeometry,
    *,
    series_description: str,
    patient_id: str = "ANONYMOUS",
    patient_position: str = "",
    series_number: int = 1,
) -> Path:
    """Write ``[S, Rx, Ry]`` as one DICOM MR Image series (one file per slice) into ``out_dir``.

    16-bit unsigned pixels with RescaleSlope (one slope per volume, intercept 0), window
    centre/width from the volume's 0.5-99.5 percentiles, ImageType ``DERIVED\\SECONDARY`` and
    the research-use note in ImageComments and DerivationDescription. The whole folder appears at
    once (written beside, then renamed); an existing folder of that name is replaced.
    """
    pydicom = require("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    out_dir = Path(out_dir)
    recon = np.asarray(recon, dtype=np.float32)
    if recon.ndim != 3 or not np.isfinite(recon).all():
        raise InputError(out_dir, f"cannot write DICOM of shape {list(recon.shape)} / NaN")
    pixels, slope = _quantise(recon)
    lo, hi = (float(v) for v in np.percentile(recon, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = 0.0, max(float(recon.max()), 1e-12)
    now = datetime.datetime.now(datetime.timezone.utc)
    date, time_ = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rows, cols = recon.shape[1:]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for s in range(recon.shape[0]):
            g = geom.slices[s]
            sop_uid = generate_uid()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
            ds.SOPClassUID = MR_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
            ds.StudyTime = ds.SeriesTime = ds.ContentTime = time_
            ds.AccessionNumber = ""
            ds.Modality = "MR"
            ds.Manufacturer = "kspace-ldm"
            ds.ReferringPhysicianName = ""
            ds.SeriesDescription = series_description[:64]
            ds.DerivationDescription = RESEARCH_NOTE
            ds.ImageComments = RESEARCH_NOTE
            ds.PatientName = ""
            ds.PatientID = patient_id[:64]
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.StudyID = "1"
            ds.SeriesNumber = series_number
            ds.Laterality = ""
            ds.PatientPosition = patient_position
            ds.InstanceNumber = s + 1
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            # MR Image module: a reconstruction of unknown sequence.
            ds.ScanningSequence = "RM"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = ""
            ds.EchoTrainLength = ""
            ds.RepetitionTime = ""
            # Image plane: rows run along the readout, columns along the phase encode.
            ds.PixelSpacing = [_ds(geom.spacing_mm[0]), _ds(geom.spacing_mm[1])]
            ds.SliceThickness = _ds(geom.thickness_mm)
            ds.ImageOrientationPatient = [_ds(v) for v in (*g.phase_dir, *g.read_dir)]
            corner = geom.corner(s, (rows, cols))
            ds.ImagePositionPatient = [_ds(v) for v in corner]
            ds.SliceLocation = _ds(float(np.dot(np.asarray(g.position), g.slice_dir)))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = rows, cols
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 0
            ds.RescaleSlope = _ds(slope)
            ds.RescaleIntercept = "0"
            ds.WindowCenter = _ds((lo + hi) / 2)
            ds.WindowWidth = _ds(max(hi - lo, slope))
            # Reconstructions in raw k-space units can have windows narrower than 1, which only
            # LINEAR_EXACT permits.
            ds.VOILUTFunction = "LINEAR_EXACT"
            ds.PixelData = np.ascontiguousarray(pixels[s]).tobytes()
            ds.save_as(tmp_dir / f"IM{s + 1:04d}.dcm", enforce_file_format=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


# --------------------------------------------------------------------------------------------
# ISMRMRD images
# --------------------------------------------------------------------------------------------


def write_ismrmrd_images(
    path: str | Path, recon: np.ndarray, geom: VolumeGeometry, header_xml: str | None = None
) -> Path:
    """Write ``[S, Rx, Ry]`` as ISMRMRD magnitude images (group ``dataset``, series ``image_0``)
    with field of view, slice positions and directions from ``geom``; the acquisition's XML
    header is copied when given."""
    ismrmrd = require("ismrmrd")
    path = Path(path)
    recon = np.asarray(recon, dtype=np.float32)
    dx, dy = geom.spacing_mm
    with atomic_path(path) as tmp:
        tmp.unlink()
        dset = ismrmrd.Dataset(str(tmp), "dataset", create_if_needed=True)
        try:
            if header_xml:
                dset.write_xml_header(header_xml.encode("utf-8"))
            for s in range(recon.shape[0]):
                g = geom.slices[s]
                # ISMRMRD image data is [cha, z, y, x]: x = the readout (our rows).
                img = ismrmrd.Image.from_array(
                    np.ascontiguousarray(recon[s].T[None, None]), transpose=False
                )
                img.image_type = ismrmrd.IMTYPE_MAGNITUDE
                img.field_of_view = (
                    dx * recon.shape[1],
                    dy * recon.shape[2],
                    geom.thickness_mm,
                )
                img.position = g.position
                img.read_dir = g.read_dir
                img.phase_dir = g.phase_dir
                img.slice_dir = g.slice_dir
                img.patient_table_position = g.patient_table_position
                img.slice = s
                img.image_index = s + 1
                img.image_series_index = 1
                dset.append_image("image_0", img)
        finally:
            dset.close()
    return path


# --------------------------------------------------------------------------------------------
# PNG
# --------------------------------------------------------------------------------------------


def write_png_slices(out_dir: str | Path, recon: np.ndarray) -> Path:
    """One 8-bit PNG per slice (``slice_000.png`` ...), scaled to the volume's maximum."""
    from PIL import Image

    from kspace_ldm.viz import save_png, to_uint8

    out_dir = Path(out_dir)
    vmax = float(np.max(recon)) if recon.size else 1.0
    for s in range(recon.shape[0]):
        save_png(Image.fromarray(to_uint8(recon[s], vmax)), out_dir / f"slice_{s:03d}.png")
    return out_dir
