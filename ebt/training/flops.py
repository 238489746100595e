"""Measured FLOPs, for ``summary.json`` and the benchmarks: ``torch.utils.flop_counter``'s formulas summed over one
training step (forward and backward, second-order terms included) and one evaluation-time thinking step of an
objective that thinks. The analytic ``forward_flops_per_token`` is :func:`alt_arch.utils.forward_flops_per_token`.
"""

import copy
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ebt.errors import ThinkingDivergedError
from ebt.objectives.base import Objective
from ebt.objectives.replay import ReplayBuffer
from ebt.tasks.base import Task


class FlopCount(TorchDispatchMode):
    """The FLOPs of every aten op that ``torch.utils.flop_counter`` has a formula for (matmuls, convolutions,
    attention), summed. ``FlopCounterMode`` without its module tracker: the tracker's backward hooks break
    ``autograd.grad`` with respect to a leaf fed straight into a module (a continuous EBT's candidate)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def measured_flops(objective: Objective, task: Task, batch_size: int = 1) -> dict[str, Any]:
    """FLOPs counted by :class:`FlopCount` (``torch.utils.flop_counter``'s formulas) on ``batch_size`` training
    samples:

    * ``train_step_flops``: ``objective.loss`` and the gradient of every trainable parameter (an EBT's thinking
      steps, their ``dE/dy`` and the second-order backward all count);
    * ``thinking_step_flops``: one more evaluation-time thinking step (``think`` with 2 steps minus 1 step: the energy
      forward and ``dE/dy``); ``None`` for objectives that do not think (:attr:`Objective.thinks`).

    The objective is left as it was: training mode, buffers (e.g. a looped backbone's curriculum counter), replay
    buffer, parameter gradients and the random number streams are restored or untouched. ``None`` values when the
    measurement step diverges. Under ``compile=`` the step is counted eagerly (the compiled graph does the same
    operations)."""
    out: dict[str, Any] = {"flops_batch_size": batch_size, "train_step_flops": None, "thinking_step_flops": None}
    device = next(objective.parameters()).device
    batch = {k: v.to(device) for k, v in task.make_batch("train", 0, batch_size).items()}
    was_training, buffers = objective.training, [(b, b.clone()) for b in objective.buffers()]
    replay = {name: copy.copy(m.replay) for name, m in objective.named_modules()
              if isinstance(getattr(m, "replay", None), ReplayBuffer)}
    params = [p for p in objective.parameters() if p.requires_grad]

    def count(fn) -> int:
        # compiled functions run eagerly here: the same operations, and torch.compile refuses a dispatch mode
        with torch.compiler.set_stance("force_eager"), FlopCount() as counter:
            fn()
        return counter.total

    def train_step() -> None:
        loss, _ = objective.loss(batch)
        torch.autograd.grad(loss, params, allow_unused=True)

    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad():
            objective.train()
            out["train_step_flops"] = count(train_step)
            if objective.thinks:
                objective.eval()
                one, two = (count(lambda s=s: objective.think(batch, steps=s)) for s in (1, 2))
                out["thinking_step_flops"] = two - one
    except ThinkingDivergedError:
        pass
    finally:
        objective.train(was_training)
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        for name, saved in replay.items():
            objective.get_submodule(name).replay = saved
    return out
