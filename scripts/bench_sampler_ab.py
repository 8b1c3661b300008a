"""``kldm bench sampler`` of two checkouts side by side: the sampler's own time before/after.

Runs ``kldm bench sampler`` of checkout A (e.g. main, in its own venv) and of checkout B (this
one) alternately, ``--rounds`` times each, on the same export directory, and prints the medians
over the rounds: seconds per slice in total, inside the networks, and the rest (the sampler's own
share: normalisation, data consistency, scheduler, FFTs, glue), for the Python and the C++
backend. Alternating spreads a change of machine load over both checkouts.

    python scripts/bench_sampler_ab.py --a /tmp/main/.venv/bin/kldm --b .venv/bin/kldm \\
        --model exp96 --rounds 5 --repeats 5 --json docs/bench_sampler_ab_cpu_96.json

Both checkouts must read the export's manifest (the packages are loaded by each checkout's own
libkldm); the Python backend loads the run named in the manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path


def bench_once(kldm: str, model: str, repeats: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [kldm, "bench", "sampler", "--model", model, "--repeats", str(repeats)]
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        run = subprocess.run(
            [*cmd, "--json", str(out)],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        if run.returncode != 0:
            raise SystemExit(f"{kldm}: exit {run.returncode}\n{run.stdout}\n{run.stderr}")
        return json.loads(out.read_text())


def summarise(runs: list[dict]) -> dict:
    def med(f):
        return statistics.median(f(r) for r in runs)

    return {
        "python_s": med(lambda r: r["python_s_per_slice"]),
        "python_network_s": med(lambda r: r["python_network_s_per_slice"]),
        "python_own_s": med(lambda r: r["python_s_per_slice"] - r["python_network_s_per_slice"]),
        "cpp_s": med(lambda r: r["cpp_s_per_slice"]),
        "cpp_network_s": med(lambda r: r["network_s_per_slice"]),
        "cpp_own_s": med(lambda r: r["cpp_s_per_slice"] - r["network_s_per_slice"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="kldm executable of checkout A (before)")
    p.add_argument("--b", required=True, help="kldm executable of checkout B (after)")
    p.add_argument("--label-a", default="before")
    p.add_argument("--label-b", default="after")
    p.add_argument("--model", required=True, help="export directory (kldm export)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    runs: dict[str, list[dict]] = {a.label_a: [], a.label_b: []}
    for i in range(a.rounds):
        for label, kldm in ((a.label_a, a.a), (a.label_b, a.b)):
            r = bench_once(kldm, a.model, a.repeats, a.threads)
            runs[label].append(r)
            print(
                f"round {i + 1}/{a.rounds} {label}: python {r['python_s_per_slice']:.4f} s "
                f"(networks {r['python_network_s_per_slice']:.4f}), cpp "
                f"{r['cpp_s_per_slice']:.4f} s (networks {r['network_s_per_slice']:.4f})",
                flush=True,
            )
    summary = {label: summarise(rs) for label, rs in runs.items()}
    first = runs[a.label_b][0]
    print(
        f"\n{first['device']}, torch {first['torch']}, {first['sampler']}, "
        f"{first['steps']} steps, k-space {'x'.join(map(str, first['size']))}, "
        f"median of {a.rounds} rounds (each the median of {a.repeats} runs)\n"
    )
    print("| checkout | backend | s/slice | networks s/slice | own s/slice | own share |")
    print("|---|---|---|---|---|---|")
    for label, s in summary.items():
        for be in ("python", "cpp"):
            tot, net, own = s[f"{be}_s"], s[f"{be}_network_s"], s[f"{be}_own_s"]
            print(
                f"| {label} | {be} | {tot:.4f} | {net:.4f} | {1e3 * own:.1f} ms | "
                f"{100 * own / tot:.1f} % |"
            )
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
