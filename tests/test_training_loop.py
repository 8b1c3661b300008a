"""The one training loop (``kspace_ldm/training/loop.py``): every stage runs through
``run_training``, with the same progress bar, resume, fault injection and checkpoint hints."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import run
from safetensors.torch import load_file, save_file

from kspace_ldm.config import load_config
from kspace_ldm.training import loop, trainer
from kspace_ldm.training.first_stage import FirstStage
from kspace_ldm.training.ldm_stage import LDMStage

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
KLDM = [sys.executable, "-m", "kspace_ldm.cli"]
STEP2, STEP8 = "step_00000002", "step_00000008"


@pytest.fixture(scope="module")
def latents(tmp_path_factory) -> Path:
    """A tiny extraction (train 3 x 2 latents, val 1 x 2; 4 x 8 x 8) written directly: the LDM
    stage reads only the shards and ``stats.json``, so no first stage has to be trained."""
    from kspace_ldm.latents import latent_statistics

    out = tmp_path_factory.mktemp("latents")
    g = torch.Generator().manual_seed(3)
    for part, n in (("train", 3), ("val", 1)):
        (out / part).mkdir()
        for i in range(n):
            tensors = {"full": 2.0 * torch.randn(2, 4, 8, 8, generator=g), "acs_rms": torch.ones(2)}
            save_file(tensors, str(out / part / f"v{i}.safetensors"), {"first_stage": "/x/best"})
    latent_statistics(out)
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_loop")
    run("data", "synth", out, "--train", 1, "--val", 1, "--shape", "32x24", "--recon-size", 16,
        "--slices", 2, "--seed", 5)  # fmt: skip
    return out


def _ldm_args(latents: Path, steps: int = 4, **sets) -> list[str]:
    pairs = {"data.train": latents / "train", "data.val": latents / "val",
             "train.max_steps": steps, "train.val_every": 2, "train.ckpt_every": 2,
             "train.log_every": 1, **sets}  # fmt: skip
    return ["train", "--stage", "ldm", "--config", str(CONFIGS / "tiny_ldm.yaml"),
            *[a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]]  # fmt: skip


def _ae_args(synth: Path, steps: int = 2) -> list[str]:
    pairs = {"data.train": synth / "singlecoil_train", "data.val": synth / "singlecoil_val",
             "train.max_steps": steps, "train.val_every": steps, "train.ckpt_every": steps,
             "train.log_every": 1, "train.progress": "true"}  # fmt: skip
    return ["train", "--stage", "ae", "--config", str(CONFIGS / "tiny_ae_kl.yaml"),
            *[a for k, v in pairs.items() for a in ("--set", f"{k}={v}")]]  # fmt: skip


# The final state of the loop's tqdm bar: "<desc>: 100%|...| N/N [..., loss=..., sps=...]".
BAR = (
    r"(?P<desc>train(?: ldm)?): 100%\|[^|]*\| (?P<n>\d+)/(?P=n) "
    r"\[[^\]]*loss=[-+0-9.e]+, sps=[0-9.]+\]"
)


def test_every_stage_shows_the_same_progress_bar(latents, synth, tmp_path):
    ldm = run(*_ldm_args(latents, 4, **{"train.progress": "true"}), "--out", tmp_path / "ldm")
    ae = run(*_ae_args(synth), "--out", tmp_path / "ae")
    bars = {}
    for name, res in (("ldm", ldm), ("ae", ae)):
        found = [m for m in re.finditer(BAR, res.stderr)]
        assert found, f"no progress bar on the {name} stage's stderr: {res.stderr!r}"
        bars[name] = found[-1]
    assert bars["ldm"]["desc"] == "train ldm" and bars["ldm"]["n"] == "4"
    assert bars["ae"]["desc"] == "train" and bars["ae"]["n"] == "2"
    # the validation lines (tqdm.write, on stdout)
    assert "[val] step 4: loss " in ldm.stdout and "ema_loss" in ldm.stdout
    assert "[val] step 2: PSNR " in ae.stdout
    # train.progress=false: no bar
    quiet = run(*_ldm_args(latents, 2), "--out", tmp_path / "quiet")
    assert not re.search(BAR, quiet.stderr)


def test_every_stage_is_driven_by_run_training(latents, synth, tmp_path, monkeypatch):
    """``kldm train`` hands each stage's ``Stage`` to the one ``run_training``, which builds it
    and drives its step, validation and state."""
    driven: list[tuple[type, str]] = []
    real = loop.run_training

    def spy(stage_cls, cfg, **kw):
        calls = []
        orig = stage_cls.after_optimizer_step

        def counted(self, step, logs):
            calls.append(step)
            return orig(self, step, logs)

        monkeypatch.setattr(stage_cls, "after_optimizer_step", counted)
        result = real(stage_cls, cfg, **kw)
        driven.append((stage_cls, cfg.stage, tuple(calls)))
        return result

    monkeypatch.setattr(trainer, "run_training", spy)
    run(*_ldm_args(latents, 2), "--out", tmp_path / "ldm")
    run(*_ae_args(synth), "--out", tmp_path / "ae")
    assert driven == [(LDMStage, "ldm", (0, 1)), (FirstStage, "ae", (0, 1))]
    # the loop's own checkpoint state beside each stage's extra state
    for name, best_key, extra in (
        ("ldm", "best_val_loss", "ema_updates"),
        ("ae", "best_ssim", None),
    ):
        state = json.loads((tmp_path / name / "checkpoints" / STEP2 / "state.json").read_text())
        assert {best_key, "best_step", "world_size", "last_val", "config"} <= set(state)
        assert extra is None or extra in state


def _env(**extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def test_ldm_kill_resume_and_intact_checkpoint_hint(latents, tmp_path):
    """The loop's fault injection, exact resume and corrupt-checkpoint hint, on the LDM stage."""
    args = _ldm_args(latents, 6, **{"train.ckpt_every": 2, "train.val_every": 3})
    full = tmp_path / "full"
    res = subprocess.run([*KLDM, *args, "--out", str(full)], capture_output=True, text=True,
                         env=_env(), timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr
    killed = tmp_path / "killed"
    res = subprocess.run([*KLDM, *args, "--out", str(killed)], capture_output=True, text=True,
                         env=_env(KLDM_FAULT_KILL_AT_STEP="3"), timeout=600)  # fmt: skip
    assert res.returncode == -signal.SIGKILL
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] == 2
    res = run("train", "--resume", killed)
    assert "resuming from step 2" in res.output
    for name in ("model", "ema"):
        a = load_file(str(full / "checkpoints" / "step_00000006" / f"{name}.safetensors"))
        b = load_file(str(killed / "checkpoints" / "step_00000006" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    sa = json.loads((full / "checkpoints" / "step_00000006" / "state.json").read_text())
    sb = json.loads((killed / "checkpoints" / "step_00000006" / "state.json").read_text())
    assert sa["ema_updates"] == sb["ema_updates"] == 6
    assert sb["last_val"]["ema_loss"] == pytest.approx(sa["last_val"]["ema_loss"], rel=1e-5)

    # a corrupt latest checkpoint names the intact earlier one; --resume-from continues from it
    (killed / "checkpoints" / "step_00000006" / "model.safetensors").write_bytes(b"broken")
    res = run("train", "--resume", killed, "--set", "train.max_steps=8", ok=False)
    assert res.exit_code == 2 and "--resume-from 4" in res.output, res.output
    res = run("train", "--resume", killed, "--resume-from", 4, "--set", "train.max_steps=8")
    assert "resuming from step 4" in res.output
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] == 8


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, key):  # StepBatchSampler keys run past len
        return self.x[key % len(self.x)], self.y[key % len(self.x)]


