"""mal.automl."""
