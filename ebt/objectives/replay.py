"""Replay buffer of final candidates (EBT paper, "S2" training recipe; the reference's ``mcmc_replay_buffer``).

Stores (sample, final candidate) pairs from earlier batches, at most ``size`` (the newest); a fraction of each new
batch is replaced by stored samples that start thinking from their stored candidate instead of fresh noise, so the
energy landscape is also trained further along the optimisation path. A replayed sample leaves the buffer when it is
drawn and comes back with its new final candidate when the batch is added: each sample is stored once. Samples are
stored on the batch's device; the buffer is checkpointed (``LitModel`` saves :meth:`state_dict`), so a resumed run
continues with it.
"""

import torch

from ebt.errors import ConfigError


class ReplayBuffer:
    def __init__(self, size: int) -> None:
        self.size = size
        self.samples: dict[str, torch.Tensor] | None = None
        self.candidates: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.candidates is None else self.candidates.shape[0]

    def state_dict(self) -> dict:
        return {"samples": self.samples, "candidates": self.candidates}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Restore (and move to ``device``) a buffer saved by :meth:`state_dict`."""
        samples, candidates = state["samples"], state["candidates"]
        self.samples = None if samples is None else {k: v.to(device) for k, v in samples.items()}
        self.candidates = None if candidates is None else candidates.to(device)

    def add(self, batch: dict[str, torch.Tensor], candidates: torch.Tensor) -> None:
        if self.candidates is not None and self.candidates.shape[1:] != candidates.shape[1:]:
            self.samples, self.candidates = None, None  # shapes changed (e.g. another split): start over
        if self.candidates is None:  # the newest ``size`` rows, also on the first add
            self.samples = {k: v.detach()[-self.size:] for k, v in batch.items()}
            self.candidates = candidates.detach()[-self.size:]
        else:
            self.samples = {k: torch.cat([self.samples[k], v.detach()])[-self.size:] for k, v in batch.items()}
            self.candidates = torch.cat([self.candidates, candidates.detach()])[-self.size:]

    def mix(self, batch: dict[str, torch.Tensor], init: torch.Tensor, fraction: float):
        """Replace the last ``fraction`` of ``batch`` (and its initial candidates) with stored samples (once the
        buffer holds that many); a buffer too small to ever hold that many is an error."""
        n = int(init.shape[0] * fraction)
        if n > self.size:
            raise ConfigError(f"model.objective.replay_fraction={fraction} of a batch of {init.shape[0]} is {n} "
                              f"samples, more than model.objective.replay_size={self.size} holds: nothing would ever "
                              "be replayed; raise replay_size (or lower replay_fraction)")
        if n == 0 or len(self) < n or self.candidates.shape[1:] != init.shape[1:]:
            return batch, init
        order = torch.randperm(len(self), device=self.candidates.device)
        pick, rest = order[:n], order[n:].sort().values
        mixed = {k: torch.cat([v[: v.shape[0] - n], self.samples[k][pick]]) for k, v in batch.items()}
        init = torch.cat([init[: init.shape[0] - n], self.candidates[pick]])
        # taken out: :meth:`add` stores them again with their new final candidates, once (no duplicates)
        self.samples = {k: v[rest] for k, v in self.samples.items()}
        self.candidates = self.candidates[rest]
        return mixed, init
