"""Every entry point turns bad input into one ``error:`` line and exit status 2 (train.py's cases: test_reliability)."""

import pytest

from tests.utils import ROOT, run_cli

ADDITION = ROOT / "tests" / "fixtures" / "ebt_tokenformer_layout_v1.ckpt"  # a tokens task without a text encoding

CASES = [
    ("collect.py", ["dirs={tmp}/missing"], "not a folder"),
    ("collect.py", ["dirs={tmp}"], "no job folders"),
    ("collect.py", ["{tmp}"], "options are key=value"),
    ("grow.py", [], "ckpt= and slots= are required"),
    ("grow.py", ["ckpt={tmp}/missing.ckpt", "slots=+4"], "does not exist"),
    ("think.py", ["ckpt={tmp}/missing.ckpt"], "does not exist"),
    ("think.py", ["ckpt={tmp}/missing.ckpt", "steps=[-1]"], "must be a non-empty list of integers >= 1"),
    ("think.py", [], "ckpt= is required"),
    ("think.py", ["ckpt={tmp}"], "is a folder without checkpoints/last.ckpt"),
    ("generate.py", ["ckpt={tmp}", "prompt=x"], "is a folder without checkpoints/last.ckpt"),
    ("generate.py", ["ckpt={tmp}/missing.ckpt", "prompt=x", "max_new_tokens=0"], "max_new_tokens=0 must be"),
    ("generate.py", [f"ckpt={ADDITION}", "prompt=12"], "generate.py needs a text language model"),
    ("export.py", [], "ckpt= is required"),
    ("export.py", [f"ckpt={ADDITION}"], "out= is required"),
]


@pytest.mark.parametrize(("script", "args", "message"), CASES, ids=[f"{c[0]}:{c[2][:20]}" for c in CASES])
def test_entry_point_reports_bad_input_in_one_line(script, args, message, tmp_path):
    result = run_cli(script, *[a.format(tmp=tmp_path) for a in args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
