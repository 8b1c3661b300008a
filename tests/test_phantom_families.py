"""Phantom families of ``kldm data synth``: the new ``anatomy`` family (determinism, geometry,
tissue classes and their contrast ordering) and the ``ellipses`` default staying byte-identical."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run as run_cli

from kspace_ldm.data.anatomy import CONTRAST, TISSUES, AnatomyPhantom
from kspace_ldm.data.synth import PHANTOMS, synth_dataset, synth_volume
from kspace_ldm.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
DEMO = {"shape": (96, 88), "recon_size": 48, "slices": 2}

# sha256 of kspace.tobytes() + reconstruction_rss.tobytes() of synth_volume(seed, **kw) for the
# default (ellipses) family, computed with the code on main before the anatomy family was added
# (commit 2cbb3bf). The bundled demo model was trained on this family: it must not change.
ELLIPSES_GOLDEN = {
    (0, 1, (96, 88), 48, 2): "6da018828c6fec64b56198cc32236138edfd90d9d64c8f99c38e356a7219a916",
    (3, 4, (64, 48), 32, 3): "b8f285163225b0336e73d70b5eaeab85c0bab7f38dbf74a2fddb35d2d18543e4",
}


def _digest(vol) -> str:
    h = hashlib.sha256(vol.kspace.tobytes())
    h.update(vol.reconstruction_rss.tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("key", sorted(ELLIPSES_GOLDEN))
def test_ellipses_default_is_byte_identical_to_before(key):
    seed, coils, shape, recon, slices = key
    kw = {"coils": coils, "shape": shape, "recon_size": recon, "slices": slices}
    assert _digest(synth_volume(seed, **kw)) == ELLIPSES_GOLDEN[key]
    assert _digest(synth_volume(seed, phantom="ellipses", **kw)) == ELLIPSES_GOLDEN[key]


def test_anatomy_is_deterministic_and_differs_from_ellipses():
    a = synth_volume(11, phantom="anatomy", **DEMO)
    b = synth_volume(11, phantom="anatomy", **DEMO)
    c = synth_volume(12, phantom="anatomy", **DEMO)
    e = synth_volume(11, **DEMO)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert _digest(a) != _digest(e)
    assert a.attrs == b.attrs


@pytest.mark.parametrize(
    ("shape", "recon", "coils"), [((96, 88), 48, 1), ((640, 368), 320, 1), ((96, 88), 48, 4)]
)
def test_anatomy_shapes(shape, recon, coils):
    vol = synth_volume(2, phantom="anatomy", shape=shape, recon_size=recon, slices=2, coils=coils)
    k_shape = (2, *shape) if coils == 1 else (2, coils, *shape)
    assert vol.kspace.shape == k_shape and vol.kspace.dtype == np.complex64
    assert vol.reconstruction_rss.shape == (2, recon, recon)
    assert np.isfinite(vol.kspace).all() and np.isfinite(vol.reconstruction_rss).all()
    # the object fills a good part of the crop and fits inside it (border ~ noise only)
    t = vol.reconstruction_rss[0]
    assert (t > 0.2 * t.max()).mean() > 0.3
    border = np.concatenate([t[0], t[-1], t[:, 0], t[:, -1]])
    assert border.max() < 0.1 * t.max()


def _phantom(seed: int, fat_sat: bool, n: int = 292) -> AnatomyPhantom:
    yy = (np.arange(n, dtype=np.float32) - n // 2)[:, None]
    xx = (np.arange(n, dtype=np.float32) - n // 2)[None, :]
    rng = np.random.Generator(np.random.PCG64(seed))
    return AnatomyPhantom(rng, fat_sat, yy, xx, 0.45 * n, 0.45 * n)


@pytest.mark.parametrize("fat_sat", [False, True])
def test_anatomy_tissue_classes_and_contrast_order(fat_sat):
    """Every tissue class appears, and the median magnitude per class follows the PD (or PD-FS)
    ordering of CONTRAST: per-volume jitter (+-10 %), texture and bias field do not reorder the
    classes that CONTRAST separates by more than ~25 %."""
    col = 1 if fat_sat else 0
    order = sorted(CONTRAST, key=lambda k: -CONTRAST[k][col])
    # pairs closer than 25 % in CONTRAST are not required to keep their order
    for seed in range(3):
        img, labels = _phantom(seed, fat_sat).slice_labelled(0, 0.0)
        mag = np.abs(img)
        present = set(np.unique(labels).tolist())
        assert present >= {TISSUES.index(t) for t in TISSUES if t != "vessel"}, present
        med = {t: float(np.median(mag[labels == TISSUES.index(t)])) for t in CONTRAST}
        for hi, lo in itertools.pairwise(order):
            if CONTRAST[hi][col] > 1.25 * CONTRAST[lo][col] + 0.02:
                assert med[hi] > med[lo], (seed, hi, lo, med)
        # air: exactly 0 away from the body; on the ~1.5 px edge ramp (body weight <= 0.5,
        # labelled air) at most half the neighbouring tissue
        air = mag[labels == 0]
        assert air.size and (air == 0).mean() > 0.95 and air.max() <= 0.6 * mag.max()


def test_anatomy_slices_vary_smoothly():
    ph = _phantom(4, False)
    a, b, far = (np.abs(ph.slice(i, z)) for i, z in ((0, 0.0), (1, 0.05), (6, 0.3)))

    def corr(x, y):
        return float(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    assert corr(a, b) > 0.8
    assert corr(a, far) < corr(a, b)
    assert not np.array_equal(a, b)


def test_unknown_phantom_is_refused(tmp_path):
    with pytest.raises(InputError, match="unknown phantom family"):
        synth_volume(0, phantom="brain", **DEMO)
    with pytest.raises(InputError, match="unknown phantom family"):
        synth_dataset(tmp_path, 1, 0, 0, phantom="brain", **DEMO)
    assert PHANTOMS == ("ellipses", "anatomy")


def test_cli_phantom_option(tmp_path):
    out = tmp_path / "d"
    args = ["data", "synth", str(out), "--train", "1", "--shape", "96x88", "--recon-size", "48"]
    run_cli(*args, "--slices", "2", "--phantom", "anatomy")
    (f,) = sorted((out / "singlecoil_train").glob("*.h5"))
    with h5py.File(f, "r") as h5:
        got = h5["kspace"][()]
    want = synth_dataset(
        tmp_path / "lib",
        1,
        0,
        0,
        slices=2,
        phantom="anatomy",
        **{k: v for k, v in DEMO.items() if k != "slices"},
    )
    with h5py.File(want["train"][0], "r") as h5:
        np.testing.assert_array_equal(got, h5["kspace"][()])
    bad = run_cli(*args, "--phantom", "brain", ok=False)
    assert bad.exit_code == 2 and "brain" in bad.output


def test_figure_script_runs(tmp_path):
    out = tmp_path / "fig.png"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/make_phantom_figure.py"),
            "--out",
            str(out),
            "--volumes",
            "2",
            "--shape",
            "96x88",
            "--recon-size",
            "48",
            "--slices",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(out) as im:
        # 2 family rows; the anatomy row has the 2x zoom as an extra (48-px) column
        assert im.size[0] >= 3 * 48 and im.size[1] >= 2 * 48


def test_cli_choices_are_the_library_lists():
    # the CLI spells the lists out (numpy stays out of `kldm --help`); they must not drift
    from kspace_ldm.cli.data import synth as synth_cmd
    from kspace_ldm.data.synth import COIL_GEOMETRIES

    choices = {p.name: tuple(p.type.choices) for p in synth_cmd.params if p.name in
               ("phantom", "coil_geometry")}  # fmt: skip
    assert choices == {"phantom": PHANTOMS, "coil_geometry": COIL_GEOMETRIES}
