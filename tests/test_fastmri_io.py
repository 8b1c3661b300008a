"""fastMRI HDF5 I/O: round trips, validation errors, atomic writes, datasets, fastMRI compat."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from kspace_ldm.data.fastmri import (
    FastMRIFile,
    Header,
    SliceDataset,
    SliceSample,
    VolumeDataset,
    list_h5_files,
    make_ismrmrd_header,
    parse_ismrmrd_header,
    read_reconstruction,
    write_fastmri_file,
    write_reconstruction,
)
from kspace_ldm.data.inspect import inspect_file, preview_png
from kspace_ldm.errors import InputError

S, H, W, R, C = 3, 64, 48, 32, 4


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _volume(seed: int, coils: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random k-space [S, (C,) H, W] complex64 and a positive target [S, R, R] float32."""
    rng = np.random.default_rng(seed)
    shape = (S, H, W) if coils is None else (S, coils, H, W)
    return _complex(rng, shape), rng.uniform(0.1, 1.0, (S, R, R)).astype(np.float32)


def _assert_input_error(excinfo: pytest.ExceptionInfo, path: Path, *fragments: str) -> None:
    msg = str(excinfo.value)
    assert msg.startswith(f"{path}: "), msg
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, msg


# ------------------------------------------------------------------------------------------------
# Header
# ------------------------------------------------------------------------------------------------


def test_header_paddings_match_fastmri_formula_and_fastmri_parser():
    from xml.etree import ElementTree as etree

    from fastmri.data.mri_data import et_query

    xml = make_ismrmrd_header((H, W, 1), (R, R, 1), step1_center=20, step1_max=40)
    hdr = parse_ismrmrd_header(xml)
    # padding_left = enc_y // 2 - center = 24 - 20; padding_right = left + maximum + 1.
    assert hdr == Header((H, W, 1), (R, R, 1), 4, 45)
    root = etree.fromstring(xml.encode())
    assert int(et_query(root, ["encoding", "encodedSpace", "matrixSize", "y"])) == W
    assert int(et_query(root, ["encoding", "reconSpace", "matrixSize", "x"])) == R
    lims = ["encoding", "encodingLimits", "kspace_encoding_step_1"]
    assert int(et_query(root, [*lims, "center"])) == 20
    assert int(et_query(root, [*lims, "maximum"])) == 40


