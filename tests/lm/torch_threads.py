"""A module-scoped fixture for tests that drive the tiny model hard: `from tests.lm.torch_threads import
one_torch_thread  # noqa: F401` in a test module makes it autouse there."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The tiny model's ops take microseconds; on a shared 2-core machine the thread pool's hand-offs cost ~50× more
    than the work. Restored afterwards so the rest of the suite is untouched."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
