"""Datasets, models, LR schedules and the Ray-free ``train_loop``."""

from trainables.config import (
    CARDIO_SHA256,
    DatasetConfig,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
    TrialConfig,
)
from trainables.errors import DataError
from trainables.lr_schedules import LR_SCHEDULES, build_lr_schedule
from trainables.models import build_model
from trainables.train_loop import Metrics, Report, test_accuracy, train_loop

__all__ = [
    "CARDIO_SHA256",
    "LR_SCHEDULES",
    "DataError",
    "DatasetConfig",
    "Metrics",
    "ModelConfig",
    "OptimizerConfig",
    "Report",
    "TrainConfig",
    "TrialConfig",
    "build_lr_schedule",
    "build_model",
    "test_accuracy",
    "train_loop",
]
