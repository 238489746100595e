"""trainer=ddp on CPU (gloo, 2 processes): ranks stay identical and match one process with the same global batch."""

import csv
import json

import pytest
import torch

from ebt.tasks.addition import Addition
from ebt.training.checkpoint import load_checkpoint
from ebt.training.data import TrainStream
from ebt.training.train import train
from tests.utils import compose_config, run_cli

# 1-digit addition: every sample scores the same number of tokens, so the mean of the ranks' losses is the loss of the
# whole batch; EBT starts from zeros (no per-rank noise) so both runs think identically. 3 evaluation batches on 2
# ranks: DistributedSampler pads rank 1 with a copy of batch 0, which validation must not count (totals over the split)
COMMON = ["model.dim=16", "model.backbone.n_layers=1", "data.task.n_digits=1", "data.task.ood_digits=2",
          "data.eval_batches=3", "data.eval_batch_size=16", "trainer.max_steps=6", "trainer.val_check_interval=6",
          "trainer.log_every_n_steps=1", "optim.warmup_steps=2", "trainer.enable_progress_bar=false",
          "trainer.enable_model_summary=false"]
OBJECTIVES = {"predict": ["model/objective=predict"], "ebt": ["model/objective=ebt", "model.objective.init=zeros"]}



def test_ranks_read_disjoint_shards_of_the_global_batch():
    task = Addition(n_digits=3)
    shards = [list(TrainStream(task, 4, lambda: 5, shard=lambda r=r: (r, 2)).__iter__().__next__().values())
              for r in range(2)]
    whole = list(task.make_batch("train", 5, 8).values())
    for i, tensor in enumerate(whole):
        torch.testing.assert_close(torch.cat([shards[0][i], shards[1][i]]), tensor, rtol=0, atol=0)


def _train_losses(run_dir) -> list[float]:
    return [float(r["train/loss"]) for r in csv.DictReader((run_dir / "csv" / "metrics.csv").open()) if r["train/loss"]]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_ddp_two_cpu_ranks_match_one_process(objective, tmp_path):
    overrides = [*COMMON, *OBJECTIVES[objective]]
    result = run_cli("train.py", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "data.batch_size=8",
                     *overrides, f"hydra.run.dir={tmp_path}/ddp", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effective batch 16 = 8 (data.batch_size) x 2 devices x 1 nodes x 1" in result.stdout
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert (summary["strategy"], summary["world_size"], summary["effective_batch"]) == ("DDPStrategy", 2, 16)
    digests = summary["rank_param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # identical parameters on both ranks

    single = train(compose_config([*overrides, "data.batch_size=16"], tmp_path / "one"))
    for key in ("val/loss", "val/acc", "ood/loss", "ood/tok_acc"):
        assert summary["metrics"][key] == pytest.approx(single[key], abs=1e-5), key
    assert _train_losses(tmp_path / "ddp") == pytest.approx(_train_losses(tmp_path / "one"), abs=1e-5)
    a = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in b.items():
        torch.testing.assert_close(a[key], value, atol=1e-5, rtol=1e-4)
