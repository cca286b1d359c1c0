"""pytest fixtures for the modemsim (imported by conftest.py)."""
