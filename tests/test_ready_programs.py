"""The ready programs install as `dspyrl_programs`: a user's own folder named `programs/` cannot shadow them."""

from __future__ import annotations

import subprocess
import sys


def test_a_user_folder_named_programs_does_not_shadow_the_ready_ones(tmp_path):
    own = tmp_path / "programs"
    own.mkdir()
    (own / "__init__.py").write_text("")
    (own / "sentiment.py").write_text("raise RuntimeError('the user folder was imported')\n")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import programs; "
              "from dspyrl.program_file import load_program_file, ready_programs; "
              "spec = load_program_file('sentiment'); "
              "print(spec.path.parent.name, spec.module.__name__, 'sentiment' in ready_programs())")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    folder, module, listed = result.stdout.split()
    assert module == "dspyrl_programs.sentiment" and listed == "True"
