"""Parameter models, LR schedule families and their translation to Optuna. No Ray, no torch."""

from search_spaces.families import FAMILIES, FAMILY_NAMES, Family, FamilyName, cycle_epochs
from search_spaces.params import Choice, FloatRange, IntRange, RuleError, SpecModel
from search_spaces.space import DefineByRun, SearchSpace, define_by_run, in_bounds, study_seed

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "Choice",
    "DefineByRun",
    "Family",
    "FamilyName",
    "FloatRange",
    "IntRange",
    "RuleError",
    "SearchSpace",
    "SpecModel",
    "cycle_epochs",
    "define_by_run",
    "in_bounds",
    "study_seed",
]
