"""``kldm info``: the build and its toolchain."""

from __future__ import annotations

import json

import click


@click.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
def info(as_json: bool) -> None:
    """Print the version, the torch it was built against, CUDA kernels and the CMake package."""
    import torch

    from kspace_ldm.ops import build_info
    from kspace_ldm.toolchain import aoti_compiler, static_cxx_runtime

    b = build_info()
    b["torch_running"] = torch.__version__
    b["cuda_available"] = torch.cuda.is_available()
    b["export_compiler"] = aoti_compiler()
    b["export_compiler_static_libstdcxx"] = static_cxx_runtime(b["export_compiler"])
    if as_json:
        click.echo(json.dumps(b, indent=2))
        return
    cuda = f"yes (sm: {b['cuda_archs']})" if b["cuda"] else "no (CPU kernels only)"
    lines = [
        f"kspace-ldm        {b['version']}",
        f"torch (built)     {b['torch_version']}",
        f"torch (running)   {b['torch_running']}  (CUDA device available: {b['cuda_available']})",
        f"CUDA kernels      {cuda}",
        f"compiler          {b['compiler']}  (built {b['build_date']})",
        f"library           {b['library']}",
        f"CMake package     {b['cmake_config']}",
        f"CMAKE_PREFIX_PATH {b['cmake_prefix_path']}",
        f"kldm-recon        {b['recon_tool'] or 'not built (no HDF5 C library at build time)'}",
        "kldm-recon ISMRMRD "
        + ("yes (libismrmrd)" if b.get("recon_ismrmrd") else "no (no libismrmrd at build time)"),
        f"export compiler   {b['export_compiler']}  ({_runtime_note(b)})",
        f"ops               {', '.join(b['ops'])}",
    ]
    click.echo("\n".join(lines))


def _runtime_note(b: dict) -> str:
    static = b["export_compiler_static_libstdcxx"]
    if static is None:
        return "C++ runtime linkage not checked"
    return "STATIC libstdc++: kldm export refuses it" if static else "shared libstdc++"
