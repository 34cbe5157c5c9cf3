"""mal.spec."""
