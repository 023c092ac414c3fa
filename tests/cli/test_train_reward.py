"""`dspyrl train-reward` end to end on the tiny model: a pairs file in DPO's format → a reward model folder and a
table with held-out accuracy; pairs from a program's rollouts; a bad pairs row is one line naming file, line and field."""

from __future__ import annotations

import json

from dspyrl.cli.main import main
from tests.rewards.test_reward_model import marker_pairs


def test_train_reward_from_a_pairs_file(tmp_path, tiny_model_dir, capsys):
    pairs = tmp_path / "pairs.jsonl"
    # DPO's rows: the prompt as plain text here (a chat-message list works too)
    pairs.write_text("".join(json.dumps({"prompt": p["prompt"][0]["content"], "chosen": p["chosen"],
                                         "rejected": p["rejected"]}) + "\n" for p in marker_pairs(12)))
    out = tmp_path / "rm"
    assert main(["train-reward", str(pairs), "--model", str(tiny_model_dir), "--out", str(out), "--steps", "3",
                 "--batch-size", "4"]) == 0
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["train_pairs"] + meta["held_out_pairs"] == 12 and meta["held_out_pairs"] >= 1
    assert 0.0 <= meta["held_out_accuracy"] <= 1.0
    assert len([m for m in (out / "metrics.jsonl").read_text().splitlines() if m.strip()]) == 3
    assert "held-out pairwise accuracy" in capsys.readouterr().out
    # the same folder again is refused without --force
    assert main(["train-reward", str(pairs), "--model", str(tiny_model_dir), "--out", str(out), "--steps", "1"]) == 2
    assert "--force" in capsys.readouterr().err


def test_train_reward_from_program_rollouts(tmp_path, tiny_model_dir):
    from tests.rewards.test_judge_check import PROGRAM

    program = tmp_path / "echo.py"
    program.write_text(PROGRAM)
    out = tmp_path / "rm"
    assert main(["train-reward", "--program", str(program), "--model", str(tiny_model_dir), "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--group-size", "4", "--max-tokens", "6"]) == 0
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["train_pairs"] + meta["held_out_pairs"] >= 2


def test_bad_pairs_row_and_missing_source_are_one_line(tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "q", "chosen": 3, "rejected": "b"}\n')
    assert main(["train-reward", str(pairs), "--out", str(tmp_path / "rm")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pairs.jsonl" in err and "2" in err and "chosen" in err
    assert main(["train-reward", "--out", str(tmp_path / "rm")]) == 2
    assert "PAIRS file or --program" in capsys.readouterr().err
