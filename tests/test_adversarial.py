"""Nothing lost, nothing bypassed: the CLI against a careless or hostile user.

Each test stands for a class of defect: outputs that would replace inputs, manifests that skip
verification, write failures that crash, messages that mislead. Inputs are tiny synthetic files.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run

from kspace_ldm.data.fastmri import make_ismrmrd_header, write_fastmri_file
from kspace_ldm.data.synth import synth_dataset
from kspace_ldm.errors import InputError

SHAPE = (32, 24)
RECON = 16
ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny_ae_kl.yaml"


def _visible_lines(output: str) -> list[str]:
    """The lines as a terminal shows them: a carriage return (a progress bar redrawn, or cleared
    by ``tqdm.write``) starts the line afresh."""
    return [ln.split("\r")[-1].rstrip() for ln in output.split("\n")]


def _error_line(result, needle: str) -> str:
    """The single ``kldm: error:`` line of a failed run (exit 2, no traceback, nothing after)."""
    assert result.exit_code == 2, result.output + repr(result.exception)
    lines = [ln for ln in _visible_lines(result.output) if "kldm: error: " in ln]
    assert len(lines) == 1, result.output
    # on a line of its own: not behind a progress bar, not one of several usage lines
    assert lines[0].startswith("kldm: error: "), repr(lines[0])
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output and "Usage:" not in result.output
    assert result.output.rstrip().endswith(lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adv")
    synth_dataset(out, 2, 2, 0, shape=SHAPE, recon_size=RECON, slices=2, seed=3)
    return out


@pytest.fixture
def val(data, tmp_path) -> Path:
    """A private copy of the validation folder (tests may try to destroy it)."""
    dst = tmp_path / "val"
    shutil.copytree(data / "singlecoil_val", dst)
    return dst


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


# ---------------------------------------------------------------------------------------------
# Data loss
# ---------------------------------------------------------------------------------------------


def test_recon_out_into_input_folder_or_symlink_refused(val, tmp_path):
    before = _digests(val)
    _error_line(run("recon", val, "--out", val, ok=False), "input folder")
    link = tmp_path / "link"
    link.symlink_to(val)
    _error_line(run("recon", val, "--out", link, ok=False), "input folder")
    one = sorted(val.glob("*.h5"))[0]
    _error_line(run("recon", one, "--out", val, ok=False), "input folder")
    # an output name that is a symlink to an input file
    out = tmp_path / "out"
    out.mkdir()
    (out / one.name).symlink_to(one)
    _error_line(run("recon", val, "--out", out, ok=False), "input file")
    assert _digests(val) == before


def test_recon_never_overwrites_a_foreign_file_without_overwrite(val, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    name = sorted(val.glob("*.h5"))[0].name
    shutil.copy(val / name, out / name)  # a k-space file, not a reconstruction
    foreign = (out / name).read_bytes()
    _error_line(run("recon", val, "--out", out, ok=False), "--overwrite")
    assert (out / name).read_bytes() == foreign
    run("recon", val, "--out", out, "--overwrite")
    with h5py.File(out / name, "r") as f:
        assert "reconstruction" in f and "kspace" not in f
    run("recon", val, "--out", out)  # its own reconstructions are replaced without --overwrite


def test_evaluate_reports_never_clobber_an_input_or_hdf5(val, tmp_path):
    out = tmp_path / "zf"
    run("recon", val, "--out", out)
    target = sorted(val.glob("*.h5"))[0]
    before = target.read_bytes()
    for opt in ("--json", "--csv", "--markdown"):
        res = run("evaluate", "--pred", out, "--target", val, opt, target, ok=False)
        _error_line(res, "refusing to overwrite")
    other = tmp_path / "elsewhere.h5"
    shutil.copy(target, other)
    res = run("evaluate", "--pred", out, "--target", val, "--json", other, ok=False)
    _error_line(res, "HDF5 file")
    assert target.read_bytes() == before and other.read_bytes() == before
    link = tmp_path / "report.json"
    link.symlink_to(target)
    res = run("evaluate", "--pred", out, "--target", val, "--csv", link, ok=False)
    _error_line(res, "refusing to overwrite")
    assert target.read_bytes() == before


# ---------------------------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def bundle(tmp_path) -> Path:
    """A copy of the installed demo bundle."""
    from kspace_ldm.pretrained import bundle_dir

    dst = tmp_path / "bundle"
    shutil.copytree(bundle_dir("demo"), dst)
    return dst


def _tamper_weights(bundle: Path) -> None:
    ema = bundle / json.loads((bundle / "manifest.json").read_text())["ldm"] / "ema.safetensors"
    raw = bytearray(ema.read_bytes())
    raw[-1] ^= 0xFF
    ema.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "manifest",
    [
        "{ not json",
        json.dumps({"format": "something-else/9", "files": {}}),
        json.dumps(["a", "list"]),
        "",
    ],
    ids=["malformed", "wrong-format", "not-a-mapping", "empty"],
)
def test_unreadable_bundle_manifest_is_an_error_not_a_skip(bundle, val, tmp_path, manifest):
    from kspace_ldm.pretrained import verify_if_bundled

    ldm = bundle / json.loads((bundle / "manifest.json").read_text())["ldm"]
    _tamper_weights(bundle)
    (bundle / "manifest.json").write_text(manifest)
    with pytest.raises(InputError, match="bundle manifest"):
        verify_if_bundled(ldm)
    res = run("recon", val, "--out", tmp_path / "o", "--model", ldm, ok=False)
    _error_line(res, "manifest.json")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.h5"))


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (None, "has no 'files' mapping"),
        (["ldm/ema.safetensors"], "has no 'files' mapping"),
        ({"ldm/ema.safetensors": "abc"}, "entry 'ldm/ema.safetensors' has no sha256"),
    ],
    ids=["no-files", "files-list", "entry-not-a-mapping"],
)
def test_bundle_manifest_files_missing_or_wrong_type(bundle, files, problem):
    from kspace_ldm.pretrained import verify_bundle

    m = json.loads((bundle / "manifest.json").read_text())
    if files is None:
        del m["files"]
    else:
        m["files"] = files
    (bundle / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match=problem):
        verify_bundle(bundle)


def test_expect_sha256_pins_the_bundle_manifest(bundle, val, tmp_path):
    from kspace_ldm.pretrained import check_pinned_manifest

    ldm = bundle / json.loads((bundle / "manifest.json").read_text())["ldm"]
    good = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    assert check_pinned_manifest(ldm, good.upper()) == bundle / "manifest.json"
    res = run(
        "recon", val, "--out", tmp_path / "o", "--model", ldm, "--expect-sha256", "0" * 64, ok=False
    )
    _error_line(res, "differs from the pinned --expect-sha256")
    res = run("recon", val, "--out", tmp_path / "o", "--expect-sha256", good, ok=False)
    _error_line(res, "--expect-sha256 needs --model")
    res = run(
        "recon", val, "--out", tmp_path / "o", "--model", ldm, "--expect-sha256", "12", ok=False
    )
    assert res.exit_code == 2 and "64 hex digits" in res.output


def _fake_export(tmp_path: Path, manifest: str) -> tuple[Path, str]:
    d = tmp_path / "export"
    d.mkdir(exist_ok=True)
    (d / "manifest.json").write_text(manifest)
    return d, hashlib.sha256(manifest.encode()).hexdigest()


@pytest.mark.parametrize(
    "manifest",
    [
        "{ not json",
        "[1, 2]",
        json.dumps({"format": "kspace-ldm-export", "format_version": 99}),
        json.dumps({"format": "kspace-ldm-export", "format_version": 1, "packages": []}),
    ],
    ids=["malformed", "list", "wrong-version", "packages-list"],
)
def test_export_manifest_stays_strict(tmp_path, manifest):
    from kspace_ldm.export import load_manifest

    d, _ = _fake_export(tmp_path, manifest)
    with pytest.raises(InputError, match=r"manifest\.json"):
        load_manifest(d)
    with pytest.raises(InputError, match=r"manifest\.json"):
        load_manifest(d, verify=False)


def test_expect_sha256_in_the_python_loader_and_kldm_sampler(tmp_path):
    from kspace_ldm import _C
    from kspace_ldm.export import load_manifest
    from kspace_ldm.sampling.cpp import CppSampler

    d, digest = _fake_export(tmp_path, json.dumps({"format": "not-an-export"}))
    with pytest.raises(InputError, match="differs from the pinned"):
        load_manifest(d, expect_sha256="f" * 64)
    with pytest.raises(InputError, match="not a kspace-ldm-export"):  # pin matched, then parsed
        load_manifest(d, expect_sha256=digest)
    # kldm::Sampler checks the pin on the manifest's bytes before parsing them
    with pytest.raises(_C.SamplerError, match="differs from the pinned --expect-sha256"):
        _C.Sampler(str(d), "cpu", "f" * 64)
    with pytest.raises(_C.SamplerError, match="not a kspace-ldm-export v1 manifest"):
        _C.Sampler(str(d), "cpu", digest.upper())
    with pytest.raises(InputError, match="differs from the pinned"):
        CppSampler(d, "cpu", expect_sha256="0" * 64)


def test_kldm_recon_tool_expect_sha256(tmp_path):
    from kspace_ldm.ops import build_info

    tool = build_info()["recon_tool"]
    if not tool:
        pytest.skip("kldm-recon was not built (no HDF5 C library at build time)")
    from kspace_ldm.data.synth import synth_volume, write_challenge_test_file

    d, digest = _fake_export(tmp_path, json.dumps({"format": "not-an-export"}))
    # a valid input: kldm-recon reads (and checks) its input before it loads the model
    vol = synth_volume(3, coils=1, shape=(32, 24), recon_size=16, slices=2)
    full = write_fastmri_file(tmp_path / "full.h5", vol.kspace, header=vol.header)
    mask = np.zeros(24, dtype=bool)
    mask[::2] = True
    mask[10:14] = True
    inp = write_challenge_test_file(full, tmp_path / "in.h5", mask, 4, 4)
    args = [tool, str(inp), str(tmp_path / "out.h5"), "--model", str(d)]
    res = subprocess.run([*args, "--expect-sha256", "a" * 64], capture_output=True, text=True)
    assert res.returncode != 0 and "differs from the pinned --expect-sha256" in res.stderr
    assert res.stderr.count("\n") == 1
    res = subprocess.run([*args, "--expect-sha256", digest], capture_output=True, text=True)
    assert res.returncode != 0 and "not a kspace-ldm-export v1 manifest" in res.stderr
    assert not (tmp_path / "out.h5").exists()


# ---------------------------------------------------------------------------------------------
# Crashes where a one-line error is promised
# ---------------------------------------------------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_is_one_line_and_leaves_no_torn_file(val, tmp_path, monkeypatch):
    import kspace_ldm.data.fastmri as fastmri

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(fastmri, "_write_attrs", _enospc)  # fails inside the HDF5 write
        line = _error_line(run("recon", val, "--out", out, ok=False), "no space left on device")
    assert str(out / sorted(val.glob("*.h5"))[0].name) in line
    assert not list(out.glob("*.h5")) and not list(out.glob("*.tmp"))

    run("recon", val, "--out", out)
    report = tmp_path / "m.json"
    with monkeypatch.context() as m:
        m.setattr("kspace_ldm.io.os.replace", _enospc)  # fails at the final rename
        res = run("evaluate", "--pred", out, "--target", val, "--json", report, ok=False)
        line = _error_line(res, "no space left on device")
    assert str(report) in line and not report.exists() and not list(tmp_path.glob(".m.json*"))


def test_full_disk_during_training_is_one_line(data, tmp_path, monkeypatch):
    from safetensors import SafetensorError

    import kspace_ldm.training.checkpoint as checkpoint

    def full(*_args, **_kwargs):
        # what safetensors' writer raises on a full disk (seen on a 256 KiB tmpfs): not OSError
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    monkeypatch.setattr(checkpoint, "save_file", full)
    res = run("train", "--config", TINY, "--out", tmp_path / "r", *_tiny_train(data), ok=False)
    line = _error_line(res, "no space left on device")
    assert "step_00000002" in line and ".tmp" not in line
    assert not list((tmp_path / "r" / "checkpoints").glob("step_*"))


def test_output_path_below_a_file_or_naming_a_directory(val, tmp_path):
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    src = sorted(val.glob("*.h5"))[0]
    zf = tmp_path / "zf"
    run("recon", val, "--out", zf)
    cases = [
        ("data", "inspect", src, "--png", a_file / "p.png"),
        ("data", "inspect", src, "--png", tmp_path),
        ("data", "inspect", src, "--png", src),
        ("evaluate", "--pred", zf, "--target", val, "--json", a_file / "m.json"),
        ("evaluate", "--pred", zf, "--target", val, "--csv", tmp_path),
        ("recon", val, "--out", a_file / "out"),
        ("recon", val, "--out", a_file),
        ("data", "synth", a_file / "d", "--val", "1", "--shape", "16x16", "--recon-size", "8"),
    ]
    for args in cases:
        res = run(*args, ok=False)
        assert res.exit_code == 2, (args, res.output)
        assert "Traceback" not in res.output
        assert len([ln for ln in res.output.split("\n") if ln.strip()]) == 1, res.output
    assert a_file.read_text() == "x"
    # a directory in the way of one output file: a clear line, not a traceback
    out = tmp_path / "o2"
    (out / src.name).mkdir(parents=True)
    _error_line(run("recon", src, "--out", out, ok=False), "is a directory")


def _narrow_file(path: Path, width: int) -> Path:
    rng = np.random.default_rng(width)
    k = (rng.standard_normal((2, 8, width)) + 1j * rng.standard_normal((2, 8, width))).astype(
        np.complex64
    )
    header = make_ismrmrd_header((8, width, 1), (8, width, 1), width // 2, width - 1)
    write_fastmri_file(path, k, header=header)
    return path


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 6])
def test_narrow_kspace_is_a_one_line_error(tmp_path, width):
    from kspace_ldm.data.masks import create_mask

    f = _narrow_file(tmp_path / f"w{width}.h5", width)
    for mask in ("random", "equispaced"):
        res = run("recon", f, "--out", tmp_path / "o", "--mask", mask, ok=False)
        line = _error_line(res, f.name)
        assert "fastmri_call" not in line and "too narrow" in line
    with pytest.raises(InputError, match="too narrow"):
        create_mask("random", [0.08], [4])((8, width), seed=0)


def test_absurd_synth_sizes_are_refused_with_the_size(tmp_path):
    for extra in (
        ["--slices", "2000000"],
        ["--shape", "60000x60000"],
        ["--coils", "100000"],
    ):
        res = run("data", "synth", tmp_path / "d", "--val", "1", *extra, ok=False)
        _error_line(res, "GB")
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------------------------------------
# Training: config, data, resume
# ---------------------------------------------------------------------------------------------


def _tiny_train(data: Path, steps: int = 4) -> list[str]:
    return [
        "--set",
        f"data.train={data / 'singlecoil_train'}",
        "--set",
        f"data.val={data / 'singlecoil_val'}",
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.ckpt_every=2",
        "--set",
        "train.val_every=100",
        "--set",
        "train.keep_checkpoints=2",
        "--set",
        "data.crop=null",
    ]


def test_empty_config_is_refused(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here\n")
    res = run("train", "--config", empty, "--out", tmp_path / "r", ok=False)
    _error_line(res, "empty config")
    assert not (tmp_path / "r").exists()


def test_mixed_coil_counts_named_before_the_run_dir_exists(data, tmp_path):
    multi = tmp_path / "multi"
    synth_dataset(multi, 1, 0, 0, coils=2, shape=SHAPE, recon_size=RECON, slices=2, seed=4)
    mixed = tmp_path / "mixed"
    shutil.copytree(data / "singlecoil_train", mixed)
    odd = next((multi / "multicoil_train").glob("*.h5"))
    shutil.copy(odd, mixed / "file9999999.h5")
    res = run("train", "--config", TINY, "--out", tmp_path / "r", *_tiny_train(data), "--set",
              f"data.train={mixed}", ok=False)  # fmt: skip
    _error_line(res, "file9999999.h5")
    assert not (tmp_path / "r").exists()
    # the same between train and val
    res = run("train", "--config", TINY, "--out", tmp_path / "r", *_tiny_train(data), "--set",
              f"data.val={multi / 'multicoil_train'}", ok=False)  # fmt: skip
    _error_line(res, odd.name)
    assert not (tmp_path / "r").exists()


def test_resume_names_step_shape_change_and_intact_checkpoint(data, tmp_path):
    rd = tmp_path / "r"
    run("train", "--config", TINY, "--out", rd, *_tiny_train(data))
    ckpts = rd / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step_*")) == ["step_00000002", "step_00000004"]

    # a --set that changes the model's shape: the key is named, nothing loads
    res = run("train", "--resume", rd, "--set", "model.latent_channels=8", ok=False)
    _error_line(res, "model.latent_channels (4 -> 8)")

    # the step resumed from is stated
    res = run("train", "--resume", rd, "--set", "train.max_steps=6")
    assert "resuming from step 4" in res.output

    # a corrupt latest checkpoint names the intact earlier one and how to use it
    (ckpts / "step_00000006" / "model.safetensors").write_bytes(b"garbage")
    res = run("train", "--resume", rd, "--set", "train.max_steps=8", ok=False)
    _error_line(res, "step_00000004 is intact")
    assert "--resume-from 4" in res.output
    res = run("train", "--resume", rd, "--resume-from", "4", "--set", "train.max_steps=6")
    assert "resuming from step 4" in res.output
    res = run("train", "--resume", rd, "--resume-from", "3", ok=False)
    _error_line(res, "no complete checkpoint of step 3")
    res = run("train", "--config", TINY, "--out", tmp_path / "x", "--resume-from", "3", ok=False)
    _error_line(res, "--resume-from")


# ---------------------------------------------------------------------------------------------
# Misleading
# ---------------------------------------------------------------------------------------------


def test_header_encoded_size_mismatch_is_warned(val, tmp_path):
    src = sorted(val.glob("*.h5"))[0]
    with h5py.File(src, "a") as f:
        xml = f["ismrmrd_header"][()]
        xml = xml.decode() if isinstance(xml, bytes) else xml
        h, w = SHAPE
        # the readout size (x) only: the phase-encode size (y) also sets the acquired window
        new = xml.replace(f"<x>{h}</x><y>{w}</y>", f"<x>{h + 6}</x><y>{w}</y>", 1)
        assert new != xml
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = new
    res = run("recon", src, "--out", tmp_path / "o")
    warn = [ln for ln in _visible_lines(res.output) if ln.startswith("kldm: warning: ")]
    assert len(warn) == 1 and src.name in warn[0] and "encoded size" in warn[0], res.output
    clean = run("recon", sorted(val.glob("*.h5"))[1], "--out", tmp_path / "o")
    assert "warning" not in clean.output


def test_dangling_symlink_is_reported(val, tmp_path):
    (val / "file0000000.h5").symlink_to(tmp_path / "gone.h5")
    _error_line(run("recon", val, "--out", tmp_path / "o", ok=False), "dangling symlink")


def test_accel_without_matching_center_fractions(val, tmp_path):
    res = run("recon", val, "--out", tmp_path / "o", "--accel", "4,8", ok=False)
    line = _error_line(res, "--center-fraction")
    assert "allow_any_combination" not in line
    from kspace_ldm.data.masks import create_mask

    with pytest.raises(InputError) as err:
        create_mask("random", [0.08], [4, 8])
    assert "allow_any_combination" not in str(err.value)


@pytest.mark.parametrize(
    "args",
    [
        ("recon",),
        ("recon", "/nonexistent/x.h5", "--out", "o"),
        ("data", "synth", "d", "--shape", "bogus"),
        ("--bogus",),
        ("train",),
        ("recon", "x", "--out", "o", "--mask", "nope"),
    ],
    ids=["missing-arg", "missing-path", "bad-value", "unknown-option", "in-command", "choice"],
)
def test_usage_errors_are_one_line(args):
    res = run(*args, ok=False)
    _error_line(res, "--help")


def test_evaluate_error_is_not_on_the_progress_bar_line(val, tmp_path):
    out = tmp_path / "zf"
    run("recon", val, "--out", out)
    bad = sorted(out.glob("*.h5"))[-1]
    with h5py.File(bad, "a") as f:
        r = f["reconstruction"][()]
        del f["reconstruction"]
        f["reconstruction"] = r[:, :4, :4]  # wrong size: fails inside the evaluation loop
    res = run("evaluate", "--pred", out, "--target", val, ok=False)
    _error_line(res, bad.name)


def test_two_recon_runs_into_one_folder_clash(val, tmp_path):
    from kspace_ldm.recon import LOCK_NAME

    out = tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_NAME, "a+") as held:  # another kldm recon holds the folder
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _error_line(run("recon", val, "--out", out, ok=False), "another kldm recon")
    assert not list(out.glob("*.h5"))
    run("recon", val, "--out", out)  # released: fine
