"""The spec: pydantic models (`schema`, built from `fields` and `paths`), loading with overrides (`load`),
generated skill files (`export`)."""

from mal.spec.load import dump_spec_yaml, load_spec
from mal.spec.schema import ExperimentSpec

__all__ = ["ExperimentSpec", "dump_spec_yaml", "load_spec"]
