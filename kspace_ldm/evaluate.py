"""Evaluate a folder of reconstructions against fastMRI ground truth (library side of
``kldm evaluate``).

The protocol is that of ``fastmri.evaluate`` (facebookresearch/fastMRI):

* every ``*.h5`` target file needs a prediction file of the same name in the prediction folder;
  prediction files are fastMRI submission files, HDF5 key ``reconstruction``, [slices, H, W];
* the target is ``reconstruction_esc`` (single-coil) or ``reconstruction_rss`` (multi-coil);
* target and prediction are both centre-cropped to (W, W), W = the target's last dimension;
* NMSE, PSNR and SSIM are computed per *volume* with ``maxval`` = the target volume max
  (:mod:`kspace_ldm.metrics`), then averaged over volumes;
* the spread is the sample standard deviation over volumes (ddof = 1: fastMRI's ``Metrics`` keeps
  ``runstats.Statistics``, whose ``stddev()`` defaults to ddof = 1), and fastMRI prints
  ``mean +/- 2 * std``. Both ``std`` and ``2 * std`` are reported, labelled.

Use :func:`evaluate_folders`; its :class:`EvaluationResult` writes JSON, CSV and Markdown (all
atomically) and formats a terminal table.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kspace_ldm import __version__
from kspace_ldm import metrics as _metrics
from kspace_ldm.errors import InputError
from kspace_ldm.io import atomic_write_text
from kspace_ldm.tables import markdown_table, write_csv

__all__ = [
    "CHALLENGES",
    "PRED_KEY",
    "TARGET_KEYS",
    "EvaluationResult",
    "MetricSummary",
    "VolumeMetrics",
    "evaluate_folders",
]

# Ground-truth dataset per challenge, as in fastmri.evaluate.
TARGET_KEYS = {"singlecoil": "reconstruction_esc", "multicoil": "reconstruction_rss"}
CHALLENGES = tuple(TARGET_KEYS)
# Dataset holding the reconstruction in a fastMRI submission file.
PRED_KEY = "reconstruction"

_LABELS = {"nmse": "NMSE", "psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS"}
_PROTOCOL = (
    "fastMRI evaluate: per-volume NMSE/PSNR/SSIM with maxval = target volume max; target and "
    "prediction centre-cropped to (W, W) with W = target width; SSIM = mean over slices of "
    "skimage-default SSIM (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance); "
    "std = sample std over volumes (ddof = 1, as fastMRI's runstats-based Metrics), "
    "fastMRI reports mean +/- 2 std"
)
_LPIPS_PROTOCOL = (
    "LPIPS v0.1 (AlexNet) per slice, each slice mapped by v -> 2 v / maxval - 1 with maxval = "
    "target volume max (no per-image min-max), grey replicated to 3 channels, mean over slices"
)


@dataclass(frozen=True)
class VolumeMetrics:
    """Metrics of one volume.

    Attributes:
        file: file name shared by target and prediction (e.g. ``file1000000.h5``).
        acquisition: the target's ``attrs['acquisition']`` (``None`` if absent).
        challenge: ``"singlecoil"`` or ``"multicoil"``, i.e. which target key was used.
        slices: number of slices.
        maxval: data range used for PSNR/SSIM/LPIPS (the cropped target volume's max).
        nmse, psnr, ssim: the volume metrics (PSNR in dB; ``inf`` for an exact reconstruction).
        lpips: mean LPIPS over slices, or ``None`` when LPIPS was not requested.
    """

    file: str
    acquisition: str | None
    challenge: str
    slices: int
    maxval: float
    nmse: float
    psnr: float
    ssim: float
    lpips: float | None = None


@dataclass(frozen=True)
class MetricSummary:
    """Mean and spread of one metric over volumes.

    Attributes:
        n: number of volumes.
        mean: mean over volumes.
        std: sample standard deviation over volumes (ddof = 1, as fastMRI's ``Metrics``);
            ``nan`` for a single volume.
    """

    n: int
    mean: float
    std: float

    @property
    def two_std(self) -> float:
        """``2 * std``: the "+/-" half-width fastMRI prints."""
        return 2.0 * self.std

    def as_dict(self) -> dict[str, float | int]:
        return {"n": self.n, "mean": self.mean, "std": self.std, "two_std": self.two_std}


@dataclass
class EvaluationResult:
    """Per-volume metrics of a prediction folder against a target folder, plus summaries.

    Attributes:
        rows: one :class:`VolumeMetrics` per evaluated volume, sorted by file name.
        pred_dir, target_dir: the folders compared.
        challenge: the challenge of every evaluated volume.
        acquisition: the acquisition filter, or ``None``.
        with_lpips: whether LPIPS was computed.
        skipped: target files left out by the acquisition filter.
        unmatched_predictions: prediction ``*.h5`` files with no target of that name (ignored,
            as by fastMRI, which iterates over the targets).
    """

    rows: list[VolumeMetrics]
    pred_dir: str
    target_dir: str
    challenge: str
    acquisition: str | None = None
    with_lpips: bool = False
    skipped: list[str] = field(default_factory=list)
    unmatched_predictions: list[str] = field(default_factory=list)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Metric attributes of the rows, in report order."""
        return ("nmse", "psnr", "ssim", "lpips") if self.with_lpips else ("nmse", "psnr", "ssim")

    @property
    def acquisitions(self) -> list[str]:
        """Distinct acquisitions of the evaluated volumes (sorted; absent ones left out)."""
        return sorted({r.acquisition for r in self.rows if r.acquisition is not None})

    def summary(self, acquisition: str | None = None) -> dict[str, MetricSummary]:
        """Mean and std (ddof = 1) per metric over volumes.

        Args:
            acquisition: restrict to volumes of this acquisition (e.g. ``"CORPDFS_FBK"``) for a
                per-contrast breakdown; ``None`` uses every volume.

        Returns:
            ``{metric: MetricSummary}`` for each of :attr:`metric_names`.
        """
        rows = [r for r in self.rows if acquisition is None or r.acquisition == acquisition]
        if not rows:
            raise InputError(None, f"no evaluated volume has acquisition {acquisition!r}")
        out = {}
        for name in self.metric_names:
            values = np.array([getattr(r, name) for r in rows], dtype=np.float64)
            # A single value has no sample std; say so with nan instead of dividing by zero. An
            # exact reconstruction's PSNR is +inf, which makes the std nan: no warning for that.
            with np.errstate(invalid="ignore"):
                std = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
            out[name] = MetricSummary(n=len(values), mean=float(np.mean(values)), std=std)
        return out

    # -- serialisation ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything in the result as JSON-ready Python objects (non-finite floats kept)."""
        doc: dict[str, Any] = {
            "kspace_ldm_version": __version__,
            "protocol": _PROTOCOL + ("; " + _LPIPS_PROTOCOL if self.with_lpips else ""),
            "challenge": self.challenge,
            "target_key": TARGET_KEYS[self.challenge],
            "acquisition_filter": self.acquisition,
            "pred_dir": self.pred_dir,
            "target_dir": self.target_dir,
            "metrics": list(self.metric_names),
            "summary": {k: v.as_dict() for k, v in self.summary().items()},
        }
        if len(self.acquisitions) > 1:
            doc["summary_by_acquisition"] = {
                acq: {k: v.as_dict() for k, v in self.summary(acq).items()}
                for acq in self.acquisitions
            }
        rows = [asdict(r) for r in self.rows]
        if not self.with_lpips:
            for r in rows:
                del r["lpips"]
        doc["volumes"] = rows
        doc["skipped"] = list(self.skipped)
        doc["unmatched_predictions"] = list(self.unmatched_predictions)
        return doc

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as strict JSON, atomically.

        Non-finite numbers, which strict JSON cannot hold, are written as ``null``: PSNR of an
        exact reconstruction (+inf) and the std of a single volume (nan).
        """
        text = json.dumps(_finite_or_none(self.to_dict()), indent=2, allow_nan=False)
        atomic_write_text(path, text + "\n")

    def to_csv(self, path: str | Path) -> None:
        """Write one row per volume (full float precision, ``inf`` as ``inf``), atomically.

        Columns: file, acquisition, challenge, slices, maxval, nmse, psnr, ssim[, lpips].
        """
        columns = ["file", "acquisition", "challenge", "slices", "maxval", *self.metric_names]
        rows = (
            [
                "" if v is None else repr(v) if isinstance(v, float) else v
                for v in (getattr(r, c) for c in columns)
            ]
            for r in self.rows
        )
        write_csv(path, columns, rows)

    def format_markdown(self) -> str:
        """A Markdown report: settings, summary (mean, std, mean +/- 2 std) and per-volume rows."""
        names = self.metric_names
        lines = [
            f"## Evaluation ({self.challenge}, target key `{TARGET_KEYS[self.challenge]}`)",
            "",
            f"- predictions: `{self.pred_dir}`",
            f"- targets: `{self.target_dir}`",
            f"- volumes: {len(self.rows)}" + self._filter_note(),
            f"- protocol: {_PROTOCOL}.",
        ]
        if self.with_lpips:
            lines.append(f"- LPIPS: {_LPIPS_PROTOCOL}.")
        summary = [
            [_label(name), _fmt(s.mean), _fmt(s.std), f"{_fmt(s.mean)} ± {_fmt(s.two_std)}"]
            for name, s in self.summary().items()
        ]
        header = ["metric", "mean", "std (ddof=1)", "fastMRI: mean ± 2·std"]
        lines += ["", markdown_table(header, summary)]
        if len(self.acquisitions) > 1:
            by_acq = []
            for acq in self.acquisitions:
                summ = self.summary(acq)
                cells = [f"{_fmt(summ[n].mean)} ± {_fmt(summ[n].two_std)}" for n in names]
                by_acq.append([acq, summ[names[0]].n, *cells])
            header = ["acquisition", "volumes", *map(_label, names)]
            lines += ["", "By acquisition (mean ± 2·std):", "", markdown_table(header, by_acq)]
        per_volume = [
            [r.file, r.acquisition or "", r.slices, *(_fmt(getattr(r, n)) for n in names)]
            for r in self.rows
        ]
        header = ["file", "acquisition", "slices", *map(_label, names)]
        lines += ["", markdown_table(header, per_volume)]
        return "\n".join(lines) + "\n"

    def to_markdown(self, path: str | Path) -> None:
        """Write :meth:`format_markdown` atomically."""
        atomic_write_text(path, self.format_markdown())

    def format_table(self) -> str:
        """A fixed-width table for the terminal: per-volume rows, then the summary."""
        names = self.metric_names
        file_w = max([4, *(len(r.file) for r in self.rows)])
        acq_w = max([11, *(len(r.acquisition or "") for r in self.rows)])
        head = f"{'file':<{file_w}}  {'acquisition':<{acq_w}}  {'slices':>6}"
        head += "".join(f"  {_label(n):>10}" for n in names)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            line = f"{r.file:<{file_w}}  {r.acquisition or '':<{acq_w}}  {r.slices:>6}"
            line += "".join(f"  {_fmt(getattr(r, n)):>10}" for n in names)
            lines.append(line)
        lines.append("-" * len(head))
        summ = self.summary()
        for label, key in (("mean", "mean"), ("std (ddof=1)", "std"), ("2*std", "two_std")):
            line = f"{label:<{file_w + acq_w + 10}}"
            line += "".join(f"  {_fmt(getattr(summ[n], key)):>10}" for n in names)
            lines.append(line)
        lines.append("")
        # The line fastMRI's evaluate.py prints, for copying into comparisons with it.
        lines.append(
            "fastMRI style: "
            + " ".join(
                f"{_label(n)} = {_fmt(summ[n].mean)} +/- {_fmt(summ[n].two_std)}" for n in names
            )
        )
        lines.append(
            f"{len(self.rows)} volumes, {self.challenge} ({TARGET_KEYS[self.challenge]})"
            + self._filter_note()
        )
        return "\n".join(lines)

    def _filter_note(self) -> str:
        notes = []
        if self.acquisition is not None:
            notes.append(f"acquisition {self.acquisition}, {len(self.skipped)} other(s) skipped")
        if self.unmatched_predictions:
            notes.append(f"{len(self.unmatched_predictions)} prediction file(s) without target")
        return f" ({'; '.join(notes)})" if notes else ""


def _label(name: str) -> str:
    return _LABELS.get(name, name)


def _fmt(value: float | None) -> str:
    """Four significant digits, as fastMRI prints; ``n/a`` for a missing or nan value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}"


def _finite_or_none(obj: Any) -> Any:
    """Replace non-finite floats by None, recursively (strict JSON has no inf/nan)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def _open_h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"cannot be opened as HDF5 ({err})") from None


def _attr_str(value: Any) -> str | None:
    """An HDF5 string attribute as ``str`` (h5py may return bytes or numpy bytes)."""
    if value is None:
        return None
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _target_challenge(f: h5py.File, path: Path, challenge: str | None) -> str:
    """Which challenge (hence target key) a target file is evaluated under."""
    if challenge is not None:
        if TARGET_KEYS[challenge] not in f:
            raise InputError(
                path, f"missing HDF5 key '{TARGET_KEYS[challenge]}' (challenge {challenge})"
            )
        return challenge
    present = [c for c, key in TARGET_KEYS.items() if key in f]
    if len(present) == 1:
        return present[0]
    if not present:
        raise InputError(
            path,
            "has neither 'reconstruction_esc' nor 'reconstruction_rss' "
            "(fastMRI test files carry no ground truth)",
        )
    # Single-coil files carry both keys; the k-space rank tells the challenges apart.
    rank = f["kspace"].ndim if isinstance(f.get("kspace"), h5py.Dataset) else None
    if rank == 3:
        return "singlecoil"
    if rank == 4:
        return "multicoil"
    raise InputError(
        path,
        "has both target keys and no 'kspace' of rank 3 or 4 to tell the challenge; "
        "pass the challenge (singlecoil or multicoil)",
    )


def _read_volume(f: h5py.File, key: str, path: Path, what: str) -> np.ndarray:
    """Read dataset ``key`` as a real, finite [slices, H, W] array, or raise InputError."""
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        raise InputError(path, f"missing HDF5 key '{key}'")
    if obj.ndim != 3:
        raise InputError(path, f"'{key}' has shape {obj.shape}; expected [slices, H, W]")
    if obj.dtype.kind not in "fiu":
        raise InputError(path, f"'{key}' has dtype {obj.dtype}; expected real {what} images")
    arr = obj[()]
    _metrics._check_values(arr, f"'{key}'", path)
    return arr


def _center_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Central ``height`` x ``width`` window of the last two axes (fastMRI's offsets: the extra
    row/column of an odd difference stays at the end)."""
    top = (arr.shape[-2] - height) // 2
    left = (arr.shape[-1] - width) // 2
    return arr[..., top : top + height, left : left + width]


@dataclass(frozen=True)
class _Planned:
    target: Path
    pred: Path
    challenge: str
    acquisition: str | None


def _h5_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".h5" and p.is_file())


