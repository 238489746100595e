"""Preemption: SIGTERM / SIGINT stop training at the next batch boundary with a checkpoint, not mid-step.

Built on Lightning's own SIGTERM handling (2.6, any machine, no SLURM needed): its handler sets
``trainer.received_sigterm`` (under DDP it also forwards the signal to the ranks it started and broadcasts the flag),
and the training loop raises :class:`~lightning.pytorch.utilities.exceptions.SIGTERMException` after the current
batch's optimizer step (or between validation batches). This callback

* routes SIGINT (Ctrl-C) through the same path, so an interrupt never lands mid optimizer step; a second Ctrl-C
  raises ``KeyboardInterrupt`` at once (Lightning's hard stop, no checkpoint). Under DDP only local rank 0 acts on
  SIGINT and forwards SIGTERM to the ranks it started (a terminal sends Ctrl-C to every process of the group);
* saves ``path`` (normally ``<run>/checkpoints/last.ckpt``, written atomically by the checkpoint plugin) when the loop
  stops on such a signal, and remembers the signal: ``ebt.training.train.train`` then exits with ``128 + signal``
  (143 for SIGTERM, 130 for SIGINT) after printing how to resume (``ckpt_path=last``).
"""

import signal
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException


class PreemptionCheckpoint(L.Callback):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.signum: int | None = None  # the signal that stopped training, once it has
        self.saved = False
        self._previous_sigint: Any = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signal.SIGINT
        if self._local_rank == 0:
            handler = signal.getsignal(signal.SIGTERM)  # Lightning's: set the flag, forward to child ranks
            if callable(handler):
                handler(signal.SIGTERM, frame)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._local_rank = trainer.local_rank
        if stage == "fit":
            self.signum, self.saved = None, False
            try:
                self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            except ValueError:  # not the main thread: leave SIGINT alone
                self._previous_sigint = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.signum = self.signum or signal.SIGTERM
            trainer.save_checkpoint(self.path)  # every rank calls it (it synchronises); rank 0 writes
            self.saved = True

    @property
    def exit_code(self) -> int:
        """Shell convention for "stopped by a signal": 128 + the signal number."""
        return 128 + int(self.signum or signal.SIGTERM)
