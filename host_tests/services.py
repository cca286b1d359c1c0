"""The tests' process runner: tools/service.py (shared with the demo)."""

from tools.service import ROOT, Service, ServiceError, python_module  # noqa: F401