def test_header_without_namespace_and_invalid_headers():
    xml = make_ismrmrd_header((H, W, 1), (R, R, 1), W // 2, W - 1)
    plain = xml.replace(' xmlns="http://www.ismrm.org/ISMRMRD"', "")
    assert parse_ismrmrd_header(plain) == Header((H, W, 1), (R, R, 1), 0, W)
    with pytest.raises(InputError, match=r"invalid ismrmrd_header \(XML parse error"):
        parse_ismrmrd_header("<ismrmrdHeader><encoding>", "f.h5")
    no_limits = xml.replace("<center>", "<centre>").replace("</center>", "</centre>")
    with pytest.raises(InputError, match="no element encoding/encodingLimits"):
        parse_ismrmrd_header(no_limits, "f.h5")
    with pytest.raises(InputError, match="step1_center <= step1_max"):
        make_ismrmrd_header((H, W, 1), (R, R, 1), 50, 40)


# ------------------------------------------------------------------------------------------------
# Round trips
# ------------------------------------------------------------------------------------------------


def test_singlecoil_round_trip(tmp_path):
    kspace, esc = _volume(0)
    rss = esc * 1.1
    path = write_fastmri_file(
        tmp_path / "file1000001.h5",
        kspace,
        reconstruction_esc=esc,
        reconstruction_rss=rss,
        attrs={"acquisition": "CORPD_FBK", "patient_id": "abc"},
    )
    with FastMRIFile(path) as f:
        assert f.num_slices == S and not f.is_multicoil and f.num_coils == 1
        assert f.kspace_shape == (S, H, W)
        assert f.target_key == "reconstruction_esc"
        assert f.target_keys == ("reconstruction_esc", "reconstruction_rss")
        assert f.target_shape() == (S, R, R)
        assert f.header == Header((H, W, 1), (R, R, 1), 0, W)
        assert not f.has_mask and f.mask is None and f.acceleration is None
        attrs = f.attrs
        assert attrs["acquisition"] == "CORPD_FBK" and attrs["patient_id"] == "abc"
        # fastMRI: max / norm of the challenge target volume (ESC for single-coil).
        assert attrs["max"] == pytest.approx(float(esc.max()), rel=1e-7)
        assert attrs["norm"] == pytest.approx(float(np.linalg.norm(esc)), rel=1e-6)
        k1 = f.read_kspace(1)
        assert k1.dtype == np.complex64 and k1.shape == (H, W)
        np.testing.assert_array_equal(k1, kspace[1])
        np.testing.assert_array_equal(f.read_kspace(-1), kspace[-1])
        np.testing.assert_array_equal(f.read_target(2), esc[2])
        np.testing.assert_array_equal(f.read_target(2, "reconstruction_rss"), rss[2])
        np.testing.assert_array_equal(f.read_volume_kspace(), kspace)
        np.testing.assert_array_equal(f.read_volume_target(), esc)
        with pytest.raises(IndexError, match="out of range"):
            f.read_kspace(S)


def test_multicoil_round_trip_with_custom_header(tmp_path):
    kspace, rss = _volume(1, coils=C)
    header = make_ismrmrd_header((H, W, 1), (R, R, 1), step1_center=20, step1_max=40)
    path = write_fastmri_file(tmp_path / "m.h5", kspace, reconstruction_rss=rss, header=header)
    with FastMRIFile(path) as f:
        assert f.is_multicoil and f.num_coils == C and f.kspace_shape == (S, C, H, W)
        assert f.target_key == "reconstruction_rss"
        assert (f.header.padding_left, f.header.padding_right) == (4, 45)
        assert f.header_xml == header
        assert f.attrs["max"] == pytest.approx(float(rss.max()), rel=1e-7)
        k = f.read_kspace(0)
        assert k.shape == (C, H, W)
        np.testing.assert_array_equal(k, kspace[0])
        np.testing.assert_array_equal(f.read_volume_target(), rss)


def test_singlecoil_file_with_only_rss_uses_rss_and_no_target_has_no_max(tmp_path):
    kspace, rss = _volume(2)
    p1 = write_fastmri_file(tmp_path / "a.h5", kspace, reconstruction_rss=rss)
    p2 = write_fastmri_file(tmp_path / "b.h5", kspace)
    with FastMRIFile(p1) as f:
        assert f.target_key == "reconstruction_rss"
        assert f.attrs["max"] == pytest.approx(float(rss.max()), rel=1e-7)
    with FastMRIFile(p2) as f:
        assert f.target_key is None and f.read_target(0) is None
        assert "max" not in f.attrs and f.header.recon_size == (W, W, 1)


def test_test_set_file_mask_and_attrs(tmp_path):
    kspace, _ = _volume(3)
    mask = np.zeros(W, bool)
    mask[::4] = True
    mask[W // 2 - 3 : W // 2 + 3] = True
    path = write_fastmri_file(
        tmp_path / "t.h5",
        kspace * mask,
        mask=mask,
        attrs={"acceleration": 4, "num_low_frequency": 6},
    )
    with FastMRIFile(path) as f:
        assert f.has_mask and f.mask.dtype == np.bool_
        np.testing.assert_array_equal(f.mask, mask)
        assert f.acceleration == 4 and f.num_low_frequency == 6
        assert f.target_key is None
    text = inspect_file(path)
    n = int(mask.sum())
    assert f"mask: {n}/{W} columns sampled, effective acceleration {W / n:.2f}x" in text
    assert "test-set file" in text and "kspace               [3, 64, 48] complex64" in text


def test_read_kspace_reads_only_the_requested_slice(tmp_path, monkeypatch):
    kspace, _ = _volume(4, coils=2)
    path = write_fastmri_file(tmp_path / "x.h5", kspace)
    calls: list[tuple[str, object]] = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        calls.append((self.name, args))
        return original(self, args, *rest, **kw)

    with FastMRIFile(path) as f:
        monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
        k = f.read_kspace(2)
        monkeypatch.undo()
    np.testing.assert_array_equal(k, kspace[2])
    # One hyperslab read of slice 2 of /kspace, nothing else.
    assert calls == [("/kspace", 2)]


def test_list_h5_files(tmp_path):
    with pytest.raises(InputError) as ei:
        list_h5_files(tmp_path)
    _assert_input_error(ei, tmp_path, "no *.h5 files found")
    with pytest.raises(InputError, match="no such file or directory"):
        list_h5_files(tmp_path / "missing")
    kspace, _ = _volume(5)
    for name in ("b.h5", "a.h5"):
        write_fastmri_file(tmp_path / name, kspace)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_h5_files(tmp_path)] == ["a.h5", "b.h5"]
    assert list_h5_files(tmp_path / "b.h5") == [tmp_path / "b.h5"]


def test_reconstruction_round_trip_and_validation(tmp_path):
    rec = np.random.default_rng(6).uniform(size=(S, R, R)).astype(np.float32)
    path = write_reconstruction(tmp_path / "sub" / "file1.h5", rec)
    np.testing.assert_array_equal(read_reconstruction(path), rec)
    assert "reconstruction (submission) file" in inspect_file(path)
    with pytest.raises(InputError, match="containing NaN/Inf"):
        write_reconstruction(tmp_path / "bad.h5", np.full((1, R, R), np.nan, np.float32))
    with pytest.raises(InputError, match=r"expected real \[slices, R, R\]"):
        write_reconstruction(tmp_path / "bad.h5", rec[0])
    assert not (tmp_path / "bad.h5").exists()
    kspace, _ = _volume(6)
    other = write_fastmri_file(tmp_path / "k.h5", kspace)
    with pytest.raises(InputError) as ei:
        read_reconstruction(other)
    _assert_input_error(ei, other, "missing HDF5 key 'reconstruction'")


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def _raw_file(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f.create_dataset(key, data=value)
    return path


def test_not_hdf5_and_missing_file(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("this is not HDF5\n" * 10)
    with pytest.raises(InputError) as ei:
        FastMRIFile(bad)
    _assert_input_error(ei, bad, "not a readable HDF5 file (")
    with pytest.raises(InputError) as ei:
        FastMRIFile(tmp_path / "nope.h5")
    _assert_input_error(ei, tmp_path / "nope.h5", "no such file")


def test_truncated_file(tmp_path):
    kspace, esc = _volume(7)
    path = write_fastmri_file(tmp_path / "t.h5", kspace, reconstruction_esc=esc)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, "not a readable HDF5 file (")


def test_missing_kspace(tmp_path):
    path = _raw_file(tmp_path / "m.h5", reconstruction_esc=np.zeros((1, R, R), np.float32))
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    assert str(ei.value) == f"{path}: missing HDF5 key 'kspace'"


def test_real_kspace_dtype(tmp_path):
    path = _raw_file(tmp_path / "r.h5", kspace=np.zeros((S, H, W), np.float32))
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, "kspace has dtype float32", "[3, 64, 48]", "expected complex")


@pytest.mark.parametrize("shape", [(H, W), (1, 2, 3, H, W)])
def test_wrong_kspace_rank(tmp_path, shape):
    path = _raw_file(tmp_path / "r.h5", kspace=np.zeros(shape, np.complex64))
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, f"kspace has shape {list(shape)} (rank {len(shape)})")


