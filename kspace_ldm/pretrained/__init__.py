"""Pretrained model bundles shipped inside the package (``kspace_ldm/pretrained/<name>/``).

A bundle is a folder with a first stage, an LDM whose ``ldm.json`` names that first stage by a
path *relative to the LDM folder* (``../first_stage``), and ``manifest.json``::

    demo/
      manifest.json          format, provenance, the data the models expect, sha256 of every file
      first_stage/           config.yaml, model.safetensors, metrics.json  (K-AE)
      ldm/                   config.yaml, ema.safetensors, ldm.json, metrics.json  (LDenoiser)

Every file listed in the manifest is checked against its sha256 when a model of the bundle is
loaded (:func:`verify_if_bundled`, called by :func:`kspace_ldm.models.ldm.load_ldm` and
:func:`kspace_ldm.models.loading.load_first_stage`); a missing or modified file is one
:class:`~kspace_ldm.errors.InputError` line. :func:`build_bundle` makes a bundle from trained runs
(``scripts/train_demo_model.sh`` ends with it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import yaml

from ..errors import InputError
from ..io import atomic_write_text, sha256_file

__all__ = [
    "BUNDLE_FORMAT",
    "MANIFEST",
    "build_bundle",
    "bundle_dir",
    "demo_model",
    "sha256_file",
    "verify_bundle",
    "verify_if_bundled",
]

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "kspace-ldm-bundle/1"
_ROOT = Path(__file__).resolve().parent
# What sampling needs: the LDM's EMA weights (load_ldm prefers them), never the raw weights.
_FIRST_STAGE_FILES = ("config.yaml", "model.safetensors", "metrics.json")
_LDM_FILES = ("config.yaml", "ema.safetensors", "ldm.json", "metrics.json")


def bundle_dir(name: str = "demo") -> Path:
    """The installed bundle ``name`` (not verified; see :func:`verify_bundle`)."""
    path = _ROOT / name
    if not (path / MANIFEST).is_file():
        raise InputError(path, f"no bundled model {name!r} in this installation (no {MANIFEST})")
    return path


def load_manifest(root: str | Path) -> dict:
    """The manifest of the bundle at ``root`` (one-line error when absent or not a bundle)."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read the bundle manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise InputError(path, f"not a kspace-ldm bundle manifest (format != {BUNDLE_FORMAT!r})")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InputError(
            path, "bundle manifest has no 'files' mapping {file: {sha256, bytes}} to verify"
        )
    for rel, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise InputError(path, f"bundle manifest entry {rel!r} has no sha256")
    return manifest


def verify_bundle(root: str | Path) -> dict:
    """Check every file of the manifest at ``root`` against its sha256; return the manifest.

    Raises:
        InputError: a listed file is missing or its content differs (one line naming the file).
    """
    root = Path(root)
    manifest = load_manifest(root)
    for rel, entry in manifest["files"].items():
        path = root / rel
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            raise InputError(root / MANIFEST, f"bundle file {rel!r} lies outside the bundle")
        if not path.is_file():
            raise InputError(path, "missing from the bundled model; reinstall kspace-ldm")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise InputError(
                path,
                f"sha256 {digest[:12]}... does not match the bundle manifest "
                f"({entry['sha256'][:12]}...): the file was modified or corrupted; "
                "reinstall kspace-ldm",
            )
    return manifest


def verify_if_bundled(model_dir: str | Path) -> dict | None:
    """Verify the bundle that ``model_dir`` belongs to (the folder itself or its parent holds a
    bundle manifest); None when it is not part of a bundle (an ordinary training run)."""
    root = bundle_root(model_dir)
    return None if root is None else verify_bundle(root)


def bundle_root(model_dir: str | Path) -> Path | None:
    """The folder holding the bundle manifest of ``model_dir`` (itself or its parent), or None.

    A ``manifest.json`` that is present is never a reason to skip verification: if it is
    unreadable, malformed or of another format, :func:`verify_bundle` refuses it (one line)
    instead of treating the folder as an ordinary run whose weights need no check.
    """
    model_dir = Path(model_dir)
    for root in (model_dir, model_dir.parent):
        if (root / MANIFEST).exists():
            return root
    return None


