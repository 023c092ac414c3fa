"""Issue 12: eval, optimize, finetune and compare write summary.json in one schema (dspyrl.runs.SUMMARY_SCHEMA)."""

from __future__ import annotations

import json

import jsonschema

from dspyrl.cli import main
from dspyrl.runs import SUMMARY_SCHEMA
from tests.cli.test_optimize import PROGRAM


def test_the_summary_of_every_command_validates_against_one_schema(tiny_model_dir, tmp_path):
    program = tmp_path / "reports.py"
    program.write_text(PROGRAM)
    model = ["--model", str(tiny_model_dir), "--threads", "2"]
    runs = {
        "eval": ["eval", "sentiment", "--limit", "2", "--max-tokens", "4"],
        "optimize": ["optimize", str(program), "--budget", "40", "--max-tokens", "4"],
        "finetune": ["finetune", "sentiment", "--steps", "1", "--max-tokens", "8", "--format", "compact",
                     "--num-generations", "2", "--save-every", "0"],
        "compare": ["compare", "baseline", "baseline", "--limit", "2", "--max-tokens", "4"],
    }
    seen = {}
    for command, argv in runs.items():
        out = tmp_path / command
        assert main(argv + model + ["--out", str(out)]) == 0, command
        summary = json.loads((out / "summary.json").read_text())
        jsonschema.validate(summary, SUMMARY_SCHEMA)
        assert summary["command"] == command and summary["schema"] == 1 and summary["run_folder"] == str(out)
        seen[command] = summary
    assert set(seen["optimize"]["scores"]) == set(seen["finetune"]["scores"]) == {"test_before", "test_after"}
    assert set(seen["compare"]["scores"]) == {"A", "B"} and set(seen["eval"]["scores"]) == {"eval"}
    assert seen["eval"]["scores"]["eval"]["n"] == 2 and seen["eval"]["lm_calls"] >= 2
    broken = dict(seen["eval"], scores={"eval": {"score": 1.0}})  # the schema is not a formality
    try:
        jsonschema.validate(broken, SUMMARY_SCHEMA)
    except jsonschema.ValidationError as err:
        assert "'n' is a required property" in err.message
    else:
        raise AssertionError("a score without n validated")
