"""Synthetic fastMRI-format data: layout, targets, determinism, geometry, fastMRI compatibility."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kspace_ldm.data.fastmri import FastMRIFile, SliceDataset
from kspace_ldm.data.synth import (
    BASE_SCALE,
    synth_dataset,
    synth_volume,
    write_challenge_test_file,
)
from kspace_ldm.errors import InputError
from kspace_ldm.physics.fft import ifft2c

H, W, R, S = 64, 48, 32, 3
SMALL = {"shape": (H, W), "recon_size": R, "slices": S}
# Targets are float32 magnitudes of a complex64 FFT; numpy (pocketfft) vs torch FFT roundoff is
# ~1e-7 of the maximum, so 1e-5 of the maximum is "float32 precision" with a wide margin.
TARGET_RTOL = 1e-5


def _crop(x: torch.Tensor, r: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - r) // 2, (w - r) // 2
    return x[..., top : top + r, left : left + r]


def _expected_target(kspace: np.ndarray, r: int) -> np.ndarray:
    """crop(|ifft2c(k)|) for [S, H, W]; crop(RSS over coils) for [S, C, H, W]."""
    img = ifft2c(torch.from_numpy(kspace)).abs()
    if img.dim() == 4:
        img = img.square().sum(1).sqrt()
    return _crop(img, r).numpy()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, list[Path]]:
    return synth_dataset(tmp_path_factory.mktemp("sc"), 2, 1, 1, seed=0, **SMALL)


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> dict[str, list[Path]]:
    return synth_dataset(tmp_path_factory.mktemp("mc"), 1, 0, 1, coils=4, seed=0, **SMALL)


def test_layout_keys_shapes_attrs(single):
    assert [len(single[k]) for k in ("train", "val", "test")] == [2, 1, 1]
    names = [p.name for paths in single.values() for p in paths]
    assert len(set(names)) == 4
    for split, paths in single.items():
        assert paths == sorted(paths)
        for p in paths:
            assert p.parent.name == f"singlecoil_{split}"
            assert re.fullmatch(r"file\d{7}\.h5", p.name)
            with FastMRIFile(p) as f:
                assert f.kspace_shape == (S, H, W) and not f.is_multicoil
                assert f.target_keys == ("reconstruction_esc", "reconstruction_rss")
                assert f.target_shape() == (S, R, R)
                assert (f.header.encoding_size, f.header.recon_size) == ((H, W, 1), (R, R, 1))
                assert (f.header.padding_left, f.header.padding_right) == (0, W)
                attrs = f.attrs
                assert attrs["acquisition"] in ("CORPD_FBK", "CORPDFS_FBK")
                assert re.fullmatch(r"[0-9a-f]{64}", attrs["patient_id"])
                k = f.read_volume_kspace()
                esc = f.read_volume_target()
                assert k.dtype == np.complex64 and esc.dtype == np.float32
                assert attrs["max"] == pytest.approx(float(esc.max()), rel=1e-7)
                assert attrs["norm"] == pytest.approx(float(np.linalg.norm(esc)), rel=1e-6)


def test_singlecoil_targets_are_cropped_magnitude_of_stored_kspace(single):
    for p in single["train"] + single["test"]:
        with FastMRIFile(p) as f:
            k = f.read_volume_kspace()
            esc = f.read_volume_target("reconstruction_esc")
            rss = f.read_volume_target("reconstruction_rss")
        expected = _expected_target(k, R)
        np.testing.assert_allclose(esc, expected, rtol=0, atol=TARGET_RTOL * expected.max())
        # The RSS of one coil is its magnitude.
        np.testing.assert_array_equal(rss, esc)


def test_multicoil_four_coils(multi):
    p = multi["train"][0]
    assert p.parent.name == "multicoil_train"
    with FastMRIFile(p) as f:
        assert f.is_multicoil and f.num_coils == 4 and f.kspace_shape == (S, 4, H, W)
        assert f.target_keys == ("reconstruction_rss",)
        k = f.read_volume_kspace()
        rss = f.read_volume_target()
    expected = _expected_target(k, R)
    np.testing.assert_allclose(rss, expected, rtol=0, atol=TARGET_RTOL * expected.max())
    # Coils see the object differently: on the object, each coil's share |x_c|^2 / sum |x|^2
    # (= |S_c|^2 with our normalisation) varies strongly in space and between coils.
    vol = synth_volume(0, coils=4, noise_level=0.0, **SMALL)
    power = np.abs(ifft2c(torch.from_numpy(vol.kspace)).numpy()) ** 2  # [S, C, H, W]
    total = power.sum(axis=1)
    on_object = total > 0.05 * total.max()
    share = power.transpose(1, 0, 2, 3)[:, on_object]  # [C, pixels]
    assert share.shape[0] == 4
    share = share / total[on_object]
    assert (share.max(axis=1) - share.min(axis=1)).min() > 0.3
    np.testing.assert_allclose(share.sum(axis=0), 1.0, atol=1e-4)


def test_same_seed_same_bytes_different_seed_different_data(tmp_path, single):
    # Regenerate in a fresh interpreter (another hash seed, later wall-clock time), so neither
    # in-process state nor HDF5 timestamps could make equal bytes by accident.
    code = (
        "import sys; from kspace_ldm.data.synth import synth_dataset; "
        "synth_dataset(sys.argv[1], 2, 1, 1, seed=0, shape=(64, 48), recon_size=32, slices=3)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], check=True, cwd=root, env=env)
    again = {
        split: sorted((tmp_path / "a" / f"singlecoil_{split}").glob("*.h5"))
        for split in ("train", "val", "test")
    }
    for split in ("train", "val", "test"):
        assert [p.name for p in again[split]] == [p.name for p in single[split]]
        assert [_sha(p) for p in again[split]] == [_sha(p) for p in single[split]]
    other = synth_dataset(tmp_path / "b", 2, 0, 0, seed=1, **SMALL)
    assert {p.name for p in other["train"]}.isdisjoint(p.name for p in single["train"])
    with FastMRIFile(single["train"][0]) as f0, FastMRIFile(other["train"][0]) as f1:
        a, b = f0.read_volume_target(), f1.read_volume_target()
    assert np.abs(a - b).max() > 0.1 * a.max()


@pytest.mark.parametrize(("shape", "recon"), [((64, 17), 16), ((640, 372), 320), ((71, 33), 32)])
def test_odd_and_real_widths(shape, recon):
    vol = synth_volume(3, shape=shape, recon_size=recon, slices=1)
    assert vol.kspace.shape == (1, *shape) and vol.kspace.dtype == np.complex64
    assert vol.reconstruction_esc.shape == (1, recon, recon)
    expected = _expected_target(vol.kspace, recon)
    np.testing.assert_allclose(
        vol.reconstruction_esc, expected, rtol=0, atol=TARGET_RTOL * expected.max()
    )
    assert vol.reconstruction_esc.max() > 0


def test_object_inside_crop_and_central_half_of_readout():
    hh, ww, r = 128, 96, 64
    vol = synth_volume(5, shape=(hh, ww), recon_size=r, slices=2, noise_level=0.0)
    img = ifft2c(torch.from_numpy(vol.kspace)).abs().double().square().numpy()
    total = img.sum()
    # 2x readout oversampling: rows outside the central half hold (numerically) nothing ...
    outside_rows = img[:, : hh // 4].sum() + img[:, 3 * hh // 4 :].sum()
    assert outside_rows / total < 1e-10
    # ... and nothing lies outside the recon crop (complex64 FFT roundoff only, ~1e-14).
    top, left = (hh - r) // 2, (ww - r) // 2
    outside_crop = img.copy()
    outside_crop[:, top : top + r, left : left + r] = 0
    assert outside_crop.sum() / total < 1e-10
    # The object is not a speck: it covers a good part of the crop.
    tgt = vol.reconstruction_esc
    assert (tgt > 0.1 * tgt.max()).mean() > 0.3


def test_noise_level_and_intensity_scale():
    level = 0.02
    vol = synth_volume(6, shape=(128, 96), recon_size=64, slices=2, noise_level=level)
    img = ifft2c(torch.from_numpy(vol.kspace)).numpy()
    # Outside the central half of the readout the image is pure noise, E|n|^2 = sigma^2 with
    # sigma = noise_level * BASE_SCALE * U(0.8, 1.2) (and the unitary FFT keeps it white).
    background = np.concatenate([img[:, :24].ravel(), img[:, -24:].ravel()])
    sigma = np.sqrt(np.mean(np.abs(background) ** 2))
    assert 0.75 * level * BASE_SCALE < sigma < 1.25 * level * BASE_SCALE
    # fastMRI-knee-like magnitudes (documented scale): target max ~1e-4 .. 5e-4.
    assert 1e-4 < vol.reconstruction_esc.max() < 6e-4


def test_adjacent_slices_similar_but_not_identical():
    vol = synth_volume(7, **{**SMALL, "slices": 4})
    other = synth_volume(8, **{**SMALL, "slices": 1})
    t = vol.reconstruction_esc

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    for i in range(3):
        assert corr(t[i], t[i + 1]) > 0.95
        assert np.abs(t[i] - t[i + 1]).max() > 0.02 * t.max()
    assert corr(t[0], other.reconstruction_esc[0]) < 0.9


def test_anatomy_independent_of_coil_count():
    sc = synth_volume(9, coils=1, noise_level=0.0, **SMALL)
    mc = synth_volume(9, coils=3, noise_level=0.0, **SMALL)
    # sum_c |S_c|^2 = 1, so the noiseless RSS equals the single-coil magnitude.
    np.testing.assert_allclose(
        mc.reconstruction_rss,
        sc.reconstruction_esc,
        rtol=0,
        atol=1e-5 * sc.reconstruction_esc.max(),
    )


def test_fastmri_slicedataset_loads_synth_files(single, multi):
    from fastmri.data.mri_data import SliceDataset as FastMRISliceDataset

    for split, challenge in ((single, "singlecoil"), (multi, "multicoil")):
        root = split["train"][0].parent
        theirs = FastMRISliceDataset(root, challenge=challenge)
        ours = SliceDataset(root, challenge=challenge)
        assert len(theirs) == len(ours) == S * len(split["train"])
        for i in range(len(ours)):
            k, mask, tgt, attrs, fname, slice_num = theirs[i]
            mine = ours[i]
            assert (fname, slice_num) == (mine.fname, mine.slice_num) and mask is None
            np.testing.assert_array_equal(k, mine.kspace.numpy())
            np.testing.assert_array_equal(tgt, mine.target.numpy())
            assert (attrs["padding_left"], attrs["padding_right"]) == (0, W)
            assert tuple(attrs["recon_size"]) == (R, R, 1)
            assert attrs["max"] == mine.max_value


def test_challenge_test_file(tmp_path, single):
    from fastmri.data.mri_data import SliceDataset as FastMRISliceDataset

    src = single["test"][0]
    mask = np.zeros(W, bool)
    mask[W // 2 - 4 : W // 2 + 4] = True
    mask[::4] = True
    dst = write_challenge_test_file(src, tmp_path / "t" / src.name, mask, 4, 8)
    with FastMRIFile(src) as f, FastMRIFile(dst) as g:
        np.testing.assert_array_equal(g.read_volume_kspace(), f.read_volume_kspace() * mask)
        np.testing.assert_array_equal(g.mask, mask)
        assert g.target_key is None and g.acceleration == 4 and g.num_low_frequency == 8
        assert g.header == f.header and g.header_xml == f.header_xml
        assert g.attrs["patient_id"] == f.attrs["patient_id"] and "max" not in g.attrs
    _, m, tgt, attrs, _, _ = FastMRISliceDataset(dst.parent, challenge="singlecoil")[0]
    assert tgt is None and attrs["acceleration"] == 4
    np.testing.assert_array_equal(m, mask)
    with pytest.raises(InputError, match=r"mask has shape \[47\], expected \[48\]"):
        write_challenge_test_file(src, tmp_path / "bad.h5", mask[:-1], 4, 8)
    with pytest.raises(InputError, match="mask samples no column"):
        write_challenge_test_file(src, tmp_path / "bad.h5", np.zeros(W, bool), 4, 8)
    assert not (tmp_path / "bad.h5").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match=r"recon_size must be in \[1, min\(H, W\)\] = \[1, 48\]"):
        synth_dataset(tmp_path, 1, 0, 0, shape=(64, 48), recon_size=64)
    with pytest.raises(InputError, match="coils must be >= 1"):
        synth_volume(0, coils=0, **SMALL)
    with pytest.raises(InputError, match="volume counts must be >= 0"):
        synth_dataset(tmp_path, -1, 0, 0, **SMALL)
    assert list(tmp_path.iterdir()) == []
