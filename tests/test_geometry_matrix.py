"""Every fastMRI geometry, end to end (every stage at the sizes users bring).

Each leg runs every stage for a couple of steps at a true k-space geometry: ``kldm data synth`` ->
``train --stage ae`` -> ``extract-latents`` -> ``train --stage ldm`` -> ``recon`` (Python, and on
some legs ``export`` + ``recon --backend cpp``) -> ``evaluate``. The networks keep the *level
counts* of the reference configs (``configs/ae_kl_4.yaml``: 4 levels, f = 8;
``configs/ldm_ref.yaml``: 4 UNet levels, multiple 8) or of the demo recipe
(``configs/demo_ae.yaml`` f = 4, ``configs/demo_ldm.yaml`` multiple 4), so the latent sizes, their
padding to the UNet's multiple and the exported shapes are those of the real runs; only the
channel widths are tiny. The latent sizes of the legs:

=================  =============  ======================  =========  =====================
leg                k-space        configs (levels)        latent     UNet input (padded)
=================  =============  ======================  =========  =====================
demo_96x88         1 x 96 x 88    demo (f 4, UNet x4)     24 x 22    24 x 24
ref_640x368        1 x 640 x 368  reference (f 8, x8)     80 x 46    80 x 48
ref_640x372        1 x 640 x 372  reference (f 8, x8)     80 x 47    80 x 48
ref_mc15_640x368   15 x 640 x 368 reference (f 8, x8)     80 x 46    80 x 48
=================  =============  ======================  =========  =====================

The C++ leg (AOTInductor compiles, ~20-35 s per export on 2 cores) runs at the demo size and at
one full geometry (640 x 372: odd latent width and a k-space width that is not a multiple of the
first stage's factor); the others check the Python backend.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run

from kspace_ldm.data.fastmri import read_reconstruction

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

# Tiny widths, the reference configs' level counts (n_mult [1, 2, 4] -> 4 levels; 4 UNet blocks).
REF_AE = (
    "ae_kl_4.yaml",
    [
        "model.chans=4",
        "model.latent_channels=4",
        "model.norm_num_groups=4",
        "model.layers_per_block=1",
        "loss.lpips_weight=0",
        "data.num_workers=0",
        "data.max_val_slices=1",
    ],
)
REF_LDM = (
    "ldm_ref.yaml",
    [
        "ldm.block_out_channels=[8, 8, 16, 16]",
        "ldm.norm_num_groups=4",
        "ldm.layers_per_block=1",
    ],
)
DEMO_AE = ("demo_ae.yaml", ["model.block_out_channels=[4, 8, 8]", "model.latent_channels=4",
                            "model.norm_num_groups=4", "data.flip=false"])  # fmt: skip
DEMO_LDM = ("demo_ldm.yaml", ["ldm.block_out_channels=[8, 8, 16]", "ldm.norm_num_groups=4"])
STEPS = ["train.max_steps=2", "train.val_every=2", "train.ckpt_every=2", "train.progress=false",
         "train.num_threads=0", "data.batch_size=1", "optim.warmup_steps=0"]  # fmt: skip

LEGS = {
    # name: (coils, H, W, recon size, (ae config, overrides), (ldm config, overrides), cpp, latent)
    "demo_96x88": (1, 96, 88, 48, DEMO_AE, DEMO_LDM, True, [4, 24, 22]),
    "ref_640x368": (1, 640, 368, 320, REF_AE, REF_LDM, False, [4, 80, 46]),
    "ref_640x372": (1, 640, 372, 320, REF_AE, REF_LDM, True, [4, 80, 47]),
    "ref_mc15_640x368": (15, 640, 368, 320, REF_AE, REF_LDM, False, [4, 80, 46]),
}


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


class _Timed:
    """``run`` that records the seconds of each stage (printed at the end of a leg: ``-s``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, *args, **kw):
        t0 = time.perf_counter()
        res = run(*args, **kw)
        key = " ".join(str(a) for a in args[:3] if not str(a).startswith("/"))
        self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
        return res

    def report(self, leg: str) -> None:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items())
        print(f"\n[{leg}] {sum(self.seconds.values()):.1f} s: {parts}")


