"""The predictor objective: evaluation reports the loss it trains with."""

import torch
import torch.nn.functional as F

from ebt.training.build import build_lit_model, build_task
from tests.utils import compose_config


def test_validation_loss_is_the_configured_continuous_loss(tmp_path):
    cfg = compose_config(["model/objective=predict", "data=digits_denoise", "model.dim=16",
                          "model.objective.continuous_loss=smooth_l1"], tmp_path)
    task = build_task(cfg)
    model = build_lit_model(cfg, task).objective.eval()
    batch = task.make_batch("val", 0, 8)
    with torch.no_grad():
        prediction = model.predict(batch)
        expected = F.smooth_l1_loss(prediction, batch["targets"])
        assert not torch.isclose(expected, F.mse_loss(prediction, batch["targets"]))
        torch.testing.assert_close(model.evaluate(batch)["loss"], expected)
        torch.testing.assert_close(model.loss(batch)[0], expected)
