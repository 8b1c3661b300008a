"""``kldm evaluate``: fastMRI-protocol metrics of reconstructions against targets."""

from __future__ import annotations

import click

from kspace_ldm.cli import params


@click.command("evaluate")
@click.option("--pred", "pred_dir", required=True, type=params.EXISTING_DIR)
@click.option("--target", "target_dir", required=True, type=params.EXISTING_DIR)
@click.option(
    "--challenge",
    type=click.Choice(["singlecoil", "multicoil"]),
    default=None,
    help="Target key: reconstruction_esc (singlecoil) or _rss (default: from the file).",
)
@click.option(
    "--acquisition",
    type=click.Choice(["CORPD_FBK", "CORPDFS_FBK"]),
    default=None,
    help="Only volumes of this acquisition.",
)
@params.json_option
@params.out_file_option("--csv", "csv_path")
@params.markdown_option
@click.option(
    "--lpips",
    "use_lpips",
    is_flag=True,
    help="Add LPIPS (needs the lpips extra and its backbone weights on disk).",
)
def evaluate(
    pred_dir, target_dir, challenge, acquisition, json_path, csv_path, md_path, use_lpips
) -> None:
    """fastMRI-protocol NMSE / PSNR / SSIM per volume of the reconstructions in PRED."""
    from kspace_ldm.evaluate import evaluate_folders
    from kspace_ldm.io import check_output_file
    from kspace_ldm.metrics import lpips_status

    inputs = [*pred_dir.iterdir(), *target_dir.iterdir()]
    for path, what in ((json_path, "--json"), (csv_path, "--csv"), (md_path, "--markdown")):
        if path is not None:  # never a file being evaluated (symlinks included)
            check_output_file(path, inputs, what=what)

    if use_lpips:
        ok, why = lpips_status()
        if not ok:
            raise click.UsageError(f"LPIPS unavailable: {why}")
    result = evaluate_folders(
        pred_dir,
        target_dir,
        challenge=challenge,
        acquisition=acquisition,
        lpips=use_lpips,
        progress=True,
    )
    click.echo(result.format_table())
    for path, write in (
        (json_path, result.to_json),
        (csv_path, result.to_csv),
        (md_path, result.to_markdown),
    ):
        if path is not None:
            write(path)
