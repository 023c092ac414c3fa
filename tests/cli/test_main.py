"""The CLI's process-wide settings are scoped to the command: a caller of main() (a test, a notebook) keeps its own."""

import logging
import os
import warnings

from dspyrl.cli.main import main


def test_main_leaves_warning_filters_env_and_loggers_as_it_found_them(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("LITELLM_LOCAL_MODEL_COST_MAP", raising=False)
    filters_before = list(warnings.filters)
    lm_logger = logging.getLogger("dspy.clients.lm")
    logger_filters_before = list(lm_logger.filters)
    # a command that fails on bad input (exit 2) runs the whole error path without loading a model
    missing = tmp_path / "missing.jsonl"
    assert main(["eval", "sentiment", "--data", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert list(warnings.filters) == filters_before
    assert "LITELLM_LOCAL_MODEL_COST_MAP" not in os.environ
    assert list(lm_logger.filters) == logger_filters_before
