"""mal.engine."""
