"""``kldm``: the command-line interface. Thin: it parses and validates, the library does the work.

Bad input (a file with a missing key, a mask that does not fit, an unknown value) ends with one
line ``kldm: error: <file>: <problem>`` on stderr and exit code 2, and leaves no partial output.

Where each command lives: info.py (info), data.py (data synth / inspect / convert), recon.py
(recon), evaluate.py (evaluate), compare.py (compare, demo), train.py (train, extract-latents,
eval-ae), export.py (export), bench.py (bench ops / sampler / untrained-run / train); errors.py
the one-line error handling, params.py the shared options and value types.
"""

from __future__ import annotations

import click

from kspace_ldm import __version__
from kspace_ldm.cli.bench import bench_group
from kspace_ldm.cli.compare import compare, demo
from kspace_ldm.cli.data import data_group
from kspace_ldm.cli.errors import EXIT_BAD_INPUT, OneLineGroup
from kspace_ldm.cli.evaluate import evaluate
from kspace_ldm.cli.export import export_cmd
from kspace_ldm.cli.info import info
from kspace_ldm.cli.recon import recon
from kspace_ldm.cli.train import eval_ae, extract_latents, train

__all__ = ["EXIT_BAD_INPUT", "main"]


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kspace-ldm")
def main() -> None:
    """kspace-ldm: accelerated MRI reconstruction with latent diffusion in k-space.

    Research software: not for clinical or diagnostic use.
    """


for _command in (
    info,
    data_group,
    recon,
    evaluate,
    train,
    export_cmd,
    extract_latents,
    eval_ae,
    bench_group,
    demo,
    compare,
):
    main.add_command(_command)
