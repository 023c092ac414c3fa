"""`dspyrl demo` on the tiny local model: the program's run and its table."""

from dspyrl.cli import main


def test_demo_runs_the_program_and_prints_its_table(tiny_model_dir, capsys):
    assert main(["demo", "--model", str(tiny_model_dir), "--limit", "4", "--budget", "0"]) == 0
    printed = capsys.readouterr().out
    assert "sentiment on" in printed and "accuracy" in printed
    row = next(line for line in printed.splitlines() if "%" in line and "│" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[0] == "4"  # examples
    assert cells[2] == "0"  # parse/LM failures: constrained choice on our own model cannot fail to parse