@pytest.mark.parametrize("leg", list(LEGS))
def test_every_stage_at_a_true_geometry(leg, tmp_path):
    coils, h, w, rsize, (ae_cfg, ae_set), (ldm_cfg, ldm_set), cpp, latent = LEGS[leg]
    challenge = "singlecoil" if coils == 1 else "multicoil"
    run = _Timed()
    data = tmp_path / "data"
    run("data", "synth", data, "--train", 1, "--val", 1, "--test", 1, "--coils", coils,
        "--shape", f"{h}x{w}", "--recon-size", rsize, "--slices", 1, "--seed", 5)  # fmt: skip
    ae = tmp_path / "ae"
    run("train", "--stage", "ae", "--config", CONFIGS / ae_cfg, "--out", ae,
        *_sets([*ae_set, *STEPS, f"data.challenge={challenge}", "train.val_at_start=false",
                f"data.train={data / f'{challenge}_train'}",
                f"data.val={data / f'{challenge}_val'}"]))  # fmt: skip
    lat = tmp_path / "latents"
    for part in ("train", "val"):
        run("extract-latents", "--ckpt", ae / "best", "--data", data / f"{challenge}_{part}",
            "--out", lat, "--partition", part, "--batch-size", 1)  # fmt: skip
    stats = json.loads((lat / "stats.json").read_text())
    assert stats["latent"]["shape"] == latent
    assert stats["kspace_size"] == [h, w]

    # the stage that raised on latents that are not a multiple of the UNet's factor;
    # validation at step 0 and 2 runs the same padded loss
    ldm = tmp_path / "ldm"
    res = run("train", "--stage", "ldm", "--config", CONFIGS / ldm_cfg, "--out", ldm,
              *_sets([*ldm_set, *STEPS, f"data.train={lat / 'train'}",
                      f"data.val={lat / 'val'}"]))  # fmt: skip
    assert "ema_loss" in res.output or (ldm / "best" / "ldm.json").is_file()
    meta = json.loads((ldm / "best" / "ldm.json").read_text())
    assert meta["latent_shape"] == latent and meta["kspace_size"] == [h, w]

    test_dir = data / f"{challenge}_test"
    f = next(test_dir.glob("*.h5"))
    py = tmp_path / "py"
    run("recon", test_dir, "--out", py, "--sampler", "cgs", "--model", ldm, "--steps", 2,
        "--t0", 50, "--accel", 4, "--center-fraction", 0.08, "--batch-size", 1)  # fmt: skip
    rec = read_reconstruction(py / f.name)
    assert rec.shape == (1, rsize, rsize) and np.isfinite(rec).all()
    js = tmp_path / "m.json"
    run("evaluate", "--pred", py, "--target", test_dir, "--json", js)
    m = json.loads(js.read_text())
    assert m["challenge"] == challenge and np.isfinite(m["summary"]["psnr"]["mean"])

    if not cpp:
        run.report(leg)
        return
    # the exported denoiser pads and unpads inside its package: the C++ sampler gets latents of
    # the first stage's odd size and must give the Python backend's reconstruction
    exp = tmp_path / "export"
    res = run("export", ldm, "--out", exp, "--no-guidance")  # default size: the training size
    lat_text = "x".join(map(str, latent))
    assert f"{coils}x{h}x{w} k-space, latent {lat_text}" in res.output
    cpp_out = tmp_path / "cpp"
    run("recon", test_dir, "--out", cpp_out, "--model", exp, "--backend", "cpp", "--steps", 2,
        "--t0", 50, "--accel", 4, "--center-fraction", 0.08, "--batch-size", 1)  # fmt: skip
    got = read_reconstruction(cpp_out / f.name)
    # measured worst case 1e-6 order (float32 AOTInductor vs eager); the parity tests use 1e-4
    assert np.linalg.norm(got - rec) / np.linalg.norm(rec) < 1e-4
    run("evaluate", "--pred", cpp_out, "--target", test_dir, "--json", tmp_path / "c.json")
    run.report(leg)


