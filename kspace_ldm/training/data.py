"""First-stage training data: fastMRI-format slices, augmentation, and a resumable batch order.

Samples come from :class:`~kspace_ldm.data.fastmri.SliceDataset` (lazy, one slice per read,
fork-safe file handles). Augmentation happens in the *image* domain, where it is physically
meaningful: the complex coil images ``ifft2c(k)`` are randomly flipped and/or cropped, and the
result is transformed back with ``fft2c``. (A "crop" of k-space would be a low-pass filter, and a
flip of a centred k-space array is not an image flip for even sizes.) A crop over the readout
direction is also how fastMRI's 2x readout oversampling is removed cheaply.

Determinism for exact resume: the batch order is a pure function of ``(seed, step)``
(:class:`StepBatchSampler`), and each sample's augmentation draws from a generator seeded by
``(seed, sample key)``, where the key encodes the epoch and the index. So a run resumed at step
``s`` sees exactly the batches an uninterrupted run sees from ``s`` on, whatever the number of
loader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.fastmri import SliceDataset, SliceSample
from ..errors import InputError
from ..physics.fft import fft2c, ifft2c
from ..physics.transforms import kspace_to_image

__all__ = ["FirstStageDataset", "KspaceItem", "StepBatchSampler", "collate"]


@dataclass
class KspaceItem:
    """One training/validation example.

    Attributes:
        kspace: complex64 ``[C, H, W]`` fully sampled k-space (``C = 1`` single-coil).
        target: float32 ``[h, w]`` magnitude/RSS target image.
        crop: ``(h, w)``, the image crop used for the image-domain terms and metrics.
        max_value: data range for PSNR/SSIM (the volume's ``max`` attribute when present).
        fname: file name; ``slice_num``: slice index.
    """

    kspace: torch.Tensor
    target: torch.Tensor
    crop: tuple[int, int]
    max_value: float
    fname: str
    slice_num: int


class FirstStageDataset(torch.utils.data.Dataset):
    """Slices of a fastMRI-format folder as :class:`KspaceItem`.

    Args:
        root: folder of ``*.h5`` volumes (or one file).
        challenge: ``singlecoil`` / ``multicoil`` / ``None`` (from each file).
        crop: image-domain training crop ``(h, w)`` at a random position, or ``None``.
        flip: random horizontal and vertical flips (each with probability 1/2).
        coil_phase: multi-coil only: multiply each coil by a random phase ``exp(i phi_c)``
            (``phi_c`` uniform in ``[0, 2 pi)``) and shuffle the coil order. The RSS target is
            unchanged; the network sees more coil configurations than the training volumes have.
        seed: augmentation seed.
        max_slices: use at most this many slices (0 = all), evenly spaced over the dataset.
        train: augment (training) or not (validation: the file's target is used when present).

    Index ``i`` may exceed ``len(self)``: ``i % len`` is the slice and ``i`` itself keys the
    augmentation, so :class:`StepBatchSampler` can pass ``epoch * len + index``.
    """

    def __init__(
        self,
        root: str,
        challenge: str | None = None,
        crop: tuple[int, int] | None = None,
        flip: bool = False,
        seed: int = 0,
        max_slices: int = 0,
        train: bool = True,
        coil_phase: bool = False,
    ):
        if not root:
            raise InputError("data", "no data folder given (data.train / data.val)")
        self.slices = SliceDataset(root, challenge=challenge)
        n = len(self.slices)
        if n == 0:
            raise InputError(root, "no slices found")
        if max_slices and max_slices < n:
            self.indices = np.linspace(0, n - 1, max_slices).round().astype(int).tolist()
        else:
            self.indices = list(range(n))
        self.crop = None if crop is None else (int(crop[0]), int(crop[1]))
        self.flip = bool(flip)
        self.coil_phase = bool(coil_phase)
        self.seed = int(seed)
        self.train = bool(train)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: int) -> KspaceItem:
        sample: SliceSample = self.slices[self.indices[key % len(self.indices)]]
        k = sample.kspace
        if k.dim() == 2:
            k = k[None]
        recon = _recon_size(sample)
        augment = self.train and (self.crop is not None or self.flip or self.coil_phase)
        if augment:
            rng = np.random.default_rng([self.seed, int(key), 0xA06])
            image = ifft2c(k)
            if self.flip:
                dims = [
                    d for d, flip in ((-2, rng.random() < 0.5), (-1, rng.random() < 0.5)) if flip
                ]
                if dims:
                    image = torch.flip(image, dims)
            if self.crop is not None:
                h, w = self.crop
                H, W = image.shape[-2:]
                if h > H or w > W:
                    raise InputError(
                        sample.fname, f"data.crop {list(self.crop)} exceeds the k-space {H}x{W}"
                    )
                top = int(rng.integers(0, H - h + 1))
                left = int(rng.integers(0, W - w + 1))
                image = image[..., top : top + h, left : left + w]
            k = fft2c(image.contiguous()).to(torch.complex64)
            if self.coil_phase and k.shape[0] > 1:
                phi = torch.from_numpy(rng.uniform(0.0, 2 * np.pi, k.shape[0]))
                order = torch.from_numpy(rng.permutation(k.shape[0]))
                k = (k * torch.polar(torch.ones_like(phi), phi).to(k.dtype)[:, None, None])[order]
        crop = (min(recon[0], k.shape[-2]), min(recon[1], k.shape[-1]))
        if augment or sample.target is None:
            target = kspace_to_image(k[None], crop=crop, coil_dim=1)[0]
        else:
            target = sample.target
            crop = tuple(target.shape[-2:])
        max_value = sample.max_value
        if max_value is None or augment:
            max_value = float(target.max())
        return KspaceItem(
            kspace=k.contiguous(),
            target=target.float(),
            crop=crop,
            max_value=float(max_value),
            fname=sample.fname,
            slice_num=sample.slice_num,
        )


def _recon_size(sample: SliceSample) -> tuple[int, int]:
    if sample.target is not None:
        return tuple(sample.target.shape[-2:])
    rs = getattr(sample.header, "recon_size", None)
    if rs is not None:
        return int(rs[0]), int(rs[1])
    return tuple(sample.kspace.shape[-2:])


def check_same_coils(*datasets: FirstStageDataset | None) -> int:
    """The coil count shared by every volume of ``datasets`` (train, then val); a one-line
    :class:`InputError` naming the first volume that differs otherwise. Read from the index
    (shapes only), so it runs before the run directory is created."""
    first: tuple[Path, int] | None = None
    for ds in datasets:
        if ds is None:
            continue
        for info in ds.slices._infos:
            shape = info.kspace_shape
            coils = int(shape[1]) if len(shape) == 4 else 1
            if first is None:
                first = (info.path, coils)
            elif coils != first[1]:
                raise InputError(
                    info.path,
                    f"{coils} coil(s), but {first[0]} has {first[1]}: every training and "
                    "validation volume needs the same coil count",
                )
    return 1 if first is None else first[1]


def collate(items: list[KspaceItem]) -> dict:
    """Stack items of equal k-space size into a batch dict.

    Returns ``{"kspace": [B, C, H, W] complex64, "target": [B, h, w], "crop": (h, w),
    "max_value": [B] float64, "fname": [...], "slice_num": [...]}``.
    """
    shapes = {tuple(it.kspace.shape) for it in items}
    if len(shapes) > 1:
        raise InputError(
            "data",
            f"slices of different sizes {sorted(shapes)} cannot share a batch: set data.crop "
            "to a fixed [h, w] or use batch_size 1",
        )
    crops = {it.crop for it in items}
    if len(crops) > 1:
        raise InputError("data", f"targets of different sizes {sorted(crops)} in one batch")
    return {
        "kspace": torch.stack([it.kspace for it in items]),
        "target": torch.stack([it.target for it in items]),
        "crop": items[0].crop,
        "max_value": torch.tensor([it.max_value for it in items], dtype=torch.float64),
        "fname": [it.fname for it in items],
        "slice_num": [it.slice_num for it in items],
    }


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches as a pure function of the training step (exact resume, DDP sharding).

    Epoch ``e`` is a permutation of the ``n`` indices drawn from ``(seed, e)``, truncated to a
    multiple of ``world_size * batch_size`` (drop-last: every rank gets the same number of full
    batches); rank ``r`` takes every ``world_size``-th index from position ``r``. Iteration starts
    at ``start_step`` and yields ``total_steps - start_step`` batches of keys
    ``epoch * n + index``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start_step: int,
        total_steps: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = n // (batch_size * world_size)
        if self.steps_per_epoch < 1:
            raise InputError(
                "data",
                f"{n} training slices are fewer than batch_size x processes = "
                f"{batch_size} x {world_size}",
            )

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        perm = torch.randperm(self.n, generator=g).tolist()
        used = self.steps_per_epoch * self.batch_size * self.world_size
        return perm[:used][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        epoch = step // self.steps_per_epoch
        order = self._epoch_order(epoch)
        while step < self.total_steps:
            e = step // self.steps_per_epoch
            if e != epoch:
                epoch, order = e, self._epoch_order(e)
            j = (step % self.steps_per_epoch) * self.batch_size
            yield [epoch * self.n + i for i in order[j : j + self.batch_size]]
            step += 1

    def epoch_of(self, step: int) -> float:
        """Fractional epoch at ``step``."""
        return step / self.steps_per_epoch if self.steps_per_epoch else math.inf
