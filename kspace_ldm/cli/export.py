"""``kldm export``: AOTInductor packages for the C++ sampler."""

from __future__ import annotations

import click

from kspace_ldm.cli import params


@click.command("export")
@click.argument("run_dir", type=params.EXISTING_DIR)
@params.out_dir_option()
@params.device_option
@click.option(
    "--size",
    type=params.Size(),
    default=None,
    help="k-space HxW the packages are made for (default: the LDM's training size).",
)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Export with a symbolic batch dimension.")
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0, min_open=True),
    default=1e-5,
    show_default=True,
    help="Largest accepted relative error of a package against eager PyTorch (float32).",
)
@click.option(
    "--no-guidance",
    is_flag=True,
    help="Leave out the decoder VJP package (no gradient guidance: cgs-ref and cgs --guidance "
    "are refused); smaller and faster to export.",
)
def export_cmd(run_dir, out_dir, device, size, batch, dynamic_batch, tolerance, no_guidance):
    """Export the LDM run RUN_DIR and its first stage as AOTInductor packages for the C++ sampler
    (kldm recon --backend cpp, kldm-recon, kldm::Sampler)."""
    from kspace_ldm.export import export_run

    rep = export_run(
        run_dir,
        out_dir,
        device,
        size,
        batch,
        dynamic_batch,
        log=click.echo,
        rtol=tolerance,
        guidance=not no_guidance,
    )
    m = rep.manifest
    click.echo(
        f"{out_dir}: {m['coils']}x{m['height']}x{m['width']} k-space, latent "
        f"{'x'.join(map(str, m['latent_shape']))}, {m['device']}, torch {m['torch_version']} "
        f"({rep.seconds:.0f} s)"
    )
