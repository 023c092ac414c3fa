"""Shared fixtures. Everything runs offline: no hub, no price-map fetch, dspy's cache in a temp dir."""

import os
import tempfile

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dspyrl-test-dspy-cache-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.tiny_model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama + a byte-level BPE tokenizer with a ChatML chat template, built here (no hub)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture()
def fresh_dspy_cache():
    """An empty in-memory DSPy cache for one test, the session's restored after. DSPy leaves api_base out of its cache
    key, so without this a test server's answers are replayed to a later test's server (same model name, same
    prompt) and that server sees fewer requests than the test counts."""
    import dspy

    previous = dspy.cache
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    try:
        yield dspy.cache
    finally:
        dspy.cache = previous
