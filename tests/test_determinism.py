"""Same seed, same config, CPU: two runs write bit-identical metrics (EBT with noise, so RNG use is covered)."""

import pytest

from ebt.training.train import train
from tests.utils import compose_config

RUN = ["model.dim=16", "model.backbone.n_layers=1", "data.batch_size=8", "data.eval_batches=1",
       "data.eval_batch_size=16", "trainer.max_steps=12", "trainer.val_check_interval=6",
       "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
EBT_NOISE = ["model.objective.langevin_std=0.05", "model.objective.alpha_jitter=2"]


@pytest.mark.parametrize("objective", ["ebt", "predict"])
def test_two_runs_with_the_same_seed_write_identical_metrics(objective, tmp_path):
    overrides = [*RUN, f"model/objective={objective}", *(EBT_NOISE if objective == "ebt" else [])]
    csvs = []
    for name in ("a", "b"):
        train(compose_config(overrides, tmp_path / name))
        csvs.append((tmp_path / name / "csv" / "metrics.csv").read_bytes())
    assert csvs[0] == csvs[1]
    assert csvs[0].count(b"\n") > 12  # every step logged, not an empty file
