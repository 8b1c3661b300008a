"""Scanner- and viewer-side formats: ISMRMRD raw data in (``ismrmrd_generate_cartesian_shepp_logan``
files and files written with the ``ismrmrd`` package from synthetic volumes), ``kldm data
convert`` both ways (bit-exact round trips), ``kldm recon --format ismrmrd|dicom|nifti|png``
checked in each format's own reader (and ``dciodvfy``), and one-line errors for what is not
supported."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run

ismrmrd = pytest.importorskip("ismrmrd")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

from kspace_ldm.data.convert import fastmri_to_ismrmrd, ismrmrd_to_fastmri  # noqa: E402
from kspace_ldm.data.fastmri import FastMRIFile, read_reconstruction  # noqa: E402
from kspace_ldm.data.ismrmrd_io import is_ismrmrd_file, read_ismrmrd  # noqa: E402
from kspace_ldm.data.synth import synth_volume  # noqa: E402
from kspace_ldm.errors import InputError  # noqa: E402

GENERATOR = "ismrmrd_generate_cartesian_shepp_logan"
ACS = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------


def shepp_logan(path: Path, *args) -> Path:
    """``ismrmrd_generate_cartesian_shepp_logan ARGS -o path`` (skips where it is absent)."""
    exe = shutil.which(GENERATOR)
    if exe is None:
        pytest.skip(f"{GENERATOR} (Debian ismrmrd-tools) is not installed")
    subprocess.run([exe, *map(str, args), "-o", str(path)], check=True, capture_output=True)
    return path


def raw_acquisitions(path: Path) -> list:
    """Every acquisition of an ISMRMRD file, read with the ismrmrd package."""
    dset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        return [dset.read_acquisition(i) for i in range(dset.number_of_acquisitions())]
    finally:
        dset.close()


def rewrite(src: Path, dst: Path, keep=lambda acq: True, acs=None, xml=None) -> Path:
    """Copy an ISMRMRD file acquisition by acquisition with the ismrmrd package, keeping those
    ``keep`` accepts (undersampling by dropping lines); ``acs(acq)`` -> bool re-flags the
    calibration lines; ``xml`` replaces the header."""
    src_ds = ismrmrd.Dataset(str(src), "dataset", create_if_needed=False)
    header = src_ds.read_xml_header() if xml is None else xml.encode()
    acqs = [src_ds.read_acquisition(i) for i in range(src_ds.number_of_acquisitions())]
    src_ds.close()
    out = ismrmrd.Dataset(str(dst), "dataset", create_if_needed=True)
    out.write_xml_header(header)
    for acq in acqs:
        if not keep(acq):
            continue
        if acs is not None:
            acq.clear_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            acq.clear_flag(ACS)
            if acs(acq):
                acq.set_flag(ACS)
        out.append_acquisition(acq)
    out.close()
    return dst


def error_line(res) -> str:
    """The one ``kldm: error:`` line of a failed command (the progress bar may precede it)."""
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if "kldm: error" in ln]
    assert len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def line(acq) -> int:
    return int(acq.idx.kspace_encode_step_1)


def undersampled_shepp_logan(tmp_path: Path, name="sl_us.h5", coils=4, matrix=32) -> Path:
    """Shepp-Logan with every 3rd line kept plus an 8-line ACS block at the centre."""
    full = shepp_logan(tmp_path / "sl_full.h5", "-m", matrix, "-c", coils)
    c = matrix // 2  # kspace_encoding_step_1 centre of the generator

    def acs(acq):
        return -4 <= line(acq) - c < 4

    return rewrite(full, tmp_path / name, lambda a: line(a) % 3 == 0 or acs(a), acs=acs)


def synth_ismrmrd(path: Path, coils=2, shape=(48, 32), slices=3, keep=None, acs=4) -> Path:
    """A synthetic phantom volume (kspace_ldm.data.synth) written with the ismrmrd package: one
    acquisition per slice and kept line, positions 3 mm apart along an oblique slice normal."""
    vol = synth_volume(7, coils=coils, shape=shape, recon_size=min(shape) // 2, slices=slices)
    ks = vol.kspace if coils > 1 else vol.kspace[:, None]
    h, w = shape
    xml = vol.header  # make_ismrmrd_header: encoded (h, w, 1), centre w // 2, maximum w - 1
    keep = np.ones(w, bool) if keep is None else keep
    read = np.array([1.0, 0.0, 0.0])
    phase = np.array([0.0, np.cos(0.3), np.sin(0.3)])
    normal = np.cross(read, phase)
    ds = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    ds.write_xml_header(xml.encode())
    for s in range(slices):
        for col in np.flatnonzero(keep):
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(ks[s, :, :, col]))
            acq.idx.kspace_encode_step_1 = int(col)
            acq.idx.slice = s
            acq.center_sample = h // 2
            acq.position[:] = tuple(10.0 * read + (s - 1) * 3.0 * normal + [0, 0, 20.0])
            acq.read_dir[:] = tuple(read)
            acq.phase_dir[:] = tuple(phase)
            acq.slice_dir[:] = tuple(normal)
            if 0 <= int(col) - (w // 2 - acs // 2) < acs:
                acq.set_flag(ACS)
            ds.append_acquisition(acq)
    ds.close()
    return path


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_shepp_logan_reads_bit_for_bit(tmp_path):
    path = shepp_logan(tmp_path / "sl.h5", "-m", 32, "-c", 4)
    assert is_ismrmrd_file(path)
    vol = read_ismrmrd(path)
    acqs = raw_acquisitions(path)
    # generator: 2x readout oversampling, encoded 64x32, recon 32x32
    assert vol.kspace_shape == (1, 4, 64, 32) and vol.header.recon_size[:2] == (32, 32)
    assert vol.lines.all() and vol.fully_sampled and not vol.has_mask
    for acq in acqs:
        col = line(acq) + vol.header.padding_left
        np.testing.assert_array_equal(vol.kspace[0, :, :, col], acq.data)
    assert vol.calibration is None  # fully sampled, no ACS flags


def test_interleaved_acs_lines_and_repetitions(tmp_path):
    """-a 2 -w 8: repetition 0 holds the even lines and a calibration block; the mask is exactly
    the lines present and the calibration region exactly the ACS-flagged block."""
    path = shepp_logan(tmp_path / "sl_a2.h5", "-m", 32, "-c", 2, "-a", 2, "-w", 8)
    rep0 = [a for a in raw_acquisitions(path) if a.idx.repetition == 0]
    vol = read_ismrmrd(path)
    expect = np.zeros(32, bool)
    expect[[line(a) + vol.header.padding_left for a in rep0]] = True
    np.testing.assert_array_equal(vol.lines, expect)
    flagged = sorted(
        line(a) + vol.header.padding_left
        for a in rep0
        if a.is_flag_set(ACS) or a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    )
    assert vol.calibration == (flagged[0], flagged[-1] + 1)
    assert flagged == list(range(*vol.calibration))
    assert vol.has_mask and not vol.lines.all()
    rep1 = read_ismrmrd(path, repetition=1)
    assert not np.array_equal(rep1.lines, vol.lines)  # the odd lines


def test_synthetic_multislice_multicoil(tmp_path):
    keep = np.zeros(32, bool)
    keep[::2] = True
    keep[14:18] = True
    path = synth_ismrmrd(tmp_path / "syn.h5", coils=3, keep=keep)
    vol = read_ismrmrd(path)
    ref = synth_volume(7, coils=3, shape=(48, 32), recon_size=16, slices=3).kspace
    assert vol.kspace_shape == (3, 3, 48, 32)
    np.testing.assert_array_equal(vol.kspace[..., keep], ref[..., keep])
    assert not vol.kspace[..., ~keep].any()
    np.testing.assert_array_equal(vol.lines, keep)
    assert vol.calibration == (14, 18)
    assert vol.geometry[2].position[2] - vol.geometry[0].position[2] == pytest.approx(
        6.0 * np.cos(0.3)
    )


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def test_round_trip_ismrmrd_fastmri_ismrmrd_is_bit_exact(tmp_path):
    src = undersampled_shepp_logan(tmp_path)
    run("data", "convert", src, tmp_path / "fm")
    fm = tmp_path / "fm" / src.name
    assert not is_ismrmrd_file(fm)
    with FastMRIFile(fm) as f:
        vol = read_ismrmrd(src)
        np.testing.assert_array_equal(f.mask, vol.lines)  # the mask read back = the mask written
        np.testing.assert_array_equal(f.read_volume_kspace(), vol.kspace)
        assert f.num_low_frequency == 8
    run("data", "convert", fm, tmp_path / "back")
    back = tmp_path / "back" / src.name
    assert is_ismrmrd_file(back)
    a = {(int(x.idx.slice), line(x)): x for x in raw_acquisitions(src)}
    b = {(int(x.idx.slice), line(x)): x for x in raw_acquisitions(back)}
    assert a.keys() == b.keys()
    for key in a:
        # every sample bit for bit (compare the raw float32 bits, so -0.0 and NaN count too)
        assert a[key].data.tobytes() == b[key].data.tobytes()
        assert a[key].is_flag_set(ACS) == b[key].is_flag_set(ACS)
    again = read_ismrmrd(back)
    np.testing.assert_array_equal(again.lines, vol.lines)
    assert again.calibration == vol.calibration


def test_convert_never_replaces_an_existing_file_or_writes_into_the_input_folder(tmp_path):
    src = undersampled_shepp_logan(tmp_path)
    (tmp_path / "fm").mkdir()
    existing = tmp_path / "fm" / src.name
    existing.write_bytes(b"raw data of another scan")
    res = run("data", "convert", src, tmp_path / "fm", ok=False)
    assert "refusing to overwrite" in error_line(res) and "--overwrite" in error_line(res)
    assert existing.read_bytes() == b"raw data of another scan"
    run("data", "convert", src, tmp_path / "fm", "--overwrite")
    assert not is_ismrmrd_file(existing)
    res = run("data", "convert", tmp_path / "fm", tmp_path / "fm", ok=False)
    assert "input folder" in error_line(res)


def test_fastmri_to_ismrmrd_keeps_samples_and_mask(tmp_path):
    from kspace_ldm.data.fastmri import write_fastmri_file
    from kspace_ldm.data.synth import write_challenge_test_file

    vol = synth_volume(3, coils=2, shape=(40, 24), recon_size=16, slices=2)
    full = write_fastmri_file(tmp_path / "full.h5", vol.kspace, header=vol.header)
    mask = np.zeros(24, bool)
    mask[::4] = True
    mask[9:15] = True  # fastMRI's centred block of 6: pad = (24 - 6 + 1) // 2 = 9
    test = write_challenge_test_file(full, tmp_path / "test.h5", mask, 4, 6)
    out = fastmri_to_ismrmrd(test, tmp_path / "test_mrd.h5")
    with FastMRIFile(test) as f:
        got = read_ismrmrd(out)
        np.testing.assert_array_equal(got.lines, f.mask)
        np.testing.assert_array_equal(got.kspace, f.read_volume_kspace())
        assert got.num_low_frequency == 6
    back = ismrmrd_to_fastmri(out, tmp_path / "test_back.h5")
    with FastMRIFile(back) as f:
        np.testing.assert_array_equal(f.mask, got.lines)


# --------------------------------------------------------------------------------------------
# Reconstruction and outputs
# --------------------------------------------------------------------------------------------


def _zero_filled_reference(vol) -> np.ndarray:
    """numpy: centred 2-D IFFT of the masked k-space, root-sum-of-squares, centre crop."""
    ks = vol.kspace if vol.is_multicoil else vol.kspace[:, None]
    img = np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(ks, axes=(-2, -1)), axes=(-2, -1), norm="ortho"),
        axes=(-2, -1),
    )
    rss = np.sqrt((np.abs(img) ** 2).sum(axis=1))
    rx, ry = vol.header.recon_size[:2]
    h, w = rss.shape[-2:]
    top, left = (h - rx) // 2, (w - ry) // 2
    return rss[:, top : top + rx, left : left + ry]


# dciodvfy warnings that are expected: the MR IOD has no Modality LUT module, so the requested
# RescaleSlope/Intercept make it a "Standard Extended SOP Class".
HARMLESS = (
    "Non-identity Modality LUT Module",
    "Attribute is not present in standard DICOM IOD - (0x0028,0x1052)",
    "Attribute is not present in standard DICOM IOD - (0x0028,0x1053)",
    "Dicom dataset contains attributes not present in standard DICOM IOD",
    # Laterality (Type 2C) is empty because it is unknown for a reconstruction, which is allowed
    "is only permitted to be empty when actually unknown",
)


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's errors and unexpected warnings on one file ([] where it is not installed)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return []
    res = subprocess.run([exe, str(path)], capture_output=True, text=True)
    lines = (res.stdout + res.stderr).splitlines()
    return [
        ln
        for ln in lines
        if ln.startswith("Error")
        or (ln.startswith("Warning") and not any(h in ln for h in HARMLESS))
    ]


def test_recon_zero_filled_to_every_format(tmp_path):
    src = undersampled_shepp_logan(tmp_path)
    out = tmp_path / "out"
    fmts = ("h5", "ismrmrd", "dicom", "nifti", "png")
    run("recon", src, "--out", out, *[a for f in fmts for a in ("--format", f)])
    vol = read_ismrmrd(src)
    ref = _zero_filled_reference(vol)
    recon = read_reconstruction(out / src.name)
    # float32 FFT vs numpy float64: worst case measured 9.8e-8 relative to the maximum
    np.testing.assert_allclose(recon, ref, rtol=0, atol=1e-6 * ref.max())

    # ISMRMRD images: the ismrmrd package reads them, values and geometry as written
    ds = ismrmrd.Dataset(str(out / "ismrmrd" / src.name), "dataset", create_if_needed=False)
    assert ds.number_of_images("image_0") == recon.shape[0]
    img = ds.read_image("image_0", 0)
    ds.close()
    np.testing.assert_array_equal(img.data[0, 0].T, recon[0])
    assert tuple(img.matrix_size[:2]) == (32, 32)
    np.testing.assert_allclose(img.field_of_view[:2], (300.0, 300.0))  # reconSpace FOV

    # DICOM: pydicom reads it; pixels * slope = the reconstruction within half a step
    files = sorted((out / "dicom" / "sl_us").glob("*.dcm"))
    assert len(files) == recon.shape[0]
    d = pydicom.dcmread(files[0])
    slope = float(d.RescaleSlope)
    np.testing.assert_allclose(d.pixel_array * slope, recon[0], atol=0.5 * slope + 1e-12)
    assert list(d.ImageType[:2]) == ["DERIVED", "SECONDARY"] and d.Modality == "MR"
    assert "research use only" in d.ImageComments
    np.testing.assert_allclose([float(v) for v in d.PixelSpacing], [300 / 32, 300 / 32])
    assert float(d.SliceThickness) == pytest.approx(6.0)
    assert d.SOPInstanceUID != d.SeriesInstanceUID and d.BitsStored == 16
    assert dciodvfy_errors(files[0]) == []

    # NIfTI: nibabel reads it; data [Rx, Ry, S]
    n = nib.load(out / "nifti" / "sl_us.nii.gz")
    np.testing.assert_array_equal(np.asarray(n.dataobj)[..., 0], recon[0])
    np.testing.assert_allclose(np.abs(np.diag(n.affine)[:2]), [300 / 32, 300 / 32])

    assert len(list((out / "png" / "sl_us").glob("slice_*.png"))) == recon.shape[0]


def test_dicom_and_nifti_geometry_of_oblique_slices(tmp_path):
    keep = np.zeros(32, bool)
    keep[::2] = True
    keep[14:18] = True
    src = synth_ismrmrd(tmp_path / "syn.h5", coils=2, keep=keep)
    out = tmp_path / "out"
    run("recon", src, "--out", out, "--format", "dicom", "--format", "nifti")
    vol = read_ismrmrd(src)
    files = sorted((out / "dicom" / "syn").glob("*.dcm"))
    dx, dy = 140.0 / 320.0, 140.0 / 320.0  # make_ismrmrd_header's pixel size
    n = nib.load(out / "nifti" / "syn.nii.gz")
    series = {pydicom.dcmread(f).SeriesInstanceUID for f in files}
    assert len(files) == 3 and len(series) == 1
    for s, f in enumerate(files):
        d = pydicom.dcmread(f)
        g = vol.geometry[s]
        iop = np.array([float(v) for v in d.ImageOrientationPatient])
        np.testing.assert_allclose(iop, [*g.phase_dir, *g.read_dir], atol=1e-6)
        # the centre pixel (Rx // 2, Ry // 2) lies at the slice position
        ipp = np.array([float(v) for v in d.ImagePositionPatient])
        centre = ipp + 8 * dx * np.asarray(g.read_dir) + 8 * dy * np.asarray(g.phase_dir)
        np.testing.assert_allclose(centre, g.position, atol=1e-4)
        # NIfTI: the same voxel in RAS = LPS with x, y negated
        ras = n.affine @ np.array([8, 8, s, 1.0])
        np.testing.assert_allclose(ras[:3], np.asarray(g.position) * [-1, -1, 1], atol=1e-4)
        assert dciodvfy_errors(f) == []


def test_recon_folder_mixing_ismrmrd_and_fastmri(tmp_path):
    (tmp_path / "in").mkdir()
    src = undersampled_shepp_logan(tmp_path / "in")
    ismrmrd_to_fastmri(src, tmp_path / "in" / "as_fastmri.h5")
    (tmp_path / "in" / "sl_full.h5").unlink()
    res = run("recon", tmp_path / "in", "--out", tmp_path / "o", "--format", "nifti")
    assert "2 volumes" in res.output
    a = nib.load(tmp_path / "o" / "nifti" / "sl_us.nii.gz")
    b = nib.load(tmp_path / "o" / "nifti" / "as_fastmri.nii.gz")
    # the same samples and mask through either reader give the same image
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def test_fully_sampled_ismrmrd_is_undersampled_retrospectively(tmp_path):
    src = shepp_logan(tmp_path / "sl.h5", "-m", 32, "-c", 2)
    run("recon", src, "--out", tmp_path / "o", "--accel", 4, "--center-fraction", 0.25)
    with h5py.File(tmp_path / "o" / "sl.h5") as f:
        assert 2.5 < f.attrs["effective_acceleration"] < 5


def _demo_ismrmrd(tmp_path: Path) -> Path:
    """An undersampled single-coil ISMRMRD file at the demo model's size (96x96, one slice):
    every 4th line and an 8-line ACS block."""
    keep = np.zeros(96, bool)
    keep[::4] = True
    keep[44:52] = True
    return synth_ismrmrd(tmp_path / "demo.h5", coils=1, shape=(96, 96), slices=1, keep=keep, acs=8)


@pytest.mark.slow
def test_cgs_with_the_demo_model_on_ismrmrd(tmp_path):
    """The bundled demo model (single-coil, 96x96) reconstructs an undersampled ISMRMRD file with
    cgs to fastMRI h5 and NIfTI, closer to the phantom than zero filling (~12 s on 2 busy cores)."""
    from kspace_ldm.pretrained import demo_model

    ldm_dir, _ = demo_model()
    src = _demo_ismrmrd(tmp_path)
    run("recon", src, "--out", tmp_path / "zf")
    run("recon", src, "--out", tmp_path / "cgs", "--model", ldm_dir, "--format", "h5",
        "--format", "nifti")  # fmt: skip
    target = synth_volume(7, coils=1, shape=(96, 96), recon_size=48, slices=1).reconstruction_esc
    zf = read_reconstruction(tmp_path / "zf" / "demo.h5")
    cgs = read_reconstruction(tmp_path / "cgs" / "demo.h5")
    err_zf = np.linalg.norm(zf - target) / np.linalg.norm(target)
    err_cgs = np.linalg.norm(cgs - target) / np.linalg.norm(target)
    assert err_cgs < err_zf, (err_cgs, err_zf)
    n = nib.load(tmp_path / "cgs" / "nifti" / "demo.nii.gz")
    assert n.shape == (48, 48, 1)
    np.testing.assert_array_equal(np.asarray(n.dataobj)[..., 0], cgs[0])


def _shepp_logan_96(tmp_path: Path) -> Path:
    """A single-coil 96x96 Shepp-Logan from the generator (no readout oversampling, the demo
    model's grid), undersampled by dropping lines: every 4th kept plus 8 ACS lines."""
    full = shepp_logan(tmp_path / "sl96_full.h5", "-m", 96, "-O", 1, "-c", 1)

    def acs(acq):
        return -4 <= line(acq) - 48 < 4

    return rewrite(full, tmp_path / "sl96.h5", lambda a: line(a) % 4 == 0 or acs(a), acs=acs)


@pytest.mark.slow
def test_cgs_cpp_backend_on_ismrmrd_matches_python(tmp_path):
    """An undersampled ismrmrd_generate_cartesian_shepp_logan file through kldm recon with both
    backends (the demo model; its export made once into KLDM_CACHE) and through kldm-recon, to
    fastMRI h5 and ISMRMRD images: the three agree."""
    from kspace_ldm.demo import _model_for
    from kspace_ldm.pretrained import demo_model

    ldm_dir, _ = demo_model()
    export = _model_for("cpp", ldm_dir, (96, 96), False)
    src = _shepp_logan_96(tmp_path)
    run("recon", src, "--out", tmp_path / "py", "--model", ldm_dir)
    run("recon", src, "--out", tmp_path / "cpp", "--model", export, "--backend", "cpp",
        "--format", "h5", "--format", "ismrmrd")  # fmt: skip
    py = read_reconstruction(tmp_path / "py" / src.name)
    cpp = read_reconstruction(tmp_path / "cpp" / src.name)
    # same algorithm, seeds and weights (the parity bound of tests/test_export.py: < 1e-4)
    assert np.linalg.norm(cpp - py) / np.linalg.norm(py) < 1e-4
    ds = ismrmrd.Dataset(str(tmp_path / "cpp" / "ismrmrd" / src.name), create_if_needed=False)
    np.testing.assert_array_equal(ds.read_image("image_0", 0).data[0, 0].T, cpp[0])
    ds.close()

    # the kldm-recon executable (no Python) on the same ISMRMRD file, to h5 and ISMRMRD images
    from kspace_ldm.ops import build_info

    info = build_info()
    if info["recon_tool"] is None or not info["recon_ismrmrd"]:
        pytest.skip("kldm-recon was built without HDF5 or libismrmrd")
    env = {"PATH": "/usr/bin:/bin"}
    for fmt, out in (("h5", tmp_path / "exe.h5"), ("ismrmrd", tmp_path / "exe_mrd.h5")):
        cmd = [info["recon_tool"], str(src), str(out), "--model", str(export), "--format", fmt]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
    exe = read_reconstruction(tmp_path / "exe.h5")
    np.testing.assert_allclose(exe, cpp, rtol=0, atol=1e-6 * np.abs(cpp).max())
    ds = ismrmrd.Dataset(str(tmp_path / "exe_mrd.h5"), create_if_needed=False)
    img = ds.read_image("image_0", 0)
    ds.close()
    np.testing.assert_array_equal(img.data[0, 0].T, exe[0])
    vol = read_ismrmrd(src)
    np.testing.assert_allclose(img.position, vol.geometry[0].position, atol=1e-5)
    np.testing.assert_allclose(img.field_of_view[:2], vol.recon_fov_mm[:2], rtol=1e-6)


@pytest.mark.slow
def test_cpp_example_reads_ismrmrd(tmp_path):
    """examples/cpp built against the installed package (and libismrmrd when CMake finds it)
    reconstructs an ISMRMRD file with kldm::Sampler; the measured samples stay exact."""
    from test_cmake_package import build_example, read_cfl

    from kspace_ldm.demo import _model_for
    from kspace_ldm.pretrained import demo_model

    if not Path("/usr/include/ismrmrd/dataset.h").is_file():
        pytest.skip("libismrmrd-dev is not installed")
    ldm_dir, _ = demo_model()
    export = _model_for("cpp", ldm_dir, (96, 96), False)
    exe = build_example(tmp_path)
    src = _demo_ismrmrd(tmp_path)
    proc = subprocess.run([str(exe), str(export), str(src), str(tmp_path / "out")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    vol = read_ismrmrd(src)
    assert "measured samples exact: 1" in proc.stdout
    assert f"({int(vol.lines.sum())} of 96 lines)" in proc.stdout
    k = read_cfl(tmp_path / "out")
    np.testing.assert_array_equal(k[..., vol.lines], vol.kspace[:, None][..., vol.lines])


def test_kldm_recon_executable_rejects_bad_ismrmrd(tmp_path):
    """kldm-recon: the same bad ISMRMRD inputs are one line naming the file, exit 2, no output
    (it fails before loading a model, so any --model folder will do)."""
    from kspace_ldm.ops import build_info

    info = build_info()
    if info["recon_tool"] is None or not info["recon_ismrmrd"]:
        pytest.skip("kldm-recon was built without HDF5 or libismrmrd")
    full = shepp_logan(tmp_path / "full.h5", "-m", 16, "-c", 1)
    cases = {
        "radial": (rewrite(full, tmp_path / "radial.h5", **BAD["radial trajectory"][0](full)),
                   "non-Cartesian"),
        "3d": (rewrite(full, tmp_path / "3d.h5", **BAD["3-D encoding"][0](full)), "3-D encoding"),
        "noacs": (rewrite(full, tmp_path / "noacs.h5", keep=lambda a: line(a) % 2 == 0,
                          acs=lambda a: False), "no calibration lines"),
    }  # fmt: skip
    for bad, expected in cases.values():
        out = tmp_path / "out" / bad.name
        proc = subprocess.run(
            [info["recon_tool"], str(bad), str(out), "--model", str(tmp_path)],
            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        msg = proc.stderr.strip()
        assert "\n" not in msg and str(bad) in msg and expected in msg, msg
        assert not out.exists()


def test_kldm_info_says_whether_ismrmrd_support_was_built():
    res = run("info")
    assert "kldm-recon ISMRMRD" in res.output


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the file, exit 2, nothing written
# --------------------------------------------------------------------------------------------


def _edit_xml(path: Path, old: str, new: str) -> str:
    xml = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    text = xml.read_xml_header().decode()
    xml.close()
    assert old in text
    return text.replace(old, new)


def _no_encoding(full: Path) -> str:
    text = _edit_xml(full, "<encoding>", "<encoding>")
    start, stop = text.index("<encoding>"), text.index("</encoding>") + len("</encoding>")
    return text[:start] + text[stop:]


BAD = {
    "no encoding section": (lambda full: dict(xml=_no_encoding(full)), "no <encoding>"),
    "radial trajectory": (
        lambda full: dict(xml=_edit_xml(full, ">cartesian<", ">radial<")),
        "trajectory 'radial' is not supported",
    ),
    "3-D encoding": (
        lambda full: dict(xml=_edit_xml(full, "<z>1</z>", "<z>8</z>")),
        "3-D encoding",
    ),
    "inconsistent line counts": (
        lambda full: dict(keep=lambda a: not (int(a.idx.slice) == 1 and line(a) == 3)),
        "inconsistent line counts",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsupported_ismrmrd_is_one_line_error(tmp_path, case):
    args = ("-m", 16, "-c", 1)
    full = shepp_logan(tmp_path / "full.h5", *args)
    if case == "inconsistent line counts":
        # two slices: a synthetic file, then drop one line of slice 1
        full = synth_ismrmrd(tmp_path / "syn.h5", coils=1, shape=(32, 16), slices=2)
    make, expected = BAD[case]
    bad = rewrite(full, tmp_path / "bad.h5", **make(full))
    out = tmp_path / "out"
    msg = error_line(run("recon", bad, "--out", out, "--format", "dicom", ok=False))
    assert str(bad) in msg and expected in msg, msg
    assert not out.exists() or not any(out.rglob("*"))
    assert expected in error_line(run("data", "convert", bad, tmp_path / "conv", ok=False))
    assert not (tmp_path / "conv").exists() or not any((tmp_path / "conv").rglob("*"))


def test_truncated_ismrmrd_is_one_line_error(tmp_path):
    full = shepp_logan(tmp_path / "full.h5", "-m", 16, "-c", 2)
    bad = tmp_path / "trunc.h5"
    data = full.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    msg = error_line(run("recon", bad, "--out", tmp_path / "out", ok=False))
    assert str(bad) in msg and "not a readable HDF5 file" in msg
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    with pytest.raises(InputError, match=r"trunc\.h5"):
        read_ismrmrd(bad)


def test_missing_optional_package_is_one_line_error(tmp_path, monkeypatch):
    """Without nibabel (or pydicom, ismrmrd) the command names the package in one line, exit 2,
    and writes nothing."""
    import sys

    src = undersampled_shepp_logan(tmp_path)
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel -> ImportError
    out = tmp_path / "out"
    msg = error_line(run("recon", src, "--out", out, "--format", "nifti", ok=False))
    assert "'nibabel' is not installed" in msg and "kspace-ldm[formats]" in msg
    assert not (out / "nifti").exists()


def test_missing_acs_for_cgs_is_one_line_error(tmp_path):
    from kspace_ldm.pretrained import demo_model

    ldm_dir, _ = demo_model()
    full = shepp_logan(tmp_path / "full.h5", "-m", 16, "-c", 1)
    bad = rewrite(full, tmp_path / "noacs.h5", keep=lambda a: line(a) % 2 == 0, acs=lambda a: False)
    out = tmp_path / "out"
    msg = error_line(run("recon", bad, "--out", out, "--model", ldm_dir, ok=False))
    assert str(bad) in msg and "calibration" in msg
    assert not out.exists() or not any(out.rglob("*"))
    run("recon", bad, "--out", out)  # zero-filled needs no calibration
