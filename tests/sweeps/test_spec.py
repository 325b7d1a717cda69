"""Spec loading, overrides, and the catalogue of invalid specs (each names its field path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeps import registry
from sweeps.errors import SpecError
from sweeps.preflight import check_storage, storage_path
from sweeps.spec import SweepSpec, apply_overrides, load_spec, parse_override
from sweeps.tracking import resolve_uri
from trainables import CARDIO_SHA256

# (overrides, field path the message must start with, words it must contain)
INVALID: list[tuple[list[str], str, str]] = [
    (["search.max_lr.low=3.0", "search.max_lr.high=0.1"], "search.max_lr:",
     "`low < high` must hold, but got (low=3.0, high=0.1)"),
    (["search.base_lr.low=1.0", "search.base_lr.high=1.0"], "search.base_lr:", "low < high"),
    (["search.base_lr.low=0"], "search.base_lr:", "`low > 0` must hold for a log range"),
    (["search.max_lr.low=-1"], "search.max_lr:", "low=-1.0"),
    (["search.max_lr={low: 1.0e-6, high: 1.0e-5, log: true}"], "search.max_lr:",
     "lies wholly below"),
    (["search.families=[fixed, cosine]"], "search.families.1:", "'cosine'"),
    (["search.families=[]"], "search.families:", "at least 1"),
    (["search.families=[fixed, fixed]"], "search.families:", "duplicates ['fixed']"),
    (["dataset.name=mnist"], "dataset.name:", "'mnist'"),
    (["model.name=resnet"], "model.name:", "'resnet'"),
    (["optimizer.name=lbfgs"], "optimizer.name:", "'lbfgs'"),
    (["train.epochs=0"], "train.epochs:", "greater than or equal to 1"),
    (["train.batch_size=0"], "train.batch_size:", "but got 0"),
    (["search.trials_per_family=0"], "search.trials_per_family:", "but got 0"),
    (["reeval.seeds=0"], "reeval.seeds:", "but got 0"),
    (["early_stopping.grace_period=60"], "early_stopping.grace_period:",
     "(grace_period=60, epochs=50)"),
    (["resources.gpu=-0.5"], "resources.gpu:", "gpu=-0.5"),
    (["resources.gpu=1.5"], "resources.gpu:", "whole number"),
    (["resources.cpu=0"], "resources.cpu:", "greater than 0"),
    (["search.step_size_epochs.low=0"], "search.step_size_epochs:", "low >= 1"),
    (["search.gamma={low: 0.9, high: 1.5}"], "search.gamma:", "gamma.high <= 1"),
    (["dataset.val_fraction=0.5", "dataset.test_fraction=0.5"], "dataset.test_fraction:",
     "val_fraction + test_fraction < 0.9"),
    (["optimizer.momentum=0.9", "optimizer.name=adam"], "optimizer.momentum:", "sgd only"),
    (["train.epochs=ten"], "train.epochs:", "'ten'"),
    (["search.colour=red"], "search.colour:", "unknown key (allowed: families, trials_per_family"),
    (["train.epochz=3"], "train.epochz:", "did you mean 'epochs'? allowed: epochs, batch_size"),
    (["search.max_lr.lo=1"], "search.max_lr.lo:", "did you mean 'low'? allowed: low, high, log"),
    (["colour=red"], "colour:", "allowed: name, description, dataset"),
    (["search.max_lr=1e-3"], "search.max_lr:", "valid dictionary"),
    (["search.base_lr={low: -1, high: 1, log: false}"], "search.base_lr:", "learning rate"),
    (["search.gamma.high=.nan"], "search.gamma:", "must be finite"),
    (["sampler.name=grid"], "sampler.name:", "'grid'"),
    (["search.bounds=range_test", "trainable=mypkg.train:fit"], "search.bounds:",
     "needs train_loop"),
    (["search.trials_per_family=true"], "search.trials_per_family:",
     "must be a number, but got true"),
    (["train.epochs=yes"], "train.epochs:", "but got true"),
    (["search.step_size_epochs.low=true"], "search.step_size_epochs.low:", "but got true"),
    (["optimizer.momentum=false"], "optimizer.momentum:", "but got false"),
    (["sampler.seed=-5"], "sampler.seed:", "greater than or equal to 0, but got -5"),
    ([f"sampler.seed={2**32}"], "sampler.seed:", "less than or equal to 4294967295"),
    (["model.hidden=[true, 32]"], "model.hidden:", "must be numbers, but got [true, 32]"),
    (["search.base_lr={low: 1e-4, low: 1e-3, high: 1}"], "--set search.base_lr:",
     "each key once and only YAML's standard tags, but key 'low' appears twice in '{low: 1e-4"),
    (["name=!!python/object:os.system x"], "--set name:", "could not determine a constructor"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "field", "needle"), INVALID)
def test_invalid_spec_names_field_value_and_rule(
    overrides: list[str], field: str, needle: str
) -> None:
    with pytest.raises(SpecError) as e:
        load_spec("cardio_clr", overrides)
    msg = str(e.value)
    assert msg.startswith(field), msg
    assert needle in msg, msg
    assert "\n" not in msg


def test_catalogue_is_large_enough() -> None:
    assert len(INVALID) >= 12


def test_overrides_are_coerced_by_pydantic() -> None:
    spec = load_spec(
        "cardio_clr",
        ["search.trials_per_family=3", "train.epochs=7", "search.base_lr.high=0.5",
         "search.families=[fixed, sgdr]", "resources.gpu=0.25"],
    )  # fmt: skip
    assert spec.search.trials_per_family == 3
    assert spec.train.epochs == 7
    assert spec.search.base_lr.high == 0.5
    assert spec.families == ("fixed", "sgdr")
    assert spec.resources.gpu == 0.25


@pytest.mark.parametrize("bad", ["noequals", "=3", "a..b=1", ".x=1"])
def test_override_syntax(bad: str) -> None:
    with pytest.raises(SpecError, match=r"^--set: `dotted.key=value` syntax must hold"):
        parse_override(bad)


def test_override_into_a_scalar_is_refused() -> None:
    with pytest.raises(SpecError, match=r"--set train.epochs.x: `train.epochs` must be a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.x=1"])


def test_yaml_file_round_trip(tmp_path: Path) -> None:
    spec = load_spec("digits_lr")
    f = tmp_path / "mine.yaml"
    f.write_text(spec.to_yaml())
    again = load_spec(str(f))
    assert again == spec
    assert again.spec_hash() == spec.spec_hash()
    assert load_spec(str(f), ["train.epochs=4"]).spec_hash() != spec.spec_hash()


def test_yaml_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearch: [unclosed\n")
    with pytest.raises(SpecError, match=r"YAML syntax error at line \d+"):
        load_spec(str(bad))
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_spec(str(scalar))
    with pytest.raises(SpecError, match="must exist"):
        load_spec(str(tmp_path / "missing.yaml"))


def test_unknown_sweep_name_lists_the_known_ones() -> None:
    with pytest.raises(SpecError, match=r"cardio_clr, digits_lr"):
        load_spec("cifar_clr")


def test_yaml_is_read_safely(tmp_path: Path) -> None:
    f = tmp_path / "evil.yaml"
    f.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="YAML error"):
        load_spec(str(f))


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    spec = yaml.safe_load(load_spec("digits_lr").to_yaml())
    text = yaml.safe_dump(spec, sort_keys=False).replace("  base_lr:\n", "  base_lr: &lr\n", 1)
    text = text.replace("  max_lr:\n", "  max_lr:\n    <<: *lr\n", 1)
    assert "<<: *lr" in text and "&lr" in text
    f = tmp_path / "merged.yaml"
    f.write_text(text)
    loaded = load_spec(str(f))  # max_lr's own low/high override the merged ones
    assert loaded.search.max_lr == load_spec("digits_lr").search.max_lr
    assert yaml.safe_load(text)["search"]["max_lr"]["log"] == spec["search"]["base_lr"]["log"]


def test_a_key_given_twice_is_refused_not_replaced(tmp_path: Path) -> None:
    spec = yaml.safe_load(load_spec("digits_lr").to_yaml())
    f = tmp_path / "twice.yaml"
    f.write_text(yaml.safe_dump(spec, sort_keys=False) + "train: {epochs: 4}\n")
    with pytest.raises(
        SpecError, match=r"line \d+, column 1: key 'train' appears twice \(first at line \d+\)"
    ):
        load_spec(str(f))
    f.write_text("name: x\nsearch: {base_lr: {low: 1.0e-3, low: 2.0e-3}}\n")
    with pytest.raises(SpecError, match="key 'low' appears twice"):
        load_spec(str(f))


def test_flat_params_and_yaml_dump() -> None:
    spec = load_spec("cardio_clr")
    flat = spec.flat()
    assert flat["search.base_lr.low"] == 1e-4
    assert flat["train.epochs"] == 50
    assert SweepSpec.model_validate(yaml.safe_load(spec.to_yaml())) == spec


def test_a_relative_data_path_is_the_drivers_and_the_checksum_any_case(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    sha = "21A705D23381B0DFD6A6416DA701B490744F1FC3B47E9FF3DB3968C420FFA10C"
    spec = load_spec("cardio_clr", ["dataset.path=data/cardio.csv", f"dataset.sha256={sha}"])
    assert spec.dataset.path == str(tmp_path / "data" / "cardio.csv")
    assert spec.dataset.sha256 == sha.lower()


def test_a_built_in_sweeps_name_must_be_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "run mine" silently ran a sweep named my_sweep, and "run my_sweep" said there is none.
    text = (registry.SPECS_DIR / "digits_lr.yaml").read_text()
    (tmp_path / "mine.yaml").write_text(text.replace("name: digits_lr", "name: my_sweep"))
    monkeypatch.setattr(registry, "SPECS_DIR", tmp_path)
    rule = r"^name: a built-in sweep's name must be its file's \('mine', from sweeps/specs/mine"
    with pytest.raises(SpecError, match=rule + r"\.yaml\), but got 'my_sweep'$"):
        load_spec("mine")
    (tmp_path / "my_sweep.yaml").write_text((tmp_path / "mine.yaml").read_text())
    assert load_spec("my_sweep").name == "my_sweep"


def test_only_cardio_takes_a_checksum_by_default() -> None:
    # digits' dry run and spec artifact showed cardio's file checksum.
    assert load_spec("digits_lr").dataset.sha256 is None
    assert load_spec("cardio_clr").dataset.sha256 == CARDIO_SHA256
    assert load_spec("cardio_clr", ["dataset.sha256=null"]).dataset.sha256 is None
    assert load_spec("cardio_clr", ["dataset.name=digits"]).dataset.sha256 is None
    old = load_spec("digits_lr", [f"dataset.sha256={CARDIO_SHA256}"])  # earlier spec.yaml files
    assert old.dataset.sha256 is None and old == load_spec("digits_lr")


def test_storage_is_made_absolute_unless_a_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage_path("runs") == str(tmp_path / "runs")
    assert storage_path(None) == str(tmp_path / "sweeps_results")
    assert storage_path("s3://bucket/sweeps") == "s3://bucket/sweeps"
    check_storage(storage_path("runs/deeper"))  # created
    assert (tmp_path / "runs" / "deeper").is_dir()


def test_a_relative_sqlite_store_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_uri("sqlite:///runs/other.db") == f"sqlite:///{tmp_path / 'runs/other.db'}"
    for kept in ("sqlite:////abs/m.db", "sqlite:///:memory:", "http://127.0.0.1:5000"):
        assert resolve_uri(kept) == kept
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'env.db'}"


def test_an_override_inside_a_section_the_file_leaves_out_keeps_its_other_defaults() -> None:
    # digits_lr.yaml writes no search.gamma: the override changes the default's low only.
    spec = load_spec("digits_lr", ["search.gamma.low=0.95"])
    assert (spec.search.gamma.low, spec.search.gamma.high) == (0.95, 0.99999)
    assert load_spec("digits_lr", ["failure.max_retries=0"]).failure.max_retries == 0
