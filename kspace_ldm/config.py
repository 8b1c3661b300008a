"""Typed experiment configs: dataclasses loaded from YAML, with ``--set a.b=v`` overrides.

A config file is a YAML mapping whose keys mirror :class:`TrainConfig`'s sections (``model``,
``normalization``, ``loss``, ``data``, ``optim``, ``train``). Loading is strict: an unknown key is
an :class:`~kspace_ldm.errors.InputError` naming the key and the file (a typo must not silently fall
back to a default), and every value is checked against its field's type.

``inherit: other.yaml`` (relative to the file) starts from another config and overrides it, so the
reference families share one base per kind.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .models.losses import LossConfig

__all__ = [
    "DataConfig",
    "LDMConfig",
    "ModelConfig",
    "NormConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "UNetStageConfig",
    "apply_overrides",
    "config_to_yaml",
    "load_config",
]


@dataclass
class ModelConfig:
    """The network (``model:``). ``family``: ae | sae | ae_kl | sae_kl | unet.

    Diffusers families use ``block_out_channels`` (or ``chans`` + ``n_mult`` as the reference's
    ``create_channels``; an explicit ``block_out_channels`` wins), ``latent_channels``,
    ``layers_per_block``, ``norm_num_groups``, ``mid_block_attention``, and the KL families
    ``sample_posterior``. The U-Net uses ``chans``, ``num_pool_layers``, ``latent_channels``,
    ``drop_prob`` and ``with_residuals``. ``in_channels`` = ``2 * coils``; 0 takes it from the data.
    """

    family: str = "ae_kl"
    in_channels: int = 0
    chans: int = 128
    n_mult: list[int] = field(default_factory=lambda: [1, 2, 4])
    block_out_channels: list[int] | None = None
    latent_channels: int = 16
    layers_per_block: int = 2
    norm_num_groups: int = 32
    mid_block_attention: bool = True
    sample_posterior: bool = True
    num_pool_layers: int = 3
    drop_prob: float = 0.0
    with_residuals: bool = True


@dataclass
class NormConfig:
    """k-space normalisation (``normalization:``), see :mod:`kspace_ldm.models.kspace_norm`."""

    mode: str = "rms"
    acs_fraction: float = 0.04
    weighting: str = "none"
    weight_power: float = 1.0
    weight_r0: float = 0.02
    log_c: float = 1e-3


@dataclass
class DataConfig:
    """Training/validation data (``data:``): fastMRI-format folders, read lazily.

    ``crop``: random training crop ``[h, w]`` taken in the image domain (then transformed back to
    k-space), or ``null``. ``flip``: random horizontal/vertical image flips. ``coil_phase``: random
    per-coil phase and coil order (multi-coil; the RSS target is unchanged). ``max_*_slices`` cap
    the slice counts (0 = all; validation takes evenly spaced slices).
    """

    train: str = ""
    val: str = ""
    challenge: str | None = None
    batch_size: int = 1
    val_batch_size: int = 4
    num_workers: int = 2
    crop: list[int] | None = None
    flip: bool = False
    coil_phase: bool = False
    max_train_slices: int = 0
    max_val_slices: int = 0


@dataclass
class OptimConfig:
    """Optimiser and LR schedule (``optim:``). ``scheduler``: constant | cosine | step."""

    optimizer: str = "adam"
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 0.0
    scheduler: str = "constant"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    step_size: int = 1000
    gamma: float = 0.5


@dataclass
class RunConfig:
    """The training run (``train:``).

    ``val_at_start``: validate the untrained model first (a baseline row at step 0 in val.csv).
    ``precision``: auto (bf16 autocast on CUDA, fp32 on the CPU) | fp32 | bf16. ``num_threads``:
    torch intra-op threads per process (0 = torch's default). ``check_replicas``: under DDP, compare
    the parameters of all ranks at each validation and fail if they diverge.
    """

    max_steps: int = 1000
    log_every: int = 10
    val_every: int = 500
    val_at_start: bool = True
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    precision: str = "auto"
    device: str = "auto"
    num_threads: int = 0
    val_panels: int = 4
    progress: bool = True
    wandb: bool = False
    wandb_project: str = "kspace-ldm"
    check_replicas: bool = True


@dataclass
class LDMConfig:
    """The second stage (``ldm:``, used when ``stage: ldm``): a diffusers ``UNet2DModel`` denoising
    latents of a trained first stage.

    ``first_stage``: the autoencoder (``RUN_DIR/best`` or a checkpoint directory) whose latents
    ``data.train`` / ``data.val`` hold (``kldm extract-latents``). ``down_block_types`` /
    ``up_block_types``: diffusers block names, one per entry of ``block_out_channels``.
    Scheduler: ``num_train_timesteps``, ``beta_schedule`` (reference: ``squaredcos_cap_v2``) and
    ``prediction_type`` (``epsilon`` as the reference, or ``v_prediction``). ``ema_decay``: EMA of
    the weights (0 disables it; sampling uses the EMA weights when present), ``ema_warmup``:
    steps over which the decay ramps up as ``min(decay, (1 + n) / (10 + n))``.
    ``scale_factor``: latent scale; 0 = ``1 / std`` of the training latents, computed once from
    the extraction statistics and stored with the checkpoint.
    """

    first_stage: str = ""
    block_out_channels: list[int] = field(default_factory=lambda: [128, 256, 512, 512])
    down_block_types: list[str] = field(
        default_factory=lambda: [
            "DownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
            "AttnDownBlock2D",
        ]
    )
    up_block_types: list[str] = field(
        default_factory=lambda: ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"]
    )
    layers_per_block: int = 2
    attention_head_dim: int = 8
    norm_num_groups: int = 32
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    scale_factor: float = 0.0


@dataclass
class UNetStageConfig:
    """The supervised baseline (``unet:``, used when ``stage: unet``): fastMRI's U-Net recipe,
    :class:`~kspace_ldm.models.image_unet.ImageUNet` on zero-filled magnitude images.

    ``chans`` / ``num_pool_layers`` / ``drop_prob``: the network (fastMRI 32 / 4 / 0).
    ``clamp``: the standardised input and target are clamped to ``[-clamp, clamp]`` (fastMRI 6;
    0 = off). Masks: ``mask_type`` (a :func:`~kspace_ldm.data.masks.create_mask` name) with
    ``center_fractions`` / ``accelerations`` (one pair per draw, as fastMRI's mask functions); a
    new mask is drawn for every training sample of every step, seeded by ``(train.seed, step,
    rank, sample)``; validation uses one mask per volume seeded by its file name (fastMRI's
    validation protocol, the same masks ``kldm recon`` draws).
    """

    chans: int = 32
    num_pool_layers: int = 4
    drop_prob: float = 0.0
    clamp: float = 6.0
    mask_type: str = "random"
    center_fractions: list[float] = field(default_factory=lambda: [0.08])
    accelerations: list[float] = field(default_factory=lambda: [4.0])


@dataclass
class TrainConfig:
    """A whole experiment (one YAML file): ``stage: ae`` (first stage), ``ldm`` (second) or
    ``unet`` (the supervised U-Net baseline)."""

    stage: str = "ae"
    name: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    ldm: LDMConfig = field(default_factory=LDMConfig)
    unet: UNetStageConfig = field(default_factory=UNetStageConfig)
    normalization: NormConfig = field(default_factory=NormConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (int/float/bool/str/list/None unions)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, source)
            except InputError as err:
                errors.append(err)
        raise InputError(source, f"{where}: expected {tp}, got {value!r}".replace("typing.", ""))
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise InputError(source, f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(source, f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(source, f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(source, f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(source, f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {_type_name(tp)} at {where}")


def _merge(obj: Any, data: dict, prefix: str, source: str) -> None:
    """Set the fields of dataclass ``obj`` from ``data`` (recursively), rejecting unknown keys."""
    if not isinstance(data, dict):
        raise InputError(source, f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in names:
            known = ", ".join(sorted(names))
            raise InputError(source, f"unknown config key '{where}' (known here: {known})")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, f"{where}.", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], where, source))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[dict, str]]:
    """The mapping of ``path`` preceded by those it inherits from (base first)."""
    path = path.resolve()
    if path in seen:
        raise InputError(path, "circular 'inherit'")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "config file not found") from None
    except yaml.YAMLError as err:
        raise InputError(path, f"invalid YAML: {' '.join(str(err).split())}") from None
    if data is None:
        # An empty file would silently train the full-size default model for 1000 steps.
        raise InputError(path, "empty config (no keys); give at least the stage and the data")
    if not isinstance(data, dict):
        raise InputError(path, "a config must be a YAML mapping")
    chain: list[tuple[dict, str]] = []
    parent = data.pop("inherit", None)
    if parent is not None:
        if not isinstance(parent, str):
            raise InputError(path, f"inherit: expected a file name, got {parent!r}")
        chain = _read_yaml(path.parent / parent, (*seen, path))
    chain.append((data, str(path)))
    return chain


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Load a YAML config (following ``inherit``) and apply ``a.b=v`` overrides."""
    cfg = TrainConfig()
    for data, source in _read_yaml(Path(path)):
        _merge(cfg, data, "", source)
    apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def config_from_dict(data: dict, source: str = "config") -> TrainConfig:
    """Build a config from a mapping (e.g. the one stored in a checkpoint)."""
    cfg = TrainConfig()
    _merge(cfg, data, "", source)
    validate(cfg)
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: list[str] | tuple[str, ...]) -> TrainConfig:
    """Apply ``section.key=value`` strings (values parsed as YAML: ``1e-4``, ``[1, 2]``, null)."""
    for item in overrides:
        if "=" not in item:
            raise InputError("--set", f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        nested: Any = value
        for part in reversed(key.split(".")):
            nested = {part: nested}
        _merge(cfg, nested, "", "--set")
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Cross-field checks that a type check cannot do."""
    from .models.autoencoders import FAMILIES
    from .models.kspace_norm import NORM_MODES, WEIGHTINGS

    def bad(key: str, problem: str) -> InputError:
        return InputError("config", f"{key}: {problem}")

    if cfg.stage not in ("ae", "ldm", "unet"):
        raise bad("stage", f"must be ae, ldm or unet, got {cfg.stage!r}")
    if cfg.stage == "ldm":
        _validate_ldm(cfg.ldm, bad)
    if cfg.stage == "unet":
        _validate_unet(cfg.unet, bad)
    if cfg.model.family not in FAMILIES:
        raise bad("model.family", f"must be one of {sorted(FAMILIES)}, got {cfg.model.family!r}")
    if cfg.normalization.mode not in NORM_MODES:
        raise bad("normalization.mode", f"must be one of {NORM_MODES}")
    if cfg.normalization.weighting not in WEIGHTINGS:
        raise bad("normalization.weighting", f"must be one of {WEIGHTINGS}")
    if cfg.optim.scheduler not in ("constant", "cosine", "step"):
        raise bad(
            "optim.scheduler", f"must be constant, cosine or step, got {cfg.optim.scheduler!r}"
        )
    if cfg.optim.optimizer not in ("adam", "adamw", "rmsprop"):
        raise bad("optim.optimizer", f"must be adam, adamw or rmsprop, got {cfg.optim.optimizer!r}")
    if len(cfg.optim.betas) != 2:
        raise bad("optim.betas", f"must have two values, got {cfg.optim.betas}")
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise bad("train.precision", "must be auto, fp32 or bf16")
    if cfg.train.device not in ("auto", "cpu", "cuda"):
        raise bad("train.device", "must be auto, cpu or cuda")
    if cfg.data.challenge not in (None, "singlecoil", "multicoil"):
        raise bad("data.challenge", "must be singlecoil, multicoil or null")
    if cfg.data.crop is not None and (len(cfg.data.crop) != 2 or min(cfg.data.crop) < 8):
        raise bad("data.crop", f"must be [h, w] with h, w >= 8, got {cfg.data.crop}")
    for key in ("max_steps", "log_every", "val_every", "ckpt_every", "keep_checkpoints"):
        if getattr(cfg.train, key) < 1:
            raise bad(f"train.{key}", "must be >= 1")
    if cfg.data.batch_size < 1 or cfg.data.val_batch_size < 1:
        raise bad("data.batch_size", "must be >= 1")
    if cfg.optim.lr <= 0:
        raise bad("optim.lr", "must be > 0")


def _validate_ldm(c: LDMConfig, bad) -> None:
    n = len(c.block_out_channels)
    if n < 1 or len(c.down_block_types) != n or len(c.up_block_types) != n:
        raise bad(
            "ldm.block_out_channels",
            "down_block_types and up_block_types need one entry per level "
            f"({n} levels, {len(c.down_block_types)} down, {len(c.up_block_types)} up)",
        )
    if any(ch % c.norm_num_groups for ch in c.block_out_channels):
        raise bad("ldm.norm_num_groups", f"must divide every channel count {c.block_out_channels}")
    if c.prediction_type not in ("epsilon", "v_prediction"):
        raise bad(
            "ldm.prediction_type", f"must be epsilon or v_prediction, got {c.prediction_type!r}"
        )
    if c.beta_schedule not in ("squaredcos_cap_v2", "linear", "scaled_linear"):
        raise bad("ldm.beta_schedule", f"unsupported {c.beta_schedule!r}")
    if c.num_train_timesteps < 2:
        raise bad("ldm.num_train_timesteps", "must be >= 2")
    if not 0.0 <= c.ema_decay < 1.0:
        raise bad("ldm.ema_decay", f"must be in [0, 1), got {c.ema_decay}")
    if c.scale_factor < 0:
        raise bad("ldm.scale_factor", "must be >= 0 (0: computed from the training latents)")


def _validate_unet(c: UNetStageConfig, bad) -> None:
    from .data.masks import create_mask

    if c.chans < 1:
        raise bad("unet.chans", f"must be >= 1, got {c.chans}")
    if c.num_pool_layers < 0:
        raise bad("unet.num_pool_layers", f"must be >= 0, got {c.num_pool_layers}")
    if not 0.0 <= c.drop_prob < 1.0:
        raise bad("unet.drop_prob", f"must be in [0, 1), got {c.drop_prob}")
    if c.clamp < 0:
        raise bad("unet.clamp", f"must be >= 0 (0: no clamp), got {c.clamp}")
    try:  # the mask function checks its own parameters (pairs, ranges, integer steps)
        create_mask(c.mask_type, c.center_fractions, c.accelerations)
    except InputError as err:
        raise bad("unet.mask_type", err.problem) from None


def config_to_dict(cfg: TrainConfig) -> dict:
    """Plain nested mapping of ``cfg`` (what :func:`config_to_yaml` writes)."""
    return asdict(cfg)


def config_to_yaml(cfg: TrainConfig) -> str:
    """YAML text that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
