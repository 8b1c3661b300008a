"""``python -m kspace_ldm.cli`` (e.g. under torchrun): the ``kldm`` command."""

from kspace_ldm.cli import main

main()
