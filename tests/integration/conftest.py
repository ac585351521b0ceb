"""Fixtures the integration tests share beyond the stack's (tests/conftest.py): ``secrets``,
which collects every secret iamdb makes during a test (tests/integration/leaks.py)."""

from tests.integration.leaks import secrets

__all__ = ["secrets"]
