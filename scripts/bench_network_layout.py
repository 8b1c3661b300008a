"""Per-network CPU timings behind the export's layout choice (docs/benchmarks.md).

For the encoder, decoder and denoiser of an LDM run at one k-space size: eager PyTorch in NCHW
(what the Python backend runs) and in channels-last, and AOTInductor packages compiled from the
NCHW module and from the channels-last wrapper that ``kldm export`` compiles on the CPU. Each
package is checked against eager NCHW (relative error printed) before it is timed.

    python scripts/bench_network_layout.py kspace_ldm/pretrained/demo/ldm --size 320x320

Takes ~2 min on 2 cores (six package compiles). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kspace_ldm.export import (
    _compile,
    _rel_err,
    channels_last_inputs,
    compiled_layout,
    sampler_networks,
)
from kspace_ldm.sampling.cgs import KspaceLDMSampler
from kspace_ldm.tables import markdown_row, markdown_table


def _first(out):
    return out if isinstance(out, torch.Tensor) else out[0]


def _package(module, args, path: Path):
    _compile(module, args, path, dynamic_batch=False)
    return torch._inductor.aoti_load_package(str(path))


def _profile(module, args) -> str:
    from torch.profiler import profile

    with profile(record_shapes=True) as p:
        for _ in range(3):
            module(*args)
    return p.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=32
    )


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="LDM run directory")
    ap.add_argument("--size", default="320x320", help="k-space H x W (default 320x320)")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--profile",
        action="store_true",
        help="also print each network's top ATen ops (torch.profiler, eager channels-last)",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    size = tuple(int(v) for v in a.size.lower().split("x"))
    sampler = KspaceLDMSampler.from_run(a.run, device="cpu")
    nets = sampler_networks(sampler, size, batch=1)
    print(
        f"k-space 1x{size[0]}x{size[1]}, {a.threads} threads, ms (median of {a.repeats}"
        ", interleaved)"
    )
    layouts = ["eager NCHW", "eager channels-last", "AOTI NCHW", "AOTI channels-last (export)"]
    print(markdown_table(["network", *layouts], []))  # the rows follow as they are measured
    profiles = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (module, args) in nets.items():
            ref = _first(module(*args))
            cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
            runs = {
                "eager NCHW": (module, args),
                "eager channels-last": (cl, channels_last_inputs(args)),
                "AOTI NCHW": (_package(module, args, Path(tmp) / f"{name}_nchw.pt2"), args),
                "AOTI channels-last": (
                    _package(compiled_layout(module, "cpu"), args, Path(tmp) / f"{name}_cl.pt2"),
                    args,
                ),
            }
            # Round-robin over the four variants, so that the box's drift hits them alike.
            times = {k: [] for k in runs}
            for fn, fa in runs.values():
                fn(*fa)
                fn(*fa)
            for _ in range(a.repeats):
                for k, (fn, fa) in runs.items():
                    t0 = time.perf_counter()
                    fn(*fa)
                    times[k].append(time.perf_counter() - t0)
            cells = [
                f"{1e3 * statistics.median(times[k]):.1f} "
                f"(err {_rel_err(_first(fn(*fa)).contiguous(), ref):.0e})"
                for k, (fn, fa) in runs.items()
            ]
            print(markdown_row([name, *cells]), flush=True)
            if a.profile:
                profiles[name] = _profile(cl, channels_last_inputs(args))
    for name, table in profiles.items():
        print(f"\n{name}, eager channels-last, 3 calls:\n{table}")


if __name__ == "__main__":
    main()
