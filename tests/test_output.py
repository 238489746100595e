"""What a person sees in a run's output: each log line once, no advertisements, a step progress bar, no empty FLOPs
column, paths that survive an 80-column terminal, and where the results are."""

import re
from collections import Counter

from tests.utils import run_cli

TINY = ["model.dim=32", "model.backbone.n_layers=1", "data.batch_size=16", "data.eval_batch_size=32",
        "data.eval_batches=1", "trainer.max_steps=2", "trainer.val_check_interval=2", "kernels=torch"]
LOG_PREFIX = re.compile(r"^(\[[^]]*\]\[[^]]*\]\[[A-Z]+\] - |INFO: |WARNING: )")


def test_run_output_at_80_columns(tmp_path):
    run_dir = tmp_path / ("run_with_a_long_folder_name_" + "x" * 60)
    result = run_cli("train.py", *TINY, f"hydra.run.dir={run_dir}", cwd=tmp_path, env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    lines = out.splitlines()
    messages = Counter(LOG_PREFIX.sub("", line) for line in lines if LOG_PREFIX.match(line))
    assert messages and messages.most_common(1)[0][1] == 1, messages.most_common(3)  # each log line printed once
    assert "GPU available" in out
    assert not re.search(r"💡|Tip:|litlogger|litmodels", out)  # no tool advertisements
    assert "Epoch 0/-2" not in out and "FLOPs" not in out
    assert re.search(r"Step +\S* 2/2", out), out[-3000:]  # the bar counts steps of max_steps
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert any(line.strip() == f"checkpoint: {checkpoint}" for line in lines), out[-2000:]  # whole, on one line
    assert any(line.strip() == f"summary:    {run_dir / 'summary.json'}" for line in lines)
    assert any(line.strip() == f"run folder: {run_dir}" for line in lines)
