"""What one trial trains: the sections a sweep spec shares with the trainable. Pure Pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from search_spaces import FamilyName, RuleError, SpecModel

CARDIO_SHA256 = "21a705d23381b0dfd6a6416da701b490744f1fc3b47e9ff3db3968c420ffa10c"


class DatasetConfig(SpecModel):
    name: Literal["cardio", "digits"]
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    split_seed: int = 0
    # cardio only: an explicit file, and the checksum it must have (cardio's by default; null
    # skips the check).
    path: str | None = None
    sha256: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _cardio_checksum(cls, data: Any) -> Any:
        """Cardio's checksum unless the spec says otherwise ("null" too): only an absent key
        takes it, and only for cardio, so a digits spec does not show a file's checksum."""
        if not isinstance(data, dict):
            return data
        if data.get("name") == "cardio" and "sha256" not in data:
            return {**data, "sha256": CARDIO_SHA256}
        if data.get("name") != "cardio" and str(data.get("sha256")).lower() == CARDIO_SHA256:
            # Earlier versions gave every dataset cardio's: their spec.yaml artifacts still hold it.
            return {**data, "sha256": None}
        return data

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        """Relative to the driver's working directory: Ray's workers run elsewhere."""
        return None if path is None else str(Path(path).expanduser().absolute())

    @field_validator("sha256")
    @classmethod
    def _lower(cls, sha256: str | None) -> str | None:
        return None if sha256 is None else sha256.lower()

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        for field in ("path", "sha256"):
            value = getattr(self, field)
            if value is not None and self.name != "cardio":
                raise RuleError(
                    field,
                    f"`dataset.{field}` is read for the cardio set only, but got "
                    f"(name={self.name!r}, {field}={value!r})",
                )
        if not self.val_fraction + self.test_fraction < 0.9:
            raise RuleError(
                "test_fraction",
                "`val_fraction + test_fraction < 0.9` must hold (training needs the rest), but got "
                f"(val_fraction={self.val_fraction}, test_fraction={self.test_fraction})",
            )
        return self


class ModelConfig(SpecModel):
    name: Literal["mlp"]
    hidden: tuple[int, ...] = (64, 32)

    @model_validator(mode="after")
    def _widths(self) -> Self:
        bad = [h for h in self.hidden if h < 1]
        if bad:
            raise RuleError(
                "hidden", f"every hidden width must be >= 1, but got {list(self.hidden)}"
            )
        return self


class OptimizerConfig(SpecModel):
    name: Literal["sgd", "adam", "adamw"]
    momentum: float = Field(default=0.0, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _momentum_is_sgd_only(self) -> Self:
        if self.name != "sgd" and self.momentum != 0.0:
            raise RuleError(
                "momentum",
                f"`momentum` applies to sgd only, but got (name={self.name!r}, "
                f"momentum={self.momentum})",
            )
        return self


class TrainConfig(SpecModel):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    # A trial saves a checkpoint every this many epochs (and at its last one).
    checkpoint_every: int = Field(default=5, ge=1)
    # Epochs at chance accuracy, with no progress on val_loss, before a trial counts as collapsed.
    collapse_patience: int = Field(default=3, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class TrialConfig(SpecModel):
    """Everything ``train_loop`` needs: the shared sections plus one sampled point."""

    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    train: TrainConfig
    family: FamilyName
    base_lr: float = Field(gt=0)
    max_lr: float | None = Field(default=None, gt=0)
    step_size_epochs: int | None = Field(default=None, ge=1)
    gamma: float | None = Field(default=None, gt=0, le=1)
    t_mult: int | None = Field(default=None, ge=1)
    seed: int = 0
    threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _family_params(self) -> Self:
        from search_spaces import FAMILIES

        missing = [p for p in FAMILIES[self.family].params if getattr(self, p) is None]
        if missing:
            raise ValueError(f"family {self.family!r} needs {missing}, but they are unset")
        if self.max_lr is not None and self.family != "fixed" and not self.max_lr > self.base_lr:
            raise ValueError(
                f"`max_lr > base_lr` must hold, but got (base_lr={self.base_lr}, "
                f"max_lr={self.max_lr})"
            )
        return self
