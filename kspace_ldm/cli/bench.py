"""``kldm bench``: benchmarks of the fused ops, the samplers and first-stage training."""

from __future__ import annotations

import click

from kspace_ldm.cli import params
from kspace_ldm.methods import LDM_SAMPLERS


@click.group("bench")
def bench_group() -> None:
    """Benchmarks: fused ops vs eager PyTorch; first-stage training throughput."""


@bench_group.command("ops")
@params.device_option
@params.json_option
@click.option("--repeats", type=click.IntRange(min=3), default=15, show_default=True)
@click.option("--only", multiple=True, help="Benchmark only these ops (repeatable).")
def bench_ops(device, json_path, repeats, only) -> None:
    """Time each fused kldm op against its eager twin at fastMRI sizes; medians after warm-up."""
    from kspace_ldm.bench import ops as bench_ops_mod

    params.require_device(device)
    result = bench_ops_mod.run(device, repeats=repeats, only=list(only) or None)
    click.echo(bench_ops_mod.format_table(result))
    params.write_json(json_path, result)


@bench_group.command("sampler")
@params.model_option("Export directory (kldm export).", dest="export_dir", required=True)
@click.option(
    "--run",
    "run_dir",
    type=params.EXISTING_DIR,
    default=None,
    help="LDM run for the Python backend (default: the run named in the manifest).",
)
@click.option("--sampler", type=click.Choice(LDM_SAMPLERS), default="cgs", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="cgs DDIM steps.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@params.batch_size_option(1)
@click.option(
    "--coils",
    type=click.IntRange(min=1),
    default=None,
    help="Coils of the synthetic k-space (default: the export's); more than 1 with a single-coil "
    "export times the coil-agnostic multi-coil path (ESPIRiT + SENSE consistency).",
)
@params.json_option
def bench_sampler(export_dir, run_dir, sampler, steps, repeats, batch_size, coils, json_path):
    """Seconds per slice of --backend python and --backend cpp side by side, and the time inside
    the network evaluations."""
    from kspace_ldm.bench import sampler as bench_sampler_mod

    result = bench_sampler_mod.run(
        export_dir, run_dir, sampler, steps, repeats, batch_size, log=click.echo, coils=coils
    )
    click.echo(bench_sampler_mod.format_table(result))
    params.write_json(json_path, result)


@bench_group.command("untrained-run")
@click.option("--ae-config", required=True, type=params.EXISTING_PATH)
@click.option("--ldm-config", required=True, type=params.EXISTING_PATH)
@params.out_dir_option()
@click.option("--coils", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--size", type=params.Size(), default="320x320", show_default=True, help="k-space HxW."
)
def bench_untrained_run(ae_config, ldm_config, out_dir, coils, size) -> None:
    """Write an untrained first stage + LDM of any configs (for timing, e.g. the reference-size
    models); export it with kldm export OUT/ldm."""
    from kspace_ldm.bench.untrained import write_untrained_run

    ldm = write_untrained_run(ae_config, ldm_config, out_dir, coils, size)
    click.echo(f"untrained LDM run: {ldm}")


@bench_group.command("train")
@click.option(
    "--config",
    "configs",
    multiple=True,
    required=True,
    type=params.EXISTING_FILE,
    help="First-stage config(s) to measure (repeatable).",
)
@click.option(
    "--size",
    type=params.Size("COILSxHxW"),
    default="1x160x96",
    show_default=True,
    help="Input COILSxHxW (the network sees 2*COILS channels).",
)
@params.batch_size_option(1)
@click.option("--steps", type=click.IntRange(min=1), default=3, show_default=True)
@params.device_option
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads (0: torch's).")
@params.overrides_option("Config override.")
@params.json_option
def bench_train(configs, size, batch_size, steps, device, threads, overrides, json_path) -> None:
    """Training samples/s and peak memory of each first-stage config at a stated input size."""
    import torch

    from kspace_ldm.bench import train as bench_train_mod

    params.require_device(device)
    rows = bench_train_mod.run_configs(
        list(configs), size, batch_size, steps, device, tuple(overrides), threads
    )
    click.echo(f"device: {rows[0]['device']}, torch {torch.__version__}, median of {steps} steps")
    click.echo(bench_train_mod.format_table(rows))
    params.write_json(json_path, rows)
