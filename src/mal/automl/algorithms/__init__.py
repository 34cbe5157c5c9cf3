"""mal.automl.algorithms."""
