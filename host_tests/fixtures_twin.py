"""pytest fixtures for the twin (imported by conftest.py)."""