def test_mask_length_mismatch(tmp_path):
    path = _raw_file(
        tmp_path / "m.h5", kspace=np.zeros((S, H, W), np.complex64), mask=np.ones(W - 8, bool)
    )
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, f"mask has length {W - 8}, expected {W}")
    with pytest.raises(InputError, match=r"mask has shape \[48\], expected \[40\]"):
        write_fastmri_file(tmp_path / "w.h5", np.zeros((S, H, W - 8), np.complex64), mask=[1] * W)


def test_target_shape_mismatch(tmp_path):
    path = _raw_file(
        tmp_path / "t.h5",
        kspace=np.zeros((S, H, W), np.complex64),
        reconstruction_esc=np.zeros((S + 1, R, R), np.float32),
    )
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, "reconstruction_esc has dtype float32 and shape [4, 32, 32]")


def test_nan_slice(tmp_path):
    kspace, _ = _volume(8)
    kspace[1, 5, 7] = np.nan
    path = _raw_file(tmp_path / "n.h5", kspace=kspace)
    with FastMRIFile(path) as f:
        f.read_kspace(0)  # the clean slices stay readable
        with pytest.raises(InputError) as ei:
            f.read_kspace(1)
        assert str(ei.value) == f"{path}: k-space slice 1 contains NaN/Inf"
        with pytest.raises(InputError, match="k-space slice 1 contains NaN/Inf"):
            f.read_volume_kspace()
    ds = SliceDataset(path)
    with pytest.raises(InputError, match="slice 1 contains NaN/Inf"):
        ds[1]
    with pytest.raises(InputError, match="refusing to write k-space containing NaN/Inf"):
        write_fastmri_file(tmp_path / "w.h5", kspace)