def _plan(
    pred_dir: Path, target_dir: Path, challenge: str | None, acquisition: str | None
) -> tuple[list[_Planned], list[str], list[str]]:
    """Decide which volumes to evaluate (reading only metadata) and check predictions exist."""
    targets = _h5_files(target_dir)
    if not targets:
        raise InputError(target_dir, "contains no .h5 target files")
    planned, skipped, seen_acq = [], [], set()
    for tgt in targets:
        with _open_h5(tgt) as f:
            acq = _attr_str(f.attrs.get("acquisition"))
            if acquisition is not None:
                if acq is None:
                    raise InputError(
                        tgt,
                        "has no 'acquisition' attribute, so the acquisition filter cannot apply",
                    )
                seen_acq.add(acq)
                if acq != acquisition:
                    skipped.append(tgt.name)
                    continue
            chal = _target_challenge(f, tgt, challenge)
        planned.append(_Planned(tgt, pred_dir / tgt.name, chal, acq))
    if not planned:
        raise InputError(
            target_dir,
            f"no target file has acquisition {acquisition!r} "
            f"(found: {', '.join(sorted(seen_acq))})",
        )
    challenges = sorted({p.challenge for p in planned})
    if len(challenges) > 1:
        raise InputError(
            target_dir,
            "mixes singlecoil and multicoil targets; evaluate them separately "
            "or pass the challenge",
        )
    missing = [p for p in planned if not p.pred.is_file()]
    if missing:
        more = (
            f" ({len(missing)} of {len(planned)} targets have no prediction)"
            if len(missing) > 1
            else ""
        )
        raise InputError(
            missing[0].pred, f"missing prediction for target {missing[0].target}{more}"
        )
    target_names = {t.name for t in targets}
    unmatched = [p.name for p in _h5_files(pred_dir) if p.name not in target_names]
    return planned, skipped, unmatched


