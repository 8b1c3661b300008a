"""``kldm train --stage ae`` end to end: configs, every family, learning, DDP, kill-and-resume."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run
from safetensors.torch import load_file

from kspace_ldm.config import load_config
from kspace_ldm.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TINY = CONFIGS / "tiny_ae_kl.yaml"
KLDM = [sys.executable, "-m", "kspace_ldm.cli"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_train")
    run(
        "data",
        "synth",
        out,
        "--train",
        2,
        "--val",
        1,
        "--shape",
        "64x48",
        "--recon-size",
        32,
        "--slices",
        4,
        "--seed",
        7,
    )
    return out


def data_sets(synth: Path) -> list[str]:
    return [
        "--set",
        f"data.train={synth / 'singlecoil_train'}",
        "--set",
        f"data.val={synth / 'singlecoil_val'}",
    ]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


def test_unknown_config_key_names_key_and_file(tmp_path, synth):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"inherit: {TINY}\nmodel:\n  famly: ae\n")
    with pytest.raises(InputError, match=r"bad\.yaml: unknown config key 'model\.famly'"):
        load_config(bad)
    res = run("train", "--config", bad, "--out", tmp_path / "r", ok=False)
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "model.famly" in lines[0] and "bad.yaml" in lines[0]


def test_bad_override_and_type_errors(tmp_path):
    res = run("train", "--config", TINY, "--out", tmp_path / "r", "--set", "optim.lrr=1", ok=False)
    assert res.exit_code == 2 and "unknown config key 'optim.lrr'" in res.output
    res = run(
        "train", "--config", TINY, "--out", tmp_path / "r", "--set", "optim.lr=fast", ok=False
    )
    assert res.exit_code == 2 and "optim.lr: expected a number" in res.output
    res = run(
        "train", "--config", TINY, "--out", tmp_path / "r", "--set", "model.family=gan", ok=False
    )
    assert res.exit_code == 2 and "model.family" in res.output


def test_reference_configs_have_reference_hyperparameters():
    ae4 = load_config(CONFIGS / "ae_4.yaml")
    assert ae4.model.family == "ae" and ae4.model.n_mult == [1, 2, 4]
    assert ae4.optim.lr == 1e-4 and ae4.loss.kspace == "l1" and ae4.model.latent_channels == 16
    svae = load_config(CONFIGS / "sae_kl_4.yaml")
    assert (svae.loss.lpips_weight, svae.loss.ssim_weight, svae.loss.kl_weight) == (0.3, 0.7, 1e-6)
    assert (svae.loss.disc_weight, svae.loss.disc_start) == (0.5, 5000)
    assert svae.optim.lr == 1e-5 and svae.optim.betas == [0.5, 0.9]
    assert load_config(CONFIGS / "ae_kl_3.yaml").loss.lpips_weight == 1.0
    assert load_config(CONFIGS / "ae_5.yaml").model.n_mult == [1, 2, 2, 4]
    wono = load_config(CONFIGS / "unet_wono.yaml")
    assert not wono.model.with_residuals and wono.normalization.mode == "none"
    assert load_config(CONFIGS / "unet_wn.yaml").model.with_residuals


def test_bad_data_is_one_line_exit_2(tmp_path, synth):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "file1.h5").write_bytes(b"not an hdf5 file")
    res = run(
        "train",
        "--config",
        TINY,
        "--out",
        tmp_path / "r",
        "--set",
        f"data.train={broken}",
        ok=False,
    )
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "file1.h5" in lines[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run(
        "train",
        "--config",
        TINY,
        "--out",
        tmp_path / "r2",
        "--set",
        f"data.train={empty}",
        ok=False,
    )
    assert res.exit_code == 2 and "empty" in res.output


# ---------------------------------------------------------------------------------------------
# Every family from the CLI
# ---------------------------------------------------------------------------------------------

# Shrink the reference networks to test size; everything else (family, loss terms, optimiser,
# normalisation) is the config's own. LPIPS needs weights that are not on this machine.
SHRINK = {
    "ae": ["model.chans=8", "model.norm_num_groups=4", "model.layers_per_block=1"],
    "unet": ["model.chans=4"],
}
FAMILY_CONFIGS = sorted(
    p.name for p in CONFIGS.glob("*.yaml") if p.name.split("_")[0] in ("ae", "sae", "unet")
)


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_each_family_trains_from_cli(name, synth, tmp_path):
    cfg = load_config(CONFIGS / name)
    shrink = SHRINK["unet" if cfg.model.family == "unet" else "ae"]
    sets = [
        *shrink,
        "loss.lpips_weight=0",
        "loss.disc_start=2",
        "loss.disc_channels=8",
        "loss.disc_layers=2",
        "train.max_steps=3",
        "train.val_every=3",
        "train.ckpt_every=3",
        "train.log_every=1",
        "train.progress=false",
        "data.num_workers=0",
        "data.max_val_slices=2",
        "train.num_threads=1",
    ]
    args = [
        "train",
        "--stage",
        "ae",
        "--config",
        CONFIGS / name,
        "--out",
        tmp_path / "run",
        *data_sets(synth),
    ]
    for s in sets:
        args += ["--set", s]
    res = run(*args)
    assert "step 3: val PSNR" in res.output
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000003"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    rows = read_csv(tmp_path / "run" / "logs" / "train.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    if cfg.loss.disc_weight > 0:
        assert float(rows[-1]["d_loss"]) > 0 and "g_loss" in rows[-1]
    if (cfg.loss.ssim_weight or 0) > 0:
        assert "ssim_loss" in rows[-1]
    assert list((tmp_path / "run" / "logs").glob("events.out.tfevents.*"))
    assert list((tmp_path / "run" / "panels").glob("*.png"))


def test_lpips_config_without_weights_fails_clearly(synth, tmp_path):
    from kspace_ldm.metrics import lpips_status

    if lpips_status("vgg")[0]:
        pytest.skip("LPIPS is available here")
    res = run(
        "train",
        "--config",
        CONFIGS / "sae_kl_4.yaml",
        "--out",
        tmp_path / "r",
        *data_sets(synth),
        "--set",
        "model.chans=8",
        "--set",
        "model.norm_num_groups=4",
        ok=False,
    )
    assert res.exit_code == 2 and "LPIPS" in res.output and "lpips_weight" in res.output


# ---------------------------------------------------------------------------------------------
# It learns
# ---------------------------------------------------------------------------------------------


def test_tiny_model_learns(synth, tmp_path):
    """A few hundred CPU steps: the reconstruction loss falls and the validation PSNR of images
    formed from the decoded k-space ends far above the first evaluation."""
    run(
        "train",
        "--config",
        TINY,
        "--out",
        tmp_path / "run",
        *data_sets(synth),
        "--set",
        "train.max_steps=240",
        "--set",
        "train.val_every=40",
        "--set",
        "train.ckpt_every=240",
        "--set",
        "train.log_every=20",
    )
    val = read_csv(tmp_path / "run" / "logs" / "val.csv")
    psnrs = [float(r["psnr"]) for r in val]
    train_rows = read_csv(tmp_path / "run" / "logs" / "train.csv")
    first_loss, last_loss = float(train_rows[0]["kspace"]), float(train_rows[-1]["kspace"])
    assert last_loss < 0.3 * first_loss, (first_loss, last_loss)
    assert int(val[0]["step"]) == 0  # the untrained model is the first evaluation
    assert psnrs[-1] > psnrs[0] + 6.0, psnrs
    assert max(psnrs) > 15.0, psnrs
    best = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())
    trained = [r for r in val if int(r["step"]) > 0]  # step 0 is the untrained baseline
    best_row = max(trained, key=lambda r: float(r["ssim"]))
    assert best["step"] == int(best_row["step"])
    assert best["ssim"] == pytest.approx(float(best_row["ssim"]), rel=1e-6)
    # held-out evaluation through the fastMRI protocol agrees with the validation metrics
    res = run(
        "eval-ae", tmp_path / "run" / "best", synth / "singlecoil_val", "--out", tmp_path / "eval"
    )
    assert "PSNR" in res.output


# ---------------------------------------------------------------------------------------------
# Distributed and resume (subprocesses: torchrun, SIGKILL)
# ---------------------------------------------------------------------------------------------


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def test_torchrun_two_processes_keep_replicas_identical(synth, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "kspace_ldm.cli",
        "train",
        "--config",
        str(TINY),
        "--out",
        str(run_dir),
        *data_sets(synth),
        "--set",
        "train.max_steps=6",
        "--set",
        "train.val_every=3",
        "--set",
        "train.ckpt_every=3",
        "--set",
        "data.batch_size=1",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((run_dir / "replicas.json").read_text())
    assert rep["world_size"] == 2 and rep["step"] == 6
    assert rep["max_abs_diff"] == 0.0
    state = json.loads((run_dir / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert state["world_size"] == 2
    # each step consumed one sample per rank: 2 samples per step
    rows = read_csv(run_dir / "logs" / "train.csv")
    assert len(rows) == 2  # log_every 5 -> steps 5 and 6
    # the ranks saw different data: DDP averaged different gradients, so the run differs from a
    # single process with batch 1
    single = tmp_path / "single"
    cmd1 = [
        *KLDM,
        "train",
        "--config",
        str(TINY),
        "--out",
        str(single),
        *data_sets(synth),
        "--set",
        "train.max_steps=6",
        "--set",
        "data.batch_size=1",
    ]
    assert subprocess.run(cmd1, capture_output=True, env=_env(), timeout=300).returncode == 0
    a = load_file(str(run_dir / "checkpoints" / "step_00000006" / "model.safetensors"))
    b = load_file(str(single / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_killed_run_resumes_like_uninterrupted(synth, tmp_path):
    common = [
        *data_sets(synth),
        "--set",
        "train.max_steps=12",
        "--set",
        "train.ckpt_every=4",
        "--set",
        "train.val_every=6",
        "--set",
        "train.log_every=2",
        "--set",
        "data.flip=true",
        "--set",
        "data.num_workers=1",
    ]
    full = tmp_path / "full"
    res = subprocess.run(
        [*KLDM, "train", "--config", str(TINY), "--out", str(full), *common],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr

    killed = tmp_path / "killed"
    res = subprocess.run(
        [*KLDM, "train", "--config", str(TINY), "--out", str(killed), *common],
        capture_output=True,
        text=True,
        env=_env(KLDM_FAULT_KILL_AT_STEP="7"),
        timeout=300,
    )
    assert res.returncode == -signal.SIGKILL
    latest = json.loads((killed / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 4  # steps 5-7 were lost, at most ckpt_every
    # a fresh start into the same folder is refused; --resume continues it
    res = run("train", "--config", TINY, "--out", killed, ok=False)
    assert res.exit_code == 2 and "--resume" in res.output
    res = subprocess.run(
        [*KLDM, "train", "--resume", str(killed)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr

    a = load_file(str(full / "checkpoints" / "step_00000012" / "model.safetensors"))
    b = load_file(str(killed / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    sa = json.loads((full / "checkpoints" / "step_00000012" / "state.json").read_text())
    sb = json.loads((killed / "checkpoints" / "step_00000012" / "state.json").read_text())
    assert sa["last_val"]["psnr"] == pytest.approx(sb["last_val"]["psnr"], abs=1e-4)
    # the logs read like one run: every step once
    steps = [int(r["step"]) for r in read_csv(killed / "logs" / "train.csv")]
    assert steps == [2, 4, 6, 8, 10, 12]
    lr_a = [r["lr"] for r in read_csv(full / "logs" / "train.csv")]
    lr_b = [r["lr"] for r in read_csv(killed / "logs" / "train.csv")]
    assert lr_a == lr_b
    shutil.rmtree(tmp_path, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Units: batch order and LR schedule
# ---------------------------------------------------------------------------------------------


def test_step_sampler_shards_and_resumes():
    from kspace_ldm.training.data import StepBatchSampler

    n, bs, steps = 23, 3, 12  # 3 steps per epoch with 2 ranks (18 of 23 used), 4 epochs
    ranks = [list(StepBatchSampler(n, bs, 5, 0, steps, rank=r, world_size=2)) for r in range(2)]
    for step in range(steps):
        a, b = ranks[0][step], ranks[1][step]
        assert len(a) == len(b) == bs
        assert not set(a) & set(b)  # the ranks see different samples
    for epoch in range(4):  # within an epoch no sample repeats across steps and ranks
        keys = [k for r in ranks for batch in r[epoch * 3 : epoch * 3 + 3] for k in batch]
        assert len(set(keys)) == len(keys) == 18
        assert all(k // n == epoch for k in keys)
    assert ranks[0][:3] != ranks[0][3:6]  # a new permutation each epoch
    resumed = list(StepBatchSampler(n, bs, 5, 7, steps, rank=1, world_size=2))
    assert resumed == ranks[1][7:]
    with pytest.raises(InputError, match="fewer than batch_size"):
        StepBatchSampler(5, 3, 0, 0, 1, rank=0, world_size=2)


def test_lr_schedules():
    from kspace_ldm.training.loop import LRSchedule

    cos = LRSchedule("cosine", 110, 10, 0.1, 1, 1.0)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.55)
    assert cos(110) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    step = LRSchedule("step", 100, 0, 0.0, 10, 0.5)
    assert [step(s) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    assert LRSchedule("constant", 100, 0, 0.0, 1, 1.0)(77) == 1.0


def test_dataset_crops_and_flips_in_image_domain(synth):
    from kspace_ldm.physics import kspace_to_image
    from kspace_ldm.training.data import FirstStageDataset

    root = str(synth / "singlecoil_train")
    plain = FirstStageDataset(root, train=False)
    aug = FirstStageDataset(root, crop=(40, 24), flip=True, seed=3)
    item = aug[5]
    assert item.kspace.shape == (1, 40, 24) and item.kspace.dtype == torch.complex64
    assert item.crop == (32, 24)  # recon size 32, clipped to the crop width
    torch.testing.assert_close(item.target, kspace_to_image(item.kspace[None], (32, 24), 1)[0])
    # deterministic per key, different across epochs (key = epoch * len + index)
    torch.testing.assert_close(aug[5].kspace, item.kspace)
    assert not torch.equal(aug[5 + len(aug)].kspace, item.kspace)
    # without augmentation: the file's own k-space and target
    p = plain[5]
    assert p.kspace.shape == (1, 64, 48) and p.target.shape == (32, 32)
    with pytest.raises(InputError, match="exceeds"):
        FirstStageDataset(root, crop=(80, 24))[0]


def test_coil_phase_augmentation_keeps_the_rss_target(tmp_path):
    """data.coil_phase: a random phase per coil and a shuffled coil order; the RSS image (and so
    the target) is unchanged, the coil k-space is not, and single-coil data is left alone."""
    from kspace_ldm.physics import kspace_to_image
    from kspace_ldm.training.data import FirstStageDataset

    run("data", "synth", tmp_path, "--coils", 3, "--train", 1, "--shape", "32x24",
        "--recon-size", 16, "--slices", 2, "--seed", 5)  # fmt: skip
    root = str(tmp_path / "multicoil_train")
    plain = FirstStageDataset(root, train=False)[1]
    aug = FirstStageDataset(root, coil_phase=True, seed=1)[1]
    assert aug.kspace.shape == plain.kspace.shape == (3, 32, 24)
    assert not torch.allclose(aug.kspace, plain.kspace)
    torch.testing.assert_close(
        kspace_to_image(aug.kspace[None], None, 1), kspace_to_image(plain.kspace[None], None, 1)
    )
    torch.testing.assert_close(aug.target, kspace_to_image(aug.kspace[None], (16, 16), 1)[0])
    # each augmented coil is some original coil times a unit phase
    mags = sorted(float(c.abs().sum()) for c in aug.kspace)
    assert mags == pytest.approx(sorted(float(c.abs().sum()) for c in plain.kspace), rel=1e-5)
    assert load_config(TINY, ["data.coil_phase=true"]).data.coil_phase is True


def test_wandb_is_opt_in_and_missing_package_is_clear(synth, tmp_path):
    import importlib.util

    assert load_config(TINY).train.wandb is False
    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    res = run(
        "train",
        "--config",
        TINY,
        "--out",
        tmp_path / "r",
        *data_sets(synth),
        "--set",
        "train.wandb=true",
        "--set",
        "train.max_steps=1",
        ok=False,
    )
    assert res.exit_code == 2 and "wandb" in res.output
