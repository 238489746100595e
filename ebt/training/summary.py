"""What a run shows: the progress bar, the model summary, ``summary.json`` and the tables printed at the end.

``configs/callbacks/default.yaml`` puts :func:`progress_bar` and :func:`model_summary` in place of Lightning's defaults:
the bar counts optimizer steps against ``trainer.max_steps`` (the training stream is endless, so Lightning's
``Epoch 0/-2`` said nothing) and the model summary has no FLOPs column (Lightning fills it only for models with an
``example_input_array``, else prints 0; ``summary.json`` has ``forward_flops_per_token``).

``summary.json`` also says what was run and what it cost: ``forward_flops_per_token`` is the analytic forward count
of the model's matrix multiplies (the same for a predictor and an EBT of one backbone); ``train_step_flops`` and
``thinking_step_flops`` are *measured* by ``torch.utils.flop_counter`` (:func:`measured_flops`: one training step,
forward and backward, second-order terms included; one evaluation-time thinking step of an EBT), ``git`` the commit
of the code and whether tracked files differed from it, ``versions`` the libraries, ``seed`` the run's seed.
"""

import copy
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary, RichProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich.console import Console
from rich.table import Table
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from alt_arch.utils import forward_flops_per_token, num_params
from ebt.errors import ThinkingDivergedError
from ebt.objectives.ebt import EBT
from ebt.objectives.replay import ReplayBuffer

SOURCE_ROOT = Path(__file__).resolve().parents[2]
VERSIONS = ("torch", "lightning", "hydra-core", "omegaconf", "triton", "numpy")


def make_summary(cfg, task, model, trainer, metrics, last_ckpt, seconds) -> dict[str, Any]:
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    seq_len = next(iter(task.make_batch("train", 0, 1).values())).shape[1]
    return {
        "task": task.describe(),
        "objective": type(model.objective).__name__,
        "metric": task.metric,
        "params": num_params(model.objective),
        "params_non_embedding": num_params(model.objective, exclude_embeddings=True),
        "forward_flops_per_token": forward_flops_per_token(model.objective, seq_len=seq_len),
        **measured_flops(model.objective, task),
        "seed": cfg.seed,
        "git": git_state(),
        "versions": library_versions(),
        "steps": trainer.global_step,
        "seconds": round(seconds, 1),
        "metrics": metrics,
        "checkpoint": str(last_ckpt),
        "metrics_csv": str(Path(csv_logger.log_dir) / "metrics.csv") if csv_logger else None,
        "output_dir": str(cfg.paths.output_dir),
    }


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


def measured_flops(objective: torch.nn.Module, task, batch_size: int = 1) -> dict[str, Any]:
    """FLOPs counted by :class:`FlopCount` (``torch.utils.flop_counter``'s formulas) on ``batch_size`` training
    samples:

    * ``train_step_flops``: ``objective.loss`` and the gradient of every trainable parameter (an EBT's thinking
      steps, their ``dE/dy`` and the second-order backward all count);
    * ``thinking_step_flops``: one more evaluation-time thinking step (``think`` with 2 steps minus 1 step: the energy
      forward and ``dE/dy``); ``None`` for objectives that do not think.

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
            if isinstance(objective, EBT):
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


def git_state(root: Path = SOURCE_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the git checkout the code runs from (dirty: tracked files differ from
    the commit); ``None`` values when the code is not a git checkout (an installed wheel) or git is missing."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            raise ValueError("inside another repository")
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, ValueError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def library_versions() -> dict[str, str | None]:
    """Python's and the main libraries' versions (``None``: not installed)."""

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: installed(name) for name in VERSIONS}}


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


def print_summary(summary: dict[str, Any]) -> None:
    print(f"Summary: {summary['task']} ({summary['objective']})", flush=True)  # not a table title: those wrap
    table = Table()
    table.add_column("split")
    table.add_column(summary["metric"], justify="right")
    table.add_column("loss", justify="right")
    metrics, metric = summary["metrics"], summary["metric"]
    for split in eval_splits(metrics, metric):
        loss = metrics.get(f"{split}/loss", float("nan"))
        table.add_row(split, f"{metrics[f'{split}/{metric}']:.4f}", f"{loss:.4f}")
    console = Console()
    console.print(table)
    print(f"params {summary['params']:,} (non-embedding {summary['params_non_embedding']:,}), "
          f"{summary['steps']} steps in {summary['seconds']} s", flush=True)
    thinking = thinking_table(summary)
    if thinking is not None:
        print("Thinking: metric after k steps (k=0: the initial candidate)", flush=True)
        console.print(thinking)
    # paths with plain print: a rich console hard-wraps them at the terminal width, and they must stay copyable
    output_dir = Path(summary["output_dir"])
    lines = [f"checkpoint: {summary['checkpoint']}"]
    if summary.get("metrics_csv"):
        lines.append(f"metrics:    {summary['metrics_csv']}")
    lines += [f"summary:    {output_dir / 'summary.json'}", f"run folder: {output_dir}"]
    print("\n".join(lines), flush=True)


def eval_splits(metrics: dict[str, float], metric: str) -> list[str]:
    """The evaluated splits with a ``<split>/<metric>`` value: ``val``, ``ood``, then any other (e.g. the text task's
    ``ood_<name>`` corpora) in the order logged; ``train`` is left out."""
    logged = [key.rsplit("/", 1)[0] for key in metrics if key.endswith(f"/{metric}") and key.count("/") == 1]
    rest = [s for s in dict.fromkeys(logged) if s not in ("train", "val", "ood")]
    return [s for s in ("val", "ood") if s in logged] + rest


def thinking_curve(metrics: dict[str, float], name: str) -> dict[int, float]:
    """``{k: metrics[f"{name}_step{k}"]}`` for every logged thinking step k, in order."""
    prefix = f"{name}_step"
    steps = {int(key[len(prefix):]): value for key, value in metrics.items()
             if key.startswith(prefix) and key[len(prefix):].isdigit()}
    return dict(sorted(steps.items()))


def thinking_table(summary: dict[str, Any]) -> Table | None:
    """The metric and mean energy after each thinking step k (EBT runs), one column per split."""
    metrics, metric = summary["metrics"], summary["metric"]
    splits = [s for s in ("val", "ood") if thinking_curve(metrics, f"{s}/{metric}")]  # more would not fit 80 columns
    if not splits:
        return None
    table = Table()
    table.add_column("k", justify="right")
    for split in splits:
        table.add_column(f"{split}/{metric}", justify="right")
        table.add_column(f"{split}/energy", justify="right")
    curves = {s: (thinking_curve(metrics, f"{s}/{metric}"), thinking_curve(metrics, f"{s}/energy")) for s in splits}
    for k in curves[splits[0]][0]:
        row = [str(k)]
        for split in splits:
            values, energies = curves[split]
            row += [f"{values.get(k, float('nan')):.4f}", f"{energies.get(k, float('nan')):.4f}"]
        table.add_row(*row)
    return table