def test_missing_and_invalid_header(tmp_path):
    kspace, esc = _volume(9)
    path = _raw_file(tmp_path / "h.h5", kspace=kspace, reconstruction_esc=esc)
    with FastMRIFile(path) as f:
        assert f.header == Header((H, W, 1), (R, R, 1), 0, W, inferred=True)
        assert f.header_xml is None
    with h5py.File(path, "a") as f:
        f.create_dataset("ismrmrd_header", data="<ismrmrdHeader><encoding>")
    with pytest.raises(InputError) as ei:
        FastMRIFile(path)
    _assert_input_error(ei, path, "invalid ismrmrd_header (XML parse error")


def test_writer_rejects_bad_arrays(tmp_path):
    kspace, esc = _volume(10)
    with pytest.raises(InputError, match="kspace has dtype float32, expected complex"):
        write_fastmri_file(tmp_path / "a.h5", kspace.real)
    with pytest.raises(InputError, match=r"kspace has shape \[64, 48\]"):
        write_fastmri_file(tmp_path / "a.h5", kspace[0])
    with pytest.raises(InputError, match=r"reconstruction_esc .* expected real \[3, R, R\]"):
        write_fastmri_file(tmp_path / "a.h5", kspace, reconstruction_esc=esc[:2])
    with pytest.raises(InputError, match="invalid ismrmrd_header"):
        write_fastmri_file(tmp_path / "a.h5", kspace, header="<not-xml")
    with pytest.raises(InputError, match="attribute 'bad' = None cannot be stored"):
        write_fastmri_file(tmp_path / "a.h5", kspace, attrs={"bad": None})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    kspace, esc = _volume(11)
    path = tmp_path / "file.h5"
    path.write_bytes(b"previous content")
    original = h5py.Group.create_dataset
    made: list[str] = []

    def failing(self, name, *args, **kwargs):
        made.append(name)
        if name == "reconstruction_esc":  # after kspace has been written
            raise RuntimeError("simulated crash mid-write")
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_fastmri_file(path, kspace, reconstruction_esc=esc)
    assert made == ["kspace", "reconstruction_esc"]
    # The old file is untouched and no temporary file is left behind.
    assert path.read_bytes() == b"previous content"
    assert sorted(os.listdir(tmp_path)) == ["file.h5"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_fastmri_file(tmp_path / "new.h5", kspace, reconstruction_esc=esc)
    assert made == ["kspace", "reconstruction_esc"] * 2
    assert sorted(os.listdir(tmp_path)) == ["file.h5"]


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def two_singlecoil(tmp_path) -> tuple[Path, list[tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path / "sc"
    vols = [_volume(20), _volume(21)]
    for i, (k, t) in enumerate(vols):
        write_fastmri_file(root / f"file100000{i}.h5", k, reconstruction_esc=t, attrs={"x": i})
    return root, vols


def test_slice_dataset(two_singlecoil):
    root, vols = two_singlecoil
    ds = SliceDataset(root)
    assert len(ds) == 2 * S
    item = ds[S + 1]
    assert isinstance(item, SliceSample)
    assert item.kspace.dtype == torch.complex64 and item.kspace.shape == (H, W)
    assert item.target.dtype == torch.float32 and item.target.shape == (R, R)
    assert item.mask is None
    assert (item.fname, item.slice_num) == ("file1000001.h5", 1)
    np.testing.assert_array_equal(item.kspace.numpy(), vols[1][0][1])
    np.testing.assert_array_equal(item.target.numpy(), vols[1][1][1])
    assert item.max_value == pytest.approx(float(vols[1][1].max()), rel=1e-7)
    assert item.attrs["x"] == 1 and item.header.padding_right == W
    # Transforms get the sample; challenge selects the target.
    shapes = SliceDataset(root, transform=lambda s: tuple(s.kspace.shape))
    assert shapes[0] == (H, W)
    assert SliceDataset(root, challenge="singlecoil")[0].target is not None
    with pytest.raises(InputError, match=r"single-coil k-space .* challenge 'multicoil'"):
        SliceDataset(root, challenge="multicoil")
    with pytest.raises(InputError, match="challenge must be"):
        SliceDataset(root, challenge="knee")


def test_volume_dataset(two_singlecoil, tmp_path):
    root, vols = two_singlecoil
    mroot = tmp_path / "mc"
    k, t = _volume(22, coils=C)
    write_fastmri_file(mroot / "file2.h5", k, reconstruction_rss=t)
    ds = VolumeDataset([root, mroot])
    assert len(ds) == 3 and ds.num_slices(2) == S
    v = ds[0]
    np.testing.assert_array_equal(v.kspace.numpy(), vols[0][0])
    np.testing.assert_array_equal(v.target.numpy(), vols[0][1])
    v = ds[2]
    assert v.kspace.shape == (S, C, H, W) and v.target.shape == (S, R, R) and v.num_slices == S
    with ds.open(2) as f:
        np.testing.assert_array_equal(f.read_kspace(1), k[1])


def test_slice_dataset_in_forked_workers_and_pickling(two_singlecoil):
    root, vols = two_singlecoil
    ds = SliceDataset(root, max_open_files=2)
    first = ds[0].kspace.clone()  # opens (and caches) a handle in this process
    ds2 = pickle.loads(pickle.dumps(ds))  # spawn-style workers: no h5py handle is pickled
    np.testing.assert_array_equal(ds2[0].kspace.numpy(), first.numpy())
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=None)
    got = {(s.fname, s.slice_num): s.kspace.numpy() for s in loader}
    assert len(got) == 2 * S
    for i, (k, _) in enumerate(vols):
        for s in range(S):
            np.testing.assert_array_equal(got[(f"file100000{i}.h5", s)], k[s])
    ds.close()


# ------------------------------------------------------------------------------------------------
# Compatibility with fastMRI's own SliceDataset
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("multicoil", [False, True])
def test_fastmri_slicedataset_reads_our_files(tmp_path, multicoil):
    from fastmri.data.mri_data import SliceDataset as FastMRISliceDataset

    coils = C if multicoil else None
    kspace, target = _volume(30, coils=coils)
    key = "reconstruction_rss" if multicoil else "reconstruction_esc"
    header = make_ismrmrd_header((H, W, 1), (R, R, 1), step1_center=22, step1_max=43)
    write_fastmri_file(
        tmp_path / "file1.h5",
        kspace,
        header=header,
        attrs={"acquisition": "CORPDFS_FBK", "patient_id": "p1"},
        **{key: target},
    )
    challenge = "multicoil" if multicoil else "singlecoil"
    theirs = FastMRISliceDataset(tmp_path, challenge=challenge, transform=None)
    ours = SliceDataset(tmp_path, challenge=challenge)
    assert len(theirs) == len(ours) == S
    for i in range(S):
        k, mask, tgt, attrs, fname, slice_num = theirs[i]
        mine = ours[i]
        assert (fname, slice_num) == (mine.fname, mine.slice_num)
        assert mask is None and mine.mask is None
        np.testing.assert_array_equal(k, mine.kspace.numpy())
        np.testing.assert_array_equal(tgt, mine.target.numpy())
        assert (attrs["padding_left"], attrs["padding_right"]) == (2, 46)
        assert (mine.header.padding_left, mine.header.padding_right) == (2, 46)
        assert tuple(attrs["encoding_size"]) == mine.header.encoding_size == (H, W, 1)
        assert tuple(attrs["recon_size"]) == mine.header.recon_size == (R, R, 1)
        assert attrs["max"] == mine.max_value
        assert attrs["norm"] == mine.attrs["norm"]
        assert attrs["acquisition"] == "CORPDFS_FBK" and attrs["patient_id"] == "p1"


def test_fastmri_slicedataset_reads_our_test_set_file(tmp_path):
    from fastmri.data.mri_data import SliceDataset as FastMRISliceDataset

    kspace, _ = _volume(31)
    mask = np.arange(W) % 3 == 0
    write_fastmri_file(
        tmp_path / "file9.h5",
        kspace * mask,
        mask=mask,
        attrs={"acceleration": 3, "num_low_frequency": 0},
    )
    k, m, tgt, attrs, _, _ = FastMRISliceDataset(tmp_path, challenge="singlecoil")[0]
    assert tgt is None and attrs["acceleration"] == 3
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(k, kspace[0] * mask)


# ------------------------------------------------------------------------------------------------
# Inspect / preview
# ------------------------------------------------------------------------------------------------


def test_inspect_and_preview(tmp_path):
    kspace, rss = _volume(40, coils=C)
    path = write_fastmri_file(tmp_path / "m.h5", kspace, reconstruction_rss=rss)
    text = inspect_file(path)
    assert "multi-coil (4 coils) fully sampled volume" in text
    assert "padding_left 0, padding_right 48" in text and "target: reconstruction_rss" in text
    out = preview_png(path, tmp_path / "p.png")
    with Image.open(out) as im:
        # Target panel (32 x 32) beside the k-space panel (64 x 48), 8 px apart.
        assert im.format == "PNG" and im.mode == "L" and im.size == (R + 8 + W, H)
        arr = np.asarray(im)
    assert arr[:, R + 8 :].std() > 0 and arr[:, :R].max() == 255
    # A test-set file without target: the RSS of the header's recon crop (min(320, H, W) = 48
    # for a file written without target) stands in for the target.
    write_fastmri_file(tmp_path / "t.h5", kspace, mask=np.ones(W, bool))
    with Image.open(preview_png(tmp_path / "t.h5", tmp_path / "t.png", slice_idx=0)) as im:
        assert im.size == (W + 8 + W, H)
    with pytest.raises(InputError, match="slice 5 out of range"):
        preview_png(path, tmp_path / "x.png", slice_idx=5)
    assert not (tmp_path / "x.png").exists()
