"""Helpers a researcher wants (parameter counts, FLOPs per token) and the auxiliary-loss protocol of parts."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn


def num_params(module: nn.Module, *, exclude_embeddings: bool = False) -> int:
    """Number of parameters; with ``exclude_embeddings`` the ``nn.Embedding`` tables are left out."""
    total = sum(p.numel() for p in module.parameters())
    if exclude_embeddings:
        total -= sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Embedding))
    return total


def matmul_params(module: nn.Module) -> int:
    """Parameters that take part in a matrix multiply per token (``nn.Linear`` weights)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def forward_flops_per_token(module: nn.Module, *, seq_len: int) -> int:
    """Forward FLOPs per token: ``2 * matmul params`` plus each mixer's own sequence term.

    Mixers may define ``flops_per_token(seq_len)`` for work that is not a parameter matmul (attention
    scores and weighted sum: ``4 * seq_len * dim`` for full attention; causal halves that on average).
    Multiply by 3 for forward + backward.
    """
    flops = 2 * matmul_params(module)
    for m in module.modules():
        extra = getattr(m, "flops_per_token", None)
        if callable(extra) and m is not module:
            flops += int(extra(seq_len))
    return flops


def record_aux(module: nn.Module, losses: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
    """Store one forward pass's auxiliary losses (already weighted) and metrics on ``module``.

    ``module.aux_losses`` / ``aux_metrics`` hold the last pass. In training mode every pass is also appended to
    ``module.aux_passes``, so a training step that calls a part several times (the EBT's context stream and one
    candidate pass per thinking step, a looped backbone's iterations) is balanced over all of them:
    :func:`collect_aux` averages the recorded passes and clears them.
    """
    module.aux_losses, module.aux_metrics = losses, metrics
    if module.training:
        if not hasattr(module, "aux_passes"):
            module.aux_passes = []
        module.aux_passes.append((losses, metrics))


def clear_aux(module: nn.Module) -> None:
    """Forget the recorded passes of every part (objectives call it before a training step's forward passes)."""
    for m in module.modules():
        if getattr(m, "aux_passes", None):
            m.aux_passes = []


def collect_aux(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Auxiliary losses and metrics of the passes recorded since the last collect (see :func:`record_aux`).

    Per part, each loss and metric is the mean over its recorded training-mode passes (the last pass when none
    was recorded, e.g. in eval mode); losses are then summed over parts and metrics averaged. Clears the record.
    """
    losses: dict[str, torch.Tensor] = {}
    metrics: dict[str, list[torch.Tensor]] = {}
    for m in module.modules():
        passes = getattr(m, "aux_passes", None) or [(getattr(m, "aux_losses", None) or {},
                                                    getattr(m, "aux_metrics", None) or {})]
        for name, value in _mean_over_passes([p[0] for p in passes]).items():
            losses[name] = losses[name] + value if name in losses else value
        for name, value in _mean_over_passes([p[1] for p in passes]).items():
            metrics.setdefault(name, []).append(torch.as_tensor(value, dtype=torch.float32))
        if passes and getattr(m, "aux_passes", None):
            m.aux_passes = []
    return losses, {k: torch.stack(v).mean() for k, v in metrics.items()}


def _mean_over_passes(passes: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    names = {name for p in passes for name in p}
    return {name: torch.stack([torch.as_tensor(p[name]) for p in passes if name in p]).mean() for name in names}


_INPUT_GRADIENTS: ContextVar[bool] = ContextVar("input_gradients", default=False)


@contextmanager
def exact_input_gradients() -> Iterator[None]:
    """Inside this context, parts that truncate backpropagation in training (the looped backbone's
    ``train_window``) stop only the *parameters'* gradient through their frozen computation; the gradient with
    respect to their input stays exact. The EBT thinks inside it: its step ``y - alpha dE/dy`` needs the true dE/dy.
    """
    token = _INPUT_GRADIENTS.set(True)
    try:
        yield
    finally:
        _INPUT_GRADIENTS.reset(token)


def input_gradients_exact() -> bool:
    """Whether the caller asked for exact input gradients (see :func:`exact_input_gradients`)."""
    return _INPUT_GRADIENTS.get()
