"""What a run prints while it trains: ``configs/callbacks/default.yaml`` puts :func:`progress_bar` and
:func:`model_summary` in place of Lightning's defaults.

The bar counts optimizer steps against ``trainer.max_steps`` (the training stream is endless, so Lightning's
``Epoch 0/-2`` said nothing) and the model summary has no FLOPs column (Lightning fills it only for models with an
``example_input_array``, else prints 0; ``summary.json`` has ``forward_flops_per_token``).
"""

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich.console import Console
from rich.table import Table


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, counting optimizer steps up to ``max_steps`` when epochs are unbounded (our runs)."""

    def _by_steps(self) -> bool:
        trainer = self.trainer
        return trainer.max_epochs in (None, -1) and trainer.max_steps is not None and trainer.max_steps > 0

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self._by_steps() else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        if not self._by_steps():
            return super()._get_train_description(current_epoch)
        return f"{'Step':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._by_steps():  # resumed runs start part-way
            self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._by_steps():
            self._update(self.train_progress_bar_id, trainer.global_step)


class CompactModelSummary(ModelSummary):
    """The top-level modules (name, type, parameters, mode) and the parameter totals; no FLOPs column."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0,
                  **summarize_kwargs: Any) -> None:
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table()
        for name, _ in columns:
            table.add_column(name or " ", justify="right" if name.startswith("Params") else "left")
        for row in zip(*(values for _, values in columns), strict=True):
            table.add_row(*row)
        console = Console()
        console.print(table)
        print(f"params: {get_human_readable_count(trainable_parameters).strip()} trainable, "
              f"{get_human_readable_count(total_parameters - trainable_parameters).strip()} non-trainable, "
              f"{get_formatted_model_size(model_size)} MB; modules: {total_training_modes['train']} in train mode, "
              f"{total_training_modes['eval']} in eval mode", flush=True)


def progress_bar(enabled: bool = True) -> L.Callback:
    """:class:`StepProgressBar`, or a callback doing nothing when ``trainer.enable_progress_bar`` is false (Lightning
    refuses a progress bar callback then)."""
    return StepProgressBar() if enabled else L.Callback()


def model_summary(enabled: bool = True, max_depth: int = 1) -> L.Callback:
    """:class:`CompactModelSummary`, or a callback doing nothing when ``trainer.enable_model_summary`` is false."""
    return CompactModelSummary(max_depth=max_depth) if enabled else L.Callback()
