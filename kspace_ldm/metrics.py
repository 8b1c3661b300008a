"""Image-quality metrics of the fastMRI evaluation protocol (NMSE, PSNR, SSIM) plus LPIPS.

All volume metrics take a target ``gt`` and a reconstruction ``pred`` of shape ``[slices, H, W]``
(real, any float or integer dtype) and return one Python ``float`` for the whole volume, with the
semantics of ``fastmri.evaluate`` (facebookresearch/fastMRI):

* :func:`nmse` -- ``||gt - pred||^2 / ||gt||^2`` over the whole volume.
* :func:`psnr` -- ``10 log10(maxval^2 / MSE)`` over the whole volume, ``maxval = gt.max()`` by
  default, as ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=maxval)``.
* :func:`ssim` -- the mean over slices of the per-slice SSIM of
  ``skimage.metrics.structural_similarity(gt[s], pred[s], data_range=maxval)`` with skimage's
  defaults: 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), averaged
  over the interior where the window fits (skimage crops (7 - 1) // 2 = 3 pixels at each border,
  so its reflect padding never reaches the mean). ``maxval`` is the *volume* max, not the slice
  max.

scikit-image is not a runtime dependency: the SSIM here is a vectorised "valid" 7x7 box filter
(window sums accumulated in float64, one vectorised add per window offset). It follows skimage's
precision rules (float32 arithmetic for float16 or float32 targets, float64 otherwise), so it
reproduces the official numbers (to ~1e-13 on float32 volumes) rather than a more precise variant
of them, which would differ by up to ~3e-7; the tests check it against skimage and
``fastmri.evaluate``.

LPIPS (:func:`lpips_volume`) needs the optional ``lpips`` and ``torchvision`` packages and the
backbone's ImageNet weights already in torch hub's cache. Nothing here ever downloads:
:func:`lpips_status` says whether LPIPS can run and, if not, why.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from kspace_ldm.errors import InputError, KldmError

__all__ = [
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_WIN_SIZE",
    "MetricUnavailableError",
    "lpips_status",
    "lpips_volume",
    "nmse",
    "psnr",
    "ssim",
    "ssim_map",
    "ssim_per_slice",
]

# skimage.metrics.structural_similarity defaults, which fastmri.evaluate.ssim relies on.
SSIM_WIN_SIZE = 7
SSIM_K1 = 0.01
SSIM_K2 = 0.03


class MetricUnavailableError(KldmError):
    """A metric cannot be computed in this environment (e.g. LPIPS without its weights).

    ``str(err)`` is a one-line reason that says what is missing and how to provide it.
    """


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _as_volume(x: Any, name: str, source: str | Path | None) -> np.ndarray:
    """Return ``x`` as a real ndarray of shape [slices, H, W], or raise InputError."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise InputError(source, f"{name} has dtype {arr.dtype}; expected a real-valued array")
    if arr.ndim != 3:
        raise InputError(
            source, f"{name} has shape {arr.shape}; expected [slices, H, W] (3 dimensions)"
        )
    _check_values(arr, name, source)
    return arr


def _check_values(arr: np.ndarray, name: str, source: str | Path | None) -> None:
    """Raise InputError if ``arr`` is empty or holds NaN or Inf."""
    if arr.size == 0:
        raise InputError(source, f"{name} is empty (shape {arr.shape})")
    if arr.dtype.kind == "f":
        n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if n_bad:
            raise InputError(source, f"{name} contains {n_bad} non-finite values (NaN or Inf)")


