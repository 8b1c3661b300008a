"""Run logging on rank 0: CSV files, TensorBoard event files, and (opt-in) wandb.

* ``RUN_DIR/logs/train.csv`` (step, lr, samples/s, every loss term) and ``val.csv`` (step, PSNR,
  SSIM, NMSE). Each write replaces the file atomically. On resume, rows past the resumed step
  (logged by the killed run after its last checkpoint) are dropped, so the files read like one
  uninterrupted run.
* ``RUN_DIR/logs/events.out.tfevents.*`` through ``torch.utils.tensorboard`` (scalars and the
  validation panels).
* wandb only when ``train.wandb: true``; it runs offline unless ``WANDB_MODE`` says otherwise, so
  a training job never needs the network.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write_text

__all__ = ["RunLogger"]


class _CsvLog:
    """A CSV file rewritten atomically on each append (the logs are small)."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        self.header: list[str] = []
        self.rows: list[dict[str, str]] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                self.header = list(reader.fieldnames or [])
                self.rows = [r for r in reader if int(float(r["step"])) <= resume_step]

    def append(self, row: dict[str, float]) -> None:
        for key in row:
            if key not in self.header:
                self.header.append(key)
        self.rows.append({k: _fmt(v) for k, v in row.items()})
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.8g}"
    return str(v)


class RunLogger:
    """Scalars and images to CSV + TensorBoard (+ wandb). Create on rank 0 only.

    Args:
        run_dir: the run directory (logs go to ``run_dir/logs``).
        resume_step: the step a resumed run continues from (``None`` for a fresh run).
        config: the config mapping (for wandb).
        wandb: enable wandb; ``wandb_project``: its project.
    """

    def __init__(
        self,
        run_dir: Path,
        resume_step: int | None = None,
        config: dict | None = None,
        wandb: bool = False,
        wandb_project: str = "kspace-ldm",
    ):
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / "logs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.train_csv = _CsvLog(self.dir / "train.csv", resume_step)
        self.val_csv = _CsvLog(self.dir / "val.csv", resume_step)
        self.tb = SummaryWriter(log_dir=str(self.dir), purge_step=resume_step)
        self.wandb = None
        if wandb:
            self.wandb = _init_wandb(Path(run_dir), config or {}, wandb_project)

    def log_train(self, step: int, values: dict[str, float]) -> None:
        self.train_csv.append({"step": step, **values})
        for k, v in values.items():
            self.tb.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in values.items()}, step=step)

    def log_val(self, step: int, values: dict[str, float], panel: np.ndarray | None) -> None:
        self.val_csv.append({"step": step, **values})
        for k, v in values.items():
            self.tb.add_scalar(f"val/{k}", v, step)
        if panel is not None:
            self.tb.add_image("val/panel", panel, step, dataformats="HW")
        if self.wandb is not None:
            self.wandb.log({f"val/{k}": v for k, v in values.items()}, step=step)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _init_wandb(run_dir: Path, config: dict, project: str):
    try:
        import wandb
    except ImportError:
        raise InputError(
            "train.wandb", "true needs the wandb package (pip install wandb), or set it false"
        ) from None
    id_file = run_dir / "wandb_id.txt"
    if id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = wandb.util.generate_id()
        atomic_write_text(id_file, run_id + "\n")
    return wandb.init(
        project=project,
        dir=str(run_dir),
        id=run_id,
        resume="allow",
        config=config,
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
