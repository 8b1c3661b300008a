"""``kldm train``'s entry points: the stage a config names, run through the one training loop.

Every stage (``ae``, ``unet``, ``ldm``) trains in :func:`kspace_ldm.training.loop.run_training`;
what differs per stage is a :class:`~kspace_ldm.training.loop.Stage`
(:class:`~kspace_ldm.training.first_stage.FirstStage`,
:class:`~kspace_ldm.training.unet_stage.UNetStage`,
:class:`~kspace_ldm.training.ldm_stage.LDMStage`).
"""

from __future__ import annotations

from pathlib import Path

from ..config import TrainConfig, config_from_dict, load_config
from ..errors import InputError
from .first_stage import FirstStage, evaluate_model
from .ldm_stage import LDMStage
from .loop import Stage, TrainResult, load_run_config, run_training
from .unet_stage import UNetStage

__all__ = [
    "STAGES",
    "TrainResult",
    "config_from_dict",
    "evaluate_model",
    "load_run_config",
    "run_from_cli",
    "train",
]

STAGES: dict[str, type[Stage]] = {"ae": FirstStage, "unet": UNetStage, "ldm": LDMStage}


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """Train the stage ``cfg.stage`` names (see :mod:`kspace_ldm.training.loop`). Call once per
    process. ``resume_step``: resume from the kept checkpoint of this step instead of the latest."""
    return run_training(STAGES[cfg.stage], cfg, out=out, resume=resume, resume_step=resume_step)


def run_from_cli(
    config: Path | None,
    out: Path | None,
    resume: Path | None,
    overrides: list[str],
    stage: str | None = None,
    resume_step: int | None = None,
) -> TrainResult:
    """``kldm train --stage ae|ldm|unet``: resolve the config (a resumed run reloads its own)
    and train the stage it names (``stage``, when given, must agree with the config's)."""
    if resume is not None:
        if config is not None:
            raise InputError(
                "--config",
                "not allowed with --resume (the run's config.yaml is used; "
                "change values with --set)",
            )
        if not (resume / "config.yaml").is_file():
            raise InputError(resume, "not a run directory (no config.yaml)")
        cfg = load_run_config(resume, overrides)
    else:
        if config is None:
            raise InputError("train", "give --config FILE (or --resume RUN_DIR)")
        cfg = load_config(config, overrides)
    if stage is not None and cfg.stage != stage:
        raise InputError(
            "--stage", f"{stage} given but the config is for stage {cfg.stage!r} (key 'stage')"
        )
    return train(cfg, out=out, resume=resume, resume_step=resume_step)
