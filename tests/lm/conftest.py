"""Every hosted-LM test counts the requests its own loopback server received: each starts from an empty DSPy cache."""

import pytest


@pytest.fixture(autouse=True)
def _each_test_its_own_cache(fresh_dspy_cache):
    yield
