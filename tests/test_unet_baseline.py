"""The supervised U-Net baseline: ``kldm train --stage unet`` and ``kldm recon --sampler unet``."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_runner import run
from safetensors.torch import load_file

from kspace_ldm.config import load_config
from kspace_ldm.errors import InputError
from kspace_ldm.models.image_unet import ImageUNet, denormalize_instance, normalize_instance
from kspace_ldm.physics.fft import fft2c
from kspace_ldm.training.unet_stage import UNetStage, load_unet

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo_unet.yaml"
REF = ROOT / "configs" / "baseline_unet.yaml"


def _conv_block(cin: int, cout: int) -> int:
    return 9 * cin * cout + 9 * cout * cout  # two bias-free 3x3 convs; InstanceNorm has no weights


def fastmri_unet_params(chans: int, pools: int) -> int:
    """Parameter count of fastMRI's ``Unet(1, 1, chans, pools)``, layer by layer."""
    n, ch, cin = 0, chans, 1
    for _ in range(pools):
        n += _conv_block(cin, ch)
        cin, ch = ch, ch * 2
    n += _conv_block(cin, 2 * cin)  # bottleneck: widest -> 2 * widest
    ch = 2 * cin
    for _ in range(pools):
        n += 4 * ch * (ch // 2)  # 2x2 transposed conv, no bias
        n += _conv_block(ch, ch // 2)  # after concatenating the skip
        ch //= 2
    return n + ch + 1  # final 1x1 conv with bias


def test_reference_size_is_fastmri_unet_layer_for_layer():
    model = ImageUNet(chans=32, num_pool_layers=4)
    count = sum(p.numel() for p in model.parameters())
    assert count == fastmri_unet_params(32, 4) == 7_756_097


@pytest.mark.parametrize("size", [(320, 320), (37, 51), (48, 48), (17, 16)])
def test_shapes_at_odd_sizes_with_reference_pooling(size, one_thread):
    torch.manual_seed(0)
    model = ImageUNet(chans=2, num_pool_layers=4).eval()
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_fastmri_geometry_640x368_to_320_crop(one_thread):
    """Full single-coil fastMRI k-space 640x368 -> zero-filled 320x320 -> U-Net (4 pools)."""
    cfg = load_config(REF, ["unet.chans=2"])
    stage = UNetStage(cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, 640, 368, generator=g, dtype=torch.complex64)
    k = fft2c(image)
    masks = stage.training_masks(tuple(k.shape[1:]), step=0, rank=0, n=1)
    assert masks.shape == (1, 368)
    zf = stage.zero_filled_batch(k, masks, (320, 320))
    assert zf.shape == (1, 1, 320, 320)
    with torch.no_grad():
        out = stage.build_model().eval()(zf)
    assert out.shape == (1, 1, 320, 320)


def test_instance_norm_round_trip_and_scale_equivariance(one_thread):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 21, 34, generator=g, dtype=torch.float64) * 7 + 2
    z, mean, std = normalize_instance(x)
    assert torch.allclose(z.mean(dim=(-2, -1)), torch.zeros(3, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(dim=(-2, -1)), torch.ones(3, 1, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(denormalize_instance(z, mean, std), x, atol=1e-12, rtol=0)
    # The output follows the input's intensity scale: f(a x + b) = a f(x) + b (the network only
    # sees standardised images). float32 network: measured worst case ~2e-6 relative.
    model = ImageUNet(chans=4, num_pool_layers=2).eval()
    xf = x.float()
    with torch.no_grad():
        y1 = model(xf)
        y2 = model(xf * 1000.0 + 3.0)
    assert torch.allclose(y2, y1 * 1000.0 + 3.0, rtol=1e-4, atol=1e-2)


def test_training_masks_differ_per_step_and_are_reproducible():
    cfg = load_config(DEMO)
    stage = UNetStage(cfg, torch.device("cpu"))
    shape = (1, 96, 96)
    a = stage.training_masks(shape, step=3, rank=0, n=4)
    again = UNetStage(cfg, torch.device("cpu")).training_masks(shape, step=3, rank=0, n=4)
    np.testing.assert_array_equal(a, again)
    b = stage.training_masks(shape, step=4, rank=0, n=4)
    assert not np.array_equal(a, b)
    assert len({m.tobytes() for m in a}) == 4  # each sample of a step has its own mask
    other_seed = UNetStage(load_config(DEMO, ["train.seed=1"]), torch.device("cpu"))
    assert not np.array_equal(a, other_seed.training_masks(shape, step=3, rank=0, n=4))
    # fastMRI random 4x with cf 0.08: the centre columns always, ~N/4 columns in expectation.
    acc = [m.size / m.sum() for m in stage.training_masks(shape, step=0, rank=0, n=64)]
    assert 3.0 < float(np.mean(acc)) < 5.5
    centre = slice((96 - 8 + 1) // 2, (96 - 8 + 1) // 2 + 8)
    assert a[:, centre].all()


def test_unet_config_is_strict(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"inherit: {DEMO}\nunet:\n  chanz: 4\n")
    with pytest.raises(InputError, match=r"bad\.yaml: unknown config key 'unet\.chanz'"):
        load_config(bad)
    with pytest.raises(InputError, match=r"unet\.mask_type"):
        load_config(DEMO, ["unet.accelerations=[4, 8]"])  # one centre fraction, two accels
    with pytest.raises(InputError, match=r"optim\.optimizer"):
        load_config(DEMO, ["optim.optimizer=sgd"])


# ---------------------------------------------------------------------------------------------
# End to end through the CLI
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_unet")
    run(
        "data", "synth", out, "--train", 2, "--val", 1, "--test", 1, "--shape", "64x48",
        "--recon-size", 30, "--slices", 3,
    )  # fmt: skip
    return out


def _sets(synth: Path, steps: int, challenge: str = "singlecoil") -> list[str]:
    pairs = {
        "data.train": synth / f"{challenge}_train",
        "data.val": synth / f"{challenge}_val",
        "train.max_steps": steps,
        "train.val_every": 2,
        "train.ckpt_every": 2,
        "train.progress": "false",
        "unet.chans": 4,
        "unet.num_pool_layers": 2,
        "data.batch_size": 2,
        "optim.scheduler": "constant",  # the LR of a step must not depend on max_steps (resume)
    }
    return [a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]


def test_train_resume_recon_evaluate(synth, tmp_path, one_thread):
    run_dir = tmp_path / "unet"
    res = run("train", "--stage", "unet", "--config", DEMO, "--out", run_dir, *_sets(synth, 2))
    assert "val PSNR" in res.output
    assert (run_dir / "best" / "model.safetensors").is_file()
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 2
    train_csv = (run_dir / "logs" / "train.csv").read_text()
    assert "effective_acceleration" in train_csv.splitlines()[0]

    res = run("train", "--resume", run_dir, "--set", "train.max_steps=3")
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 3
    # The resumed run equals an uninterrupted one (masks and batches are functions of the step).
    straight = tmp_path / "straight"
    run("train", "--stage", "unet", "--config", DEMO, "--out", straight, *_sets(synth, 3))
    a = load_file(run_dir / "checkpoints" / "step_00000003" / "model.safetensors")
    b = load_file(straight / "checkpoints" / "step_00000003" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    test = synth / "singlecoil_test"
    zf_dir, unet_dir = tmp_path / "zf", tmp_path / "recon"
    run("recon", test, "--out", zf_dir, "--sampler", "zero-filled")
    res = run("recon", test, "--out", unet_dir, "--sampler", "unet", "--model", run_dir)
    (name,) = [p.name for p in test.glob("*.h5")]
    with h5py.File(zf_dir / name) as a, h5py.File(unet_dir / name) as b:
        assert a["reconstruction"].shape == b["reconstruction"].shape
        assert b.attrs["sampler"] == "unet"
        assert np.isfinite(b["reconstruction"][()]).all()
        # same mask as zero-filled (seeded by the file name)
        assert a.attrs["effective_acceleration"] == b.attrs["effective_acceleration"]
    res = run("evaluate", "--pred", unet_dir, "--target", test, "--json", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "PSNR" in res.output and metrics


def test_recon_rejects_a_model_that_is_not_a_unet(synth, tmp_path):
    ae_like = tmp_path / "ae"
    ae_like.mkdir()
    (ae_like / "config.yaml").write_text((ROOT / "configs" / "tiny_ae_kl.yaml").read_text())
    for folder, match in ((ae_like, "not a U-Net"), (tmp_path, "no config.yaml")):
        res = run(
            "recon", synth / "singlecoil_test", "--out", tmp_path / "o", "--sampler", "unet",
            "--model", folder, ok=False,
        )  # fmt: skip
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and match in lines[0], res.output
    with pytest.raises(InputError, match="only the python backend"):
        from kspace_ldm.recon import ReconOptions, load_sampler

        load_sampler(ReconOptions(sampler="unet", model=str(ae_like), backend="cpp"))
    with pytest.raises(InputError, match="not a U-Net"):
        load_unet(ae_like)


def test_validation_masks_are_the_masks_recon_draws(synth):
    """Validation scores the U-Net on the per-volume masks `kldm recon` uses for the same file."""
    from kspace_ldm.data.fastmri import FastMRIFile
    from kspace_ldm.data.masks import seed_from_filename
    from kspace_ldm.recon import ReconOptions, undersample_slices, volume_mask

    for accel, cf in ((4, 0.08), (8, 0.04)):
        cfg = load_config(DEMO, [f"unet.accelerations=[{accel}]", f"unet.center_fractions=[{cf}]"])
        stage = UNetStage(cfg, torch.device("cpu"))
        opts = ReconOptions(accelerations=(accel,), center_fractions=(cf,))
        for path in sorted((synth / "singlecoil_val").glob("*.h5")):
            with FastMRIFile(path) as f:
                mask, _ = volume_mask(f, opts)
                _, used = undersample_slices(f, mask, 0, 1)
                shape = f.kspace_shape
            mine = stage.mask_func(shape, seed=seed_from_filename(path.name)).mask
            np.testing.assert_array_equal(mine, used)


def test_multicoil_trains_and_reconstructs_on_rss(tmp_path, one_thread):
    data = tmp_path / "mc"
    run(
        "data", "synth", data, "--train", 1, "--val", 1, "--coils", 3, "--shape", "48x40",
        "--recon-size", 24, "--slices", 2,
    )  # fmt: skip
    val_dir = data / "multicoil_val"
    run_dir = tmp_path / "run"
    sets = _sets(data, 2, "multicoil")
    run("train", "--stage", "unet", "--config", DEMO, "--out", run_dir, *sets)
    out = tmp_path / "recon"
    run("recon", val_dir, "--out", out, "--sampler", "unet", "--model", run_dir)
    (name,) = [p.name for p in val_dir.glob("*.h5")]
    with h5py.File(out / name) as f:
        assert f["reconstruction"].shape == (2, 24, 24)
