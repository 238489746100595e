"""The baseline objective: one forward pass from context to prediction ("Transformer++" predictor).

Tokens: ``logits = head(backbone(embed(x)))`` trained with next-token cross-entropy on scored positions.
Classes: ``logits = head(mean_tokens(backbone(W_in x)))`` trained with cross-entropy.
Continuous: ``y = head(backbone(W_in x))`` trained with MSE (or SmoothL1).
Generation with a key/value cache: :meth:`Predict.predict_extending` runs new positions after cached ones
(:attr:`Predict.extends_context`: a causal tokens task, a backbone whose mixers cache); its output equals
:meth:`predict`'s at those positions.

``compile=model`` (the top-level key): the backbone's forward runs through torch.compile (``nn.Module.compile``; the
state dict is unchanged); the predictor has no thinking step to compile.
"""

from typing import Any

import torch

from alt_arch.utils import clear_aux, collect_aux
from ebt.errors import ConfigError
from ebt.objectives.base import Objective, caches_context, input_encoder, output_head, prediction_loss, task_inputs
from ebt.objectives.compiled import check_compile, compile_module
from ebt.tasks.base import Task


class Predict(Objective):
    def __init__(self, *, task: Task, backbone, dim: int, tie_embeddings: bool = False,
                 continuous_loss: str = "mse", compile: str = "none") -> None:
        super().__init__(task=task, continuous_loss=continuous_loss)
        self.compile = check_compile(compile, ("none", "model"))
        self.encoder = input_encoder(task, dim)
        self.backbone = backbone(dim, causal=task.causal, spatial_shape=task.spatial_shape)
        self.head = output_head(task, self.backbone.out_dim)
        if tie_embeddings:
            if task.kind != "tokens":
                raise ConfigError("model.objective.tie_embeddings=true needs a tokens task; set it to false")
            self.head.weight = self.encoder.weight
        if self.compile == "model":
            compile_module(self.backbone)

    @staticmethod
    def upgrade_options(options: dict) -> dict:
        """An older checkpoint's stored options with those added since at their defaults (``compile``: none)."""
        return {"compile": "none", **options}

    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.backbone(self.encoder(task_inputs(self.task, batch)))  # (B, N, out_dim)
        if self.task.kind == "classes":
            features = features.mean(dim=1)  # (B, out_dim)
        return self.head(features)

    @property
    def extends_context(self) -> bool:
        """Whether :meth:`predict_extending` can run: a causal tokens task, a per-position input encoding and a
        backbone whose mixers take a key/value cache (attention, MoH)."""
        return self.task.kind == "tokens" and caches_context(self.task, self.encoder, self.backbone)

    def predict_extending(self, input_ids: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits (B, n, V) of ``input_ids`` (B, n), the positions after those cached in ``past`` (None: the first),
        and the cache extended by them (the backbone's per-layer keys / values)."""
        h, caches = self.backbone.forward_context(self.encoder(input_ids), past)
        return self.head(h), caches

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        clear_aux(self.backbone)
        prediction = self.predict(batch)
        loss = prediction_loss(self.task, prediction, batch, self.continuous_loss)
        aux_losses, aux_metrics = collect_aux(self.backbone)
        with torch.no_grad():
            logs = dict(self.task.metrics(prediction.detach(), batch)) | aux_metrics
        logs |= {name: value.detach() for name, value in aux_losses.items()}
        return loss + sum(aux_losses.values()), logs
