"""Training framework: data, checkpoints, logging, the one training loop and its stages
(``kldm train``)."""

from .trainer import TrainResult, evaluate_model, train

__all__ = ["TrainResult", "evaluate_model", "train"]
