"""SweepSpec, its YAML loading and ``--set dotted.key=value`` overrides."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from search_spaces import RuleError, SearchSpace, SpecModel, cycle_epochs
from sweeps.custom import PATTERN as TRAINABLE_PATTERN
from sweeps.errors import SpecError, format_validation_error
from trainables.config import DatasetConfig, ModelConfig, OptimizerConfig, TrainConfig


class SamplerSpec(SpecModel):
    name: Literal["tpe", "random"] = "tpe"
    seed: int = Field(default=0, ge=0, le=2**32 - 1)  # numpy's range, which Optuna seeds
    # TPE's random start; None: a third of the family's budget, at least 2 and at most 10.
    n_startup_trials: int | None = Field(default=None, ge=1)

    def startup_trials(self, budget: int) -> int:
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return max(2, min(10, budget // 3))


class EarlyStoppingSpec(SpecModel):
    name: Literal["asha", "none"] = "asha"
    grace_period: int = Field(default=5, ge=1)
    reduction_factor: float = Field(default=3, gt=1)


class ReevalSpec(SpecModel):
    top_k: int = Field(default=1, ge=1)
    seeds: int = Field(default=5, ge=1)


class ResourcesSpec(SpecModel):
    cpu: float = Field(default=1, gt=0)
    gpu: float = 0

    @model_validator(mode="after")
    def _gpu(self) -> Self:
        if self.gpu < 0:
            raise RuleError(
                "gpu",
                f"`gpu >= 0` must hold for a GPU share (0 means no GPU), but got (gpu={self.gpu})",
            )
        if self.gpu > 1 and not float(self.gpu).is_integer():
            raise RuleError(
                "gpu",
                "`gpu` must be a fraction of one GPU or a whole number of GPUs, but got "
                f"(gpu={self.gpu})",
            )
        return self


class TrackingSpec(SpecModel):
    experiment: str = Field(min_length=1)


class FailureSpec(SpecModel):
    max_retries: int = Field(default=2, ge=0)


class SweepSpec(SpecModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    dataset: DatasetConfig
    model: ModelConfig
    optimizer: OptimizerConfig
    train: TrainConfig
    search: SearchSpace
    sampler: SamplerSpec = SamplerSpec()
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()
    reeval: ReevalSpec = ReevalSpec()
    resources: ResourcesSpec = ResourcesSpec()
    tracking: TrackingSpec
    failure: FailureSpec = FailureSpec()
    # Ray's storage_path; several nodes need a shared one (NFS, s3://...).
    storage: str | None = None
    # A custom trainable, module:function, in place of train_loop. It runs the user's code.
    trainable: str | None = None

    @model_validator(mode="after")
    def _cross(self) -> Self:
        if self.trainable is not None and not re.match(TRAINABLE_PATTERN, self.trainable):
            raise RuleError(
                "trainable",
                "`module:function` syntax (e.g. mypkg.train:fit) must hold, but got "
                f"{self.trainable!r}",
            )
        if self.trainable is not None and self.search.bounds == "range_test":
            raise RuleError(
                "search.bounds",
                "`search.bounds: range_test` needs train_loop (the test trains the spec's model, "
                f"not the trainable's), but got (trainable={self.trainable!r})",
            )
        es, epochs = self.early_stopping, self.train.epochs
        if es.name == "asha" and es.grace_period > epochs:
            raise RuleError(
                "early_stopping.grace_period",
                "`early_stopping.grace_period <= train.epochs` must hold, but got "
                f"(grace_period={es.grace_period}, epochs={epochs})",
            )
        return self

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.search.families)

    def grace_period(self, family: str) -> int:
        """ASHA's first rung for ``family``: never before the first full cycle of any trial."""
        epochs = self.train.epochs
        first_cycle = cycle_epochs(family, self.search.step_size_epochs.high, epochs)
        return min(epochs, max(self.early_stopping.grace_period, first_cycle))

    def trial_config(self, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
        """The ``train_loop`` config of one sampled point: shared sections plus ``params``."""
        shared = self.model_dump(mode="json", include={"dataset", "model", "optimizer", "train"})
        threads = max(1, int(self.resources.cpu))
        return {**shared, **params, "seed": seed, "threads": threads}

    def spec_hash(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """The spec as dotted keys, for MLflow params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` into (["a", "b", "c"], value); the value is read as YAML (2, 0.1, [1,2])."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise SpecError(f"--set: `dotted.key=value` syntax must hold, but got {text!r}")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except yaml.constructor.ConstructorError as exc:  # a key twice, a tag such as !!python/...
        problem = re.sub(r" \(first at line \d+\)$", "", str(exc.problem))
        raise SpecError(
            f"--set {key.strip()}: the value must be YAML with each key once and only YAML's "
            f"standard tags, but {problem} in {raw.strip()!r}"
        ) from None
    except yaml.YAMLError:
        value = raw  # not YAML: the text itself
    return [p.strip() for p in parts], value


def _section_default(parts: list[str]) -> dict[str, Any]:
    """The default of the spec section at ``parts``, as a mapping ({} where it has none)."""
    cls: type[BaseModel] = SweepSpec
    value: Any = None
    for part in parts:
        field = cls.model_fields.get(part)
        if field is None:
            return {}
        value = field.get_default(call_default_factory=True)
        if isinstance(value, BaseModel):
            cls = type(value)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            cls, value = field.annotation, None
        else:
            return {}
    return value.model_dump() if isinstance(value, BaseModel) else {}


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:  # a section the file leaves out: the override changes its default
                child = node[part] = _section_default(parts[: i + 1])
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise SpecError(
                    f"--set {'.'.join(parts)}: `{where}` must be a section, but it holds {child!r}"
                )
            node = child
        node[parts[-1]] = value
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys, so a second `train:` would silently drop the
    first whole section; a spec refuses it instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base`: its keys may be overridden here, by design
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first at line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)
    except OSError as exc:
        raise SpecError(f"spec file {str(path)!r}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"spec file {str(path)!r}: must be UTF-8 text, but byte {exc.start} is not"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        kind = (
            "YAML error"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "YAML syntax error"
        )
        raise SpecError(f"spec file {str(path)!r}: {kind}{where}: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(
            f"spec file {str(path)!r}: must hold a mapping of spec fields, but got "
            f"{type(data).__name__}"
        )
    return data


def validate(data: dict[str, Any]) -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, model=SweepSpec)) from None


def load_spec(name_or_path: str, overrides: list[str] | None = None) -> SweepSpec:
    """A built-in sweep name or a YAML file, with overrides applied, validated."""
    from sweeps.registry import SPECS_DIR, resolve

    path = resolve(name_or_path)
    data = read_yaml(path)
    if path.parent == SPECS_DIR and data.get("name") != path.stem:
        # --list and the CLI know a built-in sweep by its file's name, MLflow by this one.
        raise SpecError(
            f"name: a built-in sweep's name must be its file's ({path.stem!r}, from "
            f"sweeps/specs/{path.name}), but got {data.get('name')!r}"
        )
    return validate(apply_overrides(data, list(overrides or [])))