class _ToyStage(loop.Stage):
    """A third stage, not one of kldm's: least squares on fixed random data, with dropout (the
    global RNG) and an extra state counter, to show the loop alone gives it resume."""

    best_key = "best_val_loss"
    higher_is_better = False

    def build_data(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(16, 3, generator=g)
        self.data = _Pairs(x, x @ torch.tensor([1.0, -2.0, 0.5]))
        return self.data, _Pairs(self.data.x[:4], self.data.y[:4])

    def build_model(self):
        self.model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(3, 1))
        self.updates = 0
        return self.model

    def loader_options(self):
        return {"collate_fn": lambda items: tuple(torch.stack(t) for t in zip(*items, strict=True))}

    def batch_samples(self, batch):
        return batch[0].shape[0]

    def loss(self, forward, batch, step, seed):
        torch.manual_seed(seed)
        x, y = batch
        loss = torch.nn.functional.mse_loss(forward(x)[:, 0], y)
        return loss, {"loss": loss.detach()}

    def after_optimizer_step(self, step, logs):
        self.updates += 1

    def validate(self, val_ds, step):
        x, y = val_ds.x, val_ds.y
        self.model.eval()
        with torch.no_grad():
            loss = float(torch.nn.functional.mse_loss(self.model(x)[:, 0], y))
        self.model.train()
        return {"loss": loss}, None

    def score(self, metrics):
        return metrics["loss"]

    def extra_state(self):
        return {"updates": self.updates}

    def load_extra(self, path, c):
        self.updates = c.state["updates"]


def test_any_stage_gets_resume_from_the_loop(tmp_path):
    sets = ["train.max_steps=8", "train.ckpt_every=4", "train.val_every=4", "train.log_every=2",
            "train.num_threads=1", "train.progress=false", "data.batch_size=4",
            "optim.scheduler=constant", "optim.warmup_steps=0"]  # fmt: skip
    cfg = load_config(CONFIGS / "tiny_ae_kl.yaml", sets)
    full = loop.run_training(_ToyStage, cfg, out=tmp_path / "full")
    half = loop.run_training(
        _ToyStage, load_config(CONFIGS / "tiny_ae_kl.yaml", [*sets, "train.max_steps=4"]),
        out=tmp_path / "part",
    )  # fmt: skip
    assert (full.step, half.step) == (8, 4)
    resumed = loop.run_training(_ToyStage, cfg, resume=tmp_path / "part")
    assert resumed.step == 8
    a = load_file(str(tmp_path / "full" / "checkpoints" / STEP8 / "model.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / STEP8 / "model.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    state = json.loads((tmp_path / "part" / "checkpoints" / STEP8 / "state.json").read_text())
    assert state["updates"] == 8 and state["best_step"] in (4, 8)
    assert resumed.last_val == full.last_val and resumed.best_ssim == float("-inf")
