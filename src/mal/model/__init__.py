"""mal.model."""
