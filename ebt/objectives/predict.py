"""The baseline objective: one forward pass from context to prediction ("Transformer++" predictor).

Tokens: ``logits = head(backbone(embed(x)))`` trained with next-token cross-entropy on scored positions.
Continuous: ``y = head(backbone(W_in x))`` trained with MSE (or SmoothL1).
"""

import torch

from ebt.errors import ConfigError
from ebt.objectives.base import Objective, input_encoder, output_head, prediction_loss, task_inputs
from ebt.tasks.base import Task


class Predict(Objective):
    def __init__(self, *, task: Task, backbone, dim: int, tie_embeddings: bool = False,
                 continuous_loss: str = "mse") -> None:
        super().__init__(task=task)
        self.encoder = input_encoder(task, dim)
        self.backbone = backbone(dim, causal=task.causal)
        self.head = output_head(task, dim)
        self.continuous_loss = continuous_loss
        if tie_embeddings:
            if task.kind != "tokens":
                raise ConfigError("model.objective.tie_embeddings=true needs a tokens task; set it to false")
            self.head.weight = self.encoder.weight

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.backbone(self.encoder(task_inputs(self.task, batch))))

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        prediction = self.predict(batch)
        loss = prediction_loss(self.task, prediction, batch, self.continuous_loss)
        with torch.no_grad():
            logs = dict(self.task.metrics(prediction.detach(), batch))
        return loss, logs