def test_unet_pads_odd_latents_and_the_loss_sees_the_valid_region_only():
    """The one padding rule: output shape = input shape for every latent size, and the training
    loss does not depend on anything the UNet writes into the padded border."""
    from kspace_ldm.config import load_config
    from kspace_ldm.models.ldm import build_noise_scheduler, build_unet, unet_multiple
    from kspace_ldm.training.ldm_stage import diffusion_loss

    cfg = load_config(CONFIGS / "ldm_ref.yaml", REF_LDM[1])
    torch.manual_seed(0)
    unet = build_unet(cfg.ldm, 4).eval()
    m = unet_multiple(cfg.ldm.block_out_channels)
    assert m == 8
    sched = build_noise_scheduler(cfg.ldm)
    z0 = torch.randn(2, 4, 10, 11)
    t = torch.tensor([10, 900])
    noise = torch.randn_like(z0)
    with torch.no_grad():
        loss = diffusion_loss(unet, sched, z0, t, noise, m)
        # the same UNet whose output is changed outside the valid window: identical loss
        calls = {}

        class Border(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, zp, tt):
                out = self.inner(zp, tt)
                calls["shape"] = tuple(zp.shape)
                s = out.sample.clone()
                s[..., 0, :] = 1e6  # row 0 is padding for h = 10 -> 16 (3 rows on top)
                s[..., -1] = 1e6  # last column is padding for w = 11 -> 16 (2 on the right)
                out.sample = s
                return out

        loss_border = diffusion_loss(Border(unet), sched, z0, t, noise, m)
    assert calls["shape"] == (2, 4, 16, 16)
    assert torch.equal(loss, loss_border)
    assert torch.isfinite(loss)


def test_a_config_that_cannot_serve_a_size_is_one_line(tmp_path):
    """A UNet whose channels the latents do not fit: one line naming the config and the size at
    the start of `train --stage ldm`, exit 2, no traceback."""
    from safetensors.torch import save_file

    lat = tmp_path / "lat"
    for part in ("train", "val"):
        (lat / part).mkdir(parents=True)
        z = torch.randn(2, 4, 80, 46)
        save_file(
            {"full": z, "masked": z.clone(), "acs_rms": torch.ones(2)},
            str(lat / part / "v.safetensors"),
        )
    stats = {"first_stage": str(tmp_path), "latent": {"global_std": 1.0, "shape": [4, 80, 46]},
             "norm_ratio": None}  # fmt: skip
    (lat / "stats.json").write_text(json.dumps(stats))
    # attention_head_dim 32 exceeds the 8 and 16 channels of the attention levels (0 heads): the
    # UNet is built but cannot run (diffusers: ZeroDivisionError at the first forward); the
    # check names the config and the latent size before any step
    bad = run("train", "--stage", "ldm", "--config", CONFIGS / "ldm_ref.yaml", "--out",
              tmp_path / "ldm", *_sets([*REF_LDM[1], *STEPS, "ldm.attention_head_dim=32",
                                        f"data.train={lat / 'train'}",
                                        f"data.val={lat / 'val'}"]), ok=False)  # fmt: skip
    assert bad.exit_code == 2, bad.output
    assert "Traceback" not in bad.output and len(bad.output.strip().splitlines()) == 1
    assert "config ldm_ref" in bad.output and "4x80x46" in bad.output


def test_sampler_refuses_a_model_that_cannot_serve_the_kspace_in_one_line():
    """At recon (and export) time: a UNet that takes other latent channels than the first stage
    makes, or a config whose UNet cannot run on the latent of this k-space size."""
    from dataclasses import replace

    from tiny_models import tiny_sampler

    from kspace_ldm.config import TrainConfig
    from kspace_ldm.errors import InputError
    from kspace_ldm.models.ldm import build_unet
    from kspace_ldm.sampling.cgs import KspaceLDMSampler

    good = tiny_sampler()
    y = torch.zeros(1, 1, 24, 22, dtype=torch.complex64)
    good.check_size((24, 22))  # f = 2 -> 12 x 11 latents, padded to 12 x 12: served
    cfg = TrainConfig(stage="ldm", name="tiny_test")
    cfg.ldm = replace(
        cfg.ldm,
        block_out_channels=[8, 16],
        norm_num_groups=4,
        down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"],
        layers_per_block=1,
    )
    wrong_channels = replace(good.ldm, unet=build_unet(cfg.ldm, 8).eval(), config=cfg)
    s = KspaceLDMSampler(wrong_channels, good.ae, good.norm)
    with pytest.raises(InputError, match=r"config tiny_test: the UNet takes 8 latent channels"):
        s.cgs(y, torch.ones(22, dtype=torch.bool))
    cfg.ldm = replace(cfg.ldm, attention_head_dim=32)
    broken = replace(good.ldm, config=cfg)
    s = KspaceLDMSampler(broken, good.ae, good.norm)
    with pytest.raises(InputError, match=r"config tiny_test: .*4x12x11 latents.*24x22 k-space"):
        s.cgs(y, torch.ones(22, dtype=torch.bool))
