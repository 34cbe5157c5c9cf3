"""Helpers shared by the tests (importable as `support`: pyproject's pytest `pythonpath` puts tests/ on the path)."""
