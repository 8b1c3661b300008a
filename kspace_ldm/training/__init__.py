"""Training framework: data, checkpoints, logging and the first-stage trainer (``kldm train``)."""

from .trainer import TrainResult, evaluate_model, train

__all__ = ["TrainResult", "evaluate_model", "train"]
