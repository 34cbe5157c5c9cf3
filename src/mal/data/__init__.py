"""mal.data."""
