"""Data loading: good files in every format, the bad-data corpus (each case one clear line naming file/line/field),
`dspyrl eval` answering bad data with exit code 2 and no traceback, and the seeded split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dspy
import pytest

from dspyrl.cli import main
from dspyrl.data import DataSpec, load_examples, split_examples
from dspyrl.errors import DataError
from dspyrl.program_file import load_program_file

BAD = Path(__file__).parent / "data" / "bad"
CASES = json.loads((BAD / "cases.json").read_text())
QA_SPEC = DataSpec(input_keys=("question",), required=("answer",), types={"question": str, "answer": str})


def _spec_for(program: str) -> DataSpec:
    return DataSpec.from_examples(load_program_file(program).load_examples())


# ----------------------------------------------------------------------------------------------- good files
def test_jsonl_rows_become_examples_with_inputs(tmp_path):
    file = tmp_path / "qa.jsonl"
    file.write_text('{"id": "a", "question": "Capital of France?", "answer": "Paris"}\n\n'
                    '{"id": "b", "question": "2+2?", "answer": "4", "extra": [1, 2]}\n')
    examples = load_examples(file, QA_SPEC)
    assert [e.answer for e in examples] == ["Paris", "4"]
    assert set(examples[0].inputs().keys()) == {"question"}
    assert examples[1].extra == [1, 2]


def test_csv_converts_cells_to_the_declared_types(tmp_path):
    file = tmp_path / "math.csv"
    file.write_text('question,answer\n"Tom has 3 apples, buys 2. How many?",5\n"Half of 3?",1.5\n')
    examples = load_examples(file, _spec_for("math_xml"))
    assert examples[0].answer == 5 and isinstance(examples[0].answer, int)
    assert examples[1].answer == 1.5
    assert examples[0].question.startswith("Tom has 3 apples, buys 2")


def test_utf8_bom_and_limit(tmp_path):
    file = tmp_path / "bom.jsonl"
    file.write_bytes("\ufeff".encode() + b'{"question": "a?", "answer": "x"}\n{"question": "b?", "answer": "y"}\n')
    assert [e.question for e in load_examples(file, QA_SPEC, limit=1)] == ["a?"]


def test_hugging_face_dataset_folder_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"question": ["a?", "b?", "c?"], "answer": ["x", "y", "z"]}
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                                    "test": datasets.Dataset.from_dict({k: v[:1] for k, v in rows.items()})})
    dataset.save_to_disk(str(tmp_path / "ds"))
    assert [e.answer for e in load_examples(tmp_path / "ds", QA_SPEC, split="train")] == ["x", "y", "z"]
    assert len(load_examples(tmp_path / "ds", QA_SPEC, split="test")) == 1
    with pytest.raises(DataError, match="choose a split with --split: train, test"):
        load_examples(tmp_path / "ds", QA_SPEC)
    with pytest.raises(DataError, match="no split 'dev'"):
        load_examples(tmp_path / "ds", QA_SPEC, split="dev")
    dataset["train"].to_parquet(str(tmp_path / "train.parquet"))
    assert [e.question for e in load_examples(tmp_path / "train.parquet", QA_SPEC)] == ["a?", "b?", "c?"]
    bad = datasets.Dataset.from_dict({"question": ["a?", ""], "answer": ["x", "y"]})
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match=r"bad:2: field 'question': is an empty string"):
        load_examples(tmp_path / "bad", QA_SPEC)


def test_schema_inferred_from_a_programs_own_examples():
    spec = _spec_for("sentiment")
    assert spec.input_keys == ("review",)
    assert spec.required == ("sentiment",)
    assert spec.types == {"review": str, "sentiment": str}
    assert _spec_for("math_xml").types["answer"] is float  # integer labels accept 3 and 3.0


# ----------------------------------------------------------------------------------------------- the bad corpus
def test_corpus_has_at_least_ten_cases():
    assert len(CASES) >= 10
    assert all((BAD / c["file"]).exists() for c in CASES if "does_not_exist" not in c["file"])


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_bad_file_gives_one_clear_line(case):
    spec = _spec_for(case.get("program", "qa_cot"))
    with pytest.raises(DataError) as info:
        load_examples(BAD / case["file"], spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in case["expect"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert case["file"] in message  # the file is always named


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_eval_answers_bad_data_with_exit_2(case, tmp_path, capsys):
    code = main(["eval", case.get("program", "qa_cot"), "--data", str(BAD / case["file"]), "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dspyrl eval: error: ")
    assert case["expect"][-1] in lines[0]
    assert not (tmp_path / "run" / "summary.json").exists()


def test_eval_cli_process_prints_no_traceback():
    result = subprocess.run([sys.executable, "-m", "dspyrl.cli", "eval", "qa_cot", "--data",
                             str(BAD / "bad_json_line3.jsonl")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad_json_line3.jsonl:3: invalid JSON" in result.stderr


# ----------------------------------------------------------------------------------------------- split
def test_split_is_seeded_disjoint_and_complete():
    examples = [dspy.Example(i=i).with_inputs("i") for i in range(20)]
    train, val, test = split_examples(examples, seed=3)
    assert (len(train), len(val), len(test)) == (10, 4, 6)
    ids = [e.i for e in train + val + test]
    assert sorted(ids) == list(range(20))
    again = split_examples(examples, seed=3)
    assert [e.i for e in again[0]] == [e.i for e in train]
    assert [e.i for e in split_examples(examples, seed=4)[0]] != [e.i for e in train]


def test_split_never_leaves_a_part_empty_by_rounding():
    train, val, test = split_examples(list(range(4)), fractions=(0.8, 0.1, 0.1))
    assert len(val) == 1 and len(test) == 1 and len(train) == 2
    with pytest.raises(DataError, match="sum"):
        split_examples(list(range(4)), fractions=(0.5, 0.5, 0.5))


def test_read_jsonl_is_the_one_reader_and_skips_only_a_torn_last_line(tmp_path):
    from dspyrl.data import read_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n{"step": 3, "rew')  # a kill mid-append leaves an unterminated line
    assert [row["step"] for _, row in read_jsonl(path, torn_last_line=True)] == [1, 2]
    with pytest.raises(DataError, match="metrics.jsonl:4: invalid JSON"):
        list(read_jsonl(path))
    path.write_text('{"step": 1}\n{oops\n{"step": 3}\n')  # a bad line in the middle is never "torn"
    with pytest.raises(DataError, match="metrics.jsonl:2: invalid JSON"):
        list(read_jsonl(path, torn_last_line=True))
