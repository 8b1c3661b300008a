"""``kldm bench sampler``: seconds per slice of the Python and the C++ sampler, side by side.

Both run the same algorithm with the same options and seed on the same k-space: the Python
backend on the eager PyTorch networks of the run the export was made from, the C++ backend
(``kldm::Sampler``) on the AOTInductor packages, on CUDA with and without CUDA graphs. The runs
alternate (python, cpp, python, ...) so a change of machine load hits both; the medians are
reported. Totals come from runs without instrumentation. The time spent inside the network
evaluations comes from one extra profiled run per backend (device-synchronised around every
network call, which on a GPU also removes the overlap of host and device work, so it is not
mixed into the totals): the C++ total minus it is the sampler's own overhead (data consistency,
FFTs, scheduler, normalisation, glue).

``coils``: multi-coil k-space for a single-coil export (the coil-agnostic path,
:mod:`kspace_ldm.sampling.sense_dc`): both backends compute the ESPIRiT maps (inside the timed
region: they are part of every slice's reconstruction) and run cgs with SENSE consistency.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..tables import markdown_table
from .timing import sync

__all__ = ["format_table", "run"]


class _Timed:
    """Wraps a callable and, while ``on[0]``, adds its device-synchronised wall time to
    ``clock[0]``."""

    def __init__(self, fn, clock: list, on: list, device: str):
        self.fn, self.clock, self.on, self.device = fn, clock, on, device

    def __call__(self, *args, **kwargs):
        if not self.on[0]:
            return self.fn(*args, **kwargs)
        sync(self.device)
        t = time.perf_counter()
        out = self.fn(*args, **kwargs)
        sync(self.device)
        self.clock[0] += time.perf_counter() - t
        return out

    def __getattr__(self, name):  # parameters(), config, ... of the wrapped module
        return getattr(self.fn, name)


def _machine(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _input(info: dict, batch: int, accel: int, device: str, coils: int | None = None):
    from ..data.masks import create_mask
    from ..data.synth import synth_volume

    c, h, w = coils or info["coils"], info["height"], info["width"]
    vol = synth_volume(20261126, coils=c, shape=(h, w), recon_size=min(h, w, 320), slices=batch)
    k = torch.from_numpy(np.asarray(vol.kspace)).to(torch.complex64)
    k = k[:, None] if c == 1 else k
    cf = {4: 0.08, 8: 0.04}.get(accel, 0.08)
    res = create_mask("random", (cf,), (accel,))((1, h, w), seed=0)
    mask = torch.as_tensor(np.asarray(res.mask).reshape(-1) != 0)
    return (k * mask).to(device), mask.to(device)


def run(
    export_dir: str | Path,
    run_dir: str | Path | None = None,
    sampler: str = "cgs",
    steps: int | None = None,
    repeats: int = 3,
    batch: int = 1,
    accel: int = 4,
    log=print,
    coils: int | None = None,
) -> dict:
    """Time both backends on ``export_dir``; returns the JSON record (``kldm bench sampler``).

    ``coils``: k-space with this many coils (default: the export's); more than one with a
    single-coil export benchmarks the coil-agnostic multi-coil path."""
    from ..export import load_manifest
    from ..sampling.cgs import SamplerOptions
    from ..sampling.cpp import CppSampler

    manifest = load_manifest(export_dir)
    device = manifest["device"]
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(export_dir, "exported for cuda but no CUDA device is available")
    run_dir = run_dir or manifest.get("source_run")
    if not run_dir or not Path(run_dir).exists():
        raise InputError(
            export_dir, f"the run it was exported from ({run_dir}) is not here; pass --run RUN_DIR"
        )
    from ..sampling.cgs import KspaceLDMSampler

    cpp = CppSampler(export_dir, device)
    py = KspaceLDMSampler.from_run(run_dir, device)
    py_net, py_profiling = [0.0], [False]
    py.ae.encode = _Timed(py.ae.encode, py_net, py_profiling, device)
    py.ae.decode = _Timed(py.ae.decode, py_net, py_profiling, device)
    py.unet = _Timed(py.unet, py_net, py_profiling, device)

    agnostic = coils is not None and coils > 1 and manifest["coils"] == 1
    if coils is not None and coils != manifest["coils"] and not agnostic:
        raise InputError(
            "--coils",
            f"{coils} coils for an export of {manifest['coils']} coils (other coil counts need a "
            "single-coil export: the coil-agnostic path)",
        )
    if agnostic and sampler != "cgs":
        raise InputError("--coils", f"the coil-agnostic path needs --sampler cgs, not {sampler}")
    masked, mask = _input(manifest, batch, accel, device, coils)
    opts = SamplerOptions(sampler=sampler, steps=steps, seed=0)
    py_extra: dict = {}
    cpp_extra = {"coil_combine": "espirit"} if agnostic else {}
    if agnostic:
        from ..physics.espirit import espirit_maps
    t_used = steps or manifest["sampler_defaults"]["cgs"]["steps"]

    def time_python(profile=False):
        py_net[0], py_profiling[0] = 0.0, profile
        sync(device)
        t = time.perf_counter()
        if agnostic:  # the maps are part of the slice's reconstruction (C++ computes its own)
            py_extra["maps"] = espirit_maps(masked)
        py.sample(masked, mask, opts, **py_extra)
        sync(device)
        return time.perf_counter() - t, py_net[0]

    def time_cpp(profile=False, graphs=True):
        cpp.reset_timers()
        cpp.profiling = profile
        cpp.cuda_graphs = graphs
        sync(device)
        t = time.perf_counter()
        cpp.sample(masked, mask, opts, **cpp_extra)
        sync(device)
        return time.perf_counter() - t, cpp.network_seconds()

    cuda = device == "cuda"
    log(f"warm-up ({sampler}, {t_used} steps, {tuple(masked.shape)} on {device}) ...")
    time_python()
    time_cpp()  # on CUDA this run also captures the graphs
    if cuda:
        time_cpp(graphs=False)
    py_s, cpp_s, nog_s = [], [], []
    for i in range(repeats):
        py_s.append(time_python()[0])
        cpp_s.append(time_cpp()[0])
        msg = f"run {i + 1}/{repeats}: python {py_s[-1]:.3f} s, cpp {cpp_s[-1]:.3f} s"
        if cuda:
            nog_s.append(time_cpp(graphs=False)[0])
            msg += f", cpp without CUDA graphs {nog_s[-1]:.3f} s"
        log(msg)
    py_net_s = time_python(profile=True)[1] / batch
    net_s = time_cpp(profile=True)[1] / batch
    cpp.profiling = False
    py_s = statistics.median(py_s) / batch
    cpp_s = statistics.median(cpp_s) / batch
    graphs = cpp.cuda_graph_status() if cuda else None
    extra = {}
    if cuda:
        extra = {
            "cuda_graphs": graphs["error"] == "" and graphs["captured"] > 0,
            "cuda_graph_error": graphs["error"],
            "cpp_no_graphs_s_per_slice": statistics.median(nog_s) / batch,
        }
    return {
        "device": _machine(device),
        "device_type": device,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "sampler": sampler,
        "steps": t_used if sampler == "cgs" else None,
        "size": [int(masked.shape[1]), manifest["height"], manifest["width"]],
        "coil_combine": "espirit" if agnostic else "channels",
        "batch": batch,
        "repeats": repeats,
        "python_s_per_slice": py_s,
        "cpp_s_per_slice": cpp_s,
        "speedup": py_s / cpp_s,
        "network_s_per_slice": net_s,
        "overhead_fraction": max(0.0, 1.0 - net_s / cpp_s),
        "python_network_s_per_slice": py_net_s,
        "python_overhead_fraction": max(0.0, 1.0 - py_net_s / py_s),
        # the sampler's own time (not networks) in seconds per slice
        "cpp_own_s_per_slice": max(0.0, cpp_s - net_s),
        "python_own_s_per_slice": max(0.0, py_s - py_net_s),
        **extra,
    }


def format_table(r: dict) -> str:
    size = "x".join(map(str, r["size"]))
    rows = [
        [
            "python",
            f"{r['python_s_per_slice']:.3f}",
            f"{r['python_network_s_per_slice']:.3f}",
            f"{100 * r['python_overhead_fraction']:.1f}% "
            f"({1e3 * r['python_own_s_per_slice']:.1f} ms)",
            "1.00x",
        ],
        [
            "cpp",
            f"{r['cpp_s_per_slice']:.3f}",
            f"{r['network_s_per_slice']:.3f}",
            f"{100 * r['overhead_fraction']:.1f}% ({1e3 * r['cpp_own_s_per_slice']:.1f} ms)",
            f"{r['speedup']:.2f}x",
        ],
    ]
    if "cpp_no_graphs_s_per_slice" in r:
        no_graphs = r["cpp_no_graphs_s_per_slice"]
        speedup = r["python_s_per_slice"] / no_graphs
        rows.append(["cpp, no CUDA graphs", f"{no_graphs:.3f}", "", "", f"{speedup:.2f}x"])
    header = ["backend", "s/slice", "networks s/slice", "not networks", "speedup"]
    return (
        f"device: {r['device']}, torch {r['torch']}, {r['sampler']}"
        + (f", {r['steps']} steps" if r["steps"] else "")
        + f", k-space {size}"
        + (" (coil-agnostic: ESPIRiT + SENSE)" if r.get("coil_combine") == "espirit" else "")
        + f", batch {r['batch']}, median of {r['repeats']}\n\n"
        + markdown_table(header, rows)
        + (f"\n\nCUDA graphs failed: {r['cuda_graph_error']}" if r.get("cuda_graph_error") else "")
    )
