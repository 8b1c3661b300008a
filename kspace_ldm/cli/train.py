"""``kldm train``, ``kldm extract-latents``, ``kldm eval-ae``: training and the first stage."""

from __future__ import annotations

from pathlib import Path

import click

from kspace_ldm.cli import params


@click.command("train")
@click.option(
    "--stage",
    type=click.Choice(["ae", "ldm", "unet"]),
    default=None,
    help="What to train (ae: the first-stage k-space autoencoder; ldm: the latent denoiser; "
    "unet: the supervised U-Net baseline). Default: the config's 'stage'.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="YAML config (configs/*.yaml). Not with --resume.",
)
@params.out_dir_option(
    required=False, default=None, help="Run directory for checkpoints, logs and panels."
)
@click.option(
    "--resume",
    "resume_dir",
    type=params.FOLDER,
    default=None,
    help="Continue the run in this directory from its latest checkpoint.",
)
@click.option(
    "--resume-from",
    "resume_step",
    type=click.IntRange(min=0),
    default=None,
    metavar="STEP",
    help="With --resume: continue from the kept checkpoint of this step instead of the latest "
    "(e.g. when the latest is corrupt).",
)
@params.overrides_option("Override a config value, e.g. --set optim.lr=1e-4 (repeatable).")
def train(stage, config_path, out_dir, resume_dir, resume_step, overrides) -> None:
    """Train a model (under torchrun for several processes/GPUs)."""
    from kspace_ldm.training.trainer import run_from_cli

    if config_path is None and resume_dir is None:
        raise click.UsageError("give --config FILE (new run) or --resume RUN_DIR")
    if resume_dir is None and out_dir is None:
        raise click.UsageError("give --out RUN_DIR for a new run")
    if resume_dir is not None and out_dir is not None:
        raise click.UsageError("--out and --resume are exclusive (a resumed run stays in place)")
    if resume_step is not None and resume_dir is None:
        raise click.UsageError("--resume-from STEP needs --resume RUN_DIR")
    result = run_from_cli(
        config_path, out_dir, resume_dir, list(overrides), stage, resume_step=resume_step
    )
    if result.last_val and "loss" in result.last_val:
        v = ", ".join(f"{k} {x:.5f}" for k, x in result.last_val.items())
        click.echo(f"step {result.step}: val {v} ({result.seconds:.0f} s) -> {result.run_dir}")
    elif result.last_val:
        v = result.last_val
        click.echo(
            f"step {result.step}: val PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.4f}, "
            f"NMSE {v['nmse']:.4g} ({result.seconds:.0f} s) -> {result.run_dir}"
        )
    else:
        click.echo(f"step {result.step} ({result.seconds:.0f} s) -> {result.run_dir}")


@click.command("extract-latents")
@click.option(
    "--ckpt",
    "ckpt_dir",
    required=True,
    type=params.EXISTING_DIR,
    help="First stage: RUN_DIR/best or a checkpoint directory.",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=params.EXISTING_PATH,
    help="fastMRI-format folder (or file) of this partition.",
)
@params.out_dir_option()
@click.option(
    "--partition",
    type=click.Choice(["train", "val", "test"]),
    default="train",
    show_default=True,
)
@params.device_option
@params.batch_size_option(8)
def extract_latents(ckpt_dir, data_dir, out_dir, partition, device, batch_size) -> None:
    """Encode DATA with the first stage into safetensors shards OUT/PARTITION/<file>.safetensors
    plus OUT/stats.json (latent statistics, test-time normalisation ratios). Resumable: run the
    same command again and complete shards are kept."""
    from kspace_ldm.latents import extract_latents as run

    rep = run(ckpt_dir, data_dir, out_dir, partition, device, batch_size)
    lat = rep.stats["latent"]
    click.echo(
        f"{rep.written} written, {rep.skipped} already present ({rep.slices} slices) -> "
        f"{rep.out_dir}; latent {lat['shape']} std {lat['global_std']:.4g} "
        f"(stats from '{rep.stats['partition']}', {lat['slices']} slices)"
    )


@click.command("eval-ae")
@click.argument("model_dir", type=params.EXISTING_DIR)
@click.argument("data_dir", type=params.EXISTING_PATH)
@params.out_dir_option()
@params.device_option
@params.markdown_option
def eval_ae(model_dir, data_dir, out_dir, device, md_path) -> None:
    """Encode/decode the fully sampled k-space of DATA_DIR with a trained first stage (MODEL_DIR:
    RUN_DIR/best or a checkpoint) and evaluate the images by the fastMRI protocol."""
    from kspace_ldm.training.evaluate import evaluate_first_stage

    result = evaluate_first_stage(model_dir, data_dir, out_dir, device=device)
    click.echo(result.format_table())
    if md_path is not None:
        result.to_markdown(md_path)