def _evaluate_volume(item: _Planned, with_lpips: bool) -> VolumeMetrics:
    key = TARGET_KEYS[item.challenge]
    with _open_h5(item.target) as f:
        target = _read_volume(f, key, item.target, "target")
    with _open_h5(item.pred) as f:
        pred = _read_volume(f, PRED_KEY, item.pred, "reconstructed")

    # fastMRI crops both to a square of the target's width (320 x 320 for knee).
    width = target.shape[-1]
    if target.shape[-2] < width:
        raise InputError(
            item.target,
            f"'{key}' is {target.shape[-2]}x{width}; cannot centre-crop it to {width}x{width}",
        )
    if pred.shape[0] != target.shape[0]:
        raise InputError(
            item.pred,
            f"'{PRED_KEY}' has {pred.shape[0]} slices but the target has {target.shape[0]}",
        )
    if min(pred.shape[-2:]) < width:
        raise InputError(
            item.pred,
            f"'{PRED_KEY}' is {pred.shape[-2]}x{pred.shape[-1]}, smaller than the "
            f"{width}x{width} evaluation crop",
        )
    target = _center_crop(target, width, width)
    pred = _center_crop(pred, width, width)

    maxval = target.max()  # kept as the array's scalar type: the SSIM constants inherit it
    if not maxval > 0:
        raise InputError(item.target, f"'{key}' has max {maxval}; metrics need a positive max")
    src = item.pred
    return VolumeMetrics(
        file=item.target.name,
        acquisition=item.acquisition,
        challenge=item.challenge,
        slices=int(target.shape[0]),
        maxval=float(maxval),
        nmse=_metrics.nmse(target, pred, source=src),
        psnr=_metrics.psnr(target, pred, maxval, source=src),
        ssim=_metrics.ssim(target, pred, maxval, source=src),
        lpips=_metrics.lpips_volume(target, pred, maxval, source=src) if with_lpips else None,
    )


