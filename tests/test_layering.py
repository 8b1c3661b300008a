"""Layering: inference (sampling, models, recon, export) never imports the training package.

Read from the source with ``ast``, so imports inside functions count too, and followed
transitively through every ``kspace_ldm`` module they reach.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "kspace_ldm"
INFERENCE = ["kspace_ldm.sampling", "kspace_ldm.models", "kspace_ldm.recon", "kspace_ldm.export"]
FORBIDDEN = "kspace_ldm.training"


def _file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    if not rel.parts:
        return PKG / "__init__.py"
    for f in (PKG / rel / "__init__.py", PKG / rel.with_suffix(".py")):
        if f.is_file():
            return f
    return None


def _modules_under(module: str) -> list[str]:
    f = _file(module)
    if f is None or f.name != "__init__.py":
        return [module]
    return [
        ".".join(("kspace_ldm", *p.relative_to(PKG).with_suffix("").parts)).removesuffix(
            ".__init__"
        )
        for p in sorted(f.parent.rglob("*.py"))
    ]


def _imports(module: str) -> set[str]:
    """Every kspace_ldm module ``module`` imports anywhere in its source (absolute names)."""
    f = _file(module)
    assert f is not None, module
    package = module if f.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(f.read_text(), str(f))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
            else:
                stem = node.module or ""
            # `from pkg import name` may name a submodule: count both.
            names = [stem, *(f"{stem}.{a.name}" for a in node.names)]
        else:
            continue
        out.update(n for n in names if n.startswith("kspace_ldm") and _file(n) is not None)
    return out


def _chain(start: str) -> list[str] | None:
    """An import path from ``start`` to the training package, or None."""
    seen, stack = {start}, [[start]]
    while stack:
        path = stack.pop()
        for dep in sorted(_imports(path[-1])):
            if dep == FORBIDDEN or dep.startswith(FORBIDDEN + "."):
                return [*path, dep]
            if dep not in seen:
                seen.add(dep)
                stack.append([*path, dep])
    return None


def test_the_import_scan_sees_training_imports():
    # The scan itself: the training package's own modules import each other.
    assert any(m.startswith(FORBIDDEN) for m in _imports("kspace_ldm.training.trainer"))
    assert _chain("kspace_ldm.cli") is not None  # the CLI runs training: it must be found


def test_inference_never_imports_training():
    modules = [m for top in INFERENCE for m in _modules_under(top)]
    assert len(modules) > 8
    chains = [c for m in modules if (c := _chain(m)) is not None]
    assert not chains, "\n".join(" -> ".join(c) for c in chains)


def test_importing_inference_loads_no_training_module():
    code = (
        "import sys, kspace_ldm.sampling, kspace_ldm.models, kspace_ldm.recon, kspace_ldm.export\n"
        "print(sorted(m for m in sys.modules if m.startswith('kspace_ldm.training')))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