def check_pinned_manifest(model_dir: str | Path, expected: str) -> Path:
    """Check ``expected`` (lower-case hex sha256, pinned by the caller, e.g.
    ``--expect-sha256``) against the bytes of the bundle manifest of ``model_dir`` before
    anything is loaded; returns the manifest's path. The manifest's own sha256 entries then
    cover every file of the bundle."""
    import hashlib

    root = bundle_root(model_dir)
    if root is None:
        raise InputError(
            model_dir,
            f"--expect-sha256 given but there is no {MANIFEST} here or in the parent folder "
            "(an ordinary training run has none: bundle it, or export it for --backend cpp)",
        )
    path = root / MANIFEST
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected.strip().lower():
        raise InputError(
            path,
            f"sha256 {digest} differs from the pinned --expect-sha256 {expected.strip()}; "
            "refusing to load the model",
        )
    return path


def demo_model() -> tuple[Path, dict]:
    """``(ldm_dir, manifest)`` of the bundled demo model, verified."""
    root = bundle_dir("demo")
    manifest = verify_bundle(root)
    return root / manifest["ldm"], manifest


def _portable_config(src: Path, dst: Path, data_paths: dict[str, str]) -> None:
    """Copy a run's ``config.yaml`` with its machine-specific data paths replaced."""
    cfg = yaml.safe_load(src.read_text())
    for key, value in data_paths.items():
        cfg.setdefault("data", {})[key] = value
    atomic_write_text(dst, yaml.safe_dump(cfg, sort_keys=False))


def build_bundle(
    first_stage: str | Path,
    ldm: str | Path,
    out: str | Path,
    info: dict | None = None,
) -> Path:
    """Make a bundle at ``out`` from a trained first stage and LDM (``best`` directories).

    Copies only what sampling needs (the LDM's EMA weights, not its raw weights), rewrites
    ``ldm.json``'s ``first_stage`` to ``../first_stage`` and the configs' data paths to the
    portable names used by ``scripts/train_demo_model.sh``, and writes ``manifest.json`` with the
    sha256 of every file. ``info`` (provenance, the data the models expect) goes into the
    manifest as is. ``out`` is replaced as a whole, so a failure leaves the old bundle.
    """
    first_stage, ldm, out = Path(first_stage), Path(ldm), Path(out)
    for folder, names in ((first_stage, _FIRST_STAGE_FILES), (ldm, _LDM_FILES)):
        for name in names:
            if not (folder / name).is_file():
                raise InputError(folder / name, "missing: cannot build the bundle")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "first_stage").mkdir()
        (tmp / "ldm").mkdir()
        for name in ("model.safetensors", "metrics.json"):
            shutil.copyfile(first_stage / name, tmp / "first_stage" / name)
        _portable_config(
            first_stage / "config.yaml",
            tmp / "first_stage" / "config.yaml",
            {"train": "data/synth96/singlecoil_train", "val": "data/synth96/singlecoil_val"},
        )
        for name in ("ema.safetensors", "metrics.json"):
            shutil.copyfile(ldm / name, tmp / "ldm" / name)
        _portable_config(
            ldm / "config.yaml",
            tmp / "ldm" / "config.yaml",
            {"train": "latents/train", "val": "latents/val"},
        )
        meta = json.loads((ldm / "ldm.json").read_text())
        meta["first_stage"] = "../first_stage"
        atomic_write_text(tmp / "ldm" / "ldm.json", json.dumps(meta, indent=2) + "\n")
        files = {
            p.relative_to(tmp).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": BUNDLE_FORMAT,
            **(info or {}),
            "first_stage": "first_stage",
            "ldm": "ldm",
            "files": files,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        for p in tmp.rglob("*"):  # package data: readable by everyone (mkstemp/mkdtemp: 0600)
            p.chmod(0o755 if p.is_dir() else 0o644)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
