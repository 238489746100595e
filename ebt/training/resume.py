"""A resume (``ckpt_path``): its config against the checkpoint's, and the metrics logged before it kept in
``csv/metrics.csv`` (docs/reliability.md)."""

import csv
import io
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from ebt.errors import ConfigError
from ebt.training.checkpoint import atomic_write_text, upgrade_config
from ebt.training.ranks import print_rank_zero

# keys that legitimately differ when a run is resumed: not compared with the checkpoint's config
RESUME_IGNORED = ("ckpt_path", "paths", "hydra", "overwrite", "logger", "trust_checkpoint")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: tree}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old, new)}`` for every leaf that differs between two resolved configs, except the keys of
    :data:`RESUME_IGNORED` and paths that differ only by the run folder (``trainer.default_root_dir``, ...)."""
    old_flat, new_flat = _flatten(old), _flatten(new)
    old_dir, new_dir = old_flat.get("paths.output_dir"), new_flat.get("paths.output_dir")
    unset = "<unset>"
    diffs = {}
    for key in sorted(set(old_flat) | set(new_flat)):
        if key.split(".")[0] in RESUME_IGNORED:
            continue
        before, after = old_flat.get(key, unset), new_flat.get(key, unset)
        if before == unset and after is None:
            continue  # an option added since the checkpoint was written, at its off default
        if isinstance(before, str) and old_dir and new_dir:
            before = before.replace(str(old_dir), str(new_dir))
        if before != after:
            diffs[key] = (before, after)
    return diffs


# implementation choices: same weights, same numbers (activation checkpointing, torch.compile, how dE/dy is taken)
SAME_MODEL_KEYS = {"model.backbone.checkpoint", "model.objective.compile", "model.objective.thinking_grad"}


def check_resume_config(checkpoint: dict[str, Any], config: dict[str, Any], ckpt_path: str) -> None:
    """Resume with the checkpoint's own model: a changed ``model.*`` option is a :class:`ConfigError` (shapes can
    match while the model differs, e.g. ``model.mixer.n_heads``); every other change is listed in one warning.
    ``kernels`` keys and :data:`SAME_MODEL_KEYS` (implementation choices, the same weights and results) only warn."""
    old = (checkpoint.get("hyper_parameters") or {}).get("config")
    if not isinstance(old, dict):
        return  # a checkpoint written before configs were stored
    diffs = config_differences(upgrade_config(old), upgrade_config(config))  # both: same option spelling
    model = {k: v for k, v in diffs.items()
             if k.startswith("model.") and not k.endswith(".kernels") and k not in SAME_MODEL_KEYS}
    if model:
        changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in model.items())
        raise ConfigError(f"resuming {ckpt_path} with other model options than the run that wrote it ({changes}); "
                          "a resume keeps the checkpoint's model: drop these overrides, or start a new run without "
                          "ckpt_path")
    if diffs:
        lines = "\n".join(f"  {k}: {a} -> {b}" for k, (a, b) in diffs.items())
        print_rank_zero(f"warning: resuming {ckpt_path} with options that differ from the run that wrote it "
                        f"(old -> new):\n{lines}")


def set_aside_metrics(trainer: L.Trainer) -> Path | None:
    """Lightning's CSV logger deletes ``metrics.csv`` when it starts: when a run resumes in its own folder, move the
    rows so far aside (``metrics.before_resume.csv``) for :func:`merge_metrics` to put back in front."""
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None or rank_zero_only.rank != 0:
        return None
    current, aside = Path(csv_logger.log_dir) / "metrics.csv", Path(csv_logger.log_dir) / "metrics.before_resume.csv"
    if current.is_file():
        if aside.is_file():  # an earlier resume that never got to merge
            merge_metrics(aside, keep_aside=True)
        else:
            os.replace(current, aside)
    return aside if aside.is_file() else None


def merge_metrics(aside: Path, keep_aside: bool = False) -> None:
    """``metrics.csv`` = the set-aside rows logged before the first step of the new rows, then the new rows."""
    current = aside.with_name("metrics.csv")
    old = list(csv.DictReader(aside.open(newline="")))
    new = list(csv.DictReader(current.open(newline=""))) if current.is_file() else []
    first = min((int(r["step"]) for r in new if r.get("step")), default=None)
    rows = [r for r in old if first is None or not r.get("step") or int(r["step"]) < first] + new
    fields = sorted(set().union(*(r.keys() for r in rows)))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(aside if keep_aside else current, out.getvalue())
    if keep_aside:
        current.unlink()
    else:
        aside.unlink()
