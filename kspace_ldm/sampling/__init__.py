"""Diffusion sampling: diffusers-compatible schedulers whose step runs one fused native kernel."""

from __future__ import annotations

from kspace_ldm.sampling.schedulers import FusedDDIMScheduler, FusedDDPMScheduler

__all__ = ["FusedDDIMScheduler", "FusedDDPMScheduler"]
