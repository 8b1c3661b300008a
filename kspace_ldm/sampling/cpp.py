"""The C++ sampler (``kldm::Sampler`` in libkldm) behind the Python sampler's interface.

``kldm recon --backend cpp`` and ``kldm bench sampler`` use it: the same ``cgs`` / ``cgs-ref``
algorithms, defaults and seeded random stream as :class:`~kspace_ldm.sampling.cgs.KspaceLDMSampler`,
run from an export directory (``kldm export``) without Python in the loop.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from .cgs import SamplerOptions

__all__ = ["CppSampler"]

_DEFAULT = SamplerOptions()


class CppSampler:
    """``kldm::Sampler`` on ``export_dir``.

    Args:
        export_dir: made by ``kldm export`` (manifest, sha256-verified packages).
        device: ``cpu`` or ``cuda`` (the device the packages were exported for).
        expect_sha256: sha256 of ``manifest.json`` pinned by the caller (checked by
            ``kldm::Sampler`` before anything is loaded); None: not pinned.
    """

    def __init__(
        self, export_dir: str | Path, device: str = "cpu", expect_sha256: str | None = None
    ):
        import kspace_ldm.ops  # noqa: F401  (loads libkldm and the _C module)
        from kspace_ldm import _C

        self.export_dir = Path(export_dir)
        try:
            self._sampler = _C.Sampler(str(self.export_dir), device, expect_sha256 or "")
        except _C.SamplerError as err:
            raise InputError(None, str(err)) from None
        self.info = dict(self._sampler.info)
        self._profiling = False

    @property
    def device(self) -> torch.device:
        return torch.device(self.info["device"])

    def sample(self, masked: torch.Tensor, mask: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """Reconstruct complex ``[B, C, H, W]`` ``masked`` k-space; returns k-space like it (the
        first half of :meth:`reconstruct`, same arguments).

        The interface of :meth:`KspaceLDMSampler.sample
        <kspace_ldm.sampling.cgs.KspaceLDMSampler.sample>`: the same options give the same result
        (``options.seed`` seeds the CPU generator of every draw on both sides; tests: relative
        error < 1e-4)."""
        return self.reconstruct(masked, mask, *args, **kwargs)[0]

    def reconstruct(
        self,
        masked: torch.Tensor,
        mask: torch.Tensor,
        options: SamplerOptions = _DEFAULT,
        coil_combine: str = "auto",
        maps: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kspace [B, C, H, W] complex64, image [B, H, W] float32 RSS)``; ``options`` (a
        :class:`~kspace_ldm.sampling.cgs.SamplerOptions`) crosses to ``kldm::SamplerOptions``
        field by field.

        ``coil_combine``: multi-coil k-space with a single-coil export: ``espirit`` (or ``auto``,
        the default) runs the coil-agnostic path (:mod:`.sense_dc` in C++: ESPIRiT maps computed
        by ``kldm::espirit_maps``, or ``maps [B|1, C, H, W]`` when given), ``channels`` needs a
        ``C``-coil export."""
        from kspace_ldm import _C

        if not isinstance(options, SamplerOptions):
            raise InputError("sampler", f"options must be SamplerOptions, got {type(options)}")
        if options.refine:
            raise InputError(
                "--backend",
                f"refine={options.refine!r} (cgs + CS refinement) runs on the python backend only",
            )
        try:
            return self._sampler.reconstruct(
                masked, torch.as_tensor(mask), options, coil_combine, maps
            )
        except _C.SamplerError as err:
            raise InputError(None, str(err)) from None

    def network_seconds(self) -> float:
        """Seconds inside the networks since :meth:`reset_timers`; counted while
        :attr:`profiling` is on (device-synchronised around every call)."""
        return self._sampler.network_seconds()

    @property
    def profiling(self) -> bool:
        return self._profiling

    @profiling.setter
    def profiling(self, on: bool) -> None:
        self._profiling = bool(on)
        self._sampler.set_profiling(self._profiling)

    @property
    def cuda_graphs(self) -> bool:
        """CUDA graphs on (the default on CUDA): every network is captured per input shape on its
        second call and replayed. Always ``False`` on the CPU."""
        return self._sampler.cuda_graphs

    @cuda_graphs.setter
    def cuda_graphs(self, on: bool) -> None:
        self._sampler.cuda_graphs = bool(on)

    def cuda_graph_status(self) -> dict:
        """``{"captured": n, "error": why capture failed or ""}`` (a failure is not fatal: the
        networks then run eagerly)."""
        return {
            "captured": self._sampler.cuda_graph_count,
            "error": self._sampler.cuda_graph_error,
        }

    def network_calls(self) -> int:
        return self._sampler.network_calls()

    def reset_timers(self) -> None:
        self._sampler.reset_timers()
