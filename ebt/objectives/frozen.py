"""Evaluation thinks with respect to the candidate only: :func:`frozen` turns the parameters' gradients off for a
block and restores them afterwards (thinking, sampling and rollouts of any objective use it)."""

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters without gradients (evaluation thinks w.r.t. the candidate only); restored afterwards."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