def evaluate_folders(
    pred_dir: str | Path,
    target_dir: str | Path,
    *,
    challenge: str | None = None,
    acquisition: str | None = None,
    lpips: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate every target volume of ``target_dir`` against its prediction in ``pred_dir``.

    Args:
        pred_dir: folder of fastMRI submission files: ``<name>.h5`` with dataset
            ``reconstruction``, [slices, H, W] real (float32 as written by fastMRI), H and W at
            least the target width.
        target_dir: folder of fastMRI files with ground truth ``reconstruction_esc`` and/or
            ``reconstruction_rss`` [slices, H, W]; every ``*.h5`` there is a target.
        challenge: ``"singlecoil"`` (``reconstruction_esc``) or ``"multicoil"``
            (``reconstruction_rss``); ``None`` decides per file: the only target key present,
            else the k-space rank (3: single-coil, 4: multi-coil).
        acquisition: evaluate only targets whose ``attrs['acquisition']`` equals this (e.g.
            ``"CORPD_FBK"``); the others are listed in ``skipped``.
        lpips: also compute LPIPS (AlexNet); raises at once if LPIPS cannot run here.
        progress: show a progress bar on stderr.

    Returns:
        The :class:`EvaluationResult`, rows sorted by file name.

    Raises:
        InputError: a folder is missing or has no targets; a target has no prediction; a file is
            not HDF5, lacks its key, has the wrong rank/size/slice count, or holds NaN/Inf; no
            target matches ``acquisition``; the folder mixes challenges.
        kspace_ldm.metrics.MetricUnavailableError: ``lpips`` is set but LPIPS cannot run.
    """
    pred_dir, target_dir = Path(pred_dir), Path(target_dir)
    if challenge is not None and challenge not in TARGET_KEYS:
        raise InputError(
            None, f"unknown challenge {challenge!r}; expected one of {', '.join(CHALLENGES)}"
        )
    for folder, what in ((pred_dir, "prediction"), (target_dir, "target")):
        if not folder.is_dir():
            raise InputError(folder, f"{what} folder does not exist or is not a directory")
    if lpips:
        ok, reason = _metrics.lpips_status()
        if not ok:
            raise _metrics.MetricUnavailableError(reason)

    planned, skipped, unmatched = _plan(pred_dir, target_dir, challenge, acquisition)
    items: Sequence[_Planned] = planned
    bar = None
    if progress:
        from tqdm import tqdm

        items = bar = tqdm(planned, desc="evaluate", unit="vol", file=sys.stderr)
    try:
        rows = [_evaluate_volume(item, lpips) for item in items]
    finally:
        if bar is not None:
            # closed (ending its line) before an error propagates: the CLI's one-line error
            # then starts a line of its own instead of trailing the progress bar
            bar.close()
    return EvaluationResult(
        rows=rows,
        pred_dir=str(pred_dir),
        target_dir=str(target_dir),
        challenge=planned[0].challenge,
        acquisition=acquisition,
        with_lpips=lpips,
        skipped=skipped,
        unmatched_predictions=unmatched,
    )
