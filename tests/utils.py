"""Helpers shared by the tests: compose configs in-process, run the CLI in a subprocess, gate on the hardware."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from ebt.training.config import compose_train

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
TEST_WITH = re.compile(r"^#\s*test-with:\s*(.*)$", re.MULTILINE)


def compose_config(overrides: list[str], output_dir: Path | str) -> DictConfig:
    """The config ``scripts/train.py`` would see, with outputs under ``output_dir``, on the CPU.

    ``trainer.accelerator=cpu`` comes first, so in-process training runs on the CPU on every machine (the exact
    comparisons - determinism, resume, DDP vs one process - assume it); an override that names
    ``trainer.accelerator`` wins over it. CLI runs (:func:`run_cli`) keep the configs' ``auto``.
    """
    return compose_train(["trainer.accelerator=cpu", *overrides, f"paths.output_dir={output_dir}"])


def gpu_count() -> int:
    """CUDA GPUs this process can use (0 when torch sees none or CUDA is unusable)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_if(*, min_gpus: int = 0, no_gpu: bool = False) -> pytest.MarkDecorator:
    """Skip a test unless the hardware fits (after lightning-hydra-template's ``RunIf``).

    ``@run_if(min_gpus=1)``: needs at least one CUDA GPU. ``@run_if(no_gpu=True)``: needs a machine without one
    (a test of the "no CUDA GPU" error). Also usable in ``pytest.param(..., marks=run_if(...))``.
    """
    gpus, reasons = gpu_count(), []
    if gpus < min_gpus:
        reasons.append(f"needs {min_gpus} CUDA GPU(s), this machine has {gpus}")
    if no_gpu and gpus:
        reasons.append(f"needs a machine without a CUDA GPU, this one has {gpus}")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))


def group_options(group: str) -> list[str]:
    """Every option of a config group, e.g. ``group_options("model/mixer") == ["attention", ...]``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def declared_overrides(group: str, option: str) -> list[str]:
    """Extra overrides an option declares it needs in tests (a ``# test-with: a=b c=d`` line)."""
    match = TEST_WITH.search((CONFIG_DIR / group / f"{option}.yaml").read_text())
    return match.group(1).split() if match else []


def run_cli(script: str, *args: str, cwd: Path, timeout: int = 300, env: dict | None = None):
    """Run ``python scripts/<script> args...`` and return the completed process (never raises on failure)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def naive_candidates(mixer, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Candidate t == plain causal forward of the T+1 tokens [x_0..x_t, y_t, noise...] read at position t+1."""
    b, n, c = x.shape
    out = torch.empty_like(y)
    for t in range(n):
        seq = torch.cat([x[:, : t + 1], y[:, t : t + 1], torch.randn(b, n - t - 1, c, dtype=x.dtype)], dim=1)
        out[:, t] = mixer(seq)[:, t + 1]
    return out


def naive_ebt_energies(ebt, inputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, T): candidate t's energy from a plain causal forward of ``[x_0 .. x_t, candidate_t]`` (its last slot), the
    reference of the EBT's two-stream energies."""
    context, candidate = ebt.encoder(inputs), ebt.read_candidate(y, 0)
    energies = []
    for t in range(y.shape[1]):
        seq = torch.cat([context[:, : t + 1], candidate[:, t : t + 1]], dim=1)
        energies.append(ebt.energy_head(ebt.backbone(seq)[:, -1]).squeeze(-1))
    return torch.stack(energies, dim=1)


def perturb_after(batch: dict[str, torch.Tensor], t: int) -> dict[str, torch.Tensor]:
    """The same batch with every input and target after position ``t`` changed."""
    changed = {k: v.clone() for k, v in batch.items()}
    for key in ("input_ids", "inputs", "targets"):
        if key not in changed or changed[key].dim() < 2:
            continue
        tail = changed[key][:, t + 1 :]
        if tail.is_floating_point():
            changed[key][:, t + 1 :] = tail + torch.randn_like(tail)
        else:
            changed[key][:, t + 1 :] = torch.where(tail >= 0, (tail + 1) % 2, tail)  # token 0 <-> 1, keep ignored
    return changed