def _check_pair(gt: Any, pred: Any, source: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (target, prediction) pair of volumes; return them as ndarrays."""
    gt = _as_volume(gt, "target", source)
    pred = _as_volume(pred, "prediction", source)
    if gt.shape != pred.shape:
        raise InputError(
            source, f"prediction shape {pred.shape} does not match target shape {gt.shape}"
        )
    return gt, pred


def _data_range(gt: np.ndarray, maxval: Any, source: str | Path | None) -> Any:
    """Return the data range: ``maxval`` if given, else the target volume max (``gt.max()``).

    The value is returned with its own type (e.g. ``np.float32`` from a float32 ``gt.max()``),
    because skimage's SSIM constants inherit that type and the result must match it bit for bit.
    """
    what = "maxval"
    if maxval is None:
        maxval = gt.max()
        what = "maxval (the target volume max)"
    value = float(maxval)
    if not np.isfinite(value) or value <= 0:
        raise InputError(source, f"{what} must be a finite positive number, got {value!r}")
    return maxval


def _skimage_float_type(*dtypes: np.dtype) -> type[np.floating]:
    """The float type skimage computes in: float32 if every input is float16/float32, else float64.

    (skimage's ``_supported_float_type``: float16 and float32 become float32; everything else,
    integers included, becomes float64.)
    """
    if all(np.dtype(d) in (np.dtype(np.float16), np.dtype(np.float32)) for d in dtypes):
        return np.float32
    return np.float64


# ---------------------------------------------------------------------------------------------
# NMSE / PSNR
# ---------------------------------------------------------------------------------------------


def nmse(gt: Any, pred: Any, *, source: str | Path | None = None) -> float:
    """Normalised MSE ``||gt - pred||^2 / ||gt||^2`` over the whole volume.

    Args:
        gt: target volume, [slices, H, W], real.
        pred: reconstruction, same shape.
        source: file named in error messages.

    Returns:
        The NMSE as a float (0 for a perfect reconstruction). Accumulated in float64:
        ``fastmri.evaluate.nmse`` accumulates float32 inputs in float32 (``np.linalg.norm`` ->
        BLAS ``sdot``), so on float32 volumes the two differ by that rounding (relative ~1e-6),
        and the float64 value is the more accurate one.

    Raises:
        InputError: wrong rank, shape mismatch, non-finite values, or an all-zero target.
    """
    gt, pred = _check_pair(gt, pred, source)
    g = gt.astype(np.float64, copy=False).ravel()
    d = g - pred.astype(np.float64, copy=False).ravel()
    denom = float(np.dot(g, g))
    if denom == 0.0:
        raise InputError(source, "target is all zeros; NMSE is undefined")
    return float(np.dot(d, d)) / denom


def psnr(gt: Any, pred: Any, maxval: Any = None, *, source: str | Path | None = None) -> float:
    """Peak signal-to-noise ratio in dB over the whole volume.

    Same as ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=maxval)`` (what
    ``fastmri.evaluate.psnr`` calls): the difference is taken in skimage's float type (float32
    for float32 inputs), squared, and averaged in float64.

    Args:
        gt: target volume, [slices, H, W], real.
        pred: reconstruction, same shape.
        maxval: data range; ``None`` uses the target volume max ``gt.max()`` (fastMRI).
        source: file named in error messages.

    Returns:
        PSNR in dB; ``float('inf')`` when ``pred`` equals ``gt`` exactly (zero MSE), where
        skimage would divide by zero with a RuntimeWarning.

    Raises:
        InputError: wrong rank, shape mismatch, non-finite values, or maxval not > 0.
    """
    gt, pred = _check_pair(gt, pred, source)
    data_range = float(_data_range(gt, maxval, source))
    ft = _skimage_float_type(gt.dtype, pred.dtype)
    diff = gt.astype(ft, copy=False) - pred.astype(ft, copy=False)
    mse = float(np.mean(diff * diff, dtype=np.float64))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(data_range**2 / mse))


# ---------------------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------------------


def _box_valid(x: np.ndarray, size: int, axis: int, out_type: type[np.floating]) -> np.ndarray:
    """Mean over a length-``size`` window along ``axis`` at every position where it fits.

    Output length along ``axis`` is ``n - size + 1``. Each window is summed directly in float64
    (``size`` shifted, vectorised adds: no prefix-sum cancellation, and several times faster than
    ``np.cumsum`` here) and divided by ``size`` in float64, as scipy's ``uniform_filter1d`` does
    with its double accumulator; the means are then rounded to ``out_type``, which is what
    skimage stores between its two filter passes.
    """
    axis = axis % x.ndim
    m = x.shape[axis] - size + 1

    def shifted(i: int) -> np.ndarray:
        return x[(slice(None),) * axis + (slice(i, i + m),)]

    acc = shifted(0).astype(np.float64)
    for i in range(1, size):
        acc += shifted(i)
    acc /= size
    return acc.astype(out_type, copy=False)


def _box2d_valid(x: np.ndarray, size: int, out_type: type[np.floating]) -> np.ndarray:
    """Valid ``size`` x ``size`` uniform mean over the last two axes: [..., H, W] ->
    [..., H - size + 1, W - size + 1]. Rows first, then columns, in the axis order of
    ``scipy.ndimage.uniform_filter``.
    """
    return _box_valid(_box_valid(x, size, -2, out_type), size, -1, out_type)


def _ssim_map_chunk(
    x: np.ndarray, y: np.ndarray, data_range: Any, ft: type[np.floating]
) -> np.ndarray:
    """SSIM map of [n, H, W] arrays already in the float type ``ft`` (see :func:`ssim_map`)."""
    # This mirrors skimage's arithmetic expression by expression, in the same float type and
    # with the same scalar types, so the maps agree to within a few float32 ulps.
    ux = _box2d_valid(x, SSIM_WIN_SIZE, ft)
    uy = _box2d_valid(y, SSIM_WIN_SIZE, ft)
    uxx = _box2d_valid(x * x, SSIM_WIN_SIZE, ft)
    uyy = _box2d_valid(y * y, SSIM_WIN_SIZE, ft)
    uxy = _box2d_valid(x * y, SSIM_WIN_SIZE, ft)
    n_px = SSIM_WIN_SIZE**2
    cov_norm = n_px / (n_px - 1)  # unbiased (sample) covariance, skimage's default
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    a1 = 2 * ux * uy + c1
    a2 = 2 * vxy + c2
    b1 = ux**2 + uy**2 + c1
    b2 = vx + vy + c2
    return (a1 * a2) / (b1 * b2)


# Slices per SSIM chunk are chosen so one float64 temporary stays around 4 MB (cache-friendly:
# whole-volume temporaries made the computation ~3x slower).
_SSIM_CHUNK_ELEMENTS = 1 << 19


def ssim_map(
    gt: Any, pred: Any, maxval: Any = None, *, source: str | Path | None = None
) -> np.ndarray:
    """Local SSIM of every slice over the interior where the 7x7 window fits.

    Args:
        gt: target volume, [slices, H, W], real, H and W >= 7.
        pred: reconstruction, same shape.
        maxval: data range; ``None`` uses the target volume max ``gt.max()`` (fastMRI).
        source: file named in error messages.

    Returns:
        [slices, H - 6, W - 6] array, float32 for float16/float32 targets, else float64 (a
        NumPy float64 ``maxval`` promotes float32 arithmetic to float64, as in skimage). It
        equals ``structural_similarity(gt[s], pred[s], data_range=maxval, full=True)[1]`` cropped
        by 3 pixels on each side, i.e. exactly the values skimage averages.

    Raises:
        InputError: wrong rank, shape mismatch, non-finite values, slices smaller than 7x7, or
            maxval not > 0.
    """
    gt, pred = _check_pair(gt, pred, source)
    if min(gt.shape[-2:]) < SSIM_WIN_SIZE:
        raise InputError(
            source,
            f"slices of {gt.shape[-2]}x{gt.shape[-1]} are smaller than the "
            f"{SSIM_WIN_SIZE}x{SSIM_WIN_SIZE} SSIM window",
        )
    data_range = _data_range(gt, maxval, source)
    # skimage picks the float type from the first image only and casts the second to it.
    ft = _skimage_float_type(gt.dtype)
    x = gt.astype(ft, copy=False)
    y = pred.astype(ft, copy=False)

    step = max(1, _SSIM_CHUNK_ELEMENTS // (gt.shape[1] * gt.shape[2]))
    # Concatenated rather than written into a preallocated array: a float64 ``maxval`` promotes
    # the float32 arithmetic to float64 in skimage too, and the result keeps that type.
    return np.concatenate(
        [
            _ssim_map_chunk(x[i : i + step], y[i : i + step], data_range, ft)
            for i in range(0, gt.shape[0], step)
        ]
    )


def ssim_per_slice(
    gt: Any, pred: Any, maxval: Any = None, *, source: str | Path | None = None
) -> np.ndarray:
    """SSIM of each slice, with one shared data range (the volume max by default).

    Args/Raises: as :func:`ssim_map`.

    Returns:
        [slices] float64 array: ``structural_similarity(gt[s], pred[s], data_range=maxval)``.
    """
    return ssim_map(gt, pred, maxval, source=source).mean(axis=(-2, -1), dtype=np.float64)


def ssim(gt: Any, pred: Any, maxval: Any = None, *, source: str | Path | None = None) -> float:
    """Volume SSIM as ``fastmri.evaluate.ssim``: the mean of the per-slice SSIMs.

    Args:
        gt: target volume, [slices, H, W], real, H and W >= 7.
        pred: reconstruction, same shape.
        maxval: data range; ``None`` uses the target volume max ``gt.max()`` (fastMRI).
        source: file named in error messages.

    Returns:
        Mean SSIM over slices (1.0 for identical volumes).

    Raises:
        InputError: see :func:`ssim_map`.
    """
    return float(ssim_per_slice(gt, pred, maxval, source=source).mean())


# ---------------------------------------------------------------------------------------------
# LPIPS
# ---------------------------------------------------------------------------------------------

# Backbone checkpoints that the lpips package makes torchvision load, by lpips ``net`` name. The
# names are asked from torchvision when it knows them; these are the fallbacks (URL basenames of
# torchvision's IMAGENET1K_V1 weights).
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
_BACKBONE_WEIGHTS_ENUM = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}
_LPIPS_VERSION = "0.1"

# Built LPIPS networks, by (net, device): building one reads ~10-500 MB of weights.
_LPIPS_MODELS: dict[tuple[str, str], Any] = {}


def _backbone_checkpoint(torchvision: Any, net: str) -> Path:
    """Path where torch hub caches the backbone weights LPIPS(net) loads."""
    import torch

    name = _BACKBONE_FILES[net]
    try:
        weights = getattr(torchvision.models, _BACKBONE_WEIGHTS_ENUM[net]).IMAGENET1K_V1
        name = str(weights.url).rsplit("/", 1)[-1]
    except AttributeError:
        pass  # torchvision < 0.13 (or a stub): use the known file name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    """Say whether LPIPS can run here without downloading anything.

    Checks, in order: ``torchvision`` imports; ``lpips`` imports; the lpips package ships its
    linear-layer weights (``lpips/weights/v0.1/<net>.pth``); the ImageNet backbone weights are in
    torch hub's cache (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` for AlexNet),
    where torchvision looks before it would download. Nothing is downloaded or built.

    Args:
        net: LPIPS backbone, ``"alex"`` (the standard LPIPS) or ``"vgg"``.

    Returns:
        ``(True, description)`` if :func:`lpips_volume` can run, else ``(False, reason)`` where
        reason is one line saying what is missing and how to provide it.
    """
    if net not in _BACKBONE_FILES:
        return False, f"unknown LPIPS network {net!r}; expected one of {sorted(_BACKBONE_FILES)}"
    try:
        torchvision = importlib.import_module("torchvision")
    except Exception as err:  # ImportError, or a torch/torchvision build mismatch
        return False, (
            f"LPIPS needs torchvision, which cannot be imported ({type(err).__name__}: {err}); "
            "install a torchvision build matching this torch (pip install 'kspace-ldm[lpips]')"
        )
    try:
        lpips = importlib.import_module("lpips")
    except Exception as err:
        return False, (
            f"LPIPS needs the 'lpips' package, which cannot be imported "
            f"({type(err).__name__}: {err}); pip install 'kspace-ldm[lpips]'"
        )
    pkg_file = getattr(lpips, "__file__", None)
    if pkg_file is None:
        return False, "the 'lpips' module found is not the lpips package (it has no __file__)"
    lin_weights = Path(pkg_file).parent / "weights" / f"v{_LPIPS_VERSION}" / f"{net}.pth"
    if not lin_weights.is_file():
        return False, f"the lpips package lacks its linear-layer weights {lin_weights}"
    backbone = _backbone_checkpoint(torchvision, net)
    if not backbone.is_file():
        return False, (
            f"LPIPS backbone weights not found at {backbone}; kspace-ldm never downloads them. "
            f"Copy {backbone.name} (https://download.pytorch.org/models/{backbone.name}) there, "
            "or set TORCH_HOME to a directory whose hub/checkpoints has it"
        )
    version = getattr(lpips, "__version__", "unknown")
    return True, f"LPIPS v{_LPIPS_VERSION} ({net}) ready: lpips {version}, backbone {backbone}"


def _lpips_model(net: str, device: str) -> Any:
    """The LPIPS network for ``net`` on ``device`` (built once per process, in eval mode)."""
    key = (net, device)
    if key not in _LPIPS_MODELS:
        lpips = importlib.import_module("lpips")
        # lpips_status() has confirmed the backbone file is in the hub cache, so torchvision loads
        # it from there instead of downloading.
        model = lpips.LPIPS(net=net, version=_LPIPS_VERSION, verbose=False)
        _LPIPS_MODELS[key] = model.eval().to(device)
    return _LPIPS_MODELS[key]


def lpips_volume(
    gt: Any,
    pred: Any,
    maxval: Any = None,
    *,
    net: str = "alex",
    device: str | None = None,
    batch_size: int = 8,
    source: str | Path | None = None,
) -> float:
    """Mean LPIPS distance over the slices of a volume.

    Each slice is mapped with one fixed linear scaling ``v -> 2 v / maxval - 1`` (so [0, maxval]
    becomes LPIPS's [-1, 1]; values outside are not clipped, so overshoot still counts) and the
    grey image is replicated to 3 channels. There is deliberately no per-image min-max scaling:
    that would hide intensity errors and make the score depend on each image's extremes.

    Args:
        gt: target volume, [slices, H, W], real.
        pred: reconstruction, same shape.
        maxval: intensity mapped to +1; ``None`` uses the target volume max (as PSNR/SSIM).
        net: LPIPS backbone, ``"alex"`` (standard) or ``"vgg"``.
        device: torch device; ``None`` picks ``"cuda"`` when available, else ``"cpu"``.
        batch_size: slices per forward pass.
        source: file named in error messages.

    Returns:
        The mean over slices of LPIPS(gt[s], pred[s]) as a float (0 for identical slices).

    Raises:
        MetricUnavailableError: LPIPS cannot run here (the reason says why); never downloads.
        InputError: bad volumes or maxval (see :func:`psnr`).
    """
    gt, pred = _check_pair(gt, pred, source)
    data_range = float(_data_range(gt, maxval, source))
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    ok, reason = lpips_status(net)
    if not ok:
        raise MetricUnavailableError(reason)

    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _lpips_model(net, str(device))
    scale = 2.0 / data_range

    def to_input(v: np.ndarray) -> torch.Tensor:
        # [n, H, W] -> [n, 3, H, W] float32 in LPIPS's [-1, 1]; scaled in float64 first.
        t = torch.from_numpy(np.ascontiguousarray(v.astype(np.float64) * scale - 1.0))
        return t.to(device=device, dtype=torch.float32)[:, None].expand(-1, 3, -1, -1)

    values = []
    with torch.inference_mode():
        for start in range(0, gt.shape[0], batch_size):
            stop = start + batch_size
            dist = model(to_input(gt[start:stop]), to_input(pred[start:stop]))
            values.append(dist.reshape(-1).double().cpu())
    return float(torch.cat(values).mean())
