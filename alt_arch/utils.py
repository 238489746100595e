"""Helpers a researcher wants: parameter counts and FLOPs per token."""

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


def collect_aux(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Auxiliary losses (summed over modules) and metrics (averaged) left by the last forward pass."""
    losses: dict[str, torch.Tensor] = {}
    metrics: dict[str, list[torch.Tensor]] = {}
    for m in module.modules():
        for name, value in (getattr(m, "aux_losses", None) or {}).items():
            losses[name] = losses[name] + value if name in losses else value
        for name, value in (getattr(m, "aux_metrics", None) or {}).items():
            metrics.setdefault(name, []).append(torch.as_tensor(value, dtype=torch.float32))
    return losses, {k: torch.stack(v).mean() for k, v in metrics.items()}
