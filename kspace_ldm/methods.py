"""The names of the reconstruction methods and sampler backends: the one list of each.

Imports nothing, so that ``kldm`` builds its ``--sampler`` / ``--backend`` choices from them
without loading torch; :mod:`kspace_ldm.recon`, :mod:`kspace_ldm.sampling.cgs` and
:mod:`kspace_ldm.sampling.cs` take theirs from here.
"""

from __future__ import annotations

__all__ = ["BACKENDS", "CGS_STARTS", "CS_SAMPLERS", "HYBRID_SAMPLERS", "LDM_SAMPLERS", "SAMPLERS"]

#: Every method of ``kldm recon --sampler``, in the order of its help.
SAMPLERS = ("zero-filled", "cgs", "cgs-ref", "unet", "cs-wavelet", "cs-tv", "cgs-cs")
#: The latent-diffusion samplers (kspace_ldm.sampling.cgs; the C++ sampler runs these).
LDM_SAMPLERS = ("cgs", "cgs-ref")
#: cgs followed by a CS-regularised final consistency (kspace_ldm.sampling.cgs_refine): the
#: hybrid's name -> the regulariser it refines with. Same model and cgs settings; Python only.
HYBRID_SAMPLERS = {"cgs-cs": "cs-wavelet"}
#: What cgs encodes first (SamplerOptions.start): the cs-wavelet image (default) or the data.
CGS_STARTS = ("cs-wavelet", "zero-filled")
#: Classical compressed-sensing baselines (kspace_ldm.sampling.cs): no model, Python backend only.
CS_SAMPLERS = ("cs-wavelet", "cs-tv")
#: The sampler implementations: "python" (kspace_ldm.sampling.cgs, eager PyTorch on an LDM run) and
#: "cpp" (kldm::Sampler through kspace_ldm.sampling.cpp, on an export directory).
BACKENDS = ("python", "cpp")
